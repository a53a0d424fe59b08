"""Review, label history and agreement, over the datastore's rows (no Flask here).

The Reviewer plugin for 3D Slicer writes ``segmentationMeta`` (``status``, ``approvedBy``, ``level``,
``comment``, ``editTime``) into a label's info; here that state becomes indexed columns, at most one
label of a study is approved (approving one clears the others, as the plugin itself does), and with
auth on the reviewer is the logged-in user whatever ``approvedBy`` says. The overlap share of studies
is labelled by two annotators independently; their agreement is computed when the second reading
arrives, and a reviewer adjudicates (picks one, or a majority merge) into the final label.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import shutil
import time
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
from sqlalchemy import ColumnElement, and_, case, exists, func, select
from sqlalchemy.orm import Session

from server.database import Database
from server.datastore import volumes
from server.datastore.ids import check_id, check_tag
from server.datastore.store import FINAL, Datastore, StoredFile
from server.errors import BadRequest, Forbidden, NotFound
from server.models import Agreement, Image, Label, LabelVersion
from server.team import agreement
from server.team.actor import Actor
from server.team.roles import Role

STATUSES = ("approved", "flagged", "adjudication", "pending", "in_progress", "unlabelled")
REVIEW_STATES = ("approved", "flagged", "segmented", "not segmented", "")
META = "segmentationMeta"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CasesQuery:
    status: str | None = None
    annotator: str | None = None
    reviewer: str | None = None
    level: str | None = None
    after: str | None = None
    limit: int = 100


class Review:
    """Kept in ``Services.review``."""

    def __init__(self, db: Database, datastore: Datastore) -> None:
        self.db, self.datastore = db, datastore

    # ---- review state ------------------------------------------------------------------------
    def update_label_info(
        self, image_id: str, tag: str, info: dict[str, Any], actor: Actor
    ) -> dict[str, Any]:
        """Merge ``info`` into a label's info; ``segmentationMeta`` sets its review state."""
        if not isinstance(info, dict):
            raise BadRequest("info must be a JSON object")
        meta = info.get(META)
        if meta is not None:
            if not isinstance(meta, dict):
                raise BadRequest("segmentationMeta must be a JSON object")
            if actor.role < Role.reviewer:
                raise Forbidden("only a reviewer may set segmentationMeta (the review state)")
            status = str(meta.get("status", "") or "")
            if status not in REVIEW_STATES:
                raise BadRequest(
                    f"segmentationMeta.status must be one of {', '.join(map(repr, REVIEW_STATES))}"
                )
            if actor.user:
                meta = {**meta, "approvedBy": actor.name}
            info = {**info, META: meta}
        review = meta
        if review is None:
            return self.datastore.update_label_info(image_id, tag, info)
        return self.datastore.update_label_info(
            image_id, tag, info, lambda s, row: self._set_review(s, row, review)
        )

    def _set_review(self, s: Session, row: Label, meta: dict[str, Any]) -> None:
        status = str(meta.get("status", "") or "")
        row.review_status = status
        row.reviewed_by = str(meta.get("approvedBy") or "")[:64] or None
        row.review_level = str(meta.get("level", "") or "")[:16]
        row.review_ts = time.time()
        if status != "approved":
            return
        # One approved label per study: the others' approval is withdrawn (columns and info alike).
        for other in s.scalars(
            select(Label).where(
                Label.image_id == row.image_id, Label.id != row.id, Label.review_status == "approved"
            )
        ):
            other.review_status = ""
            info = dict(other.info)
            info[META] = {**dict(info.get(META) or {}), "status": ""}
            other.info = info

    # ---- who may see a label -----------------------------------------------------------------
    def check_visible(self, actor: Actor, image_id: str, tag: str) -> None:
        """Annotators and viewers see model outputs and their own labels; reviewers see all."""
        if actor.role >= Role.reviewer or not actor.user:
            return
        with self.db.session() as s:
            row = s.execute(
                select(LabelVersion.author, LabelVersion.source)
                .join(Label, and_(Label.image_id == LabelVersion.image_id, Label.tag == LabelVersion.tag))
                .where(Label.image_id == check_id(image_id), Label.tag == check_tag(tag))
                .where(LabelVersion.number == Label.version)
            ).first()
        if (
            row is not None
            and row.source in ("annotator", "adjudication", "restore")
            and row.author != actor.name
        ):
            raise Forbidden("this label is another annotator's: a reviewer may open it")

    # ---- history -----------------------------------------------------------------------------
    def versions(self, image_id: str) -> dict[str, Any]:
        """Every saved version of a study's labels, oldest first, with the current one marked."""
        image_id = check_id(image_id)
        with self.db.session() as s:
            if s.get(Image, image_id) is None:
                raise NotFound(f"Image NOT Found: {image_id}")
            current = {
                (lb.tag, lb.version): lb for lb in s.scalars(select(Label).where(Label.image_id == image_id))
            }
            rows = s.scalars(
                select(LabelVersion)
                .where(LabelVersion.image_id == image_id)
                .order_by(LabelVersion.tag, LabelVersion.number)
            ).all()
            out = [_imported(lb) for lb in current.values() if lb.version == 0]
            for v in rows:
                live = current.get((v.tag, v.number))
                out.append(
                    {
                        "tag": v.tag,
                        "version": v.number,
                        "author": v.author,
                        "source": v.source,
                        "model_version": v.model_version,
                        "ts": v.ts,
                        "served_ts": v.served_ts,
                        "current": live is not None,
                        **_review_of(live),
                        "restored_from": v.info.get("restored_from"),
                    }
                )
        return {"image": image_id, "versions": out}

    def version_file(self, image_id: str, tag: str, number: int, actor: Actor) -> StoredFile:
        """One version's file; version 0 is a label found on disk and never saved here since."""
        with self.db.session() as s:
            v = _version(s, image_id, tag, number)
            author, path = v.author, self.datastore.studies / v.file
            name = f"{image_id}_{tag}_v{number}{v.ext}"
        if actor.user and actor.role < Role.reviewer and author not in (None, actor.name):
            raise Forbidden("this version is another annotator's: a reviewer may open it")
        if not path.is_file():
            raise NotFound(f"version {number} of {image_id} ({tag}) is missing on disk")
        return StoredFile(path, name)

    def restore(self, image_id: str, tag: str, number: int, actor: Actor) -> dict[str, Any]:
        """Make version ``number`` current again, as a new version (nothing is rewritten)."""
        return self._reinstate(image_id, tag, number, tag, actor, "restore")

    def adjudicate(
        self, image_id: str, actor: Actor, pick: int | None = None, method: str | None = None
    ) -> dict[str, Any]:
        """The final label of an overlap study: one reading (``pick``, a final version number), or
        ``method="majority"``: a voxelwise vote of every annotator's latest reading."""
        image_id = check_id(image_id)
        if (pick is None) == (method is None):
            raise BadRequest("give either 'version' (a reading to pick) or 'method' (majority)")
        if pick is not None:
            return self._reinstate(image_id, FINAL, pick, FINAL, actor, "adjudication")
        if method != "majority":
            raise BadRequest("method must be 'majority'")
        readings = self.readings(image_id)
        if len(readings) < 2:
            raise BadRequest(f"{image_id} has {len(readings)} reading(s): a merge needs two or more")
        loaded = [self._voxels(v) for v in readings]
        merged = agreement.majority([data for data, _ in loaded])
        affine = loaded[-1][1]
        tmp = self.datastore.temp_for_label(FINAL, ".nii.gz")
        nib.save(nib.Nifti1Image(merged, affine), str(tmp))
        info = {"adjudication": "majority", "readings": [v.number for v in readings]}
        with self.datastore.study_lock(image_id):
            placed = self.datastore.place_label(
                image_id, FINAL, tmp, ".nii.gz", info, actor.name or None, "adjudication"
            )
        self._after_final(image_id)
        return {"image": image_id, "version": placed.number, "method": "majority"}

    def _reinstate(
        self, image_id: str, tag: str, number: int, into: str, actor: Actor, source: str
    ) -> dict[str, Any]:
        image_id, tag = check_id(image_id), check_tag(tag)
        with self.db.session() as s:
            v = _version(s, image_id, tag, number)
            path, ext = self.datastore.studies / v.file, v.ext
        tmp = self.datastore.temp_for_label(into, ext)
        shutil.copyfile(path, tmp)
        info = {"restored_from": number, "from_tag": tag}
        with self.datastore.study_lock(image_id):
            placed = self.datastore.place_label(image_id, into, tmp, ext, info, actor.name or None, source)
        if into == FINAL:
            self._after_final(image_id)
        return {"image": image_id, "tag": into, "version": placed.number, "restored_from": number}

    def _after_final(self, image_id: str) -> None:
        for callback in self.datastore.on_label_saved:
            callback(image_id, FINAL, {})

    # ---- agreement ---------------------------------------------------------------------------
    def readings(self, image_id: str) -> list[LabelVersion]:
        """Each annotator's latest final label of a study, oldest reader first."""
        with self.db.session() as s:
            rows = s.scalars(
                select(LabelVersion)
                .where(
                    LabelVersion.image_id == image_id,
                    LabelVersion.tag == FINAL,
                    LabelVersion.source == "annotator",
                    LabelVersion.author.is_not(None),
                )
                .order_by(LabelVersion.number)
            ).all()
        latest: dict[str, LabelVersion] = {}
        for v in rows:
            assert v.author is not None
            latest.pop(v.author, None)
            latest[v.author] = v
        return sorted(latest.values(), key=lambda v: v.number)

    def _voxels(self, v: LabelVersion) -> tuple[np.ndarray, np.ndarray]:
        """A version's label as 3D integers (Slicer's segmentations may carry singleton axes), and its
        affine."""
        data, affine = volumes.load_array(self.datastore.studies / v.file, v.ext)
        squeezed = np.squeeze(np.asarray(data))
        voxels = np.rint(squeezed) if squeezed.dtype.kind == "f" else squeezed
        return voxels.astype(np.int32), affine

    def on_reading(self, image_id: str) -> None:
        """After an annotator's final label: with two readings or more, their agreement is stored."""
        readings = self.readings(image_id)
        if len(readings) < 2:
            return
        arrays = {}
        for v in readings:
            data, affine = self._voxels(v)
            arrays[v.number] = (data, np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))
        now = time.time()
        with self.db.session() as s:
            for i, a in enumerate(readings):
                for b in readings[i + 1 :]:
                    first, second = sorted((a, b), key=lambda v: str(v.author))
                    vol_a, spacing = arrays[first.number]
                    per_label = agreement.per_label(vol_a, arrays[second.number][0], spacing.tolist())
                    s.query(Agreement).filter_by(
                        image_id=image_id, author_a=first.author, author_b=second.author
                    ).delete()
                    for label, (dice, surface) in per_label.items():
                        s.add(
                            Agreement(
                                image_id=image_id,
                                label=label,
                                author_a=first.author,
                                author_b=second.author,
                                version_a=first.number,
                                version_b=second.number,
                                dice=dice,
                                surface_mm=surface,
                                ts=now,
                            )
                        )

    def agreement(self, image_id: str | None = None) -> dict[str, Any]:
        """Per study and label (one study with ``image_id``), and the mean Dice per annotator pair."""
        with self.db.session() as s:
            q = select(Agreement).order_by(Agreement.image_id, Agreement.label)
            if image_id:
                q = q.where(Agreement.image_id == check_id(image_id))
            rows = s.scalars(q).all()
            pairs = s.execute(
                select(
                    Agreement.author_a,
                    Agreement.author_b,
                    func.avg(Agreement.dice),
                    func.count(func.distinct(Agreement.image_id)),
                ).group_by(Agreement.author_a, Agreement.author_b)
            ).all()
        return {
            "studies": [
                {
                    "image": r.image_id,
                    "label": r.label,
                    "annotators": [r.author_a, r.author_b],
                    "versions": [r.version_a, r.version_b],
                    "dice": r.dice,
                    "surface_mm": r.surface_mm,
                }
                for r in rows
            ],
            "pairs": [
                {"annotators": [a, b], "mean_dice": float(d), "studies": int(n)} for a, b, d, n in pairs
            ],
        }

    # ---- reports -----------------------------------------------------------------------------
    def cases(self, q: CasesQuery) -> dict[str, Any]:
        """A page of studies with their review status, and the summary over all of them."""
        status = _status_expr()
        limit = max(1, min(q.limit, 1000))
        if q.status and q.status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
        with self.db.session() as s:
            summary = _summary(s)
            query = select(Image.id, status.label("status")).order_by(Image.id).limit(limit + 1)
            if q.status:
                # A narrowing, indexed condition first; the status expression then decides exactly.
                query = query.where(_narrow(q.status), status == q.status)
            if q.after:
                query = query.where(Image.id > q.after)
            if q.annotator:
                query = query.where(
                    exists().where(LabelVersion.image_id == Image.id, LabelVersion.author == q.annotator)
                )
            if q.reviewer:
                query = query.where(
                    exists().where(Label.image_id == Image.id, Label.reviewed_by == q.reviewer)
                )
            if q.level:
                query = query.where(exists().where(Label.image_id == Image.id, Label.review_level == q.level))
            rows = s.execute(query).all()
            more = len(rows) > limit
            rows = rows[:limit]
            ids = [r.id for r in rows]
            details = self._details(s, ids)
        cases = [{"image": r.id, "status": r.status, **details.get(r.id, _no_details())} for r in rows]
        return {
            "total": sum(summary.values()),
            "summary": summary,
            "cases": cases,
            "next": ids[-1] if more else None,
        }

    def _details(self, s: Session, ids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {i: _no_details() for i in ids}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for lb in s.scalars(select(Label).where(Label.image_id.in_(chunk)).order_by(Label.tag)):
                d = out[lb.image_id]
                d["tags"].append(lb.tag)
                if lb.review_status:
                    d["reviews"][lb.tag] = {
                        "status": lb.review_status,
                        "reviewer": lb.reviewed_by,
                        "level": lb.review_level,
                        "comment": (lb.info.get(META) or {}).get("comment", ""),
                        "ts": lb.review_ts,
                    }
            for image_id, author in s.execute(
                select(LabelVersion.image_id, LabelVersion.author)
                .where(LabelVersion.image_id.in_(chunk), LabelVersion.source == "annotator")
                .distinct()
            ):
                if author and author not in out[image_id]["annotators"]:
                    out[image_id]["annotators"].append(author)
        return out

    def report(self) -> list[dict[str, Any]]:
        """One row per study that has labels: status, annotators, reviewer, level, comment."""
        rows: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page = self.cases(CasesQuery(after=after, limit=1000))
            for case_ in page["cases"]:
                if case_["status"] == "unlabelled":
                    continue
                review: dict[str, Any] = next(iter(case_["reviews"].values()), {})
                approved = [t for t, r in case_["reviews"].items() if r["status"] == "approved"]
                rows.append(
                    {
                        "image": case_["image"],
                        "status": case_["status"],
                        "approved_tag": approved[0] if approved else "",
                        "annotators": ";".join(case_["annotators"]),
                        "reviewer": review.get("reviewer") or "",
                        "level": review.get("level", ""),
                        "comment": review.get("comment", ""),
                        "tags": ";".join(case_["tags"]),
                    }
                )
            after = page["next"]
            if after is None:
                return rows

    @staticmethod
    def as_csv(rows: list[dict[str, Any]]) -> str:
        fields = ["image", "status", "approved_tag", "annotators", "reviewer", "level", "comment", "tags"]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_safe(str(row.get(k, ""))) for k in fields})
        return out.getvalue()


