"""A semi-supervised training job end to end through a real server: 32^3 studies, two labelled, three
not; two epochs; a published version; pseudo-labels with provenance that are never ground truth, that a
final label removes, and that the next version replaces."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import requests

from tests.conftest import Server, free_port, write_label, write_volume
from tests.training.conftest import TEST_APP, save_label, wait_for

pytestmark = pytest.mark.slow

STUDIES = 5
LABELLED = 2
TERMINAL = ("DONE", "ERROR", "STOPPED")
SEMI = {"enabled": True, "method": "pseudo_label", "threshold": 0.6, "max_unlabelled": 8, "rampup_epochs": 1}


def train(url: str) -> dict[str, object]:
    params = {"max_epochs": 2, "rescore": False, "semi_supervised": SEMI}
    task = requests.post(f"{url}/train/segmentation", json=params, timeout=10).json()
    done = wait_for(url, task["id"], TERMINAL, timeout=120)
    assert done["status"] == "DONE", done
    return done


def pseudo_infos(url: str) -> dict[str, dict[str, object]]:
    objects = requests.get(f"{url}/datastore/", params={"output": "all"}, timeout=10).json()["objects"]
    return {i: o["labels"]["pseudo"]["info"] for i, o in objects.items() if "pseudo" in o["labels"]}


def test_semi_supervised_job_writes_pseudo_labels_that_never_count_as_truth(tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    for i in range(STUDIES):
        write_volume(studies / f"study_{i}.nii.gz", seed=i)
    srv = Server(studies, free_port(), args=["--app", str(TEST_APP)]).start()
    try:
        url = srv.url
        for i in range(LABELLED):
            save_label(url, f"study_{i}", write_label(tmp_path / "in" / f"l{i}.nii.gz", seed=100 + i))
        config = requests.get(f"{url}/info/", timeout=10).json()["trainers"]["segmentation"]["config"]
        assert config["semi_supervised"]["enabled"] is False and config["semi_supervised"]["threshold"] == 0.9
        bad = {"semi_supervised": {"method": "nosuch"}}
        assert requests.post(f"{url}/train/segmentation", json=bad, timeout=10).status_code == 422

        first = train(url)
        assert first["model_version"] == 1
        assert first["result"]["pseudo_labels"]["written"] == STUDIES - LABELLED, first["result"]
        assert any("semi-supervised (pseudo_label" in line for line in first["details"]), first["details"]
        stats = requests.get(f"{url}/info/", timeout=10).json()["train_stats"]["segmentation"]
        assert stats["semi_supervised"]["unlabelled_studies"] == STUDIES - LABELLED

        infos = pseudo_infos(url)
        assert sorted(infos) == [f"study_{i}" for i in range(LABELLED, STUDIES)]
        for info in infos.values():
            assert info["model"] == "segmentation" and info["model_version"] == 1
            assert info["threshold"] == 0.6 and info["method"] == "pseudo_label" and info["created_ts"]
        listing = requests.get(f"{url}/datastore/", timeout=10).json()
        assert listing["completed"] == LABELLED and listing["label_tags"]["pseudo"] == STUDIES - LABELLED
        train_list = requests.get(f"{url}/datastore/", params={"output": "train"}, timeout=10).json()
        assert len(train_list) == LABELLED and all("/labels/final/" in p["label"] for p in train_list)
        archive = requests.get(f"{url}/datastore/dataset", timeout=30).content
        names = zipfile.ZipFile(io.BytesIO(archive)).namelist()
        assert len(names) == 2 * LABELLED and not any("pseudo" in n for n in names)
        r = requests.get(f"{url}/datastore/label", params={"label": "study_2", "tag": "pseudo"}, timeout=10)
        assert r.status_code == 200  # viewable as what it is, under its own tag

        # The annotator labels study_2: their final label wins, the pseudo-label goes.
        save_label(url, "study_2", write_label(tmp_path / "in" / "l2.nii.gz", seed=102))
        assert "study_2" not in pseudo_infos(url)

        # The next version replaces every remaining pseudo-label.
        second = train(url)
        assert second["model_version"] == 2
        infos = pseudo_infos(url)
        assert sorted(infos) == [f"study_{i}" for i in range(LABELLED + 1, STUDIES)]
        assert {info["model_version"] for info in infos.values()} == {2}
        assert requests.get(f"{url}/datastore/", timeout=10).json()["completed"] == LABELLED + 1
    finally:
        srv.stop()
