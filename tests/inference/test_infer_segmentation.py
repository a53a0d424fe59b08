"""``/infer`` and ``/model`` against a real server running apps/segmentation (light U-Net, 32^3)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import requests
import torch

from server.datastore.volumes import load_array
from tests.inference.infer_support import APPS, CT_AFFINE, LiveServer, ServerFactory, ct_volume

CONF = {"roi_size": "32", "labels": "liver,tumour"}
LATENCY_KEYS = {"pre", "infer", "invert", "post", "write", "total", "transform"}
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def server(live_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    studies = tmp_path_factory.mktemp("seg") / "studies"
    for i in range(3):
        ct_volume(studies / f"ct_{i}.nii.gz", seed=i)
    return live_server(APPS / "segmentation", studies, CONF)


def infer(
    server: LiveServer, query: str, params: dict | None = None, files: dict | None = None
) -> requests.Response:
    form = {"params": (None, json.dumps(params or {}))}
    return requests.post(
        f"{server.url}/infer/segmentation?{query}", files={**form, **(files or {})}, timeout=60
    )


def label_of(server: LiveServer, image: str, params: dict | None = None) -> np.ndarray:
    resp = infer(server, f"image={image}&output=image", {"result_extension": ".nrrd", **(params or {})})
    assert resp.status_code == 200, resp.text
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "label.nrrd"
        path.write_bytes(resp.content)
        data, _ = nrrd.read(str(path))
    return data


def test_client_infer_returns_label_with_the_input_geometry(server: LiveServer, tmp_path: Path) -> None:
    from monailabel.client import MONAILabelClient

    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    result, params = client.infer("segmentation", "ct_0", {})
    image = nib.load(str(server.studies / "ct_0.nii.gz"))
    label = nib.load(result)
    assert label.shape == image.shape == (32, 32, 32)
    np.testing.assert_allclose(label.affine, image.affine)
    np.testing.assert_allclose(label.affine, CT_AFFINE)
    assert Path(result).name == "ct_0_segmentation.nii.gz"
    values = np.unique(np.asarray(label.dataobj))
    assert set(values.tolist()) <= {0, 1, 2}
    assert params["label_names"] == {"liver": 1, "tumour": 2}
    assert set(params["latencies"]) >= LATENCY_KEYS
    assert params["latencies"]["total"] > 0
    assert params["centroids"] == {}
    assert isinstance(params["version"], int)


def test_default_reply_is_multipart_with_params_first(server: LiveServer) -> None:
    resp = infer(server, "image=ct_0")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    body = resp.content
    params_at = body.index(
        b'Content-Disposition: form-data; name="params"\r\nContent-Type: application/json\r\n\r\n'
    )
    image_at = body.index(
        b'Content-Disposition: form-data; name="image"; filename="ct_0_segmentation.nii.gz"\r\n'
    )
    assert params_at < image_at
    assert body.endswith(b"--\r\n")


def test_output_image_is_uncompressed_nrrd_as_ohif_asks(server: LiveServer, tmp_path: Path) -> None:
    ohif = {
        "result_extension": ".nrrd",
        "result_dtype": "uint8",
        "result_compress": False,
        "restore_label_idx": False,
    }
    resp = infer(server, "image=ct_1&output=image", ohif)
    assert resp.status_code == 200
    assert 'filename="ct_1_segmentation.nrrd"' in resp.headers["Content-Disposition"]
    path = tmp_path / "result.nrrd"
    path.write_bytes(resp.content)
    data, header = nrrd.read(str(path))
    assert header["encoding"] == "raw" and data.dtype == np.uint8 and data.shape == (32, 32, 32)
    lps = RAS_TO_LPS @ CT_AFFINE
    np.testing.assert_allclose(header["space directions"], lps[:3, :3].T)
    np.testing.assert_allclose(header["space origin"], lps[:3, 3])
    # The server's own reader (nibabel has no NRRD reader) gives back the input's RAS affine.
    _, affine = load_array(path, ".nrrd")
    np.testing.assert_allclose(affine, CT_AFFINE)
    # The same label as NIfTI, read by nibabel, has the same voxels.
    nifti = infer(server, "image=ct_1&output=image", {"result_extension": ".nii.gz"})
    (tmp_path / "result.nii.gz").write_bytes(nifti.content)
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "result.nii.gz")).dataobj), data)


def test_output_json_is_the_params(server: LiveServer) -> None:
    resp = infer(server, "image=ct_0&output=json")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    assert resp.json()["label_names"] == {"liver": 1, "tumour": 2}


def test_save_label_stores_the_result_as_original(server: LiveServer) -> None:
    resp = infer(server, "image=ct_2&output=json", {"save_label": True})
    assert resp.status_code == 200
    stored = requests.get(f"{server.url}/datastore/label?label=ct_2&tag=original", timeout=10)
    assert stored.status_code == 200
    listing = requests.get(f"{server.url}/datastore/?output=all", timeout=10).json()
    info = listing["objects"]["ct_2"]["labels"]["original"]["info"]
    assert info["params"]["label_names"] == {"liver": 1, "tumour": 2}
    assert info["model"] == "segmentation"
    assert "final" not in listing["objects"]["ct_2"]["labels"]  # a prediction is not ground truth


def test_file_and_session_inputs(server: LiveServer, tmp_path: Path) -> None:
    from monailabel.client import MONAILabelClient

    raw = ct_volume(tmp_path / "local.nii.gz", seed=7)
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    result, params = client.infer("segmentation", "local", {"save_label": True}, file=str(raw))
    assert nib.load(result).shape == (32, 32, 32) and "latencies" in params
    # A raw file is not a datastore image: nothing is stored for it.
    assert (
        requests.head(f"{server.url}/datastore/label?image=local&tag=original", timeout=10).status_code == 404
    )
    session = client.create_session(str(raw))
    result, params = client.infer("segmentation", "local", {}, session_id=session["session_id"])
    assert nib.load(result).shape == (32, 32, 32)


def test_nrrd_input_keeps_its_own_space_fields(server: LiveServer, tmp_path: Path) -> None:
    data = np.asarray(nib.load(str(server.studies / "ct_0.nii.gz")).dataobj)
    header = {
        "space": "left-posterior-superior",
        "space directions": np.array([[0.0, 1.2, 0.0], [1.2, 0.0, 0.0], [0.0, 0.0, 2.5]]),
        "space origin": np.array([5.0, -7.0, 11.0]),
    }
    nrrd.write(str(tmp_path / "in.nrrd"), data, header)
    files = {"file": ("in.nrrd", (tmp_path / "in.nrrd").read_bytes())}
    resp = infer(server, "image=x&output=image", {}, files)
    assert resp.status_code == 200
    assert 'filename="input_segmentation.nrrd"' in resp.headers["Content-Disposition"]
    (tmp_path / "out.nrrd").write_bytes(resp.content)
    out, out_header = nrrd.read(str(tmp_path / "out.nrrd"))
    assert out.shape == data.shape
    np.testing.assert_allclose(out_header["space directions"], header["space directions"])
    np.testing.assert_allclose(out_header["space origin"], header["space origin"])


def test_bin_label_is_reshaped_to_the_image(server: LiveServer) -> None:
    good = np.zeros((32, 32, 32), np.uint8).tobytes(order="F")
    resp = infer(server, "image=ct_0&output=json", {}, {"label": ("label.bin", good)})
    assert resp.status_code == 200
    resp = infer(server, "image=ct_0&output=json", {}, {"label": ("label.bin", good[:-5])})
    assert resp.status_code == 400
    assert "32768" in resp.json()["detail"]


def test_bad_input_is_a_4xx_with_detail(server: LiveServer) -> None:
    cases: list[tuple[str, str, dict, dict | None, int]] = [
        ("nosuchmodel", "image=ct_0", {}, None, 404),
        ("segmentation", "", {}, None, 400),  # no image, file or session
        ("segmentation", "image=nope", {}, None, 404),
        ("segmentation", "image=ct_0", {}, {"file": ("broken.nii.gz", b"not a volume at all")}, 400),
        ("segmentation", "image=ct_0&output=dicom_seg", {}, None, 400),
        ("segmentation", "image=ct_0&output=bogus", {}, None, 422),
        ("segmentation", "image=ct_0", {"result_extension": ".png"}, None, 400),
        ("segmentation", "image=ct_0", {"result_dtype": "complex64"}, None, 400),
        ("segmentation", "image=ct_0&session_id=unknown", {}, None, 404),
    ]
    for model, query, params, files, status in cases:
        form = {"params": (None, json.dumps(params)), **(files or {})}
        resp = requests.post(f"{server.url}/infer/{model}?{query}", files=form, timeout=60)
        assert resp.status_code == status, (model, query, params, resp.text)
        assert resp.json()["detail"], (model, query)


def test_truncated_volume_does_not_load(server: LiveServer, tmp_path: Path) -> None:
    raw = ct_volume(tmp_path / "t.nii", seed=3).read_bytes()
    resp = infer(server, "image=x", {}, {"file": ("t.nii", raw[: len(raw) // 2])})
    assert resp.status_code == 400
    assert "load" in resp.json()["detail"]


def test_crf_request_without_the_extension_is_refused(server: LiveServer) -> None:
    from server.inference.segmentation import crf_available

    if crf_available():
        pytest.skip("MONAI's C++ extension is present: CRF runs")
    resp = infer(server, "image=ct_0&output=json", {"crf": True})
    assert resp.status_code == 400 and "CRF" in resp.json()["detail"]


def test_publishing_a_checkpoint_changes_the_next_prediction(server: LiveServer, tmp_path: Path) -> None:
    from server.apploader import load_app
    from server.inference.weights import seeded

    before = label_of(server, "ct_0")
    assert requests.get(f"{server.url}/model/segmentation", timeout=10).status_code == 404
    info = requests.get(f"{server.url}/info/", timeout=10).json()["models"]["segmentation"]
    assert info["version"] == 0 and info["weights"] == "initialised (seed 0)"

    task = load_app(APPS / "segmentation", CONF).models["segmentation"].task
    checkpoint = tmp_path / "model.pt"
    torch.save(seeded(task.network, 1).state_dict(), checkpoint)
    put = requests.put(
        f"{server.url}/model/segmentation", files={"file": ("model.pt", checkpoint.read_bytes())}, timeout=30
    )
    assert put.status_code == 200, put.text
    assert put.json()["version"] == 1 and put.json()["checksum"].startswith("SHA256:")
    assert isinstance(put.json()["modified_time"], int)

    after = infer(server, "image=ct_0&output=json").json()
    assert after["version"] == 1
    changed = label_of(server, "ct_0")
    assert not np.array_equal(before, changed)
    assert requests.get(f"{server.url}/info/", timeout=10).json()["models"]["segmentation"]["version"] == 1
    assert requests.get(f"{server.url}/model/segmentation", timeout=10).content == checkpoint.read_bytes()
    assert requests.get(f"{server.url}/model/info/segmentation", timeout=10).json()["version"] == 1

    # A checkpoint for another network is refused and publishes nothing.
    torch.save({"weight": torch.zeros(3)}, tmp_path / "bad.pt")
    bad = requests.put(
        f"{server.url}/model/segmentation",
        files={"file": ("bad.pt", (tmp_path / "bad.pt").read_bytes())},
        timeout=30,
    )
    assert bad.status_code == 400 and bad.json()["detail"]
    assert requests.get(f"{server.url}/model/info/segmentation", timeout=10).json()["version"] == 1

    # DELETE retires v1: the seed initialisation serves again, same prediction as before.
    assert requests.delete(f"{server.url}/model/segmentation", timeout=10).status_code == 200
    assert label_of(server, "ct_0").tolist() == before.tolist()
    weights = server.studies / ".labelloop" / "models" / "segmentation"
    assert (weights / "v1.pt.deleted").is_file() and not (weights / "v1.pt").exists()
