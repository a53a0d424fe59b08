"""Continuous campaigns: ``retrain_after: N`` trains after every N new final labels.

Checked when a final label is saved (the datastore's ``on_label_saved``) and when a campaign's training
job ends. Debounced: the count is of final labels saved since the trainer's last job was submitted, and
nothing starts while any training job is queued or running, so there are never two at once.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from server.errors import LabelloopError
from server.jobs.service import JobService
from server.settings import Settings

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


class Campaign:
    def __init__(self, jobs: JobService, every: int, trainer: str | None) -> None:
        self.jobs = jobs
        self.every = every
        self.trainer = trainer
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
            task = self.jobs.submit_if_idle("train", self.trainer, {"campaign": True})
        if task is not None:
            log.info("campaign: %d new final labels, training %s (job %s)", new, self.trainer, task["id"])
        return task
