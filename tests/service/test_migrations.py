"""The Alembic migrations build exactly the schema the SQLModel tables describe, idempotently."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

import marketplace.db.models  # noqa: F401 - registers the tables
from marketplace.db.session import make_engine, migrate

from devnet_market import fresh_database_url  # noqa: I001 - tests/service is on sys.path under pytest


def test_migrate__fresh_database__schema_equals_models(tmp_path):
    url = fresh_database_url(tmp_path, "migrations")
    migrate(url)
    migrate(url)  # a second run is a no-op
    engine = make_engine(url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert diff == []
    tables = set(inspect(engine).get_table_names())
    assert {"orders", "deals", "chain_txs", "matches", "chain_events", "chain_cursor", "alembic_version"} <= tables
