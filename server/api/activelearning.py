"""``POST /activelearning/{strategy}``: the next study to annotate, leased to the caller."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from server.api.common import app_spec, body_params, sampler

bp = Blueprint("activelearning", __name__)


@bp.post("/activelearning/<strategy>")
def next_sample(strategy: str) -> Any:
    params = body_params()
    picks = sampler().next_sample(app_spec().strategies, strategy, params)
    if not picks:
        return jsonify({})
    if "k" in params:
        # Extension: a batch. The first pick's fields stay at the top for MONAI Label clients.
        return jsonify({**picks[0], "batch": picks})
    return jsonify(picks[0])
