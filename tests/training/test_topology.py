"""The compose topology as processes (where no container engine runs): the server over PostgreSQL and
Redis with no consumer of its own, and two ``labelloop worker`` processes. A training job submitted to
the server runs on a worker; queued jobs are shared between the two workers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from server.services import build_services
from server.settings import Settings
from tests.conftest import REPO, Server, free_port, fresh_database
from tests.training.conftest import TEST_APP, save_label, wait_for, worker_command
from tests.training.test_job_kinds import TOY
from tests.training.test_remote_worker import redis_url  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from fresh_database("postgres", prefix="ll_topo_")


def test_server_and_two_workers_over_redis_and_postgres(
    train_studies: Path,
    label_files: list[Path],
    redis_url: str,  # noqa: F811
    pg_url: str,
) -> None:
    env = {"LABELLOOP_JOB_KINDS": TOY}
    args = ["--app", str(TEST_APP), "--db", pg_url, "--queue", redis_url, "--no-worker"]
    srv = Server(train_studies, free_port(), args=args, env=env).start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(2):
            with open(train_studies.parent / f"worker-{n}.log", "wb") as out:
                cmd = [*worker_command(train_studies), "--db", pg_url, "--queue", redis_url]
                workers.append(
                    subprocess.Popen(
                        cmd,
                        cwd=REPO,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
                    )
                )
        for i, path in enumerate(label_files):
            save_label(srv.url, f"study_{i}", path)
        job = requests.post(f"{srv.url}/train/segmentation", json={"max_epochs": 1, "rescore": False}).json()
        done = wait_for(srv.url, job["id"], ("DONE", "ERROR", "STOPPED"), timeout=180)
        assert done["status"] == "DONE" and done["worker"].startswith("worker@"), done
        pids = {str(w.pid) for w in workers}
        assert done["worker"].rsplit(":", 1)[-1] in pids  # one of the two worker processes ran it

        settings = Settings(
            app_dir=TEST_APP, studies=train_studies, db_url=pg_url, queue=redis_url, job_kinds=TOY
        )
        jobs = build_services(settings, role="job").jobs
        queued = [jobs.submit("toy", "toy", {"steps": 6, "seconds": 0.5}, enqueue=True) for _ in range(4)]
        deadline = time.monotonic() + 120
        rows = []
        while time.monotonic() < deadline:
            rows = [jobs.get(q["id"]) for q in queued]
            if all(r["status"] in ("DONE", "ERROR", "STOPPED") for r in rows):
                break
            time.sleep(0.5)
        assert all(r["status"] == "DONE" for r in rows), rows
        ran_on = {r["worker"] for r in rows}
        assert len(ran_on) == 2, ran_on  # both workers took jobs
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=20)
        srv.stop()
