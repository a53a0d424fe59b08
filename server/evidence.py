"""Evidence that the loop pays off, measured inside the campaign.

- **Audit picks**: a share of next-sample picks (``audit_share``) is served at random
  (:mod:`server.sampling`), marked ``audit``. When such a study's final label arrives, the current
  model predicts it (before any training can have used the label) and the Dice against the label is
  stored with the model version: the mean over a version's audit studies is an unbiased estimate of
  that version's quality on the pool, given with a 95 % t-interval.
- **Pre-annotations**: when a final label arrives for a study that has the model's ``original`` label,
  their Dice says how much the annotator had to correct.

Both checks run on one background thread of this service, never in the request that saved the label.
An audit is a model inference in the web process: it runs on the inference service's background lane
(the lowest OS priority, never an annotator's inference slot), and the thread predicts at most
:data:`AUDIT_DUTY` of its time and rests the rest: annotators' requests come first. Under a burst
of labels audits wait their turn; one whose prediction came from a model version published after the
label was saved is dropped (that version may have trained on the label), which keeps the estimate
unbiased.
"""

from __future__ import annotations

import logging
import math
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from sqlalchemy import func, select

from server.database import Database
from server.datastore import volumes
from server.datastore.ids import LABEL_EXTS, split_ext
from server.datastore.store import FINAL, ORIGINAL, Datastore
from server.errors import Unavailable
from server.inference.request import InferResult, InferSource
from server.inference.service import InferenceService
from server.models import Assignment, Label, ModelCheck
from server.registry import ModelRegistry
from server.sampling import AUDIT
from server.team.agreement import dice

log = logging.getLogger(__name__)
# The share of the audit thread's time spent predicting: after an audit that took t seconds it rests
# t * (1 / AUDIT_DUTY - 1). With 32 annotators saving a label a second each, audits of 10 % of the picks
# took about one of two CPU cores unthrottled (benchmarks/annotators_load.py --audit-share 0 0.1).
AUDIT_DUTY = 0.25


