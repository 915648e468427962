"""Ledger fixtures: every test here runs on SQLite, on a real PostgreSQL server, and on that server
through PgBouncer in transaction mode (no session state may survive a transaction)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from httpay.ledger import Ledger, open_ledger
from tests.fixtures.pgbouncer import pgbouncer_url  # noqa: F401  # fixtures used by name
from tests.fixtures.postgres import clean_postgres_url, postgres_url  # noqa: F401  # fixtures used by name

BACKENDS = ["sqlite", "postgres", "pgbouncer"]


@pytest.fixture(params=BACKENDS)
def any_ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where an empty ledger lives: a SQLite file or a PostgreSQL DSN (server started only when needed)."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger.sqlite3")
    clean = str(request.getfixturevalue("clean_postgres_url"))  # the tables dropped, on a direct connection
    return clean if request.param == "postgres" else str(request.getfixturevalue("pgbouncer_url"))


@pytest.fixture
def any_ledger(any_ledger_url: str) -> Iterator[Ledger]:
    lg = open_ledger(any_ledger_url)
    yield lg
    lg.close()
