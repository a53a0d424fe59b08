"""Series to datastore images: a series is complete once no instance has arrived for the idle timeout;
then a background worker converts it to a NIfTI volume and adds it as image ``<SeriesInstanceUID>``.

All state is in ``dicom_series``: a restart re-queues what was converting, and a series that gets a new
instance while it converts goes back to RECEIVING and is converted again once idle.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from server.database import Database
from server.datastore.store import Datastore
from server.dicom.convert import (
    ConversionError,
    Converted,
    NothingToConvert,
    convert_to_file,
    lower_priority,
)
from server.dicom.incoming import IncomingStore
from server.dicom.models import DicomInstance, DicomSeries, SeriesState
from server.dicom.worker import Worker
from server.errors import LabelloopError

log = logging.getLogger(__name__)


def image_info(row: DicomSeries) -> dict[str, Any]:
    """The DICOM keys OHIF and Slicer read from an image's info (as MONAI Label's DICOMweb datastore)."""
    return {
        "PatientID": row.patient_id,
        "StudyInstanceUID": row.study_uid,
        "SeriesInstanceUID": row.series_uid,
        "Modality": row.modality,
        "StudyDate": row.study_date,
        "StudyTime": row.study_time,
        "SeriesDescription": row.description,
    }


class SeriesConverter(Worker):
    name = "dicom-series"

    def __init__(
        self,
        db: Database,
        incoming: IncomingStore,
        datastore: Datastore,
        idle_seconds: float,
        retrieve_url: str = "",
        *,
        isolate: bool = True,
        max_defer_seconds: float = 60.0,
    ) -> None:
        super().__init__(poll_seconds=max(0.05, min(1.0, idle_seconds / 4)))
        self.db, self.incoming, self.datastore = db, incoming, datastore
        self.idle_seconds = idle_seconds
        self.retrieve_url = retrieve_url.rstrip("/")
        self.isolate = isolate
        self.max_defer_seconds = max_defer_seconds
        self.busy_window = 1.0
        self._pool: ProcessPoolExecutor | None = None

    def on_start(self) -> None:
        with self.db.session() as s:
            s.execute(
                update(DicomSeries)
                .where(DicomSeries.state == SeriesState.CONVERTING)
                .values(state=SeriesState.PENDING)
            )
        swept, indexed = self.incoming.recover()
        if swept or indexed:
            log.info("earlier run: removed %d temporary files, indexed %d received files", swept, indexed)

    def step(self) -> bool:
        now = time.time()
        self.close_idle(now)
        if self._defer(now):
            return False
        uid = self._claim()
        if uid is None:
            return False
        try:
            self.convert(uid)
        except Exception as exc:  # whatever failed, the series ends ERROR with the reason, never CONVERTING
            log.exception("series %s: conversion failed", uid)
            self._finish(uid, SeriesState.ERROR, f"conversion failed: {type(exc).__name__}: {exc}")
        return True

    def _defer(self, now: float) -> bool:
        """Ingest first: while C-STOREs keep arriving, a sender is waiting on every one of them, and a
        conversion (CPU, and disk writes that the per-instance fsyncs then wait behind) slows them
        down. A pending series waits for a quiet second, but never longer than ``max_defer_seconds``."""
        if time.monotonic() - self.incoming.last_receive > self.busy_window:
            return False
        with self.db.sessions() as s:
            oldest = s.scalar(
                select(func.min(DicomSeries.updated_ts)).where(DicomSeries.state == SeriesState.PENDING)
            )
        return oldest is not None and now - float(oldest) < self.max_defer_seconds

    def close_idle(self, now: float) -> int:
        """RECEIVING series quiet for the idle timeout become PENDING.

        A read first: writes share the ingest writer's lock (``incoming.write_lock``), so that the SCP's
        index writes never meet SQLite's busy handler, which sleeps for milliseconds."""
        idle = (DicomSeries.state == SeriesState.RECEIVING) & (
            DicomSeries.last_instance_ts <= now - self.idle_seconds
        )
        with self.db.sessions() as s:
            if s.scalar(select(DicomSeries.series_uid).where(idle).limit(1)) is None:
                return 0
        with self.incoming.write_lock, self.db.session() as s:
            result = s.execute(
                update(DicomSeries)
                .where(
                    DicomSeries.state == SeriesState.RECEIVING,
                    DicomSeries.last_instance_ts <= now - self.idle_seconds,
                )
                .values(state=SeriesState.PENDING, updated_ts=now)
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def _claim(self) -> str | None:
        with self.db.sessions() as s:
            uid = s.scalar(
                select(DicomSeries.series_uid)
                .where(DicomSeries.state == SeriesState.PENDING)
                .order_by(DicomSeries.last_instance_ts)
                .limit(1)
            )
        if uid is None:
            return None
        with self.incoming.write_lock, self.db.session() as s:
            claimed = s.execute(
                update(DicomSeries)
                .where(DicomSeries.series_uid == uid, DicomSeries.state == SeriesState.PENDING)
                .values(state=SeriesState.CONVERTING, updated_ts=time.time())
                .execution_options(synchronize_session=False)
            )
            return uid if claimed.rowcount == 1 else None  # type: ignore[attr-defined]

    def convert(self, uid: str) -> str:
        """Convert one CONVERTING series; returns the state it ends in."""
        t0 = time.perf_counter()
        with self.db.sessions() as s:
            row = s.get(DicomSeries, uid)
            files = list(s.scalars(select(DicomInstance.file).where(DicomInstance.series_uid == uid)))
        if row is None:
            return SeriesState.ERROR
        paths = [str(self.incoming.path_of(f)) for f in files]
        tmp: Path = self.datastore.temp_for_image(".nii.gz")
        try:
            done = self._convert_file(paths, tmp)
        except NothingToConvert as exc:
            tmp.unlink(missing_ok=True)
            return self._finish(uid, SeriesState.IGNORED, str(exc))
        except (ConversionError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            log.warning("series %s does not convert: %s", uid, exc)
            return self._finish(uid, SeriesState.ERROR, str(exc))
        info: dict[str, Any] = image_info(row)
        info.update(
            {
                "shape": list(done.shape),
                "spacing": [round(v, 6) for v in done.spacing],
                "instances": done.instances,
                "dicom_source": row.source,
            }
        )
        if done.warnings:
            info["warnings"] = list(done.warnings)
        if row.source == "dicomweb" and self.retrieve_url:
            info["RetrieveURL"] = f"{self.retrieve_url}/studies/{row.study_uid}/series/{uid}"
        try:
            # check=False: the file was just written from the decoded series (no second full read).
            with self.incoming.write_lock:
                self.datastore.add_image(uid, tmp, ".nii.gz", info, check=False)
        except (OSError, LabelloopError) as exc:
            log.warning("series %s: storing the volume failed: %s", uid, exc)
            return self._finish(uid, SeriesState.ERROR, f"storing the volume failed: {exc}")
        log.info(
            "series %s: %d slices -> image %s in %.2fs",
            uid,
            done.instances,
            list(done.shape),
            time.perf_counter() - t0,
        )
        return self._finish(uid, SeriesState.READY, None)

    def _convert_file(self, paths: list[str], tmp: Path) -> Converted:
        """Convert in a low-priority child process: decoding and compressing a series would otherwise
        hold the GIL that the Storage SCP's threads need (measured: 10k-instance ingest lost half its
        speed to conversions running in a thread)."""
        if not self.isolate:
            return convert_to_file(paths, str(tmp))
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=lower_priority)
        try:
            return self._pool.submit(convert_to_file, paths, str(tmp)).result()
        except BrokenProcessPool as exc:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            raise ConversionError("the conversion process died (out of memory?)") from exc

    def stop(self, timeout: float = 30.0) -> None:
        super().stop(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _finish(self, uid: str, state: str, error: str | None) -> str:
        """CONVERTING -> ``state``, unless a new instance arrived meanwhile (then it stays RECEIVING)."""
        with self.incoming.write_lock, self.db.session() as s:
            values: dict[str, Any] = {"state": state, "error": error, "updated_ts": time.time()}
            if state == SeriesState.ERROR:
                values["attempts"] = DicomSeries.attempts + 1
            result = s.execute(
                update(DicomSeries)
                .where(DicomSeries.series_uid == uid, DicomSeries.state == SeriesState.CONVERTING)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                current = s.scalar(select(DicomSeries.state).where(DicomSeries.series_uid == uid))
                return str(current)
        return state
