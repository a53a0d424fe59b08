"""``batch_infer``: a model's inference task over all, the labelled or the unlabelled studies, each result
saved as the study's ``original`` label. One bad study is reported and the batch goes on."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from server.appspec import AppSpec
from server.database import Database
from server.errors import NotFound, Unprocessable
from server.jobs.kinds.base import JobContext, JobKind, Submission
from server.jobs.shards import in_range
from server.models import Image, Label

BATCH_IMAGES = ("all", "labeled", "unlabeled")


def batch_image_ids(db: Database, images: str) -> list[str]:
    if images not in BATCH_IMAGES:
        raise ValueError(f"images must be one of {', '.join(BATCH_IMAGES)}; got {images!r}")
    with db.session() as s:
        q = select(Image.id).order_by(Image.id)
        if images == "labeled":
            q = q.where(Image.completed.is_(True))
        elif images == "unlabeled":
            q = q.where(Image.completed.is_(False))
        return list(s.scalars(q))


class BatchInfer(JobKind):
    name = "batch_infer"
    title = "Batch Infer"

    def validate(self, spec: AppSpec, target: str | None, params: dict[str, Any]) -> Submission:
        if target is None or target not in spec.models:
            names = ", ".join(sorted(spec.models)) or "none"
            raise NotFound(f"Model NOT Found: {target!r} (this app hosts: {names})")
        images = params.get("images", "all")
        if images not in BATCH_IMAGES:
            raise Unprocessable(f"images must be one of {', '.join(BATCH_IMAGES)}; got {images!r}")
        return Submission(target, {**params, "images": images})

    def span(self, db: Database, request: dict[str, Any]) -> list[str]:
        return sorted(batch_image_ids(db, str(request.get("images", "all"))))

    def run(self, ctx: JobContext) -> None:
        from server.inference.request import InferSource

        services, job = ctx.services, ctx.job
        request = dict(job.request)
        images = str(request.pop("images", "all"))
        ids = in_range(batch_image_ids(services.db, images), request)
        service = services.inference
        params = {k: v for k, v in request.items() if k not in ("client_id", "range", "chunk_size")}
        params.update(save_label=True, label_tag="original")
        done, failed = 0, []
        started = time.time()
        saved = saved_since(services.db, ids, job.created_ts)  # by an earlier try of this job: kept
        for i, image_id in enumerate(ids, 1):
            if image_id in saved:
                done += 1
                continue
            with service.workspace() as workdir:
                try:
                    result = service.infer(
                        job.model, InferSource(image_id=image_id), params, "image", workdir
                    )
                    done += 1
                    ctx.say(f"{i}/{len(ids)} {image_id}: saved (v{result.params.get('version', 0)})")
                except Exception as exc:  # one bad study must not end the batch; it is reported
                    failed.append(image_id)
                    ctx.say(f"{i}/{len(ids)} {image_id}: FAILED {type(exc).__name__}: {exc}")
            ctx.update(progress=i / max(1, len(ids)))
        ctx.update(
            result={
                "images": images,
                "total": len(ids),
                "done": done,
                "failed": failed,
                "seconds": round(time.time() - started, 3),
            }
        )
        if failed and not done:
            raise RuntimeError(f"batch inference failed on every study ({len(failed)})")


KIND = BatchInfer()


def saved_since(db: Database, ids: list[str], ts: float) -> set[str]:
    """Which of ``ids`` have an ``original`` label saved at or after ``ts`` (this job's own output, when
    the job is resumed after its worker was lost)."""
    with db.session() as s:
        rows = s.scalars(select(Label.image_id).where(Label.tag == "original", Label.ts >= ts))
        wanted = set(ids)
        return {i for i in rows if i in wanted}
