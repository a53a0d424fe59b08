"""A toy job kind, added through the registry alone (``LABELLOOP_JOB_KINDS=tests.training.toy_kind``):
it counts to ``steps``, reports progress, and with ``chain`` submits one follow-up job of its own kind."""

from __future__ import annotations

import time
from typing import Any

from server.appspec import AppSpec
from server.errors import Unprocessable
from server.jobs import models as jm
from server.jobs.kinds.base import JobContext, JobKind, Submission, Submitter
from server.jobs.models import Job
from server.settings import Settings


class Toy(JobKind):
    name = "toy"
    title = "Toy"

    def validate(self, spec: AppSpec, target: str | None, params: dict[str, Any]) -> Submission:
        steps = params.get("steps", 3)
        if not isinstance(steps, int) or not 1 <= steps <= 100:
            raise Unprocessable("steps must be an integer in 1..100")
        return Submission(target or "toy", {**params, "steps": steps})

    def run(self, ctx: JobContext) -> None:
        steps = int(ctx.job.request["steps"])
        pause = float(ctx.job.request.get("seconds", 0.0))
        for i in range(1, steps + 1):
            time.sleep(pause)
            ctx.say(f"toy step {i}/{steps}")
            ctx.update(progress=i / steps)
        ctx.update(result={"counted": steps, "studies": ctx.services.datastore.stats()["total"]})

    def after(self, job: Job, jobs: Submitter, settings: Settings) -> None:
        if job.status == jm.DONE and job.request.get("chain"):
            jobs.submit(self.name, job.model, {"steps": 1, "follow_up_of": job.id}, enqueue=True)


KIND = Toy()
