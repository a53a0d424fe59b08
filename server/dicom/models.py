"""Rows for DICOM instances, series and SEG exports (migration ``0003``). The files stay on disk."""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.models import Base


class SeriesState:
    """A series' life: remote -> fetching -> pending, or receiving -> pending; then converting -> ready."""

    REMOTE = "remote"  # known from a QIDO search, not downloaded
    FETCHING = "fetching"  # being downloaded (back to remote after a restart)
    RECEIVING = "receiving"  # instances arriving by C-STORE; pending once idle
    PENDING = "pending"  # complete, waiting for conversion
    CONVERTING = "converting"  # being converted (back to pending after a restart)
    READY = "ready"  # a datastore image
    ERROR = "error"  # conversion or download failed: see ``error``
    IGNORED = "ignored"  # no image to convert (SEG, SR, RTSTRUCT ...)


class ExportState:
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    ERROR = "ERROR"


class DicomSeries(Base):
    __tablename__ = "dicom_series"

    series_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    study_date: Mapped[str] = mapped_column(String(16), default="")
    study_time: Mapped[str] = mapped_column(String(32), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    source: Mapped[str] = mapped_column(String(16))  # "scp" or "dicomweb"
    state: Mapped[str] = mapped_column(String(16))
    n_instances: Mapped[int] = mapped_column(Integer, default=0)
    remote_instances: Mapped[int] = mapped_column(Integer, default=0)  # QIDO's count, for remote series
    last_instance_ts: Mapped[float] = mapped_column(Float, default=0.0)
    created_ts: Mapped[float] = mapped_column(Float)
    updated_ts: Mapped[float] = mapped_column(Float)
    priority: Mapped[int] = mapped_column(Integer, default=0)  # higher is fetched first
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # For SEG series: the series they label (a remote series with a SEG counts as labelled).
    referenced_series_uid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)

    __table_args__ = (
        Index("ix_dicom_series_state", "state", "last_instance_ts"),
        Index("ix_dicom_series_fetch", "source", "state", "priority", "created_ts"),
    )


class DicomInstance(Base):
    __tablename__ = "dicom_instances"

    sop_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    series_uid: Mapped[str] = mapped_column(
        ForeignKey("dicom_series.series_uid", ondelete="CASCADE"), index=True
    )
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    file: Mapped[str] = mapped_column(String(512))  # relative to <data>/dicom
    size: Mapped[int] = mapped_column(Integer)
    received_ts: Mapped[float] = mapped_column(Float)
    calling_aet: Mapped[str | None] = mapped_column(String(16), nullable=True)


class DicomExport(Base):
    """One DICOM SEG export of a ``final`` label: a job row (ERROR is never recorded as DONE)."""

    __tablename__ = "dicom_exports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(String(255), index=True)
    label_ts: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), index=True)
    destinations: Mapped[str] = mapped_column(String(1024), default="")
    seg_series_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seg_sop_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    file: Mapped[str | None] = mapped_column(String(512), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_ts: Mapped[float] = mapped_column(Float)
    updated_ts: Mapped[float] = mapped_column(Float)
