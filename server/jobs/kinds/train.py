"""``train``: the app's trainer on the datastore's final labels, its best checkpoint published.

Stats go into the row (``/info/`` reads them) and ``train_stats.json`` after every epoch. More than one
visible GPU and ``multi_gpu``: the same recipe under ``torchrun`` with DDP (:mod:`server.jobs.ddp`).
With ``semi_supervised``: the studies without a final label train too, and the new version's predictions
on them are stored as pseudo-labels (:mod:`server.pseudo`). After a DONE run the model's scores are
recomputed (``rescore``, default true); a campaign run submits the next one when enough labels arrived.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.appspec import AppSpec, TrainingRecipe
from server.datastore.files import write_text_atomic
from server.errors import NotFound, Unprocessable
from server.jobs import models as jm
from server.jobs.campaign import retrain_after
from server.jobs.kinds.base import JobContext, JobKind, Submission, Submitter
from server.jobs.models import Job
from server.training.config import TrainConfig
from server.wire import parse_bool

if TYPE_CHECKING:
    from server.settings import Settings
    from server.training.base import TrainResult


def recipe_of(spec: AppSpec, name: str) -> TrainingRecipe:
    trainer_spec = spec.trainers.get(name)
    if trainer_spec is None:
        raise LookupError(f"the app has no trainer {name!r} (it has: {', '.join(spec.trainers) or 'none'})")
    if trainer_spec.task is None:
        raise TypeError(f"trainer {name!r} declares no training recipe (server.training.Trainer)")
    return trainer_spec.task


class Train(JobKind):
    name = "train"
    title = "Train"
    resumable = True  # after a restart it continues from checkpoints/last.pt

    def validate(self, spec: AppSpec, target: str | None, params: dict[str, Any]) -> Submission:
        declared = spec.trainers.get(target or "")
        if declared is None:
            names = ", ".join(sorted(spec.trainers)) or "none"
            raise NotFound(f"Trainer NOT Found: {target!r} (this app has: {names})")
        if declared.task is not None:
            try:
                declared.task.check_params(params)
            except ValueError as exc:
                raise Unprocessable(str(exc)) from exc
        if "rescore" in params:
            try:
                parse_bool(params["rescore"])
            except ValueError as exc:
                raise Unprocessable(f"rescore: {exc}") from exc
        # The rescore after this run computes what the exposed strategies read, and nothing else.
        return Submission(declared.name, {"rescore_methods": spec.read_scores(), **params})

    def devices(self, request: dict[str, Any], available: int) -> int:
        """``multi_gpu`` (the default) takes every GPU (DDP); the same parser as the trainer's."""
        try:
            multi = parse_bool(request.get("multi_gpu", True))
        except ValueError:
            multi = True  # refused by the trainer when it starts; the slot count does not matter then
        return available if multi else 1

    def after(self, job: Job, jobs: Submitter, settings: Settings) -> None:
        """The rescore of what the strategies read (none when they read nothing), and, for a campaign's
        run, the next one when enough new labels arrived meanwhile."""
        methods = job.request.get("rescore_methods")  # None: a request from before: every method
        wanted = parse_bool(job.request.get("rescore", True)) and methods != []
        if job.status == jm.DONE and wanted and job.model_version is not None:
            request: dict[str, Any] = {"after_train": job.id}
            if methods is not None:
                request["methods"] = methods
            rescore = jobs.submit("scoring", job.model, request, enqueue=True)
            jobs.add_result(job.id, {"rescore_job": rescore["id"]})  # the training job names its rescore
        if job.request.get("campaign"):
            every = retrain_after(settings)
            if every > 0 and jobs.final_labels_since(job.created_ts) >= every:
                jobs.submit_if_idle("train", job.model, dict(job.request))

    def run(self, ctx: JobContext) -> None:
        import torch

        from server.training.base import TrainContext

        services, job = ctx.services, ctx.job
        trainer = recipe_of(services.spec, job.model)
        cfg = trainer.check_params(job.request)
        model = trainer.model or job.model
        datalist = services.datastore.train_list()
        if not datalist:
            raise ValueError("no final labels to train on: save some labels first")
        current = current_weights(ctx, model)  # measured on the validation studies; the start when pretrained
        initial = current if cfg.pretrained else None
        pool = unlabelled_pool(ctx, model, cfg)
        device = train_device()
        world = torch.cuda.device_count() if device == "cuda" and cfg.multi_gpu else 1
        ctx.say(f"{len(datalist)} labelled studies, device {device} x{world}, {cfg.max_epochs} epochs")
        validation = stable_validation(ctx, model, datalist, cfg.val_split)
        if world > 1:
            result = launch_ddp(ctx, world)
        else:
            checkpoints = ctx.job_dir / "checkpoints"
            resume = (checkpoints / "last.pt").is_file()  # this job ran before and was interrupted
            if resume:
                ctx.say("resuming from the last checkpoint of the interrupted run")
            train_ctx = TrainContext(
                datalist,
                checkpoints,
                params=job.request,
                device=device,
                on_epoch=StatsRecorder(ctx),
                initial_weights=initial,
                unlabelled=services.pseudo.image_paths(pool),
                validation=validation,
                current_weights=current,
                resume=resume,
            )
            result = trainer.run(train_ctx)
        if result.best_checkpoint is None:
            raise RuntimeError("training ended without a checkpoint")
        # How often a restart interrupted this job (server/jobs/service.py), kept in its result.
        resumed = {"resumes": job.result["resumes"]} if (job.result or {}).get("resumes") else {}
        kept = kept_instead(ctx, model, trainer.key_metric_name, result, cfg)
        if kept is not None:
            ctx.update(result={**kept, **resumed})
            ctx.say(kept["detail"])
            return
        metrics = {**result.metrics, "job_id": job.id, "train_stats": result.stats}
        version = publish(ctx, model, result.best_checkpoint, metrics, source=f"train:{job.id}")
        outcome: dict[str, Any] = {
            "model": model,
            "model_version": version,
            "best_metric": result.metrics.get(result.metrics.get("key_metric_name", ""), result.best_metric),
            "best_metric_epoch": result.best_metric_epoch,
            "epochs": result.epochs_run,
            "current_version_metric": result.metrics.get("current_version_metric"),
            "validation_studies": result.metrics.get("val_studies"),
            **resumed,
        }
        ctx.update(model_version=version, result=outcome)
        ctx.say(f"published {model} v{version} ({trainer.key_metric_name} {result.best_metric:.4f})")
        if pool and cfg.semi_supervised.pseudo_labels:
            outcome["pseudo_labels"] = write_pseudo_labels(ctx, model, version, cfg, pool)
            ctx.update(result=outcome)


