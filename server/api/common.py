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
        raise Unprocessable(describe(exc, "query parameter")) from None


def describe(exc: ValidationError, what: str) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        name = ".".join(str(p) for p in error["loc"])
        parts.append(f"{what} '{name}': {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


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
