"""Fixtures of the hostile-server suite: a fresh misbehaving service and a counting wallet."""

from __future__ import annotations

from collections.abc import Iterator
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
