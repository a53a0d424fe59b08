"""Label history: every save is a version, nothing is overwritten in place; earlier versions list,
download and restore; a label found on disk becomes a version when it is replaced."""

from __future__ import annotations

import hashlib
from pathlib import Path

import requests

from tests.conftest import Server, write_label


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_label(
    url: str, image: str, path: Path, tag: str = "final", client_id: str = "reader-1"
) -> dict[str, object]:
    with open(path, "rb") as f:
        reply = requests.put(
            f"{url}/datastore/label",
            params={"image": image, "tag": tag},
            data={"params": f'{{"client_id": "{client_id}"}}'},
            files={"label": (path.name, f)},
            timeout=30,
        )
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def test_versions_list_download_restore(server: Server, tmp_path: Path) -> None:
    u = server.url
    first = write_label(tmp_path / "a" / "l.nii.gz", seed=1)
    second = write_label(tmp_path / "b" / "l.nii.gz", seed=2)
    assert put_label(u, "study_0", first)["version"] == 1
    assert put_label(u, "study_0", second, client_id="reader-2")["version"] == 2

    current = requests.get(f"{u}/datastore/label", params={"label": "study_0", "tag": "final"}).content
    assert sha(current) == sha(second.read_bytes())
    versions = requests.get(f"{u}/review/versions", params={"image": "study_0"}).json()["versions"]
    assert [(v["version"], v["author"], v["source"], v["current"]) for v in versions] == [
        (1, "reader-1", "annotator", False),
        (2, "reader-2", "annotator", True),
    ]
    v1 = requests.get(f"{u}/review/version", params={"image": "study_0", "version": 1})
    assert v1.status_code == 200 and sha(v1.content) == sha(first.read_bytes())

    restored = requests.post(f"{u}/review/restore", params={"image": "study_0", "version": 1}).json()
    assert restored == {"image": "study_0", "tag": "final", "version": 3, "restored_from": 1}
    current = requests.get(f"{u}/datastore/label", params={"label": "study_0", "tag": "final"}).content
    assert sha(current) == sha(first.read_bytes())
    v2 = requests.get(f"{u}/review/version", params={"image": "study_0", "version": 2})
    assert sha(v2.content) == sha(second.read_bytes())  # the replaced version is intact

    assert requests.get(f"{u}/review/version", params={"image": "study_0", "version": 9}).status_code == 404
    assert requests.get(f"{u}/review/version", params={"image": "../x", "version": 1}).status_code in (
        400,
        422,
    )
    assert requests.get(f"{u}/review/versions", params={"image": "nosuch"}).status_code == 404

    # deleting the image removes its history with it
    assert requests.delete(f"{u}/datastore/image", params={"id": "study_0"}).status_code == 200
    assert not (server.studies / "labels" / ".versions" / "study_0").exists()


def test_label_on_disk_becomes_a_version(server: Server, tmp_path: Path) -> None:
    """A label written into labels/final/ before the server indexed it is version 0, and is kept as
    version 1 when a new label replaces it."""
    u = server.url
    server.stop()
    old = write_label(server.studies / "labels" / "final" / "study_1.nii.gz", seed=5)
    old_bytes = old.read_bytes()
    server.start()
    versions = requests.get(f"{u}/review/versions", params={"image": "study_1"}).json()["versions"]
    assert [(v["version"], v["source"], v["current"]) for v in versions] == [(0, "imported", True)]
    new = write_label(tmp_path / "new.nii.gz", seed=6)
    assert put_label(u, "study_1", new)["version"] == 2
    v1 = requests.get(f"{u}/review/version", params={"image": "study_1", "version": 1})
    assert sha(v1.content) == sha(old_bytes)
    versions = requests.get(f"{u}/review/versions", params={"image": "study_1"}).json()["versions"]
    assert [(v["version"], v["source"]) for v in versions] == [(1, "imported"), (2, "annotator")]
