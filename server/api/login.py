"""``/login`` and ``/logout``: a plain form that sets the session cookie a browser page (OHIF, the
dashboard) uses instead of a bearer token. The cookie is HttpOnly and SameSite=Strict: scripts
cannot read it and no other site's page can send it."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, redirect, request

from server.api.auth import SESSION_COOKIE
from server.api.common import services
from server.api.openapi import Reply, operation

bp = Blueprint("login", __name__)
HTML = Reply("the page", {"text/html": {"type": "string"}})
FORM = """<!doctype html><html><head><meta charset="utf-8"><title>labelloop: log in</title>
<style>body{font:15px system-ui,sans-serif;margin:4rem auto;max-width:22rem}
label{display:block;margin:.6rem 0}
input{width:100%;padding:.4rem}button{margin-top:.8rem;padding:.5rem 1rem}.err{color:#b00020}</style></head>
<body><h1>labelloop</h1>{error}<form method="post" action="/login">
<input type="hidden" name="next" value="{next}">
<label>User <input name="username" autocomplete="username" autofocus required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Log in</button></form></body></html>"""


def _next() -> str:
    """Where to go after login: a path on this server only (never another site)."""
    target = request.values.get("next", "/") or "/"
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _page(error: str = "") -> Response:
    body = FORM.replace("{next}", html.escape(_next(), quote=True)).replace(
        "{error}", f'<p class="err">{html.escape(error)}</p>' if error else ""
    )
    return Response(body, mimetype="text/html")


@bp.get("/login")
@operation("The login page (sets the session cookie)", ok=HTML)
def page() -> Any:
    failed = request.args.get("failed") == "1"
    return _page("Wrong user name or password, or the user is disabled." if failed else "")


@bp.post("/login")
@operation(
    "Log in: form username, password, next; sets the session cookie and goes to next",
    form={"username": {"type": "string"}, "password": {"type": "string"}, "next": {"type": "string"}},
    ok=Reply("a redirect to next", {}),
    status=302,
)
def submit() -> Any:
    users = services().users
    actor = users.verify(request.form.get("username", ""), request.form.get("password", ""))
    if actor is None:  # back to the form, which says so (a redirect: reloading it posts nothing)
        return redirect(f"/login?failed=1&next={quote(_next(), safe='/')}", code=302)
    token, seconds = users.issue(actor)
    resp = redirect(_next(), code=302)
    resp.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=seconds,
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
        path="/",
    )
    return resp


@bp.get("/logout")
@operation(
    "Log out: the session ends and its cookie is cleared", ok=Reply("a redirect to /login", {}), status=302
)
def logout() -> Any:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        services().users.revoke(token)
    resp = redirect("/login", code=302)
    resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict")
    return resp
