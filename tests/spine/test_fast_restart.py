"""A restart answers ``/info/`` from the app's card before torch is loaded; the app loads meanwhile.

The app here waits ``LABELLOOP_TEST_APP_DELAY`` seconds before it imports anything (torch, MONAI), so the
test can look inside the server process (its memory maps: ``libtorch`` is there once torch is imported)
while the app is still loading."""

from __future__ import annotations

import time
from pathlib import Path

import requests

from tests.conftest import NO_WORKER, Server, free_port

DELAYED_APP = """
import os
import time

time.sleep(float(os.environ.get("LABELLOOP_TEST_APP_DELAY", "0")))
if os.environ.get("LABELLOOP_TEST_APP_FAIL"):
    raise RuntimeError("deliberately broken at import")

from apps.segmentation.main import build_app  # noqa: E402,F401  (torch and MONAI come in here)
"""
DELAY_S = 10.0


def torch_loaded(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def wait_info(url: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = requests.get(f"{url}/info/", timeout=2)
            if r.status_code == 200:
                return r.json()
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise AssertionError("no /info/")


def start_raw(srv: Server, env: dict[str, str]) -> Server:
    """Start without waiting for the app to load (the fixture would)."""
    srv.env = {**NO_WORKER, **env}
    srv._app_loaded = lambda: True  # type: ignore[method-assign]
    return srv.start()


def started_once(tmp_path: Path, studies: Path) -> tuple[Path, Server]:
    """The delayed app in ``tmp_path/app``, started once (so its card is written) and still running."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text(DELAYED_APP)
    return app, Server(studies, free_port(), args=["--app", str(app)], env=dict(NO_WORKER)).start()


def test_restart_answers_info_from_the_card_before_torch_then_loads(tmp_path: Path, studies: Path) -> None:
    _, srv = started_once(tmp_path, studies)
    loaded_info = requests.get(f"{srv.url}/info/", timeout=10).json()
    assert loaded_info["models"] and (studies / ".labelloop" / "app-card.json").exists()
    srv.stop()

    try:
        start_raw(srv, {"LABELLOOP_TEST_APP_DELAY": str(DELAY_S)})
        assert srv.proc is not None
        info = wait_info(srv.url)
        assert not torch_loaded(srv.proc.pid)  # answered before torch was imported
        assert info == loaded_info  # the card says what the loaded app said
        ready = requests.get(f"{srv.url}/health/ready", timeout=10)
        assert ready.status_code == 503 and ready.json()["checks"]["app"] == "loading"
        # A request that needs the app waits for it, then is answered.
        r = requests.post(f"{srv.url}/activelearning/random", json={}, timeout=120)
        assert r.status_code == 200 and r.json()["id"].startswith("study_"), r.text
        assert torch_loaded(srv.proc.pid)
        assert requests.get(f"{srv.url}/health/ready", timeout=10).json()["checks"]["app"] == "up"
        assert requests.get(f"{srv.url}/info/", timeout=10).json() == loaded_info
    finally:
        srv.stop()


def test_an_app_that_no_longer_loads_answers_503_with_the_reason(tmp_path: Path, studies: Path) -> None:
    app, srv = started_once(tmp_path, studies)
    srv.stop()
    try:
        srv.ready_path = "/health/live"
        start_raw(srv, {"LABELLOOP_TEST_APP_FAIL": "1"})  # the same files: the card still matches
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = requests.get(f"{srv.url}/health/ready", timeout=10)
            if ready.json()["checks"]["app"] != "loading":
                break
            time.sleep(0.1)
        assert ready.status_code == 503 and "deliberately broken" in ready.json()["checks"]["app"]
        for r in (
            requests.post(f"{srv.url}/activelearning/random", json={}, timeout=30),
            requests.get(f"{srv.url}/info/", timeout=30),
        ):
            assert r.status_code == 503 and "the app did not load: RuntimeError" in r.json()["detail"]
            assert str(app) not in r.json()["detail"]
    finally:
        srv.stop()


def test_a_changed_app_is_loaded_before_the_server_answers(tmp_path: Path, studies: Path) -> None:
    app, srv = started_once(tmp_path, studies)
    srv.stop()
    (app / "main.py").write_text(DELAYED_APP + "\n# changed\n")  # the card no longer matches
    try:
        start_raw(srv, {})
        assert srv.proc is not None
        wait_info(srv.url)
        assert torch_loaded(srv.proc.pid)  # loaded first, as on a first start
        assert requests.get(f"{srv.url}/health/ready", timeout=10).json()["checks"]["app"] == "up"
    finally:
        srv.stop()
