"""``/`` (a connection check page) and ``/reload``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from server import __version__

bp = Blueprint("misc", __name__)


@bp.get("/")
def home() -> Any:
    page = (
        "<html><head><title>labelloop</title></head><body>"
        f"<h1>labelloop {__version__}</h1><p>MONAI Label-compatible annotation server. "
        'See <a href="info/">/info/</a>.</p></body></html>'
    )
    return Response(page, mimetype="text/html")


@bp.post("/reload")
def reload() -> Any:
    return jsonify({})
