"""The composition root: :class:`Services` holds every service of one process, :func:`build_services`
is the only code that builds them and wires their observers. Flask-free: the web app, the job consumer
(``labelloop worker``), a job's own process and a DDP rank all call :func:`build_services`.

Each service is built on first use from the settings, so a process builds only what it touches (a worker
never loads the app or the inference service); :func:`build_services` builds eagerly what its role needs,
so a broken setting fails at start, not in the first request.

Roles:

- ``server``: the web process. Migrates and indexes the studies, hooks the label observers (pseudo-labels
  give way to a final label, the campaign counts labels, DICOM SEG export), and with ``background``
  recovers jobs, starts the session sweeper, the DICOM threads and the embedded job consumer.
- ``worker``: a job consumer. Migrates the database (a remote worker may start first); jobs only.
- ``job``: one job's process (or DDP rank). Inference runs in the job's own folder, one at a time.
"""

from __future__ import annotations

import atexit
import gc
import json
import logging
import subprocess
import threading
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from server.appcard import describe, read_card, write_card
from server.appspec import AppSpec
from server.database import Database
from server.datastore.indexer import IndexReport, index_studies
from server.datastore.intake import Limits
from server.datastore.store import Datastore
from server.errors import ConfigError, Unavailable
from server.jobs.campaign import Campaign, retrain_after, training_conf
from server.jobs.consumer import start_consumer
from server.jobs.kinds import JobKinds
from server.jobs.queue import JobQueue
from server.jobs.service import JobService
from server.pseudo import PseudoLabels
from server.registry import ModelRegistry
from server.sampling import Sampler
from server.sessions import SessionStore
from server.settings import Settings
from server.team.review import Review, readings_needed
from server.team.users import Users

if TYPE_CHECKING:  # torch, MONAI, scipy and highdicom come in with these: imported when first built
    from server.dicom.service import DicomService
    from server.evidence import Evidence
    from server.inference.service import InferenceService

log = logging.getLogger(__name__)

Role = Literal["server", "worker", "job"]
APP_LOAD_WAIT_SECONDS = 300.0  # how long a request that needs the app waits for it after a restart