def readings_needed(overlap: float, image_id: str) -> int:
    """2 for a fixed share ``overlap`` of the studies (by a hash of the id, independent of the random
    strategy's order), else 1."""
    if overlap <= 0:
        return 1
    digest = hashlib.blake2b(f"overlap:{image_id}".encode(), digest_size=8).digest()
    return 2 if int.from_bytes(digest, "big") / 2.0**64 < overlap else 1


def _status_expr() -> Any:
    """A study's review status as one SQL expression (every branch an indexed EXISTS)."""

    def has(*conds: ColumnElement[bool]) -> Any:
        return exists().where(Label.image_id == Image.id, *conds)

    final_family = Label.tag == FINAL
    return case(
        (has(Label.review_status == "approved"), "approved"),
        (has(Label.review_status == "flagged"), "flagged"),
        (and_(Image.readings >= 2, ~has(final_family)), "adjudication"),
        (has(final_family), "pending"),
        (Image.readings > 0, "in_progress"),
        else_="unlabelled",
    )


def _review_of(live: Label | None) -> dict[str, Any]:
    if live is None:
        return {"status": "", "reviewer": None, "level": ""}
    return {"status": live.review_status, "reviewer": live.reviewed_by, "level": live.review_level}


def _imported(lb: Label) -> dict[str, Any]:
    """A label found on disk (indexed, never saved through the API): version 0 until it is replaced."""
    return {
        "tag": lb.tag,
        "version": 0,
        "author": None,
        "source": "imported",
        "model_version": None,
        "ts": lb.ts,
        "served_ts": None,
        "current": True,
        **_review_of(lb),
        "restored_from": None,
    }


