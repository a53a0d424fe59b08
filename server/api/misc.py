"""``/reload``: MONAI Label's app reload (``/`` is the dashboard: server/api/dashboard.py)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from server.api.openapi import json_reply, operation
from server.api.schemas import Empty

bp = Blueprint("misc", __name__)


@bp.post("/reload")
@operation("MONAI Label's app reload (nothing to reload here)", ok=json_reply("{}", Empty))
def reload() -> Response:
    return jsonify({})
