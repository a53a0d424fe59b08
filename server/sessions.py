"""Sessions: volumes uploaded for a while (Slicer's local volumes), swept when they expire."""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
import zipfile
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.database import Database
from server.datastore.files import write_stream
from server.datastore.ids import inside
from server.errors import BadRequest, NotFound, TooLarge, Unprocessable
from server.models import Session as SessionRow

log = logging.getLogger(__name__)


MAX_NAME = 120  # characters of a stored file name (the file system allows 255 bytes)
MAX_MEMBERS = 10_000  # files in one uploaded zip
MAX_UNZIPPED = 16 << 30  # bytes of one uploaded zip, unpacked


def safe_name(filename: str | None, default: str = "image.nii.gz") -> str:
    """A plain file name: no folders, only safe characters, at most :data:`MAX_NAME` (the stem is cut,
    the extensions kept)."""
    name = Path((filename or "").replace("\\", "/")).name
    cleaned = "".join(c for c in name if (c.isascii() and c.isalnum()) or c in "._-+ ").strip(" .")
    if len(cleaned) > MAX_NAME:
        stem, dot, exts = cleaned.partition(".")
        exts = exts[-40:]
        cleaned = stem[: MAX_NAME - len(exts) - 1] + dot + exts
    return cleaned or default


class SessionStore:
    """Kept in ``Services.sessions``; files live in ``<data>/sessions/<id>/``."""

    def __init__(
        self, db: Database, root: Path, default_expiry: int, max_expiry: int, share_paths: bool = True
    ) -> None:
        self.db, self.root = db, root
        self.share_paths = share_paths  # replies name the session's folder and file (MONAI Label's shape)
        self.default_expiry, self.max_expiry = default_expiry, max_expiry
        self.root.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def create(
        self, uploads: list[tuple[str | None, IO[bytes]]], expiry: int, uncompress: bool
    ) -> dict[str, Any]:
        if not uploads:
            raise BadRequest("no files: send one or more files in the multipart field 'files'")
        expiry = self.default_expiry if expiry <= 0 else min(expiry, self.max_expiry)
        sid = str(uuid.uuid1())
        folder = inside(self.root, sid)
        tmp = self.root / f".tmp-{sid}"
        tmp.mkdir(parents=True)
        try:
            paths = []
            for filename, stream in uploads:
                dest = tmp / safe_name(filename)
                write_stream(stream, dest)
                if uncompress and zipfile.is_zipfile(dest):
                    paths.extend(_unzip(dest, tmp))
                    dest.unlink()
                else:
                    paths.append(dest)
            image = paths[0].name if len(paths) == 1 else ""
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        now = time.time()
        row = SessionRow(
            id=sid,
            name=sid,
            path=str(folder),
            image=str(folder / image) if image else str(folder),
            meta={"files": [p.name for p in paths]},
            create_ts=now,
            last_access_ts=now,
            expiry=expiry,
            expires_at=now + expiry,
        )
        try:
            with self.db.session() as s:
                s.add(row)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return {"session_id": sid, "session_info": self._shown(_info(row))}

    def get(self, sid: str, update_ts: bool = False) -> dict[str, Any]:
        with self.db.session() as s:
            row = self._row(s, sid)
            if update_ts:
                row.last_access_ts = time.time()
                row.expires_at = row.last_access_ts + row.expiry
            return self._shown(_info(row))

    def image_path(self, sid: str) -> Path:
        self.get(sid, update_ts=True)
        with self.db.session() as s:
            path = Path(self._row(s, sid).image)
        if not path.is_file():
            raise NotFound(f"Session ({sid}) holds no single image file")
        return path

    def delete(self, sid: str) -> dict[str, Any]:
        with self.db.session() as s:
            row = self._row(s, sid)
            info = _info(row)
            s.delete(row)
        shutil.rmtree(info["path"], ignore_errors=True)
        return self._shown(info)

    def _shown(self, info: dict[str, Any]) -> dict[str, Any]:
        """The info as a reply: without server paths unless they are shared (a client on this machine)."""
        if self.share_paths:
            return info
        return {**{k: v for k, v in info.items() if k != "path"}, "image": Path(info["image"]).name}

    def sweep(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self.db.session() as s:
            expired = list(s.scalars(select(SessionRow).where(SessionRow.expires_at < now)))
            for row in expired:
                s.delete(row)
        for row in expired:
            shutil.rmtree(row.path, ignore_errors=True)
        return len(expired)

    def start_sweeper(self, every: float) -> None:
        def loop() -> None:
            while not self._stop.wait(every):
                try:
                    n = self.sweep()
                    if n:
                        log.info("swept %d expired sessions", n)
                except Exception:
                    log.exception("session sweep failed")

        self._thread = threading.Thread(target=loop, name="session-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _row(self, s: Session, sid: str) -> SessionRow:
        row = s.get(SessionRow, sid) if sid and len(sid) <= 64 else None
        if row is None or row.expires_at < time.time():
            raise NotFound(f"Session ({sid}) Not Found")
        return row


def _info(row: SessionRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "path": row.path,
        "image": row.image,
        "meta": row.meta,
        "create_ts": int(row.create_ts),
        "last_access_ts": int(row.last_access_ts),
        "expiry": row.expiry,
    }


def _unzip(archive: Path, folder: Path) -> list[Path]:
    """The archive's files, flat in ``folder``; bounded in members and in bytes written (a zip bomb
    stops at :data:`MAX_UNZIPPED`, whatever its directory claims)."""
    out = []
    written = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) > MAX_MEMBERS:
                raise TooLarge(f"the zip holds {len(members)} files; at most {MAX_MEMBERS}")
            for member in members:
                dest = folder / safe_name(member.filename)
                with zf.open(member) as src, open(dest, "wb") as dst:
                    while block := src.read(1 << 20):
                        written += len(block)
                        if written > MAX_UNZIPPED:
                            raise TooLarge(f"the zip unpacks to more than {MAX_UNZIPPED} bytes")
                        dst.write(block)
                out.append(dest)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
        raise Unprocessable(f"the zip does not unpack: {exc}") from None
    return out
