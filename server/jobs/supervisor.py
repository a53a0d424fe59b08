"""Runs one job in a consumer: a subprocess per job, its output streamed into the row, stop and exit handled.

The job itself (``python -m server.jobs.run <job_id>``) runs in its own process (and session), so a
crash, an out-of-memory kill or a hung CUDA call ends that process only: the consumer records ERROR and
takes the next job. Stopping kills the subprocess's whole tree.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

from sqlalchemy import update

from server.database import Database
from server.jobs import models as jm
from server.jobs.models import Job
from server.jobs.procs import kill_tree
from server.jobs.service import INTERRUPTED, JobService
from server.settings import Settings, settings_env

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 5.0
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class DeviceSlots:
    """The devices of this consumer: one job per device at a time. CPU-only machines have one slot."""

    def __init__(self, gpus: list[str]) -> None:
        self.gpus = list(gpus)
        self._free = list(gpus) if gpus else ["cpu"]
        self._cond = threading.Condition()

    @property
    def count(self) -> int:
        return max(1, len(self.gpus))

    def acquire(self, n: int) -> list[str]:
        n = max(1, min(n, self.count))
        with self._cond:
            self._cond.wait_for(lambda: len(self._free) >= n)
            taken, self._free = self._free[:n], self._free[n:]
            return taken

    def release(self, taken: list[str]) -> None:
        with self._cond:
            self._free.extend(taken)
            self._cond.notify_all()


class Supervisor:
    def __init__(
        self, settings: Settings, db: Database, jobs: JobService, worker: str, slots: DeviceSlots
    ) -> None:
        self.settings = settings
        self.db = db
        self.jobs = jobs
        self.worker = worker
        self.slots = slots
        self.closing = threading.Event()
        self._procs: dict[str, subprocess.Popen[str]] = {}
        self._lock = threading.Lock()
        self.embedded = worker.startswith("embedded@")

    # ---- the Huey task body ----------------------------------------------------------------
    def run(self, job_id: str) -> None:
        try:
            self._run(job_id)
        except Exception as exc:  # the consumer thread must survive; the row says what happened
            log.exception("job %s: supervisor failed", job_id)
            self._finish(job_id, jm.ERROR, error=f"the job supervisor failed: {type(exc).__name__}: {exc}")

    def _run(self, job_id: str) -> None:
        if self.closing.is_set():
            return  # still SUBMITTED: the next start re-queues it
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.status != jm.SUBMITTED:
                return  # stopped before it started, or a duplicate message
            wants = self._devices_wanted(job)
        taken = self.slots.acquire(wants)
        try:
            if not self._supervise(job_id, [d for d in taken if d != "cpu"]):
                return
        finally:
            self.slots.release(taken)
        self._after(job_id)

    def _start(self, job_id: str, pid: int | None) -> bool:
        """SUBMITTED -> RUNNING with the process's pid, in one update, so a RUNNING job always shows the
        pid it runs as; False when the job is no longer SUBMITTED (stopped, or taken by another worker)."""
        now = time.time()
        with self.db.session() as s:
            res = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == jm.SUBMITTED)
                .values(status=jm.RUNNING, start_ts=now, heartbeat_ts=now, worker=self.worker, pid=pid)
            )
            return bool(getattr(res, "rowcount", 0))

    def _devices_wanted(self, job: Job) -> int:
        """As many device slots as the job's kind asks for (training with ``multi_gpu``: all of them)."""
        return self.jobs.kinds.get(job.kind).devices(job.request, self.slots.count)

    # ---- the subprocess --------------------------------------------------------------------
    def _command(self, job_id: str) -> list[str]:
        cmd = [sys.executable, "-m", "server.jobs.run", job_id]
        for key, value in sorted(self.settings.conf.items()):
            cmd += ["--conf", key, value]
        return cmd

    def _env(self, gpus: list[str]) -> dict[str, str]:
        env = {**os.environ, **settings_env(self.settings), "PYTHONUNBUFFERED": "1"}
        path = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = str(PACKAGE_ROOT) + (os.pathsep + path if path else "")
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        # Idle OpenMP threads sleep instead of spinning: a job shares its cores with the server's request
        # threads and with other workers' jobs, and spinning threads then slow everyone (measured in
        # benchmarks/sharded_rescore.py: a rescore took 49 s instead of 65 s with one worker, and two
        # workers on two cores stopped taking twice as long as one). An operator's own setting wins.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        return env

    def _supervise(self, job_id: str, gpus: list[str]) -> bool:
        """Start the job's process, mark the job RUNNING and watch it to the end; False when the job was
        not SUBMITTED any more by the time its process started (the process is then killed)."""
        job_dir = self.settings.data / "jobs" / job_id
        job_dir.mkdir(parents=True, exist_ok=True)
        lines: deque[str] = deque(maxlen=jm.DETAIL_LINES)
        changed = threading.Event()
        try:
            proc = subprocess.Popen(
                self._command(job_id),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self._env(gpus),
                cwd=str(PACKAGE_ROOT),
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,
            )
        except OSError as exc:
            if self._start(job_id, None):
                self._finish(job_id, jm.ERROR, error=f"could not start the job process: {exc}")
            return True
        if not self._start(job_id, proc.pid):
            kill_tree(proc.pid)
            proc.communicate(timeout=10)  # reaped, its pipe drained and closed
            return False
        with self._lock:
            self._procs[job_id] = proc
        log.info("job %s running as pid %d on %s", job_id, proc.pid, ",".join(gpus) or "cpu")
        assert proc.stdout is not None
        reader = threading.Thread(
            target=_read_lines, args=(proc.stdout, job_dir / "job.log", lines, changed), daemon=True
        )
        reader.start()
        last_beat = 0.0
        killed = False
        while proc.poll() is None:
            changed.wait(POLL_SECONDS)
            if self.closing.is_set():
                return True
            now = time.monotonic()
            if changed.is_set() or now - last_beat >= HEARTBEAT_SECONDS:
                changed.clear()
                last_beat = now
                stop = self._flush(job_id, list(lines))
                if stop and not killed:
                    log.info("job %s: stop requested, killing pid %d and its children", job_id, proc.pid)
                    kill_tree(proc.pid)
                    killed = True
        reader.join(timeout=5)
        with self._lock:
            self._procs.pop(job_id, None)
        if self.closing.is_set():
            return True
        stop = self._flush(job_id, list(lines))
        rc = proc.returncode
        if stop:
            self._finish(job_id, jm.STOPPED, detail="STOPPED")
        elif rc == 0:
            self._finish(job_id, jm.DONE, progress=1.0)
        else:
            self._finish(job_id, jm.ERROR, error=self._error_text(job_id, rc, list(lines)))
        return True

    def _flush(self, job_id: str, lines: list[str]) -> bool:
        """Write the last lines and a heartbeat; True when a stop was requested."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                return True
            if lines:
                job.details = lines
            job.heartbeat_ts = time.time()
            return bool(job.stop_requested) or job.status == jm.STOPPED

    def _error_text(self, job_id: str, rc: int, lines: list[str]) -> str:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            written = job.error if job is not None else None
        if written:
            return written  # the job's own exception text
        if rc < 0:
            name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
            hint = " (out of memory?)" if -rc == signal.SIGKILL else ""
            text = f"the job process was killed by {name}{hint}"
        else:
            text = f"the job process exited with code {rc}"
        return text + (f": {lines[-1]}" if lines else "")

    def _finish(
        self, job_id: str, status: str, *, error: str | None = None, detail: str | None = None, **values: Any
    ) -> None:
        with self.db.session() as s:
            res = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == jm.RUNNING)
                .values(status=status, end_ts=time.time(), error=error, **values)
            )
            changed = bool(getattr(res, "rowcount", 0))
            if changed and (detail or error):
                job = s.get(Job, job_id)
                if job is not None:
                    job.add_detail(detail or f"ERROR: {error}", unless_last=True)
        log.info("job %s: %s%s", job_id, status, f" ({error})" if error else "")

    # ---- after a job -----------------------------------------------------------------------
    def _after(self, job_id: str) -> None:
        """The job's kind submits what follows it (training: the rescore, the campaign's next run)."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
        if job is not None and job.kind in self.jobs.kinds:
            self.jobs.kinds.get(job.kind).after(job, self.jobs, self.settings)

    # ---- shutdown --------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Kill every running job's tree and record it: the consumer is going away."""
        self.closing.set()
        with self._lock:
            running = dict(self._procs)
        for job_id, proc in running.items():
            kill_tree(proc.pid)
            message = INTERRUPTED if self.embedded else f"interrupted: worker {self.worker} stopped"
            self.jobs.interrupt(job_id, message)  # training is queued again to resume; others end ERROR


def _read_lines(stream: IO[str], log_path: Path, lines: deque[str], changed: threading.Event) -> None:
    with open(log_path, "a", encoding="utf-8") as out:
        for raw in stream:
            line = raw.rstrip("\n")
            out.write(line + "\n")
            out.flush()
            if line.strip():
                lines.append(line[:2000])
                changed.set()
