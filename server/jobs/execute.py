"""What a job does, per kind, inside its own process (``python -m server.jobs.run``).

- ``train``: the app's trainer on the datastore's final labels; stats after every epoch into the row and
  ``train_stats.json``; the best checkpoint published as the model's next version. More than one visible
  GPU and ``multi_gpu``: the same recipe under ``torchrun`` with DDP (:mod:`server.training.ddp`). With
  ``semi_supervised``: the studies without a final label train too, and the new version's predictions on
  them are stored as pseudo-labels (:mod:`server.pseudo`).
- ``scoring``: the app's scoring methods on the unlabelled studies with the model's current version,
  stored per (image, method, model version): the first value under the method's name, each further one
  as ``<method>.<key>``; a method's embedding of the study per (image, model version), replacing the
  same model's older ones. A no-op, recorded as such, when the app declares none.
- ``batch_infer``: the model's inference task over all, labelled or unlabelled studies, each result
  saved as the study's ``original`` label.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from server.apploader import load_app
from server.appspec import AppSpec
from server.database import Database
from server.datastore.ids import IMAGE_EXTS, split_ext
from server.datastore.store import Datastore
from server.jobs.models import Job
from server.jobs.service import BATCH_IMAGES
from server.models import Embedding, Image, Score, pack_vector
from server.pseudo import Provenance, PseudoLabels, inference_predictor
from server.settings import Settings
from server.training.base import TrainContext, Trainer, TrainResult
from server.training.config import TrainConfig


@dataclass
class JobEnv:
    settings: Settings
    db: Database
    job: Job
    spec: AppSpec
    datastore: Datastore

    @property
    def job_dir(self) -> Path:
        path = self.settings.data / "jobs" / self.job.id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def update(self, **values: Any) -> None:
        with self.db.session() as s:
            s.execute(update(Job).where(Job.id == self.job.id).values(**values))


def load_env(settings: Settings, db: Database, job_id: str) -> JobEnv:
    with db.session() as s:
        job = s.get(Job, job_id)
    if job is None:
        raise LookupError(f"job {job_id} has no row")
    return JobEnv(
        settings, db, job, load_app(settings.app_dir, settings.conf), Datastore(db, settings.studies)
    )


def execute(settings: Settings, db: Database, job_id: str) -> None:
    env = load_env(settings, db, job_id)
    print(f"{env.job.kind} job {job_id} for {env.job.model!r} (pid {os.getpid()})", flush=True)
    if env.job.kind == "train":
        run_train(env)
    elif env.job.kind == "scoring":
        run_scoring(env)
    elif env.job.kind == "batch_infer":
        run_batch_infer(env)
    else:
        raise ValueError(f"unknown job kind {env.job.kind!r}")


# ---- train ---------------------------------------------------------------------------------------
def trainer_of(spec: AppSpec, name: str) -> Trainer:
    trainer_spec = spec.trainers.get(name)
    if trainer_spec is None:
        raise LookupError(f"the app has no trainer {name!r} (it has: {', '.join(spec.trainers) or 'none'})")
    if not isinstance(trainer_spec.task, Trainer):
        raise TypeError(f"trainer {name!r} declares no training recipe (server.training.Trainer)")
    return trainer_spec.task


class StatsRecorder:
    """After every epoch: the stats into the row (``/info/`` reads them) and two ``train_stats.json``."""

    def __init__(self, env: JobEnv) -> None:
        self.env = env
        self.files = [
            env.job_dir / "train_stats.json",
            env.settings.data / "train" / env.job.model / "train_stats.json",
        ]

    def __call__(self, stats: dict[str, Any]) -> None:
        total = stats.get("total_epochs") or 1
        self.env.update(stats=stats, progress=min(1.0, float(stats.get("epoch", 0)) / float(total)))
        text = json.dumps(stats, indent=2)
        for path in self.files:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(path)


def train_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_train(env: JobEnv) -> None:
    trainer = trainer_of(env.spec, env.job.model)
    cfg = trainer.check_params(env.job.request)
    model = trainer.model or env.job.model
    datalist = env.datastore.train_list()
    if not datalist:
        raise ValueError("no final labels to train on: save some labels first")
    publisher = Publisher(env)
    initial = publisher.current_weights(model) if cfg.pretrained else None
    pool = unlabelled_pool(env, model, cfg)
    device = train_device()
    world = torch.cuda.device_count() if device == "cuda" and cfg.multi_gpu else 1
    print(f"{len(datalist)} labelled studies, device {device} x{world}, {cfg.max_epochs} epochs", flush=True)
    if world > 1:
        result = launch_ddp(env, world)
    else:
        ctx = TrainContext(
            datalist,
            env.job_dir / "checkpoints",
            params=env.job.request,
            device=device,
            on_epoch=StatsRecorder(env),
            initial_weights=initial,
            unlabelled=PseudoLabels(env.db, env.datastore).image_paths(pool),
        )
        result = trainer.run(ctx)
    if result.best_checkpoint is None:
        raise RuntimeError("training ended without a checkpoint")
    metrics = {**result.metrics, "job_id": env.job.id, "train_stats": result.stats}
    version = publisher.publish(model, result.best_checkpoint, metrics, source=f"train:{env.job.id}")
    outcome = {
        "model": model,
        "model_version": version,
        "best_metric": result.metrics.get(result.metrics.get("key_metric_name", ""), result.best_metric),
        "best_metric_epoch": result.best_metric_epoch,
        "epochs": result.epochs_run,
    }
    env.update(model_version=version, result=outcome)
    print(f"published {model} v{version} ({trainer.key_metric_name} {result.best_metric:.4f})", flush=True)
    if pool and cfg.semi_supervised.pseudo_labels:
        outcome["pseudo_labels"] = write_pseudo_labels(env, model, version, cfg, pool)
        env.update(result=outcome)


def train_rank(settings: Settings, db: Database, job_id: str) -> None:
    """One DDP rank (under torchrun): the same recipe on this rank's share; rank 0 records and saves."""
    import torch.distributed as dist

    env = load_env(settings, db, job_id)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        trainer = trainer_of(env.spec, env.job.model)
        cfg = trainer.check_params(env.job.request)
        publisher = Publisher(env)
        initial = publisher.current_weights(trainer.model or env.job.model) if cfg.pretrained else None
        ctx = TrainContext(
            env.datastore.train_list(),
            env.job_dir / "checkpoints",
            params=env.job.request,
            device=f"cuda:{local_rank}" if cuda else "cpu",
            on_epoch=StatsRecorder(env) if rank == 0 else None,
            initial_weights=initial,
            unlabelled=PseudoLabels(env.db, env.datastore).image_paths(
                unlabelled_pool(env, trainer.model or env.job.model, cfg)
            ),
            rank=rank,
            world_size=world,
            local_rank=local_rank,
        )
        result = trainer.run(ctx)
        if rank == 0:
            (env.job_dir / "ddp_result.json").write_text(
                json.dumps(
                    {
                        "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
                        "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
                        "best_metric": result.best_metric,
                        "best_metric_epoch": result.best_metric_epoch,
                        "epochs_run": result.epochs_run,
                        "stats": result.stats,
                        "metrics": result.metrics,
                    }
                )
            )
        # Every rank reaches here before any tears the group down: a rank that leaves while another
        # still talks to it (rank 0 writing the result, the last all-reduce) aborts that one (SIGABRT
        # seen with Gloo). After an error there is no barrier: the others would wait for ever.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def launch_ddp(env: JobEnv, world: int) -> TrainResult:
    """``torchrun --standalone --nproc_per_node=<world> -m server.training.ddp <job_id>``.

    Its output is this process's (streamed into the row like any other line)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={world}",
        "-m",
        "server.training.ddp",
        env.job.id,
    ]
    for key, value in sorted(env.settings.conf.items()):
        cmd += ["--conf", key, value]
    print("launching DDP:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    data = json.loads((env.job_dir / "ddp_result.json").read_text())
    return TrainResult(
        best_checkpoint=Path(data["best_checkpoint"]) if data["best_checkpoint"] else None,
        last_checkpoint=Path(data["last_checkpoint"]) if data["last_checkpoint"] else None,
        best_metric=float(data["best_metric"]),
        best_metric_epoch=int(data["best_metric_epoch"]),
        epochs_run=int(data["epochs_run"]),
        stats=data["stats"],
        metrics=data["metrics"],
    )


def unlabelled_pool(env: JobEnv, model: str, cfg: TrainConfig) -> list[str]:
    """The studies a semi-supervised run trains on without labels (none when it is off): no final label,
    at most ``max_unlabelled``, the most uncertain left out when ``uncertainty_method`` names scores."""
    semi = cfg.semi_supervised
    if not semi.enabled:
        return []
    uncertainty = None
    if semi.uncertainty_method:
        from server.registry import ModelRegistry

        current = ModelRegistry(env.db, env.settings.data).current(model)
        uncertainty = (semi.uncertainty_method, f"{model}@{current.version if current is not None else 0}")
    return PseudoLabels(env.db, env.datastore).pool(semi.max_unlabelled, uncertainty, semi.uncertainty_keep)


def write_pseudo_labels(
    env: JobEnv, model: str, version: int, cfg: TrainConfig, pool: list[str]
) -> dict[str, Any]:
    """The new version's predictions on the pool as pseudo-labels; older versions' dropped."""
    hosted = env.spec.models.get(model)
    if hosted is None or hosted.task is None:
        print(f"no pseudo-labels: {model!r} is not a hosted model", flush=True)
        return {"written": 0, "detail": "not a hosted model"}
    semi = cfg.semi_supervised
    provenance = Provenance(model, version, semi.method, semi.threshold, time.time())
    service = inference_service(env)
    try:
        report = PseudoLabels(env.db, env.datastore).refresh(
            pool, provenance, inference_predictor(service, model), env.job_dir / "pseudo"
        )
    finally:
        service.close()
    print(
        f"pseudo-labels of {model} v{version}: {report['written']} written, {report['current']} current, "
        f"{len(report['failed'])} failed, {report['dropped']} older ones dropped",
        flush=True,
    )
    return report


class Publisher:
    """Hands checkpoints to the model registry (through the inference service for hosted models, which
    first checks that the weights load into the model's network)."""

    def __init__(self, env: JobEnv) -> None:
        from server.registry import ModelRegistry

        self.env = env
        self.registry = ModelRegistry(env.db, env.settings.data)

    def current_weights(self, model: str) -> Path | None:
        current = self.registry.current(model)
        return None if current is None else self.registry.path(current)

    def publish(self, model: str, checkpoint: Path, metrics: dict[str, Any], source: str) -> int:
        hosted = self.env.spec.models.get(model)
        if hosted is not None and hosted.task is not None:
            service = inference_service(self.env)
            return service.publish(model, checkpoint, metrics, source).version
        return self.registry.publish(model, checkpoint, metrics, source).version


def inference_service(env: JobEnv) -> Any:
    from server.inference.service import InferenceService
    from server.registry import ModelRegistry
    from server.sessions import SessionStore

    sessions = SessionStore(env.db, env.settings.data / "sessions", 3600, 86400)
    return InferenceService(
        env.spec,
        ModelRegistry(env.db, env.settings.data),
        env.datastore,
        sessions,
        env.job_dir / "infer",
        workers=1,
        queue=1,
    )


# ---- batch inference -----------------------------------------------------------------------------
def batch_image_ids(db: Database, images: str) -> list[str]:
    if images not in BATCH_IMAGES:
        raise ValueError(f"images must be one of {', '.join(BATCH_IMAGES)}; got {images!r}")
    with db.session() as s:
        q = select(Image.id).order_by(Image.id)
        if images == "labeled":
            q = q.where(Image.completed.is_(True))
        elif images == "unlabeled":
            q = q.where(Image.completed.is_(False))
        return list(s.scalars(q))


def run_batch_infer(env: JobEnv) -> None:
    from server.inference.service import InferSource

    request = dict(env.job.request)
    images = str(request.pop("images", "all"))
    ids = batch_image_ids(env.db, images)
    service = inference_service(env)
    params = {k: v for k, v in request.items() if k not in ("client_id",)}
    params.update(save_label=True, label_tag="original")
    done, failed = 0, []
    started = time.time()
    for i, image_id in enumerate(ids, 1):
        with service.workspace() as workdir:
            try:
                result = service.infer(
                    env.job.model, InferSource(image_id=image_id), params, "image", workdir
                )
                done += 1
                print(f"{i}/{len(ids)} {image_id}: saved (v{result.params.get('version', 0)})", flush=True)
            except Exception as exc:  # one bad study must not end the batch; it is reported
                failed.append(image_id)
                print(f"{i}/{len(ids)} {image_id}: FAILED {type(exc).__name__}: {exc}", flush=True)
        env.update(progress=i / max(1, len(ids)))
    service.close()
    env.update(
        result={
            "images": images,
            "total": len(ids),
            "done": done,
            "failed": failed,
            "seconds": round(time.time() - started, 3),
        }
    )
    if failed and not done:
        raise RuntimeError(f"batch inference failed on every study ({len(failed)})")


# ---- scoring -------------------------------------------------------------------------------------
def run_scoring(env: JobEnv) -> None:
    methods = {name: s.method for name, s in env.spec.scoring.items() if s.method is not None}
    wanted = env.job.request.get("methods")
    if isinstance(wanted, list):
        methods = {name: m for name, m in methods.items() if name in wanted}
    if not methods:
        detail = "the app declares no scoring methods: nothing to rescore"
        print(detail, flush=True)
        env.update(result={"methods": [], "scored": 0, "skipped": 0, "detail": detail})
        return
    from monai.transforms import Compose

    from server.inference.request import InferRequest

    model = env.job.model if env.job.model in env.spec.models else next(iter(env.spec.models), None)
    if model is None:
        raise LookupError("scoring needs a hosted model; the app hosts none")
    service = inference_service(env)
    task = service.task(model)
    device = service.device
    version, nets = service.networks(model, task, device)
    tag = f"{model}@{version}"
    ids = batch_image_ids(env.db, "unlabeled")
    with env.db.session() as s:
        current = {
            (image_id, method)
            for image_id, method in s.execute(
                select(Score.image_id, Score.method).where(Score.model_version == tag)
            )
        }
        embedded = set(s.scalars(select(Embedding.image_id).where(Embedding.model_version == tag)))
    scored = skipped = vectors = 0
    for i, image_id in enumerate(ids, 1):
        todo = [
            name
            for name, method in methods.items()
            if (image_id, name) not in current or (method.embeds and image_id not in embedded)
        ]
        if not todo:
            skipped += 1
            continue
        with service.workspace() as workdir:
            stored = env.datastore.get_image(image_id)
            parts = split_ext(stored.name, IMAGE_EXTS)
            path, ext = stored.path, parts[1] if parts is not None else ".nii.gz"
            request = InferRequest(model, path, ext, workdir, {}, "json", None, image_id)
            data = Compose([task.loader(request), *task.pre_transforms(request)])({"image": str(path)})
            image = torch.as_tensor(data["image"])[None].to(device)
            for name in todo:
                values, embedding = methods[name].score_and_embed(nets[0], image)
                now = time.time()
                with env.db.session() as s:
                    for key, value in score_rows(name, values):
                        s.merge(Score(image_id=image_id, method=key, model_version=tag, value=value, ts=now))
                    if embedding is not None and image_id not in embedded:
                        store_embedding(s, image_id, model, tag, embedding, now)
                        embedded.add(image_id)
                        vectors += 1
                scored += 1
        env.update(progress=i / max(1, len(ids)))
    print(
        f"scored {scored} (image, method) pairs with {tag} ({vectors} embeddings);"
        f" {skipped} studies already current",
        flush=True,
    )
    env.update(
        result={
            "methods": sorted(methods),
            "model_version": tag,
            "scored": scored,
            "embedded": vectors,
            "skipped": skipped,
        }
    )


def score_rows(name: str, values: dict[str, float]) -> list[tuple[str, float]]:
    """``(method, value)`` rows: the first value under ``name``, each further key ``k`` as ``name.k``."""
    if not values:
        raise ValueError(f"scoring method {name!r} returned no values")
    keys = list(values)
    return [(name, float(values[keys[0]]))] + [(f"{name}.{k}", float(values[k])) for k in keys[1:]]


def store_embedding(s: Session, image_id: str, model: str, tag: str, vector: list[float], now: float) -> None:
    """One vector per (image, model version); the same model's older versions of it are dropped."""
    s.execute(
        delete(Embedding).where(
            Embedding.image_id == image_id,
            Embedding.model_version != tag,
            Embedding.model_version.startswith(f"{model}@", autoescape=True),
        )
    )
    s.merge(
        Embedding(image_id=image_id, model_version=tag, dim=len(vector), vector=pack_vector(vector), ts=now)
    )
