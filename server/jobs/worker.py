"""A job consumer: ``labelloop worker`` (anywhere) or the server's embedded child process.

One Huey worker thread per device (one on a CPU-only machine), each running one job at a time as a
subprocess (:class:`~server.jobs.supervisor.Supervisor`). SIGTERM interrupts: running jobs are killed
and recorded as ERROR ("interrupted"). SIGINT finishes the running jobs first. The embedded consumer
also ends, killing its jobs, as soon as the server process that started it is gone.
"""

from __future__ import annotations

import logging
import os

from server.jobs.procs import visible_gpus, watch_parent, worker_name
from server.jobs.supervisor import DeviceSlots, Supervisor
from server.services import build_services
from server.settings import Settings

log = logging.getLogger(__name__)

EMBEDDED_NICE = 10
MAX_POLL_SECONDS = 0.5  # how long a queued job may wait for an idle consumer to notice it


def run_worker(settings: Settings, *, parent_pid: int | None = None, workers: int = 0) -> int:
    embedded = parent_pid is not None
    if embedded:
        # Jobs (training, scoring) run below the server: annotators' requests and DICOM ingest come
        # first, and a job still takes every core nobody else wants. A remote worker keeps its priority.
        os.nice(EMBEDDED_NICE)
    name = worker_name("embedded" if embedded else "worker")
    services = build_services(settings, role="worker")  # migrates: a remote worker may start first
    jobs, queue = services.jobs, services.queue
    slots = DeviceSlots(visible_gpus())
    supervisor = Supervisor(settings, services.db, jobs, name, slots)
    queue.handler = supervisor.run
    if not embedded:
        jobs.recover_worker()
    threads = workers or slots.count
    consumer = queue.huey.create_consumer(
        workers=threads,
        worker_type="thread",
        periodic=False,
        initial_delay=0.1,
        backoff=1.15,
        max_delay=MAX_POLL_SECONDS,
        check_worker_health=True,
    )
    if parent_pid is not None:

        def orphaned() -> None:
            log.warning("the server (pid %d) is gone: stopping jobs and exiting", parent_pid)
            supervisor.shutdown()
            os._exit(0)

        watch_parent(parent_pid, orphaned)
    log.info(
        "job consumer %s: %d worker(s), devices %s, queue %s",
        name,
        threads,
        ",".join(slots.gpus) or "cpu",
        settings.queue or settings.data / "queue.db",
    )
    consumer.run()
    supervisor.shutdown()
    return 0
