"""OHIF at /ohif/ on labelloop's origin (the build in the monailabel wheel), and the login page whose
session cookie lets a browser page use the API with auth on."""

from __future__ import annotations

from pathlib import Path

import requests

from server.ohif import default_root
from tests.conftest import NO_WORKER, Server, free_port
from tests.team.conftest import PASSWORD, add_users


def test_ohif_files_routes_and_types(server: Server) -> None:
    u = server.url
    root = default_root()
    assert root is not None, "the monailabel wheel's OHIF build was not found"
    moved = requests.get(f"{u}/ohif", allow_redirects=False, timeout=10)
    assert moved.status_code == 301 and moved.headers["Location"].endswith("/ohif/")
    index = requests.get(f"{u}/ohif/", timeout=10)
    assert index.status_code == 200 and index.headers["Content-Type"].startswith("text/html")
    assert index.content == (root / "index.html").read_bytes()
    for route in ("viewer", "viewer?StudyInstanceUIDs=1.2.3", "monai-label/studies"):
        page = requests.get(f"{u}/ohif/{route}", timeout=10)
        assert page.status_code == 200 and page.content == index.content, route  # the viewer's own routes
    config = requests.get(f"{u}/ohif/app-config.js", timeout=10)
    assert (
        config.headers["Content-Type"].startswith("text/javascript")
        and b"/proxy/dicom/qido" in config.content
    )
    wasm = next(root.glob("*.wasm"))
    got = requests.get(f"{u}/ohif/{wasm.name}", timeout=30)
    assert got.headers["Content-Type"] == "application/wasm" and got.content == wasm.read_bytes()
    css = next(root.glob("*.css"))
    assert requests.get(f"{u}/ohif/{css.name}", timeout=10).headers["Content-Type"].startswith("text/css")
    nested = next(p for p in root.rglob("*") if p.is_file() and len(p.relative_to(root).parts) > 1)
    rel = nested.relative_to(root).as_posix()
    assert requests.get(f"{u}/ohif/{rel}", timeout=10).content == nested.read_bytes()
    assert requests.get(f"{u}/ohif/no-such-bundle.js", timeout=10).status_code == 404  # not the page
    escape = requests.get(f"{u}/ohif/..%2F..%2Fserver%2Fapp.py", timeout=10)
    assert b"create_app" not in escape.content
    assert requests.get(f"{u}/ohifx", timeout=10).status_code == 404  # nothing else redirected


def test_login_cookie_opens_the_viewer_and_the_api(tmp_path: Path, studies: Path) -> None:
    add_users(studies, {"ann": "annotator"})
    srv = Server(studies, free_port(), env=dict(NO_WORKER), ready_path="/").start()
    try:
        u = srv.url
        browser = requests.Session()
        gate = browser.get(f"{u}/ohif/viewer?StudyInstanceUIDs=1.2", allow_redirects=False, timeout=10)
        assert gate.status_code == 302 and gate.headers["Location"].startswith("/login?next=/ohif/viewer")
        assert browser.get(f"{u}/ohif/app-config.js", timeout=10).status_code == 200  # scripts are public
        assert browser.get(f"{u}/info/", timeout=10).status_code == 401
        page = browser.get(f"{u}/login", params={"next": "/ohif/"}, timeout=10)
        assert page.status_code == 200 and 'name="password"' in page.text
        wrong = browser.post(f"{u}/login", data={"username": "ann", "password": "nope-nope"}, timeout=10)
        assert "Wrong user name or password" in wrong.text and "labelloop_session" not in browser.cookies
        done = browser.post(
            f"{u}/login",
            data={"username": "ann", "password": PASSWORD, "next": "/ohif/"},
            allow_redirects=False,
            timeout=10,
        )
        assert done.status_code == 302 and done.headers["Location"] == "/ohif/"
        cookie = done.headers["Set-Cookie"]
        assert "labelloop_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert browser.get(f"{u}/ohif/", timeout=10).status_code == 200
        assert browser.get(f"{u}/info/", timeout=10).status_code == 200  # the API accepts the cookie
        pick = browser.post(f"{u}/activelearning/random", json={}, timeout=10).json()
        assert pick["lease"]["client_id"] == "ann"  # the panel sends no client_id: the user holds it
        assert browser.post(f"{u}/train/", timeout=10).status_code == 403  # an annotator's cookie
        evil = browser.post(
            f"{u}/login",
            data={"username": "ann", "password": PASSWORD, "next": "//evil.example/"},
            allow_redirects=False,
            timeout=10,
        )
        assert evil.headers["Location"] == "/"  # never off this server
        browser.get(f"{u}/logout", timeout=10)
        assert browser.get(f"{u}/info/", timeout=10).status_code == 401
    finally:
        srv.stop()
