"""Fixtures for the job tests: labelled 32^3 studies and a server running the tiny test app."""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from server.database import Database
from server.settings import Settings
from tests.conftest import Server, free_port, write_label, write_volume

TEST_APP = Path(__file__).resolve().parent / "app"
STUDIES = 4
TERMINAL = ("DONE", "ERROR", "STOPPED")


def settings_and_db(tmp_path: Path) -> tuple[Settings, Database]:
    """Settings for the test app over an empty ``tmp_path/studies``, and its migrated database (no
    server: for tests that drive the job machinery directly)."""
    studies = tmp_path / "studies"
    studies.mkdir()
    settings = Settings(app_dir=TEST_APP, studies=studies)
    settings.data.mkdir(parents=True)
    db = Database(settings.db_url)
    db.migrate()
    return settings, db


def worker_command(studies: Path, app: Path = TEST_APP) -> list[str]:
    """``labelloop worker`` for the test app over ``studies`` (a consumer apart from the server)."""
    return [sys.executable, "-m", "server.cli", "worker", "--app", str(app), "--studies", str(studies)]


@pytest.fixture
def train_studies(tmp_path: Path) -> Path:
    folder = tmp_path / "studies"
    for i in range(STUDIES):
        write_volume(folder / f"study_{i}.nii.gz", seed=i)
    return folder


@pytest.fixture
def label_files(tmp_path: Path) -> list[Path]:
    """One label per study (random blobs; what the tests check is the job system, not the Dice)."""
    return [write_label(tmp_path / "labels-in" / f"label_{i}.nii.gz", seed=100 + i) for i in range(STUDIES)]


@pytest.fixture
def make_server(train_studies: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def make(*extra: str) -> Server:
        srv = Server(train_studies, free_port(), args=["--app", str(TEST_APP), *extra]).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


def save_label(url: str, image_id: str, path: Path) -> None:
    r = requests.put(
        f"{url}/datastore/label",
        params={"image": image_id},
        files={"label": (path.name, path.read_bytes())},
        data={"params": "{}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text


def wait_for(
    url: str, job_id: str, statuses: tuple[str, ...], timeout: float = 60.0, path: str = "/train/"
) -> dict[str, Any]:
    """Poll ``GET <path>?all=true`` (as a client would) until the job reaches one of ``statuses``."""
    deadline = time.monotonic() + timeout
    task: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = requests.get(f"{url}{path}", params={"all": "true"}, timeout=10)
        assert r.status_code == 200, r.text
        task = next(t for t in r.json() if t["id"] == job_id)
        if task["status"] in statuses:
            return task
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach {statuses} in {timeout}s: {task}")


def wait_epochs(url: str, job_id: str, epochs: int, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    task: dict[str, Any] = {}
    while time.monotonic() < deadline:
        task = wait_for(url, job_id, ("RUNNING", *TERMINAL), timeout)
        if task.get("train_stats", {}).get("epoch", 0) >= epochs or task["status"] in TERMINAL:
            return task
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish {epochs} epoch(s) in {timeout}s: {task}")


def job_rows(studies: Path) -> list[dict[str, Any]]:
    """The ``jobs`` table read directly (the tests' view of what the server recorded)."""
    with sqlite3.connect(studies / ".labelloop" / "labelloop.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM jobs ORDER BY created_ts")]
