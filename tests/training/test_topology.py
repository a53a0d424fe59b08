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
from tests.conftest import REPO, Server, free_port, fresh_database, write_volume
from tests.training.conftest import TEST_APP, save_label, wait_for, worker_command
from tests.training.test_job_kinds import TOY
from tests.training.test_remote_worker import redis_url  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from fresh_database("postgres", prefix="ll_topo_")


def start_workers(studies: Path, args: list[str], env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """Two ``labelloop worker`` processes for the test app, each logging to ``worker-<n>.log``."""
    workers = []
    for n in range(2):
        with open(studies.parent / f"worker-{n}.log", "wb") as out:
            workers.append(
                subprocess.Popen(
                    [*worker_command(studies), *args],
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **env, "PYTHONPATH": str(REPO)},
                )
            )
    return workers


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
        workers += start_workers(train_studies, ["--db", pg_url, "--queue", redis_url], env)
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


def test_a_sharded_rescore_on_two_workers_survives_a_kill_9_mid_chunk(
    train_studies: Path,
    redis_url: str,  # noqa: F811
    pg_url: str,
) -> None:
    """A rescore of 16 studies as 8 chunks: both workers take chunks; one worker is killed (SIGKILL) in
    the middle of a chunk; the server's watchdog queues that chunk again, the other worker finishes it,
    and every study ends up scored once, none lost."""
    for i in range(4, 16):
        write_volume(train_studies / f"study_{i}.nii.gz", seed=i)
    calls = train_studies.parent / "score-calls.log"
    conf = ["--conf", "scoring", "true", "--conf", "score_seconds", "1.0", "--conf", "score_log", str(calls)]
    args = ["--app", str(TEST_APP), "--db", pg_url, "--queue", redis_url, "--no-worker", *conf]
    env = {"LABELLOOP_JOB_STALE_SECONDS": "10"}  # the server's watchdog: a worker silent 10 s is gone
    srv = Server(train_studies, free_port(), args=args, env=env).start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        workers += start_workers(train_studies, ["--db", pg_url, "--queue", redis_url, *conf], {})
        task = requests.post(f"{srv.url}/scoring/entropy", json={"chunk_size": 2}, timeout=30).json()
        assert task["worker"] == "shards" and task["result"]["chunks"] == 8, task
        settings = Settings(app_dir=TEST_APP, studies=train_studies, db_url=pg_url, queue=redis_url)
        shards = build_services(settings, role="job").jobs.shards

        # Wait for a worker that has finished a chunk and is in the middle of another (a call logged).
        victim, victim_chunk = None, None
        deadline = time.monotonic() + 180
        while victim is None and time.monotonic() < deadline:
            chunks = shards.latest(task["id"])
            logged = calls.read_text().split() if calls.exists() else []
            for w in workers:
                mine = [c for c in chunks if c.worker and c.worker.endswith(f":{w.pid}")]
                busy = [c for c in mine if c.status == "RUNNING" and str(c.pid) in logged[0::2]]
                if any(c.status == "DONE" for c in mine) and busy:
                    victim, victim_chunk = w, busy[0]
                    break
            time.sleep(0.2)
        assert victim is not None and victim_chunk is not None, "no worker was seen mid-chunk"
        victim.kill()
        victim.wait(timeout=10)

        done = wait_for(srv.url, task["id"], ("DONE", "ERROR", "STOPPED"), timeout=300, path="/scoring/")
        assert done["status"] == "DONE", done
        chunks = shards.latest(task["id"])
        survivor = next(w for w in workers if w is not victim)
        assert all(c.status == "DONE" for c in chunks)
        redone = next(c for c in chunks if c.chunk == victim_chunk.chunk)
        assert redone.worker is not None and redone.worker.endswith(f":{survivor.pid}")  # taken elsewhere
        assert redone.result.get("skipped", 0) >= 1  # what the killed try had stored was not redone
        assert len(done["result"]["workers"]) == 2  # both workers did chunks
        assert done["result"]["scored"] + sum(c.result.get("skipped", 0) for c in chunks) == 16

        # Every study holds its one score of this model version; none lost.
        with psycopg_connect(pg_url) as conn:
            scored = conn.execute(
                "SELECT image_id, count(*) FROM scores WHERE method = 'entropy' GROUP BY image_id"
            ).fetchall()
        assert sorted(i for i, _ in scored) == sorted(f"study_{i}" for i in range(16))
        assert all(n == 1 for _, n in scored)
        # Scoring calls made: one per study, plus at most the one the kill cut short before it was stored.
        sums = calls.read_text().split()[1::2]
        assert len(set(sums)) == 16 and 16 <= len(sums) <= 17, sums
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=20)
        srv.stop()


def psycopg_connect(url: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
