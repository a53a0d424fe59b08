"""Index the studies folder into the database, incrementally.

Only directory entries are read (name, size, mtime): file contents are never opened, so a restart on an
already indexed 100k-study folder costs one ``scandir`` and one query. Layout as MONAI Label: images at the
top of the studies folder, labels in ``labels/<tag>/<id><ext>``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, insert, select, update

from server.database import Database
from server.datastore.files import cleanup_temp
from server.datastore.ids import _ID, _TAG, IMAGE_EXTS, LABEL_EXTS, split_ext
from server.datastore.store import FINAL, _rand_key
from server.models import Image, Label, Skip

log = logging.getLogger(__name__)
BATCH = 5000
# A pass that adds or removes this many rows refreshes the planner's statistics at once (PostgreSQL's
# autovacuum would, a minute or more later; until then a first index of 100k studies planned the lease
# release as a scan of every study: 26 ms instead of 0.04).
ANALYZE_AFTER_ROWS = 1000

Progress = Callable[[str, int, int], None]


@dataclass
class IndexReport:
    images_added: int = 0
    images_updated: int = 0
    images_removed: int = 0
    labels_added: int = 0
    labels_updated: int = 0
    labels_removed: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "skipped"} | {"skipped": len(self.skipped)}


def _scan(folder: Path, exts: tuple[str, ...]) -> dict[str, tuple[str, int, float]]:
    """``{id: (ext, size, mtime)}`` for the known files directly in ``folder``."""
    found: dict[str, tuple[str, int, float]] = {}
    if not folder.is_dir():
        return found
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            parts = split_ext(entry.name, exts)
            if parts is None or not _ID.match(parts[0]) or ".." in parts[0]:
                continue
            image_id, ext = parts
            # Two files for one id (a.nii and a.nii.gz): keep the first extension in priority order.
            if image_id in found and exts.index(ext) >= exts.index(found[image_id][0]):
                continue
            st = entry.stat()
            found[image_id] = (ext, st.st_size, st.st_mtime)
    return found


def index_studies(db: Database, studies: Path, progress: Progress | None = None) -> IndexReport:
    """Bring the ``images`` and ``labels`` rows in line with the folder; returns what changed."""
    t0 = time.perf_counter()
    report = IndexReport()
    cleanup_temp(studies)
    on_disk = _scan(studies, IMAGE_EXTS)
    now = time.time()
    with db.session() as s:
        known = {
            r.id: (r.ext, r.size, r.mtime, r.file)
            for r in s.execute(select(Image.id, Image.ext, Image.size, Image.mtime, Image.file))
        }
        new = [i for i in on_disk if i not in known]
        changed = [
            i
            for i, (ext, size, mtime) in on_disk.items()
            if i in known and known[i][:3] != (ext, size, mtime)
        ]
        gone = [i for i, k in known.items() if i not in on_disk and "/" not in k[3]]
        total = len(new)
        for start in range(0, len(new), BATCH):
            chunk = new[start : start + BATCH]
            s.execute(
                insert(Image),
                [
                    {
                        "id": i,
                        "ext": on_disk[i][0],
                        "file": f"{i}{on_disk[i][0]}",
                        "size": on_disk[i][1],
                        "mtime": on_disk[i][2],
                        "info": {"ts": int(on_disk[i][2]), "name": f"{i}{on_disk[i][0]}"},
                        "created_ts": now,
                        "completed": False,
                        "last_served_ts": 0.0,
                        "rand_key": _rand_key(i),
                        "lease_expires": 0.0,
                    }
                    for i in chunk
                ],
            )
            if progress:
                progress("images", start + len(chunk), total)
        for i in changed:
            ext, size, mtime = on_disk[i]
            s.execute(
                update(Image).where(Image.id == i).values(ext=ext, file=f"{i}{ext}", size=size, mtime=mtime)
            )
        for start in range(0, len(gone), BATCH):
            s.execute(delete(Image).where(Image.id.in_(gone[start : start + BATCH])))
        report.images_added, report.images_updated, report.images_removed = len(new), len(changed), len(gone)
    _index_labels(db, studies / "labels", set(on_disk), report)
    moved = report.images_added + report.images_removed + report.labels_added + report.labels_removed
    if moved >= ANALYZE_AFTER_ROWS:
        db.refresh_statistics(Image.__tablename__, Label.__tablename__)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _index_labels(db: Database, labels_dir: Path, image_ids: set[str], report: IndexReport) -> None:
    tags = []
    if labels_dir.is_dir():
        with os.scandir(labels_dir) as it:
            tags = [e.name for e in it if e.is_dir() and _TAG.match(e.name)]
    with db.session() as s:
        known = {
            (r.image_id, r.tag): (r.ext, r.size, r.mtime)
            for r in s.execute(select(Label.image_id, Label.tag, Label.ext, Label.size, Label.mtime))
        }
        seen: set[tuple[str, str]] = set()
        for tag in tags:
            cleanup_temp(labels_dir / tag)
            rows = []
            for image_id, (ext, size, mtime) in _scan(labels_dir / tag, LABEL_EXTS).items():
                if image_id not in image_ids:
                    continue
                seen.add((image_id, tag))
                old = known.get((image_id, tag))
                if old is None:
                    rows.append(
                        {
                            "image_id": image_id,
                            "tag": tag,
                            "ext": ext,
                            "file": f"labels/{tag}/{image_id}{ext}",
                            "size": size,
                            "mtime": mtime,
                            "info": {"ts": int(mtime), "name": f"{image_id}{ext}"},
                            "ts": mtime,
                        }
                    )
                elif old != (ext, size, mtime):
                    s.execute(
                        update(Label)
                        .where(Label.image_id == image_id, Label.tag == tag)
                        .values(ext=ext, file=f"labels/{tag}/{image_id}{ext}", size=size, mtime=mtime)
                    )
                    report.labels_updated += 1
            for start in range(0, len(rows), BATCH):
                s.execute(insert(Label), rows[start : start + BATCH])
            report.labels_added += len(rows)
        gone = [k for k in known if k not in seen]
        for image_id, tag in gone:
            s.execute(delete(Label).where(Label.image_id == image_id, Label.tag == tag))
        report.labels_removed = len(gone)
        if report.labels_added or report.labels_removed or report.images_added:
            # ``completed`` mirrors "has a final label" (or two readings that wait for adjudication,
            # server/team/); recompute it only when labels changed.
            finals = select(Label.image_id).where(Label.tag == FINAL)
            s.execute(
                update(Image).where(Image.id.in_(finals), Image.completed.is_(False)).values(completed=True)
            )
            s.execute(
                update(Image)
                .where(
                    Image.id.not_in(finals),
                    Image.id.not_in(select(Skip.image_id)),  # a skipped study stays out of the pool
                    Image.completed.is_(True),
                    Image.readings < 2,
                )
                .values(completed=False)
            )
