"""A remote worker: the server with ``--queue redis://... --no-worker``, and ``labelloop worker`` apart."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, Server, free_port
from tests.training.conftest import TEST_APP, save_label, wait_for, worker_command

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed (scripts/test-servers.sh installs it from apt as root)")
    pytest.importorskip("redis", reason="the redis client is not installed (pip install 'labelloop[redis]')")
    import redis

    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


def test_jobs_wait_for_a_remote_worker_then_run_there(
    train_studies: Path, label_files: list[Path], redis_url: str
) -> None:
    srv = Server(
        train_studies, free_port(), args=["--app", str(TEST_APP), "--queue", redis_url, "--no-worker"]
    )
    srv.start()
    worker: subprocess.Popen[bytes] | None = None
    try:
        for i, path in enumerate(label_files):
            save_label(srv.url, f"study_{i}", path)
        job = requests.post(f"{srv.url}/train/segmentation", json={"max_epochs": 1, "rescore": False}).json()
        time.sleep(2)
        assert requests.get(f"{srv.url}/train/", timeout=10).json()["status"] == "SUBMITTED"  # no consumer

        cmd = worker_command(train_studies)
        log = train_studies.parent / "worker.log"
        with open(log, "wb") as out:
            worker = subprocess.Popen(
                [*cmd, "--queue", redis_url],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(os.environ),
            )
        done = wait_for(srv.url, job["id"], ("DONE", "ERROR", "STOPPED"), timeout=90)
        assert done["status"] == "DONE", (done, log.read_text()[-3000:])
        assert done["worker"].startswith("worker@") and done["model_version"] == 1
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=15)
        srv.stop()
