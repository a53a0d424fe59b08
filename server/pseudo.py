"""Pseudo-labels: a model's predictions on studies nobody has labelled, kept apart from ground truth.

They live under their own tag, :data:`PSEUDO`, with their provenance in the label info (``model``,
``model_version``, ``method``, ``threshold``, ``created_ts``). The rules:

- never ground truth: only ``final`` labels mark a study ``completed`` or enter the training list,
  ``output=train``, the dataset zip and DICOM SEG export; a pseudo-label changes none of them;
- the pool is the studies without a final label (:meth:`PseudoLabels.pool`), optionally without the most
  uncertain ones by a scoring method's scores for the current model version;
- replaced when the model changes: after a semi-supervised run publishes version ``v``,
  :meth:`PseudoLabels.refresh` writes ``v``'s prediction for every pool study whose pseudo-label is missing
  or older, and drops the model's pseudo-labels of other versions that are left;
- an annotator's ``final`` label always wins: saving one deletes the study's pseudo-label
  (:meth:`PseudoLabels.on_label_saved`, hooked to the datastore), the pool excludes completed studies,
  and a pseudo-label that lands on a study completed meanwhile is removed at once.

Kept in ``Services.pseudo``; its ``on_label_saved`` follows the datastore in the server.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from server.database import Database
from server.datastore import files
from server.datastore.ids import IMAGE_EXTS, LABEL_EXTS, split_ext
from server.datastore.store import FINAL, Datastore
from server.datastore.volumes import read_header
from server.errors import LabelloopError, NotFound
from server.models import Image, Label, Score

log = logging.getLogger(__name__)

PSEUDO = "pseudo"

# (image_id, workdir) -> (a label file in the image's geometry, its extension, extra info)
Predictor = Callable[[str, Path], tuple[Path, str, dict[str, Any]]]


@dataclass(frozen=True)
class Provenance:
    """What made a pseudo-label; stored as its label info."""

    model: str
    model_version: int
    method: str
    threshold: float
    created_ts: float

    def info(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PseudoLabel:
    image_id: str
    info: dict[str, Any]
    completed: bool


class PseudoLabels:
    def __init__(self, db: Database, datastore: Datastore) -> None:
        self.db, self.datastore = db, datastore

    # ---- the pool ------------------------------------------------------------------------------
    def pool(
        self, limit: int, uncertainty: tuple[str, str] | None = None, keep_fraction: float = 1.0
    ) -> list[str]:
        """Up to ``limit`` ids of studies without a final label, in the datastore's fixed random order.

        With ``uncertainty`` ``(method, model_version)`` (a Score key such as ``("entropy", "seg@3")``),
        studies scored above the ``keep_fraction`` quantile are left out; unscored studies stay in.
        """
        excluded: set[str] = set()
        if uncertainty is not None and keep_fraction < 1.0:
            scores = self.scores(*uncertainty)
            excluded = set(scores) - least_uncertain(scores, keep_fraction)
        with self.db.session() as s:
            q = select(Image.id).where(Image.completed.is_(False)).order_by(Image.rand_key, Image.id)
            ids = [i for i in s.scalars(q) if i not in excluded]
        return ids[:limit]

    def scores(self, method: str, model_version: str) -> dict[str, float]:
        with self.db.session() as s:
            rows = s.execute(
                select(Score.image_id, Score.value).where(
                    Score.method == method, Score.model_version == model_version
                )
            )
            return {image_id: float(value) for image_id, value in rows}

    def image_paths(self, ids: list[str]) -> list[str]:
        return [str(self.datastore.image_path(i)) for i in ids]

    # ---- the labels ----------------------------------------------------------------------------
    def labels(self) -> list[PseudoLabel]:
        with self.db.session() as s:
            rows = s.execute(
                select(Label.image_id, Label.info, Image.completed)
                .join(Image, Image.id == Label.image_id)
                .where(Label.tag == PSEUDO)
                .order_by(Label.image_id)
            )
            return [PseudoLabel(i, dict(info or {}), bool(done)) for i, info, done in rows]

    def save(self, image_id: str, tmp: Path, ext: str, provenance: Provenance) -> bool:
        """Store ``tmp`` (consumed) as ``image_id``'s pseudo-label; False, and nothing stored, when the
        study has a final label (also one saved while this was written)."""
        if self._completed(image_id):
            tmp.unlink(missing_ok=True)
            return False
        self.datastore.save_label(image_id, PSEUDO, tmp, ext, provenance.info())
        if self._completed(image_id):  # a final label came in meanwhile: it wins
            self._delete(image_id)
            return False
        return True

    def drop(self, model: str, keep_version: int | None = None) -> int:
        """Delete ``model``'s pseudo-labels of any version but ``keep_version``, and every pseudo-label
        of a completed study; the number deleted."""
        dropped = 0
        for label in self.labels():
            stale = label.info.get("model") == model and label.info.get("model_version") != keep_version
            if label.completed or stale:
                dropped += self._delete(label.image_id)
        return dropped

    def refresh(
        self, ids: list[str], provenance: Provenance, predict: Predictor, workdir: Path
    ) -> dict[str, Any]:
        """``provenance``'s model version predicts every study in ``ids`` whose pseudo-label is missing or
        from another version; then that model's other pseudo-labels are dropped. A failing study is
        reported, not fatal."""
        current = {
            p.image_id
            for p in self.labels()
            if p.info.get("model") == provenance.model
            and p.info.get("model_version") == provenance.model_version
        }
        written, failed, skipped = 0, [], 0
        for image_id in ids:
            if image_id in current:
                skipped += 1
                continue
            folder = workdir / f"pseudo-{image_id}"
            folder.mkdir(parents=True, exist_ok=True)
            try:
                path, ext, extra = predict(image_id, folder)
                tmp = self.datastore.temp_for_label(PSEUDO, ext)
                files.copy_file(path, tmp)
                info = Provenance(**{**asdict(provenance), "created_ts": round(time.time(), 3)})
                if self.save(image_id, tmp, ext, info):
                    written += 1
                    if extra:
                        self.datastore.update_label_info(image_id, PSEUDO, extra)
            except (LabelloopError, OSError, RuntimeError, ValueError) as exc:
                failed.append(image_id)
                log.warning("pseudo-label of %s failed: %s: %s", image_id, type(exc).__name__, exc)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        dropped = self.drop(provenance.model, keep_version=provenance.model_version)
        return {"written": written, "current": skipped, "failed": failed, "dropped": dropped}

    # ---- final wins ----------------------------------------------------------------------------
    def on_label_saved(self, image_id: str, tag: str, info: dict[str, Any]) -> None:
        """The datastore's hook: a final label removes the study's pseudo-label."""
        if tag != FINAL:
            return
        try:
            self._delete(image_id)
        except (SQLAlchemyError, LabelloopError, OSError):
            # The final label is stored; the pool query skips completed studies anyway.
            log.exception("could not delete the pseudo-label of %s", image_id)

    def _delete(self, image_id: str) -> int:
        if not self.datastore.label_exists(image_id, PSEUDO):
            return 0  # most studies have none: no lock taken
        try:
            self.datastore.delete_label(image_id, PSEUDO)
        except NotFound:
            return 0
        return 1

    def _completed(self, image_id: str) -> bool:
        with self.db.session() as s:
            return bool(s.scalar(select(Image.completed).where(Image.id == image_id)))


def inference_predictor(service: Any, model: str) -> Predictor:
    """A :data:`Predictor` over an :class:`~server.inference.service.InferenceService` (its current version).

    Segmentation: the task's label volume as inference writes it (the image's geometry). Classification:
    a volume of the image's shape filled with the predicted class index (what the classification
    trainer reads back as the class), with ``prediction`` and ``probability`` in the info.
    """
    from server.inference.request import InferSource

    spec = service.spec.models[model]

    def predict(image_id: str, workdir: Path) -> tuple[Path, str, dict[str, Any]]:
        source = InferSource(image_id=image_id)
        if spec.type == "classification":
            result = service.infer(model, source, {}, "json", workdir)
            names = list(result.params["probabilities"])
            name = str(result.params["prediction"])
            stored = service.datastore.get_image(image_id)
            parts = split_ext(stored.name, IMAGE_EXTS)
            header = read_header(stored.path, parts[1] if parts is not None else ".nii.gz")
            data = np.full(header.shape[:3], names.index(name), dtype=np.uint8)
            dest = workdir / "class.nii.gz"
            nib.save(nib.Nifti1Image(data, header.affine), str(dest))
            extra = {"prediction": name, "probability": float(result.params["probabilities"][name])}
            return dest, ".nii.gz", extra
        result = service.infer(model, source, {}, "image", workdir)
        label_parts = split_ext(result.file.name, LABEL_EXTS) if result.file is not None else None
        if result.file is None or label_parts is None:
            raise ValueError(f"model {model!r} returned no label volume for {image_id}")
        return result.file, label_parts[1], {}

    return predict


def least_uncertain(scores: Mapping[str, float], keep_fraction: float) -> set[str]:
    """The ids whose uncertainty score is within the lowest ``keep_fraction`` of ``scores``.

    Per-study masking by the strategies' scores (entropy, MC dropout...): the most uncertain studies get
    no pseudo-label at all. ``keep_fraction`` >= 1 keeps every scored study; ties at the cut are kept.
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    finite = {k: v for k, v in scores.items() if math.isfinite(v)}
    if keep_fraction >= 1.0 or not finite:
        return set(finite)
    ordered = sorted(finite.values())
    cutoff = ordered[max(0, math.ceil(keep_fraction * len(ordered)) - 1)]
    return {k for k, v in finite.items() if v <= cutoff}
