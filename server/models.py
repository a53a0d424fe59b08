"""Typed SQLAlchemy 2 models: the datastore's rows. Files stay on disk; rows say what they are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Image(Base):
    """One study (a volume). ``id`` is the filename without extension (or a SeriesInstanceUID)."""

    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    ext: Mapped[str] = mapped_column(String(32))
    # Path relative to the studies folder (or absolute for files kept in the data dir).
    file: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(Integer, default=0)
    mtime: Mapped[float] = mapped_column(Float, default=0.0)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_ts: Mapped[float] = mapped_column(Float)
    # True once a ``final`` label exists: next-sample only looks at completed == False.
    completed: Mapped[bool] = mapped_column(default=False)
    # 0.0 = never served; next-sample prefers never-served, then least recently served.
    last_served_ts: Mapped[float] = mapped_column(Float, default=0.0)
    # A fixed random key so "random among the never-served" is one indexed range query.
    rand_key: Mapped[float] = mapped_column(Float, default=0.0)
    lease_client: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_expires: Mapped[float] = mapped_column(Float, default=0.0)

    labels: Mapped[list[Label]] = relationship(back_populates="image", cascade="all, delete-orphan")

    __table_args__ = (
        Index("ix_images_next_random", "completed", "last_served_ts", "rand_key"),
        Index("ix_images_next_id", "completed", "id"),
        Index("ix_images_lease", "lease_expires"),
    )


class Label(Base):
    """One label of an image under a tag (``final`` is ground truth, ``original`` a prediction)."""

    __tablename__ = "labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    tag: Mapped[str] = mapped_column(String(64), index=True)
    ext: Mapped[str] = mapped_column(String(32))
    file: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(Integer, default=0)
    mtime: Mapped[float] = mapped_column(Float, default=0.0)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ts: Mapped[float] = mapped_column(Float)

    image: Mapped[Image] = relationship(back_populates="labels")

    __table_args__ = (UniqueConstraint("image_id", "tag", name="uq_labels_image_tag"),)


class Assignment(Base):
    """The last time a strategy served an image, and to whom (MONAI Label's ``info.strategy``)."""

    __tablename__ = "assignments"

    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    strategy: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    ts: Mapped[float] = mapped_column(Float)


class Score(Base):
    """An active-learning score of an image by one method under one model version."""

    __tablename__ = "scores"

    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    method: Mapped[str] = mapped_column(String(128), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    ts: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_scores_rank", "method", "model_version", "value"),)


class Embedding(Base):
    """A per-image feature vector (e.g. the bottleneck's pooled features) under one model version.

    ``vector`` holds ``dim`` little-endian float32 values. A scoring job replaces an image's vectors of
    the same model's older versions, so the table holds about one row per image and model.
    """

    __tablename__ = "embeddings"

    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(128), primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    ts: Mapped[float] = mapped_column(Float)

    # ``ts``: "the latest model version" is the newest row, found without a scan.
    __table_args__ = (Index("ix_embeddings_ts", "ts"),)


def pack_vector(values: Sequence[float]) -> bytes:
    """An embedding as stored: little-endian float32 bytes."""
    return np.asarray(values, dtype="<f4").tobytes()


def unpack_vector(blob: bytes) -> list[float]:
    return [float(x) for x in np.frombuffer(blob, dtype="<f4")]


class Session(Base):
    """An uploaded volume held for a while (Slicer's local volumes), swept when expired."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(1024))
    image: Mapped[str] = mapped_column(String(1024))
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    create_ts: Mapped[float] = mapped_column(Float)
    last_access_ts: Mapped[float] = mapped_column(Float)
    expiry: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
