"""A connection the pool handed to a request is not closed under it (encode/httpcore#1110).

httpcore hands an idle connection to a waiting request; until that request starts, another
request's pass over the pool may still close it (here: its keep-alive expired meanwhile), and the
close can land after the request was sent. The server then acts on it, the caller loses the
answer, and an idempotent request sent once more is acted on twice: a crowd that waited on one
payment for as long as the keep-alive lasts spent one credit too many that way.

Each test drives that interleaving step by step: request A is handed the pool's one idle connection
and held there; the keep-alive expires; request B's pass decides what to close; A goes out; only
then does B's close run. A must be answered, and the server must see A once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpcore._async.connection_pool as async_pool
import httpcore._sync.connection_pool as sync_pool
import httpx
import pytest

import httpay
from httpay.core.pooled import kept
from tests.helpers import FakeService, FakeWallet

EXPIRY_S = 0.3


class _Counting(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: Counter[str] = Counter()
        self.arrived = threading.Event()  # A reached the server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the idle connection stays open on the server's side
    server: _Counting

    def do_GET(self) -> None:
        self.server.seen[self.path] += 1
        if self.path == "/drop-once" and self.server.seen[self.path] == 1:
            self.close_connection = True  # no answer at all: the client sees the connection drop
            return
        if self.path == "/huge-header":  # an answer, with headers larger than a client reads
            self.send_response(200)
            self.send_header("X-Huge", "A" * 200_000)
            self.end_headers()
            self.close_connection = True
            return
        if self.path == "/a":
            self.server.arrived.set()
            time.sleep(0.3)  # B's close, if it comes, lands while A waits for this answer
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET  # (tests/hostile/test_resend_rule.py: a POST is never sent again)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Counting]:
    srv = _Counting()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _url(srv: _Counting, path: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=EXPIRY_S)


def _paying(tmp_path: Path) -> tuple[httpx.Client, Any]:
    client = httpay.Client(wallet=FakeWallet(FakeService()), ledger=tmp_path / "ledger.sqlite3", limits=LIMITS, timeout=5)
    return client, client._transport.inner._pool  # type: ignore[attr-defined]


def _wallets_own(tmp_path: Path) -> tuple[httpx.Client, Any]:
    client = kept(httpx.Client(limits=LIMITS, timeout=5))  # what a wallet adapter pays through
    return client, client._transport._pool  # type: ignore[attr-defined]


@pytest.mark.parametrize("build", [_paying, _wallets_own], ids=["httpay.Client", "a wallet's client"])
def test_a_sync_request_keeps_the_connection_it_was_handed(server: _Counting, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, build: Any) -> None:
    handed, decided = threading.Event(), threading.Event()
    wait = sync_pool.PoolRequest.wait_for_connection

    def held_after_handing(self: Any, timeout: float | None = None) -> Any:
        connection = wait(self, timeout)
        if threading.current_thread().name == "A" and not handed.is_set():
            handed.set()
            decided.wait(5)  # A holds its connection, unstarted, until B's pass has decided
        return connection

    monkeypatch.setattr(sync_pool.PoolRequest, "wait_for_connection", held_after_handing)
    client, pool = build(tmp_path)
    with client:
        close = pool._close_connections

        def close_late(closing: list[Any]) -> None:
            if threading.current_thread().name == "B" and not decided.is_set():
                decided.set()
                if closing:
                    server.arrived.wait(5)  # A is sent before the close runs
            close(closing)

        pool._close_connections = close_late
        assert client.get(_url(server, "/warm")).status_code == 200  # the pool's one idle connection
        answers: dict[str, int | str] = {}

        def get(name: str) -> None:
            try:
                answers[name] = client.get(_url(server, f"/{name.lower()}")).status_code
            except httpx.HTTPError as exc:
                answers[name] = type(exc).__name__

        a = threading.Thread(target=get, args=("A",), name="A")
        a.start()
        assert handed.wait(5)
        time.sleep(EXPIRY_S + 0.1)  # the connection A holds has now outlived its keep-alive
        b = threading.Thread(target=get, args=("B",), name="B")
        b.start()
        a.join(10)
        b.join(10)
    assert answers == {"A": 200, "B": 200}
    assert server.seen["/a"] == 1, "the request was sent twice"


def test_an_async_request_keeps_the_connection_it_was_handed(server: _Counting, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> dict[str, int | str]:
        handed, decided = asyncio.Event(), asyncio.Event()
        wait = async_pool.AsyncPoolRequest.wait_for_connection

        async def held_after_handing(self: Any, timeout: float | None = None) -> Any:
            connection = await wait(self, timeout)
            if _name() == "A" and not handed.is_set():
                handed.set()
                await decided.wait()
            return connection

        monkeypatch.setattr(async_pool.AsyncPoolRequest, "wait_for_connection", held_after_handing)
        async with httpay.AsyncClient(wallet=FakeWallet(FakeService()), ledger=tmp_path / "ledger.sqlite3", limits=LIMITS, timeout=5) as client:
            pool = client._transport.inner._pool  # type: ignore[attr-defined]
            close = pool._close_connections

            async def close_late(closing: list[Any]) -> None:
                if _name() == "B" and not decided.is_set():
                    decided.set()
                    if closing:
                        await asyncio.to_thread(server.arrived.wait, 5)
                await close(closing)

            pool._close_connections = close_late
            assert (await client.get(_url(server, "/warm"))).status_code == 200
            answers: dict[str, int | str] = {}

            async def get(name: str) -> None:
                try:
                    answers[name] = (await client.get(_url(server, f"/{name.lower()}"))).status_code
                except httpx.HTTPError as exc:
                    answers[name] = type(exc).__name__

            a = asyncio.create_task(get("A"), name="A")
            await asyncio.wait_for(handed.wait(), 5)
            await asyncio.sleep(EXPIRY_S + 0.1)
            b = asyncio.create_task(get("B"), name="B")
            await asyncio.wait_for(asyncio.gather(a, b), 10)
            return answers

    assert asyncio.run(go()) == {"A": 200, "B": 200}
    assert server.seen["/a"] == 1, "the request was sent twice"


def _name() -> str:
    task = asyncio.current_task()
    return task.get_name() if task is not None else ""
