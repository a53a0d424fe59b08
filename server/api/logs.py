"""``/logs/``: the tail of the server log; ``/logs/gpu``: nvidia-smi when present."""

from __future__ import annotations

import html
import shutil
import subprocess
from collections import deque
from pathlib import Path
from typing import Any

from flask import Blueprint, Response

from server.api.common import query_bool, query_int, settings
from server.errors import NotFound

bp = Blueprint("logs", __name__)


def log_file() -> Path:
    return settings().data / "logs" / "app.log"


@bp.get("/logs/")
def logs() -> Any:
    lines = max(1, min(query_int("lines", 300), 100_000))
    path = log_file()
    tail: deque[str] = deque(maxlen=lines)
    if path.is_file():
        with open(path, encoding="utf-8", errors="replace") as f:
            tail.extend(f)
    text = "".join(tail)
    if query_bool("text") or not query_bool("html", True):
        return Response(text, mimetype="text/plain")
    refresh = query_int("refresh", 0)
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh > 0 else ""
    body = f"<pre>{html.escape(text)}</pre>"
    page = f"<html><head>{meta}<title>labelloop logs</title></head><body>{body}</body></html>"
    return Response(page, mimetype="text/html")


@bp.get("/logs/gpu")
def gpu() -> Any:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise NotFound("no GPU: nvidia-smi is not available on this server")
    out = subprocess.run([exe], capture_output=True, text=True, timeout=10, check=False)
    return Response(out.stdout or out.stderr, mimetype="text/plain")
