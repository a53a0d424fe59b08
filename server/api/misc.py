"""``/`` (a connection check page) and ``/reload``."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from server import __version__
from server.api.openapi import Reply, json_reply, operation
from server.api.schemas import Empty

bp = Blueprint("misc", __name__)


@bp.get("/")
@operation(
    "A page that says the server is up (the Reviewer plugin connects with it)",
    ok=Reply("page", {"text/html": {"type": "string"}}),
)
def home() -> Response:
    page = (
        "<html><head><title>labelloop</title></head><body>"
        f"<h1>labelloop {__version__}</h1><p>MONAI Label-compatible annotation server. "
        'See <a href="info/">/info/</a> and the API at <a href="docs/">/docs/</a>.</p></body></html>'
    )
    return Response(page, mimetype="text/html")


@bp.post("/reload")
@operation("MONAI Label's app reload (nothing to reload here)", ok=json_reply("{}", Empty))
def reload() -> Response:
    return jsonify({})
