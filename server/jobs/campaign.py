"""Continuous campaigns: ``retrain_after: N`` trains after every N new final labels, and the campaign's
state in one place (``GET /campaign/``).

Checked when a final label is saved (the datastore's ``on_label_saved``) and when a campaign's training
job ends. Debounced: the count is of final labels saved since the trainer's last job was submitted, and
nothing starts while any training job is queued or running, so there are never two at once.

Training settings given as ``--conf`` keys (``max_epochs``, ``learning_rate``, ``val_interval`` and any
other :class:`~server.training.config.TrainConfig` field) are the defaults of every training request,
the campaign's included; a request's own params win.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import fields
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from server.errors import LabelloopError
from server.jobs import models as jm
from server.jobs.models import Job
from server.jobs.service import JobService, task_dict
from server.models import Label
from server.settings import Settings
from server.training.config import TrainConfig

log = logging.getLogger(__name__)


def retrain_after(settings: Settings) -> int:
    """``--conf retrain_after N`` wins over the ``retrain_after`` setting (``--retrain-after``)."""
    raw = settings.conf.get("retrain_after")
    if raw is None or raw == "":
        return settings.retrain_after
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"--conf retrain_after {raw!r}: expected an integer") from None
    return max(0, value)


def training_conf(settings: Settings) -> dict[str, str]:
    """The ``--conf`` keys that are training settings (fields of ``TrainConfig``)."""
    names = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in settings.conf.items() if k in names}


class Campaign:
    def __init__(
        self,
        jobs: JobService,
        every: int,
        trainer: str | None,
        request: dict[str, Any] | None = None,
        effective: dict[str, Any] | None = None,
        max_streams: int = 2,
    ) -> None:
        self.jobs = jobs
        # Event streams hold a request thread each: at most this many at once (the rest get 429).
        self.streams = threading.BoundedSemaphore(max(1, max_streams))
        self.every = every
        self.trainer = trainer
        self.request = {"campaign": True, **(request or {})}  # what each campaign training job carries
        self.effective = effective or {}  # the trainer's settings in force (its defaults and --conf)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.every > 0 and bool(self.trainer)

    def on_label_saved(self, image_id: str, tag: str, info: dict[str, Any]) -> None:
        if tag != "final" or not self.enabled:
            return
        try:
            self.check()
        except (SQLAlchemyError, LabelloopError):
            # The label is stored; a failed check must not turn its save into an error.
            log.exception("retrain check after the label of %s failed", image_id)

    def check(self) -> dict[str, Any] | None:
        """Submit a training job when enough new final labels are in; the task, or None."""
        if not self.enabled or self.trainer is None:
            return None
        with self._lock:
            since = self.jobs.last_created("train", self.trainer) or 0.0
            new = self.jobs.final_labels_since(since)
            if new < self.every:
                return None
            task = self.jobs.submit_if_idle("train", self.trainer, dict(self.request))
        if task is not None:
            log.info("campaign: %d new final labels, training %s (job %s)", new, self.trainer, task["id"])
        return task

    def state(self) -> dict[str, Any]:
        """Where the campaign stands: labels, the current round's training job and the rescore it
        chained (ids and progress), what starts the next round, and the training settings in force."""
        db = self.jobs.db
        with db.session() as s:
            finals = s.scalar(select(func.count()).select_from(Label).where(Label.tag == "final")) or 0
            trainings = list(
                s.scalars(select(Job).where(Job.kind == "train").order_by(Job.created_ts.desc()).limit(1))
            )
            rounds = s.scalar(
                select(func.count()).select_from(Job).where(Job.kind == "train", Job.status == jm.DONE)
            )
            training = trainings[0] if trainings else None
            rescore = None
            if training is not None:
                rescore = s.scalars(
                    select(Job)
                    .where(Job.kind == "scoring", Job.created_ts >= training.created_ts)
                    .order_by(Job.created_ts)
                ).first()
                if rescore is not None and rescore.request.get("after_train") != training.id:
                    rescore = None
        since = self.jobs.final_labels_since(training.created_ts) if training is not None else finals
        return {
            "enabled": self.enabled,
            "trainer": self.trainer,
            "retrain_after": self.every,
            "round": int(rounds or 0),
            "final_labels": int(finals),
            "final_labels_since_last_training": int(since),
            "training": None if training is None else _brief(training),
            "rescore": None if rescore is None else _brief(rescore),
            "next": self._next(training, since),
            "training_settings": self.effective,
        }

    def _next(self, training: Job | None, since: int) -> str:
        if not self.enabled:
            return "manual: POST /train/<trainer> (retrain_after is 0)"
        if training is not None and training.status in jm.ACTIVE:
            return "after the running training job ends (labels saved meanwhile count towards the next)"
        return f"training starts after {max(0, self.every - since)} more final label(s)"


def _brief(job: Job) -> dict[str, Any]:
    task = task_dict(job)
    keys = ("id", "kind", "status", "progress", "model", "model_version", "start_ts", "end_ts", "error")
    return {k: task.get(k) for k in keys} | {"request": job.request}
