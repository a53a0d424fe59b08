"""A DICOMweb PACS as the studies source. QIDO results are cached as ``dicom_series`` rows
(``source = "dicomweb"``); a prefetch worker keeps the next few unlabelled, unleased, never-served
series downloaded (WADO-RS) and converted, so next-sample only ever picks volumes that are already here.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import requests
from pydicom import Dataset, dcmwrite
from requests import RequestException
from sqlalchemy import and_, exists, func, insert, select, update
from sqlalchemy.orm import aliased

from server.database import Database
from server.dicom.convert import NON_IMAGE_MODALITIES
from server.dicom.incoming import IncomingStore, InstanceMeta, is_uid
from server.dicom.models import DicomSeries, SeriesState
from server.dicom.worker import Worker
from server.models import Image

log = logging.getLogger(__name__)

MAX_FETCH_ATTEMPTS = 3
RETRY_SECONDS = 10.0  # after a failed QIDO sync, the next try
QIDO_FIELDS = [
    "PatientID",
    "StudyDate",
    "StudyTime",
    "SeriesDescription",
    "NumberOfSeriesRelatedInstances",
]


def _value(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or []
    if not values:
        return ""
    first = values[0]
    if isinstance(first, dict):  # a person name
        return str(first.get("Alphabetic", ""))
    return str(first)


class DicomWebSource:
    def __init__(self, url: str, db: Database, incoming: IncomingStore, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.db, self.incoming, self.timeout = db, incoming, timeout

    def client(self, timeout: float | None = None) -> Any:
        from dicomweb_client import DICOMwebClient

        return DICOMwebClient(url=self.url, timeout=timeout or self.timeout)

    def probe(self, timeout: float = 3.0) -> str | None:
        """None when the URL answers QIDO, else what went wrong and what to check. One plain request
        (the DICOMweb client retries for half a minute): a source that is down does not hold up the
        start; the prefetcher keeps trying, and the health route says so."""
        try:
            resp = requests.get(
                f"{self.url}/studies",
                params={"limit": "1"},
                headers={"Accept": "application/dicom+json"},
                timeout=timeout,
            )
            resp.raise_for_status()
        except (RequestException, ValueError) as exc:
            return (
                f"DICOMweb {self.url} does not answer QIDO-RS ({type(exc).__name__}); check the URL "
                "(e.g. http://host:8042/dicom-web) and that the PACS is running"
            )
        return None

    # ---- QIDO: the catalogue -----------------------------------------------------------------
    def sync(self) -> dict[str, int]:
        """Search every series and cache it; a SEG's referenced series is read once and kept."""
        client = self.client()
        found = client.search_for_series(fields=QIDO_FIELDS, get_remaining=True)
        now = time.time()
        rows: dict[str, dict[str, Any]] = {}
        for item in found:
            series, study = _value(item, "0020000E"), _value(item, "0020000D")
            if not (is_uid(series) and is_uid(study)):
                continue
            count = _value(item, "00201209")
            modality = _value(item, "00080060")[:16]
            rows[series] = {
                "series_uid": series,
                "study_uid": study,
                "patient_id": _value(item, "00100020")[:64],
                "modality": modality,
                "study_date": _value(item, "00080020")[:16],
                "study_time": _value(item, "00080030")[:32],
                "description": _value(item, "0008103E")[:255],
                "remote_instances": int(count) if count.isdigit() else 0,
            }
        with self.db.session() as s:
            known = {
                uid: (state, n)
                for uid, state, n in s.execute(
                    select(DicomSeries.series_uid, DicomSeries.state, DicomSeries.n_instances)
                )
            }
            new = [r for uid, r in rows.items() if uid not in known]
            if new:
                s.execute(
                    insert(DicomSeries),
                    [
                        {
                            **r,
                            "source": "dicomweb",
                            "state": SeriesState.IGNORED
                            if r["modality"].upper() in NON_IMAGE_MODALITIES
                            else SeriesState.REMOTE,
                            "n_instances": 0,
                            "last_instance_ts": 0.0,
                            "created_ts": now,
                            "updated_ts": now,
                            "priority": 0,
                            "attempts": 0,
                        }
                        for r in new
                    ],
                )
            grown = [
                uid
                for uid, r in rows.items()
                if uid in known
                and known[uid][0] == SeriesState.READY
                and r["remote_instances"] > known[uid][1]
            ]
            if grown:  # the PACS has more instances than we converted: fetch the series again
                s.execute(
                    update(DicomSeries)
                    .where(DicomSeries.series_uid.in_(grown))
                    .values(state=SeriesState.REMOTE, updated_ts=now)
                )
        segs = [r for r in new if r["modality"].upper() == "SEG"]
        for r in segs:
            self._read_reference(client, r["study_uid"], r["series_uid"])
        return {"series": len(rows), "new": len(new), "refetch": len(grown), "seg": len(segs)}

    def _read_reference(self, client: Any, study: str, series: str) -> None:
        try:
            metadata = client.retrieve_series_metadata(study, series)
        except (RequestException, ValueError) as exc:
            log.warning("SEG %s: metadata not readable: %s", series, exc)
            return
        for instance in metadata[:1]:
            for ref in instance.get("00081115", {}).get("Value", []):
                referenced = _value(ref, "0020000E")
                if is_uid(referenced):
                    with self.db.session() as s:
                        s.execute(
                            update(DicomSeries)
                            .where(DicomSeries.series_uid == series)
                            .values(referenced_series_uid=referenced)
                        )
                    return

    # ---- WADO: one series -----------------------------------------------------------------------
    def fetch(self, series_uid: str) -> int:
        """Download a FETCHING series into the incoming store; returns the number of instances."""
        with self.db.sessions() as s:
            study = s.scalar(select(DicomSeries.study_uid).where(DicomSeries.series_uid == series_uid))
        if study is None:
            raise ValueError(f"unknown series {series_uid}")
        count = 0
        for ds in self.client().iter_series(study, series_uid):
            self.incoming.put(_encode(ds), InstanceMeta.from_dataset(ds), source="dicomweb", receiving=False)
            count += 1
        if count == 0:
            raise ValueError("the series has no instances")
        return count


