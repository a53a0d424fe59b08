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
    # Distinct annotators with a final label of this study (two for a study of the overlap share).
    readings: Mapped[int] = mapped_column(Integer, default=0)

    labels: Mapped[list[Label]] = relationship(back_populates="image", cascade="all, delete-orphan")

    __table_args__ = (
        Index("ix_images_next_random", "completed", "last_served_ts", "rand_key"),
        Index("ix_images_next_id", "completed", "id"),
        Index("ix_images_lease", "lease_expires"),
        Index("ix_images_rand", "completed", "rand_key"),  # audit picks: at random, served or not
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
    # The ``LabelVersion.number`` this row points at (0: a file found on disk, not yet versioned).
    version: Mapped[int] = mapped_column(Integer, default=0)
    # Review state, indexed: what the Reviewer plugin writes as ``segmentationMeta`` (server/team/review.py).
    review_status: Mapped[str] = mapped_column(String(16), default="")
    reviewed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    review_level: Mapped[str] = mapped_column(String(16), default="")
    review_ts: Mapped[float] = mapped_column(Float, default=0.0)

    image: Mapped[Image] = relationship(back_populates="labels")

    __table_args__ = (
        UniqueConstraint("image_id", "tag", name="uq_labels_image_tag"),
        Index("ix_labels_review", "review_status"),
    )


class LabelVersion(Base):
    """Every label ever saved: a row and an immutable file. ``Label`` points at the current one."""

    __tablename__ = "label_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    tag: Mapped[str] = mapped_column(String(64))
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per image and tag
    ext: Mapped[str] = mapped_column(String(32))
    file: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(Integer, default=0)
    # Who: a user (auth on), a client id (auth off), or none (a model, a job).
    author: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # What: annotator, model (a pre-annotation), pseudo, adjudication, restore, imported.
    source: Mapped[str] = mapped_column(String(32))
    model_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    ts: Mapped[float] = mapped_column(Float)
    served_ts: Mapped[float | None] = mapped_column(Float, nullable=True)  # when the study was handed out
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        UniqueConstraint("image_id", "tag", "number", name="uq_label_versions_number"),
        Index("ix_label_versions_author", "author", "tag"),
    )


class Agreement(Base):
    """How far two annotators' independent labels of one study agree, per label index."""

    __tablename__ = "agreements"

    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    label: Mapped[int] = mapped_column(Integer, primary_key=True)
    author_a: Mapped[str] = mapped_column(String(255), primary_key=True)
    author_b: Mapped[str] = mapped_column(String(255), primary_key=True)
    version_a: Mapped[int] = mapped_column(Integer)
    version_b: Mapped[int] = mapped_column(Integer)
    dice: Mapped[float] = mapped_column(Float)
    surface_mm: Mapped[float | None] = mapped_column(Float, nullable=True)  # mean symmetric surface distance
    ts: Mapped[float] = mapped_column(Float)


class ModelCheck(Base):
    """The model measured against a study's final label: ``audit`` (the study was an audit pick: the
    current model's prediction, scored before any training used the label) or ``preannotation`` (the
    model's stored pre-annotation, i.e. how much the annotator corrected)."""

    __tablename__ = "model_checks"

    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[int] = mapped_column(Integer)
    final_labels: Mapped[int] = mapped_column(Integer)  # final labels in the datastore at the time
    dice: Mapped[float] = mapped_column(Float)  # mean over the labels present in either volume
    per_label: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ts: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_model_checks_kind", "kind", "model", "model_version"),)


class User(Base):
    """A person: admin, reviewer, annotator or viewer (server/team/roles.py)."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(default=False)
    created_ts: Mapped[float] = mapped_column(Float)


class ApiToken(Base):
    """A login's bearer token, stored as its SHA-256 (the token itself is only ever in the reply)."""

    __tablename__ = "api_tokens"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name", ondelete="CASCADE"), index=True)
    created_ts: Mapped[float] = mapped_column(Float)
    expires_ts: Mapped[float] = mapped_column(Float, index=True)


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

    # ``ix_scores_latest``: a strategy's "the latest version scored by this method" without a scan (it
    # was a sort of every score on each next-sample: 12 ms at 100k studies on PostgreSQL).
    __table_args__ = (
        Index("ix_scores_rank", "method", "model_version", "value"),
        Index("ix_scores_latest", "method", "ts"),
    )


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


class Click(Base):
    """One interactive call's clicks on a study: who, when, with which model version, and the label they
    led to (``label_tag``/``label_version``, set when that author next saves the study's final label)."""

    __tablename__ = "clicks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[int] = mapped_column(Integer)
    author: Mapped[str | None] = mapped_column(String(255), nullable=True)
    label_name: Mapped[str | None] = mapped_column(String(128), nullable=True)  # the segment worked on
    points: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # label name -> [[i, j, k], ...]
    count: Mapped[int] = mapped_column(Integer)
    ts: Mapped[float] = mapped_column(Float)
    label_tag: Mapped[str | None] = mapped_column(String(64), nullable=True)
    label_version: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (Index("ix_clicks_image", "image_id", "label_version"),)


class Skip(Base):
    """A study an annotator set aside as unreadable: a reason, never a label. While the row exists the
    study is out of the pool (``Image.completed``); strategies learn from it (``CandidatePool.skipped``)."""

    __tablename__ = "skips"

    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    author: Mapped[str | None] = mapped_column(String(255), nullable=True)
    reason: Mapped[str] = mapped_column(String(500))
    ts: Mapped[float] = mapped_column(Float)
