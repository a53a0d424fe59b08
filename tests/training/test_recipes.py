"""The training recipe and job plumbing without a server: params, split, cache budget, early stop, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from torch import nn

from server.jobs.models import Job
from server.jobs.procs import kill_tree
from server.jobs.supervisor import DeviceSlots
from server.settings import settings_env
from server.training.base import TrainContext, TrainState, split
from server.training.config import BadTrainParams, TrainConfig
from server.training.segmentation import SegmentationTrainer
from tests.conftest import REPO, write_label, write_volume
from tests.training.conftest import settings_and_db


@pytest.fixture
def items(tmp_path: Path) -> list[dict[str, Any]]:
    return [
        {
            "image": str(write_volume(tmp_path / f"img_{i}.nii.gz", seed=i)),
            "label": str(write_label(tmp_path / f"lab_{i}.nii.gz", seed=i)),
        }
        for i in range(4)
    ]


def tiny_trainer(**defaults: Any) -> SegmentationTrainer:
    from monai.networks.nets import UNet

    return SegmentationTrainer(
        labels=["sphere"],
        network_factory=lambda: UNet(3, 1, 2, (4, 8), (2,), num_res_units=0),
        roi_size=(32, 32, 32),
        intensity_range=(-500.0, 500.0),
        **defaults,
    )


def test_params_override_defaults_and_are_checked() -> None:
    cfg = TrainConfig.build({"max_epochs": 50}, {"max_epochs": "3", "client_id": "x", "amp": "false"})
    assert cfg.max_epochs == 3 and cfg.amp is False and cfg.val_split == 0.2
    assert TrainConfig.build({}, {"max_epochs": [7, 8]}).max_epochs == 7  # a choice list: its first
    for bad in ({"max_epochs": 0}, {"max_epochs": 2.5}, {"val_split": 1.0}, {"amp": "maybe"}, {"seed": True}):
        with pytest.raises(BadTrainParams):
            TrainConfig.build({}, bad)
    with pytest.raises(BadTrainParams):
        SegmentationTrainer(max_epochs=-1)  # a broken app default fails when the app loads


def test_split_is_seeded_and_holds_out_at_least_one() -> None:
    data = [{"image": f"/x/{i}.nii.gz"} for i in range(10)]
    train, val = split(data, 0.2, seed=1)
    assert len(val) == 2 and len(train) == 8 and not {d["image"] for d in val} & {d["image"] for d in train}
    assert split(list(reversed(data)), 0.2, seed=1) == (train, val)  # input order does not matter
    assert len(split(data[:2], 0.01, 0)[1]) == 1
    assert split(data[:1], 0.5, 0) == (data[:1], [])


def test_cache_rate_follows_the_byte_budget(items: list[dict[str, Any]]) -> None:
    trainer = tiny_trainer()
    per_item = 32**3 * (4 + 8)  # float32 image + int64 label after the deterministic transforms
    train_ds, val_ds = trainer.datasets(items[:3], items[3:], budget=2 * per_item + 100, workers=1)
    assert train_ds.cache_num + val_ds.cache_num <= 2 < len(items)
    full, _ = trainer.datasets(items[:3], items[3:], budget=10**9, workers=1)
    assert full.cache_num == 3


def test_early_stopping_and_stats_shape(items: list[dict[str, Any]], tmp_path: Path) -> None:
    class Flat(SegmentationTrainer):  # a variant overrides one hook: a key metric that never improves
        def validate(self, network: nn.Module, loader: Any, device: torch.device) -> tuple[float, float]:
            return 0.5, 1.0

    trainer = Flat(
        labels=["sphere"], roi_size=(32, 32, 32), intensity_range=(-500.0, 500.0), cache_bytes=64 << 20
    )
    trainer.network = lambda: nn.Sequential(nn.Conv3d(1, 2, 1))  # type: ignore[method-assign]
    seen: list[dict[str, Any]] = []
    result = trainer.run(
        TrainContext(
            items, tmp_path / "out", {"max_epochs": 20, "early_stop_patience": 2}, on_epoch=seen.append
        )
    )
    assert result.epochs_run == 3 and result.best_metric_epoch == 1  # stopped: 2 epochs without better
    assert [s["epoch"] for s in seen] == [1, 2, 3]
    assert "current_time" in seen[0] and "total_time" in seen[-1] and "current_time" not in seen[-1]
    assert seen[-1]["eval"] == {
        "metrics": {"val_mean_dice": 0.5},
        "key_metric_name": "val_mean_dice",
        "best_metric": 0.5,
        "best_metric_epoch": 1,
    }
    assert result.best_checkpoint is not None and result.best_checkpoint.is_file()
    json.dumps(seen)  # what clients read is plain JSON (no NaN)


def test_a_training_regime_overrides_hooks_not_the_template(
    items: list[dict[str, Any]], tmp_path: Path
) -> None:
    """A regime is a subclass: here a step hook that halves the loss and counts, and an epoch-end hook
    that stops after the second epoch; ``run`` is untouched and still writes checkpoints and stats."""

    class Halved(SegmentationTrainer):
        steps = 0

        def train_step(self, state: TrainState, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
            Halved.steps += 1
            loss, size = super().train_step(state, batch)
            return loss / 2, size

        def on_epoch_end(self, state: TrainState) -> bool:
            return super().on_epoch_end(state) or state.epoch == 2

    trainer = Halved(labels=["sphere"], roi_size=(32, 32, 32), intensity_range=(-500.0, 500.0))
    trainer.network = lambda: nn.Sequential(nn.Conv3d(1, 2, 1))  # type: ignore[method-assign]
    seen: list[dict[str, Any]] = []
    result = trainer.run(
        TrainContext(items, tmp_path / "out", {"max_epochs": 10, "val_split": 0.25}, on_epoch=seen.append)
    )
    assert result.epochs_run == 2 and [s["epoch"] for s in seen] == [1, 2]
    assert Halved.steps == 2 * 3  # three training studies, batch size one, two epochs
    assert result.last_checkpoint is not None and result.last_checkpoint.is_file()
    assert "semi_supervised" not in seen[-1]  # the supervised objective adds no stats


def test_multi_gpu_is_read_alike_by_the_trainer_and_the_consumer() -> None:
    from server.jobs.kinds.train import KIND as TRAIN

    for raw, multi in (("no", False), ("0", False), (False, False), ("yes", True), ("true", True), (1, True)):
        assert TrainConfig.build({}, {"multi_gpu": raw}).multi_gpu is multi
        assert TRAIN.devices({"multi_gpu": raw}, available=4) == (4 if multi else 1)
    assert TRAIN.devices({}, available=4) == 4  # the default: every GPU


def test_device_slots_one_job_per_device() -> None:
    slots = DeviceSlots(["0", "1"])
    first = slots.acquire(1)
    got: list[list[str]] = []
    waiter = threading.Thread(target=lambda: got.append(slots.acquire(2)))  # DDP wants both GPUs
    waiter.start()
    time.sleep(0.2)
    assert not got  # blocked while one GPU is busy
    slots.release(first)
    waiter.join(timeout=5)
    assert sorted(got[0]) == ["0", "1"]
    assert DeviceSlots([]).count == 1  # CPU only: one job at a time


def test_kill_tree_takes_grandchildren(tmp_path: Path) -> None:
    script = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, "job-marker"])
    deadline = time.monotonic() + 10
    while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    assert len(tree) == 2
    assert not kill_tree(proc.pid, expect="another-job")  # a recycled pid is left alone
    assert kill_tree(proc.pid, expect="job-marker")
    proc.wait(timeout=5)
    _, alive = psutil.wait_procs(tree, timeout=5)
    assert not alive


@pytest.mark.slow
def test_ddp_rank_path_on_cpu_with_gloo(items: list[dict[str, Any]], tmp_path: Path) -> None:
    """The torchrun path with two CPU ranks (Gloo): the same recipe, sharded, stats from rank 0.

    Multi-GPU NCCL runs take the same code with ``cuda:<local_rank>``; they need GPUs to test.
    """
    settings, db = settings_and_db(tmp_path)
    studies = settings.studies
    from server.datastore.indexer import index_studies
    from server.datastore.store import Datastore

    for i, item in enumerate(items):
        (studies / f"study_{i}.nii.gz").write_bytes(Path(item["image"]).read_bytes())
    index_studies(db, studies)
    store = Datastore(db, studies)
    for i, item in enumerate(items):
        tmp = store.temp_for_label("final", ".nii.gz")
        tmp.write_bytes(Path(item["label"]).read_bytes())
        store.save_label(f"study_{i}", "final", tmp, ".nii.gz")
    job = Job.new("train", "segmentation", {"max_epochs": 2}, status="RUNNING")
    job_id = job.id
    with db.session() as s:
        s.add(job)
    env = {**os.environ, **settings_env(settings)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    out = subprocess.run(
        [*cmd, "-m", "server.jobs.ddp", job_id],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((settings.data / "jobs" / job_id / "ddp_result.json").read_text())
    assert result["epochs_run"] == 2 and Path(result["best_checkpoint"]).is_file()
    assert out.stdout.count("epoch 2/2") == 1  # only rank 0 reports
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.stats["epoch"] == 2 and job.stats["total_epochs"] == 2
    db.dispose()
