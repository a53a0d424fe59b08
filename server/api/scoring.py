"""``/scoring/``: run the app's scoring methods over the unlabelled studies (a background job)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from server.api.common import body_params, parse_query, services
from server.api.jobs import jobs, start, start_operation, status, status_operation, stop_operation
from server.api.openapi import json_reply, operation
from server.api.requests import JobStartQuery
from server.errors import NotFound
from server.jobs.kinds.scoring import coverage

bp = Blueprint("scoring", __name__)
SCORING_BODY = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "chunk_size": {"type": "integer", "minimum": 0, "description": "studies per chunk (0: one piece)"},
    },
}


@bp.get("/scoring/")
@status_operation("scoring")
def scoring_status() -> Any:
    return jsonify(status("scoring"))


@bp.post("/scoring/")
@start_operation("Score the unlabelled studies with every scoring method", body=SCORING_BODY)
def scoring_start_all() -> Any:
    return jsonify(start("scoring", None, body_params(), parse_query(JobStartQuery)))


@bp.post("/scoring/<method>")
@start_operation("Score the unlabelled studies with one scoring method", body=SCORING_BODY)
def scoring_start(method: str) -> Any:
    return jsonify(start("scoring", method, body_params(), parse_query(JobStartQuery)))


@bp.get("/scoring/coverage")
@operation(
    "Per scoring method: the share of unlabelled studies scored by the model's current version",
    ok=json_reply("the coverage"),
)
def scoring_coverage() -> Any:
    ctx = services()
    model = next(iter(ctx.spec.models), None)
    if model is None:
        raise NotFound("the app hosts no model: nothing is scored")
    current = ctx.registry.current(model)
    return jsonify(
        {"model": model, **coverage(ctx.db, ctx.spec, f"{model}@{current.version if current else 0}")}
    )


@bp.delete("/scoring/")
@stop_operation("scoring")
def scoring_stop() -> Any:
    return jsonify(jobs().stop("scoring"))
