"""What a job kind is: a name, when it is busy, how a request is checked, how it runs, what follows it.

A kind is one object (one module under ``server/jobs/kinds/``). The web process calls ``validate`` before a
row is written (a refused request leaves nothing queued); the consumer asks ``devices`` how many GPU slots
the job takes and calls ``after`` once it has ended; the job's own process calls ``run``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from sqlalchemy import update

from server.appspec import AppSpec
from server.jobs.models import Job

if TYPE_CHECKING:
    from server.database import Database
    from server.datastore.store import Datastore
    from server.inference.service import InferenceService
    from server.pseudo import PseudoLabels
    from server.registry import ModelRegistry
    from server.settings import Settings


class JobServices(Protocol):
    """What a job's process offers its kind (:class:`server.services.Services` is one)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def db(self) -> Database: ...
    @property
    def spec(self) -> AppSpec: ...
    @property
    def datastore(self) -> Datastore: ...
    @property
    def registry(self) -> ModelRegistry: ...
    @property
    def inference(self) -> InferenceService: ...
    @property
    def pseudo(self) -> PseudoLabels: ...


class Submitter(Protocol):
    """What a kind's follow-ups may ask of the job service (:class:`server.jobs.service.JobService`)."""

    def submit(
        self, kind: str, model: str, request: dict[str, Any], *, enqueue: bool = False
    ) -> dict[str, Any]: ...
    def submit_if_idle(self, kind: str, model: str, request: dict[str, Any]) -> dict[str, Any] | None: ...
    def final_labels_since(self, ts: float) -> int: ...
    def add_result(self, job_id: str, values: dict[str, Any]) -> None: ...
    def settle(self, parent_id: str) -> str | None: ...


@dataclass
class JobContext:
    """What a running job sees: its row, and the services of its process (built for the job)."""

    services: JobServices
    job: Job

    @property
    def job_dir(self) -> Path:
        path = self.services.settings.data / "jobs" / self.job.id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def update(self, **values: Any) -> None:
        """Write columns of this job's row (progress, result, stats, model_version)."""
        with self.services.db.session() as s:
            s.execute(update(Job).where(Job.id == self.job.id).values(**values))

    def say(self, line: str) -> None:
        """One line of progress: the consumer streams the job's output into the row's ``details``."""
        print(line, flush=True)


@dataclass(frozen=True)
class Submission:
    """A checked request: the model the row names and the request it stores."""

    model: str
    request: dict[str, Any]


class JobKind(ABC):
    """One kind of background job: subclasses set ``name`` and ``title``, define ``validate`` and ``run``."""

    name: ClassVar[str]  # the row's ``kind``
    title: ClassVar[str]  # as MONAI Label words it: "No Train Tasks Found", "Train Task is Already Running"
    # Interrupted by a restart or a lost worker, the job is queued again (its ``run`` picks up what its
    # folder holds) instead of ending ERROR; at most ``MAX_RESUMES`` times (server/jobs/service.py).
    resumable: ClassVar[bool] = False

    @property
    def busy_detail(self) -> str:
        """The 429 reply when a job of this kind is already queued or running."""
        return f"++++++++++ {self.title} Task is Already Running"

    @abstractmethod
    def validate(self, spec: AppSpec, target: str | None, params: dict[str, Any]) -> Submission:
        """Check a request against the app (NotFound / Unprocessable); what the row will store."""

    @abstractmethod
    def run(self, ctx: JobContext) -> None:
        """Do the work, in the job's own process; raise on failure (the row then ends ERROR)."""

    def devices(self, request: dict[str, Any], available: int) -> int:
        """How many of the consumer's device slots the job takes (one by default)."""
        return 1

    def after(self, job: Job, jobs: Submitter, settings: Settings) -> None:
        """Called by the consumer once the job has ended (any status): submit its follow-ups."""
        return None

    def span(self, db: Database, request: dict[str, Any]) -> list[str] | None:
        """The study ids the job would work through, sorted, when it can be split into chunks that any
        worker takes (server/jobs/shards.py); None (the default) when it runs as one piece. ``run`` then
        keeps to ``request["range"]`` (first and last id, inclusive) when a chunk's request holds one."""
        return None
