"""``/scoring/``: run the app's scoring methods over the unlabelled studies (a background job)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from server.api.common import app_spec, body_params, query_bool
from server.api.train import RUN_SYNC_TIMEOUT_SECONDS, jobs

bp = Blueprint("scoring", __name__)


@bp.get("/scoring/")
def status() -> Any:
    return jsonify(
        jobs().status("scoring", all_tasks=query_bool("all"), check_if_running=query_bool("check_if_running"))
    )


@bp.post("/scoring/")
def start_all() -> Any:
    task = jobs().start_scoring(app_spec(), None, body_params(), enqueue=query_bool("enqueue"))
    return jsonify(_maybe_wait(task))


@bp.post("/scoring/<method>")
def start(method: str) -> Any:
    task = jobs().start_scoring(app_spec(), method, body_params(), enqueue=query_bool("enqueue"))
    return jsonify(_maybe_wait(task))


@bp.delete("/scoring/")
def stop() -> Any:
    return jsonify(jobs().stop("scoring"))


def _maybe_wait(task: dict[str, Any]) -> dict[str, Any]:
    return jobs().wait(task["id"], RUN_SYNC_TIMEOUT_SECONDS) if query_bool("run_sync") else task
