"""What the server does when something is wrong around it: idle connections, an unexpected error, a
refused request, a job queue that is down at start."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from flask import Flask

from server.app import create_app
from server.settings import Settings
from tests.conftest import NO_WORKER, SEG_APP, Server, free_port


def test_idle_connections_do_not_lock_clients_out(studies: Path) -> None:
    srv = Server(studies, free_port(), env=dict(NO_WORKER)).start()
    idle = []
    try:
        for _ in range(150):  # more than waitress's default connection limit (100)
            idle.append(socket.create_connection(("127.0.0.1", srv.port), timeout=5))
        t0 = time.monotonic()
        assert requests.get(f"{srv.url}/info/", timeout=10).status_code == 200
        assert time.monotonic() - t0 < 5
    finally:
        for sock in idle:
            sock.close()
        srv.stop()


def test_an_unexpected_error_is_a_500_with_a_request_id_and_nothing_else(studies: Path) -> None:
    app = create_app(Settings(app_dir=SEG_APP, studies=studies, embedded_worker=False), background=False)

    def broken() -> str:
        raise RuntimeError(f"secret detail at {studies}")

    app.add_url_rule("/broken", "broken", broken)
    resp = app.test_client().get("/broken")
    assert resp.status_code == 500
    body = resp.get_json()
    request_id = resp.headers["X-Request-ID"]
    assert body == {"detail": f"internal error (request id {request_id})"}
    assert "secret" not in resp.get_data(as_text=True) and str(studies) not in resp.get_data(as_text=True)
    log = (studies / ".labelloop" / "logs" / "app.log").read_text()
    assert request_id in log and "secret detail" in log  # the log has the story, under the id


def test_a_refused_training_request_leaves_no_job(app_with_trainer: Flask) -> None:
    client = app_with_trainer.test_client()
    assert client.post("/train/segmentation", json={"max_epochs": 0}).status_code == 422
    assert client.post("/train/", json={"segmentation": {"val_split": 7}}).status_code == 422
    assert client.post("/train/", json={"segmentation": "not an object"}).status_code == 422
    assert client.get("/train/", query_string={"all": "true"}).status_code == 404  # "No Train Tasks Found"


@pytest.fixture
def app_with_trainer(studies: Path) -> Flask:
    return create_app(Settings(app_dir=SEG_APP, studies=studies, embedded_worker=False), background=False)


def test_the_server_starts_while_the_job_queue_is_down(studies: Path, tmp_path: Path) -> None:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed (scripts/test-servers.sh installs it from apt as root)")
    pytest.importorskip("redis", reason="the redis client is not installed")
    port = free_port()
    srv = Server(studies, free_port(), args=["--queue", f"redis://127.0.0.1:{port}/0", "--no-worker"])
    srv.start(timeout=60)
    redis = None
    try:
        ready = requests.get(f"{srv.url}/health/ready", timeout=30).json()
        assert ready["checks"]["job_queue"].startswith("down"), ready
        assert requests.get(f"{srv.url}/datastore/", timeout=10).status_code == 200
        task = requests.post(f"{srv.url}/train/segmentation", json={"max_epochs": 1}, timeout=30)
        assert task.status_code == 200 and task.json()["status"] == "SUBMITTED"  # stored, queued later
        redis = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            checks = requests.get(f"{srv.url}/health/ready", timeout=30).json()["checks"]
            if checks["job_queue"] == "up":
                break
            time.sleep(0.3)
        assert checks["job_queue"] == "up"
    finally:
        srv.stop()
        if redis is not None:
            redis.terminate()
            redis.wait(timeout=10)
