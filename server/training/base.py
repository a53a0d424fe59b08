"""The training recipe as a template method: ``run`` is fixed, subclasses override hooks.

A variant overrides one hook, the way nnU-Net's trainer variants do::

    class SegmentationTrainerDiceFocal(SegmentationTrainer):
        def loss(self) -> torch.nn.Module:
            return DiceFocalLoss(to_onehot_y=True, softmax=True)

Hooks: ``network``, ``loss``, ``optimizer``, ``augmentations`` (MONAI random transforms),
``load_transforms`` (the deterministic part, which the cached dataset keeps), ``train_transforms``,
``val_transforms``, ``validate`` (the key metric, higher is better), ``on_epoch_start`` and
``train_mode`` (transfer learning: freeze, unfreeze, keep frozen batch norm in eval mode), and
``unlabelled_item`` (how a study without a label enters the recipe's transforms).

``run`` does the rest: a seeded train/validation split, a ``CacheDataset`` whose cache rate follows a
byte budget, max epochs and early stopping, AMP on CUDA only, the last and best checkpoints, and after
every epoch the train stats that MONAI Label clients read. With ``world_size > 1`` (torchrun) the network
is wrapped in DDP, the data is sharded with a ``DistributedSampler`` and only rank 0 writes. With
``semi_supervised.enabled`` and unlabelled studies in the context, each step also trains on a batch of
them against a teacher (:mod:`server.training.semi`).
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose
from monai.utils import set_determinism
from torch import nn

from server.training.config import TrainConfig
from server.training.semi import SemiSupervision, cycle

log = logging.getLogger(__name__)

StatsCallback = Callable[[dict[str, Any]], None]
MIN_CACHE_BYTES = 64 * 1024 * 1024


@dataclass
class TrainContext:
    """What the job runner hands a trainer: the data, where to write, the device, and a stats sink."""

    datalist: list[dict[str, Any]]  # [{image, label}] absolute paths (the datastore's final labels)
    output_dir: Path
    params: dict[str, Any] = field(default_factory=dict)  # the request's flat params
    device: str = "cpu"
    on_epoch: StatsCallback | None = None
    initial_weights: Path | None = None  # the model's current version, when ``pretrained``
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    unlabelled: list[str] = field(default_factory=list)  # images without a final label (semi-supervised)


@dataclass
class TrainResult:
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    best_metric: float
    best_metric_epoch: int
    epochs_run: int
    stats: dict[str, Any]
    metrics: dict[str, Any]  # what the published model version records


class Trainer:
    """A training recipe. ``defaults`` override :class:`TrainConfig`'s; ``model`` is the hosted model
    whose new version this trainer publishes (default: the trainer's name in the app)."""

    key_metric_name = "val_metric"
    train_metric_name = "train_loss"

    def __init__(self, model: str | None = None, description: str = "", **defaults: Any) -> None:
        self.model = model
        self.description = description
        self.defaults: dict[str, Any] = dict(defaults)
        self.check_params({})  # fail at app load, not in the first job

    # ---- hooks -----------------------------------------------------------------------------
    def network(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must define network()")

    def loss(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must define loss()")

    def optimizer(self, parameters: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
        return torch.optim.AdamW(parameters, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    def augmentations(self) -> list[Any]:
        """MONAI random transforms applied after the cached deterministic ones (training only)."""
        return []

    def load_transforms(self) -> list[Any]:
        raise NotImplementedError(f"{type(self).__name__} must define load_transforms()")

    def train_transforms(self) -> Compose:
        return Compose([*self.load_transforms(), *self.augmentations()])

    def val_transforms(self) -> Compose:
        return Compose(self.load_transforms())

    def validate(self, network: nn.Module, loader: Any, device: torch.device) -> tuple[float, float]:
        """``(sum of the key metric over the items, number of items)`` on this rank's share."""
        raise NotImplementedError(f"{type(self).__name__} must define validate()")

    def inputs(self, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["image"].to(device, non_blocking=True), batch["label"].to(device, non_blocking=True)

    def on_epoch_start(self, network: nn.Module, epoch: int, cfg: TrainConfig) -> None:
        """Called before each epoch (e.g. to freeze or unfreeze a backbone); nothing by default."""

    def train_mode(self, model: nn.Module) -> None:
        model.train()

    def unlabelled_item(self, image: str) -> dict[str, Any]:
        """A study without a label, shaped for ``train_transforms``: here the image stands in for the
        label (same geometry, so crops and flips apply unchanged); only the image is ever read."""
        return {"image": image, "label": image}

    # ---- what /info/ shows -----------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        cfg = TrainConfig.build(self.defaults, {}).as_dict()
        cfg["device"] = ["cuda"] if torch.cuda.is_available() else ["cpu"]
        cfg["gpus"] = "all"
        return cfg

    def check_params(self, params: dict[str, Any]) -> TrainConfig:
        return TrainConfig.build(self.defaults, params)

    # ---- the template ----------------------------------------------------------------------
    def run(self, ctx: TrainContext) -> TrainResult:
        cfg = self.check_params(ctx.params)
        start_ts = time.time()
        set_determinism(seed=cfg.seed)
        device = torch.device(ctx.device)
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        train_items, val_items = split(ctx.datalist, cfg.val_split, cfg.seed)
        if not train_items:
            raise ValueError("no labelled studies to train on: save some final labels first")
        log.info(
            "training %s on %s: %d train, %d validation studies, %d epochs",
            type(self).__name__,
            device,
            len(train_items),
            len(val_items),
            cfg.max_epochs,
        )

        network = self.network().to(device)
        if ctx.initial_weights is not None and ctx.initial_weights.is_file():
            try:
                network.load_state_dict(load_state_dict(ctx.initial_weights, device))
                print(f"starting from {ctx.initial_weights.name}", flush=True)
            except (RuntimeError, ValueError, KeyError) as exc:
                # The architecture changed (another --conf): train from scratch rather than fail.
                print(f"{ctx.initial_weights.name} does not fit the network, starting from scratch: {exc}")
        model: nn.Module = network
        if ctx.world_size > 1:
            model = nn.parallel.DistributedDataParallel(
                network, device_ids=[ctx.local_rank] if device.type == "cuda" else None
            )
        loss_fn = self.loss()
        opt = self.optimizer(model.parameters(), cfg)
        use_amp = cfg.amp and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda") if use_amp else None

        budget = cfg.cache_bytes or psutil.virtual_memory().available // 4
        budget = max(MIN_CACHE_BYTES, budget // max(1, ctx.world_size))
        cfg.num_workers = resolve_workers(cfg.num_workers, device)
        train_ds, val_ds = self.datasets(train_items, val_items or train_items, budget, cfg.num_workers)
        train_loader, val_loader, sampler = self.loaders(train_ds, val_ds, cfg, ctx)
        semi = self.semi_supervision(network, ctx, cfg, budget, device)

        best_metric, best_epoch, epoch = -math.inf, 0, 0
        best_path, last_path = ctx.output_dir / "best.pt", ctx.output_dir / "last.pt"
        stats: dict[str, Any] = {}
        iterations = 0
        total_iterations = cfg.max_epochs * len(train_loader)
        val_metric = math.nan
        for epoch in range(1, cfg.max_epochs + 1):
            if sampler is not None:
                sampler.set_epoch(epoch)
            epoch_start = time.perf_counter()
            self.on_epoch_start(network, epoch, cfg)
            self.train_mode(model)
            loss_sum, steps, samples = torch.zeros((), device=device), 0, 0
            for batch in train_loader:
                image, label = self.inputs(batch, device)
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device_type=device.type, enabled=use_amp):
                    if semi is None:
                        loss = loss_fn(model(image), label)
                    else:
                        loss = semi.loss(model, loss_fn, image, label, iterations / len(train_loader))
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                if semi is not None:
                    semi.after_step(network)
                loss_sum += loss.detach().float()  # no host sync per step: the GPU keeps going
                steps += 1
                samples += int(image.shape[0])
                iterations += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds = time.perf_counter() - epoch_start
            train_loss = all_reduce_mean(float(loss_sum), steps, device, ctx.world_size)
            if epoch % cfg.val_interval == 0 or epoch == cfg.max_epochs:
                model.eval()
                with torch.no_grad(), torch.autocast(device_type=device.type, enabled=use_amp):
                    total, count = self.validate(network, val_loader, device)
                val_metric = all_reduce_mean(total, count, device, ctx.world_size)
                if val_metric > best_metric or best_epoch == 0:
                    best_metric, best_epoch = val_metric, epoch
                    if ctx.rank == 0:
                        save_atomic(network.state_dict(), best_path)
            if ctx.rank == 0:
                save_atomic(
                    {"epoch": epoch, "network": network.state_dict(), "optimizer": opt.state_dict()},
                    last_path,
                )
            stopping = cfg.early_stop_patience > 0 and epoch - best_epoch >= cfg.early_stop_patience
            finished = epoch == cfg.max_epochs or stopping
            stats = train_stats(
                start_ts=start_ts,
                epoch=epoch,
                max_epochs=cfg.max_epochs,
                finished=finished,
                iterations=iterations,
                total_iterations=total_iterations,
                rank=ctx.rank,
                train={self.train_metric_name: train_loss},
                train_key=self.train_metric_name,
                val={self.key_metric_name: val_metric},
                val_key=self.key_metric_name,
                best_metric=best_metric,
                best_epoch=best_epoch,
            )
            # Throughput of this rank's training phase (validation excluded), and the whole epoch.
            stats["train_samples_per_second"] = round(samples / train_seconds, 3) if train_seconds else None
            stats["epoch_seconds"] = round(time.perf_counter() - epoch_start, 3)
            if semi is not None:
                stats["semi_supervised"] = {"unlabelled_studies": len(ctx.unlabelled), **semi.epoch_stats()}
            if ctx.rank == 0:
                print(
                    f"epoch {epoch}/{cfg.max_epochs}: {self.train_metric_name} {train_loss:.4f}, "
                    f"{self.key_metric_name} {val_metric:.4f} (best {best_metric:.4f} at epoch {best_epoch})",
                    flush=True,
                )
            if ctx.rank == 0 and ctx.on_epoch is not None:
                ctx.on_epoch(stats)
            if stopping:
                print(f"early stop: no better {self.key_metric_name} for {cfg.early_stop_patience} epochs")
                break
        metrics = {
            self.key_metric_name: best_metric,
            "key_metric_name": self.key_metric_name,
            "best_metric_epoch": best_epoch,
            "epochs": epoch,
            "train_studies": len(train_items),
            "val_studies": len(val_items),
            "unlabelled_studies": len(ctx.unlabelled) if semi is not None else 0,
            "seconds": round(time.time() - start_ts, 3),
        }
        return TrainResult(
            best_checkpoint=best_path if best_path.is_file() else None,
            last_checkpoint=last_path if last_path.is_file() else None,
            best_metric=best_metric,
            best_metric_epoch=best_epoch,
            epochs_run=epoch,
            stats=stats,
            metrics=metrics,
        )

    # ---- data ------------------------------------------------------------------------------
    def semi_supervision(
        self, network: nn.Module, ctx: TrainContext, cfg: TrainConfig, budget: int, device: torch.device
    ) -> SemiSupervision | None:
        """The teacher and an endless shuffled stream of unlabelled batches (through the training
        transforms), or None when semi-supervised training is off or there is nothing unlabelled."""
        semi = cfg.semi_supervised
        if not semi.enabled or not ctx.unlabelled:
            return None
        items = [self.unlabelled_item(image) for image in ctx.unlabelled]
        per_item = max(1, estimate_item_bytes(Compose(self.load_transforms()), items[0]))
        dataset = CacheDataset(
            items,
            self.train_transforms(),
            cache_rate=min(1.0, budget / (per_item * len(items))),
            num_workers=max(1, cfg.num_workers),
            progress=False,
        )
        generator = torch.Generator().manual_seed(cfg.seed * 1000 + ctx.rank)  # each rank its own order
        loader = DataLoader(
            dataset,
            batch_size=cfg.train_batch_size,
            shuffle=True,
            generator=generator,
            num_workers=cfg.num_workers,
            drop_last=len(items) >= cfg.train_batch_size,
        )
        print(
            f"semi-supervised ({semi.method}, {semi.perturbation} view, threshold {semi.threshold}, "
            f"ema {semi.ema}): "
            f"{len(items)} unlabelled studies",
            flush=True,
        )
        return SemiSupervision(
            network,
            cycle(loader, lambda batch: self.inputs(batch, device)[0]),
            method=semi.method,
            threshold=semi.threshold,
            weight=semi.weight,
            rampup=semi.rampup_epochs,
            ema=semi.ema,
            noise=semi.noise,
            perturbation=semi.perturbation,
        )

    def datasets(
        self, train_items: list[dict[str, Any]], val_items: list[dict[str, Any]], budget: int, workers: int
    ) -> tuple[CacheDataset, CacheDataset]:
        """Cached datasets whose cache rate is what ``budget`` bytes hold (one estimate per item)."""
        per_item = max(1, estimate_item_bytes(Compose(self.load_transforms()), train_items[0]))
        total = len(train_items) + len(val_items)
        rate = min(1.0, budget / (per_item * total))
        log.info(
            "cache: %.1f MB per study, budget %.0f MB, cache_rate %.2f",
            per_item / 2**20,
            budget / 2**20,
            rate,
        )
        threads = max(1, workers)
        train_ds = CacheDataset(
            train_items, self.train_transforms(), cache_rate=rate, num_workers=threads, progress=False
        )
        val_ds = CacheDataset(
            val_items, self.val_transforms(), cache_rate=rate, num_workers=threads, progress=False
        )
        return train_ds, val_ds

    def loaders(
        self, train_ds: CacheDataset, val_ds: CacheDataset, cfg: TrainConfig, ctx: TrainContext
    ) -> tuple[DataLoader, DataLoader, Any]:
        sampler: Any = None
        val_sampler: Any = None
        if ctx.world_size > 1:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(train_ds, ctx.world_size, ctx.rank, shuffle=True, seed=cfg.seed)
            val_sampler = DistributedSampler(val_ds, ctx.world_size, ctx.rank, shuffle=False)
        train_loader = DataLoader(
            train_ds,
            batch_size=cfg.train_batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=cfg.num_workers,
            pin_memory=ctx.device.startswith("cuda"),
            persistent_workers=cfg.num_workers > 0,
        )
        val_loader = DataLoader(
            val_ds, batch_size=cfg.val_batch_size, sampler=val_sampler, num_workers=cfg.num_workers
        )
        return train_loader, val_loader, sampler


def resolve_workers(requested: int, device: torch.device) -> int:
    """``num_workers`` -1 (auto): none on CPU (the training threads need the cores), up to 4 DataLoader
    processes on CUDA so the random augmentations keep the GPU fed."""
    if requested >= 0:
        return requested
    return 0 if device.type != "cuda" else max(1, min(4, (os.cpu_count() or 2) - 1))


def split(items: Sequence[dict[str, Any]], val_split: float, seed: int) -> tuple[list[Any], list[Any]]:
    """A seeded shuffle, then ``val_split`` of the items held out (at least one when there are two)."""
    shuffled = sorted(items, key=lambda d: str(d.get("image", "")))
    random.Random(seed).shuffle(shuffled)
    if len(shuffled) < 2 or val_split <= 0:
        return shuffled, []
    n_val = min(len(shuffled) - 1, max(1, round(len(shuffled) * val_split)))
    return shuffled[n_val:], shuffled[:n_val]


def estimate_item_bytes(transform: Compose, item: dict[str, Any]) -> int:
    data = transform(dict(item))
    total = 0
    for value in data.values() if isinstance(data, dict) else []:
        if isinstance(value, torch.Tensor):
            total += value.element_size() * value.nelement()
        elif isinstance(value, np.ndarray):
            total += value.nbytes
    return total


def all_reduce_mean(total: float, count: float, device: torch.device, world_size: int) -> float:
    if world_size > 1:
        import torch.distributed as dist

        t = torch.tensor([total, count], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        total, count = float(t[0]), float(t[1])
    return total / count if count else math.nan


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def load_state_dict(path: Path, device: torch.device) -> dict[str, Any]:
    state = torch.load(path, map_location=device, weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("ensemble"), list) and state["ensemble"]:
        state = state["ensemble"][0]  # an ensemble: start from its first member
    for key in ("network", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict")
    return state


def train_stats(
    *,
    start_ts: float,
    epoch: int,
    max_epochs: int,
    finished: bool,
    iterations: int,
    total_iterations: int,
    rank: int,
    train: dict[str, float],
    train_key: str,
    val: dict[str, float],
    val_key: str,
    best_metric: float,
    best_epoch: int,
) -> dict[str, Any]:
    """MONAI Label's ``train_stats.json`` shape (``prepare_stats``): ``total_time`` once finished,
    ``current_time`` while running, ``train``/``eval`` blocks with their key metric and best."""
    elapsed = str(datetime.timedelta(seconds=int(time.time() - start_ts)))
    best = finite(best_metric)
    stats: dict[str, Any] = {
        "rank": rank,
        "current_iteration": iterations,
        "current_epoch": epoch,
        "total_epochs": max_epochs,
        "total_iterations": total_iterations,
        "epoch": epoch,
        "start_ts": int(start_ts),
        ("total_time" if finished else "current_time"): elapsed,
        "best_metric": best,
        "train": {
            "metrics": {k: finite(v) for k, v in train.items()},
            "key_metric_name": train_key,
            "best_metric": finite(train.get(train_key, math.nan)),
            "best_metric_epoch": epoch,
        },
        "eval": {
            "metrics": {k: finite(v) for k, v in val.items()},
            "key_metric_name": val_key,
            "best_metric": best,
            "best_metric_epoch": best_epoch,
        },
    }
    return stats


def finite(value: float) -> float | None:
    """JSON has no NaN/Infinity: those become null."""
    return float(value) if math.isfinite(value) else None
