"""Engine, sessions and migrations: the ``Database`` (``Services.db``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_use_lifo=True)
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            event.listen(self.engine, "checkin", _checked_in)
            event.listen(self.engine, "checkout", _ping_if_idle)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def refresh_statistics(self, *tables: str) -> None:
        """``ANALYZE`` of ``tables`` on PostgreSQL, after a bulk change to them (SQLite's queries are
        written not to need statistics)."""
        if self.is_postgres and tables:
            with self.engine.connect() as conn:
                conn.execute(text(f"ANALYZE {', '.join(tables)}"))
                conn.commit()

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revisions (every head: branches may each add one)."""
        from alembic import command  # here: the web process starts a little sooner without it
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "heads")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block ends, rolled back if it raises."""
        with self.sessions() as s, s.begin():
            yield s

    def dispose(self) -> None:
        self.engine.dispose()


PING_AFTER_IDLE_SECONDS = 2.0


def _checked_in(_dbapi_conn: Any, record: Any) -> None:
    record.info["checked_in"] = time.monotonic()


def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
    """A pooled connection idle for a while is pinged before use; a dead one is replaced (SQLAlchemy's
    pessimistic disconnect handling, as ``pool_pre_ping`` does, without a round trip on every checkout
    of a connection that was in use a moment ago: most of a busy server's checkouts)."""
    if time.monotonic() - record.info.get("checked_in", 0.0) < PING_AFTER_IDLE_SECONDS:
        return
    try:
        cur = dbapi_conn.cursor()
        cur.execute("SELECT 1")
        cur.close()
        if not getattr(dbapi_conn, "autocommit", True):
            dbapi_conn.rollback()  # psycopg opened a transaction for the ping: end it
    except Exception as exc:
        raise DisconnectionError(f"stale pooled connection: {type(exc).__name__}") from exc


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
