"""Shared fixtures: synthetic volumes, and a real labelloop server on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests

# Audit picks (a tenth of next-sample answers at random) off, so strategies answer as they decide; the
# audit tests turn them on (tests/campaign/test_audit.py).
os.environ.setdefault("LABELLOOP_AUDIT_SHARE", "0")

REPO = Path(__file__).resolve().parent.parent
SEG_APP = REPO / "apps" / "segmentation"
AFFINE = np.array([[-1.5, 0, 0, 10.0], [0, -1.5, 0, 20.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_volume(path: Path, seed: int = 0, size: int = 32, dtype: type = np.int16) -> Path:
    """A small CT-like volume (spheres on a noisy background) saved as NIfTI with a non-trivial affine."""
    from monai.data import create_test_image_3d

    rad_max = max(2, min(6, (size - 1) // 2 - 1))
    image, _ = create_test_image_3d(
        size, size, size, num_objs=4, rad_max=rad_max, rad_min=1, random_state=np.random.RandomState(seed)
    )
    data = (image * 1000 - 500).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return path


def write_label(path: Path, shape: tuple[int, ...] = (32, 32, 32), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    data = (rng.random(shape) > 0.7).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return path


@dataclass
class Server:
    """A ``labelloop start`` subprocess; ``url`` ends without a slash (as clients expect)."""

    studies: Path
    port: int
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    ready_path: str = "/info/"  # polled until it answers 200 (``/`` when auth is on)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> Server:
        cmd = [
            sys.executable,
            "-m",
            "server.cli",
            "start",
            "--studies",
            str(self.studies),
            "--port",
            str(self.port),
        ]
        if "--app" not in self.args:
            cmd += ["--app", str(SEG_APP)]
        cmd += self.args
        self.log = self.studies.parent / f"server-{self.port}-{time.time_ns()}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early ({self.proc.returncode}):\n{self.log.read_text()}")
            try:
                if (
                    requests.get(self.url + self.ready_path, timeout=2).status_code == 200
                    and self._app_loaded()
                ):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer in {timeout}s:\n{self.log.read_text()}")

    def _app_loaded(self) -> bool:
        """After a restart ``/info/`` answers from the app's card while the app still loads: wait for it."""
        checks = requests.get(self.url + "/health/ready", timeout=2).json().get("checks", {})
        return bool(checks.get("app", "up") != "loading")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> Server:
        self.stop()
        return self.start()


@pytest.fixture
def studies(tmp_path: Path) -> Path:
    folder = tmp_path / "studies"
    for i in range(3):
        write_volume(folder / f"study_{i}.nii.gz", seed=i)
    return folder


@pytest.fixture
def db_url() -> str:
    """SQLite by default; the PostgreSQL run sets LABELLOOP_TEST_DB_URL (one fresh database per test)."""
    return ""


PG_ENV = "LABELLOOP_TEST_POSTGRES_URL"  # e.g. postgresql+psycopg://postgres@127.0.0.1:5433/postgres
DB_PARAMS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
NO_WORKER = {"LABELLOOP_EMBEDDED_WORKER": "0"}  # servers whose tests run no jobs skip the consumer


def fresh_database(kind: str, prefix: str = "ll_") -> Iterator[str]:
    """``""`` (SQLite in the data dir) or the URL of a new PostgreSQL database, dropped afterwards.

    PostgreSQL runs when LABELLOOP_TEST_POSTGRES_URL is set (scripts/test-servers.sh starts one and
    sets it); otherwise that case skips with the reason.
    """
    if kind == "sqlite":
        yield ""
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} not set (scripts/test-servers.sh starts PostgreSQL and sets it)")
    import psycopg

    name = prefix + uuid.uuid4().hex[:12]
    admin = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def server(studies: Path, db_url: str) -> Iterator[Server]:
    args = ["--db", db_url] if db_url else []
    srv = Server(studies, free_port(), args=args, env=dict(NO_WORKER)).start()
    try:
        yield srv
    finally:
        srv.stop()