def _encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


class Prefetcher(Worker):
    """Keeps ``ahead`` DICOMweb series ready (converted, unlabelled, unleased, never served)."""

    name = "dicomweb-prefetch"

    def __init__(
        self,
        source: DicomWebSource,
        db: Database,
        *,
        ahead: int,
        sync_seconds: float,
        on_fetched: Any,
    ) -> None:
        super().__init__(poll_seconds=1.0)
        self.source, self.db = source, db
        self.ahead, self.sync_seconds = ahead, sync_seconds
        self.on_fetched = on_fetched
        self._next_sync = 0.0
        self.last_sync: dict[str, Any] = {}

    def request_sync(self) -> None:
        self._next_sync = 0.0
        self.wake()

    def on_start(self) -> None:
        with self.db.session() as s:
            s.execute(
                update(DicomSeries)
                .where(DicomSeries.state == SeriesState.FETCHING)
                .values(state=SeriesState.REMOTE)
            )

    def step(self) -> bool:
        now = time.time()
        if now >= self._next_sync:
            self._next_sync = now + self.sync_seconds
            try:
                report = self.source.sync()
                self.last_sync = {"ts": int(now), **report}
                log.info("DICOMweb QIDO sync: %s", report)
            except (RequestException, ValueError) as exc:
                self.last_sync = {"ts": int(now), "error": str(exc)}
                self._next_sync = now + min(self.sync_seconds, RETRY_SECONDS)  # a PACS that comes back
                log.warning("DICOMweb QIDO sync failed: %s", exc)
        uid = self.pick(now)
        if uid is None:
            return False
        self.fetch(uid)
        return True

    def ready(self, now: float) -> int:
        """Series on their way (fetching, converting) plus converted ones nobody has been served yet."""
        with self.db.sessions() as s:
            in_flight = s.scalar(
                select(func.count())
                .select_from(DicomSeries)
                .where(
                    DicomSeries.source == "dicomweb",
                    DicomSeries.state.in_(
                        [SeriesState.FETCHING, SeriesState.PENDING, SeriesState.CONVERTING]
                    ),
                )
            )
            waiting = s.scalar(
                select(func.count())
                .select_from(Image)
                .join(DicomSeries, DicomSeries.series_uid == Image.id)
                .where(
                    DicomSeries.source == "dicomweb",
                    Image.completed.is_(False),
                    Image.last_served_ts == 0.0,
                    Image.lease_expires <= now,
                )
            )
        return int(in_flight or 0) + int(waiting or 0)

    def pick(self, now: float) -> str | None:
        seg = aliased(DicomSeries)
        labelled = exists().where(seg.referenced_series_uid == DicomSeries.series_uid)
        remote = and_(DicomSeries.source == "dicomweb", DicomSeries.state == SeriesState.REMOTE, ~labelled)
        with self.db.session() as s:
            uid = s.scalar(
                select(DicomSeries.series_uid)
                .where(remote, DicomSeries.priority > 0)
                .order_by(DicomSeries.priority.desc(), DicomSeries.created_ts)
                .limit(1)
            )
            if uid is None and self.ready(now) < self.ahead:
                uid = s.scalar(
                    select(DicomSeries.series_uid)
                    .where(remote)
                    .order_by(DicomSeries.priority.desc(), DicomSeries.created_ts, DicomSeries.series_uid)
                    .limit(1)
                )
            if uid is None:
                return None
            claimed = s.execute(
                update(DicomSeries)
                .where(DicomSeries.series_uid == uid, DicomSeries.state == SeriesState.REMOTE)
                .values(state=SeriesState.FETCHING, updated_ts=now)
                .execution_options(synchronize_session=False)
            )
            return uid if claimed.rowcount == 1 else None  # type: ignore[attr-defined]

    def fetch(self, uid: str) -> None:
        t0 = time.perf_counter()
        try:
            count = self.source.fetch(uid)
        except Exception as exc:  # the PACS, the network, a bad instance, or a bug: counted, retried, bounded
            log.warning("fetching series %s failed: %s", uid, exc)
            with self.db.session() as s:
                row = s.get(DicomSeries, uid)
                if row is not None:
                    row.attempts += 1
                    row.error = f"fetch failed: {exc}"
                    gave_up = row.attempts >= MAX_FETCH_ATTEMPTS
                    row.state = SeriesState.ERROR if gave_up else SeriesState.REMOTE
                    row.priority = 0
            return
        with self.db.session() as s:
            s.execute(
                update(DicomSeries)
                .where(DicomSeries.series_uid == uid, DicomSeries.state == SeriesState.FETCHING)
                .values(state=SeriesState.PENDING, priority=0, error=None, updated_ts=time.time())
            )
        log.info("fetched series %s: %d instances in %.2fs", uid, count, time.perf_counter() - t0)
        self.on_fetched()
