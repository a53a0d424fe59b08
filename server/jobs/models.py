"""The ``jobs`` table: one row per background job, the only place a job's state lives."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.models import Base

SUBMITTED = "SUBMITTED"
RUNNING = "RUNNING"
DONE = "DONE"
ERROR = "ERROR"
STOPPED = "STOPPED"
ACTIVE = (SUBMITTED, RUNNING)
TERMINAL = (DONE, ERROR, STOPPED)

DETAIL_LINES = 20  # the task's ``details``: the last lines of the job's output, as MONAI Label keeps


class Job(Base):
    """A background job. Status moves SUBMITTED -> RUNNING -> DONE | ERROR | STOPPED by compare-and-set
    updates, so a terminal status is never overwritten (an ERROR never turns into DONE)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid4
    kind: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))  # the trainer / model the job is for
    status: Mapped[str] = mapped_column(String(16))
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_ts: Mapped[float] = mapped_column(Float)  # submitted (the task's ``start_ts``)
    start_ts: Mapped[float | None] = mapped_column(Float, nullable=True)  # began running
    end_ts: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1
    details: Mapped[list[str]] = mapped_column(JSON, default=list)  # the last DETAIL_LINES output lines
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # train stats, as clients read them
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the version it published
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the job subprocess
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)  # "<kind>@<host>:<consumer pid>"
    heartbeat_ts: Mapped[float] = mapped_column(Float, default=0.0)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # A chunk of a sharded job (server/jobs/shards.py): its parent, its place, which try of that place.
    parent_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    chunk: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        Index("ix_jobs_kind_created", "kind", "created_ts"),
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_chunk", "parent_id", "chunk", "attempt", unique=True),
    )

    def add_detail(self, line: str, *, unless_last: bool = False) -> None:
        """Append a line to ``details``, keeping the last :data:`DETAIL_LINES`; with ``unless_last``, not
        when it is the last line already."""
        lines = list(self.details or [])
        if unless_last and lines and lines[-1] == line:
            return
        self.details = [*lines, line][-DETAIL_LINES:]

    @classmethod
    def new(cls, kind: str, model: str, request: dict[str, Any], status: str = SUBMITTED) -> Job:
        """A fresh row (a new id, now), nothing run yet."""
        return cls(
            id=str(uuid.uuid4()),
            kind=kind,
            model=model,
            status=status,
            request=dict(request),
            created_ts=time.time(),
            progress=0.0,
            details=[],
            stats={},
            result={},
            heartbeat_ts=0.0,
            stop_requested=False,
        )