KIND = Train()


def train_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class StatsRecorder:
    """After every epoch: the stats into the row (``/info/`` reads them) and two ``train_stats.json``."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.files = [
            ctx.job_dir / "train_stats.json",
            ctx.services.settings.data / "train" / ctx.job.model / "train_stats.json",
        ]

    def __call__(self, stats: dict[str, Any]) -> None:
        total = stats.get("total_epochs") or 1
        self.ctx.update(stats=stats, progress=min(1.0, float(stats.get("epoch", 0)) / float(total)))
        text = json.dumps(stats, indent=2)
        for path in self.files:
            write_text_atomic(path, text)


def train_rank(ctx: JobContext) -> None:
    """One DDP rank (under torchrun): the same recipe on this rank's share; rank 0 records and saves."""
    import torch
    import torch.distributed as dist

    from server.training.base import TrainContext

    services, job = ctx.services, ctx.job
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        trainer = recipe_of(services.spec, job.model)
        cfg = trainer.check_params(job.request)
        model = trainer.model or job.model
        datalist = services.datastore.train_list()
        current = current_weights(ctx, model)
        train_ctx = TrainContext(
            datalist,
            ctx.job_dir / "checkpoints",
            params=job.request,
            device=f"cuda:{local_rank}" if cuda else "cpu",
            on_epoch=StatsRecorder(ctx) if rank == 0 else None,
            initial_weights=current if cfg.pretrained else None,
            unlabelled=services.pseudo.image_paths(unlabelled_pool(ctx, model, cfg)),
            rank=rank,
            world_size=world,
            local_rank=local_rank,
            validation=stable_validation(ctx, model, datalist, cfg.val_split),
            current_weights=current,
            resume=(ctx.job_dir / "checkpoints" / "last.pt").is_file(),
        )
        result = trainer.run(train_ctx)
        if rank == 0:
            (ctx.job_dir / "ddp_result.json").write_text(json.dumps(result.as_json()))
        # Every rank reaches here before any tears the group down: a rank that leaves while another
        # still talks to it (rank 0 writing the result, the last all-reduce) aborts that one (SIGABRT
        # seen with Gloo). After an error there is no barrier: the others would wait for ever.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def launch_ddp(ctx: JobContext, world: int) -> TrainResult:
    """``torchrun --standalone --nproc_per_node=<world> -m server.jobs.ddp <job_id>``.

    Its output is this process's (streamed into the row like any other line)."""
    from server.training.base import TrainResult

    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={world}",
        "-m",
        "server.jobs.ddp",
        ctx.job.id,
    ]
    for key, value in sorted(ctx.services.settings.conf.items()):
        cmd += ["--conf", key, value]
    ctx.say("launching DDP: " + " ".join(cmd))
    subprocess.run(cmd, check=True)
    return TrainResult.from_json(json.loads((ctx.job_dir / "ddp_result.json").read_text()))


