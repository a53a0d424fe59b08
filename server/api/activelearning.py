"""``POST /activelearning/{strategy}``: the next study to annotate, leased to the caller."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from server.api.common import body_params, services
from server.api.openapi import json_reply, operation
from server.api.schemas import NextSampleBody, NextSampleReply

bp = Blueprint("activelearning", __name__)


@bp.post("/activelearning/<strategy>")
@operation(
    "Lease the next study to annotate, picked by a strategy ({} when none is left)",
    body=NextSampleBody,
    ok=json_reply("the pick (its fields at the top, the whole batch under 'batch')", NextSampleReply),
)
def next_sample(strategy: str) -> Response:
    params = body_params()
    ctx = services()
    picks = ctx.sampler.next_sample(ctx.spec.strategies, strategy, params)
    if not picks:
        return jsonify({})
    if "k" in params:
        # Extension: a batch. The first pick's fields stay at the top for MONAI Label clients.
        reply: dict[str, Any] = {**picks[0], "batch": picks}
        return jsonify(reply)
    return jsonify(picks[0])
