"""Logins, spoken through MONAI Label's ``/auth/`` flow so the clients log in unchanged, and the check
every request passes (who is calling, and may their role call this route: server/team/roles.py).

Off by default (one person on 127.0.0.1): ``/auth/`` answers 404 and clients skip login, as with MONAI
Label. On with ``--auth``, whenever a user exists (``labelloop user add``), or with
``LABELLOOP_API_TOKEN``. Then every route but the open ones needs one of:

- ``Authorization: Bearer <token>`` from ``POST /auth/token`` (form ``username``, ``password``), the
  call the Slicer plugin and ``MONAILabelClient.auth_token`` make;
- HTTP Basic with a user's name and password: what ``requests`` sends for a server URL written
  ``http://name:password@host:8000``, which is how the Reviewer plugin (it sends no token) logs in;
- the API token itself as a bearer token (an admin; for scripts);
- the session cookie the ``/login`` page sets (browser pages: OHIF at ``/ohif/``, the dashboard).

Without credentials: 401. With a role below the route's: 403.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, request

from server.api.common import services
from server.api.openapi import json_reply, operation
from server.errors import NotFound
from server.team.actor import ANONYMOUS, NOBODY, Actor, client_actor
from server.team.roles import Role, may, required_role

bp = Blueprint("auth", __name__)
TAGS = ("auth",)
TOKEN_ACTOR = Actor("api-token", Role.admin, user=True)
SESSION_COOKIE = "labelloop_session"


def install(app: Flask) -> None:
    """Every request learns its caller (``g.actor``) and is refused when its role may not call it."""

    @app.before_request
    def _check() -> Response | None:
        g.actor, g.logged_in = ANONYMOUS, True
        if request.method == "OPTIONS" or not services().auth_on():
            return None
        actor = _credentials()
        needed = required_role(request.endpoint, request.method)
        if actor is None:
            g.actor, g.logged_in = NOBODY, False
            if needed is None:
                return None
            return _unauthorized(
                "login needed: POST /auth/token, or HTTP Basic with a user's name and password"
            )
        g.actor = actor
        if not may(actor.role, request.endpoint, request.method):
            resp = jsonify(
                detail=f"{actor.name} is {actor.role.name}; this needs {needed.name if needed else 'none'}"
            )
            resp.status_code = 403
            return resp
        return None


def current_actor() -> Actor:
    """Who is calling (``ANONYMOUS`` with auth off, ``NOBODY`` on an open route without a login)."""
    actor = g.get("actor", ANONYMOUS)
    assert isinstance(actor, Actor)
    return actor


def request_author(params: dict[str, Any]) -> str | None:
    """Who to record as the author of what this request makes: the logged-in user, else (auth off) the
    ``client_id`` it sends, else nobody."""
    actor = current_actor()
    return actor.name if actor.user else client_actor(params.get("client_id")).name or None


def logged_in() -> bool:
    """Auth is off, or this request carries a valid login (for open pages that show more when it does)."""
    return bool(g.get("logged_in", True))


def _credentials() -> Actor | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    ctx = services()
    token = ctx.settings.api_token
    if scheme.lower() == "bearer" and value:
        if token and hmac.compare_digest(value.encode(), token.encode()):
            return TOKEN_ACTOR
        return ctx.users.resolve(value)
    if scheme.lower() == "basic" and value:
        try:
            name, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if token and hmac.compare_digest(password.encode(), token.encode()):
            return TOKEN_ACTOR
        return ctx.users.verify_basic(name, password)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return ctx.users.resolve(cookie)
    return None


def _unauthorized(detail: str) -> Response:
    resp = jsonify(detail=detail)
    resp.status_code = 401
    resp.headers["WWW-Authenticate"] = "Bearer"
    return resp


def _require_auth() -> None:
    if not services().auth_on():
        raise NotFound("authentication is off on this server")


@bp.get("/auth/")
@operation("Whether login is needed (404 when auth is off)", ok=json_reply("enabled"))
def auth_info() -> Any:
    _require_auth()
    return jsonify({"enabled": True, "client_id": "labelloop", "realm": "labelloop"})


@bp.post("/auth/token")
@operation(
    "Trade a user's name and password for a bearer token",
    form={"username": {"type": "string"}, "password": {"type": "string"}},
    ok=json_reply("access_token and token_type"),
)
def auth_token() -> Any:
    _require_auth()
    ctx = services()
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    token = ctx.settings.api_token
    if token and username and hmac.compare_digest(password.encode(), token.encode()):
        return jsonify({"access_token": token, "token_type": "Bearer", "expires_in": 0, "scope": "labelloop"})
    actor = ctx.users.verify(username, password) if username and password else None
    if actor is None:
        return _unauthorized("wrong user name or password, or the user is disabled")
    issued, seconds = ctx.users.issue(actor)
    return jsonify(
        {"access_token": issued, "token_type": "Bearer", "expires_in": seconds, "scope": actor.role.name}
    )


@bp.get("/auth/token/valid")
@operation("The logged-in user (401 when the token is not valid)", ok=json_reply("the user"))
def auth_valid() -> Any:
    _require_auth()
    actor = _credentials()
    if actor is None:
        return _unauthorized("the token is not valid (expired, revoked, or the user disabled)")
    return jsonify({"username": actor.name, "name": actor.name, "email": "", "roles": [actor.role.name]})


@bp.get("/auth/users")
@operation("Users and their roles (admins)", ok=json_reply("the users"))
def users() -> Any:
    _require_auth()
    return jsonify([u.as_dict() for u in services().users.list()])