def unlabelled_pool(ctx: JobContext, model: str, cfg: TrainConfig) -> list[str]:
    """The studies a semi-supervised run trains on without labels (none when it is off): no final label,
    at most ``max_unlabelled``, the most uncertain left out when ``uncertainty_method`` names scores."""
    semi = cfg.semi_supervised
    if not semi.enabled:
        return []
    uncertainty = None
    if semi.uncertainty_method:
        current = ctx.services.registry.current(model)
        uncertainty = (semi.uncertainty_method, f"{model}@{current.version if current is not None else 0}")
    return ctx.services.pseudo.pool(semi.max_unlabelled, uncertainty, semi.uncertainty_keep)


def write_pseudo_labels(
    ctx: JobContext, model: str, version: int, cfg: TrainConfig, pool: list[str]
) -> dict[str, Any]:
    """The new version's predictions on the pool as pseudo-labels; older versions' dropped."""
    from server.pseudo import Provenance, inference_predictor

    services = ctx.services
    hosted = services.spec.models.get(model)
    if hosted is None or hosted.task is None:
        ctx.say(f"no pseudo-labels: {model!r} is not a hosted model")
        return {"written": 0, "detail": "not a hosted model"}
    semi = cfg.semi_supervised
    provenance = Provenance(model, version, semi.method, semi.threshold, time.time())
    report = services.pseudo.refresh(
        pool, provenance, inference_predictor(services.inference, model), ctx.job_dir / "pseudo"
    )
    ctx.say(
        f"pseudo-labels of {model} v{version}: {report['written']} written, {report['current']} current, "
        f"{len(report['failed'])} failed, {report['dropped']} older ones dropped"
    )
    return report


def stable_validation(ctx: JobContext, model: str, datalist: list[dict[str, Any]], share: float) -> list[str]:
    """The studies held out for validation, stable across rounds: a study once held out stays held out
    (so versions are compared on the same studies); new labelled studies join it, in a fixed hashed
    order, until it holds ``share`` of them (at least one of two). Kept in
    ``<data>/train/<model>/validation.json``."""
    path = ctx.services.settings.data / "train" / model / "validation.json"
    images = [str(d["image"]) for d in datalist]
    before = set(json.loads(path.read_text())) if path.is_file() else set()
    held = [i for i in images if i in before]
    want = 0 if len(images) < 2 or share <= 0 else min(len(images) - 1, max(1, round(len(images) * share)))
    newcomers = sorted(
        (i for i in images if i not in before), key=lambda i: hashlib.sha256(i.encode()).digest()
    )
    held += newcomers[: max(0, want - len(held))]
    if len(held) >= len(images) > 1:
        held = held[: len(images) - 1]  # something must be left to train on
    keep = sorted(before | set(held))  # every study ever held out stays held out while it is labelled
    write_text_atomic(path, json.dumps(keep))  # DDP ranks may write it at once
    return held


def kept_instead(
    ctx: JobContext, model: str, key: str, result: TrainResult, cfg: TrainConfig
) -> dict[str, Any] | None:
    """The job's result when the new version is not published (worse than the current one on the same
    validation studies, enough of them to tell); None when it is to be published."""
    current = ctx.services.registry.current(model)
    baseline = result.metrics.get("current_version_metric")
    studies = int(result.metrics.get("val_studies", 0))
    if current is None or baseline is None or cfg.always_publish or studies < cfg.compare_min_studies:
        return None
    if not math.isfinite(float(baseline)) or result.best_metric >= float(baseline):
        return None
    detail = (
        f"kept version {current.version}: the new best {key} {result.best_metric:.4f} (epoch"
        f" {result.best_metric_epoch}) is below version {current.version}'s {float(baseline):.4f}"
        f" on the same {studies} validation studies"
    )
    return {
        "model": model,
        "kept_version": current.version,
        "published": False,
        "best_metric": result.best_metric,
        "current_version_metric": float(baseline),
        "validation_studies": studies,
        "best_metric_epoch": result.best_metric_epoch,
        "epochs": result.epochs_run,
        "detail": detail,
    }


def current_weights(ctx: JobContext, model: str) -> Path | None:
    registry = ctx.services.registry
    current = registry.current(model)
    return None if current is None else registry.path(current)


def publish(ctx: JobContext, model: str, checkpoint: Path, metrics: dict[str, Any], source: str) -> int:
    """The checkpoint as the model's next version: through the inference service for a hosted model
    (which first checks that the weights load into its network), else straight into the registry."""
    services = ctx.services
    hosted = services.spec.models.get(model)
    if hosted is not None and hosted.task is not None:
        return services.inference.publish(model, checkpoint, metrics, source).version
    return services.registry.publish(model, checkpoint, metrics, source).version
