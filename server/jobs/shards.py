"""Sharded jobs: a rescore or a batch inference over many studies as chunks that any worker takes.

A job whose kind can say which studies it spans (:meth:`JobKind.span`) and that spans more than
``chunk_size`` studies is stored as a *parent* row and one *chunk* row per id range. The parent holds no
process: it is RUNNING with ``worker = "shards"`` from the start, and its chunks are ordinary jobs of kind
``<kind>.chunk`` on the queue, each with its own progress, error and heartbeat, run by whichever worker
takes them. A chunk's ``run`` is its kind's, kept to ``request["range"]``; work already stored (a score of
the same model version, a label saved by the same chunk) is skipped, so a retried chunk never redoes it.

:meth:`Shards.settle`, called when a chunk ends (by the worker that ran it) and on every watchdog round
(by the server), moves the parent on: a failed chunk is tried again, up to :data:`CHUNK_ATTEMPTS` times,
as a new row; when every chunk is DONE the parent is DONE with their results summed; a chunk that failed
every try ends the parent ERROR with its reason. A chunk whose worker dies (no heartbeat, or kill -9) is
queued again like interrupted training (``resumable``) and picks up where its rows say it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from server.appspec import AppSpec
from server.database import Database
from server.errors import Unprocessable
from server.jobs import models as jm
from server.jobs.kinds.base import JobContext, JobKind, Submission, Submitter
from server.jobs.models import Job
from server.settings import Settings

log = logging.getLogger(__name__)

SHARDS = "shards"  # the ``worker`` of a parent row: its chunks do the work
CHUNK_ATTEMPTS = 3  # a chunk that fails this many times ends its parent ERROR
CHUNK_SUFFIX = ".chunk"


def chunk_kind_name(kind: str) -> str:
    return kind + CHUNK_SUFFIX


def id_ranges(ids: Sequence[str], size: int) -> list[tuple[str, str]]:
    """``ids`` (sorted) cut into ranges of ``size``: ``(first, last)``, both inclusive."""
    return [(ids[i], ids[min(i + size, len(ids)) - 1]) for i in range(0, len(ids), size)]


def in_range(ids: list[str], request: dict[str, Any]) -> list[str]:
    """The ids of a chunk's range (compared as Python strings, the order :func:`id_ranges` cut in: a
    database's collation may sort differently), or all of them for a job that is not a chunk."""
    bounds = request.get("range")
    if not bounds:
        return ids
    first, last = str(bounds[0]), str(bounds[1])
    return [i for i in ids if first <= i <= last]


