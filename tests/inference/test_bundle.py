"""A MONAI Bundle hosted as a model (``--conf bundles DIR``): built here (configs, weights saved by the
test), served by ``/info/`` and ``/infer/``, and its output compared voxel for voxel with running the
bundle's own inference config (``monai.bundle.run``: its evaluator, its ``SaveImaged``)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import requests
import torch
from monai.bundle import run as run_bundle
from monai.networks.nets import UNet

from tests.conftest import NO_WORKER, Server, free_port, write_volume

METADATA = {
    "version": "0.1.0",
    "name": "Spheres test bundle",
    "description": "a two-level U-Net on 32^3 volumes, built by the test",
    "network_data_format": {
        "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": [32, 32, 32]}},
        "outputs": {
            "pred": {"type": "image", "num_channels": 2, "channel_def": {"0": "background", "1": "sphere"}}
        },
    },
}
NETWORK = {
    "_target_": "UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [4, 8],
    "strides": [2],
    "num_res_units": 0,
}
INFERENCE = {
    "bundle_root": ".",
    "output_dir": "$@bundle_root + '/eval'",
    "datalist": [],
    "device": "$torch.device('cpu')",
    "network_def": NETWORK,
    "network": "$@network_def.to(@device)",
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "ScaleIntensityd", "keys": "image"},
        ],
    },
    "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
    "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "num_workers": 0},
    "inferer": {
        "_target_": "SlidingWindowInferer",
        "roi_size": [16, 16, 16],
        "sw_batch_size": 2,
        "overlap": 0.25,
    },
    "postprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {
                "_target_": "SaveImaged",
                "keys": "pred",
                "output_dir": "@output_dir",
                "output_postfix": "seg",
                "separate_folder": False,
                "resample": False,
                "output_dtype": "$np.uint8",
            },
        ],
    },
    "handlers": [
        {
            "_target_": "CheckpointLoader",
            "load_path": "$@bundle_root + '/models/model.pt'",
            "load_dict": {"model": "@network"},
        }
    ],
    "evaluator": {
        "_target_": "SupervisedEvaluator",
        "device": "@device",
        "val_data_loader": "@dataloader",
        "network": "@network",
        "inferer": "@inferer",
        "postprocessing": "@postprocessing",
        "val_handlers": "@handlers",
    },
    "run": ["$@evaluator.run()"],
}


def make_bundle(folder: Path) -> Path:
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "metadata.json").write_text(json.dumps(METADATA))
    (folder / "configs" / "inference.json").write_text(json.dumps(INFERENCE))
    torch.manual_seed(7)
    net = UNet(**{k: v for k, v in NETWORK.items() if k != "_target_"})
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    return folder


def test_a_bundle_is_served_with_its_own_output(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "spheres_bundle")
    studies = tmp_path / "studies"
    image = write_volume(studies / "study_0.nii.gz", seed=3)

    # The bundle run as MONAI runs it: its evaluator, its weights, its SaveImaged.
    out = tmp_path / "direct"
    run_bundle(
        run_id="run",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle),
        datalist=[{"image": str(image)}],
        output_dir=str(out),
    )
    direct = nib.load(str(out / "study_0_seg.nii.gz"))

    srv = Server(studies, free_port(), args=["--conf", "bundles", str(bundle)], env=dict(NO_WORKER)).start()
    try:
        info = requests.get(f"{srv.url}/info/", timeout=30).json()
        model = info["models"]["spheres_bundle"]
        assert model["type"] == "segmentation" and model["labels"] == {"sphere": 1}
        assert model["description"] == METADATA["description"]
        assert model["bundle"] == {"name": "Spheres test bundle", "version": "0.1.0"}
        form = {"params": (None, json.dumps({}))}
        r = requests.post(
            f"{srv.url}/infer/spheres_bundle?image=study_0&output=image", files=form, timeout=120
        )
        assert r.status_code == 200, r.text
        served_path = tmp_path / "served.nii.gz"
        served_path.write_bytes(r.content)
        served = nib.load(str(served_path))
        ours, theirs = np.asarray(served.dataobj), np.asarray(direct.dataobj)
        assert ours.shape == theirs.shape == (32, 32, 32)
        assert 0 < int((ours == 1).sum()) < ours.size  # not a trivial mask
        assert np.array_equal(ours, theirs)  # voxel for voxel
        assert np.allclose(served.affine, nib.load(str(image)).affine)

        # A broken bundle folder fails the start with the reason.
        (tmp_path / "broken").mkdir()
        bad = Server(
            studies, free_port(), args=["--conf", "bundles", str(tmp_path / "broken")], env=dict(NO_WORKER)
        )
        try:
            bad.start(timeout=60)
            raise AssertionError("a folder that is not a bundle was accepted")
        except RuntimeError as exc:
            assert "metadata.json" in str(exc)
    finally:
        srv.stop()
