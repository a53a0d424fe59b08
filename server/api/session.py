"""``/session/``: upload a volume for a while (PUT), read it back (GET), remove it (DELETE)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from server.api.common import download, parse_query, services
from server.api.openapi import BINARY, Operation, Reply, json_reply, operation
from server.api.requests import SessionCreateQuery, SessionGetQuery

bp = Blueprint("session", __name__)
TAGS = ("session",)
SESSION = {"type": "object", "properties": {"session_id": {"type": "string"}}}


@bp.put("/session/")
@operation(
    Operation(
        "Upload one volume (or its DICOM files) for a while; infer on it with ?session_id=",
        query=SessionCreateQuery,
        form={"files": {"type": "array", "items": BINARY}},
        form_required=("files",),
        replies={200: json_reply("the session", SESSION)},
        tags=TAGS,
    )
)
def create() -> Any:
    q = parse_query(SessionCreateQuery)
    uploads = [(f.filename, f.stream) for f in request.files.getlist("files")]
    return jsonify(services().sessions.create(uploads, q.expiry, q.uncompress))


@bp.get("/session/<session_id>")
@operation(
    Operation(
        "A session's info, or its image (?image=true)",
        query=SessionGetQuery,
        replies={
            200: Reply("the info, or the image", {"application/json": {"type": "object"}, "*/*": BINARY})
        },
        tags=TAGS,
    )
)
def get(session_id: str) -> Any:
    q = parse_query(SessionGetQuery)
    store = services().sessions
    if q.image:
        path = store.image_path(session_id)
        return download(path, path.name)
    return jsonify(store.get(session_id, update_ts=q.update_ts))


@bp.delete("/session/<session_id>")
@operation(Operation("Remove a session", replies={200: json_reply("the removed session")}, tags=TAGS))
def delete(session_id: str) -> Any:
    return jsonify(services().sessions.delete(session_id))
