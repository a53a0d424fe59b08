"""``POST /infer/{model}``: a prediction, answered as multipart (default), a raw file or JSON."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, jsonify, request

from server.api.auth import request_author
from server.api.common import content_disposition, form_params, parse_query, services
from server.api.openapi import BINARY, JSON_TEXT, Reply, operation
from server.api.requests import InferQuery
from server.datastore.ids import IMAGE_EXTS, LABEL_EXTS, upload_ext
from server.inference.request import InferResult, InferSource

if TYPE_CHECKING:  # torch and MONAI come with the inference service, built when first used
    from server.inference.service import InferenceService

bp = Blueprint("infer", __name__)


def inference() -> InferenceService:
    return services().inference


@bp.post("/infer/<model>")
@operation(
    "Run a model on a datastore image (?image=), a session (?session_id=) or an uploaded file",
    query=InferQuery,
    form={"file": BINARY, "label": BINARY, "params": JSON_TEXT},
    ok=Reply(
        "output=all: multipart (params JSON, then the result file); image: the file; json: params",
        {
            "multipart/form-data": {"type": "object"},
            "application/octet-stream": BINARY,
            "application/json": {},
        },
    ),
)
def infer(model: str) -> Any:
    service = inference()
    q = parse_query(InferQuery)
    output = q.output or "all"
    params = form_params()
    with service.workspace() as workdir:
        source = InferSource(image_id=q.image or None, session_id=q.session_id or None)
        upload = request.files.get("file")
        if upload is not None and not source.session_id:
            source.file_ext = upload_ext(upload.filename, IMAGE_EXTS)
            source.file = workdir / f"input{source.file_ext}"
            upload.save(source.file)
        label = request.files.get("label")
        if label is not None:
            name = (label.filename or "").lower()
            source.label_ext = ".bin" if name.endswith(".bin") else upload_ext(label.filename, LABEL_EXTS)
            source.label = workdir / f"label-upload{source.label_ext}"
            label.save(source.label)
        result = service.infer(model, source, params, output, workdir, request_author(params))
        return _reply(result, output)  # built (file read) before the workspace goes


def _reply(result: InferResult, output: str) -> Response:
    if output == "json" or result.file is None:
        return jsonify(result.params)
    data = result.file.read_bytes()
    if output == "image":
        resp = Response(data, mimetype="application/octet-stream")
        resp.headers["Content-Disposition"] = content_disposition(result.file.name)
        return resp
    return multipart_reply(result.params, result.file.name, data)


def multipart_reply(params: dict[str, Any], filename: str, data: bytes) -> Response:
    """``multipart/form-data``: part ``params`` (JSON, no filename) first, then part ``image``.

    CRLF line ends and quoted names: MONAI Label's clients parse it with ``cgi.FieldStorage`` and
    save the part that has a filename as ``<tmp>/<filename>``.
    """
    boundary = f"labelloop-{uuid.uuid4().hex}"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="params"\r\n'
        "Content-Type: application/json\r\n\r\n"
    ).encode()
    image_head = (
        f"\r\n--{boundary}\r\n"
        f'Content-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = b"".join([head, json.dumps(params).encode(), image_head, data, f"\r\n--{boundary}--\r\n".encode()])
    return Response(body, content_type=f"multipart/form-data; boundary={boundary}")
