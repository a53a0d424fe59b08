"""``/logs/``: the tail of the server log; ``/logs/gpu``: nvidia-smi when present."""

from __future__ import annotations

import html
import shutil
import subprocess
from collections import deque
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, request

from server.api.common import parse_query, services
from server.api.openapi import Reply, operation
from server.api.requests import LogsQuery
from server.errors import Forbidden, NotFound

bp = Blueprint("logs", __name__)
TEXT = {"type": "string"}


def local_only() -> None:
    """The log holds internal detail: with auth off, only a caller on this machine may read it."""
    if services().auth_on():
        return  # auth is on: the caller is a logged-in admin
    if request.remote_addr not in ("127.0.0.1", "::1", "localhost") and not str(
        request.remote_addr or ""
    ).startswith("127."):
        raise Forbidden("the logs are served to this machine only while authentication is off")


def log_file() -> Path:
    return services().settings.data / "logs" / "app.log"


@bp.get("/logs/")
@operation(
    "The last lines of the server log, as a page or plain text",
    query=LogsQuery,
    ok=Reply("the log", {"text/html": TEXT, "text/plain": TEXT}),
)
def logs() -> Any:
    local_only()
    q = parse_query(LogsQuery)
    lines = max(1, min(q.lines, 100_000))
    path = log_file()
    tail: deque[str] = deque(maxlen=lines)
    if path.is_file():
        with open(path, encoding="utf-8", errors="replace") as f:
            tail.extend(f)
    text = "".join(tail)
    if q.text or not q.html:
        return Response(text, mimetype="text/plain")
    meta = f'<meta http-equiv="refresh" content="{q.refresh}">' if q.refresh > 0 else ""
    body = f"<pre>{html.escape(text)}</pre>"
    page = f"<html><head>{meta}<title>labelloop logs</title></head><body>{body}</body></html>"
    return Response(page, mimetype="text/html")


@bp.get("/logs/gpu")
@operation("nvidia-smi's output (404 without a GPU)", ok=Reply("its output", {"text/plain": TEXT}))
def gpu() -> Any:
    local_only()
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise NotFound("no GPU: nvidia-smi is not available on this server")
    out = subprocess.run([exe], capture_output=True, text=True, timeout=10, check=False)
    return Response(out.stdout or out.stderr, mimetype="text/plain")
