"""Shared fixtures: the demo service on a free loopback port, wallets, throwaway ledgers."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest_plugins = ["tests.fixtures.lnbits"]

# Never let a test touch the user's real ledger.
os.environ.setdefault("HTTPAY_LEDGER", str(ROOT / ".cache" / "test-default-ledger.sqlite3"))


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


@pytest.fixture
def ledger(ledger_path: Path) -> Iterator["object"]:
    from httpay.ledger import SQLiteLedger

    lg = SQLiteLedger(ledger_path)
    yield lg
    lg.close()
