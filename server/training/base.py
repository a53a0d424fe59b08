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

``run`` is a short template over the loop's own hooks, each overridable: ``setup`` (a seeded
train/validation split, a ``CacheDataset`` whose cache rate follows a byte budget, AMP on CUDA only),
``wrap`` (DDP under torchrun: the data is sharded with a ``DistributedSampler`` and only rank 0 writes),
``objective`` (supervised, or with ``semi_supervised.enabled`` and unlabelled studies a teacher's loss on
them too: :mod:`server.training.semi`), ``train_epoch``, ``train_step`` and its ``step_loss``,
``evaluate`` (the best checkpoint), ``on_epoch_end`` (the last checkpoint, early stopping, the train
stats that MONAI Label clients read) and ``result``. A new regime overrides a hook; it never edits ``run``.
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
from typing import Any, Protocol

import numpy as np
import psutil
import torch
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose
from monai.utils import set_determinism
from torch import Tensor, nn

from server.training.config import TrainConfig
from server.training.semi import Forward, LossFn, SemiSupervision, cycle

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
    validation: list[str] | None = None  # images held out (a stable set across rounds); None: a seeded split
    current_weights: Path | None = None  # the model's published version, measured on the same validation
    resume: bool = False  # continue from ``output_dir/last.pt`` (a job interrupted by a restart)


