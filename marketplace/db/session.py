"""Engine and sessions. The schema is created by Alembic migrations, never by create_all,
so SQLite and PostgreSQL databases always have the same, versioned shape."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine, select

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def make_engine(database_url: str) -> Engine:
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(database_url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # noqa: ANN001 - DBAPI hook
            cursor = dbapi_connection.cursor()
            # WAL lets the API read while the loops write; foreign keys are off by default in SQLite.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(database_url, pool_pre_ping=True)


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(database_url: str) -> None:
    """Bring the database to the latest schema (idempotent)."""
    command.upgrade(alembic_config(database_url), "head")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# Values per IN (...) clause: well under every SQLite's and PostgreSQL's limit of bound parameters.
IN_CHUNK = 500


def rows_in(session: Session, model: Any, column: Any, values: Iterable[Any]) -> list[Any]:
    """Rows of `model` whose `column` is one of `values`, in one query per IN_CHUNK values."""
    ordered = sorted(set(values))
    rows: list[Any] = []
    for start in range(0, len(ordered), IN_CHUNK):
        rows.extend(session.exec(select(model).where(column.in_(ordered[start:start + IN_CHUNK]))).all())
    return rows
