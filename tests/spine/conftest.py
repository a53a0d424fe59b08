"""The datastore tests run on SQLite and, when LABELLOOP_TEST_POSTGRES_URL is set, on PostgreSQL too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import DB_PARAMS, fresh_database


@pytest.fixture(params=DB_PARAMS)
def db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    yield from fresh_database(request.param)
