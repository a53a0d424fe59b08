"""The tasks in-process: networks, ensembles, post-processing, writer geometry, app settings."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from server.apploader import AppLoadError, load_app
from server.inference.deepedit import guidance_channels
from server.inference.networks import segmentation_network
from server.inference.request import InferRequest
from server.inference.segmentation import SegmentationConfig, SegmentationTask
from server.inference.transforms import channel_argmax, keep_largest_component
from server.inference.weights import seeded
from tests.inference.infer_support import APPS, CT_AFFINE, ct_volume

LIGHT = SegmentationConfig(roi_size=(32, 32, 32))


def request(tmp_path: Path, image: Path, **params: object) -> InferRequest:
    return InferRequest("seg", image, ".nii.gz", tmp_path, dict(params), "all")


def test_ensemble_averages_the_members_probabilities(tmp_path: Path) -> None:
    image = ct_volume(tmp_path / "ct.nii.gz", seed=1)
    task = SegmentationTask({"liver": 1, "tumour": 2}, LIGHT)
    nets = [seeded(task.network, seed).eval() for seed in (0, 1)]
    result = task.run(request(tmp_path, image), nets, torch.device("cpu"))
    assert result.file is not None
    got = np.asarray(nib.load(str(result.file)).dataobj)

    # By hand: the same preprocessing (spacing matches, RAS flips x and y), the mean of the softmaxes.
    data = np.asarray(nib.load(str(image)).dataobj, dtype=np.float32)[::-1, ::-1].copy()
    x = torch.from_numpy(np.clip((data + 175) / 425, 0, 1))[None, None]
    with torch.inference_mode():
        probs = sliding_window_inference(
            x, (32, 32, 32), 1, lambda v: sum(torch.softmax(n(v), 1) for n in nets) / 2, overlap=0.25
        )
    expected = torch.argmax(probs[0], 0).numpy()[::-1, ::-1]
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(nib.load(str(result.file)).affine, CT_AFFINE)


def test_largest_component_and_fast_argmax() -> None:
    label = np.zeros((10, 10, 10), np.uint8)
    label[1:4, 1:4, 1:4] = 1
    label[7:9, 7:9, 7:9] = 1
    label[5, 5, 5] = 2
    kept = keep_largest_component(label, [1, 2])
    assert (kept == 1).sum() == 27 and kept[5, 5, 5] == 2
    scores = torch.randn(3, 9, 8, 7)
    scores[:, 0, 0, 0] = 1.0  # a tie goes to the lowest index, as torch.argmax
    assert torch.equal(channel_argmax(scores)[0].long(), torch.argmax(scores, 0))


def test_networks_per_setting() -> None:
    classic = segmentation_network("unet", 1, 3, (64, 128, 256, 512))
    convs = [m for m in classic.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs[0].out_channels == 64
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in classic.modules())
    attention = segmentation_network("attention_unet", 1, 3, (8, 16, 32, 64))
    with torch.inference_mode():
        assert attention.eval()(torch.rand(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


def test_app_settings_are_checked_at_load() -> None:
    spec = load_app(
        APPS / "segmentation", {"network": "attention_unet", "channels": "classic", "labels": "a,b,c"}
    )
    task = spec.models["segmentation"].task
    assert task.config.network == "attention_unet" and task.config.channels[0] == 64
    assert spec.models["segmentation"].labels == {"a": 1, "b": 2, "c": 3}
    assert spec.trainers["segmentation"].config["model"] == "segmentation"
    mr = load_app(APPS / "segmentation", {"preset": "mr", "spacing": "native", "roi_size": "32"})
    assert mr.models["segmentation"].task.config.spacing is None
    for bad in (
        {"network": "vnet"},
        {"roi_size": "32,32"},
        {"crop_foreground": "maybe"},
        {"window": "400,-100"},
    ):
        with pytest.raises(AppLoadError, match="--conf"):
            load_app(APPS / "segmentation", bad)
    with pytest.raises(AppLoadError, match="pretrained"):
        load_app(APPS / "classification", {"pretrained": "/nonexistent/weights.pt"})


def test_deepedit_guidance_sigma_is_one_setting_for_the_model_and_its_trainer() -> None:
    """``--conf deepedit_sigma`` reaches inference, ``/info/`` and training alike: a model called with
    another width than it was trained with would read its clicks wrongly."""
    default = load_app(APPS / "segmentation", {"interactive": "true"})
    assert default.models["deepedit"].task.describe()["interactive"]["sigma"] == 3.0
    spec = load_app(APPS / "segmentation", {"interactive": "true", "deepedit_sigma": "1.5"})
    task, trainer = spec.models["deepedit"].task, spec.trainers["deepedit"].task
    assert task.describe()["interactive"]["sigma"] == 1.5
    assert trainer.config()["guidance_sigma"] == 1.5
    # The trainer's clicks become the same channels the model is called with.
    item = {"image": np.zeros((1, 12, 12, 12), np.float32), "label": np.zeros((1, 12, 12, 12), np.uint8)}
    item["label"][0, 4:8, 4:8, 4:8] = 1
    clicked = trainer.val_transforms().transforms[-1](item)
    guidance = json.loads(clicked["guidance"])
    expected = guidance_channels(item["image"], guidance, 1.5)
    np.testing.assert_allclose(np.asarray(clicked["image"]), expected)
    assert not np.allclose(expected, guidance_channels(item["image"], guidance, 3.0))
    for bad in ("0", "-1", "nan", "17", "inf", "wide"):
        with pytest.raises(AppLoadError, match="deepedit_sigma"):
            load_app(APPS / "segmentation", {"interactive": "true", "deepedit_sigma": bad})
    assert trainer.config()["click_loss"] == 0.0  # MONAI's recipe: the clicked-error loss is off


@pytest.mark.parametrize("network", ["densenet121", "resnet18", "cnn"])
def test_gradcam_for_each_2d_classifier(tmp_path: Path, network: str) -> None:
    from server.inference.classification import ClassificationConfig, ClassificationTask

    rgb = np.random.default_rng(1).integers(0, 255, (36, 44, 3), dtype=np.uint8)
    path = tmp_path / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.diag([0.5, 0.5, 1.0, 1.0])), str(path))
    config = ClassificationConfig(network=network, dimension=2, in_channels=3, spatial_size=(32, 32))
    task = ClassificationTask(["a", "b", "c"], config)
    req = InferRequest("lesion", path, ".nii.gz", tmp_path, {}, "image")
    result = task.run(req, [task.initial_network().eval()], torch.device("cpu"))
    assert result.file is not None and result.params["gradcam"]["class"] == result.params["prediction"]
    cam = nib.load(str(result.file))
    assert cam.shape == (36, 44)
    np.testing.assert_allclose(cam.affine, np.diag([0.5, 0.5, 1.0, 1.0]))
    assert abs(sum(result.params["probabilities"].values()) - 1.0) < 1e-5
