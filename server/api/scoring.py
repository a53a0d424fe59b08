"""``/scoring/``: run the app's scoring methods over the unlabelled studies (a background job)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from server.api.common import body_params, parse_query
from server.api.jobs import jobs, start, start_operation, status, status_operation, stop_operation
from server.api.requests import JobStartQuery

bp = Blueprint("scoring", __name__)
SCORING_BODY = {"type": "object", "properties": {"model": {"type": "string"}}}


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


@bp.delete("/scoring/")
@stop_operation("scoring")
def scoring_stop() -> Any:
    return jsonify(jobs().stop("scoring"))
