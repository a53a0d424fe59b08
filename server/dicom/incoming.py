"""Received instances: written atomically to ``<data>/dicom/incoming/<study>/<series>/<sop>.dcm``,
then indexed. A row exists only for a file that is already safe on disk (fsynced and renamed), and a
failure to write leaves neither a file nor a row behind. The SCP acknowledges an instance once its
file is safe and leaves the row to a group commit (``batch_index``); a file whose row a crash lost is
indexed by ``recover`` at the next start.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID
from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from server.database import Database
from server.dicom.models import DicomInstance, DicomSeries, SeriesState
from server.dicom.scan import scan

if TYPE_CHECKING:
    from server.dicom.batch_index import IndexBatcher

log = logging.getLogger(__name__)

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class Status:
    """C-STORE response statuses (PS3.4 B.2.3): each failure has its own code."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700  # disk or database failure: the sender may retry later
    SOP_CLASS_MISMATCH = 0xA900  # the dataset's SOP Class is not the one the request names
    CANNOT_DECODE = 0xC000  # the bytes do not decode as a dataset (corrupt, truncated)
    MISSING_UIDS = 0xC001  # Study/Series/SOP Instance UID absent or invalid


class IngestError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class IndexRow:
    """What indexing a safe file needs: its header fields, where it is and when it came."""

    meta: InstanceMeta
    relative: str
    size: int
    source: str
    calling_aet: str | None
    receiving: bool
    ts: float


@dataclass(frozen=True)
class InstanceMeta:
    sop_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    patient_id: str = ""
    modality: str = ""
    study_date: str = ""
    study_time: str = ""
    description: str = ""

    @classmethod
    def build(cls, values: dict[str, str]) -> InstanceMeta:
        """From keyword -> text; the four UIDs must be valid (else MISSING_UIDS), texts are cut to fit."""
        for keyword in UID_KEYWORDS:
            if not is_uid(values.get(keyword, "")):
                raise IngestError(
                    Status.MISSING_UIDS,
                    f"{keyword} is missing or not a valid UID: {values.get(keyword, '')!r}",
                )
        return cls(
            sop_uid=values["SOPInstanceUID"],
            sop_class_uid=values["SOPClassUID"],
            study_uid=values["StudyInstanceUID"],
            series_uid=values["SeriesInstanceUID"],
            **{field: values.get(keyword, "")[:limit] for keyword, (field, limit) in TEXT_FIELDS.items()},
        )

    @classmethod
    def from_dataset(cls, ds: Dataset) -> InstanceMeta:
        try:
            values = {k: _text(ds, k) for k in (*UID_KEYWORDS, *TEXT_FIELDS)}
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            raise IngestError(Status.CANNOT_DECODE, f"dataset does not decode: {exc}") from exc
        return cls.build(values)


UID_KEYWORDS = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")
TEXT_FIELDS = {
    "PatientID": ("patient_id", 64),
    "Modality": ("modality", 16),
    "StudyDate": ("study_date", 16),
    "StudyTime": ("study_time", 32),
    "SeriesDescription": ("description", 255),
}
SCAN_KEYS = {
    "SOPInstanceUID": "sop_uid",
    "SOPClassUID": "sop_class_uid",
    "StudyInstanceUID": "study_uid",
    "SeriesInstanceUID": "series_uid",
    "PatientID": "patient_id",
    "Modality": "modality",
    "StudyDate": "study_date",
    "StudyTime": "study_time",
    "SeriesDescription": "description",
}


def read_meta(raw: bytes) -> InstanceMeta:
    """What the handler needs from an instance's bytes: a header scan when the data is plain, else pydicom.

    Both raise the same ``IngestError``s: CANNOT_DECODE for a broken or truncated dataset, MISSING_UIDS.
    """
    found = scan(raw)
    if found is None:
        return InstanceMeta.from_dataset(decode(raw))
    if found.pixels_short:
        raise IngestError(
            Status.CANNOT_DECODE,
            f"pixel data is {found.pixel_bytes} bytes; {found.expected_pixel_bytes} expected",
        )
    return InstanceMeta.build({keyword: found.text(key) for keyword, key in SCAN_KEYS.items()})


