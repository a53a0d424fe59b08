"""The job queue: Huey, with SQLite (``<data>/queue.db``) by default and Redis for remote workers.

Messages carry only a job id; the row holds everything else. The web process enqueues, a consumer
(:mod:`server.jobs.worker`) dequeues and hands the id to its :class:`~server.jobs.supervisor.Supervisor`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from huey import Huey, SqliteHuey

from server.errors import ConfigError

TASK_NAME = "labelloop_run_job"
HUEY_NAME = "labelloop"

JobHandler = Callable[[str], None]


def make_huey(queue_url: str, data_dir: Path) -> Huey:
    """``""`` or ``sqlite:///path``: SqliteHuey; ``redis://host:port/db``: RedisHuey (needs ``redis``)."""
    if not queue_url or queue_url == "sqlite":
        return SqliteHuey(HUEY_NAME, filename=str(data_dir / "queue.db"), results=False)
    if queue_url.startswith("sqlite:///"):
        return SqliteHuey(HUEY_NAME, filename=queue_url[len("sqlite:///") :], results=False)
    if queue_url.startswith(("redis://", "rediss://", "unix://")):
        try:
            from huey import RedisHuey
        except ImportError as exc:  # pragma: no cover - depends on the optional extra
            raise ConfigError(
                "--queue redis://...: install the redis client (pip install 'labelloop[redis]')"
            ) from exc
        return RedisHuey(HUEY_NAME, url=queue_url, results=False)
    raise ConfigError(f"--queue {queue_url!r}: expected sqlite:///PATH or redis://HOST:PORT/DB")


class JobQueue:
    """One Huey instance and its one task. ``handler`` is set only in a consumer process."""

    def __init__(self, queue_url: str, data_dir: Path) -> None:
        self.huey = make_huey(queue_url, data_dir)
        self.handler: JobHandler | None = None
        self._task = self.huey.task(name=TASK_NAME)(self._run)

    def enqueue(self, job_id: str) -> None:
        self._task(job_id)

    def _run(self, job_id: str) -> None:
        if self.handler is None:
            raise RuntimeError("this process is not a job consumer")
        self.handler(job_id)
