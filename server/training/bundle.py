"""Training a MONAI Bundle through its own ``configs/train.json``, as a background job like any trainer.

The bundle's config is parsed with ``monai.bundle.ConfigParser`` and these ids are set before anything
is instantiated, the ones MONAI Label's bundle trainer sets:

- ``bundle_root``; ``train#dataset#data`` and ``validate#dataset#data``: the datastore's final labels
  (``[{image, label}]``, a seeded split or the job's stable validation studies);
- ``train#trainer#max_epochs`` (and ``epochs`` / ``max_epochs`` when the config defines them): the
  request's ``max_epochs``; ``device``: the job's device; ``ckpt_dir`` and ``output_dir``: the job's
  folder, so the bundle's folder is never written to.

The network the config builds (``network``) starts from the model's current version (the bundle's
``models/model.pt`` before any), then the config's ``initialize`` and ``run`` expressions train it
with the bundle's own trainer, handlers and validation. The bundle's best checkpoint (its
``CheckpointSaver``'s ``model.pt`` in ``ckpt_dir``) is what the job publishes; without one, the final
network. An epoch's end updates the job's train stats through an ignite handler (bundle trainers are
ignite engines, so this needs ``pytorch-ignite``). A restart starts the run over: a bundle's trainer
has no resume hook this server can drive.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from torch import nn

from server.training.base import (
    TrainContext,
    TrainResult,
    load_state_dict,
    save_atomic,
    train_and_validation,
    train_stats,
)
from server.training.config import TrainConfig

CONFIGS = ("train.json", "train.yaml", "train.yml")


def train_config(path: Path) -> Path | None:
    """The bundle's training config, when it has one."""
    return next((path / "configs" / c for c in CONFIGS if (path / "configs" / c).is_file()), None)