def _reviewed(*statuses: str) -> Any:
    return select(Label.image_id).where(Label.review_status.in_(statuses))


def _summary(s: Session) -> dict[str, int]:
    """How many studies have each status: aggregate queries over indexed sets (the reviewed labels,
    the final labels, the studies with readings), never a per-study expression."""
    finals = select(Label.image_id).where(Label.tag == FINAL)
    reviewed = _reviewed("approved", "flagged")
    total = s.scalar(select(func.count()).select_from(Image)) or 0
    approved = s.scalar(
        select(func.count(func.distinct(Label.image_id))).where(Label.review_status == "approved")
    )
    flagged = s.scalar(
        select(func.count(func.distinct(Label.image_id))).where(
            Label.review_status == "flagged", Label.image_id.not_in(_reviewed("approved"))
        )
    )
    pending = s.scalar(
        select(func.count()).select_from(Label).where(Label.tag == FINAL, Label.image_id.not_in(reviewed))
    )
    waiting = case((Image.readings >= 2, "adjudication"), else_="in_progress")
    reading: dict[str, int] = dict(
        s.execute(
            select(waiting, func.count())
            .where(Image.readings > 0, Image.id.not_in(finals), Image.id.not_in(reviewed))
            .group_by(waiting)
        ).all()
    )
    out = {
        "approved": int(approved or 0),
        "flagged": int(flagged or 0),
        "adjudication": int(reading.get("adjudication", 0)),
        "pending": int(pending or 0),
        "in_progress": int(reading.get("in_progress", 0)),
    }
    out["unlabelled"] = total - sum(out.values())
    return out


