"""The local datastore service: images and labels as files in the studies folder, rows in the database.

Every change writes its file atomically (temporary file, rename) and commits its rows in the same
unit of work, so a failed request leaves no file and no row behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Text, case, cast, delete, func, select, update
from sqlalchemy.orm import Session

from server.database import Database
from server.datastore import clicks, files, intake, volumes
from server.datastore.ids import IMAGE_EXTS, LABEL_EXTS, check_id, check_tag, inside
from server.datastore.intake import Limits
from server.errors import BadRequest, Conflict, NotFound
from server.models import Assignment, Image, Label, LabelVersion, Skip
from server.wire import finite_dumps

log = logging.getLogger(__name__)

FINAL = "final"
ORIGINAL = "original"
PSEUDO = "pseudo"
VERSIONS = ".versions"  # labels/.versions/<id>/<tag>/<n><ext>: every saved label, never overwritten
SOURCE_OF_TAG = {ORIGINAL: "model", PSEUDO: "pseudo"}  # any other tag: an annotator's


@dataclass(frozen=True)
class Placed:
    number: int  # the new version's number
    current: bool  # False: kept as a version only (a reading that waits for the others)
    readings: int = 0  # after an annotator's final label: the study's readings (distinct annotators)


@dataclass(frozen=True)
class NewVersion:
    """A version file already in place, waiting for its row."""

    number: int
    path: Path
    ext: str
    author: str | None
    source: str
    info: dict[str, Any] | None


@dataclass(frozen=True)
class StoredFile:
    path: Path
    name: str  # the download name: ``<id><ext>``


class Datastore:
    """Images, labels and their info. Kept in ``Services.datastore``."""

    def __init__(
        self,
        db: Database,
        studies: Path,
        limits: Limits | None = None,
        label_max: int | Callable[[], int | None] | None = None,
        locks_dir: Path | None = None,
        share_paths: bool = True,
    ) -> None:
        self.db = db
        self.studies = studies.resolve()
        self.labels_dir = self.studies / "labels"
        self.locks_dir = locks_dir or self.studies / ".labelloop" / "locks"  # <data>/locks in the server
        self.limits = limits or Limits()  # what one uploaded volume may be (server.datastore.intake)
        # The app's highest label index (or how to find it): a label value above it is refused.
        self._label_max = label_max
        self.share_paths = share_paths  # image info names the file on the server (MONAI Label's ``path``)
        # Called as ``(image_id, tag, label_info)`` after a label is stored (e.g. DICOM SEG export).
        self.on_label_saved: list[Callable[[str, str, dict[str, Any]], None]] = []
        # How many annotators label a study independently (2 for the overlap share: server/team/).
        self.readings_needed: Callable[[str], int] = lambda _image_id: 1
        # Called with the image id after an annotator's final label that makes a second (or later)
        # independent reading of the study, held or not (agreement).
        self.on_reading: list[Callable[[str], None]] = []
        # What training uses: every final label, or approved labels only (--conf train_labels).
        self.train_labels = "final"

    # ---- one writer per study ----------------------------------------------------------------
    @contextmanager
    def study_lock(self, image_id: str, *, check: bool = True) -> Iterator[None]:
        """Serialise every write of one study (label files and rows, image and label info) across the
        server's threads and every process on this host (a job saving a label too): an exclusive
        ``flock`` on ``<locks_dir>/<id>.lock``, released when the block ends. With ``check`` the study
        must exist, so a request for an unknown id leaves no lock file behind (``check=False``: an image
        being added, or one the caller has just read)."""
        if check and not self.image_exists(image_id):
            raise NotFound(f"Image NOT Found: {image_id}")
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        with open(inside(self.locks_dir, f"{check_id(image_id)}.lock"), "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ---- paths -----------------------------------------------------------------------------
    def image_file(self, image_id: str, ext: str) -> Path:
        return inside(self.studies, f"{check_id(image_id)}{ext}")

    def label_file(self, image_id: str, tag: str, ext: str) -> Path:
        return inside(self.labels_dir, f"{check_tag(tag)}/{check_id(image_id)}{ext}")

    def version_file(self, image_id: str, tag: str, number: int, ext: str) -> Path:
        return inside(self.labels_dir, f"{VERSIONS}/{check_id(image_id)}/{check_tag(tag)}/{number}{ext}")

    def _abs(self, relative: str) -> Path:
        return inside(self.studies, relative)

    def _rel(self, path: Path) -> str:
        return path.resolve().relative_to(self.studies).as_posix()

    # ---- images ----------------------------------------------------------------------------
    def add_image(
        self, image_id: str, tmp: Path, ext: str, info: dict[str, Any] | None = None, *, check: bool = True
    ) -> str:
        """Store the file at ``tmp`` (already written, in the studies folder) as image ``image_id``.

        ``tmp`` is consumed: moved into place on success, removed on any failure.
        """
        try:
            with self.study_lock(check_id(image_id), check=False):
                self._add_image(image_id, tmp, ext, info, check)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return image_id

    def _add_image(
        self, image_id: str, tmp: Path, ext: str, info: dict[str, Any] | None, check: bool
    ) -> None:
        check_id(image_id)
        if ext not in IMAGE_EXTS:
            raise BadRequest(f"unsupported image type {ext!r}: expected one of {', '.join(IMAGE_EXTS)}")
        header = intake.inspect(tmp, ext, limits=self.limits) if check else None
        final = self.image_file(image_id, ext)
        now = time.time()
        with self.db.session() as s:
            old = s.get(Image, image_id)
            replaces = self._abs(old.file) if old is not None and old.ext != ext else None
        size = tmp.stat().st_size
        # The file move is the outer block: if the commit fails, the move is undone.
        with files.placed(tmp, final, replaces), self.db.session() as s:
            row = s.get(Image, image_id)
            merged = dict(row.info) if row is not None else {}
            merged.update(info or {})
            merged.update({"ts": int(now), "name": final.name})
            if header is not None:
                merged["shape"] = list(header.shape)
            if row is None:
                row = Image(id=image_id, created_ts=now, rand_key=_rand_key(image_id), completed=False)
                s.add(row)
            row.ext, row.file, row.info = ext, self._rel(final), merged
            row.size, row.mtime = size, final.stat().st_mtime

    def get_image(self, image_id: str) -> StoredFile:
        with self.db.session() as s:
            row = self._image(s, image_id)
            path = self._abs(row.file)
        if not path.is_file():
            raise NotFound(f"Image NOT Found or is a directory: {image_id}")
        return StoredFile(path, path.name)

    def clicks(self, image_id: str) -> list[dict[str, Any]]:
        """The clicks interactive models were given on the study, oldest first (:mod:`.clicks`)."""
        if not self.image_exists(image_id):
            raise NotFound(f"Image NOT Found: {image_id}")
        return clicks.of_image(self.db, image_id)

    def image_exists(self, image_id: str) -> bool:
        check_id(image_id)
        with self.db.session() as s:
            return s.get(Image, image_id) is not None

    def delete_image(self, image_id: str) -> None:
        with self.study_lock(image_id):
            self._delete_image(image_id)

    def _delete_image(self, image_id: str) -> None:
        with self.db.session() as s:
            row = self._image(s, image_id)
            paths = [self._abs(row.file)] + [self._abs(lb.file) for lb in row.labels]
        with ExitStack() as stack:
            for path in paths:
                stack.enter_context(files.removed(path))
            with self.db.session() as s:
                s.delete(self._image(s, image_id))
        shutil.rmtree(inside(self.labels_dir, f"{VERSIONS}/{image_id}"), ignore_errors=True)

    def image_info(self, image_id: str) -> dict[str, Any]:
        with self.db.session() as s:
            row = self._image(s, image_id)
            return self._info_with_strategy(s, row)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(info, dict):
            raise BadRequest("info must be a JSON object")
        with self.study_lock(image_id), self.db.session() as s:
            row = self._image(s, image_id)
            merged = dict(row.info)
            merged.update(info)
            row.info = merged
            return self._info_with_strategy(s, row)

    # ---- labels ----------------------------------------------------------------------------
    def save_label(
        self,
        image_id: str,
        tag: str,
        tmp: Path,
        ext: str,
        info: dict[str, Any] | None = None,
        *,
        author: str | None = None,
        source: str | None = None,
    ) -> dict[str, Any]:
        """Store ``tmp`` as the ``tag`` label of ``image_id``; its shape must match the image's.

        Every save is a new version (``label_versions``, an immutable file); the ``Label`` row points
        at the current one. ``author`` is who saved it (a user or client id), ``source`` what made it
        (default by tag: ``original`` a model, ``pseudo`` pseudo-labelling, else an annotator). A final
        label of a study that needs more independent readings is kept as a version only, until the
        readings are in and a reviewer adjudicates (server/team/review.py). ``tmp`` is consumed.
        """
        tag = check_tag(tag)
        source = source or SOURCE_OF_TAG.get(tag, "annotator")
        try:
            placed = self._save_label(image_id, tag, tmp, ext, info, author, source)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if placed.current:
            for callback in self.on_label_saved:
                callback(image_id, tag, dict(info or {}))
        if placed.readings >= 2:  # a second reader or more: there is agreement to measure
            for observer in self.on_reading:
                try:
                    observer(image_id)
                except Exception:  # the label is stored; a failed follow-up is logged, not the request's
                    log.exception("after the reading of %s", image_id)
        return {"image": image_id, "label": image_id, "version": placed.number, "held": not placed.current}

    def _save_label(
        self,
        image_id: str,
        tag: str,
        tmp: Path,
        ext: str,
        info: dict[str, Any] | None,
        author: str | None,
        source: str,
    ) -> Placed:
        check_id(image_id)
        if ext not in LABEL_EXTS:
            raise BadRequest(f"unsupported label type {ext!r}: expected one of {', '.join(LABEL_EXTS)}")
        with self.db.session() as s:
            image = self._image(s, image_id)
            image_path, image_ext = self._abs(image.file), image.ext
        label_header = intake.inspect(tmp, ext, label=True, label_max=self.label_max, limits=self.limits)
        _check_shapes(volumes.read_header(image_path, image_ext).shape, label_header.shape)
        with self.study_lock(image_id, check=False):  # read above
            return self.place_label(image_id, tag, tmp, ext, info, author, source)

    def place_label(
        self,
        image_id: str,
        tag: str,
        tmp: Path,
        ext: str,
        info: dict[str, Any] | None,
        author: str | None,
        source: str,
    ) -> Placed:
        """The checked file in place as a new version, and its rows committed, as one step. The caller
        holds the study's lock: the last writer wins, and the rows always name files on disk.

        One database transaction reads what the save builds on and writes its rows; the file moves into
        place just before that transaction commits and moves back if the commit fails."""
        now = time.time()
        made: list[Path] = []
        versions: list[NewVersion] = []  # recorded in the same unit of work as the pointer
        with self.db.sessions() as s:  # committed below, inside the file's placement; else rolled back
            try:
                old = s.scalar(select(Label).where(Label.image_id == image_id, Label.tag == tag))
                number = (
                    s.scalar(
                        select(func.max(LabelVersion.number)).where(
                            LabelVersion.image_id == image_id, LabelVersion.tag == tag
                        )
                    )
                    or 0
                )
                unversioned = (self._abs(old.file), old.ext) if old is not None and old.version == 0 else None
                replaces = self._abs(old.file) if old is not None and old.ext != ext else None
                annotator = tag == FINAL and source == "annotator"
                hold = annotator and old is None and self.readings_needed(image_id) > 1
                if unversioned is not None and unversioned[0].is_file():
                    # A label found on disk (indexed, never saved here) becomes version n before it is
                    # replaced.
                    number += 1
                    path = _link(unversioned[0], self.version_file(image_id, tag, number, unversioned[1]))
                    made.append(path)
                    versions.append(NewVersion(number, path, unversioned[1], None, "imported", None))
                number += 1
                version_path = self.version_file(image_id, tag, number, ext)
                made.append(_link(tmp, version_path))
                size = version_path.stat().st_size
                stored = dict(info or {})
                stored.update({"ts": int(now), "name": f"{image_id}{ext}", "version": number})
                versions.append(NewVersion(number, version_path, ext, author, source, stored))
                if hold:
                    tmp.unlink(missing_ok=True)
                    self._add_versions(s, image_id, tag, versions, now)
                    readings = self._count_reading(s, image_id, hold=True)
                    s.commit()
                    return Placed(number, current=False, readings=readings)
                final = self.label_file(image_id, tag, ext)
                with files.placed(tmp, final, replaces):
                    image = self._image(s, image_id)
                    self._add_versions(s, image_id, tag, versions, now)
                    row = old if old is not None else Label(image_id=image_id, tag=tag)
                    if old is None:
                        s.add(row)
                    row.ext, row.file, row.info, row.ts = ext, self._rel(final), stored, now
                    row.version, row.size, row.mtime = number, size, final.stat().st_mtime
                    row.review_status, row.reviewed_by, row.review_level, row.review_ts = "", None, "", 0.0
                    readings = 0
                    if tag == FINAL:
                        # Ground truth: out of the next-sample pool, and its lease is released.
                        image.completed, image.lease_client, image.lease_expires = True, None, 0.0
                        if annotator:
                            readings = self._count_reading(s, image_id, hold=False)
                    s.commit()
                return Placed(number, current=True, readings=readings)
            except BaseException:
                for path in made:
                    path.unlink(missing_ok=True)
                raise

    def _add_versions(
        self, s: Session, image_id: str, tag: str, versions: list[NewVersion], now: float
    ) -> None:
        served = self._image(s, image_id).last_served_ts or None
        for v in versions:
            if tag == FINAL and v.source == "annotator":
                s.execute(delete(Skip).where(Skip.image_id == image_id))  # it was readable after all
                effort = clicks.link(s, image_id, v.author, tag, v.number)
                if effort and v.info is not None:
                    v.info["clicks"] = effort  # what the interactive model was given for this label
            s.add(
                LabelVersion(
                    image_id=image_id,
                    tag=tag,
                    number=v.number,
                    ext=v.ext,
                    file=self._rel(v.path),
                    size=v.path.stat().st_size,
                    author=v.author,
                    source=v.source,
                    model_version=_model_version(v.info),
                    ts=now,
                    served_ts=served,
                    info=dict(v.info or {}),
                )
            )

    def _count_reading(self, s: Session, image_id: str, hold: bool) -> int:
        """An annotator's final label is one reading; with all the readings a study needs it leaves
        the pool (and waits for adjudication when it was held). Either way its lease is released.
        Returns the study's readings (distinct annotators)."""
        s.flush()
        readers = s.scalar(
            select(func.count(func.distinct(LabelVersion.author))).where(
                LabelVersion.image_id == image_id,
                LabelVersion.tag == FINAL,
                LabelVersion.source == "annotator",
                LabelVersion.author.is_not(None),
            )
        )
        image = self._image(s, image_id)
        image.readings = int(readers or 0)
        image.lease_client, image.lease_expires = None, 0.0
        if hold:
            image.completed = image.readings >= self.readings_needed(image_id)
        return image.readings

    def temp_for_label(self, tag: str, ext: str) -> Path:
        return files.temp_path(self.labels_dir / check_tag(tag), ext)

    def temp_for_image(self, ext: str) -> Path:
        return files.temp_path(self.studies, ext)

    def get_label(self, image_id: str, tag: str) -> StoredFile:
        with self.db.session() as s:
            row = self._label(s, image_id, tag)
            path = self._abs(row.file)
        if not path.is_file():
            raise NotFound(f"Label NOT Found: {image_id} ({tag})")
        return StoredFile(path, path.name)

    def label_exists(self, image_id: str, tag: str) -> bool:
        check_id(image_id)
        with self.db.session() as s:
            return (
                s.scalar(select(Label.id).where(Label.image_id == image_id, Label.tag == check_tag(tag)))
                is not None
            )

    def delete_label(self, image_id: str, tag: str) -> None:
        with self.study_lock(image_id):
            self._delete_label(image_id, tag)

    def _delete_label(self, image_id: str, tag: str) -> None:
        with self.db.session() as s:
            path = self._abs(self._label(s, image_id, tag).file)
        with files.removed(path), self.db.session() as s:
            row = self._label(s, image_id, tag)
            if row.tag == FINAL:
                s.execute(update(Image).where(Image.id == image_id).values(completed=False))
            s.delete(row)

    def label_info(self, image_id: str, tag: str) -> dict[str, Any]:
        with self.db.session() as s:
            return dict(self._label(s, image_id, tag).info)

    def update_label_info(
        self,
        image_id: str,
        tag: str,
        info: dict[str, Any],
        then: Callable[[Session, Label], None] | None = None,
    ) -> dict[str, Any]:
        """Merge ``info`` into a label's info; ``then(session, row)`` runs in the same unit of work (the
        review state's columns: server/team/review.py)."""
        if not isinstance(info, dict):
            raise BadRequest("info must be a JSON object")
        with self.study_lock(image_id), self.db.session() as s:
            row = self._label(s, image_id, tag)
            merged = dict(row.info)
            merged.update(info)
            row.info = merged
            if then is not None:
                then(s, row)
            return merged

    # ---- listings --------------------------------------------------------------------------
    @property
    def label_max(self) -> int | None:
        """The highest label value a label may hold (None: unchecked)."""
        return self._label_max() if callable(self._label_max) else self._label_max

    def stats(self) -> dict[str, Any]:
        """MONAI Label's shape. ``completed``: studies with their final label(s), not those set aside as
        unreadable (out of the pool too; counted by the dashboard and ``/datastore/skips``)."""
        with self.db.session() as s:
            # Both counts in one pass over the images (PostgreSQL counts by scanning).
            total, out_of_pool = s.execute(
                select(func.count(), func.count(case((Image.completed.is_(True), 1))))
            ).one()
            skipped = int(s.scalar(select(func.count()).select_from(Skip)) or 0)
            tags = {tag: n for tag, n in s.execute(select(Label.tag, func.count()).group_by(Label.tag))}
        return {"total": int(total or 0), "completed": int(out_of_pool or 0) - skipped, "label_tags": tags}

    # ---- skips -----------------------------------------------------------------------------
    def skip(self, image_id: str, reason: str, author: str | None) -> dict[str, Any]:
        """Set a study aside as unreadable: out of the pool, its lease released, who and why kept. A
        study with a final label cannot be skipped (409); skipping twice updates the reason."""
        check_id(image_id)
        reason = reason.strip() if isinstance(reason, str) else ""
        if not reason:
            raise BadRequest("a skip needs a reason (e.g. 'unreadable: motion artefact')")
        if len(reason) > 500:
            raise BadRequest("reason: at most 500 characters")
        now = time.time()
        with self.study_lock(image_id), self.db.session() as s:
            image = self._image(s, image_id)
            if s.scalar(select(Label.id).where(Label.image_id == image_id, Label.tag == FINAL)) is not None:
                raise Conflict(f"{image_id} has a final label: a skip is for studies nobody can label")
            row = s.get(Skip, image_id)
            if row is None:
                row = Skip(image_id=image_id)
                s.add(row)
            row.author, row.reason, row.ts = author, reason, now
            image.completed, image.lease_client, image.lease_expires = True, None, 0.0
            return {"image": image_id, "reason": reason, "author": author, "ts": now}

    def unskip(self, image_id: str) -> None:
        """Back into the pool (404 when the study was not skipped)."""
        check_id(image_id)
        with self.study_lock(image_id), self.db.session() as s:
            row = s.get(Skip, image_id)
            if row is None:
                raise NotFound(f"{image_id} is not skipped")
            s.delete(row)
            self._image(s, image_id).completed = False

    def skips(self) -> list[dict[str, Any]]:
        with self.db.session() as s:
            return [
                {"image": r.image_id, "reason": r.reason, "author": r.author, "ts": r.ts}
                for r in s.scalars(select(Skip).order_by(Skip.ts.desc()))
            ]

    def listing_all(self, batch: int = 2000) -> Iterator[str]:
        """MONAI Label's ``output=all`` (every image with its info and labels) as JSON text, streamed in
        pieces: images and labels are read as plain rows in id order and merged, never built as one
        object, so memory stays flat and the first bytes leave at once (the Reviewer plugin reads it
        with a 5 s timeout)."""
        head = {
            "name": self.studies.name,
            "description": "labelloop local datastore",
            "images_dir": ".",
            "labels_dir": "labels",
        }
        yield finite_dumps(head)[:-1] + ', "objects": {'
        dumps = json.dumps  # for ids, tags and extensions: strings, never a NaN
        with self.db.session() as s:
            strategies = _assignments_by_image(s)
            # The info columns as the JSON text the database holds, spliced into the reply as it is (not
            # decoded and encoded again: that was most of the time at 100k studies).
            labels = s.execute(
                select(Label.image_id, Label.tag, Label.ext, cast(Label.info, Text)).order_by(
                    Label.image_id, Label.tag
                )
            ).yield_per(batch)
            label = next(labels, None)
            images = s.execute(
                select(Image.id, Image.ext, cast(Image.info, Text)).order_by(Image.id)
            ).yield_per(batch)
            pieces: list[str] = []
            sep = ""
            for image_id, ext, info in images:
                if image_id in strategies:
                    merged = dict(json.loads(info) or {}) if info else {}
                    merged["strategy"] = strategies[image_id]
                    info_json = finite_dumps(merged)
                else:
                    info_json = _json_text(info)
                tags = []
                # Both queries are in the database's id order, and every label's image exists: the
                # labels not yet taken belong to this image or a later one (no Python comparison of
                # ids, which could disagree with the database's collation).
                while label is not None and label[0] == image_id:
                    tags.append(
                        f'{dumps(label[1])}: {{"ext": {dumps(label[2])}, "info": {_json_text(label[3])}}}'
                    )
                    label = next(labels, None)
                pieces.append(
                    f'{dumps(image_id)}: {{"image": {{"ext": {dumps(ext)}, "info": {info_json}}}, '
                    f'"labels": {{{", ".join(tags)}}}}}'
                )
                if len(pieces) >= batch:
                    yield sep + ", ".join(pieces)
                    pieces, sep = [], ", "
            if pieces:
                yield sep + ", ".join(pieces)
        yield "}}"

    def train_list(self, tag: str = FINAL) -> list[dict[str, str]]:
        """``[{image, label}]`` absolute paths of every image with a label under ``tag``; for ``final``
        with ``train_labels == "approved"``, each study's approved label (of any tag) instead."""
        query = select(Image.file, Label.file).join(Label, Label.image_id == Image.id)
        if tag == FINAL and self.train_labels == "approved":
            query = query.where(Label.review_status == "approved").order_by(Image.id, Label.tag)
        else:
            query = query.where(Label.tag == tag)
        with self.db.session() as s:
            rows = list(dict(s.execute(query).all()).items())  # at most one approved label per study
        return [{"image": str(self._abs(i)), "label": str(self._abs(lb))} for i, lb in rows]

    def page(self, after: str | None, limit: int, completed: bool | None = None) -> dict[str, Any]:
        """Keyset-paged listing (an extension): ``{total, items, next}``; ``next`` is the ``after`` to use."""
        limit = max(1, min(limit, 1000))
        with self.db.session() as s:
            q = select(Image).order_by(Image.id).limit(limit + 1)
            count = select(func.count()).select_from(Image)
            if completed is not None:
                q = q.where(Image.completed.is_(completed))
                count = count.where(Image.completed.is_(completed))
            if after:
                q = q.where(Image.id > after)
            rows = list(s.scalars(q))
            total = s.scalar(count) or 0
            more = len(rows) > limit
            rows = rows[:limit]
            ids = [r.id for r in rows]
            tags: dict[str, list[str]] = {}
            if ids:
                for image_id, tag in s.execute(
                    select(Label.image_id, Label.tag).where(Label.image_id.in_(ids))
                ):
                    tags.setdefault(image_id, []).append(tag)
            items = [
                {
                    "id": r.id,
                    "ext": r.ext,
                    "completed": r.completed,
                    "labels": sorted(tags.get(r.id, [])),
                    "info": r.info,
                }
                for r in rows
            ]
        return {"total": total, "items": items, "next": ids[-1] if more else None}

    def image_path(self, image_id: str) -> Path:
        return self.get_image(image_id).path

    # ---- helpers ---------------------------------------------------------------------------
    def _image(self, s: Session, image_id: str) -> Image:
        row = s.get(Image, check_id(image_id))
        if row is None:
            raise NotFound(f"Image NOT Found: {image_id}")
        return row

    def _label(self, s: Session, image_id: str, tag: str) -> Label:
        check_id(image_id)
        row = s.scalar(select(Label).where(Label.image_id == image_id, Label.tag == check_tag(tag)))
        if row is None:
            raise NotFound(f"Label NOT Found: {image_id} ({tag or FINAL})")
        return row

    def _info_with_strategy(self, s: Session, row: Image) -> dict[str, Any]:
        """Image info as MONAI Label shows it: stored info, ``strategy`` and the server-local ``path``."""
        served = s.execute(
            select(Assignment.strategy, Assignment.ts, Assignment.client_id).where(
                Assignment.image_id == row.id
            )
        ).all()
        return self.info_of_row(row.info, row.file, served)

    def info_of_row(self, info: dict[str, Any], file: str, served: Sequence[Any]) -> dict[str, Any]:
        """The same from a row's columns and its ``(strategy, ts, client_id)`` assignments."""
        out = dict(info or {})
        if served:
            out["strategy"] = {
                strategy: {"ts": int(ts), "client_id": client} for strategy, ts, client in served
            }
        if self.share_paths:
            out["path"] = str(self._abs(file))
        return out


