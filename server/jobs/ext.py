"""Wire the job system into the Flask app: ``init_app(app, background=...)``.

Registers the ``/train/``, ``/batch/infer`` and ``/scoring/`` blueprints, puts the :class:`JobService` in
``app.extensions["jobs"]``, the ``/info/`` ``train_stats`` callable in
``app.extensions["train_stats"]``, hooks the campaign to the datastore's label saves and, with
``background``, recovers jobs left by a previous run and starts the embedded consumer process.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
from typing import IO

from flask import Flask

from server.api import batch, scoring, train
from server.appspec import AppSpec
from server.jobs.campaign import Campaign, retrain_after
from server.jobs.queue import JobQueue
from server.jobs.service import JobService
from server.jobs.supervisor import PACKAGE_ROOT
from server.settings import Settings, settings_env

log = logging.getLogger(__name__)

CONSUMER_STOP_SECONDS = 10.0


def init_app(app: Flask, *, background: bool = True) -> JobService:
    settings: Settings = app.extensions["settings"]
    spec: AppSpec = app.extensions["labelloop_app"]
    queue = JobQueue(settings.queue, settings.data)
    jobs = JobService(app.extensions["db"], queue, settings.data)
    app.extensions["jobs"] = jobs
    for module in (train, batch, scoring):
        app.register_blueprint(module.bp)
    app.extensions["train_stats"] = lambda: jobs.train_stats(spec.trainers)
    trainer = settings.conf.get("retrain_trainer") or next(iter(spec.trainers), None)
    campaign = Campaign(jobs, retrain_after(settings), trainer)
    app.extensions["campaign"] = campaign
    if campaign.enabled:
        app.extensions["datastore"].on_label_saved.append(campaign.on_label_saved)
        log.info("campaign: training %s after every %d new final labels", trainer, campaign.every)
    if background:
        jobs.recover()
        if settings.embedded_worker:
            app.extensions["job_consumer"] = start_consumer(settings)
    return jobs


def start_consumer(settings: Settings) -> subprocess.Popen[bytes]:
    """``labelloop worker`` as a child process; it exits (killing its jobs) when this process does."""
    cmd = [sys.executable, "-m", "server.cli", "worker", "--parent-pid", str(os.getpid())]
    for key, value in sorted(settings.conf.items()):
        cmd += ["--conf", key, value]
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(PACKAGE_ROOT) + (os.pathsep + path if path else "")
    log_path = settings.data / "logs" / "worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed at exit
    proc = subprocess.Popen(
        cmd, cwd=str(PACKAGE_ROOT), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
    )
    log.info("job consumer started (pid %d), log %s", proc.pid, log_path)
    atexit.register(stop_consumer, proc, out)
    return proc


def stop_consumer(proc: subprocess.Popen[bytes], out: IO[bytes] | None = None) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=CONSUMER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if out is not None:
        out.close()