def is_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and _UID.match(value) is not None


def decode(raw: bytes) -> Dataset:
    """Parse a DICOM file's bytes; garbled or truncated data raises ``IngestError(CANNOT_DECODE)``.

    pydicom reads every element's tag and length here (values are converted lazily, when used): a
    broken structure fails now, a truncated dataset shows as short pixel data or missing UIDs.
    """
    try:
        ds = dcmread(io.BytesIO(raw))
        _check_pixel_length(ds)
    except IngestError:
        raise
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise IngestError(Status.CANNOT_DECODE, f"dataset does not decode: {exc}") from exc
    return ds


def _check_pixel_length(ds: Dataset) -> None:
    """Native (uncompressed) pixel data must hold every pixel: a short one means truncation."""
    if "PixelData" not in ds or "Rows" not in ds or "Columns" not in ds:
        return
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    if syntax.is_transfer_syntax and syntax.is_encapsulated:
        return
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    expected = int(ds.Rows) * int(ds.Columns) * frames * samples * bits // 8
    got = len(ds.PixelData)
    if got < expected:
        raise IngestError(Status.CANNOT_DECODE, f"pixel data is {got} bytes; {expected} expected")


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value).strip(" \x00")
    return str(value).strip(" \x00")


class IncomingStore:
    """Writes instances under ``root`` and records them; shared by the SCP and the DICOMweb fetcher.

    The per-instance statements are built once (SQLAlchemy Core, bound parameters): building ORM
    statements per C-STORE cost more than the SQL itself.
    """

    def __init__(self, db: Database, root: Path) -> None:
        self.db = db
        self.root = root.resolve()
        self.incoming = self.root / "incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._conn: Connection | None = None
        self.last_receive = 0.0  # time.monotonic() of the last C-STORE stored (not DICOMweb fetches)
        self.batcher: IndexBatcher | None = None  # set by the service that runs one (the SCP's)
        self._known_folders: set[Path] = set()  # series folders already made (skips a stat each)
        insert_ = pg_insert if db.is_postgres else sqlite_insert
        columns = [
            c.name for c in DicomSeries.__table__.columns if c.name not in ("error", "referenced_series_uid")
        ]
        series = insert_(DicomSeries).values({c: bindparam(c) for c in columns})
        touch: dict[str, Any] = {
            "last_instance_ts": bindparam("last_instance_ts"),
            "updated_ts": bindparam("updated_ts"),
        }
        self._upsert_receiving = series.on_conflict_do_update(
            index_elements=["series_uid"], set_={**touch, "state": bindparam("state")}
        )
        self._upsert_fetching = series.on_conflict_do_update(index_elements=["series_uid"], set_=touch)
        self._insert_instance = (
            insert_(DicomInstance)
            .values({c.name: bindparam(c.name) for c in DicomInstance.__table__.columns})
            .on_conflict_do_nothing(index_elements=["sop_uid"])
            .returning(DicomInstance.sop_uid, DicomInstance.series_uid)  # a row back = inserted
        )
        self._count = (
            update(DicomSeries)
            .where(DicomSeries.series_uid == bindparam("uid"))
            .values(n_instances=DicomSeries.n_instances + bindparam("n"))
        )
        self._exists = select(DicomInstance.sop_uid).where(DicomInstance.sop_uid == bindparam("uid"))

    @property
    def write_lock(self) -> threading.Lock:
        """Held around every DICOM-side database write in this process (see ``put``)."""
        return self._write_lock

    def path_of(self, relative: str) -> Path:
        return self.root / relative

    def put(
        self,
        raw: bytes,
        meta: InstanceMeta,
        *,
        source: str = "scp",
        calling_aet: str | None = None,
        receiving: bool = True,
        batched: bool = False,
    ) -> bool:
        """Store one instance; False when it was already there (a duplicate changes nothing).

        ``receiving``: a C-STORE (the series goes back to RECEIVING and waits for its idle timeout);
        the DICOMweb fetcher passes False and marks the whole series itself.

        ``batched`` (the SCP): return once the file is safe and leave its row to the group-commit
        writer (``IndexBatcher``), which commits every waiting row in one transaction. The return value
        is then True for any instance not already on disk. A crash between the two leaves a safe file
        without a row, which ``recover`` indexes at the next start. Without it, or while no batcher
        runs, the row commits before this returns and a database failure undoes the file.
        """
        relative = f"incoming/{meta.study_uid}/{meta.series_uid}/{meta.sop_uid}.dcm"
        final = self.root / relative
        row = self._row(meta, relative, len(raw), source, calling_aet, receiving)
        batcher = self.batcher if batched and self.batcher is not None and self.batcher.running else None
        # A file is renamed into place before its row commits, so no file means no row: only a file
        # that exists (a duplicate, a row still queued, or a crash's leftover) costs more.
        if final.exists():
            if batcher is not None:
                batcher.submit(row)  # idempotent: a row already there stays as it is
                return False
            if self._indexed(meta.sop_uid):
                return False
        try:
            _write_atomic(final, raw, self._known_folders)
        except OSError as exc:
            self._undo(final, meta.sop_uid)
            raise IngestError(Status.OUT_OF_RESOURCES, f"cannot write {relative}: {exc}") from exc
        if receiving:
            self.last_receive = time.monotonic()
        if batcher is not None:
            batcher.submit(row)
            return True
        try:
            # One writer at a time: concurrent associations would otherwise meet SQLite's lock and its
            # busy handler, which sleeps in milliseconds; a Python lock hands over in microseconds.
            with self._write_lock:
                new = self.index_rows([row]) == 1
        except SQLAlchemyError as exc:
            self._undo(final, meta.sop_uid)
            raise IngestError(Status.OUT_OF_RESOURCES, f"cannot index {meta.sop_uid}: {exc}") from exc
        return new

    def index_rows(self, rows: list[IndexRow]) -> int:
        """Index rows of safe files in one transaction on the writer's own connection; how many were new.

        The connection is kept open: a pool checkout, and the rollback the pool issues on every return,
        cost as much as the inserts. Call under ``write_lock``. A failure rolls everything back.
        """
        if not rows:
            return 0
        if self._conn is None:
            self._conn = self.db.engine.connect()
        conn = self._conn
        try:
            with conn.begin():
                return self._index(conn, rows)
        except SQLAlchemyError:
            self._conn = None
            conn.close()  # a broken connection is not reused: the next batch opens a fresh one
            raise

    def close(self) -> None:
        with self._write_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _indexed(self, sop_uid: str) -> bool:
        try:
            with self.db.engine.connect() as conn:
                return conn.execute(self._exists, {"uid": sop_uid}).first() is not None
        except SQLAlchemyError as exc:
            raise IngestError(Status.OUT_OF_RESOURCES, f"database unavailable: {exc}") from exc

    @staticmethod
    def _row(
        meta: InstanceMeta, relative: str, size: int, source: str, calling_aet: str | None, receiving: bool
    ) -> IndexRow:
        return IndexRow(meta, relative, size, source, calling_aet, receiving, time.time())

    def _index(self, conn: Connection, rows: list[IndexRow]) -> int:
        """Series upserts (one per series, with its latest time), the instance inserts (a duplicate is
        skipped), then each series' count raised by the instances that were new. Executemany each."""
        latest: dict[str, IndexRow] = {}
        for row in rows:
            latest[row.meta.series_uid] = row
        for receiving in (True, False):
            params = [self._series_params(r) for r in latest.values() if r.receiving is receiving]
            if params:
                conn.execute(self._upsert_receiving if receiving else self._upsert_fetching, params)
        unique = list({row.meta.sop_uid: row for row in rows}.values())
        inserted = conn.execute(
            self._insert_instance,
            [
                {
                    "sop_uid": r.meta.sop_uid,
                    "series_uid": r.meta.series_uid,
                    "sop_class_uid": r.meta.sop_class_uid,
                    "file": r.relative,
                    "size": r.size,
                    "received_ts": r.ts,
                    "calling_aet": r.calling_aet,
                }
                for r in unique
            ],
        ).all()
        counts = Counter(series_uid for _sop, series_uid in inserted)
        if counts:
            conn.execute(self._count, [{"uid": uid, "n": n} for uid, n in counts.items()])
        return len(inserted)

    @staticmethod
    def _series_params(row: IndexRow) -> dict[str, Any]:
        meta = row.meta
        return {
            "series_uid": meta.series_uid,
            "study_uid": meta.study_uid,
            "patient_id": meta.patient_id,
            "modality": meta.modality,
            "study_date": meta.study_date,
            "study_time": meta.study_time,
            "description": meta.description,
            "source": row.source,
            "state": SeriesState.RECEIVING if row.receiving else SeriesState.FETCHING,
            "n_instances": 0,
            "remote_instances": 0,
            "last_instance_ts": row.ts,
            "created_ts": row.ts,
            "updated_ts": row.ts,
            "priority": 0,
            "attempts": 0,
        }

    def _undo(self, final: Path, sop_uid: str) -> None:
        """Remove a file whose row did not commit, unless a concurrent duplicate indexed it."""
        try:
            if self._indexed(sop_uid):
                return
        except IngestError:
            pass  # the database is down: the file has no row, so it goes
        try:
            final.unlink(missing_ok=True)
        except OSError as exc:  # e.g. the folder could not be made in the first place
            log.debug("nothing to remove at %s: %s", final, exc)

    def recover(self, batch: int = 500) -> tuple[int, int]:
        """At start: remove ``.tmp-*`` files a crash left behind (never acknowledged), and index the safe
        files that have no row (acknowledged while their row waited in the group commit). Returns
        ``(temporaries removed, files indexed)``. A file that no longer decodes is left and logged."""
        removed, found = 0, []
        for folder, _dirs, names in os.walk(self.incoming):
            for name in names:
                if name.startswith(".tmp-"):
                    Path(folder, name).unlink(missing_ok=True)
                    removed += 1
                elif name.endswith(".dcm"):
                    found.append(Path(folder, name).relative_to(self.root).as_posix())
        if not found:
            return removed, 0
        with self.db.engine.connect() as conn:
            known = set(conn.execute(select(DicomInstance.file)).scalars())
        orphans = [rel for rel in found if rel not in known]
        indexed = 0
        for start in range(0, len(orphans), batch):
            rows = []
            for rel in orphans[start : start + batch]:
                raw = (self.root / rel).read_bytes()
                try:
                    meta = read_meta(raw)
                except IngestError as exc:
                    log.warning("cannot index %s left by an earlier run: %s", rel, exc.detail)
                    continue
                rows.append(self._row(meta, rel, len(raw), "scp", None, True))
            with self._write_lock:
                indexed += self.index_rows(rows)
        return removed, indexed


def _write_atomic(final: Path, data: bytes, known_folders: set[Path] | None = None) -> None:
    """Temporary file in the same folder, fsync, rename: the final name only ever holds a whole file.

    The folder is fsynced when this call creates it (once per series), not after every rename: that
    would add a second synchronous disk write per instance while the index row it pairs with is
    committed with SQLite's ``synchronous=NORMAL`` (safe against crashes of the process, not against
    losing the last moments to a power cut). This matches the datastore's own file writes.
    """
    folder = final.parent
    if known_folders is None or folder not in known_folders:
        if not folder.is_dir():
            _make_dirs(folder)
        if known_folders is not None:
            if len(known_folders) >= 10_000:
                known_folders.clear()  # a bound on memory; a forgotten folder costs one stat again
            known_folders.add(folder)
    tmp = folder / f".tmp-{uuid.uuid4().hex}.dcm"
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:  # the folder went away since it was remembered: make it again
            if known_folders is None:
                raise
            known_folders.discard(folder)
            _make_dirs(folder)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _make_dirs(folder: Path) -> None:
    """``mkdir -p`` that fsyncs the parent of each folder it creates, so the new entries persist."""
    missing = []
    probe = folder
    while not probe.is_dir():
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
        _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
