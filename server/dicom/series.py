"""Series to datastore images: a series is complete once no instance has arrived for the idle timeout;
then a background worker converts it to a NIfTI volume and adds it as image ``<SeriesInstanceUID>``.

All state is in ``dicom_series``: a restart re-queues what was converting, and a series that gets a new
instance while it converts goes back to RECEIVING and is converted again once idle.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from server.database import Database
from server.datastore.store import Datastore
from server.dicom.convert import ConversionError, NothingToConvert, load_series, write_nifti
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
    ) -> None:
        super().__init__(poll_seconds=max(0.05, min(1.0, idle_seconds / 4)))
        self.db, self.incoming, self.datastore = db, incoming, datastore
        self.idle_seconds = idle_seconds
        self.retrieve_url = retrieve_url.rstrip("/")

    def on_start(self) -> None:
        with self.db.session() as s:
            s.execute(
                update(DicomSeries)
                .where(DicomSeries.state == SeriesState.CONVERTING)
                .values(state=SeriesState.PENDING)
            )
        swept = self.incoming.sweep_temporaries()
        if swept:
            log.info("removed %d temporary files left by an earlier run", swept)

    def step(self) -> bool:
        self.close_idle(time.time())
        uid = self._claim()
        if uid is None:
            return False
        self.convert(uid)
        return True

    def close_idle(self, now: float) -> int:
        """RECEIVING series quiet for the idle timeout become PENDING."""
        with self.db.session() as s:
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
        with self.db.session() as s:
            uid = s.scalar(
                select(DicomSeries.series_uid)
                .where(DicomSeries.state == SeriesState.PENDING)
                .order_by(DicomSeries.last_instance_ts)
                .limit(1)
            )
            if uid is None:
                return None
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
        paths = [self.incoming.path_of(f) for f in files]
        try:
            volume = load_series(paths)
        except NothingToConvert as exc:
            return self._finish(uid, SeriesState.IGNORED, str(exc))
        except ConversionError as exc:
            log.warning("series %s does not convert: %s", uid, exc)
            return self._finish(uid, SeriesState.ERROR, str(exc))
        info: dict[str, Any] = image_info(row)
        info.update(
            {
                "spacing": [round(v, 6) for v in volume.spacing],
                "instances": len(volume.sop_uids),
                "dicom_source": row.source,
            }
        )
        if volume.warnings:
            info["warnings"] = volume.warnings
        if row.source == "dicomweb" and self.retrieve_url:
            info["RetrieveURL"] = f"{self.retrieve_url}/studies/{row.study_uid}/series/{uid}"
        tmp: Path = self.datastore.temp_for_image(".nii.gz")
        try:
            write_nifti(volume, tmp)
            self.datastore.add_image(uid, tmp, ".nii.gz", info)
        except (OSError, LabelloopError) as exc:
            tmp.unlink(missing_ok=True)
            log.warning("series %s: storing the volume failed: %s", uid, exc)
            return self._finish(uid, SeriesState.ERROR, f"storing the volume failed: {exc}")
        log.info(
            "series %s: %d slices -> image %s in %.2fs",
            uid,
            len(volume.sop_uids),
            list(volume.data.shape),
            time.perf_counter() - t0,
        )
        return self._finish(uid, SeriesState.READY, None)

    def _finish(self, uid: str, state: str, error: str | None) -> str:
        """CONVERTING -> ``state``, unless a new instance arrived meanwhile (then it stays RECEIVING)."""
        with self.db.session() as s:
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
