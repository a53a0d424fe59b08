"""A server with a team: users made with the real CLI (``labelloop user add``), logins with the real
client."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import NO_WORKER, REPO, Server, free_port, write_volume

PASSWORD = "correct-horse-9"
TEAM = {
    "ada": "admin",
    "rita": "reviewer",
    "ann": "annotator",
    "bob": "annotator",
    "cat": "annotator",
    "vic": "viewer",
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def add_users(studies: Path, team: dict[str, str], db: str = "") -> None:
    """``labelloop user add`` for each, on the database ``start`` will use (``--db`` or the studies')."""
    where = ["--db", db] if db else ["--studies", str(studies)]
    for name, role in team.items():
        done = cli("user", "add", name, "--role", role, "--password", PASSWORD, *where)
        assert done.returncode == 0, done.stderr


def login(url: str, name: str, password: str = PASSWORD) -> dict[str, str]:
    """Headers with a bearer token from ``POST /auth/token``."""
    reply = requests.post(f"{url}/auth/token", data={"username": name, "password": password}, timeout=30)
    assert reply.status_code == 200, reply.text
    return {"Authorization": f"Bearer {reply.json()['access_token']}"}


@dataclass
class Team:
    server: Server
    headers: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def as_(self, name: str) -> requests.Session:
        session = requests.Session()
        session.headers.update(self.headers[name])
        return session


def make_studies(folder: Path, count: int, size: int = 16) -> Path:
    for i in range(count):
        write_volume(folder / f"case_{i:03d}.nii.gz", seed=i, size=size)
    return folder


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    studies = make_studies(tmp_path / "studies", 6)
    add_users(studies, TEAM)
    srv = Server(studies, free_port(), env=dict(NO_WORKER), ready_path="/").start()
    try:
        yield Team(srv, {name: login(srv.url, name) for name in TEAM})
    finally:
        srv.stop()