class Evidence:
    """Kept in ``Services.evidence``."""

    def __init__(
        self,
        db: Database,
        datastore: Datastore,
        registry: ModelRegistry,
        inference: InferenceService | None,
        model: str | None,
        labels: dict[str, int],
        workdir: Path,
    ) -> None:
        self.db, self.datastore, self.registry, self.inference = db, datastore, registry, inference
        self.model, self.labels, self.workdir = model, labels, workdir
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")
        self.closed = threading.Event()  # ends a rest at once when the server stops

    # ---- when a final label arrives --------------------------------------------------------------
    def on_label_saved(self, image_id: str, tag: str, _info: dict[str, Any]) -> None:
        """Queue the checks of a new final label on this service's thread (never in the request)."""
        if tag == FINAL and self.model is not None:
            self.pool.submit(self._check, image_id, time.time())

    def close(self) -> None:
        self.closed.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _check(self, image_id: str, saved_ts: float) -> None:
        try:
            self._score_preannotation(image_id)
        except Exception:
            log.exception("pre-annotation check of %s", image_id)
        with self.db.session() as s:
            audit = s.get(Assignment, (image_id, AUDIT)) is not None
            done = s.get(ModelCheck, (image_id, AUDIT)) is not None
        if audit and not done and self.inference is not None:
            started = time.monotonic()
            self._audit(image_id, saved_ts)
            self.closed.wait((time.monotonic() - started) * (1.0 / AUDIT_DUTY - 1.0))

    def _audit(self, image_id: str, saved_ts: float) -> None:
        assert self.inference is not None and self.model is not None
        work = Path(tempfile.mkdtemp(prefix="audit-", dir=self.workdir))
        try:
            result = self._infer(image_id, work)
            if result is None or result.file is None:
                return
            version = int(result.params.get("version", 0) or 0)  # the version that predicted
            if self._published_after(version, saved_ts):
                log.info("audit of %s dropped: model version %d came after its label", image_id, version)
                return
            self._store(image_id, AUDIT, version, _mask(result.file))
        except Exception:
            log.exception("audit of %s", image_id)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _published_after(self, version: int, ts: float) -> bool:
        """Was ``version`` of the model published after ``ts`` (so it may have trained on that label)?"""
        assert self.model is not None
        return any(v.version == version and v.created_ts > ts for v in self.registry.versions(self.model))

    def _infer(self, image_id: str, work: Path) -> InferResult | None:
        """The model's prediction, on the inference service's background lane (lowest OS priority,
        never an annotator's slot)."""
        assert self.inference is not None and self.model is not None
        try:
            return self.inference.infer(
                self.model, InferSource(image_id=image_id), {}, "image", work, background=True
            )
        except Unavailable as exc:
            log.warning("audit of %s skipped: %s", image_id, exc)
            return None

    def _score_preannotation(self, image_id: str) -> None:
        with self.db.session() as s:
            row = s.scalar(select(Label).where(Label.image_id == image_id, Label.tag == ORIGINAL))
            if row is None or s.get(ModelCheck, (image_id, "preannotation")) is not None:
                return
            version = int(row.info.get("model_version", -1) or 0)
        self._store(
            image_id, "preannotation", version, _mask(self.datastore.get_label(image_id, ORIGINAL).path)
        )

    def _store(self, image_id: str, kind: str, version: int, predicted: np.ndarray) -> None:
        truth = _mask(self.datastore.get_label(image_id, FINAL).path)
        if truth.shape != predicted.shape:
            raise ValueError(f"prediction {list(predicted.shape)} and label {list(truth.shape)} differ")
        per_label = {
            name: dice(predicted == index, truth == index)
            for name, index in self.labels.items()
            if (predicted == index).any() or (truth == index).any()
        }
        mean = statistics.fmean(per_label.values()) if per_label else 1.0
        with self.db.session() as s:
            finals = s.scalar(select(func.count()).select_from(Label).where(Label.tag == FINAL)) or 0
            s.merge(
                ModelCheck(
                    image_id=image_id,
                    kind=kind,
                    model=self.model or "",
                    model_version=version,
                    final_labels=int(finals),
                    dice=mean,
                    per_label=per_label,
                    ts=time.time(),
                )
            )

    # ---- what it shows ---------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Per model version: the audit estimate (n, mean Dice, 95 % interval, the labels it had) and
        the pre-annotations' mean Dice."""
        out: dict[str, Any] = {"model": self.model, "audit": [], "preannotation": []}
        with self.db.session() as s:
            for kind in ("audit", "preannotation"):
                values: dict[int, list[tuple[float, int]]] = {}
                for version, value, finals in s.execute(
                    select(ModelCheck.model_version, ModelCheck.dice, ModelCheck.final_labels).where(
                        ModelCheck.kind == kind
                    )
                ):
                    values.setdefault(int(version), []).append((float(value), int(finals)))
                out[kind] = [_estimate(version, rows) for version, rows in sorted(values.items())]
        return out


def _mask(path: Path) -> np.ndarray:
    """A label volume's voxels, singleton axes dropped (its type from its name)."""
    parts = split_ext(path.name, LABEL_EXTS)
    if parts is None:
        raise ValueError(f"not a label file: {path.name}")
    data, _ = volumes.load_array(path, parts[1])
    return np.squeeze(data)


def _estimate(version: int, rows: list[tuple[float, int]]) -> dict[str, Any]:
    values = [v for v, _ in rows]
    n, mean = len(values), statistics.fmean(values)
    interval = None
    if n >= 2:
        half = float(stats.t.ppf(0.975, n - 1)) * statistics.stdev(values) / math.sqrt(n)
        interval = [round(max(0.0, mean - half), 4), round(min(1.0, mean + half), 4)]
    return {
        "model_version": version,
        "n": n,
        "mean_dice": round(mean, 4),
        "ci95": interval,
        "final_labels": int(statistics.median(f for _, f in rows)),
    }
