"""What the job routes share: start a job of a kind (``run_sync`` waits for it), and MONAI Label's
status route (the latest task, ``all``, or ``check_if_running``). The logic is in ``JobService``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.api.common import parse_query, services
from server.api.openapi import F, json_reply, operation
from server.api.requests import JobStartQuery, JobStatusQuery
from server.api.schemas import Task
from server.jobs.service import JobService

RUN_SYNC_TIMEOUT_SECONDS = 24 * 3600.0

TASK_OR_TASKS = {
    "anyOf": [
        {"$ref": "#/components/schemas/Task"},
        {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
    ]
}


def jobs() -> JobService:
    return services().jobs


def start(kind: str, target: str | None, params: dict[str, Any], query: JobStartQuery) -> dict[str, Any]:
    task = jobs().start(kind, services().spec, target, params, enqueue=query.enqueue)
    return jobs().wait(task["id"], RUN_SYNC_TIMEOUT_SECONDS) if query.run_sync else task


def status(kind: str) -> Any:
    q = parse_query(JobStatusQuery)
    return jobs().status(kind, all_tasks=q.all, check_if_running=q.check_if_running)


def status_operation(what: str) -> Callable[[F], F]:
    return operation(
        f"The latest {what} task, all of them (?all=true) or the running one (?check_if_running=true)",
        query=JobStatusQuery,
        ok=json_reply("a task, or every task", TASK_OR_TASKS),
    )


def stop_operation(what: str) -> Callable[[F], F]:
    stopped = {"anyOf": [{"$ref": "#/components/schemas/Task"}, {"type": "null"}]}
    summary = f"Stop the running (else the oldest queued) {what} job; null when none is active"
    return operation(summary, ok=json_reply("the stopped task, or null", stopped))


def start_operation(
    summary: str, query: type[JobStartQuery] = JobStartQuery, body: Any = None
) -> Callable[[F], F]:
    return operation(summary, query=query, body=body, ok=json_reply("the task", Task))
