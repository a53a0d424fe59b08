"""``scoring``: the app's scoring methods on the unlabelled studies with the model's current version.

Stored per (image, method, model version): the first value under the method's name, each further one as
``<method>.<key>``; a method's embedding of the study per (image, model version), replacing the same
model's older ones. Studies already scored by this version are skipped. A no-op, recorded as such, when
the app declares no scoring method.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from server.appspec import INTERACTIVE_TYPES, AppSpec
from server.database import Database
from server.datastore.ids import IMAGE_EXTS, split_ext
from server.errors import NotFound, Unprocessable
from server.jobs.kinds.base import JobContext, JobKind, Submission
from server.jobs.kinds.batch_infer import batch_image_ids
from server.jobs.shards import in_range
from server.models import Embedding, Image, Score, pack_vector


class Scoring(JobKind):
    name = "scoring"
    title = "Scoring"

    def validate(self, spec: AppSpec, target: str | None, params: dict[str, Any]) -> Submission:
        """``target`` is one scoring method, or None for all of them."""
        if target is not None and target not in spec.scoring:
            names = ", ".join(sorted(spec.scoring)) or "none"
            raise NotFound(f"Scoring method NOT Found: {target!r} (this app has: {names})")
        model = params.get("model") or next(iter(spec.models), "")
        if not isinstance(model, str):
            raise Unprocessable(f"model must be a model's name, got {model!r}")
        if model not in spec.models:
            raise NotFound(f"Model NOT Found: {model!r}")
        methods = [target] if target is not None else sorted(spec.scoring)
        return Submission(model, {**params, "methods": methods})

    def span(self, db: Database, request: dict[str, Any]) -> list[str]:
        return sorted(batch_image_ids(db, "unlabeled"))

    def run(self, ctx: JobContext) -> None:
        import torch
        from monai.transforms import Compose

        from server.inference.request import InferRequest

        services, job = ctx.services, ctx.job
        spec = services.spec
        methods = {name: s.method for name, s in spec.scoring.items() if s.method is not None}
        wanted = job.request.get("methods")
        if isinstance(wanted, list):
            methods = {name: m for name, m in methods.items() if name in wanted}
        if not methods:
            detail = "the app declares no scoring methods: nothing to rescore"
            ctx.say(detail)
            ctx.update(result={"methods": [], "scored": 0, "skipped": 0, "detail": detail})
            return
        # Clicks-driven models score nothing on their own: a rescore after one's training uses the app's
        # first automatic model (what the strategies read was computed with it).
        automatic = [name for name, m in spec.models.items() if m.type not in INTERACTIVE_TYPES]
        model = job.model if job.model in automatic else next(iter(automatic), None)
        if model is None:
            raise LookupError("scoring needs a hosted automatic model; the app hosts none")
        service = services.inference
        task = service.task(model)
        device = service.device
        version, nets = service.networks(model, task, device)
        tag = f"{model}@{version}"
        unlabelled = in_range(batch_image_ids(services.db, "unlabeled"), job.request)
        ids = likely_picked_first(services.db, unlabelled, sorted(methods), tag)
        with services.db.session() as s:
            current = {
                (image_id, method)
                for image_id, method in s.execute(
                    select(Score.image_id, Score.method).where(Score.model_version == tag)
                )
            }
            embedded = set(s.scalars(select(Embedding.image_id).where(Embedding.model_version == tag)))
        scored = skipped = vectors = 0
        for i, image_id in enumerate(ids, 1):
            todo = [
                name
                for name, method in methods.items()
                if (image_id, name) not in current or (method.embeds and image_id not in embedded)
            ]
            if not todo:
                skipped += 1
                continue
            with service.workspace() as workdir:
                stored = services.datastore.get_image(image_id)
                parts = split_ext(stored.name, IMAGE_EXTS)
                path, ext = stored.path, parts[1] if parts is not None else ".nii.gz"
                request = InferRequest(model, path, ext, workdir, {}, "json", None, image_id)
                data = Compose([task.loader(request), *task.pre_transforms(request)])({"image": str(path)})
                image = torch.as_tensor(data["image"])[None].to(device)
                for name in todo:
                    values, embedding = methods[name].score_and_embed(nets[0], image)
                    now = time.time()
                    with services.db.session() as s:
                        for key, value in score_rows(name, values):
                            s.merge(
                                Score(image_id=image_id, method=key, model_version=tag, value=value, ts=now)
                            )
                        if embedding is not None and image_id not in embedded:
                            store_embedding(s, image_id, model, tag, embedding, now)
                            embedded.add(image_id)
                            vectors += 1
                    scored += 1
            ctx.update(progress=i / max(1, len(ids)))
        ctx.say(
            f"scored {scored} (image, method) pairs with {tag} ({vectors} embeddings);"
            f" {skipped} studies already current"
        )
        ctx.update(
            result={
                "methods": sorted(methods),
                "model_version": tag,
                "scored": scored,
                "embedded": vectors,
                "skipped": skipped,
            }
        )


KIND = Scoring()


def likely_picked_first(db: Database, ids: list[str], methods: list[str], tag: str) -> list[str]:
    """The studies in the order the strategies are likely to pick them: by the previous model version's
    score of the first method, highest first (those without one last), so the picks that matter next
    are current soonest while a rescore runs."""
    if not methods:
        return ids
    with db.session() as s:
        previous = s.scalar(
            select(Score.model_version)
            .where(Score.method == methods[0], Score.model_version != tag)
            .order_by(Score.ts.desc())
            .limit(1)
        )
        if previous is None:
            return ids
        values = dict(
            s.execute(
                select(Score.image_id, Score.value).where(
                    Score.method == methods[0], Score.model_version == previous
                )
            ).all()
        )
    return sorted(ids, key=lambda i: (i not in values, -values.get(i, 0.0), i))


def coverage(db: Database, spec: AppSpec, tag: str) -> dict[str, Any]:
    """Per declared scoring method: how many unlabelled studies hold a score of model version ``tag``,
    and which exposed strategies read it."""
    readers: dict[str, list[str]] = {}
    for name, strategy in spec.strategies.items():
        for method in strategy.needs():
            readers.setdefault(method, []).append(name)
    with db.session() as s:
        unlabelled = s.scalar(select(func.count()).select_from(Image).where(Image.completed.is_(False))) or 0
        scored = dict(
            s.execute(
                select(Score.method, func.count())
                .join(Image, Image.id == Score.image_id)
                .where(
                    Score.model_version == tag,
                    Image.completed.is_(False),
                    Score.method.in_(list(spec.scoring)),
                )
                .group_by(Score.method)
            ).all()
        )
    return {
        "model_version": tag,
        "unlabelled": int(unlabelled),
        "methods": {
            name: {
                "scored": int(scored.get(name, 0)),
                "coverage": round(int(scored.get(name, 0)) / unlabelled, 4) if unlabelled else 1.0,
                "read_by": sorted(readers.get(name, [])),
            }
            for name in sorted(spec.scoring)
        },
    }


def score_rows(name: str, values: dict[str, float]) -> list[tuple[str, float]]:
    """``(method, value)`` rows: the first value under ``name``, each further key ``k`` as ``name.k``."""
    if not values:
        raise ValueError(f"scoring method {name!r} returned no values")
    keys = list(values)
    return [(name, float(values[keys[0]]))] + [(f"{name}.{k}", float(values[k])) for k in keys[1:]]


def store_embedding(s: Session, image_id: str, model: str, tag: str, vector: list[float], now: float) -> None:
    """One vector per (image, model version); the same model's older versions of it are dropped."""
    s.execute(
        delete(Embedding).where(
            Embedding.image_id == image_id,
            Embedding.model_version != tag,
            Embedding.model_version.startswith(f"{model}@", autoescape=True),
        )
    )
    s.merge(
        Embedding(image_id=image_id, model_version=tag, dim=len(vector), vector=pack_vector(vector), ts=now)
    )
