"""Test app for the job tests: a tiny segmentation model and three trainers.

- ``segmentation``: a two-level U-Net on 32^3 volumes, two epochs by default (seconds on a CPU);
- ``slow``: the same recipe with a validation hook that sleeps, so a job stays RUNNING for a while;
- ``fail``: its ``loss`` hook raises, so its job must end in ERROR with that text;
- ``degraded``: learns the complement of its labels (a version worse than the one it starts from).

``--conf scoring true`` adds an entropy scoring method (what the rescore job after training runs)
and the strategies that read what it stores: ``entropy`` (its scores), ``stratified_random`` (its
``entropy.foreground_fraction`` values) and ``hybrid`` (its scores and bottleneck embeddings). With
``--conf score_seconds S`` each study takes S seconds more to score, and ``--conf score_log PATH`` appends
one line per scoring call (the process and the study's intensity sum), so a test sees every call made.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from server.appspec import AppSpec, ModelSpec, ScoringSpec, TrainerSpec, default_strategies
from server.inference.segmentation import SegmentationConfig, SegmentationTask
from server.inference.transforms import intensity_transform
from server.training.segmentation import SegmentationTrainer
from strategies.diversity import Hybrid
from strategies.entropy import Entropy, EntropyScoring
from strategies.stratified import StratifiedRandom

LABELS = {"sphere": 1}
WINDOW = (-500.0, 500.0)


class SlowTrainer(SegmentationTrainer):
    def validate(self, network: nn.Module, loader: Any, device: torch.device) -> tuple[float, float]:
        time.sleep(1.0)
        return super().validate(network, loader, device)


class DegradedTrainer(SegmentationTrainer):
    """A degraded recipe: it learns the complement of its labels, so starting from a version that learnt
    them it can only get worse on the validation studies (which keep their true labels)."""

    def train_step(self, state: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        return super().train_step(state, {**batch, "label": 1 - batch["label"].clamp(0, 1)})


class FailingTrainer(SegmentationTrainer):
    def loss(self) -> nn.Module:
        raise RuntimeError("deliberate failure: this recipe's loss() raises")


class ObservedScoring(EntropyScoring):
    """Entropy scoring that takes longer and says so: each call sleeps, then appends a line to a file."""

    def __init__(self, roi_size: Any, seconds: float, log: str) -> None:
        super().__init__(roi_size=roi_size)
        self.seconds, self.log = seconds, log

    def score_and_embed(self, network: nn.Module, image: torch.Tensor) -> Any:
        time.sleep(self.seconds)
        out = super().score_and_embed(network, image)
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{os.getpid()} {float(image.sum()):.3f}\n")
        return out


def build_app(app_dir: Path, conf: dict[str, str]) -> AppSpec:
    config = SegmentationConfig(
        channels=(4, 8), num_res_units=0, preset="none", window=WINDOW, spacing=None, roi_size=(32, 32, 32)
    )
    task = SegmentationTask(LABELS, config, "tiny test U-Net")
    common: dict[str, Any] = {
        "model": "segmentation",
        "labels": LABELS,
        "network_factory": task.network,
        "roi_size": config.roi_size,
        "intensity": lambda key: intensity_transform(key, config.preset, config.window),
        "max_epochs": 2,
        "val_split": 0.25,
        "learning_rate": 1e-3,
        "cache_bytes": 64 * 1024 * 1024,
    }
    trainers = {
        "segmentation": SegmentationTrainer(**common),
        "slow": SlowTrainer(**{**common, "max_epochs": 1000}),
        "fail": FailingTrainer(**common),
        "degraded": DegradedTrainer(**{**common, "learning_rate": 1e-2}),
    }
    scoring = {}
    strategies = default_strategies()
    if conf.get("scoring") == "true":
        seconds, log = float(conf.get("score_seconds", "0")), conf.get("score_log", "")
        method = (
            ObservedScoring(config.roi_size, seconds, log)
            if seconds or log
            else EntropyScoring(roi_size=config.roi_size)
        )
        scoring["entropy"] = ScoringSpec(name="entropy", description=method.description, method=method)
        strategies.update({s.name: s for s in (Entropy(), StratifiedRandom(), Hybrid())})
    return AppSpec(
        name="labelloop training test app",
        scoring=scoring,
        strategies=strategies,
        models={
            "segmentation": ModelSpec(
                name="segmentation", type="segmentation", labels=LABELS, description="tiny U-Net", task=task
            )
        },
        trainers={
            name: TrainerSpec(name=name, description=t.description, config=t.config(), task=t)
            for name, t in trainers.items()
        },
    )
