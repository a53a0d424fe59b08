"""Request parsing and reply shaping shared by the blueprints."""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask import Response, current_app, request, send_file

from server.appspec import AppSpec
from server.datastore.store import Datastore
from server.errors import Unprocessable
from server.sampling import Sampler
from server.sessions import SessionStore
from server.settings import Settings


def settings() -> Settings:
    return current_app.extensions["settings"]


def datastore() -> Datastore:
    return current_app.extensions["datastore"]


def sampler() -> Sampler:
    return current_app.extensions["sampler"]


def sessions() -> SessionStore:
    return current_app.extensions["sessions"]


def app_spec() -> AppSpec:
    return current_app.extensions["labelloop_app"]


def parse_json(text: str | bytes | None, what: str) -> dict[str, Any]:
    """A JSON object from a form field or a body; empty means ``{}``."""
    if text is None or (isinstance(text, (str, bytes)) and not text.strip()):
        return {}
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unprocessable(f"{what} is not valid JSON: {exc}") from exc
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Unprocessable(f"{what} must be a JSON object")
    return value


def form_params(field: str = "params") -> dict[str, Any]:
    return parse_json(request.form.get(field), f"form field '{field}'")


def body_params() -> dict[str, Any]:
    return parse_json(request.get_data(cache=True), "request body")


def query_bool(name: str, default: bool = False) -> bool:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise Unprocessable(f"query parameter '{name}' must be a boolean, got {raw!r}")


def query_int(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise Unprocessable(f"query parameter '{name}' must be an integer, got {raw!r}") from exc


def require_file(field: str) -> Any:
    storage = request.files.get(field)
    if storage is None:
        raise Unprocessable(f"missing file in multipart field '{field}'")
    return storage


def content_disposition(name: str) -> str:
    """``attachment; filename="x"`` (quoted: the MONAI Label client's regex needs the quotes)."""
    try:
        name.encode("ascii")
        if '"' not in name:
            return f'attachment; filename="{name}"'
    except UnicodeEncodeError:
        pass
    return f"attachment; filename*=utf-8''{quote(name)}"


def download(path: Path, name: str) -> Response:
    mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    resp = send_file(path, mimetype=mimetype, conditional=False, max_age=0)
    resp.headers["Content-Disposition"] = content_disposition(name)
    return resp
