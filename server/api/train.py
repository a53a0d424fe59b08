"""``/train/``: start, watch and stop training jobs (MONAI Label's contract)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from server.api.common import body_params, parse_query, services
from server.api.jobs import jobs, start, start_operation, status, status_operation, stop_operation
from server.api.openapi import json_reply, operation
from server.api.requests import JobStartQuery
from server.api.schemas import TrainBody
from server.jobs.campaign import training_conf

bp = Blueprint("train", __name__)


@bp.get("/train/")
@status_operation("training")
def train_status() -> Any:
    return jsonify(status("train"))


@bp.post("/train/<model>")
@start_operation("Train a trainer on the final labels (429 while one runs, unless enqueue)", body=TrainBody)
def train_start(model: str) -> Any:
    params = {**training_conf(services().settings), **body_params()}  # --conf training keys are defaults
    return jsonify(start("train", model, params, parse_query(JobStartQuery)))


@bp.post("/train/")
@operation(
    "OHIF's form: {<trainer>: {overrides}}; every trainer is started (or answered busy)",
    query=JobStartQuery,
    body={"type": "object", "additionalProperties": {"type": "object"}},
    ok=json_reply("per trainer: {result: task or null, detail}"),
)
def train_start_all() -> Any:
    q = parse_query(JobStartQuery)
    defaults = training_conf(services().settings)
    body = body_params()
    overrides: dict[str, Any] = {}
    for name in services().spec.trainers:
        given = body.get(name) or {}
        overrides[name] = {**defaults, **given} if isinstance(given, dict) else given  # not a dict: 422
    return jsonify(jobs().start_all_trainers(services().spec, overrides, enqueue=q.enqueue))


@bp.delete("/train/")
@stop_operation("training")
def train_stop() -> Any:
    return jsonify(jobs().stop("train"))
