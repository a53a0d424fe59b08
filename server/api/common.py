"""Request parsing and reply shaping shared by the blueprints."""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from flask import Flask, Response, current_app, request, send_file
from pydantic import BaseModel, ValidationError

from server.errors import Unprocessable
from server.services import Services
from server.wire import describe

SERVICES_KEY = "labelloop"
M = TypeVar("M", bound=BaseModel)


def services_of(app: Flask) -> Services:
    """The app's services (``create_app`` puts them there; routes use :func:`services`)."""
    found = app.extensions[SERVICES_KEY]
    assert isinstance(found, Services)
    return found


def services() -> Services:
    """The services of the app serving this request: the one typed way a route reaches them."""
    return services_of(current_app)


def parse_query(model: type[M]) -> M:
    """The query string as ``model``: empty values count as absent; a wrong value is a 422 that names
    the parameter and the reason."""
    values = {k: v for k, v in request.args.items() if v != ""}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise Unprocessable(describe(exc, lambda name: f"query parameter '{name}'")) from None


MAX_JSON_DEPTH = 32  # nesting of objects and lists in a request's JSON


def parse_json(text: str | bytes | None, what: str) -> dict[str, Any]:
    """A JSON object from a form field or a body; empty means ``{}``. Refused (422): invalid JSON,
    ``NaN``/``Infinity`` (not JSON, and they would poison every listing), nesting deeper than
    :data:`MAX_JSON_DEPTH`."""
    if text is None or (isinstance(text, (str, bytes)) and not text.strip()):
        return {}
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise Unprocessable(f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unprocessable(f"{what} is not valid JSON: {exc}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Unprocessable(f"{what} must be a JSON object")
    if _depth(value) > MAX_JSON_DEPTH:
        raise Unprocessable(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth(value: Any) -> int:
    """Nesting depth, iteratively (a deep value cannot exhaust the stack here)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                return level
            todo.extend((child, level + 1) for child in item)
    return deepest


def form_params(field: str = "params") -> dict[str, Any]:
    return parse_json(request.form.get(field), f"form field '{field}'")


def body_params() -> dict[str, Any]:
    return parse_json(request.get_data(cache=True), "request body")


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
