"""Fixtures for the inference tests (tests/conftest.py belongs to the spine tests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inference.infer_support import LiveServer, ServerFactory


@pytest.fixture(scope="module")
def live_server() -> Iterator[ServerFactory]:
    """``live_server(app_dir, studies, conf=..., env=...)`` starts a server; all stop after the module."""
    started: list[LiveServer] = []

    def start(
        app: Path, studies: Path, conf: dict[str, str] | None = None, env: dict[str, str] | None = None
    ) -> LiveServer:
        server = LiveServer(app, studies, conf, env).start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
