"""Sharded jobs: a rescore split into chunks, each chunk a row any worker takes, the parent settled from
their rows (server/jobs/shards.py). The topology test (test_topology.py) runs chunks on two workers and
kills one of them mid-chunk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import requests
from sqlalchemy import select, update

from server.database import Database
from server.jobs import models as jm
from server.jobs.kinds import JobKinds
from server.jobs.models import Job
from server.jobs.queue import JobQueue
from server.jobs.service import JobService
from server.jobs.shards import CHUNK_ATTEMPTS, Shards, id_ranges, in_range, merge_results
from tests.conftest import Server, write_volume
from tests.training.conftest import settings_and_db, wait_for


def set_row(db: Database, job_id: str, **values: object) -> None:
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def rows(db: Database, parent_id: str) -> list[Job]:
    with db.session() as s:
        return list(s.scalars(select(Job).where(Job.parent_id == parent_id).order_by(Job.chunk, Job.attempt)))


def parent(db: Database, parent_id: str) -> Job:
    with db.session() as s:
        job = s.get(Job, parent_id)
    assert job is not None
    return job


def test_ranges_cover_every_id_once() -> None:
    ids = sorted(f"study_{i}" for i in range(11))
    ranges = id_ranges(ids, 4)
    assert [len(in_range(ids, {"range": list(r)})) for r in ranges] == [4, 4, 3]
    covered = [i for r in ranges for i in in_range(ids, {"range": list(r)})]
    assert covered == ids
    assert in_range(ids, {}) == ids  # not a chunk: everything


def test_merge_sums_numbers_joins_lists_keeps_agreements() -> None:
    merged = merge_results(
        [
            {"scored": 2, "methods": ["entropy"], "model_version": "m@1", "failed": ["a"], "resumes": 1},
            {"scored": 3, "methods": ["entropy"], "model_version": "m@1", "failed": ["b"]},
            {"scored": 1, "methods": ["entropy"], "model_version": "m@2", "failed": []},
        ]
    )
    assert merged == {
        "scored": 6,
        "methods": ["entropy"],
        "model_version": ["m@1", "m@2"],
        "failed": ["a", "b"],
    }


def test_a_failed_chunk_is_tried_again_once_then_the_parent_is_done(tmp_path: Path) -> None:
    _, db = settings_and_db(tmp_path)
    queued: list[str] = []
    shards = Shards(db, lambda job_id: queued.append(job_id) or True)
    top, chunks = shards.create(
        "scoring", "seg", {"methods": ["entropy"]}, [("a", "b"), ("c", "d"), ("e", "f")]
    )
    assert parent(db, top.id).status == jm.RUNNING and [c.chunk for c in chunks] == [0, 1, 2]
    assert {c.kind for c in chunks} == {"scoring.chunk"} and chunks[1].request["range"] == ["c", "d"]

    set_row(db, chunks[0].id, status=jm.DONE, progress=1.0, result={"scored": 2, "worker_note": "x"})
    set_row(db, chunks[1].id, status=jm.ERROR, error="RuntimeError: disk full")
    set_row(db, chunks[2].id, status=jm.RUNNING, progress=0.5)
    assert shards.settle(top.id) is None
    assert shards.settle(top.id) is None  # a second settle adds no second retry
    again = [r for r in rows(db, top.id) if r.chunk == 1]
    assert [(r.attempt, r.status) for r in again] == [(1, jm.ERROR), (2, jm.SUBMITTED)]
    assert queued == [again[1].id]
    assert abs(parent(db, top.id).progress - (1.0 + 0.0 + 0.5) / 3) < 1e-9

    set_row(db, again[1].id, status=jm.DONE, progress=1.0, result={"scored": 2}, worker="worker@h:2")
    set_row(db, chunks[2].id, status=jm.DONE, progress=1.0, result={"scored": 1}, worker="worker@h:1")
    assert shards.settle(top.id) == jm.DONE
    done = parent(db, top.id)
    assert done.status == jm.DONE and done.progress == 1.0 and done.end_ts is not None
    assert done.result["scored"] == 5 and done.result["chunks"] == 3 and done.result["chunk_retries"] == 1
    assert done.result["workers"] == ["worker@h:1", "worker@h:2"]
    assert shards.settle(top.id) is None  # DONE stays DONE


def test_a_chunk_failing_every_try_ends_the_parent_error_and_stops_the_rest(tmp_path: Path) -> None:
    _, db = settings_and_db(tmp_path)
    shards = Shards(db, lambda job_id: True)
    top, chunks = shards.create("scoring", "seg", {}, [("a", "b"), ("c", "d")])
    set_row(db, chunks[1].id, status=jm.RUNNING)
    for attempt in range(1, CHUNK_ATTEMPTS + 1):
        latest = [r for r in rows(db, top.id) if r.chunk == 0][-1]
        assert latest.attempt == attempt
        set_row(db, latest.id, status=jm.ERROR, error=f"ValueError: bad study (try {attempt})")
        shards.settle(top.id)
    failed = parent(db, top.id)
    assert failed.status == jm.ERROR
    assert failed.error == f"chunk 0 (a .. b) failed {CHUNK_ATTEMPTS} times: ValueError: bad study (try 3)"
    running = next(r for r in rows(db, top.id) if r.chunk == 1)
    assert running.stop_requested  # its worker kills it


def test_stopping_a_sharded_job_stops_its_queued_chunks(tmp_path: Path) -> None:
    settings, db = settings_and_db(tmp_path)
    jobs = JobService(db, JobQueue("", settings.data), settings.data, JobKinds.load())
    top, chunks = jobs.shards.create("scoring", "seg", {}, [("a", "b"), ("c", "d")])
    set_row(db, chunks[0].id, status=jm.RUNNING)
    stopped = jobs.stop("scoring")
    assert stopped is not None and stopped["id"] == top.id and stopped["status"] == jm.STOPPED
    after = rows(db, top.id)
    assert after[0].status == jm.RUNNING and after[0].stop_requested  # its worker kills it
    assert after[1].status == jm.STOPPED


def test_a_rescore_over_more_studies_than_a_chunk_runs_as_chunks(
    make_server: Callable[..., Server], train_studies: Path
) -> None:
    for i in range(4, 7):
        write_volume(train_studies / f"study_{i}.nii.gz", seed=i)
    srv = make_server("--conf", "scoring", "true")
    bad = requests.post(f"{srv.url}/scoring/entropy", json={"chunk_size": -1}, timeout=10)
    assert bad.status_code == 422 and "chunk_size" in bad.json()["detail"]

    task = requests.post(f"{srv.url}/scoring/entropy", json={"chunk_size": 3}, timeout=10).json()
    assert task["status"] == "RUNNING" and task["worker"] == "shards" and task["result"]["chunks"] == 3
    assert (
        requests.post(f"{srv.url}/scoring/entropy", json={}, timeout=10).status_code == 429
    )  # one at a time
    done = wait_for(srv.url, task["id"], ("DONE", "ERROR", "STOPPED"), timeout=240, path="/scoring/")
    assert done["status"] == "DONE", done
    assert done["result"]["scored"] == 7 and done["result"]["chunks"] == 3 and done["progress"] == 1.0
    listed = requests.get(f"{srv.url}/scoring/", params={"all": "true"}, timeout=10).json()
    assert [t["id"] for t in listed] == [task["id"]]  # chunks are rows of their own kind, not listed here
    coverage = requests.get(f"{srv.url}/scoring/coverage", timeout=10).json()
    assert coverage["methods"]["entropy"]["coverage"] == 1.0

    # Again, nothing new to score: every chunk skips what its model version already scored.
    again = requests.post(f"{srv.url}/scoring/entropy", json={"chunk_size": 3}, timeout=10).json()
    done = wait_for(srv.url, again["id"], ("DONE", "ERROR", "STOPPED"), timeout=240, path="/scoring/")
    assert done["status"] == "DONE" and done["result"]["scored"] == 0 and done["result"]["skipped"] == 7
