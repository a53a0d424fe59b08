"""The real MONAI Label client (the code 3D Slicer bundles) against a real labelloop server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

from tests.conftest import AFFINE, Server, write_label, write_volume


def sha(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_info_lists_app_and_datastore(server: Server) -> None:
    info = MONAILabelClient(server.url).info()
    assert "config" not in info  # 3D Slicer refuses a server whose /info/ has a top-level config
    assert set(info) >= {
        "name",
        "labels",
        "models",
        "trainers",
        "strategies",
        "scoring",
        "train_stats",
        "datastore",
    }
    assert {"random", "first", "last"} <= set(info["strategies"])
    assert info["datastore"] == {"total": 3, "completed": 0, "label_tags": {}}


def test_upload_next_sample_save_label_round_trip(server: Server, tmp_path: Path) -> None:
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path), client_id="annotator-1")
    image = write_volume(tmp_path / "upload" / "liver_7.nii.gz", seed=7)
    assert client.upload_image(str(image), image_id="liver_7") == {"image": "liver_7"}
    assert sha(server.studies / "liver_7.nii.gz") == sha(image)

    first = client.next_sample("first", {})
    assert first["id"] == "liver_7"  # 'l' < 's'
    assert first["name"] == "liver_7.nii.gz"
    assert Path(first["path"]) == server.studies / "liver_7.nii.gz"
    assert first["strategy"]["first"]["client_id"] == "annotator-1"

    label = write_label(tmp_path / "lab" / "liver_7.nii.gz", seed=3)
    saved = client.save_label(
        "liver_7", str(label), tag="final", params={"label_info": [{"name": "liver", "idx": 1}]}
    )
    assert saved["image"] == "liver_7"

    store = client.datastore()
    entry = store["objects"]["liver_7"]
    assert entry["labels"]["final"]["info"]["label_info"] == [{"name": "liver", "idx": 1}]
    assert client.info()["datastore"]["completed"] == 1

    downloaded = client.download_label("liver_7", "final")
    assert downloaded.endswith(".nii.gz")
    assert sha(downloaded) == sha(label)  # byte-identical

    # A labelled study is never served again.
    for _ in range(6):
        assert client.next_sample("random", {})["id"] != "liver_7"

    server.restart()
    again = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    assert sha(again.download_label("liver_7", "final")) == sha(label)
    assert again.info()["datastore"]["completed"] == 1


def test_random_serves_never_served_first(server: Server) -> None:
    client = MONAILabelClient(server.url, client_id="reader-1")
    seen = [client.next_sample("random", {})["id"] for _ in range(3)]
    assert sorted(seen) == ["study_0", "study_1", "study_2"]  # each once before any repeats
    fourth = client.next_sample("random", {})
    assert fourth["id"] == seen[0]  # then the least recently served (a client holds its latest pick)
    assert fourth["weight"] >= 0


def test_anonymous_requests_hold_their_own_leases(server: Server) -> None:
    """No client id (as the OHIF panel sends): every request is someone else, so none gets a study
    another still holds; when all are held the answer is {}."""
    client = MONAILabelClient(server.url, client_id=None)
    seen = [client.next_sample("random", {})["id"] for _ in range(3)]
    assert sorted(seen) == ["study_0", "study_1", "study_2"]
    assert client.next_sample("random", {}) == {}


def test_next_sample_empty_when_all_labelled(server: Server, tmp_path: Path) -> None:
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    for i in range(3):
        client.save_label(f"study_{i}", str(write_label(tmp_path / f"l{i}.nii.gz", seed=i)), tag="final")
    assert client.next_sample("random", {}) == {}
    assert client.next_sample("last", {}) == {}


def test_sessions_create_get_remove(server: Server, tmp_path: Path) -> None:
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    image = write_volume(tmp_path / "local.nii.gz", seed=11)
    created = client.create_session(str(image))
    sid = created["session_id"]
    info = created["session_info"]
    assert Path(info["image"]).name == "local.nii.gz"
    assert sha(info["image"]) == sha(image)
    assert client.get_session(sid)["expiry"] == 3600
    assert client.remove_session(sid)["name"] == sid
    with pytest.raises(MONAILabelClientException):
        client.get_session(sid)


def test_label_tags_and_original(server: Server, tmp_path: Path) -> None:
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    label = write_label(tmp_path / "orig.nrrd".replace(".nrrd", ".nii.gz"), seed=5)
    client.save_label("study_1", str(label), tag="original")
    stats = client.info()["datastore"]
    assert stats == {
        "total": 3,
        "completed": 0,
        "label_tags": {"original": 1},
    }  # original is not ground truth
    out = client.download_label("study_1", "original")
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, AFFINE)
