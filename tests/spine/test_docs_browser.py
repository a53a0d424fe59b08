"""``/docs/`` in a real browser: headless Chromium, with every host but this one unreachable, renders
Swagger UI over the server's OpenAPI 3.1 document: every operation is on the page (no CDN needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.conftest import NO_WORKER, Server, free_port

BROWSER = ["chromium", "chromium-browser", "google-chrome"]


def browser() -> str:
    for name in BROWSER:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium (apt-get install -y chromium; scripts/test-servers.sh installs it as root)")


def headless(exe: str, *args: str) -> list[str]:
    return [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # nothing but this server
        "--virtual-time-budget=15000",
        *args,
    ]


def test_swagger_ui_renders_every_operation_offline(studies: Path, tmp_path: Path) -> None:
    exe = browser()
    srv = Server(studies, free_port(), env=dict(NO_WORKER)).start()
    try:
        doc = requests.get(f"{srv.url}/openapi.json", timeout=30).json()
        page = f"{srv.url}/docs/"
        dom = subprocess.run(
            headless(exe, "--dump-dom", page), capture_output=True, text=True, timeout=120, check=True
        ).stdout
        shot = tmp_path / "docs.png"
        subprocess.run(
            headless(exe, "--window-size=1280,1600", f"--screenshot={shot}", page), timeout=120, check=True
        )
    finally:
        srv.stop()
    assert "OAS 3.1" in dom and "swagger-ui" in dom
    rendered = {part.split('"', 1)[0] for part in dom.split('class="opblock-summary-path" data-path="')[1:]}
    assert rendered == set(doc["paths"]), set(doc["paths"]) ^ rendered
    assert shot.is_file() and shot.stat().st_size > 20_000  # the screenshot is kept with the test's files
    print(f"\nSwagger UI: {len(rendered)} paths rendered; screenshot {shot}")
