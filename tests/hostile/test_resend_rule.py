"""A request whose connection drops before any answer is sent once more only when that can be
safe: it is idempotent, and its connection was one the pool had kept alive (a server may close an
idle keep-alive connection at any moment, and the request then never reached it). A connection
opened for the request that drops means the server took the request and failed, and may have
acted on it (a credit spent): the caller gets the error, and the server saw the request once."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

import httpay
from tests.helpers import FakeService, FakeWallet
from tests.hostile.test_pool_handover import _Counting, _url, server  # noqa: F401 - the fixture

RESENT = "the connection to 127.0.0.1 dropped before any answer (RemoteProtocolError); sending the {} once more"
KEPT_BACK = ("the connection opened to 127.0.0.1 for the {} dropped before any answer (RemoteProtocolError); "
             "not sent again, since the service may have acted on it")


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "httpay" and "dropped" in r.getMessage()]


def _requests(srv: _Counting, steps: list[tuple[str, str]], tmp_path: Path, driver: str) -> list[int | str]:
    """Each (method, path) in turn on one client (sync or async): its status, or the error's name."""

    def outcome(send: object) -> int | str:
        return send if isinstance(send, int) else type(send).__name__

    if driver == "sync":
        answers: list[int | str] = []
        with httpay.Client(wallet=FakeWallet(FakeService()), ledger=tmp_path / "l.sqlite3", timeout=5) as client:
            for method, path in steps:
                try:
                    answers.append(client.request(method, _url(srv, path)).status_code)
                except httpx.HTTPError as exc:
                    answers.append(outcome(exc))
        return answers

    async def go() -> list[int | str]:
        answers: list[int | str] = []
        async with httpay.AsyncClient(wallet=FakeWallet(FakeService()), ledger=tmp_path / "l.sqlite3",
                                      timeout=5) as client:
            for method, path in steps:
                try:
                    answers.append((await client.request(method, _url(srv, path))).status_code)
                except httpx.HTTPError as exc:
                    answers.append(outcome(exc))
        return answers

    return asyncio.run(go())


DRIVERS = pytest.mark.parametrize("driver", ["sync", "async"])


@DRIVERS
def test_a_drop_on_a_connection_opened_for_the_request_is_not_sent_again(
        server: _Counting, tmp_path: Path, caplog: pytest.LogCaptureFixture, driver: str) -> None:  # noqa: F811
    caplog.set_level(logging.INFO, logger="httpay")
    assert _requests(server, [("GET", "/drop-once")], tmp_path, driver) == ["RemoteProtocolError"]
    assert server.seen["/drop-once"] == 1, "the server that may have acted on it saw it twice"
    assert _said(caplog) == [KEPT_BACK.format("GET")]


@DRIVERS
def test_a_drop_on_a_kept_alive_connection_is_sent_once_more_and_said(
        server: _Counting, tmp_path: Path, caplog: pytest.LogCaptureFixture, driver: str) -> None:  # noqa: F811
    caplog.set_level(logging.INFO, logger="httpay")
    assert _requests(server, [("GET", "/warm"), ("GET", "/drop-once")], tmp_path, driver) == [200, 200]
    assert server.seen["/drop-once"] == 2  # the first went out on the connection /warm left open
    assert _said(caplog) == [RESENT.format("GET")]


@DRIVERS
def test_a_request_not_safe_to_repeat_is_never_sent_again(
        server: _Counting, tmp_path: Path, caplog: pytest.LogCaptureFixture, driver: str) -> None:  # noqa: F811
    caplog.set_level(logging.INFO, logger="httpay")
    assert _requests(server, [("GET", "/warm"), ("POST", "/drop-once")], tmp_path, driver) == [
        200, "RemoteProtocolError"]
    assert server.seen["/drop-once"] == 1
    assert _said(caplog) == []


@DRIVERS
def test_an_answer_that_cannot_be_read_is_not_a_drop_and_is_not_sent_again(
        server: _Counting, tmp_path: Path, caplog: pytest.LogCaptureFixture, driver: str) -> None:  # noqa: F811
    caplog.set_level(logging.INFO, logger="httpay")
    assert _requests(server, [("GET", "/warm"), ("GET", "/huge-header")], tmp_path, driver) == [
        200, "RemoteProtocolError"]
    assert server.seen["/huge-header"] == 1  # the service answered (and may have acted): once is what it saw
    assert _said(caplog) == []