class Chunk(JobKind):
    """The kind of a chunk row: its base kind's ``run`` over one id range; resumable; settles its parent."""

    resumable = True

    def __init__(self, base: JobKind) -> None:
        self.base = base
        # per instance, not per class: one chunk kind for each splittable kind
        self.name = chunk_kind_name(base.name)  # type: ignore[misc]
        self.title = f"{base.title} chunk"  # type: ignore[misc]

    def validate(self, spec: AppSpec, target: str | None, params: dict[str, Any]) -> Submission:
        raise Unprocessable(f"{self.name} jobs are made by splitting a {self.base.name} job, not submitted")

    def run(self, ctx: JobContext) -> None:
        job = ctx.job
        first, last = job.request.get("range") or ("", "")
        ctx.say(f"chunk {job.chunk} (try {job.attempt}) of job {job.parent_id}: {first} .. {last}")
        self.base.run(ctx)

    def devices(self, request: dict[str, Any], available: int) -> int:
        return self.base.devices(request, available)

    def after(self, job: Job, jobs: Submitter, settings: Settings) -> None:
        if job.parent_id:
            jobs.settle(job.parent_id)


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The chunks' results as one: numbers summed, lists joined (repeats once), other values kept when
    every chunk agrees, else listed."""
    out: dict[str, Any] = {}
    for result in results:
        for key, value in result.items():
            if key == "resumes":
                continue
            if key not in out:
                out[key] = list(value) if isinstance(value, list) else value
            elif isinstance(value, bool) or not isinstance(value, int | float | list):
                if out[key] != value:
                    seen = out[key] if isinstance(out[key], list) else [out[key]]
                    out[key] = seen if value in seen else [*seen, value]
            elif isinstance(value, list):
                out[key] = [*out[key], *(v for v in value if v not in out[key])]
            else:
                out[key] = round(out[key] + value, 6)
    return out


def _chunk_row(
    kind: str, model: str, request: dict[str, Any], parent_id: str | None, chunk: int | None, attempt: int
) -> Job:
    """A new SUBMITTED row for try ``attempt`` of chunk ``chunk`` of the parent."""
    row = Job.new(kind, model, request)
    row.parent_id, row.chunk, row.attempt = parent_id, chunk, attempt
    return row


class Shards:
    """Parents and chunks in the ``jobs`` table; ``enqueue`` puts a row's id on the queue."""

    def __init__(self, db: Database, enqueue: Callable[[str], bool]) -> None:
        self.db = db
        self.enqueue = enqueue

    def create(
        self, kind: str, model: str, request: dict[str, Any], ranges: list[tuple[str, str]]
    ) -> tuple[Job, list[Job]]:
        """The parent (RUNNING, no process) and its chunks (SUBMITTED), in one transaction."""
        now = time.time()
        parent = Job.new(kind, model, request, status=jm.RUNNING)
        parent.start_ts = parent.heartbeat_ts = now
        parent.worker = SHARDS
        parent.result = {"chunks": len(ranges), "chunks_done": 0}
        parent.details = [f"split into {len(ranges)} chunks"]
        chunks = [
            _chunk_row(chunk_kind_name(kind), model, {**request, "range": [first, last]}, parent.id, n, 1)
            for n, (first, last) in enumerate(ranges)
        ]
        with self.db.session() as s:
            s.add(parent)
            s.add_all(chunks)
        return parent, chunks

    def latest(self, parent_id: str) -> list[Job]:
        """Each chunk's latest try, in chunk order."""
        with self.db.session() as s:
            rows = s.scalars(select(Job).where(Job.parent_id == parent_id).order_by(Job.chunk, Job.attempt))
            by_chunk = {row.chunk: row for row in rows}
        return [by_chunk[k] for k in sorted(by_chunk, key=lambda c: c or 0)]

    def settle(self, parent_id: str) -> str | None:
        """Move a RUNNING parent on from its chunks' rows; its status when that changed, else None.
        Safe to call from any process at any time: every change is a compare-and-set or a unique insert."""
        with self.db.session() as s:
            parent = s.get(Job, parent_id)
        if parent is None or parent.status != jm.RUNNING or parent.worker != SHARDS:
            return None
        chunks = self.latest(parent_id)
        failed = [c for c in chunks if c.status == jm.ERROR and (c.attempt or 1) >= CHUNK_ATTEMPTS]
        if failed:
            c = failed[0]
            first, last = (c.request.get("range") or ["?", "?"])[:2]
            reason = f"chunk {c.chunk} ({first} .. {last}) failed {c.attempt} times: {c.error}"
            return self._end(parent_id, jm.ERROR, error=reason[:4000])
        if any(c.status == jm.STOPPED for c in chunks):
            return self._end(parent_id, jm.STOPPED)
        for c in chunks:
            if c.status == jm.ERROR:
                self._retry(c)
        if chunks and all(c.status == jm.DONE for c in chunks):
            result = merge_results([dict(c.result or {}) for c in chunks])
            result.update(
                chunks=len(chunks),
                chunks_done=len(chunks),
                chunk_retries=sum((c.attempt or 1) - 1 for c in chunks),
                workers=sorted({c.worker for c in chunks if c.worker}),
            )
            return self._end(parent_id, jm.DONE, progress=1.0, result=result)
        done = sum(c.status == jm.DONE for c in chunks)
        running = sum(c.status == jm.RUNNING for c in chunks)
        shares = [1.0 if c.status == jm.DONE else (c.progress or 0.0) for c in chunks]
        progress = sum(shares) / max(1, len(shares))
        line = f"chunks: {done}/{len(chunks)} done, {running} running"
        with self.db.session() as s:
            row = s.get(Job, parent_id)
            if row is not None and row.status == jm.RUNNING:
                row.progress, row.heartbeat_ts = progress, time.time()
                row.result = {**dict(row.result or {}), "chunks": len(chunks), "chunks_done": done}
                row.add_detail(line, unless_last=True)
        return None

    def settle_all(self) -> int:
        """:meth:`settle` for every running parent (the watchdog's round); how many changed status."""
        with self.db.session() as s:
            parents = list(s.scalars(select(Job.id).where(Job.status == jm.RUNNING, Job.worker == SHARDS)))
        return sum(self.settle(p) is not None for p in parents)

    def _retry(self, chunk: Job) -> None:
        """The failed chunk again, as its next try (a unique row: two settles never both add it)."""
        again = _chunk_row(
            chunk.kind,
            chunk.model,
            dict(chunk.request),
            chunk.parent_id,
            chunk.chunk,
            (chunk.attempt or 1) + 1,
        )
        try:
            with self.db.session() as s:
                s.add(again)
        except IntegrityError:
            return  # another process added this try first
        log.warning("job %s: chunk %s failed, try %d", chunk.parent_id, chunk.chunk, again.attempt)
        self.enqueue(again.id)

    def _end(self, parent_id: str, status: str, **values: Any) -> str | None:
        now = time.time()
        with self.db.session() as s:
            res = s.execute(
                update(Job)
                .where(Job.id == parent_id, Job.status == jm.RUNNING)
                .values(status=status, end_ts=now, heartbeat_ts=now, **values)
            )
            if not getattr(res, "rowcount", 0):
                return None
            row = s.get(Job, parent_id)
            if row is not None:
                row.add_detail(status if status != jm.ERROR else f"ERROR: {values.get('error')}")
        if status != jm.DONE:
            self.stop_chunks(parent_id)
        log.info("sharded job %s: %s", parent_id, status)
        return status

    def stop(self, parent_id: str) -> str | None:
        """Stop a running parent and its chunks (``DELETE /scoring/``)."""
        return self._end(parent_id, jm.STOPPED)

    def stop_chunks(self, parent_id: str) -> None:
        """Every chunk of the parent asked to stop: queued ones STOPPED now, running ones killed by the
        worker that runs them (it polls ``stop_requested``)."""
        with self.db.session() as s:
            s.execute(update(Job).where(Job.parent_id == parent_id).values(stop_requested=True))
            s.execute(
                update(Job)
                .where(Job.parent_id == parent_id, Job.status == jm.SUBMITTED)
                .values(status=jm.STOPPED, end_ts=time.time())
            )
