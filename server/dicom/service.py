"""``DicomService``: the Storage SCP, the series converter, the DICOMweb prefetcher and the SEG exporter,
wired from the settings (by :func:`server.services.build_services`). Each worker is a thread it owns."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select, update

from server.appspec import AppSpec
from server.database import Database
from server.datastore.store import Datastore
from server.dicom.batch_index import IndexBatcher
from server.dicom.dicomweb import DicomWebSource, Prefetcher
from server.dicom.export import Node, SegExporter
from server.dicom.incoming import IncomingStore, is_uid
from server.dicom.listener import StorageSCP, check_aet, parse_allowlist
from server.dicom.models import DicomExport, DicomSeries, SeriesState
from server.dicom.proxy import DicomWebProxy
from server.dicom.series import SeriesConverter
from server.errors import BadRequest, NotFound, Unavailable
from server.settings import Settings

log = logging.getLogger(__name__)


class DicomService:
    def __init__(self, settings: Settings, db: Database, datastore: Datastore, spec: AppSpec) -> None:
        """Build every part the settings ask for; nothing runs until :meth:`start`. The SEG exporter
        follows the datastore's final labels once :meth:`observe` hooks it up."""
        aet = check_aet(settings.dicom_aet)
        allow = parse_allowlist(settings.dicom_allow)
        node = Node.parse(settings.dicom_export_node) if settings.dicom_export_node else None
        self.db = db
        self.datastore = datastore
        self.incoming = IncomingStore(db, settings.data / "dicom")
        self.converter = SeriesConverter(
            db, self.incoming, datastore, settings.dicom_series_idle_seconds, settings.dicomweb_url
        )
        self.scp: StorageSCP | None = None
        self.source: DicomWebSource | None = None
        self.prefetcher: Prefetcher | None = None
        self.proxy: DicomWebProxy | None = None  # /proxy/dicom/ for viewers
        self.source_error: str | None = None  # what the start-up probe of the DICOMweb source found
        if settings.dicom_port > 0:
            self.incoming.batcher = IndexBatcher(self.incoming)
            self.scp = StorageSCP(
                self.incoming, aet=aet, host=settings.host, port=settings.dicom_port, allow=allow
            )
        if settings.dicomweb_url:
            self.source = DicomWebSource(settings.dicomweb_url, db, self.incoming)
            self.source_error = self.source.probe()
            if self.source_error:
                log.warning("%s; starting anyway, the prefetcher retries", self.source_error)
            prefixes = {
                "qido": settings.dicomweb_qido_prefix,
                "wado": settings.dicomweb_wado_prefix,
                "stow": settings.dicomweb_stow_prefix,
            }
            self.proxy = DicomWebProxy(settings.dicomweb_url, prefixes)
            self.prefetcher = Prefetcher(
                self.source,
                db,
                ahead=max(1, settings.dicomweb_prefetch),
                sync_seconds=settings.dicomweb_sync_seconds,
                on_fetched=self.converter.wake,
            )
        self.exporter = SegExporter(
            db,
            datastore,
            self.incoming,
            calling_aet=aet,
            node=node,
            dicomweb_url=settings.dicomweb_url,
            app_labels=spec.all_labels,
        )
        self._started = False

    def observe(self) -> None:
        """Export each final label saved from now on as a DICOM SEG (of a study that came from DICOM)."""
        self.datastore.on_label_saved.append(self.exporter.on_label_saved)

    def start(self) -> None:
        if self._started:
            return
        self.converter.start()
        self.exporter.start()
        if self.prefetcher is not None:
            self.prefetcher.start()
        if self.scp is not None:
            if self.incoming.batcher is not None:
                self.incoming.batcher.start()
            self.scp.start()
        self._started = True

    def stop(self) -> None:
        """Stop accepting associations first, then let the workers finish their current item."""
        if not self._started:
            self.converter.stop()  # its conversion process may run without the thread (tests)
            return
        self._started = False
        if self.scp is not None:
            self.scp.stop()
        if self.incoming.batcher is not None:
            self.incoming.batcher.stop()  # after the SCP: every acknowledged instance gets its row
        for worker in (self.prefetcher, self.converter, self.exporter):
            if worker is not None:
                worker.stop()
        self.incoming.close()
        log.info("DICOM service stopped")

    # ---- what the REST layer asks ----------------------------------------------------------------
    def _settle(self, timeout: float = 5.0) -> None:
        """Commit the rows the listener has acknowledged but not indexed yet (group commit lets them
        wait up to ``linger_seconds``), so a sender that got Success finds its series here at once.
        A database that is down makes this give up after ``timeout``; the answer is then what is
        committed."""
        batcher = self.incoming.batcher
        if batcher is not None and batcher.running and batcher.backlog:
            batcher.flush(timeout)

    def health(self) -> dict[str, str]:
        """``{part: "up" | "down: why"}`` for the listener and the DICOMweb source."""
        out: dict[str, str] = {}
        if self.scp is not None:
            out["dicom_listener"] = "up" if self.scp.running or not self._started else "down: not listening"
        if self.source is not None and self.prefetcher is not None:
            last = self.prefetcher.last_sync
            if last.get("error"):
                out["dicomweb"] = f"down: the last QIDO sync failed ({last['error'][:200]})"
            elif not last and self.source_error:
                out["dicomweb"] = f"down: {self.source_error}"
            else:
                out["dicomweb"] = "up"
        return out

    def status(self) -> dict[str, Any]:
        with self.db.sessions() as s:
            series = {
                state: n
                for state, n in s.execute(select(DicomSeries.state, func.count()).group_by(DicomSeries.state))
            }
            exports = {
                status: n
                for status, n in s.execute(
                    select(DicomExport.status, func.count()).group_by(DicomExport.status)
                )
            }
            instances = s.scalar(select(func.coalesce(func.sum(DicomSeries.n_instances), 0)))
        out: dict[str, Any] = {
            "series": series,
            "instances": int(instances or 0),
            "exports": exports,
            "listener": None,
            "dicomweb": None,
        }
        if self.scp is not None:
            batcher = self.incoming.batcher
            out["listener"] = {
                "aet": self.scp.aet,
                "host": self.scp.host,
                "port": self.scp.port,
                "running": self.scp.running,
                "allowlist": bool(self.scp.allow),
                # received and safe on disk, row not committed yet (normally 0; grows if the db is down)
                "index_backlog": batcher.backlog if batcher is not None else 0,
            }
        if self.source is not None and self.prefetcher is not None:
            out["dicomweb"] = {
                "url": self.source.url,
                "prefetch": self.prefetcher.ahead,
                "last_sync": self.prefetcher.last_sync,
            }
        return out

    def list_series(
        self, state: str | None, source: str | None, after: str | None, limit: int
    ) -> dict[str, Any]:
        limit = max(1, min(limit, 1000))
        self._settle()
        with self.db.sessions() as s:
            q = select(DicomSeries).order_by(DicomSeries.series_uid).limit(limit + 1)
            count = select(func.count()).select_from(DicomSeries)
            if state:
                q, count = q.where(DicomSeries.state == state), count.where(DicomSeries.state == state)
            if source:
                q, count = q.where(DicomSeries.source == source), count.where(DicomSeries.source == source)
            if after:
                q = q.where(DicomSeries.series_uid > after)
            rows = list(s.scalars(q))
            total = s.scalar(count) or 0
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "total": total,
            "items": [_series_dict(r) for r in rows],
            "next": rows[-1].series_uid if more else None,
        }

    def series(self, uid: str) -> dict[str, Any]:
        _check_uid(uid)
        self._settle()
        with self.db.sessions() as s:
            row = s.get(DicomSeries, uid)
            if row is None:
                raise NotFound(f"DICOM series not found: {uid}")
            exports = list(
                s.scalars(select(DicomExport).where(DicomExport.image_id == uid).order_by(DicomExport.id))
            )
            out = _series_dict(row)
        out["exports"] = [_export_dict(e) for e in exports]
        return out

    def request_fetch(self, uid: str) -> dict[str, Any]:
        """Put a DICOMweb series at the head of the download queue (it never runs in the request)."""
        _check_uid(uid)
        if self.prefetcher is None:
            raise Unavailable("no DICOMweb source is configured (--dicomweb URL)")
        with self.db.session() as s:
            row = s.get(DicomSeries, uid)
            if row is None:
                raise NotFound(f"DICOM series not found: {uid}")
            if row.source != "dicomweb":
                raise BadRequest(f"series {uid} came by C-STORE, not from DICOMweb")
            s.execute(
                update(DicomSeries)
                .where(
                    DicomSeries.series_uid == uid,
                    DicomSeries.state.in_([SeriesState.REMOTE, SeriesState.ERROR]),
                )
                .values(state=SeriesState.REMOTE, priority=1, attempts=0)
            )
        self.prefetcher.wake()
        return self.series(uid)

    def request_sync(self) -> dict[str, Any]:
        if self.prefetcher is None:
            raise Unavailable("no DICOMweb source is configured (--dicomweb URL)")
        self.prefetcher.request_sync()
        return {"queued": True, "last_sync": self.prefetcher.last_sync}


def _check_uid(uid: str) -> None:
    if not is_uid(uid):
        raise BadRequest(f"not a DICOM UID: {uid!r}")


def _series_dict(row: DicomSeries) -> dict[str, Any]:
    return {
        "SeriesInstanceUID": row.series_uid,
        "StudyInstanceUID": row.study_uid,
        "PatientID": row.patient_id,
        "Modality": row.modality,
        "StudyDate": row.study_date,
        "SeriesDescription": row.description,
        "source": row.source,
        "state": row.state,
        "instances": row.n_instances,
        "remote_instances": row.remote_instances,
        "error": row.error,
        "image": row.series_uid if row.state == SeriesState.READY else None,
        "labels_series": row.referenced_series_uid,
    }


def _export_dict(e: DicomExport) -> dict[str, Any]:
    return {
        "id": e.id,
        "status": e.status,
        "attempts": e.attempts,
        "destinations": [d for d in e.destinations.split(",") if d],
        "seg_series_uid": e.seg_series_uid,
        "seg_sop_uid": e.seg_sop_uid,
        "error": e.error,
        "created_ts": int(e.created_ts),
        "updated_ts": int(e.updated_ts),
    }
