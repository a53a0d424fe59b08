"""Safe model updates: a new version is published only when it is at least as good as the current one
on the same validation studies, which stay the same across rounds; otherwise the job ends DONE with
"kept version N" and the numbers."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import requests

from tests.conftest import Server, free_port, write_volume
from tests.training.conftest import TEST_APP, save_label, wait_for

STUDIES = 6


def learnable(folder: Path, tmp: Path) -> list[Path]:
    """Studies whose label is what the intensity window shows (bright spheres), so a model learns it."""
    labels = []
    for i in range(STUDIES):
        image = write_volume(folder / f"study_{i}.nii.gz", seed=i)
        img = nib.load(str(image))
        label = (np.asanyarray(img.dataobj) > 0).astype(np.uint8)
        path = tmp / f"label_{i}.nii.gz"
        nib.save(nib.Nifti1Image(label, img.affine), str(path))
        labels.append(path)
    return labels


def train(url: str, trainer: str, **params: object) -> dict:
    r = requests.post(f"{url}/train/{trainer}", json={"rescore": False, **params}, timeout=30)
    assert r.status_code == 200, r.text
    return wait_for(url, r.json()["id"], ("DONE", "ERROR", "STOPPED"), timeout=240)


def test_a_worse_version_is_kept_out_and_the_validation_set_is_stable(tmp_path: Path) -> None:
    folder = tmp_path / "studies"
    labels = learnable(folder, tmp_path)
    srv = Server(folder, free_port(), args=["--app", str(TEST_APP)]).start()
    try:
        for i, path in enumerate(labels[:4]):
            save_label(srv.url, f"study_{i}", path)
        first = train(srv.url, "segmentation", max_epochs=6, val_split=0.25)
        assert first["status"] == "DONE" and first["model_version"] == 1, first
        held = json.loads((folder / ".labelloop" / "train" / "segmentation" / "validation.json").read_text())
        assert len(held) == 1

        for i, path in enumerate(labels[4:], start=4):  # more labels arrive: the held-out study stays
            save_label(srv.url, f"study_{i}", path)
        worse = train(srv.url, "degraded", max_epochs=3, val_split=0.34, compare_min_studies=1)
        assert worse["status"] == "DONE", worse
        result = worse["result"]
        assert result["published"] is False and result["kept_version"] == 1, result
        assert result["best_metric"] < result["current_version_metric"], result
        assert "kept version 1" in result["detail"] and "kept version 1" in worse["details"][-1]
        assert worse["model_version"] is None
        info = requests.get(f"{srv.url}/model/info/segmentation", timeout=10).json()
        assert info["version"] == 1  # still served
        again = json.loads((folder / ".labelloop" / "train" / "segmentation" / "validation.json").read_text())
        assert set(held) <= set(again) and len(again) == 2  # grew with the pool, lost nobody

        forced = train(srv.url, "degraded", max_epochs=1, compare_min_studies=1, always_publish=True)
        assert forced["status"] == "DONE" and forced["model_version"] == 2, forced
    finally:
        srv.stop()
