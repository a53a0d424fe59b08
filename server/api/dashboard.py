"""``/`` and ``/dashboard/``: the campaign at a glance (a page that draws ``/dashboard/data`` every few
seconds, with its own small script: no CDN), and ``/dashboard/data``, the JSON it draws."""

from __future__ import annotations

from importlib import resources
from typing import Any

from flask import Blueprint, Response, jsonify

from server import __version__
from server.api.common import services
from server.api.openapi import Reply, json_reply, operation
from server.dashboard import snapshot

bp = Blueprint("dashboard", __name__)


@bp.get("/")
@bp.get("/dashboard/")
@operation(
    "The dashboard page (also the connection check the Reviewer plugin makes)",
    ok=Reply("page", {"text/html": {"type": "string"}}),
)
def page() -> Response:
    text = resources.files("server.api").joinpath("static/dashboard.html").read_text(encoding="utf-8")
    return Response(text.replace("{{version}}", __version__), mimetype="text/html")


@bp.get("/dashboard/data")
@operation("Everything the dashboard shows, in one reply", ok=json_reply("the snapshot"))
def data() -> Any:
    ctx = services()
    return jsonify(snapshot(ctx.db, ctx.spec, ctx.registry, ctx.evidence, ctx.dicom))
