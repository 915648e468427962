"""Fixtures of the hostile-server suite: a fresh misbehaving service and a counting wallet."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.hostile.harness import MODES, CountingWallet, HostileService, hostile_service


@pytest.fixture
def svc() -> Iterator[HostileService]:
    with hostile_service() as service:
        yield service


@pytest.fixture
def wallet(svc: HostileService) -> CountingWallet:
    return CountingWallet(svc.node)


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """Every hostile case runs through httpay.Client and httpay.AsyncClient."""
    return str(request.param)


@dataclass
class Ran:
    """What one `httpay ...` command did: its exit code and what it printed."""

    code: int
    out: str
    err: str


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, wallet: CountingWallet) -> Iterator[Callable[..., Ran]]:
    """`httpay ...` run by main() in this process; its wallet (when `paying`) the counting wallet."""
    from httpay.apps.cli import main

    def go(*args: str, paying: bool = True, env: dict[str, str] | None = None) -> Ran:
        with monkeypatch.context() as m:
            for k in [k for k in os.environ if k.startswith(("HTTPAY_", "LNBITS_", "LND_"))]:
                m.delenv(k)
            for k, v in {"COLUMNS": "200", "NO_COLOR": "1", **(env or {})}.items():
                m.setenv(k, v)
            m.setattr("httpay.apps.cli._wallet_or_none", lambda: wallet if paying else None)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(list(args))
                except SystemExit as exc:  # argparse's usage errors
                    code = int(exc.code or 0)
        return Ran(code, out.getvalue(), err.getvalue())
    yield go
