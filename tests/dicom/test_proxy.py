"""``/proxy/dicom/`` against a real HTTP server on a free port standing in for the PACS: what goes up
(path, query, headers), what comes back (status, content headers, body), and what never leaves."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from server.api.common import services_of
from server.app import create_app
from server.dicom.proxy import DicomWebProxy, UpstreamError, safe_path
from server.errors import BadRequest
from server.settings import Settings
from tests.conftest import SEG_APP, free_port


class Recorder(BaseHTTPRequestHandler):
    """Answers every request with JSON describing it (or a 404 under /missing)."""

    seen: list[dict[str, Any]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        record = {
            "method": self.command,
            "path": self.path,
            "headers": dict(self.headers),
            "body": body.decode(),
        }
        type(self).seen.append(record)
        if self.path.startswith("/dicom-web/missing"):
            self.send_response(404)
            payload = b'{"error": "no such study"}'
        elif self.path.startswith("/dicom-web/studies") and self.command == "GET":
            self.send_response(200)
            payload = b"[]"  # QIDO: no studies (the server's start-up probe asks this)
        else:
            self.send_response(200)
            payload = json.dumps(record).encode()
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Set-Cookie", "pacs=secret")
        self.send_header("X-Internal", "1")
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def pacs() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/dicom-web"
    finally:
        httpd.shutdown()


def body(chunks: Iterator[bytes]) -> Any:
    return json.loads(b"".join(chunks))


def test_paths_stay_under_the_source_root() -> None:
    assert safe_path("studies/1.2.3/series") == "studies/1.2.3/series"
    assert safe_path("studies/a b?c#d") == "studies/a%20b%3Fc%23d"  # no query or fragment smuggled in
    for bad in ("../tools", "studies/../../tools", "studies//x", "./studies", "a\\b", "studies/\n"):
        with pytest.raises(BadRequest):
            safe_path(bad)
    proxy = DicomWebProxy("http://pacs:8042/dicom-web/", {"wado": "wado-rs", "qido": ""})
    assert proxy.target("qido/studies") == "http://pacs:8042/dicom-web/studies"
    assert proxy.target("wado/studies/1/series/2") == "http://pacs:8042/dicom-web/wado-rs/studies/1/series/2"
    assert proxy.target("studies") == "http://pacs:8042/dicom-web/studies"
    with pytest.raises(BadRequest):
        proxy.target("qido/")


def test_relay_sends_only_what_dicomweb_needs(pacs: str) -> None:
    proxy = DicomWebProxy(pacs)
    headers = {
        "Accept": "application/dicom+json",
        "Authorization": "Bearer labelloop-token",
        "Cookie": "MONAILABEL_SERVER_URL=x",
        "X-Forwarded-For": "10.0.0.1",
    }
    status, down, chunks = proxy.relay("GET", "qido/echo/1.2.3", b"PatientID=P%2A&limit=5", headers, None)
    seen = body(chunks)
    assert status == 200 and seen["path"] == "/dicom-web/echo/1.2.3?PatientID=P%2A&limit=5"
    sent = {k.lower(): v for k, v in seen["headers"].items()}
    assert "accept" in sent and not set(sent) & {"authorization", "cookie", "x-forwarded-for"}
    assert sent["accept-encoding"] == "identity"  # the caller asked for no encoding: none is asked upstream
    assert down["Content-Type"] == "application/dicom+json"
    assert not {k.lower() for k in down} & {"set-cookie", "x-internal"}  # only content headers come back

    status, _, chunks = proxy.relay("GET", "missing/1", b"", {}, None)
    assert status == 404 and body(chunks) == {"error": "no such study"}  # the PACS's answer, relayed

    payload = b'{"stow": true}'

    up = {"Content-Type": "application/dicom+json", "Content-Length": str(len(payload))}
    status, _, chunks = proxy.relay("POST", "stow/studies", b"", up, io.BytesIO(payload))
    seen = body(chunks)
    assert status == 200 and seen["method"] == "POST" and seen["body"] == payload.decode()
    # the PACS set a cookie on every answer: the shared session keeps none for the next caller
    assert "cookie" not in {k.lower() for k in seen["headers"]} and not proxy.session.cookies


def test_an_unreachable_source_is_a_502() -> None:
    proxy = DicomWebProxy(f"http://127.0.0.1:{free_port()}/dicom-web")
    with pytest.raises(UpstreamError) as err:
        proxy.relay("GET", "studies", b"", {}, None)
    assert err.value.status == 502


def make_app(tmp_path: Path, **extra: Any) -> Flask:
    (tmp_path / "studies").mkdir(parents=True, exist_ok=True)
    settings = Settings(app_dir=SEG_APP, studies=tmp_path / "studies", db_url="", **extra)
    return create_app(settings, background=False)


def test_the_route_relays_and_refuses(pacs: str, tmp_path: Path) -> None:
    app = make_app(tmp_path, dicomweb_url=pacs)
    client = app.test_client()
    r = client.get("/proxy/dicom/qido/echo/1.2.3?limit=1", headers={"Authorization": "Bearer t"})
    assert r.status_code == 200 and r.get_json()["path"] == "/dicom-web/echo/1.2.3?limit=1"
    assert "authorization" not in {k.lower() for k in r.get_json()["headers"]}
    for bad in ("/proxy/dicom/qido/%2e%2e/%2e%2e/tools", "/proxy/dicom/studies/%2e%2e/%2e%2e/x"):
        r = client.get(bad)
        assert r.status_code == 400 and "bad DICOMweb path" in r.get_json()["detail"]
    services_of(app).close()

    plain = make_app(tmp_path / "plain")
    r = plain.test_client().get("/proxy/dicom/qido/studies")
    assert r.status_code == 404 and "no DICOMweb source" in r.get_json()["detail"]