def _narrow(status: str) -> Any:
    if status in ("approved", "flagged"):
        return Image.id.in_(_reviewed(status))
    if status == "pending":
        return Image.id.in_(select(Label.image_id).where(Label.tag == FINAL))
    if status in ("adjudication", "in_progress"):
        return Image.readings > 0
    return Image.readings == 0


def _no_details() -> dict[str, Any]:
    return {"tags": [], "reviews": {}, "annotators": []}


def _label(s: Session, image_id: str, tag: str) -> Label:
    row = s.scalar(select(Label).where(Label.image_id == check_id(image_id), Label.tag == tag))
    if row is None:
        raise NotFound(f"Label NOT Found: {image_id} ({tag})")
    return row


def _version(s: Session, image_id: str, tag: str, number: int) -> LabelVersion:
    if number == 0:  # the unversioned label found on disk, as a transient row
        lb = _label(s, image_id, check_tag(tag))
        if lb.version != 0:
            raise NotFound(f"no version 0 of {image_id} ({tag})")
        return LabelVersion(
            image_id=lb.image_id, tag=lb.tag, number=0, ext=lb.ext, file=lb.file, source="imported"
        )
    row = s.scalar(
        select(LabelVersion).where(
            LabelVersion.image_id == check_id(image_id),
            LabelVersion.tag == check_tag(tag),
            LabelVersion.number == number,
        )
    )
    if row is None:
        raise NotFound(f"no version {number} of {image_id} ({tag})")
    return row


def _csv_safe(value: str) -> str:
    """No spreadsheet formulas from free text (comments, names)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value
