"""``/model/{name}``: the current weights file (GET), its info, a new version (PUT), retire it (DELETE)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from server.api.common import download, form_params, require_file
from server.api.infer import inference

bp = Blueprint("model", __name__)


@bp.get("/model/info/<name>")
def model_info(name: str) -> Any:
    return jsonify(inference().model_info(name))


@bp.get("/model/<name>")
def get_model(name: str) -> Any:
    path, filename = inference().weights_file(name)
    return download(path, filename)


@bp.put("/model/<name>")
def put_model(name: str) -> Any:
    storage = require_file("file")
    params = form_params()
    metrics = params.get("train_stats") or params.get("metrics")
    service = inference()
    with service.workspace() as workdir:
        upload = workdir / "checkpoint.pt"
        storage.save(upload)
        service.publish(name, upload, metrics if isinstance(metrics, dict) else None, source="upload")
    return jsonify(service.model_info(name))


@bp.delete("/model/<name>")
def delete_model(name: str) -> Any:
    retired = inference().delete(name)
    return jsonify({"deleted": retired.version, **inference().weights_info(name)})
