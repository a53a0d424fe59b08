"""``/model/{name}``: the current weights file (GET), its info, a new version (PUT), retire it (DELETE)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from server.api.common import download, form_params, require_file
from server.api.infer import inference
from server.api.openapi import BINARY, JSON_TEXT, file_reply, json_reply, operation

bp = Blueprint("model", __name__)
TAGS = ("model",)


@bp.get("/model/info/<name>")
@operation("The model's current version and its metrics", ok=json_reply("the info"))
def model_info(name: str) -> Any:
    return jsonify(inference().model_info(name))


@bp.get("/model/<name>")
@operation("Download the model's current weights", ok=file_reply("the checkpoint", "*/*"))
def get_model(name: str) -> Any:
    path, filename = inference().weights_file(name)
    return download(path, filename)


@bp.put("/model/<name>")
@operation(
    "Publish a checkpoint as the model's next version (checked to load into its network)",
    form={"file": BINARY, "params": JSON_TEXT},
    required=("file",),
    ok=json_reply("the new version's info"),
)
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
@operation("Retire the model's current version", ok=json_reply("the retired version"))
def delete_model(name: str) -> Any:
    retired = inference().delete(name)
    return jsonify({"deleted": retired.version, **inference().weights_info(name)})
