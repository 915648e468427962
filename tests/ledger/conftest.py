"""Ledger fixtures: every test here runs once on SQLite and once on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from httpay.ledger import Ledger, open_ledger
from tests.fixtures.postgres import clean_postgres_url, postgres_url  # noqa: F401  # fixtures used by name

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def any_ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where an empty ledger lives: a SQLite file or a PostgreSQL DSN (server started only when needed)."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger.sqlite3")
    return str(request.getfixturevalue("clean_postgres_url"))


@pytest.fixture
def any_ledger(any_ledger_url: str) -> Iterator[Ledger]:
    lg = open_ledger(any_ledger_url)
    yield lg
    lg.close()
