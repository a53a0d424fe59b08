"""Health for orchestration: is the process alive, and is it ready (its database answers)? What else is
down (the job queue, the embedded consumer, the DICOM listener, the DICOMweb source) is reported, and
does not make the server unready: annotators can keep working while a PACS or a worker is away. While
the app loads after a restart (``/info/`` answers already) the server is not ready yet."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from server.services import Services


def readiness(services: Services) -> tuple[bool, dict[str, Any]]:
    """``(ready, {"status", "checks": {part: "up" | "down: why"}})``."""
    checks: dict[str, str] = {"database": _database(services), "job_queue": _queue(services)}
    if services.consumer is not None:
        code = services.consumer.poll()
        checks["job_consumer"] = "up" if code is None else f"down: exited with {code}"
    loaded = services.ready.is_set()
    checks["app"] = (
        "loading" if not loaded else (f"down: {services.load_error}" if services.load_error else "up")
    )
    if loaded and services.load_error is None and services.dicom is not None:
        checks.update(services.dicom.health())
    ready = checks["database"] == "up" and checks["app"] == "up"
    degraded = any(v != "up" for v in checks.values())
    status = "ok" if not degraded else ("degraded" if ready else "unavailable")
    return ready, {"status": status, "checks": checks}


def _database(services: Services) -> str:
    try:
        with services.db.session() as s:
            s.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return f"down: {type(exc).__name__}"
    return "up"


def _queue(services: Services) -> str:
    try:
        services.queue.huey.pending_count()
    except Exception as exc:  # any backend's connection error (Redis, SQLite)
        return f"down: {type(exc).__name__}"
    return "up"