def _json_text(raw: str | None) -> str:
    """A stored JSON object's text as it goes out: ``{}`` for none, re-encoded when it holds a NaN or an
    infinity (the stored text may; the reply must be valid JSON)."""
    if not raw or raw == "null":
        return "{}"
    if "NaN" in raw or "Infinity" in raw:
        return finite_dumps(json.loads(raw) or {})
    return raw


def _assignments_by_image(s: Session) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    rows = s.execute(select(Assignment.image_id, Assignment.strategy, Assignment.ts, Assignment.client_id))
    for image_id, strategy, ts, client_id in rows:
        out.setdefault(image_id, {})[strategy] = {"ts": int(ts), "client_id": client_id}
    return out


def _check_shapes(image: tuple[int, ...], label: tuple[int, ...]) -> None:
    spatial = image[:3] if len(image) >= 3 else image
    got = tuple(s for s in label if s != 1) if len(label) > len(spatial) else label
    if tuple(got[: len(spatial)]) != tuple(spatial):
        raise BadRequest(f"label shape {list(label)} does not match image shape {list(image)}")


def _rand_key(image_id: str) -> float:
    """A stable pseudo-random key in [0, 1) per id (hash-based, so re-indexing gives the same order)."""
    digest = hashlib.blake2b(image_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _link(src: Path, dst: Path) -> Path:
    """``dst`` as a second name of ``src``'s content (a hard link; a copy where links fail)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _model_version(info: dict[str, Any] | None) -> str | None:
    value = (info or {}).get("model_version")
    return None if value is None else str(value)[:128]
