"""The job service (``Services.jobs``): submit, list, stop and recover jobs; rows are the truth.

The web process only writes rows and puts job ids on the queue; a consumer (:mod:`server.jobs.worker`)
runs them. Every status change is a compare-and-set ``UPDATE ... WHERE status IN (...)``, so a job that
ended (DONE, ERROR, STOPPED) never changes again and an ERROR is never recorded as DONE.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from server.appspec import AppSpec
from server.database import Database
from server.errors import NotFound, TooBusy, Unprocessable
from server.jobs import models as jm
from server.jobs.models import Job
from server.jobs.procs import kill_tree, local_pid_alive, parse_worker, this_host
from server.jobs.queue import JobQueue
from server.jobs.shards import SHARDS, Shards, id_ranges
from server.models import Label

if TYPE_CHECKING:
    from server.jobs.kinds import JobKinds

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted by server restart"
STOP_WAIT_SECONDS = 5.0
STALE_HEARTBEAT_SECONDS = 60.0
QUEUE_RETRY_SECONDS = 120.0  # a SUBMITTED job this old is put on the queue again (the queue was down)


def _silent_since(job: Job) -> float:
    """When the job last showed a sign of life: its heartbeat, else its start, else its submission."""
    return job.heartbeat_ts or job.start_ts or job.created_ts


def ts_text(ts: float | None) -> str | None:
    """MONAI Label's ``start_ts``/``end_ts`` text: local time ``YYYY-MM-DD HH:MM:SS``."""
    return None if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def task_dict(job: Job) -> dict[str, Any]:
    """A job as MONAI Label's task: ``id, status, request, start_ts[, end_ts], details`` plus ours."""
    task: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "request": job.request,
        "start_ts": ts_text(job.created_ts),
        "details": list(job.details or []),
    }
    if job.end_ts is not None:
        task["end_ts"] = ts_text(job.end_ts)
    if job.result:
        task["result"] = job.result
    task.update(
        kind=job.kind,
        model=job.model,
        progress=round(job.progress or 0.0, 4),
        run_ts=ts_text(job.start_ts),
        error=job.error,
        model_version=job.model_version,
        worker=job.worker,
        pid=job.pid,
    )
    if job.stats:
        task["train_stats"] = job.stats
    return task


MAX_RESUMES = 3  # a job that keeps killing its worker ends ERROR after this many resumptions


