"""``/session/``: upload a volume for a while (PUT), read it back (GET), remove it (DELETE)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from server.api.common import download, parse_query, services
from server.api.openapi import BINARY, Reply, json_reply, operation
from server.api.requests import SessionCreateQuery, SessionGetQuery

bp = Blueprint("session", __name__)
TAGS = ("session",)
SESSION = {"type": "object", "properties": {"session_id": {"type": "string"}}}


@bp.put("/session/")
@operation(
    "Upload one volume (or its DICOM files) for a while; infer on it with ?session_id=",
    query=SessionCreateQuery,
    form={"files": {"type": "array", "items": BINARY}},
    required=("files",),
    ok=json_reply("the session", SESSION),
)
def create() -> Any:
    q = parse_query(SessionCreateQuery)
    uploads = [(f.filename, f.stream) for f in request.files.getlist("files")]
    return jsonify(services().sessions.create(uploads, q.expiry, q.uncompress))


@bp.get("/session/<session_id>")
@operation(
    "A session's info, or its image (?image=true)",
    query=SessionGetQuery,
    ok=Reply("the info, or the image", {"application/json": {"type": "object"}, "*/*": BINARY}),
)
def get(session_id: str) -> Any:
    q = parse_query(SessionGetQuery)
    store = services().sessions
    if q.image:
        path = store.image_path(session_id)
        return download(path, path.name)
    return jsonify(store.get(session_id, update_ts=q.update_ts))


@bp.delete("/session/<session_id>")
@operation("Remove a session", ok=json_reply("the removed session"))
def delete(session_id: str) -> Any:
    return jsonify(services().sessions.delete(session_id))
