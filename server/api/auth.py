"""Optional token auth, spoken through MONAI Label's ``/auth/`` flow so the clients log in unchanged.

Off by default: then ``/auth/`` answers 404 and clients skip login, as with MONAI Label. With
``LABELLOOP_API_TOKEN`` set, ``GET /auth/`` says enabled, ``POST /auth/token`` trades a username and
that token (as the password) for a bearer token, and every other request must carry it.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request

from server.api.common import services
from server.api.openapi import json_reply, operation
from server.errors import NotFound

bp = Blueprint("auth", __name__)
OPEN_PATHS = ("/", "/auth/", "/auth", "/auth/token", "/health/live", "/health/ready")
TAGS = ("auth",)


def _token_ok(header: str | None, token: str) -> bool:
    if not header or " " not in header:
        return False
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def _unauthorized(detail: str) -> Response:
    resp = jsonify(detail=detail)
    resp.status_code = 401
    resp.headers["WWW-Authenticate"] = "Bearer"
    return resp


def install(app: Flask, token: str) -> None:
    """Every request but the open paths needs ``Authorization: Bearer <token>``."""

    @app.before_request
    def _check_token() -> Response | None:
        if request.method == "OPTIONS" or request.path in OPEN_PATHS:
            return None
        if not _token_ok(request.headers.get("Authorization"), token):
            return _unauthorized("missing or invalid bearer token: POST /auth/token first")
        return None


def _token() -> str:
    token = services().settings.api_token
    if not token:
        raise NotFound("authentication is off on this server")
    return token


@bp.get("/auth/")
@operation("Whether login is needed (404 when auth is off)", ok=json_reply("enabled"))
def auth_info() -> Any:
    _token()
    return jsonify({"enabled": True, "client_id": "labelloop", "realm": "labelloop"})


@bp.post("/auth/token")
@operation(
    "Trade a username and the server's token (as password) for a bearer token",
    form={"username": {"type": "string"}, "password": {"type": "string"}},
    ok=json_reply("access_token and token_type"),
)
def auth_token() -> Any:
    token = _token()
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    if not username or not hmac.compare_digest(password.encode(), token.encode()):
        return _unauthorized("wrong username or token")
    return jsonify({"access_token": token, "token_type": "Bearer", "expires_in": 0, "scope": "labelloop"})


@bp.get("/auth/token/valid")
@operation("The logged-in user", ok=json_reply("the user"))
def auth_valid() -> Any:
    _token()
    return jsonify({"username": "labelloop", "email": "", "name": "labelloop", "roles": ["monailabel-admin"]})
