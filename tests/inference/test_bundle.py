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

from tests.conftest import NO_WORKER, Server, free_port, write_label, write_volume
from tests.training.conftest import save_label, wait_for

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


LOAD = [
    {"_target_": "LoadImaged", "keys": ["image", "label"]},
    {"_target_": "EnsureChannelFirstd", "keys": ["image", "label"]},
    {"_target_": "ScaleIntensityd", "keys": "image"},
]
# A training config in the Model Zoo's layout: train#trainer runs, validate#evaluator validates each
# epoch and its CheckpointSaver keeps the best model as @ckpt_dir/model.pt.
TRAIN = {
    "bundle_root": ".",
    "ckpt_dir": "$@bundle_root + '/models'",
    "device": "$torch.device('cpu')",
    "network_def": NETWORK,
    "network": "$@network_def.to(@device)",
    "loss": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
    "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 0.01},
    "train": {
        "preprocessing": {"_target_": "Compose", "transforms": LOAD},
        "dataset": {"_target_": "Dataset", "data": [], "transform": "@train#preprocessing"},
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@train#dataset",
            "batch_size": 2,
            "shuffle": True,
            "num_workers": 0,
        },
        "handlers": [
            {
                "_target_": "ValidationHandler",
                "validator": "@validate#evaluator",
                "epoch_level": True,
                "interval": 1,
            }
        ],
        "trainer": {
            "_target_": "SupervisedTrainer",
            "max_epochs": 100,
            "device": "@device",
            "train_data_loader": "@train#dataloader",
            "network": "@network",
            "loss_function": "@loss",
            "optimizer": "@optimizer",
            "train_handlers": "@train#handlers",
        },
    },
    "validate": {
        "dataset": {
            "_target_": "Dataset",
            "data": [],
            "transform": {"_target_": "Compose", "transforms": LOAD},
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@validate#dataset",
            "batch_size": 1,
            "num_workers": 0,
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {
                    "_target_": "AsDiscreted",
                    "keys": ["pred", "label"],
                    "argmax": [True, False],
                    "to_onehot": 2,
                },
            ],
        },
        "handlers": [
            {
                "_target_": "CheckpointSaver",
                "save_dir": "@ckpt_dir",
                "save_dict": {"model": "@network"},
                "save_key_metric": True,
                "key_metric_filename": "model.pt",
            }
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@validate#dataloader",
            "network": "@network",
            "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16], "sw_batch_size": 2},
            "postprocessing": "@validate#postprocessing",
            "key_val_metric": {
                "val_mean_dice": {
                    "_target_": "MeanDice",
                    "include_background": False,
                    "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
                }
            },
            "val_handlers": "@validate#handlers",
        },
    },
    "initialize": ["$monai.utils.set_determinism(seed=0)"],
    "run": ["$@train#trainer.run()"],
}


def make_bundle(folder: Path, train: bool = False) -> Path:
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "metadata.json").write_text(json.dumps(METADATA))
    (folder / "configs" / "inference.json").write_text(json.dumps(INFERENCE))
    if train:
        (folder / "configs" / "train.json").write_text(json.dumps(TRAIN))
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


def test_a_bundle_trains_through_its_train_config_and_publishes_a_version(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "spheres_bundle", train=True)
    weights_before = (bundle / "models" / "model.pt").read_bytes()
    studies = tmp_path / "studies"
    for i in range(5):
        write_volume(studies / f"study_{i}.nii.gz", seed=i)
    srv = Server(studies, free_port(), args=["--conf", "bundles", str(bundle)]).start()
    try:
        info = requests.get(f"{srv.url}/info/", timeout=30).json()
        assert info["trainers"]["spheres_bundle"]["config"]["bundle_config"] == "train.json"
        for i in range(4):
            save_label(srv.url, f"study_{i}", write_label(tmp_path / "labels" / f"l{i}.nii.gz", seed=i))
        job = requests.post(
            f"{srv.url}/train/spheres_bundle", json={"max_epochs": 3, "rescore": False}, timeout=10
        ).json()
        done = wait_for(srv.url, job["id"], ("DONE", "ERROR", "STOPPED"), timeout=300)
        assert done["status"] == "DONE", done
        assert done["train_stats"]["epoch"] == 3 and done["train_stats"]["total_epochs"] == 3
        info = requests.get(f"{srv.url}/info/", timeout=30).json()
        assert info["models"]["spheres_bundle"]["version"] == 1
        r = requests.post(
            f"{srv.url}/infer/spheres_bundle?image=study_4&output=json",
            files={"params": (None, "{}")},
            timeout=120,
        )
        assert r.status_code == 200 and r.json()["version"] == 1, r.text
        # The job wrote in its own folder: the bundle's folder is as it was.
        assert (bundle / "models" / "model.pt").read_bytes() == weights_before
        assert sorted(p.name for p in (bundle / "models").iterdir()) == ["model.pt"]
    finally:
        srv.stop()