class Services:
    """Every service of one process, each built once, on first use, from ``settings``."""

    def __init__(
        self,
        settings: Settings,
        spec: AppSpec | None = None,
        *,
        role: Role = "server",
        workdir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.role: Role = role
        self._spec = spec
        # A job's inference workspace is its own folder; the server's is <data>/infer (wiped at start).
        self._workdir = workdir
        self.index_report: IndexReport | None = None
        self.consumer: subprocess.Popen[bytes] | None = None
        # The app is loaded (or failed to: ``load_error``) once ``ready`` is set; until then, after a
        # restart, ``card`` describes it (server/appcard.py).
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.card: dict[str, Any] | None = None

    @cached_property
    def db(self) -> Database:
        return Database(self.settings.db_url)

    @cached_property
    def spec(self) -> AppSpec:
        if self._spec is not None:
            return self._spec
        from server.apploader import load_app

        return load_app(self.settings.app_dir, self.settings.conf)

    @cached_property
    def datastore(self) -> Datastore:
        s = self.settings
        limits = Limits(max_voxels=s.max_voxels, max_bytes=s.max_volume_mb * 1024 * 1024)
        store = Datastore(
            self.db,
            s.studies,
            limits,
            lambda: self.spec.label_max(),  # the app is loaded when a label is first checked
            locks_dir=s.data / "locks",
            share_paths=s.paths_shared,
        )
        store.readings_needed = partial(readings_needed, s.overlap)
        store.train_labels = s.train_labels
        return store

    @cached_property
    def users(self) -> Users:
        return Users(self.db, self.settings.token_hours * 3600)

    @cached_property
    def review(self) -> Review:
        return Review(self.db, self.datastore)

    def wait_for_app(self, timeout: float = APP_LOAD_WAIT_SECONDS) -> AppSpec:
        """The app, once loaded; 503 when it failed to load or is still loading after ``timeout``."""
        if self.role == "server" and not self.ready.wait(timeout):
            raise Unavailable("the app is still loading; try again in a moment")
        if self.load_error is not None:
            raise Unavailable(self.load_error)
        return self.spec

    def app_info(self) -> dict[str, Any]:
        """The app's part of ``/info/``: from the loaded app, else from its card while it loads."""
        if not self.ready.is_set() and self.card is not None:
            info: dict[str, Any] = json.loads(json.dumps(self.card["info"]))  # a copy to add to
            return info
        return describe(self.wait_for_app())

    def auth_on(self) -> bool:
        """Logins needed: ``--auth``, an API token, or any user in the database."""
        s = self.settings
        return s.auth or bool(s.api_token) or self.users.any()

    @cached_property
    def sessions(self) -> SessionStore:
        s = self.settings
        return SessionStore(
            self.db,
            s.data / "sessions",
            s.session_expiry_seconds,
            s.session_max_expiry_seconds,
            s.paths_shared,
        )

    @cached_property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.db, self.settings.data)

    @cached_property
    def inference(self) -> InferenceService:
        from server.inference.service import InferenceService

        job = self.role == "job"
        return InferenceService(
            self.spec,
            self.registry,
            self.datastore,
            self.sessions,
            self._workdir or self.settings.data / "infer",
            workers=1 if job else self.settings.infer_workers,
            queue=1 if job else self.settings.infer_queue,
        )

    @cached_property
    def pseudo(self) -> PseudoLabels:
        return PseudoLabels(self.db, self.datastore)

    @cached_property
    def sampler(self) -> Sampler:
        return Sampler(self.db, self.datastore, self.settings.lease_seconds, self.settings.audit_share)

    @cached_property
    def evidence(self) -> Evidence:
        """Audit picks and pre-annotations scored against final labels, for the campaign's model: the
        campaign trainer's model, else the first segmentation model (none: nothing is measured)."""
        from server.evidence import Evidence

        spec = self.spec
        trainer = spec.trainers.get(
            self.settings.conf.get("retrain_trainer") or next(iter(spec.trainers), "")
        )
        model = trainer.config.get("model") if trainer is not None else None
        if model not in spec.models:
            model = next((m for m, ms in spec.models.items() if ms.type == "segmentation"), None)
        labels: dict[str, int] = {}
        if model is not None:
            declared = spec.models[model].labels
            labels = (
                dict(declared) if isinstance(declared, dict) else {n: i for i, n in enumerate(declared, 1)}
            )
            if spec.models[model].type != "segmentation":
                model = None  # Dice needs a mask
        workdir = self.settings.data / "audit"
        workdir.mkdir(parents=True, exist_ok=True)
        inference = self.inference if model is not None and self.role == "server" else None
        return Evidence(self.db, self.datastore, self.registry, inference, model, labels, workdir)

    @cached_property
    def kinds(self) -> JobKinds:
        return JobKinds.load(self.settings.extra_job_kinds)

    @cached_property
    def queue(self) -> JobQueue:
        return JobQueue(self.settings.queue, self.settings.data)

    @cached_property
    def jobs(self) -> JobService:
        return JobService(
            self.db,
            self.queue,
            self.settings.data,
            self.kinds,
            stale_seconds=self.settings.job_stale_seconds,
            chunk_size=self.settings.chunk_size,
        )

    @cached_property
    def campaign(self) -> Campaign:
        """The continuous campaign: its trainer, its training settings (``--conf``), checked at start."""
        spec = self.spec
        trainer = self.settings.conf.get("retrain_trainer") or next(iter(spec.trainers), None)
        overrides = training_conf(self.settings)
        effective: dict[str, Any] = {}
        recipe = spec.trainers[trainer].task if trainer in spec.trainers else None
        if recipe is not None:
            try:
                effective = recipe.check_params(overrides).as_dict()  # a wrong --conf value fails the start
            except ValueError as exc:
                raise ConfigError(f"--conf: {exc}") from None
        request = {"rescore_methods": spec.read_scores(), **overrides}
        streams = max(1, self.settings.threads // 4)  # event streams may hold a quarter of the threads
        return Campaign(self.jobs, retrain_after(self.settings), trainer, request, effective, streams)

    @cached_property
    def dicom(self) -> DicomService | None:
        """The DICOM side, when a listener port or a DICOMweb source is configured."""
        s = self.settings
        if s.dicom_port <= 0 and not s.dicomweb_url:
            return None
        from server.dicom.service import DicomService

        return DicomService(s, self.db, self.datastore, self.spec)

    def close(self) -> None:
        """Stop what this process started (threads, the consumer); idempotent."""
        if self.consumer is not None:
            from server.jobs.consumer import stop_consumer

            stop_consumer(self.consumer)
            self.consumer = None
        if "dicom" in self.__dict__ and self.dicom is not None:
            self.dicom.stop()
        if "evidence" in self.__dict__:
            self.evidence.close()
        if "inference" in self.__dict__:
            self.inference.close()


def build_services(
    settings: Settings,
    spec: AppSpec | None = None,
    *,
    role: Role = "server",
    background: bool = True,
    workdir: Path | None = None,
) -> Services:
    """The services of a ``role`` process, built and wired (see the module's docstring)."""
    services = Services(settings, spec, role=role, workdir=workdir)
    if role == "job":
        return services  # built on use: a job touches only what its kind needs
    if role == "worker":
        services.db.migrate()
        _ = services.kinds  # an unknown job kind module fails at start
        return services

    settings.check()
    settings.data.mkdir(parents=True, exist_ok=True)
    services.db.migrate()
    _ = services.datastore, services.jobs  # what /info/ reads while the app loads
    services.card = read_card(settings) if background and spec is None else None
    if services.card is None:
        _index(services)
        _load_app(services, background)  # a broken app fails the start, naming its file
    else:  # a restart of the same app: /info/ answers from its card; the folder is indexed and the app
        # loaded meanwhile, and every other request waits for both
        threading.Thread(target=_start_in_background, args=(services, background), daemon=True).start()
    if background:
        services.sessions.sweep()
        services.sessions.start_sweeper(settings.session_sweep_seconds)
        services.jobs.recover()
        services.jobs.start_watchdog()
        if settings.embedded_worker:
            services.consumer = start_consumer(settings)
    return services


def _load_app(services: Services, background: bool) -> None:
    """Load the app and what hangs on it, wire the label observers, write the app's card; then ready."""
    try:
        _ = services.spec  # imports the app (torch, MONAI)
        _ = services.inference  # the bounded queue, ready for the first request
        _ = services.campaign  # its training settings are checked now
        _observe_labels(services)
        if background and services.dicom is not None:
            services.dicom.start()
            atexit.register(services.dicom.stop)
        if background:
            write_card(services.settings, services.spec)
    except Exception as exc:
        cause = exc.__cause__ or exc  # the app's own error, not the loader's wrapping (which names its file)
        services.load_error = f"the app did not load: {type(cause).__name__}: {cause}"
        raise
    finally:
        services.ready.set()
    log.info("app loaded: %s", services.spec.name)


def _index(services: Services) -> None:
    settings = services.settings
    services.index_report = index_studies(services.db, settings.studies)
    log.info("indexed %s: %s", settings.studies, services.index_report.as_dict())


def _start_in_background(services: Services, background: bool) -> None:
    try:
        try:
            _index(services)
        except Exception as exc:
            services.load_error = f"the studies folder could not be indexed: {type(exc).__name__}: {exc}"
            services.ready.set()
            raise
        _load_app(services, background)
        gc.freeze()  # as the CLI does after an eager start: what the load built is not garbage
    except Exception:
        log.exception("the server did not finish starting (requests that need the app answer 503)")


def _observe_labels(services: Services) -> None:
    """Who follows a saved label: a final label removes the study's pseudo-label, counts towards the
    campaign's next training run, and (for a study from DICOM) is exported as a SEG."""
    store = services.datastore
    store.on_label_saved.append(services.pseudo.on_label_saved)
    store.on_reading.append(services.review.on_reading)
    store.on_label_saved.append(services.evidence.on_label_saved)
    if services.dicom is not None:
        services.dicom.observe()
    campaign = services.campaign
    if campaign.enabled:
        store.on_label_saved.append(campaign.on_label_saved)
        log.info("campaign: training %s after every %d new final labels", campaign.trainer, campaign.every)
