"""``GET /info/``: the app's models, trainers, strategies, scoring methods and datastore stats."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from server.api.common import services
from server.api.openapi import json_reply, operation
from server.api.schemas import InfoReply

bp = Blueprint("info", __name__)


def build_info() -> dict[str, Any]:
    ctx = services()
    spec = ctx.spec
    models = {}
    for name, m in spec.models.items():
        entry: dict[str, Any] = {
            "type": m.type,
            "labels": m.labels,
            "dimension": m.dimension,
            "description": m.description,
            "config": m.config,
        }
        if m.task is not None:
            entry.update(m.task.describe())
        models[name] = entry
    trainers = {n: {"description": t.description, "config": t.config} for n, t in spec.trainers.items()}
    # No top-level "config" key: 3D Slicer refuses a server that sends one.
    return {
        "name": spec.name,
        "description": spec.description,
        "version": spec.version,
        "labels": spec.all_labels(),
        "models": models,
        "trainers": trainers,
        "strategies": {n: {"description": s.description} for n, s in spec.strategies.items()},
        "scoring": {n: {"description": s.description} for n, s in spec.scoring.items()},
        "train_stats": ctx.jobs.train_stats(spec.trainers),
        "datastore": ctx.datastore.stats(),
    }


@bp.get("/info/")
@operation(
    "The app: models, trainers, strategies, scoring, train stats, datastore stats",
    ok=json_reply("the app", InfoReply),
)
def info() -> Response:
    return jsonify(build_info())
