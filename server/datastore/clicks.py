"""The clicks an interactive model was given on a study, kept as annotation effort.

Every ``/infer`` call on a datastore study with clicks adds a row (who, when, which model version, the
points per label). When that author next saves the study's final label, the open rows are linked to
that label version in the same transaction, and the version's info says how many clicks it took.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from server.database import Database
from server.models import Click


def record(
    db: Database,
    image_id: str,
    model: str,
    model_version: int,
    author: str | None,
    points: dict[str, list[list[int]]],
    label_name: str | None = None,
) -> None:
    count = sum(len(p) for p in points.values())
    if count == 0:
        return
    with db.session() as s:
        s.add(
            Click(
                image_id=image_id,
                model=model,
                model_version=model_version,
                author=author,
                label_name=label_name,
                points={k: v for k, v in points.items() if v},
                count=count,
                ts=time.time(),
            )
        )


def link(s: Session, image_id: str, author: str | None, tag: str, number: int) -> int:
    """Point ``author``'s open click rows on ``image_id`` at label version ``number`` of ``tag``; the
    number of clicks linked."""
    open_rows = (Click.image_id == image_id, Click.label_version.is_(None), _by(author))
    total = s.scalar(select(func.coalesce(func.sum(Click.count), 0)).where(*open_rows)) or 0
    if total:
        s.execute(update(Click).where(*open_rows).values(label_tag=tag, label_version=number))
    return int(total)


def of_image(db: Database, image_id: str) -> list[dict[str, Any]]:
    with db.session() as s:
        rows = s.scalars(select(Click).where(Click.image_id == image_id).order_by(Click.ts, Click.id))
        return [
            {
                "model": r.model,
                "model_version": r.model_version,
                "author": r.author,
                "label": r.label_name,
                "points": r.points,
                "count": r.count,
                "ts": r.ts,
                "label_tag": r.label_tag,
                "label_version": r.label_version,
            }
            for r in rows
        ]


def _by(author: str | None) -> Any:
    return Click.author.is_(None) if author is None else Click.author == author
