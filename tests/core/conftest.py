"""Fixtures of the core's black-box proofs (issue 11): a fresh loopback hostile service per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hostile.harness import HostileService, hostile_service


@pytest.fixture
def svc() -> Iterator[HostileService]:
    with hostile_service() as service:
        yield service
