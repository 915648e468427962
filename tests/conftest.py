"""Shared fixtures: the demo service on a free loopback port, wallets, throwaway ledgers."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from httpay.demo.runner import RunningServer

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


@pytest.fixture
def demo() -> Iterator["RunningServer"]:
    """A fresh demo service on a free loopback port."""
    from httpay.demo.runner import serve_in_thread
    from httpay.demo.server import create_app

    with serve_in_thread(create_app()) as server:
        yield server


@pytest.fixture
def account(demo: "RunningServer") -> dict[str, str]:
    """A signed-up account whose one free credit is already spent: its next ticker query meets a 402."""
    import httpx

    token = httpx.get(f"{demo.url}/signup").json()["id"]
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{demo.url}/ticker/AAPL", headers=auth).status_code == 200
    return auth
