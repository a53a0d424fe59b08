"""``GET /info/``: the app's models, trainers, strategies, scoring methods and datastore stats."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from server.api.common import services
from server.api.openapi import json_reply, operation
from server.api.schemas import InfoReply

bp = Blueprint("info", __name__)


def build_info() -> dict[str, Any]:
    """The app's part from the loaded app, or from its card while it loads after a restart; then the
    train stats and the datastore's counts, always current."""
    ctx = services()
    info = ctx.app_info()
    info["train_stats"] = ctx.jobs.train_stats(info["trainers"])
    info["datastore"] = ctx.datastore.stats()
    return info


@bp.get("/info/")
@operation(
    "The app: models, trainers, strategies, scoring, train stats, datastore stats",
    ok=json_reply("the app", InfoReply),
)
def info() -> Response:
    return jsonify(build_info())