class BundleTrainer:
    """Trains the bundle at ``path``; publishes the hosted model ``model`` (the bundle's folder name)."""

    key_metric_name = "val_mean_dice"

    def __init__(self, path: Path, model: str) -> None:
        self.path = Path(path).resolve()
        self.model: str | None = model
        config = train_config(self.path)
        if config is None:
            raise ValueError(f"bundle {self.path.name}: no configs/train.json")
        self.config_file = config
        self.description = f"Train the bundle {self.path.name} with its configs/{config.name}"

    def check_params(self, params: dict[str, Any]) -> TrainConfig:
        return TrainConfig.build({"max_epochs": 10, "early_stop_patience": -1}, params)

    def config(self) -> dict[str, Any]:
        cfg = self.check_params({})
        return {
            "max_epochs": cfg.max_epochs,
            "val_split": cfg.val_split,
            "bundle_config": self.config_file.name,
        }

    def parser(self, ctx: TrainContext, cfg: TrainConfig) -> ConfigParser:
        parser = ConfigParser()
        parser.read_meta(str(self.path / "configs" / "metadata.json"))
        parser.read_config(str(self.config_file))
        train, val = train_and_validation(ctx, cfg)
        for key in ("train#dataset#data", "train#trainer"):
            if key not in parser:
                raise ValueError(f"bundle {self.path.name}: its {self.config_file.name} has no {key}")
        overrides: dict[str, Any] = {
            "bundle_root": str(self.path),
            "device": f"$torch.device('{ctx.device}')",
            "ckpt_dir": str(ctx.output_dir),
            "output_dir": str(ctx.output_dir),
            "train#dataset#data": train,
            "train#trainer#max_epochs": cfg.max_epochs,
        }
        optional = {
            "validate#dataset#data": val or train,
            "epochs": cfg.max_epochs,
            "max_epochs": cfg.max_epochs,
        }
        overrides.update({k: v for k, v in optional.items() if k in parser})
        for key, value in overrides.items():
            parser[key] = value
        return parser

    def run(self, ctx: TrainContext) -> TrainResult:
        cfg = self.check_params(ctx.params)
        start = time.time()
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        parser = self.parser(ctx, cfg)
        network = parser.get_parsed_content("network")
        if not isinstance(network, nn.Module):
            raise ValueError(f"bundle {self.path.name}: its train config's network is not a torch module")
        initial = ctx.initial_weights or self.path / "models" / "model.pt"
        if initial.is_file():
            network.load_state_dict(load_state_dict(initial, torch.device(ctx.device)))
        trainer = parser.get_parsed_content("train#trainer")
        best = {"metric": -math.inf, "epoch": 0}
        self._report(trainer, parser, ctx, cfg, start, best)
        for key in ("initialize", "run"):
            if key in parser:
                parser.get_parsed_content(key)
        saved = ctx.output_dir / "model.pt"
        best_path = ctx.output_dir / "best.pt"
        state = load_state_dict(saved, torch.device("cpu")) if saved.is_file() else network.state_dict()
        save_atomic({k: v.detach().cpu() for k, v in state.items()}, best_path)
        epochs = int(getattr(trainer.state, "epoch", cfg.max_epochs))
        metric = best["metric"] if math.isfinite(best["metric"]) else math.nan
        return TrainResult(
            best_checkpoint=best_path,
            last_checkpoint=None,
            best_metric=metric,
            best_metric_epoch=int(best["epoch"]),
            epochs_run=epochs,
            stats=self._stats(start, epochs, cfg.max_epochs, True, best, trainer),
            metrics={
                self.key_metric_name: metric,
                "key_metric_name": self.key_metric_name,
                "best_metric_epoch": int(best["epoch"]),
                "epochs": epochs,
                "train_studies": len(parser["train#dataset#data"]),
                "val_studies": len(parser["validate#dataset#data"])
                if "validate#dataset#data" in parser
                else 0,
                "current_version_metric": None,
                "seconds": round(time.time() - start, 3),
                "bundle_config": self.config_file.name,
            },
        )

    def _report(
        self,
        trainer: Any,
        parser: ConfigParser,
        ctx: TrainContext,
        cfg: TrainConfig,
        start: float,
        best: dict[str, float],
    ) -> None:
        """After each epoch: the bundle's validation metric (when it validates) into the train stats."""
        from ignite.engine import Events

        evaluator = (
            parser.get_parsed_content("validate#evaluator") if "validate#evaluator" in parser else None
        )

        def epoch_done(engine: Any) -> None:
            state = getattr(evaluator, "state", None)
            metric = getattr(state, "best_metric", None)
            if isinstance(metric, int | float) and math.isfinite(metric) and metric > best["metric"]:
                best["metric"] = float(metric)
                best["epoch"] = float(getattr(state, "best_metric_epoch", engine.state.epoch))
            if ctx.on_epoch is not None:
                ctx.on_epoch(self._stats(start, engine.state.epoch, cfg.max_epochs, False, best, engine))

        trainer.add_event_handler(Events.EPOCH_COMPLETED, epoch_done)

    def _stats(
        self, start: float, epoch: int, max_epochs: int, finished: bool, best: dict[str, float], engine: Any
    ) -> dict[str, Any]:
        output = getattr(engine.state, "output", None)
        loss = math.nan
        if isinstance(output, list) and output and isinstance(output[0], dict):
            value = output[0].get("loss")
            loss = float(value) if isinstance(value, int | float | torch.Tensor) else math.nan
        iterations = int(getattr(engine.state, "iteration", 0))
        per_epoch = int(getattr(engine.state, "epoch_length", 0) or 0)
        return train_stats(
            start_ts=start,
            epoch=epoch,
            max_epochs=max_epochs,
            finished=finished,
            iterations=iterations,
            total_iterations=per_epoch * max_epochs,
            rank=0,
            train={"train_loss": loss},
            train_key="train_loss",
            val={self.key_metric_name: best["metric"]},
            val_key=self.key_metric_name,
            best_metric=best["metric"],
            best_epoch=int(best["epoch"]),
        )
