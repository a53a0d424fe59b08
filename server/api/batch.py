"""``/batch/infer``: run a model over the datastore, saving each result as the ``original`` label."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from server.api.common import body_params, parse_query
from server.api.jobs import jobs, start, start_operation, status, status_operation, stop_operation
from server.api.requests import BatchInferQuery

bp = Blueprint("batch", __name__)


@bp.get("/batch/infer")
@status_operation("batch inference")
def batch_status() -> Any:
    return jsonify(status("batch_infer"))


@bp.post("/batch/infer/<model>")
@start_operation(
    "Run a model over all, the labeled or the unlabeled studies", BatchInferQuery, {"type": "object"}
)
def batch_start(model: str) -> Any:
    q = parse_query(BatchInferQuery)
    return jsonify(start("batch_infer", model, {**body_params(), "images": q.images}, q))


@bp.delete("/batch/infer")
@stop_operation("batch inference")
def batch_stop() -> Any:
    return jsonify(jobs().stop("batch_infer"))
