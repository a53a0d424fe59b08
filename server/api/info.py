"""``GET /info/``: the app's models, trainers, strategies, scoring methods and datastore stats."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify

from server.api.common import app_spec, datastore

bp = Blueprint("info", __name__)


def build_info() -> dict[str, Any]:
    spec = app_spec()
    models = {}
    for name, m in spec.models.items():
        entry: dict[str, Any] = {
            "type": m.type,
            "labels": m.labels,
            "dimension": m.dimension,
            "description": m.description,
            "config": m.config,
        }
        describe = getattr(m.task, "describe", None)
        if callable(describe):
            entry.update(describe())
        models[name] = entry
    trainers = {n: {"description": t.description, "config": t.config} for n, t in spec.trainers.items()}
    train_stats: dict[str, Any] = {}
    stats_fn = current_app.extensions.get("train_stats")
    if callable(stats_fn):
        train_stats = stats_fn()
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
        "train_stats": train_stats,
        "datastore": datastore().stats(),
    }


@bp.get("/info/")
def info() -> Any:
    return jsonify(build_info())
