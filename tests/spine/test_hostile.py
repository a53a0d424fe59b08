"""Hostile input: each refused with a 4xx and a message, and the datastore (rows and files) unchanged."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import requests

from tests.conftest import Server, write_label, write_volume
from tests.spine.snapshot import snapshot


def check_refused(resp: requests.Response, code: int | tuple[int, ...] = (400, 404, 409, 413, 422)) -> str:
    codes = (code,) if isinstance(code, int) else code
    assert resp.status_code in codes, (resp.status_code, resp.text)
    body = resp.json()
    assert isinstance(body["detail"], str) and body["detail"]
    return body["detail"]


@pytest.fixture
def before(server: Server) -> dict:
    return snapshot(server.url, server.studies)


TRAVERSAL_IDS = ["../evil", "..", "a/b", "/etc/passwd", "..\\win", "sub/../x", "%2e%2e%2fx", "\x00x"]


@pytest.mark.parametrize("bad", TRAVERSAL_IDS)
def test_traversal_ids_refused_everywhere(server: Server, before: dict, tmp_path: Path, bad: str) -> None:
    u = server.url
    image = write_volume(tmp_path / "x.nii.gz")
    label = write_label(tmp_path / "l.nii.gz")
    with open(image, "rb") as f:
        check_refused(requests.put(f"{u}/datastore/", params={"image": bad}, files={"file": ("x.nii.gz", f)}))
    with open(label, "rb") as f:
        check_refused(
            requests.put(f"{u}/datastore/label", params={"image": bad}, files={"label": ("l.nii.gz", f)})
        )
    check_refused(requests.get(f"{u}/datastore/image", params={"image": bad}))
    check_refused(requests.get(f"{u}/datastore/label", params={"label": bad, "tag": "final"}))
    check_refused(requests.get(f"{u}/datastore/label", params={"label": "study_0", "tag": bad}))
    check_refused(requests.delete(f"{u}/datastore/image", params={"id": bad}))
    check_refused(requests.get(f"{u}/datastore/image/info", params={"image": bad}))
    assert snapshot(u, server.studies) == before
    assert not (server.studies.parent / "evil.nii.gz").exists()


def test_unknown_image_and_strategy(server: Server, before: dict, tmp_path: Path) -> None:
    u = server.url
    assert "NOT Found" in check_refused(requests.get(f"{u}/datastore/image", params={"image": "nope"}), 404)
    check_refused(requests.get(f"{u}/datastore/label", params={"label": "study_0", "tag": "final"}), 404)
    check_refused(requests.get(f"{u}/datastore/image/info", params={"image": "nope"}), 404)
    check_refused(requests.delete(f"{u}/datastore/image", params={"id": "nope"}), 404)
    with open(write_label(tmp_path / "l.nii.gz"), "rb") as f:
        check_refused(
            requests.put(f"{u}/datastore/label", params={"image": "nope"}, files={"label": ("l.nii.gz", f)}),
            404,
        )
    detail = check_refused(requests.post(f"{u}/activelearning/nosuch", json={}), 404)
    assert "random" in detail  # says what exists
    assert (
        requests.head(f"{u}/datastore/label", params={"image": "study_0", "tag": "final"}).status_code == 404
    )
    assert snapshot(u, server.studies) == before


def _corrupt_variants(tmp_path: Path) -> dict[str, bytes]:
    good = write_volume(tmp_path / "good.nii.gz").read_bytes()
    raw = gzip.decompress(good)
    return {
        "truncated.nii.gz": good[: len(good) // 2],
        "truncated_raw.nii": raw[: len(raw) - 5000],
        "garbage.nii.gz": b"this is not a nifti file at all" * 10,
        "empty.nii": b"",
        "text.nrrd": b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n\n" + b"\x00" * 10,
    }


def test_corrupt_or_truncated_images_refused(server: Server, before: dict, tmp_path: Path) -> None:
    for name, payload in _corrupt_variants(tmp_path).items():
        resp = requests.put(
            f"{server.url}/datastore/", params={"image": "broken"}, files={"file": (name, payload)}
        )
        assert "load" in check_refused(resp, 400), name
    # and an unsupported type
    resp = requests.put(
        f"{server.url}/datastore/", params={"image": "broken"}, files={"file": ("x.jpg", b"xx")}
    )
    check_refused(resp, 400)
    assert snapshot(server.url, server.studies) == before
    assert not any(p.name.startswith(".tmp-") for p in server.studies.rglob("*"))


def test_label_shape_mismatch_and_corrupt_label(server: Server, before: dict, tmp_path: Path) -> None:
    u = server.url
    wrong = write_label(tmp_path / "wrong.nii.gz", shape=(32, 32, 31))
    with open(wrong, "rb") as f:
        detail = check_refused(
            requests.put(
                f"{u}/datastore/label", params={"image": "study_0"}, files={"label": ("w.nii.gz", f)}
            ),
            400,
        )
    assert "shape" in detail
    resp = requests.put(
        f"{u}/datastore/label", params={"image": "study_0"}, files={"label": ("l.nii.gz", b"junk")}
    )
    check_refused(resp, 400)
    # a .bin label of the wrong size
    resp = requests.put(
        f"{u}/datastore/label", params={"image": "study_0"}, files={"label": ("label.bin", b"\x01" * 100)}
    )
    assert "bytes" in check_refused(resp, 400)
    assert snapshot(u, server.studies) == before
    assert not any(p.name.startswith(".tmp-") for p in server.studies.rglob("*"))


def test_replacing_with_a_bad_label_keeps_the_good_one(server: Server, tmp_path: Path) -> None:
    u = server.url
    good = write_label(tmp_path / "good.nii.gz", seed=1)
    with open(good, "rb") as f:
        assert requests.put(
            f"{u}/datastore/label", params={"image": "study_2"}, files={"label": ("g.nii.gz", f)}
        ).ok
    before = snapshot(u, server.studies)
    bad = write_label(tmp_path / "bad.nii.gz", shape=(16, 16, 16))
    with open(bad, "rb") as f:
        check_refused(
            requests.put(
                f"{u}/datastore/label", params={"image": "study_2"}, files={"label": ("b.nii.gz", f)}
            )
        )
    assert snapshot(u, server.studies) == before
    assert (
        requests.get(f"{u}/datastore/label", params={"label": "study_2", "tag": "final"}).content
        == good.read_bytes()
    )


def test_malformed_json_and_missing_fields(server: Server, before: dict, tmp_path: Path) -> None:
    u = server.url
    image = write_volume(tmp_path / "x.nii.gz").read_bytes()
    check_refused(
        requests.post(
            f"{u}/activelearning/random", data="{not json", headers={"content-type": "application/json"}
        ),
        422,
    )
    check_refused(requests.post(f"{u}/activelearning/random", data="[1, 2]"), 422)
    check_refused(requests.post(f"{u}/activelearning/random", json={"k": 0}), 400)
    check_refused(requests.post(f"{u}/activelearning/random", json={"client_id": 5}), 400)
    check_refused(
        requests.put(
            f"{u}/datastore/",
            params={"image": "x"},
            data={"params": "{bad"},
            files={"file": ("x.nii.gz", image)},
        ),
        422,
    )
    check_refused(
        requests.put(f"{u}/datastore/", params={"image": "x"}, data={"params": "{}"}), 422
    )  # no file
    check_refused(requests.put(f"{u}/datastore/label", files={"label": ("l.nii.gz", b"x")}), 422)  # no image
    check_refused(requests.put(f"{u}/datastore/label", params={"image": "study_0"}), 422)  # no label
    check_refused(
        requests.put(f"{u}/datastore/image/info", params={"image": "study_0"}, data={"info": "[1]"}), 422
    )
    check_refused(requests.get(f"{u}/datastore/", params={"output": "everything"}), 422)
    check_refused(requests.put(f"{u}/session/"), 400)
    check_refused(requests.get(f"{u}/session/does-not-exist"), 404)
    check_refused(requests.get(f"{u}/logs/", params={"lines": "many"}), 422)
    assert snapshot(u, server.studies) == before
    assert json.loads(requests.get(f"{u}/datastore/").text)["total"] == 3
