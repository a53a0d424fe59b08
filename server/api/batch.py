"""``/batch/infer``: run a model over the datastore, saving each result as the ``original`` label."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from server.api.common import app_spec, body_params, query_bool
from server.api.train import RUN_SYNC_TIMEOUT_SECONDS, jobs

bp = Blueprint("batch", __name__)


@bp.get("/batch/infer")
def status() -> Any:
    return jsonify(
        jobs().status(
            "batch_infer", all_tasks=query_bool("all"), check_if_running=query_bool("check_if_running")
        )
    )


@bp.post("/batch/infer/<model>")
def start(model: str) -> Any:
    images = request.args.get("images") or "all"
    task = jobs().start_batch_infer(app_spec(), model, images, body_params(), enqueue=query_bool("enqueue"))
    if query_bool("run_sync"):
        task = jobs().wait(task["id"], RUN_SYNC_TIMEOUT_SECONDS)
    return jsonify(task)


@bp.delete("/batch/infer")
def stop() -> Any:
    return jsonify(jobs().stop("batch_infer"))
