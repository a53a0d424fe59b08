"""The model registry: every hosted model's published weights, one numbered version per file.

Kept in ``Services.registry``. This is the API training jobs use to hand over a checkpoint;
it is stable:

``publish(model, checkpoint, metrics=None, source="upload") -> ModelVersion``
    Copy ``checkpoint`` atomically to ``<data>/models/<model>/v<N>.pt`` (``N`` = last version + 1,
    never reused) and insert its row in the same unit of work: either both exist or neither does.
    The file is a ``torch.save`` of a ``state_dict`` (or ``{"state_dict": sd}``, or an ensemble
    ``{"ensemble": [sd, ...]}``). ``metrics`` (e.g. MONAI Label's ``train_stats``) is stored with it
    and served by ``GET /model/info/<model>``. The next inference request uses it: no restart.
``current(model) -> ModelVersion | None``
    The newest version that is not deleted; None while the model runs on its seed initialisation.
``versions(model) -> list[ModelVersion]``
    Every version, oldest first, deleted ones included.
``delete(model) -> ModelVersion``
    Retire the current version: its file is renamed ``*.deleted`` (as MONAI Label does) and its row
    marked deleted, so the previous version (or the seed initialisation) serves from the next request.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from server.database import Database
from server.datastore import files
from server.errors import BadRequest, NotFound
from server.registry_models import ModelVersion

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
PUBLISH_ATTEMPTS = 5


def check_model_name(name: str | None) -> str:
    if not name or ".." in name or not _MODEL_NAME.match(name):
        raise BadRequest(f"invalid model name {name!r}: letters, digits, '.', '_' or '-' (1-128 chars)")
    return name


class ModelRegistry:
    """Published weights per model, in ``<data>/models/<model>/`` with one row per version."""

    def __init__(self, db: Database, data_dir: Path) -> None:
        self.db = db
        self.data_dir = data_dir.resolve()
        self.root = self.data_dir / "models"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one publisher at a time in this process (others: unique index)

    # ---- queries -----------------------------------------------------------------------------
    def current(self, model: str) -> ModelVersion | None:
        with self.db.session() as s:
            return s.scalar(
                select(ModelVersion)
                .where(ModelVersion.model == model, ModelVersion.deleted.is_(False))
                .order_by(ModelVersion.version.desc())
                .limit(1)
            )

    def versions(self, model: str) -> list[ModelVersion]:
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(ModelVersion).where(ModelVersion.model == model).order_by(ModelVersion.version)
                )
            )

    def path(self, version: ModelVersion) -> Path:
        """The weights file of ``version`` (``*.deleted`` once deleted)."""
        path = self.data_dir / version.file
        return path.with_name(path.name + ".deleted") if version.deleted else path

    # ---- changes -----------------------------------------------------------------------------
    def publish(
        self, model: str, checkpoint: Path, metrics: dict[str, Any] | None = None, source: str = "upload"
    ) -> ModelVersion:
        check_model_name(model)
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise BadRequest(f"checkpoint {checkpoint} is not a file")
        if metrics is not None and not isinstance(metrics, dict):
            raise BadRequest("metrics must be a JSON object")
        folder = self.root / model
        with self._lock:
            for attempt in range(PUBLISH_ATTEMPTS):
                tmp = files.temp_path(folder, ".pt")
                try:
                    checksum, size = _copy_with_checksum(checkpoint, tmp)
                    with self.db.session() as s:
                        last = s.scalar(
                            select(func.max(ModelVersion.version)).where(ModelVersion.model == model)
                        )
                    number = (last or 0) + 1
                    final = folder / f"v{number}.pt"
                    row = ModelVersion(
                        model=model,
                        version=number,
                        file=final.relative_to(self.data_dir).as_posix(),
                        checksum=checksum,
                        size=size,
                        created_ts=time.time(),
                        source=str(source)[:64],
                        metrics=dict(metrics or {}),
                        deleted=False,
                    )
                    # The file move is the outer block: a failed commit takes the file away again.
                    with files.placed(tmp, final), self.db.session() as s:
                        s.add(row)
                    return row
                except IntegrityError:
                    # Another process published the same number first: take the next one.
                    if attempt == PUBLISH_ATTEMPTS - 1:
                        raise
                finally:
                    tmp.unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def delete(self, model: str) -> ModelVersion:
        check_model_name(model)
        with self._lock:
            row = self.current(model)
            if row is None:
                raise NotFound(f"Model NOT Found: no published weights for {model!r}")
            path = self.data_dir / row.file
            retired = path.with_name(path.name + ".deleted")
            if path.exists():
                os.replace(path, retired)
            try:
                with self.db.session() as s:
                    live = s.get(ModelVersion, row.id)
                    if live is not None:
                        live.deleted = True
            except BaseException:
                if retired.exists():
                    os.replace(retired, path)
                raise
            row.deleted = True
            return row


def _copy_with_checksum(src: Path, dest: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        for block in iter(lambda: fin.read(1 << 20), b""):
            digest.update(block)
            fout.write(block)
            size += len(block)
        fout.flush()
        os.fsync(fout.fileno())
    return f"SHA256:{digest.hexdigest()}", size
