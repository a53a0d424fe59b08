"""``/health/live`` and ``/health/ready``: for orchestrators (open without a token)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from server.api.common import services
from server.api.openapi import json_reply, operation
from server.health import readiness

bp = Blueprint("health", __name__)
HEALTH = {"type": "object", "properties": {"status": {"type": "string"}, "checks": {"type": "object"}}}


@bp.get("/health/live")
@operation("The process answers", ok=json_reply("alive", HEALTH))
def live() -> Any:
    return jsonify({"status": "alive"})


@bp.get("/health/ready")
@operation(
    "Ready when the database answers; every part's state (503 when not ready)", ok=json_reply("ready", HEALTH)
)
def ready() -> Any:
    ok, report = readiness(services())
    return jsonify(report), 200 if ok else 503
