"""httpay.Client / AsyncClient stay true to httpx: httpx builds the transports from the client's own
arguments (verify, cert, http2, limits, proxy, mounts, trust_env proxies, transport) and httpay wraps
each of them with the payment step, so a 402 is paid whichever route a request takes.

Proven with real parts on loopback: a real forward proxy from PyPI (proxy.py), a TLS service whose
certificate comes from a local CA (trustme), a pool limit observed at the server, a caller's
MockTransport and mounts. Every test runs sync and async.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import uvicorn

import httpay
from tests.helpers import NOTEBOOK_OFFERS
from tests.hostile.harness import (
    CountingWallet,
    HostileService,
    Node,
    Outcome,
    run,
)

POLICY = httpay.Policy(budget_sat=1_000, usd_per_btc=100_000)
PAID = 10_000 + 1_000  # the invoice and the counting wallet's fee


@pytest.fixture(autouse=True)
def no_ambient_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's own proxy settings must not decide these tests."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


# -- a real forward proxy ----------------------------------------------------------------------------
class ForwardProxy:
    """proxy.py in its own process on 127.0.0.1; its recording plugin says which requests it carried."""

    def __init__(self, tmp: Path) -> None:
        self.log = tmp / "proxy.requests"
        port_file = tmp / "proxy.port"
        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
             "--num-workers", "1", "--num-acceptors", "1", "--log-level", "w", "--log-file", str(tmp / "proxy.log"),
             "--plugins", "tests.hostile.proxy_recorder.RecordingPlugin"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=root,
            env={**os.environ, "HTTPAY_PROXY_RECORD": str(self.log), "PYTHONPATH": str(root)},
        )
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("proxy.py did not start")
            time.sleep(0.05)
        self.port = int(port_file.read_text().strip())
        self.url = f"http://127.0.0.1:{self.port}"
        while True:  # listening once a connection is accepted
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("proxy.py does not accept connections") from None
                time.sleep(0.05)

    def carried(self, target: str) -> list[str]:
        """The methods of the requests the proxy forwarded to `target` (host:port/path), in order."""
        if not self.log.exists():
            return []
        return [method for method, _, where in (line.partition(" ") for line in self.log.read_text().splitlines())
                if where == target]

    def wait_for(self, target: str, count: int) -> list[str]:
        end = time.monotonic() + 15
        while len(found := self.carried(target)) < count and time.monotonic() < end:
            time.sleep(0.05)
        return found

    def settle(self, svc: HostileService) -> None:
        """Send a marker through the proxy and wait for its log line: every earlier line is written by then."""
        marker = f"/marker-{uuid.uuid4().hex[:8]}"
        svc.free(marker)
        httpx.get(svc.url + marker, proxy=self.url, timeout=10)
        assert self.wait_for(svc.url.removeprefix("http://") + marker, 1)

    def close(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def forward_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForwardProxy]:
    fp = ForwardProxy(tmp_path_factory.mktemp("proxy"))
    try:
        yield fp
    finally:
        fp.close()


def _paid_route(svc: HostileService) -> tuple[str, str, str]:
    """A fresh v0.2 paywall: (url, its host:port/path, its payment endpoint's host:port/path)."""
    name = uuid.uuid4().hex[:8]
    url = svc.v02(f"/paid-{name}", pr_path=f"/pay-{name}")
    hostport = svc.url.removeprefix("http://")
    return url, f"{hostport}/paid-{name}", f"{hostport}/pay-{name}"


def _assert_paid_once(out: Outcome) -> None:
    assert out.error is None, repr(out.error)
    assert out.status == 200
    assert out.response is not None and httpay.receipt_of(out.response) is not None
    assert out.wallet_calls == 1 and len(out.settled) == 1 and len(out.receipts) == 1
    assert out.spent_msat == PAID


# -- proxies ---------------------------------------------------------------------------------------
def test_explicit_proxy_carries_the_paid_request(svc: HostileService, wallet: CountingWallet, ledger: Path,
                                                  mode: str, forward_proxy: ForwardProxy) -> None:
    url, target, pay = _paid_route(svc)
    out = run(mode, url, wallet=wallet, ledger=ledger, policy=POLICY, proxy=forward_proxy.url, timeout=10)
    _assert_paid_once(out)
    assert forward_proxy.wait_for(target, 2)[:2] == ["GET", "GET"]  # the 402, then the paid retry
    assert forward_proxy.wait_for(pay, 1) == ["POST"]  # the invoice was asked for through it too


def test_http_proxy_from_the_environment(svc: HostileService, wallet: CountingWallet, ledger: Path, mode: str,
                                         forward_proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    url, target, pay = _paid_route(svc)
    out = run(mode, url, wallet=wallet, ledger=ledger, policy=POLICY, timeout=10)
    _assert_paid_once(out)
    assert len(forward_proxy.wait_for(target, 2)) >= 2 and forward_proxy.wait_for(pay, 1) == ["POST"]


@pytest.mark.parametrize("how", ["NO_PROXY", "trust_env=False"])
def test_environment_proxy_bypassed(how: str, svc: HostileService, wallet: CountingWallet, ledger: Path, mode: str,
                                    forward_proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    kwargs: dict[str, Any] = {"timeout": 10}
    if how == "NO_PROXY":
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    else:
        kwargs["trust_env"] = False
    url, target, pay = _paid_route(svc)
    out = run(mode, url, wallet=wallet, ledger=ledger, policy=POLICY, **kwargs)
    _assert_paid_once(out)
    forward_proxy.settle(svc)
    assert forward_proxy.carried(target) == [] and forward_proxy.carried(pay) == []


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_environment_proxy_is_really_used(svc: HostileService, wallet: CountingWallet, ledger: Path, mode: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY at a dead port: the request fails as httpx's does (nothing paid); NO_PROXY saves it."""
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_dead_port()}")
    url, _, _ = _paid_route(svc)
    out = run(mode, url, wallet=wallet, ledger=ledger, policy=POLICY, timeout=10)
    assert isinstance(out.error, httpx.ProxyError | httpx.ConnectError), repr(out.error)
    assert out.wallet_calls == 0 and out.receipts == []
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    _assert_paid_once(run(mode, url, wallet=wallet, ledger=ledger, policy=POLICY, timeout=10))


# -- TLS -------------------------------------------------------------------------------------------
@contextmanager
def tls_service(ca: trustme.CA, tmp: Path, *, client_ca: trustme.CA | None = None) -> Iterator[HostileService]:
    """A HostileService over HTTPS with a certificate of `ca`; with `client_ca`, it demands a client
    certificate signed by that CA (mutual TLS)."""
    cert = ca.issue_cert("127.0.0.1")
    pem = tmp / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    extra: dict[str, Any] = {}
    if client_ca is not None:
        ca_pem = tmp / "client-ca.pem"
        client_ca.cert_pem.write_to_path(str(ca_pem))
        extra = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(ca_pem)}
    svc = HostileService()
    config = uvicorn.Config(svc.app(), host="127.0.0.1", port=0, log_level="warning", ssl_certfile=str(pem),
                            timeout_graceful_shutdown=1, **extra)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < end, "the TLS service did not start"
        time.sleep(0.01)
    svc.url = f"https://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        yield svc
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_verify_with_a_local_ca(mode: str, tmp_path: Path) -> None:
    ca = trustme.CA()
    with tls_service(ca, tmp_path) as tls:
        url = tls.v02("/tls", pr_path="/tls-pay")
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        wallet = CountingWallet(tls.node)
        _assert_paid_once(run(mode, url, wallet=wallet, ledger=tmp_path / "a.db", policy=POLICY, verify=ctx))
        # Without the CA, httpx's own certificate check refuses the service: nothing is paid.
        out = run(mode, url, wallet=wallet, ledger=tmp_path / "b.db", policy=POLICY)
        assert isinstance(out.error, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(out.error)
        assert len(wallet.calls) == 1 and out.receipts == []


def test_client_certificate(mode: str, tmp_path: Path) -> None:
    """Mutual TLS: the service demands a client certificate; the one in the client's SSL context is shown."""
    ca, people = trustme.CA(), trustme.CA()
    with tls_service(ca, tmp_path, client_ca=people) as tls:
        url = tls.v02("/mtls", pr_path="/mtls-pay")
        wallet = CountingWallet(tls.node)
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        people.issue_cert("agent@example.com").configure_cert(ctx)
        _assert_paid_once(run(mode, url, wallet=wallet, ledger=tmp_path / "a.db", policy=POLICY, verify=ctx))
        bare = ssl.create_default_context()
        ca.configure_trust(bare)
        out = run(mode, url, wallet=wallet, ledger=tmp_path / "b.db", policy=POLICY, verify=bare)
        assert isinstance(out.error, httpx.TransportError), repr(out.error)
        assert len(wallet.calls) == 1 and out.receipts == []


def test_http2_reaches_httpx(wallet: CountingWallet, ledger: Path, mode: str) -> None:
    """http2=True is handed to httpx's transport: without the h2 package it fails exactly as httpx does."""
    plain = httpx.Client if mode == "sync" else httpx.AsyncClient
    paying = httpay.Client if mode == "sync" else httpay.AsyncClient
    try:
        import h2  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError) as theirs:
            plain(http2=True)
        with pytest.raises(ImportError) as ours:
            paying(wallet=wallet, ledger=ledger, http2=True)
        assert str(ours.value) == str(theirs.value)
    else:
        c = paying(wallet=wallet, ledger=ledger, http2=True)
        assert c._transport.inner._pool._http2 is True  # type: ignore[union-attr]


# -- the connection pool ---------------------------------------------------------------------------
class ConnectionWatch:
    """ASGI middleware: how many requests the server handles at once, and from how many client sockets."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.active = 0
        self.most = 0
        self.peers: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self._lock:
            self.active += 1
            self.most = max(self.most, self.active)
            self.peers.add(tuple(scope["client"]))
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self.active -= 1


@contextmanager
def watched_service() -> Iterator[tuple[HostileService, ConnectionWatch]]:
    from tests.wallets.fakes import serve

    svc = HostileService()
    watch = ConnectionWatch(svc.app())
    with serve(watch) as url:  # type: ignore[arg-type]
        svc.url = url

        async def meet(request: Any) -> Any:
            """Answers once a second request is in too (or after 0.3 s): overlap shows when it can happen."""
            from starlette.responses import JSONResponse

            end = time.monotonic() + 0.3
            while watch.active < 2 and time.monotonic() < end:
                await asyncio.sleep(0.01)
            return JSONResponse({"ok": True})
        svc.route("/meet", meet)
        yield svc, watch


def _burst(mode: str, url: str, n: int, **kwargs: Any) -> list[int]:
    """One paid request, then `n` requests at once, all on one client."""
    if mode == "sync":
        with httpay.Client(**kwargs) as c:
            statuses = [c.get(url + "/paid").status_code]
            results: list[int] = []
            threads = [threading.Thread(target=lambda: results.append(c.get(url + "/meet").status_code))
                       for _ in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            return statuses + results

    async def go() -> list[int]:
        async with httpay.AsyncClient(**kwargs) as c:
            first = (await c.get(url + "/paid")).status_code
            answers = await asyncio.gather(*(c.get(url + "/meet") for _ in range(n)))
            return [first] + [a.status_code for a in answers]
    return asyncio.run(go())


@pytest.mark.parametrize("max_connections", [1, None])
def test_pool_limit_is_observed_at_the_server(max_connections: int | None, mode: str, tmp_path: Path) -> None:
    with watched_service() as (svc, watch):
        svc.v02("/paid", pr_path="/pay")
        wallet = CountingWallet(svc.node)
        statuses = _burst(mode, svc.url, 4, wallet=wallet, ledger=tmp_path / "l.db", policy=POLICY, timeout=30,
                          limits=httpx.Limits(max_connections=max_connections))
        assert statuses == [200] * 5 and len(wallet.calls) == 1
        if max_connections == 1:
            assert watch.most == 1 and len(watch.peers) == 1  # one connection, reused for all of it
        else:
            assert watch.most >= 2 and len(watch.peers) >= 2  # the test can see overlap when it is allowed


# -- a caller's transport and mounts ---------------------------------------------------------------
class MockPaywall:
    """An in-memory v0.2 service for httpx.MockTransport: real invoices from `node`, one credit each."""

    def __init__(self, node: Node, base: str) -> None:
        self.node, self.base = node, base
        self.seen: list[str] = []
        self.timeouts: list[Any] = []
        self.minted: list[str] = []
        self.used: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.path}")
        self.timeouts.append(request.extensions.get("timeout"))
        if request.url.path == "/pay":
            bolt11, payment_hash = self.node.mint(10_000)
            self.minted.append(payment_hash)
            return httpx.Response(200, json={"version": "0.2.2", "offer_id": "offer_c668e0c0",
                                             "expires_at": "2099-01-01T00:00:00+00:00",
                                             "payment_request": {"lightning_invoice": bolt11}})
        for h in self.minted:
            if h not in self.used and self.node.settled(h):
                self.used.add(h)
                return httpx.Response(200, json={"served": True})
        return httpx.Response(402, json={"version": "0.2.2", "payment_request_url": self.base + "/pay",
                                         "payment_context_token": "ctx", "offers": NOTEBOOK_OFFERS})


def test_callers_transport_is_used_and_paid_through(mode: str, tmp_path: Path) -> None:
    node = Node()
    paywall = MockPaywall(node, "http://mock.example")
    wallet = CountingWallet(node)
    out = run(mode, "http://mock.example/thing", wallet=wallet, ledger=tmp_path / "l.db", policy=POLICY,
              transport=httpx.MockTransport(paywall), timeout=httpx.Timeout(7.0, connect=3.0))
    _assert_paid_once(out)
    assert paywall.seen == ["GET /thing", "POST /pay", "GET /thing"]
    # Every request, the payment request the flow made itself included, carries the client's timeouts.
    assert paywall.timeouts == [{"connect": 3.0, "read": 7.0, "write": 7.0, "pool": 7.0}] * 3


class CountingTransport(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.count += 1
        return super().handle_request(request)


class AsyncCountingTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.count += 1
        return await super().handle_async_request(request)


def test_mounts_each_route_pays(svc: HostileService, mode: str, tmp_path: Path) -> None:
    """A mock paywall mounted for one host and a counting transport for the loopback service: both pay."""
    def mounts() -> tuple[MockPaywall, CountingTransport | AsyncCountingTransport, dict[str, Any]]:
        paywall = MockPaywall(svc.node, "http://mock.example")
        loop: CountingTransport | AsyncCountingTransport = (
            CountingTransport() if mode == "sync" else AsyncCountingTransport())
        return paywall, loop, {"http://mock.example": httpx.MockTransport(paywall), "http://127.0.0.1": loop}

    paywall, loop, routes = mounts()
    out = run(mode, "http://mock.example/thing", wallet=CountingWallet(svc.node), ledger=tmp_path / "a.db",
              policy=POLICY, mounts=routes)
    _assert_paid_once(out)
    assert paywall.seen == ["GET /thing", "POST /pay", "GET /thing"] and loop.count == 0
    url, _, _ = _paid_route(svc)
    paywall, loop, routes = mounts()
    out = run(mode, url, wallet=CountingWallet(svc.node), ledger=tmp_path / "b.db", policy=POLICY, mounts=routes)
    _assert_paid_once(out)
    assert loop.count >= 3 and paywall.seen == []  # the 402, the payment request, the paid retry (and re-tries)


# -- streaming -------------------------------------------------------------------------------------
def test_stream_of_a_free_answer_is_not_buffered(svc: HostileService, wallet: CountingWallet, ledger: Path,
                                                 mode: str) -> None:
    """`client.stream(...)` hands over an answer as it comes, as httpx does: an endless event stream
    shows its first event at once instead of blocking the caller while the payment step buffers it."""
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse

    stop = threading.Event()

    async def events(request: Request) -> Response:
        async def forever() -> Any:
            n = 0
            while not stop.is_set() and n < 3000:
                yield f"data: {n}\n\n".encode()
                n += 1
                await asyncio.sleep(0.01)
        return StreamingResponse(forever(), media_type="text/event-stream")

    url = svc.route("/events", events)
    try:
        if mode == "sync":
            with httpay.Client(wallet=wallet, ledger=ledger, timeout=10) as c, c.stream("GET", url) as r:
                first = next(r.iter_bytes())
        else:
            async def go() -> bytes:
                async with httpay.AsyncClient(wallet=wallet, ledger=ledger, timeout=10) as c:
                    async with c.stream("GET", url) as r:
                        async for chunk in r.aiter_bytes():
                            return chunk
                raise AssertionError("no event")
            first = asyncio.run(asyncio.wait_for(go(), 15))
    finally:
        stop.set()
    assert first.startswith(b"data: 0")
    assert wallet.calls == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_payment_transport_given_to_an_httpay_client_is_refused(mode: str, tmp_path: Path) -> None:
    """It would wrap the payment step twice; the error says what to pass instead, and no ledger is opened."""
    wallet = httpay.DemoWallet("http://127.0.0.1:9", "k")
    payer_client = httpay.Client(wallet=wallet, ledger=":memory:")
    inner = payer_client._transport
    try:
        with pytest.raises(httpay.ConfigError, match="already an httpay payment transport"):
            if mode == "sync":
                httpay.Client(wallet=wallet, ledger=tmp_path / "l.db", transport=inner)
            else:
                httpay.AsyncClient(wallet=wallet, ledger=tmp_path / "l.db", transport=inner)
        assert not (tmp_path / "l.db").exists()
    finally:
        payer_client.close()
