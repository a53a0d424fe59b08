"""The API contract: ``/openapi.json`` is valid OpenAPI 3.1, lists every route the server serves, and a
schemathesis run against the live server finds no 5xx and no reply that contradicts it; ``/docs`` works
offline; typed request parameters answer 422 with the field and the reason."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from flask import Flask
from openapi_spec_validator import validate

from server.app import create_app
from server.settings import Settings
from tests.conftest import NO_WORKER, REPO, SEG_APP, Server, free_port

SCHEMATHESIS_CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
)


@pytest.fixture
def app(studies: Path) -> Flask:
    return create_app(Settings(app_dir=SEG_APP, studies=studies, embedded_worker=False), background=False)


def test_the_document_is_valid_openapi_31(app: Flask) -> None:
    doc = app.test_client().get("/openapi.json").get_json()
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on any structural error


def test_the_document_lists_every_route_and_method_the_app_serves(app: Flask) -> None:
    doc = app.test_client().get("/openapi.json").get_json()
    served = 0
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[a-z]+:)?(\w+)>", r"{\1}", rule.rule)
        assert path in doc["paths"], f"{rule.rule} is served but not documented"
        for method in (rule.methods or set()) - {"OPTIONS", "HEAD"}:
            assert method.lower() in doc["paths"][path], f"{method} {rule.rule} is served but not documented"
            served += 1
    documented = sum(len(item) for item in doc["paths"].values())
    assert served >= 45 and documented == served + 1  # + the explicit HEAD of /datastore/label
    assert "head" in doc["paths"]["/datastore/label"]


def test_the_wire_forms_are_documented(app: Flask) -> None:
    doc = app.test_client().get("/openapi.json").get_json()
    upload = doc["paths"]["/datastore/label"]["put"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["schema"]["required"] == ["label"]
    assert upload["schema"]["properties"]["label"]["contentMediaType"] == "application/octet-stream"
    infer = doc["paths"]["/infer/{model}"]["post"]["responses"]["200"]["content"]
    assert {"multipart/form-data", "application/octet-stream", "application/json"} <= set(infer)
    listing = {p["name"]: p for p in doc["paths"]["/datastore/"]["get"]["parameters"]}
    assert listing["output"]["schema"]["enum"] == ["stats", "all", "train", "page"]
    assert doc["paths"]["/"]["get"]["responses"]["200"]["content"] == {
        "text/html": {"schema": {"type": "string"}}
    }
    assert doc["paths"]["/info/"]["get"]["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Detail"
    }


def test_invalid_values_are_422_with_the_field_and_the_reason(app: Flask) -> None:
    client = app.test_client()
    for url, field in [
        ("/datastore/?output=page&limit=ten", "limit"),
        ("/datastore/?output=everything", "output"),
        ("/train/?all=maybe", "all"),
        ("/logs/?lines=1.5", "lines"),
        ("/batch/infer/segmentation?images=some", "images"),
    ]:
        r = client.get(url) if not url.startswith("/batch") else client.post(url)
        assert r.status_code == 422, url
        assert f"'{field}'" in r.get_json()["detail"], r.get_json()
    # MONAI Label's lax forms still pass: "1", "yes", an empty value (absent)
    assert client.get("/datastore/?output=page&limit=2&completed=no").status_code == 200
    assert client.get("/train/?all=").status_code == 404  # no tasks yet, not a 422


def test_swagger_ui_is_served_from_local_assets(app: Flask) -> None:
    client = app.test_client()
    page = client.get("/docs/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html  # no CDN
    for asset, mimetype in (("swagger-ui-bundle.js", "text/javascript"), ("swagger-ui.css", "text/css")):
        assert asset in html
        r = client.get(f"/docs/{asset}")
        assert r.status_code == 200 and r.mimetype == mimetype and len(r.data) > 10_000
    assert client.get("/docs/..%2Fsettings.py").status_code == 404
    assert client.get("/").status_code == 200  # the Reviewer plugin connects with GET /


def test_schemathesis_finds_no_5xx_and_no_reply_contradicting_the_document(studies: Path) -> None:
    srv = Server(studies, free_port(), env=dict(NO_WORKER)).start()
    try:
        assert requests.get(f"{srv.url}/openapi.json", timeout=10).status_code == 200
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.spine.schemathesis_hooks", "PYTHONPATH": str(REPO)}
        cmd = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{srv.url}/openapi.json",
            "--checks",
            SCHEMATHESIS_CHECKS,
            "--max-examples",
            "25",
            "--generation-deterministic",
            "--request-timeout",
            "60",
            "--no-color",
        ]
        out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        report = out.stdout + out.stderr
        assert out.returncode == 0, report[-6000:]
        assert re.search(r"\d+ generated", report), report[-2000:]
        log = srv.log.read_text() if srv.log else ""
        assert "unhandled error" not in log
    finally:
        srv.stop()
