"""Process helpers: kill a job's whole process tree, watch a parent, count the visible GPUs."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable

import psutil

log = logging.getLogger(__name__)

KILL_GRACE_SECONDS = 2.0


def this_host() -> str:
    return socket.gethostname()


def worker_name(role: str) -> str:
    """``<role>@<host>:<pid>`` (role ``embedded`` for the server's own consumer, else ``worker``)."""
    return f"{role}@{this_host()}:{os.getpid()}"


def parse_worker(worker: str | None) -> tuple[str | None, int | None]:
    if not worker or "@" not in worker:
        return None, None
    host, _, pid = worker.split("@", 1)[1].rpartition(":")
    return host, int(pid) if pid.isdigit() else None


def local_pid_alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _is_job_process(proc: psutil.Process, job_id: str) -> bool:
    """Guard against a recycled pid: the job subprocess's command line names its job id."""
    try:
        return job_id in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def kill_tree(pid: int, expect: str | None = None, grace: float = KILL_GRACE_SECONDS) -> bool:
    """SIGTERM ``pid`` and all its descendants, SIGKILL what is left after ``grace`` seconds.

    With ``expect`` (a job id), only a process whose command line names it is killed. True when a
    process was found.
    """
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return False
    if expect is not None and not _is_job_process(root, expect):
        return False
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        procs = [root]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=grace)
    return True


def watch_parent(parent_pid: int, on_orphaned: Callable[[], None], interval: float = 0.5) -> threading.Thread:
    """Call ``on_orphaned`` (from a daemon thread) once ``parent_pid`` is gone: a killed server must not
    leave its consumer or jobs behind."""

    def loop() -> None:
        while True:
            if os.getppid() != parent_pid or not local_pid_alive(parent_pid):
                on_orphaned()
                return
            time.sleep(interval)

    thread = threading.Thread(target=loop, name="parent-watch", daemon=True)
    thread.start()
    return thread


def visible_gpus() -> list[str]:
    """The GPUs a job may use, without importing torch: ``CUDA_VISIBLE_DEVICES`` when set, else
    ``nvidia-smi -L``. Empty on a machine without one."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
