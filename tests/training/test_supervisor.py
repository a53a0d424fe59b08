"""The job supervisor's start: a job turns RUNNING together with its pid, and a job stopped while its
process was starting never runs (a real subprocess, a real SQLite database)."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil

from server.database import Database
from server.jobs import models as jm
from server.jobs.kinds import JobKinds
from server.jobs.models import Job
from server.jobs.queue import JobQueue
from server.jobs.service import JobService
from server.jobs.supervisor import DeviceSlots, Supervisor
from tests.training.conftest import settings_and_db


class Sleeper(Supervisor):
    """A job process that only sleeps; ``stop_at_start`` stops the job between spawn and start."""

    stop_at_start = False
    spawned: list[int]
    seen: list[tuple[str, int | None]]

    def _command(self, job_id: str) -> list[str]:
        return [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(0.5)"]

    def _start(self, job_id: str, pid: int | None) -> bool:
        self.spawned.append(pid or 0)
        if self.stop_at_start:  # DELETE /train/ lands while the process is being started
            assert self.jobs.stop("train") is not None
        started = super()._start(job_id, pid)
        with self.db.session() as s:
            job = s.get(Job, job_id)
            assert job is not None
            self.seen.append((job.status, job.pid))  # the row as a client reads it right after the start
        return started


def supervisor(tmp_path: Path) -> tuple[Sleeper, JobService, Database]:
    settings, db = settings_and_db(tmp_path)
    jobs = JobService(db, JobQueue(settings.queue, settings.data), settings.data, JobKinds.load())
    sup = Sleeper(settings, db, jobs, "embedded@test", DeviceSlots([]))
    sup.spawned, sup.seen = [], []
    return sup, jobs, db


def test_a_job_runs_with_its_pid_recorded_from_the_start(tmp_path: Path) -> None:
    sup, jobs, db = supervisor(tmp_path)
    job_id = jobs.submit("train", "segmentation", {"rescore": False})["id"]
    sup.run(job_id)
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status == jm.DONE and job.pid == sup.spawned[0] and job.start_ts
    assert sup.seen == [(jm.RUNNING, sup.spawned[0])]  # RUNNING and the pid arrive in one update


def test_a_job_stopped_while_its_process_starts_is_killed_and_never_running(tmp_path: Path) -> None:
    sup, jobs, db = supervisor(tmp_path)
    sup.stop_at_start = True
    job_id = jobs.submit("train", "segmentation", {"rescore": False})["id"]
    sup.run(job_id)
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status == jm.STOPPED and job.pid is None and job.start_ts is None
    assert sup.seen == [(jm.STOPPED, None)]
    assert len(sup.spawned) == 1 and not psutil.pid_exists(sup.spawned[0])  # killed and reaped
