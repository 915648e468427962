"""Shared fixtures: the demo service on a free loopback port, wallets, throwaway ledgers."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from httpay.demo.runner import RunningServer

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest_plugins = ["tests.fixtures.lnbits", "tests.fixtures.nostr"]

# Never let a test touch the user's real ledger.
os.environ.setdefault("HTTPAY_LEDGER", str(ROOT / ".cache" / "test-default-ledger.sqlite3"))


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


@pytest.fixture
def ledger(ledger_path: Path) -> Iterator[object]:
    from httpay.ledger import SQLiteLedger

    lg = SQLiteLedger(ledger_path)
    yield lg
    lg.close()


class _AllLogs(logging.Handler):
    """Every log record of a test, from every logger, at every level (httpx, uvicorn, httpay...)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(record.getMessage())
        except Exception:  # noqa: BLE001 - a broken record must not break the test
            self.lines.append(str(record.msg))


def demo_secrets(app: Any) -> list[str]:
    """Every secret a demo service handed out or holds: bearer ids, wallet keys, preimages, root keys."""
    state = app.state.demo
    found = [a.id for a in state.accounts._accounts.values()]
    found += [w.key for w in state.network._wallets.values()]
    found += [i.preimage for i in state.network._invoices.values()]
    found.append(app.state.classic.root_key.hex())
    if hasattr(app.state, "mpp"):
        found.append(app.state.mpp.secret.hex())
    return [s for s in found if s]


@pytest.fixture
def demo() -> Iterator[RunningServer]:
    """A fresh demo service on a free loopback port. Afterwards, every log line written while it
    ran (any logger, DEBUG and up) is scanned for every secret it handed out: none may appear."""
    from httpay.demo.runner import serve_in_thread
    from httpay.demo.server import create_app

    handler = _AllLogs()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with serve_in_thread(create_app()) as server:
            yield server
            secrets = demo_secrets(server.app)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = "\n".join(handler.lines)
    leaked = [s[:6] + "…" for s in secrets if s in text]
    assert not leaked, f"secrets reached the logs: {leaked}"


@pytest.fixture
def account(demo: RunningServer) -> dict[str, str]:
    """A signed-up account whose one free credit is already spent: its next ticker query meets a 402."""
    import httpx

    token = httpx.get(f"{demo.url}/signup").json()["id"]
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{demo.url}/ticker/AAPL", headers=auth).status_code == 200
    return auth