class JobService:
    def __init__(
        self,
        db: Database,
        queue: JobQueue,
        data_dir: Path,
        kinds: JobKinds,
        stale_seconds: float = STALE_HEARTBEAT_SECONDS,
        chunk_size: int = 0,
    ) -> None:
        self.db = db
        self.queue = queue
        self.data_dir = data_dir
        self.kinds = kinds
        self.stale_seconds = stale_seconds  # a RUNNING job without a heartbeat this long is dead
        self.chunk_size = chunk_size  # a splittable job over more studies than this becomes chunks
        self.shards = Shards(db, self._enqueue)
        self._submit_lock = threading.Lock()

    # ---- submit ----------------------------------------------------------------------------
    def submit(
        self, kind: str, model: str, request: dict[str, Any], *, enqueue: bool = False
    ) -> dict[str, Any]:
        """Add a job row and queue it. With ``enqueue`` false, a job of the same kind that is already
        submitted or running makes this a 429 (MONAI Label's "Task is Already Running")."""
        job_kind = self.kinds.get(kind)
        try:
            json.dumps(request)
        except (TypeError, ValueError) as exc:
            raise Unprocessable(f"request is not JSON: {exc}") from exc
        size = request.get("chunk_size", self.chunk_size)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise Unprocessable(f"chunk_size must be a whole number >= 0 (0: one piece), got {size!r}")
        with self._submit_lock:
            if not enqueue and self.active(kind):
                raise TooBusy(job_kind.busy_detail)
            ids = job_kind.span(self.db, request) if size else None
            if ids is not None and len(ids) > size:
                job, chunks = self.shards.create(kind, model, request, id_ranges(ids, size))
                queued = [c.id for c in chunks]
            else:
                job = self._insert(kind, model, request)
                queued = [job.id]
        for job_id in queued:
            self._enqueue(job_id)
        log.info("job %s submitted: %s %s %s (%d on the queue)", job.id, kind, model, request, len(queued))
        return task_dict(job)

    def settle(self, parent_id: str) -> str | None:
        """A sharded job moved on from its chunks (server/jobs/shards.py)."""
        return self.shards.settle(parent_id)

    def _enqueue(self, job_id: str) -> bool:
        """Put the id on the queue. A queue that is down (Redis away) loses nothing: the row stays
        SUBMITTED and the watchdog puts it on the queue again once the queue answers."""
        try:
            self.queue.enqueue(job_id)
        except Exception as exc:  # any backend's connection error
            log.warning("job %s stored, not queued yet (the queue is down: %s)", job_id, type(exc).__name__)
            return False
        return True

    def requeue_waiting(self, older_than: float = QUEUE_RETRY_SECONDS, now: float | None = None) -> int:
        """SUBMITTED jobs waiting longer than ``older_than`` while the queue holds nothing go on the queue
        again (their message was lost, or the queue was down when they were stored); a duplicate is
        harmless, a job only starts by compare-and-set."""
        now = time.time() if now is None else now
        try:
            if self.queue.huey.pending_count() > 0:
                return 0  # messages are waiting: nothing was lost
        except Exception:
            return 0  # the queue is still down
        with self.db.session() as s:
            waiting = list(
                s.scalars(select(Job.id).where(Job.status == jm.SUBMITTED, Job.created_ts < now - older_than))
            )
        return sum(1 for job_id in waiting if self._enqueue(job_id))

    def submit_if_idle(self, kind: str, model: str, request: dict[str, Any]) -> dict[str, Any] | None:
        """Submit unless a job of ``kind`` is active (the campaign's debounce); None when one is."""
        try:
            return self.submit(kind, model, request, enqueue=False)
        except TooBusy:
            return None

    def _insert(self, kind: str, model: str, request: dict[str, Any]) -> Job:
        job = Job.new(kind, model, request)
        with self.db.session() as s:
            s.add(job)
        return job

    def wait(self, job_id: str, timeout: float, poll: float = 0.2) -> dict[str, Any]:
        """Block until the job ends (``run_sync``) or ``timeout`` seconds pass; the task either way."""
        deadline = time.monotonic() + timeout
        while True:
            job = self._get(job_id)
            if job.status in jm.TERMINAL or time.monotonic() >= deadline:
                return task_dict(job)
            time.sleep(poll)

    def start(
        self, kind: str, spec: AppSpec, target: str | None, params: dict[str, Any], *, enqueue: bool = False
    ) -> dict[str, Any]:
        """``POST /train/<trainer>``, ``/scoring/[<method>]``, ``/batch/infer/<model>``: the kind checks the
        request against the app (404 / 422, nothing stored), then the job is submitted."""
        checked = self.kinds.get(kind).validate(spec, target, params)
        return self.submit(kind, checked.model, checked.request, enqueue=enqueue)

    def start_all_trainers(
        self, spec: AppSpec, overrides: dict[str, Any], *, enqueue: bool = False
    ) -> dict[str, Any]:
        """OHIF's ``POST /train/``: every trainer, each with its overrides; ``{name: {result, detail}}``.
        Every trainer's overrides are checked before any job is stored: a 422 leaves nothing queued."""
        train = self.kinds.get("train")
        checked = []
        for name in spec.trainers:
            params = overrides.get(name) or {}
            if not isinstance(params, dict):
                raise Unprocessable(f"overrides for {name!r} must be a JSON object")
            checked.append((name, train.validate(spec, name, params)))
        out: dict[str, Any] = {}
        for name, job in checked:
            try:
                task = self.submit("train", job.model, job.request, enqueue=enqueue)
                out[name] = {"result": task, "detail": None}
            except TooBusy as exc:
                out[name] = {"result": None, "detail": exc.detail}
        return out

    def status(self, kind: str, *, all_tasks: bool = False, check_if_running: bool = False) -> Any:
        """``GET /train/`` and ``GET /batch/infer``: the latest task, all of them, or the running one."""
        what = self.kinds.get(kind).title
        if all_tasks:
            tasks = self.tasks(kind)
            if not tasks:
                raise NotFound(f"No {what} Tasks Found")
            return tasks
        if check_if_running:
            task = self.running(kind)
            if task is None:
                raise NotFound(f"No {what} Tasks are currently Running")
            return task
        task = self.latest(kind)
        if task is None:
            raise NotFound(f"No {what} Tasks Found")
        return task

    # ---- read ------------------------------------------------------------------------------
    def active(self, kind: str) -> list[Job]:
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(Job).where(Job.kind == kind, Job.status.in_(jm.ACTIVE)).order_by(Job.created_ts)
                )
            )

    def _get(self, job_id: str) -> Job:
        with self.db.session() as s:
            job = s.get(Job, job_id)
        if job is None:
            raise NotFound(f"Job not found: {job_id}")
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        return task_dict(self._get(job_id))

    def tasks(self, kind: str, model: str | None = None) -> list[dict[str, Any]]:
        with self.db.session() as s:
            q = select(Job).where(Job.kind == kind).order_by(Job.created_ts)
            if model is not None:
                q = q.where(Job.model == model)
            return [task_dict(j) for j in s.scalars(q)]

    def latest(self, kind: str) -> dict[str, Any] | None:
        with self.db.session() as s:
            job = s.scalars(
                select(Job).where(Job.kind == kind).order_by(Job.created_ts.desc()).limit(1)
            ).first()
        return None if job is None else task_dict(job)

    def running(self, kind: str) -> dict[str, Any] | None:
        with self.db.session() as s:
            job = s.scalars(
                select(Job)
                .where(Job.kind == kind, Job.status == jm.RUNNING)
                .order_by(Job.created_ts.desc())
                .limit(1)
            ).first()
        return None if job is None else task_dict(job)

    def train_stats(self, trainers: Iterable[str]) -> dict[str, Any]:
        """``/info/`` ``train_stats``: per trainer, the stats of its latest job that has any (or ``{}``)."""
        out: dict[str, Any] = {}
        with self.db.session() as s:
            for name in trainers:
                stats = s.scalars(
                    select(Job.stats)
                    .where(Job.kind == "train", Job.model == name, Job.start_ts.is_not(None))
                    .order_by(Job.created_ts.desc())
                    .limit(3)
                ).all()
                out[name] = next((dict(st) for st in stats if st), {})
        return out

    def final_labels_since(self, ts: float) -> int:
        with self.db.session() as s:
            return int(
                s.scalar(select(func.count()).select_from(Label).where(Label.tag == "final", Label.ts > ts))
                or 0
            )

    def last_created(self, kind: str, model: str) -> float | None:
        with self.db.session() as s:
            return s.scalar(select(func.max(Job.created_ts)).where(Job.kind == kind, Job.model == model))

    # ---- stop ------------------------------------------------------------------------------
    def stop(self, kind: str) -> dict[str, Any] | None:
        """Stop the running job of ``kind`` (else the oldest submitted one): its whole process tree is
        killed, and the row says STOPPED, within :data:`STOP_WAIT_SECONDS`. None when nothing is active."""
        active = self.active(kind)
        if not active:
            return None
        running = [j for j in active if j.status == jm.RUNNING]
        job = running[-1] if running else active[0]
        with self.db.session() as s:
            s.execute(update(Job).where(Job.id == job.id).values(stop_requested=True))
        if job.worker == SHARDS:  # a sharded job has no process: it and its chunks stop now
            self.shards.stop(job.id)
            return self.get(job.id)
        # A SUBMITTED job has no process yet: STOPPED now; the consumer skips it, or kills the process it
        # was starting (a job only turns RUNNING together with its pid).
        if self._cas(job.id, (jm.SUBMITTED,), jm.STOPPED, end_ts=time.time()):
            return self.get(job.id)
        # The consumer that runs it polls ``stop_requested``; when it runs on this host, kill right away.
        self._kill_local(job.id)
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while time.monotonic() < deadline:
            current = self._get(job.id)
            if current.status in jm.TERMINAL:
                return task_dict(current)
            time.sleep(0.1)
        self._cas(job.id, (jm.RUNNING,), jm.STOPPED, end_ts=time.time())
        return self.get(job.id)

    def _kill_local(self, job_id: str) -> None:
        job = self._get(job_id)
        host, _ = parse_worker(job.worker)
        if job.pid and host == this_host():
            kill_tree(job.pid, expect=job_id)

    def _cas(self, job_id: str, expect: tuple[str, ...], status: str, **values: Any) -> bool:
        with self.db.session() as s:
            res = s.execute(
                update(Job).where(Job.id == job_id, Job.status.in_(expect)).values(status=status, **values)
            )
            return bool(getattr(res, "rowcount", 0))

    # ---- restart ---------------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """At server start: jobs left RUNNING by the embedded consumer of a previous run (or by a worker
        that stopped answering) become ERROR "interrupted by server restart", their leftover processes on
        this host are killed, and SUBMITTED jobs go back on the queue (a duplicate message is harmless:
        a job only starts through the SUBMITTED -> RUNNING compare-and-set)."""
        now = time.time()
        interrupted = requeued = 0
        with self.db.session() as s:
            submitted = [j.id for j in s.scalars(select(Job).where(Job.status == jm.SUBMITTED))]
        for job in self._running():
            host, pid = parse_worker(job.worker)
            embedded = (job.worker or "").startswith("embedded@")
            dead_worker = host == this_host() and (embedded or pid is None or not local_pid_alive(pid))
            if not (dead_worker or _silent_since(job) < now - self.stale_seconds):
                continue  # a live worker elsewhere still runs it
            interrupted += self._interrupt(job, INTERRUPTED, now)
        for job_id in submitted:
            requeued += int(self._enqueue(job_id))
        if interrupted or requeued:
            log.warning("jobs after restart: %d interrupted, %d re-queued", interrupted, requeued)
        return {"interrupted": interrupted, "requeued": requeued}

    def reap_stale(self, now: float | None = None) -> int:
        """The watchdog's round: a RUNNING job whose consumer has not written a heartbeat for
        ``stale_seconds`` (its worker died, or hangs) ends ERROR with the reason, and its process on this
        host, if any, is killed. Returns how many."""
        now = time.time() if now is None else now
        count = 0
        for job in self._running():
            if _silent_since(job) > now - self.stale_seconds:
                continue
            message = f"no heartbeat from worker {job.worker} for {int(now - (job.heartbeat_ts or 0))} s"
            if self._interrupt(job, message, now):
                log.warning("job %s: %s", job.id, message)
                count += 1
        return count

    def start_watchdog(self, interval: float | None = None) -> threading.Event:
        """:meth:`reap_stale` every ``interval`` seconds in a daemon thread; set the event to stop it."""
        stop = threading.Event()
        every = interval if interval is not None else max(1.0, min(30.0, self.stale_seconds / 4))

        def loop() -> None:
            while not stop.wait(every):
                try:
                    self.reap_stale()
                    self.shards.settle_all()
                    self.requeue_waiting()
                except Exception:  # a database hiccup must not end the watchdog
                    log.exception("job watchdog round failed")

        threading.Thread(target=loop, name="job-watchdog", daemon=True).start()
        return stop

    def recover_worker(self) -> int:
        """At a standalone worker's start: RUNNING jobs of an earlier worker on this host that is gone
        become ERROR, and their leftover processes are killed."""
        now = time.time()
        count = 0
        for job in self._running():
            host, pid = parse_worker(job.worker)
            if not (job.worker or "").startswith("worker@") or host != this_host():
                continue
            if pid is not None and local_pid_alive(pid):
                continue
            count += self._interrupt(job, f"interrupted: worker {job.worker} stopped", now)
        return count

    def _running(self) -> list[Job]:
        """RUNNING jobs that have a process somewhere (a sharded parent has none: its chunks do)."""
        with self.db.session() as s:
            rows = s.scalars(select(Job).where(Job.status == jm.RUNNING))
            return [job for job in rows if job.worker != SHARDS]

    def interrupt(self, job_id: str, message: str) -> bool:
        """A consumer going away ends its running job: resumable kinds are queued again, others ERROR."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
        return job is not None and self._interrupt(job, message, time.time())

    def _interrupt(self, job: Job, message: str, now: float) -> bool:
        """End a RUNNING job ERROR with ``message`` (and its last detail line), killing its process tree
        when it runs on this host; False when it had already ended. A job of a resumable kind (training)
        is queued again instead, up to ``MAX_RESUMES`` times: its run continues from what its folder
        holds (the last checkpoint)."""
        host, _ = parse_worker(job.worker)
        if job.pid and host == this_host():
            kill_tree(job.pid, expect=job.id)
        resumes = int((job.result or {}).get("resumes", 0))
        if job.kind in self.kinds and self.kinds.get(job.kind).resumable and resumes < MAX_RESUMES:
            if not self._cas(job.id, (jm.RUNNING,), jm.SUBMITTED, pid=None, heartbeat_ts=0.0):
                return False
            self.add_result(job.id, {"resumes": resumes + 1})
            self._append_detail(job.id, f"{message}: queued again, to resume from its last checkpoint")
            self._enqueue(job.id)
            return True
        if not self._cas(job.id, (jm.RUNNING,), jm.ERROR, end_ts=now, error=message):
            return False
        self._append_detail(job.id, f"ERROR: {message}")
        return True

    def add_result(self, job_id: str, values: dict[str, Any]) -> None:
        """Merge ``values`` into a job's result (a follow-up names itself in the job it follows)."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is not None:
                job.result = {**dict(job.result or {}), **values}

    def _append_detail(self, job_id: str, line: str) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is not None:
                job.add_detail(line)
