"""The embedded job consumer: ``labelloop worker`` as a child process of the server, stopped with it."""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
from typing import IO

from server.jobs.supervisor import PACKAGE_ROOT
from server.settings import Settings, settings_env

log = logging.getLogger(__name__)

CONSUMER_STOP_SECONDS = 10.0


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
