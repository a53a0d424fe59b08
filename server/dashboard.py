"""What the dashboard shows, in one JSON object built from aggregate queries (no per-study loops):
progress, annotators, the model's versions, jobs, scoring coverage, DICOM, and the evidence panel.
No Flask here; ``server/api/dashboard.py`` serves it and the page that draws it."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from server.appspec import AppSpec
from server.database import Database
from server.jobs import models as jm
from server.jobs.kinds.scoring import coverage
from server.models import Image, Label, LabelVersion, Skip
from server.registry import ModelRegistry
from server.team import progress

if TYPE_CHECKING:  # highdicom, torch and scipy load with these, when they are built
    from server.dicom.service import DicomService
    from server.evidence import Evidence

DAYS = 30  # labels per day, this far back
FAILED_SHOWN = 5


def snapshot(
    db: Database,
    spec: AppSpec,
    registry: ModelRegistry,
    evidence: Evidence,
    dicom: DicomService | None,
) -> dict[str, Any]:
    now = time.time()
    return {
        "ts": now,
        "progress": _progress(db, now),
        "annotators": progress.annotators(db),
        "models": _models(db, spec, registry),
        "jobs": _jobs(db),
        "dicom": dicom.status() if dicom is not None else None,
        "evidence": evidence.summary(),
    }


def _progress(db: Database, now: float) -> dict[str, Any]:
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(Image)) or 0
        tags = dict(s.execute(select(Label.tag, func.count()).group_by(Label.tag)).all())
        approved = s.scalar(
            select(func.count(func.distinct(Label.image_id))).where(Label.review_status == "approved")
        )
        leased = s.scalar(select(func.count()).select_from(Image).where(Image.lease_expires > now))
        skipped = s.scalar(select(func.count()).select_from(Skip))
        since = now - DAYS * 86400
        times = s.scalars(
            select(LabelVersion.ts).where(
                LabelVersion.tag == "final", LabelVersion.source == "annotator", LabelVersion.ts >= since
            )
        ).all()
    per_day = Counter(time.strftime("%Y-%m-%d", time.gmtime(ts)) for ts in times)
    return {
        "total": int(total),
        "labelled": int(tags.get("final", 0)),
        "approved": int(approved or 0),
        "pseudo_labelled": int(tags.get("pseudo", 0)),
        "skipped": int(skipped or 0),  # set aside as unreadable: out of the pool, never labelled
        "leased_now": int(leased or 0),
        "labels_per_day": [{"day": day, "labels": n} for day, n in sorted(per_day.items())],
    }


def _models(db: Database, spec: AppSpec, registry: ModelRegistry) -> list[dict[str, Any]]:
    out = []
    for name in spec.models:
        current = registry.current(name)
        versions = []
        for v in registry.versions(name):
            metric_name = v.metrics.get("key_metric_name")
            versions.append(
                {
                    "version": v.version,
                    "created_ts": v.created_ts,
                    "source": v.source,
                    "metric_name": metric_name,
                    "metric": v.metrics.get(metric_name) if metric_name else None,
                    "train_studies": v.metrics.get("train_studies"),
                }
            )
        tag = f"{name}@{current.version if current else 0}"
        out.append(
            {
                "name": name,
                "current": current.version if current else None,
                "versions": versions,
                "scoring": coverage(db, spec, tag) if spec.scoring else None,
            }
        )
    return out


def _jobs(db: Database) -> dict[str, Any]:
    with db.session() as s:
        counts = s.execute(
            select(jm.Job.kind, jm.Job.status, func.count()).group_by(jm.Job.kind, jm.Job.status)
        )
        by_state: dict[str, dict[str, int]] = {}
        for kind, status, n in counts:
            by_state.setdefault(status, {})[kind] = int(n)
        running = s.scalars(
            select(jm.Job).where(jm.Job.status.in_(jm.ACTIVE)).order_by(jm.Job.created_ts)
        ).all()
        failed = s.scalars(
            select(jm.Job)
            .where(jm.Job.status == jm.ERROR)
            .order_by(jm.Job.created_ts.desc())
            .limit(FAILED_SHOWN)
        ).all()
        return {
            "by_state": by_state,
            "active": [_job(j) for j in running],
            "failed": [_job(j) for j in failed],
        }


def _job(job: jm.Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "model": job.model,
        "status": job.status,
        "progress": round(job.progress, 3),
        "created_ts": job.created_ts,
        "error": job.error,
    }
