"""A job inside its own process: the services built for the job, its row read, its kind's ``run`` called.

What each kind does lives in its module under :mod:`server.jobs.kinds`.
"""

from __future__ import annotations

import os

from server.jobs.kinds.base import JobContext
from server.jobs.models import Job
from server.services import Services, build_services
from server.settings import Settings


def job_services(settings: Settings, job_id: str) -> Services:
    """The services of a job's process: inference works in the job's own folder."""
    return build_services(settings, role="job", workdir=settings.data / "jobs" / job_id / "infer")


def load_context(services: Services, job_id: str) -> JobContext:
    with services.db.session() as s:
        job = s.get(Job, job_id)
    if job is None:
        raise LookupError(f"job {job_id} has no row")
    return JobContext(services, job)


def execute(services: Services, job_id: str) -> None:
    ctx = load_context(services, job_id)
    ctx.say(f"{ctx.job.kind} job {job_id} for {ctx.job.model!r} (pid {os.getpid()})")
    services.kinds.get(ctx.job.kind).run(ctx)