@dataclass
class TrainResult:
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    best_metric: float
    best_metric_epoch: int
    epochs_run: int
    stats: dict[str, Any]
    metrics: dict[str, Any]  # what the published model version records

    def as_json(self) -> dict[str, Any]:
        """What a DDP rank hands back to the job that launched it."""
        return {
            "best_checkpoint": str(self.best_checkpoint) if self.best_checkpoint else None,
            "last_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "best_metric": self.best_metric,
            "best_metric_epoch": self.best_metric_epoch,
            "epochs_run": self.epochs_run,
            "stats": self.stats,
            "metrics": self.metrics,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainResult:
        return cls(
            best_checkpoint=Path(data["best_checkpoint"]) if data["best_checkpoint"] else None,
            last_checkpoint=Path(data["last_checkpoint"]) if data["last_checkpoint"] else None,
            best_metric=float(data["best_metric"]),
            best_metric_epoch=int(data["best_metric_epoch"]),
            epochs_run=int(data["epochs_run"]),
            stats=dict(data["stats"]),
            metrics=dict(data["metrics"]),
        )


class Objective(Protocol):
    """What a training step minimises: :class:`Supervised`, or a
    :class:`~server.training.semi.SemiSupervision` (the teacher's loss on unlabelled batches too)."""

    def loss(
        self, model: Forward, loss_fn: LossFn, image: Tensor, label: Tensor, progress: float
    ) -> Tensor: ...
    def after_step(self, student: nn.Module) -> None: ...
    def epoch_stats(self) -> dict[str, Any]: ...


class Supervised:
    """The plain objective: the recipe's loss on the labelled batch."""

    def loss(self, model: Forward, loss_fn: LossFn, image: Tensor, label: Tensor, progress: float) -> Tensor:
        return loss_fn(model(image), label)

    def after_step(self, student: nn.Module) -> None:
        return None

    def epoch_stats(self) -> dict[str, Any]:
        return {}


@dataclass
class TrainState:
    """One run, as the hooks share it: what ``setup`` built, and where the loop stands."""

    cfg: TrainConfig
    ctx: TrainContext
    device: torch.device
    network: nn.Module  # the bare network: what is saved and published
    model: nn.Module  # what the steps call: the network, or its DDP wrapper
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    use_amp: bool
    train_loader: DataLoader
    val_loader: DataLoader
    sampler: Any  # a DistributedSampler under torchrun, else None
    objective: Objective
    start_ts: float
    train_studies: int
    val_studies: int
    total_iterations: int
    epoch: int = 0
    iterations: int = 0
    train_loss: float = math.nan
    val_metric: float = math.nan
    best_metric: float = -math.inf
    best_epoch: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    epoch_start: float = 0.0
    current_metric: float | None = None  # the published version on the same validation studies
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def best_path(self) -> Path:
        return self.ctx.output_dir / "best.pt"

    @property
    def last_path(self) -> Path:
        return self.ctx.output_dir / "last.pt"


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
        """Set up, then per epoch: ``on_epoch_start``, ``train_epoch`` (``train_step`` per batch),
        ``evaluate`` when due, ``on_epoch_end`` (checkpoints, stats; True stops); then the result."""
        state = self.setup(ctx)
        state.current_metric = self.evaluate_current(state)
        first = self.resume(state) if ctx.resume else 1
        for epoch in range(first, state.cfg.max_epochs + 1):
            state.epoch = epoch
            self.on_epoch_start(state.network, epoch, state.cfg)
            self.train_epoch(state)
            if epoch % state.cfg.val_interval == 0 or epoch == state.cfg.max_epochs:
                self.evaluate(state)
            if self.on_epoch_end(state):
                break
        return self.result(state)

    def setup(self, ctx: TrainContext) -> TrainState:
        """The split, the network (from the current weights when they fit), its wrapper, the loss, the
        optimiser, the cached loaders and the step objective."""
        cfg = self.check_params(ctx.params)
        start_ts = time.time()
        set_determinism(seed=cfg.seed)
        device = torch.device(ctx.device)
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        train_items, val_items = train_and_validation(ctx, cfg)
        log.info(
            "training %s on %s: %d train, %d validation studies, %d epochs",
            type(self).__name__,
            device,
            len(train_items),
            len(val_items),
            cfg.max_epochs,
        )
        network = self.network().to(device)
        self.load_initial(network, ctx.initial_weights, device)
        model = self.wrap(network, ctx, device)
        budget = cfg.cache_bytes or psutil.virtual_memory().available // 4
        budget = max(MIN_CACHE_BYTES, budget // max(1, ctx.world_size))
        cfg.num_workers = resolve_workers(cfg.num_workers, device)
        train_ds, val_ds = self.datasets(train_items, val_items or train_items, budget, cfg.num_workers)
        train_loader, val_loader, sampler = self.loaders(train_ds, val_ds, cfg, ctx)
        use_amp = cfg.amp and device.type == "cuda"
        return TrainState(
            cfg=cfg,
            ctx=ctx,
            device=device,
            network=network,
            model=model,
            loss_fn=self.loss(),
            optimizer=self.optimizer(model.parameters(), cfg),
            scaler=torch.amp.GradScaler("cuda") if use_amp else None,
            use_amp=use_amp,
            train_loader=train_loader,
            val_loader=val_loader,
            sampler=sampler,
            objective=self.objective(network, ctx, cfg, budget, device),
            start_ts=start_ts,
            train_studies=len(train_items),
            val_studies=len(val_items),
            total_iterations=cfg.max_epochs * len(train_loader),
        )

    def resume(self, state: TrainState) -> int:
        """Network, optimiser and best-so-far from ``last.pt``; the epoch to continue with (1 when
        there is no checkpoint to resume)."""
        if not state.last_path.is_file():
            return 1
        checkpoint = torch.load(state.last_path, map_location=state.device, weights_only=True)
        state.network.load_state_dict(checkpoint["network"])
        state.optimizer.load_state_dict(checkpoint["optimizer"])
        state.best_metric = float(checkpoint.get("best_metric", state.best_metric))
        state.best_epoch = int(checkpoint.get("best_epoch", 0))
        state.iterations = int(checkpoint.get("iterations", 0))
        state.epoch = int(checkpoint["epoch"])
        print(f"resuming at epoch {state.epoch + 1} from {state.last_path.name}", flush=True)
        return state.epoch + 1

    def load_initial(self, network: nn.Module, weights: Path | None, device: torch.device) -> None:
        """Start from the model's current version; train from scratch when it does not fit."""
        if weights is None or not weights.is_file():
            return
        try:
            network.load_state_dict(load_state_dict(weights, device))
            print(f"starting from {weights.name}", flush=True)
        except (RuntimeError, ValueError, KeyError) as exc:
            # The architecture changed (another --conf): train from scratch rather than fail.
            print(f"{weights.name} does not fit the network, starting from scratch: {exc}")

    def wrap(self, network: nn.Module, ctx: TrainContext, device: torch.device) -> nn.Module:
        """What the steps call: the network itself, or under torchrun its DistributedDataParallel."""
        if ctx.world_size == 1:
            return network
        ids = [ctx.local_rank] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(network, device_ids=ids)

    def objective(
        self, network: nn.Module, ctx: TrainContext, cfg: TrainConfig, budget: int, device: torch.device
    ) -> Objective:
        """The step's loss: supervised, or with ``semi_supervised`` and unlabelled studies the teacher's."""
        semi = self.semi_supervision(network, ctx, cfg, budget, device)
        return semi if semi is not None else Supervised()

    def train_epoch(self, state: TrainState) -> None:
        """Every batch through ``train_step``; the mean loss and the throughput into the state."""
        if state.sampler is not None:
            state.sampler.set_epoch(state.epoch)
        state.epoch_start = time.perf_counter()
        self.train_mode(state.model)
        loss_sum, steps, samples = torch.zeros((), device=state.device), 0, 0
        for batch in state.train_loader:
            loss, size = self.train_step(state, batch)
            loss_sum += loss  # no host sync per step: the GPU keeps going
            steps += 1
            samples += size
            state.iterations += 1
        if state.device.type == "cuda":
            torch.cuda.synchronize(state.device)
        state.train_seconds = time.perf_counter() - state.epoch_start
        state.samples = samples
        state.train_loss = all_reduce_mean(float(loss_sum), steps, state.device, state.ctx.world_size)

    def train_step(self, state: TrainState, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """One optimiser step: ``(the detached loss, the batch size)``."""
        image, label = self.inputs(batch, state.device)
        opt = state.optimizer
        opt.zero_grad(set_to_none=True)
        progress = state.iterations / max(1, len(state.train_loader))
        with torch.autocast(device_type=state.device.type, enabled=state.use_amp):
            loss = self.step_loss(state, batch, image, label, progress)
        if state.scaler is not None:
            state.scaler.scale(loss).backward()
            state.scaler.step(opt)
            state.scaler.update()
        else:
            loss.backward()
            opt.step()
        state.objective.after_step(state.network)
        return loss.detach().float(), int(image.shape[0])

    def step_loss(
        self,
        state: TrainState,
        batch: dict[str, Any],
        image: torch.Tensor,
        label: torch.Tensor,
        progress: float,
    ) -> torch.Tensor:
        """What one step minimises (under autocast): the objective's loss; a recipe may add a term that
        needs more of the batch than its image and label."""
        return state.objective.loss(state.model, state.loss_fn, image, label, progress)

    def evaluate(self, state: TrainState) -> None:
        """The key metric on the validation studies (all ranks); a better one saves ``best.pt``."""
        state.model.eval()
        with torch.no_grad(), torch.autocast(device_type=state.device.type, enabled=state.use_amp):
            total, count = self.validate(state.network, state.val_loader, state.device)
        state.val_metric = all_reduce_mean(total, count, state.device, state.ctx.world_size)
        if state.val_metric > state.best_metric or state.best_epoch == 0:
            state.best_metric, state.best_epoch = state.val_metric, state.epoch
            if state.ctx.rank == 0:
                save_atomic(state.network.state_dict(), state.best_path)

    def evaluate_current(self, state: TrainState) -> float | None:
        """The model's published version, by the key metric on this run's validation studies (what a new
        version must match to be published); None without a version or validation studies."""
        weights = state.ctx.current_weights
        if weights is None or not weights.is_file() or state.val_studies == 0:
            return None
        network = self.network().to(state.device)
        try:
            network.load_state_dict(load_state_dict(weights, state.device))
        except (RuntimeError, ValueError, KeyError):
            return None  # another architecture: nothing to compare with
        network.eval()
        with torch.no_grad(), torch.autocast(device_type=state.device.type, enabled=state.use_amp):
            total, count = self.validate(network, state.val_loader, state.device)
        return all_reduce_mean(total, count, state.device, state.ctx.world_size)

    def on_epoch_end(self, state: TrainState) -> bool:
        """``last.pt``, the train stats (rank 0 reports them); True when training stops early."""
        cfg, ctx, epoch = state.cfg, state.ctx, state.epoch
        if ctx.rank == 0:
            checkpoint = {
                "epoch": epoch,
                "network": state.network.state_dict(),
                "optimizer": state.optimizer.state_dict(),
                "best_metric": state.best_metric,
                "best_epoch": state.best_epoch,
                "iterations": state.iterations,
            }
            save_atomic(checkpoint, state.last_path)
        stopping = cfg.early_stop_patience > 0 and epoch - state.best_epoch >= cfg.early_stop_patience
        state.stats = self.epoch_stats(state, finished=epoch == cfg.max_epochs or stopping)
        if ctx.rank == 0:
            print(
                f"epoch {epoch}/{cfg.max_epochs}: {self.train_metric_name} {state.train_loss:.4f}, "
                f"{self.key_metric_name} {state.val_metric:.4f} "
                f"(best {state.best_metric:.4f} at epoch {state.best_epoch})",
                flush=True,
            )
            if ctx.on_epoch is not None:
                ctx.on_epoch(state.stats)
        if stopping:
            print(f"early stop: no better {self.key_metric_name} for {cfg.early_stop_patience} epochs")
        return stopping

    def epoch_stats(self, state: TrainState, finished: bool) -> dict[str, Any]:
        stats = train_stats(
            start_ts=state.start_ts,
            epoch=state.epoch,
            max_epochs=state.cfg.max_epochs,
            finished=finished,
            iterations=state.iterations,
            total_iterations=state.total_iterations,
            rank=state.ctx.rank,
            train={self.train_metric_name: state.train_loss},
            train_key=self.train_metric_name,
            val={self.key_metric_name: state.val_metric},
            val_key=self.key_metric_name,
            best_metric=state.best_metric,
            best_epoch=state.best_epoch,
        )
        # Throughput of this rank's training phase (validation excluded), and the whole epoch.
        seconds = state.train_seconds
        stats["train_samples_per_second"] = round(state.samples / seconds, 3) if seconds else None
        stats["epoch_seconds"] = round(time.perf_counter() - state.epoch_start, 3)
        extra = state.objective.epoch_stats()
        if extra:
            stats["semi_supervised"] = {"unlabelled_studies": len(state.ctx.unlabelled), **extra}
        return stats

    def result(self, state: TrainState) -> TrainResult:
        semi = not isinstance(state.objective, Supervised)
        metrics = {
            self.key_metric_name: state.best_metric,
            "key_metric_name": self.key_metric_name,
            "best_metric_epoch": state.best_epoch,
            "epochs": state.epoch,
            "train_studies": state.train_studies,
            "val_studies": state.val_studies,
            "unlabelled_studies": len(state.ctx.unlabelled) if semi else 0,
            "current_version_metric": state.current_metric,
            "seconds": round(time.time() - state.start_ts, 3),
        }
        return TrainResult(
            best_checkpoint=state.best_path if state.best_path.is_file() else None,
            last_checkpoint=state.last_path if state.last_path.is_file() else None,
            best_metric=state.best_metric,
            best_metric_epoch=state.best_epoch,
            epochs_run=state.epoch,
            stats=state.stats,
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


def train_and_validation(ctx: TrainContext, cfg: TrainConfig) -> tuple[list[Any], list[Any]]:
    """The job's held-out studies (a stable set across rounds) or a seeded split; never no training data."""
    if ctx.validation is not None:
        held_out = set(ctx.validation)
        train = [d for d in ctx.datalist if d["image"] not in held_out]
        val = [d for d in ctx.datalist if d["image"] in held_out]
    else:
        train, val = split(ctx.datalist, cfg.val_split, cfg.seed)
    if not train:
        raise ValueError("no labelled studies to train on: save some final labels first")
    return train, val


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
    for key in ("network", "state_dict", "model"):  # "model": a MONAI CheckpointSaver's {"model": ...}
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
