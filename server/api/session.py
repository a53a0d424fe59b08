"""``/session/``: upload a volume for a while (PUT), read it back (GET), remove it (DELETE)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from server.api.common import download, query_bool, query_int, sessions

bp = Blueprint("session", __name__)


@bp.put("/session/")
def create() -> Any:
    uploads = [(f.filename, f.stream) for f in request.files.getlist("files")]
    result = sessions().create(uploads, query_int("expiry", 0), query_bool("uncompress"))
    return jsonify(result)


@bp.get("/session/<session_id>")
def get(session_id: str) -> Any:
    store = sessions()
    if query_bool("image"):
        path = store.image_path(session_id)
        return download(path, path.name)
    return jsonify(store.get(session_id, update_ts=query_bool("update_ts")))


@bp.delete("/session/<session_id>")
def delete(session_id: str) -> Any:
    return jsonify(sessions().delete(session_id))
