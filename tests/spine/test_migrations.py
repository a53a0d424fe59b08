"""The Alembic migrations build exactly the schema the models declare (no drift), on SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import server.dicom.models
import server.jobs.models
import server.registry_models  # noqa: F401  (their tables join the metadata)
from server.database import Database
from server.models import Base
from tests.conftest import DB_PARAMS, fresh_database


@pytest.fixture(params=DB_PARAMS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    for made in fresh_database(request.param, prefix="ll_mig_"):
        yield made or f"sqlite:///{tmp_path / 'm.db'}"


def test_migrations_match_the_models(url: str) -> None:
    db = Database(url)
    try:
        db.migrate()
        with db.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        db.dispose()
