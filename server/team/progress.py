"""Per-annotator progress: labels saved, reviewed, approved, flagged, time from hand-out to save,
and agreement. Aggregate queries only (one per measure), so it stays fast as the campaign grows."""

from __future__ import annotations

import statistics
from typing import Any

from sqlalchemy import and_, func, select

from server.database import Database
from server.datastore.store import FINAL
from server.models import Agreement, Label, LabelVersion, Skip, User


def annotators(db: Database) -> list[dict[str, Any]]:
    """One row per person who saved a final label (and every user, labels or not)."""
    people: dict[str, dict[str, Any]] = {}

    def person(name: str) -> dict[str, Any]:
        return people.setdefault(
            name,
            {
                "annotator": name,
                "role": None,
                "labels": 0,
                "studies": 0,
                "reviewed": 0,
                "approved": 0,
                "flagged": 0,
                "median_seconds_to_save": None,
                "agreement_dice": None,
                "agreement_studies": 0,
                "skipped": 0,
            },
        )

    mine = and_(
        LabelVersion.tag == FINAL, LabelVersion.source == "annotator", LabelVersion.author.is_not(None)
    )
    with db.session() as s:
        for name, role in s.execute(select(User.name, User.role)):
            person(name)["role"] = role
        for author, labels, count in s.execute(
            select(LabelVersion.author, func.count(), func.count(func.distinct(LabelVersion.image_id)))
            .where(mine)
            .group_by(LabelVersion.author)
        ):
            row = person(str(author))
            row["labels"], row["studies"] = int(labels), int(count)
        # Review state sits on the current label of each tag: credit its version's author.
        current = and_(
            Label.image_id == LabelVersion.image_id,
            Label.tag == LabelVersion.tag,
            Label.version == LabelVersion.number,
        )
        for author, status, n in s.execute(
            select(LabelVersion.author, Label.review_status, func.count())
            .join(Label, current)
            .where(LabelVersion.author.is_not(None), Label.review_status != "")
            .group_by(LabelVersion.author, Label.review_status)
        ):
            row = person(str(author))
            row["reviewed"] += int(n)
            if status in ("approved", "flagged"):
                row[status] += int(n)
        waits: dict[str, list[float]] = {}
        for author, ts, served in s.execute(
            select(LabelVersion.author, LabelVersion.ts, LabelVersion.served_ts).where(
                mine, LabelVersion.served_ts.is_not(None)
            )
        ):
            if served is not None and ts >= served:
                waits.setdefault(str(author), []).append(ts - served)
        for name, seconds in waits.items():
            person(name)["median_seconds_to_save"] = round(statistics.median(seconds), 1)
        dice: dict[str, list[float]] = {}
        studies: dict[str, set[str]] = {}
        for image_id, a, b, value in s.execute(
            select(Agreement.image_id, Agreement.author_a, Agreement.author_b, Agreement.dice)
        ):
            for name in (a, b):
                dice.setdefault(name, []).append(value)
                studies.setdefault(name, set()).add(image_id)
        for name, values in dice.items():
            row = person(name)
            row["agreement_dice"] = round(statistics.fmean(values), 4)
            row["agreement_studies"] = len(studies[name])
        for author, n in s.execute(
            select(Skip.author, func.count()).where(Skip.author.is_not(None)).group_by(Skip.author)
        ):
            person(str(author))["skipped"] = int(n)
    return sorted(people.values(), key=lambda r: str(r["annotator"]))
