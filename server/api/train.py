"""``/train/``: start, watch and stop training jobs (MONAI Label's contract; the logic is in JobService)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify

from server.api.common import app_spec, body_params, query_bool
from server.jobs.service import JobService

bp = Blueprint("train", __name__)

RUN_SYNC_TIMEOUT_SECONDS = 24 * 3600.0


def jobs() -> JobService:
    return current_app.extensions["jobs"]


@bp.get("/train/")
def status() -> Any:
    return jsonify(
        jobs().status("train", all_tasks=query_bool("all"), check_if_running=query_bool("check_if_running"))
    )


@bp.post("/train/<model>")
def start(model: str) -> Any:
    task = jobs().start_train(app_spec(), model, body_params(), enqueue=query_bool("enqueue"))
    if query_bool("run_sync"):
        task = jobs().wait(task["id"], RUN_SYNC_TIMEOUT_SECONDS)
    return jsonify(task)


@bp.post("/train/")
def start_all() -> Any:
    """OHIF's form: ``{<model>: {overrides}}``; every trainer is started (or answered busy)."""
    return jsonify(jobs().start_all_trainers(app_spec(), body_params(), enqueue=query_bool("enqueue")))


@bp.delete("/train/")
def stop() -> Any:
    return jsonify(jobs().stop("train"))
