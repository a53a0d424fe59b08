"""Typed rows of the model registry: one per published weights file (``<data>/models/<model>/v<N>.pt``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.models import Base


class ModelVersion(Base):
    """Version ``version`` of ``model``: its file, checksum, where it came from and its metrics.

    Versions only grow: a deleted version keeps its row (``deleted``) so its number is never reused,
    which keeps caches and scores keyed by ``(model, version)`` unambiguous.
    """

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    # Path relative to the data folder (``models/<model>/v<N>.pt``).
    file: Mapped[str] = mapped_column(String(1024))
    checksum: Mapped[str] = mapped_column(String(80))  # "SHA256:<hex>", as MONAI Label reports it
    size: Mapped[int] = mapped_column(Integer, default=0)
    created_ts: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(64), default="upload")
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    deleted: Mapped[bool] = mapped_column(default=False)

    # The unique index also serves "current version of a model" (model = ? ORDER BY version DESC).
    __table_args__ = (UniqueConstraint("model", "version", name="uq_model_versions_model_version"),)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "file": self.file,
            "checksum": self.checksum,
            "size": self.size,
            "created_ts": self.created_ts,
            "source": self.source,
            "metrics": dict(self.metrics or {}),
            "deleted": self.deleted,
        }
