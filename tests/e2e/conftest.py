"""A fresh demo service on a free loopback port for every test module that asks for one."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from httpay.demo.runner import RunningServer, serve_in_thread
from httpay.demo.server import create_app


@pytest.fixture
def demo() -> Iterator[RunningServer]:
    with serve_in_thread(create_app()) as server:
        yield server


@pytest.fixture
def account(demo: RunningServer) -> dict[str, str]:
    """A signed-up account whose one free credit is already spent: its next ticker query meets a 402."""
    token = httpx.get(f"{demo.url}/signup").json()["id"]
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{demo.url}/ticker/AAPL", headers=auth).status_code == 200
    return auth
