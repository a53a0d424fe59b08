"""The datastore tests run on SQLite and, when LABELLOOP_TEST_POSTGRES_URL is set, on PostgreSQL too."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_ENV = "LABELLOOP_TEST_POSTGRES_URL"  # e.g. postgresql+psycopg://postgres@127.0.0.1:5433/postgres


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield ""
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} not set (.ci/run starts a PostgreSQL server and sets it)")
    import psycopg

    name = "ll_" + uuid.uuid4().hex[:12]
    admin = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
