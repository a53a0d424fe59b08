"""Classification through a real server running apps/classification: JSON probabilities, Grad-CAM, and a
training request it refuses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests

from tests.inference.infer_support import APPS, CT_AFFINE, LiveServer, ServerFactory, ct_volume

CONF = {"lesion_size": "32"}


@pytest.fixture(scope="module")
def server(live_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    studies = tmp_path_factory.mktemp("cls") / "studies"
    ct_volume(studies / "nodule_0.nii.gz", seed=4)
    return live_server(APPS / "classification", studies, CONF)


def post(server: LiveServer, model: str, query: str, files: dict | None = None) -> requests.Response:
    form = {"params": (None, json.dumps({}))}
    return requests.post(f"{server.url}/infer/{model}?{query}", files={**form, **(files or {})}, timeout=60)


def test_info_lists_both_classifiers(server: LiveServer) -> None:
    models = requests.get(f"{server.url}/info/", timeout=10).json()["models"]
    assert models["nodule"]["type"] == "classification" and models["nodule"]["dimension"] == 3
    assert models["lesion"]["dimension"] == 2 and len(models["lesion"]["labels"]) == 7
    assert models["lesion"]["network"]["network"] == "resnet18"
    assert models["nodule"]["version"] == 0


def test_nodule_probabilities_sum_to_one(server: LiveServer, tmp_path: Path) -> None:
    from monailabel.client import MONAILabelClient

    result, raw = MONAILabelClient(server.url, tmpdir=str(tmp_path)).infer("nodule", "nodule_0", {})
    assert result is None  # JSON only: no image part
    # With no image the reply is plain JSON (as MONAI Label's), which this client hands back as bytes.
    params = json.loads(raw) if isinstance(raw, bytes) else raw
    probs = params["probabilities"]
    assert set(probs) == {"benign", "malignant"}
    assert math.isclose(sum(probs.values()), 1.0, rel_tol=1e-5)
    assert params["prediction"] == max(probs, key=probs.get)
    assert {"pre", "infer", "total"} <= set(params["latencies"])


def test_lesion_2d_rgb_upload(server: LiveServer, tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    path = tmp_path / "lesion.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(path))
    resp = post(server, "lesion", "image=x&output=json", {"file": ("lesion.nii.gz", path.read_bytes())})
    assert resp.status_code == 200, resp.text
    probs = resp.json()["probabilities"]
    assert len(probs) == 7 and math.isclose(sum(probs.values()), 1.0, rel_tol=1e-5)


def test_gradcam_map_has_the_input_geometry(server: LiveServer, tmp_path: Path) -> None:
    resp = post(server, "nodule", "image=nodule_0&output=image")
    assert resp.status_code == 200, resp.text
    path = tmp_path / "cam.nii.gz"
    path.write_bytes(resp.content)
    cam = nib.load(str(path))
    assert cam.shape == (32, 32, 32)
    np.testing.assert_allclose(cam.affine, CT_AFFINE)
    values = np.asarray(cam.dataobj)
    assert values.dtype == np.float32 and values.min() >= 0.0 and values.max() <= 1.0 + 1e-6


def test_training_refuses_copy_paste_for_a_classifier(server: LiveServer) -> None:
    params = {"semi_supervised": {"enabled": True, "perturbation": "copy_paste"}}
    resp = requests.post(f"{server.url}/train/nodule", json=params, timeout=10)
    assert resp.status_code == 422 and "segmentation" in resp.json()["detail"], resp.text
    jobs = requests.get(f"{server.url}/train/", params={"all": "true"}, timeout=10)
    assert jobs.status_code == 404, jobs.text  # no training job was stored
