"""The hostile-server harness: loopback services that misbehave on purpose, a node that issues
real signed invoices, and a wallet that counts every call.

A test builds a `HostileService`, puts handlers on its paths (`svc.route("/x", handler)`), and
runs one request through `run(mode, ...)` with `mode` "sync" (httpay.Client) or "async"
(httpay.AsyncClient). The `Outcome` says what a person would check: the response or the error,
how many times the wallet was asked to pay, the ledger rows, and what was spent (fees included).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import httpay
from httpay.errors import WalletError
from httpay.ledger import Receipt, SQLiteLedger
from httpay.protocols import macaroons
from httpay.wallets.base import Payment, PaymentStatus, Wallet
from tests.helpers import NOTEBOOK_OFFERS, make_invoice
from tests.wallets.fakes import serve

MODES = ("sync", "async")
Handler = Callable[[Request], Awaitable[Response]]


class Node:
    """The hostile side's Lightning node: real signed regtest invoices, preimages it remembers."""

    def __init__(self) -> None:
        self.preimages: dict[str, str] = {}  # payment hash -> preimage
        self.paid: list[str] = []            # payment hashes, in the order they were paid
        self.paid_by: dict[str, str] = {}    # payment hash -> the identity of the wallet that paid it
        self._lock = threading.Lock()

    def mint(self, amount_msat: int | None = 10_000, *, description: str = "hostile test", expiry: int = 600,
             network: str = "regtest") -> tuple[str, str]:
        """A fresh invoice: (bolt11, payment_hash)."""
        bolt11, pre = make_invoice(amount_msat, description=description, expiry=expiry, network=network)
        payment_hash = hashlib.sha256(bytes.fromhex(pre)).hexdigest()
        with self._lock:
            self.preimages[payment_hash] = pre
        return bolt11, payment_hash

    def settled(self, payment_hash: str) -> bool:
        with self._lock:
            return payment_hash in self.paid


class CountingWallet(Wallet):
    """Pays invoices of its `Node`, counting every call; the fee, a delay or a failure are knobs."""

    network = "regtest"
    name = "counting"

    def __init__(self, node: Node, *, fee_msat: int = 1_000, delay_s: float = 0.0,
                 fail: Exception | None = None, balance_msat: int = 100_000_000,
                 wallet_id: str | None = None) -> None:
        self.node = node
        self.wallet_id = wallet_id  # its identity on the ledger (None: "counting", every CountingWallet alike)
        self.fee_msat = fee_msat
        self.delay_s = delay_s
        self.fail = fail
        self.balance = balance_msat
        self.calls: list[str] = []
        self.max_fees: list[int | None] = []
        self._lock = threading.Lock()

    @property
    def paid(self) -> int:
        """How many payments really left this wallet."""
        return len(self.calls) if self.fail is None else 0

    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Payment:
        from httpay.lightning import decode_invoice

        with self._lock:
            self.calls.append(bolt11)
            self.max_fees.append(max_fee_msat)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        inv = decode_invoice(bolt11)
        pre = self.node.preimages.get(inv.payment_hash)
        if pre is None:
            raise WalletError("no route to the invoice's node", outcome_known=True)
        amount = inv.amount_msat or 0
        with self._lock:
            self.balance -= amount + self.fee_msat
            self.node.paid.append(inv.payment_hash)
            self.node.paid_by[inv.payment_hash] = self.identity
        return Payment(payment_hash=inv.payment_hash, status=PaymentStatus.SETTLED, amount_msat=amount,
                       fee_msat=self.fee_msat, preimage=pre)

    def lookup(self, payment_hash: str) -> Payment | None:
        """What this wallet paid (as a real wallet knows only its own payments)."""
        if self.node.paid_by.get(payment_hash) == self.identity:
            return Payment(payment_hash=payment_hash, status=PaymentStatus.SETTLED, fee_msat=self.fee_msat,
                           preimage=self.node.preimages[payment_hash])
        return None

    def balance_msat(self) -> int:
        return self.balance

    @property
    def identity(self) -> str:
        return f"counting:{self.wallet_id or 'shared'}"

    def close(self) -> None:
        pass


class HostileService:
    """A loopback HTTP service whose every path is a handler the test sets.

    Built-in handlers: `v02(...)` (L402 v0.2 offers and a payment-request endpoint), `classic(...)`
    (Aperture-style macaroon + invoice, a fresh one per 402), `free(...)`. Counters: `hits[path]`.
    """

    def __init__(self) -> None:
        self.node = Node()
        self.root_key = os.urandom(32)
        self.handlers: dict[str, Handler] = {}
        self.hits: dict[str, int] = {}
        self.url = ""
        self.credits = 0
        self.issued = 0
        self._lock = threading.Lock()

    # -- serving ------------------------------------------------------------------------------
    async def _dispatch(self, request: Request) -> Response:
        path = request.url.path
        with self._lock:
            self.hits[path] = self.hits.get(path, 0) + 1
        handler = self.handlers.get(path)
        if handler is None:
            return JSONResponse({"error": f"no handler for {path}"}, status_code=404)
        return await handler(request)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._dispatch, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])])

    def route(self, path: str, handler: Handler) -> str:
        """Serve `handler` at `path`; returns the full URL."""
        self.handlers[path] = handler
        return self.url + path

    # -- built-in behaviours ------------------------------------------------------------------
    def free(self, path: str = "/free", body: dict[str, Any] | None = None) -> str:
        async def handler(request: Request) -> Response:
            return JSONResponse(body or {"ok": True})
        return self.route(path, handler)

    def v02(self, path: str = "/v02", *, offers: list[dict[str, Any]] | None = None, invoice_msat: int | None = 10_000,
            pr_path: str = "/pay", pr_url: str | None = None, pr_handler: Handler | None = None,
            body: dict[str, Any] | None = None) -> str:
        """A v0.2 paywall: one credit per paid invoice. `invoice_msat` is what the invoice asks."""
        async def gate(request: Request) -> Response:
            with self._lock:
                if self.credits > 0:
                    self.credits -= 1
                    return JSONResponse(body or {"served": True})
            return JSONResponse({
                "version": "0.2.2", "payment_request_url": pr_url or (self.url + pr_path),
                "payment_context_token": "ctx-1", "offers": offers if offers is not None else NOTEBOOK_OFFERS,
            }, status_code=402)

        async def pay(request: Request) -> Response:
            data = await request.json()
            bolt11, payment_hash = self.node.mint(invoice_msat, description=str(data.get("offer_id")))
            asyncio.get_running_loop().create_task(self._credit_when_paid(payment_hash))
            return JSONResponse({"version": "0.2.2", "offer_id": data.get("offer_id"),
                                 "expires_at": "2099-01-01T00:00:00+00:00",
                                 "payment_request": {"lightning_invoice": bolt11}})

        self.route(pr_path, pr_handler or pay)
        return self.route(path, gate)

    async def _credit_when_paid(self, payment_hash: str) -> None:
        for _ in range(3000):
            if self.node.settled(payment_hash):
                with self._lock:
                    self.credits += 1
                return
            await asyncio.sleep(0.01)

    def classic_challenge(self, price_sat: int = 10, *, bind_hash: str | None = None) -> Response:
        """An Aperture-style 402: a fresh invoice, a macaroon committing to `bind_hash` (default: its hash)."""
        bolt11, payment_hash = self.node.mint(price_sat * 1000, description="L402 access")
        mac = macaroons.mint(self.root_key, bind_hash or payment_hash, caveats=["services=hostile:0"])
        with self._lock:
            self.issued += 1
        params = f'macaroon="{mac}", invoice="{bolt11}"'
        resp = JSONResponse({"error": "payment required"}, status_code=402)
        resp.headers.append("WWW-Authenticate", f"LSAT {params}")
        resp.headers.append("WWW-Authenticate", f'L402 version="0", {params}')
        return resp

    def authorized(self, request: Request) -> bool:
        """True when the request carries a paid macaroon of this service."""
        return authorized_header(self, request.headers.get("authorization", ""))

    def classic(self, path: str = "/classic", *, price_sat: int = 10, body: dict[str, Any] | None = None,
                bind_hash: str | None = None) -> str:
        """A classic L402 route minting a fresh macaroon + invoice per 402 (as Aperture does)."""
        async def handler(request: Request) -> Response:
            if self.authorized(request):
                return JSONResponse(body or {"served": True})
            return self.classic_challenge(price_sat, bind_hash=bind_hash)
        return self.route(path, handler)


@contextmanager
def hostile_service() -> Iterator[HostileService]:
    svc = HostileService()
    with serve(svc.app()) as url:
        svc.url = url
        yield svc


@dataclass
class Outcome:
    """What one request through httpay did, as a person would check it."""

    response: httpx.Response | None
    error: BaseException | None
    wallet_calls: int
    receipts: list[Receipt] = field(default_factory=list)
    spent_msat: int = 0

    @property
    def status(self) -> int | None:
        return self.response.status_code if self.response is not None else None

    @property
    def settled(self) -> list[Receipt]:
        return [r for r in self.receipts if r.status.value == "settled"]


def client_for(mode: str, **kwargs: Any) -> httpay.Client | httpay.AsyncClient:
    return httpay.Client(**kwargs) if mode == "sync" else httpay.AsyncClient(**kwargs)


def run(mode: str, url: str, *, wallet: Wallet | None, ledger: Path, policy: httpay.Policy | None = None,
        method: str = "GET", request: dict[str, Any] | None = None, **client_kwargs: Any) -> Outcome:
    """One request through `httpay.Client` (mode "sync") or `httpay.AsyncClient` ("async")."""
    response: httpx.Response | None = None
    error: BaseException | None = None
    kwargs = dict(wallet=wallet, policy=policy, ledger=ledger, **client_kwargs)
    if mode == "sync":
        try:
            with httpay.Client(**kwargs) as c:
                response = c.request(method, url, **(request or {}))
        except Exception as exc:  # noqa: BLE001 - the test asserts its type and text
            error = exc
    else:
        async def go() -> httpx.Response:
            async with httpay.AsyncClient(**kwargs) as c:
                return await c.request(method, url, **(request or {}))
        try:
            response = asyncio.run(go())
        except Exception as exc:  # noqa: BLE001
            error = exc
    calls = len(wallet.calls) if isinstance(wallet, CountingWallet) else 0
    with SQLiteLedger(ledger) as lg:
        rows = lg.receipts()
        spent = lg.spent_msat()
    return Outcome(response, error, calls, rows, spent)


# -- additions for the money-core cases (tests/hostile/test_money_core.py) ------------------------
X402_USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"   # USDC on Base Sepolia (a known asset: 6 decimals)
X402_PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
X402_KEY = "0x" + "4c" * 32


def _b64json(data: Any) -> str:
    import base64
    import json

    return base64.b64encode(json.dumps(data).encode()).decode()


def _release_event(svc: HostileService) -> threading.Event:
    ev: threading.Event | None = getattr(svc, "_hang_release", None)
    if ev is None:
        ev = threading.Event()
        svc._hang_release = ev  # type: ignore[attr-defined]
    return ev


async def _hang(svc: HostileService) -> None:
    """Answer nothing until the test calls `release(svc)` (a safety net ends it after 60 s)."""
    ev = _release_event(svc)
    for _ in range(1200):
        if ev.is_set():
            return
        await asyncio.sleep(0.05)


def release(svc: HostileService) -> None:
    """Let every hanging handler of `svc` finish (call it once the client has given up)."""
    _release_event(svc).set()


def authorized_header(svc: HostileService, header: str) -> bool:
    """`svc.authorized` for a raw Authorization value (for services that are not Starlette routes)."""
    from httpay.errors import ChallengeError
    from httpay.protocols.l402_classic import parse_credential

    try:
        cred = parse_credential(header)
    except ChallengeError:
        return False
    for mac in cred.macaroons:
        info = macaroons.decode(mac)
        if not macaroons.verify(svc.root_key, mac, cred.preimage) or not svc.node.settled(info.payment_hash or ""):
            return False
    return bool(cred.macaroons)


def classic_static(svc: HostileService, path: str = "/static", *, price_sat: int = 10) -> str:
    """A classic L402 route answering every 402 with the SAME macaroon and invoice (one challenge for all)."""
    first = svc.classic_challenge(price_sat)

    async def handler(request: Request) -> Response:
        if svc.authorized(request):
            return JSONResponse({"served": True})
        return _copy(first)
    return svc.route(path, handler)


def _copy(resp: Response) -> Response:
    out = Response(resp.body, status_code=resp.status_code)
    out.raw_headers = list(resp.raw_headers)
    return out


def classic_token68(svc: HostileService, path: str = "/opaque", *, price_sat: int = 10, honour: bool = True) -> str:
    """A classic L402 route whose token is not a macaroon (getalby-style `b64url.hex`): it commits to
    nothing a client can read. `honour=False`: the service refuses even a paid token."""
    import base64
    import secrets as _secrets

    issued: dict[str, str] = {}  # token -> payment hash

    async def handler(request: Request) -> Response:
        header = request.headers.get("authorization", "")
        _, _, rest = header.partition(" ")
        token, _, pre = rest.rpartition(":")
        ph = issued.get(token)
        if honour and ph and len(pre) == 64 and hashlib.sha256(bytes.fromhex(pre)).hexdigest() == ph \
                and svc.node.settled(ph):
            return JSONResponse({"served": True})
        bolt11, payment_hash = svc.node.mint(price_sat * 1000, description="L402 access")
        token = base64.urlsafe_b64encode(_secrets.token_bytes(12)).decode().rstrip("=") + "." + _secrets.token_hex(8)
        issued[token] = payment_hash
        with svc._lock:
            svc.issued += 1
        resp = JSONResponse({"error": "payment required"}, status_code=402)
        resp.headers.append("WWW-Authenticate", f'L402 version="0", token="{token}", invoice="{bolt11}"')
        return resp
    return svc.route(path, handler)


def classic_then(svc: HostileService, path: str, behaviour: str, *, price_sat: int = 10) -> str:
    """A classic L402 route that, once paid, misbehaves: "hang" (never answers) or "503"."""
    async def handler(request: Request) -> Response:
        if not svc.authorized(request):
            return svc.classic_challenge(price_sat)
        if behaviour == "hang":
            await _hang(svc)
            return JSONResponse({"late": True})
        return JSONResponse({"error": "upstream down"}, status_code=503)
    return svc.route(path, handler)


def v02_then(svc: HostileService, path: str, behaviour: str, *, invoice_msat: int = 10_000) -> str:
    """A v0.2 paywall that, once paid, misbehaves: "hang" (never answers) or "500"."""
    svc.v02(path + "-gate", invoice_msat=invoice_msat, pr_path=path + "-pay")
    gate = svc.handlers[path + "-gate"]

    async def handler(request: Request) -> Response:
        with svc._lock:
            paid = svc.credits > 0
        if not paid:
            return await gate(request)
        if behaviour == "hang":
            await _hang(svc)
            return JSONResponse({"late": True})
        return JSONResponse({"error": "boom"}, status_code=500)
    return svc.route(path, handler)


def x402_requirement(amount: str = "10000") -> dict[str, Any]:
    return {"scheme": "exact", "network": "eip155:84532", "amount": amount, "asset": X402_USDC, "payTo": X402_PAY_TO,
            "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2"}}


def x402(svc: HostileService, path: str = "/x402", *, amounts: tuple[str, ...] = ("10000",), answer: str = "settle") -> str:
    """An x402 v2 paywall. With a payment it answers: "settle" (200 + receipt), "hang" (nothing),
    "500_settled" (500 with a success receipt), "500" (500, no receipt)."""
    challenge = {"x402Version": 2, "error": "Payment required", "resource": {"url": svc.url + path},
                 "accepts": [x402_requirement(a) for a in amounts]}
    receipt = {"success": True, "transaction": "0x" + "ab" * 32, "network": "eip155:84532", "payer": "0x"}

    async def handler(request: Request) -> Response:
        if request.headers.get("payment-signature") is None:
            return JSONResponse({}, status_code=402, headers={"PAYMENT-REQUIRED": _b64json(challenge)})
        with svc._lock:
            svc.hits["x402-paid"] = svc.hits.get("x402-paid", 0) + 1
        if answer == "hang":
            await _hang(svc)
            return JSONResponse({"late": True})
        if answer == "500_settled":
            return JSONResponse({"error": "boom"}, status_code=500, headers={"PAYMENT-RESPONSE": _b64json(receipt)})
        if answer == "500":
            return JSONResponse({"error": "boom"}, status_code=500)
        return JSONResponse({"served": True}, headers={"PAYMENT-RESPONSE": _b64json(receipt)})
    return svc.route(path, handler)


class CountingSigner:
    """An x402 signer (httpay.signers.EvmSigner) that counts what it signed."""

    def __init__(self, key: str = X402_KEY) -> None:
        from httpay.signers import EvmSigner

        self.inner = EvmSigner.from_key(key)
        self.signed: list[dict[str, Any]] = []

    @property
    def address(self) -> str:
        return str(self.inner.address)

    @property
    def name(self) -> str:
        return str(self.inner.name)

    def pays_on(self, network: str) -> bool:
        return bool(self.inner.pays_on(network))

    def sign_typed_data(self, domain: Any, types: Any, primary_type: str, message: Any) -> bytes:
        self.signed.append(dict(message))
        return bytes(self.inner.sign_typed_data(domain, types, primary_type, message))


class RawServer:
    """A loopback server spoken over raw sockets, each connection served by `_one` in its own
    thread: for answers no framework would give. `connections`: how many were opened."""

    def __init__(self, name: str) -> None:
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True, name=name)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: Any) -> None:
        raise NotImplementedError

    @staticmethod
    def read_head(conn: Any) -> bytes | None:
        """The request's bytes up to the end of its head (None: the client hung up first)."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


class RawClassic(RawServer):
    """A classic L402 paywall spoken over raw sockets, so the request after the payment can break
    as no framework would: "reset" (RST), "short" (the body stops half way), "garbage" (not HTTP)."""

    def __init__(self, svc: HostileService, behaviour: str, *, price_sat: int = 10) -> None:
        self.svc, self.behaviour, self.price_sat = svc, behaviour, price_sat
        self.paid_requests = 0
        super().__init__("raw-classic")
        self.url = self.base + "/raw"

    def _one(self, conn: Any) -> None:
        import socket
        import struct

        with conn:
            data = self.read_head(conn)
            if data is None:
                return
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            auth = ""
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "authorization":
                    auth = value.strip()
            if not auth or not authorized_header(self.svc, auth):
                ch = self.svc.classic_challenge(self.price_sat)
                lines = [b"HTTP/1.1 402 Payment Required"]
                lines += [k + b": " + v for k, v in ch.raw_headers if k.lower() not in (b"content-length",)]
                lines += [b"Content-Length: " + str(len(ch.body)).encode(), b"Connection: close"]
                conn.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + bytes(ch.body))
                return
            self.paid_requests += 1
            if self.behaviour == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif self.behaviour == "short":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ok\":")
            else:
                conn.sendall(b"\x00\x01 this is not HTTP at all\r\n\r\n")


@dataclass
class Many:
    """What N concurrent requests through one client did."""

    statuses: list[int]
    errors: list[BaseException]
    wallet_calls: int
    receipts: list[Receipt]
    spent_msat: int


def run_many(mode: str, url: str, n: int, *, wallet: Wallet | None, ledger: Path, policy: httpay.Policy | None = None,
             clients: int = 1, method: str = "GET", send: dict[str, Any] | None = None, **client_kwargs: Any) -> Many:
    """`n` concurrent requests (`method`, with `send`'s content=, headers=...): threads sharing
    `clients` httpay.Client(s) ("sync"), or asyncio tasks sharing `clients` httpay.AsyncClient(s)
    ("async"). Several clients share nothing but the ledger file, as separate processes would."""
    send = send or {}
    statuses: list[int] = []
    errors: list[BaseException] = []
    kwargs = dict(wallet=wallet, policy=policy, ledger=ledger, **client_kwargs)
    if mode == "sync":
        cs = [httpay.Client(**kwargs) for _ in range(clients)]
        start = threading.Barrier(n)

        def one(i: int) -> None:
            start.wait()
            try:
                statuses.append(cs[i % clients].request(method, url, **send).status_code)
            except Exception as exc:  # noqa: BLE001 - the test asserts there are none
                errors.append(exc)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in cs:
            c.close()
    else:
        async def go() -> None:
            acs = [httpay.AsyncClient(**kwargs) for _ in range(clients)]

            async def one(i: int) -> None:
                try:
                    statuses.append((await acs[i % clients].request(method, url, **send)).status_code)
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)
            await asyncio.gather(*(one(i) for i in range(n)))
            for c in acs:
                await c.aclose()
        asyncio.run(go())
    calls = len(wallet.calls) if isinstance(wallet, CountingWallet) else 0
    with SQLiteLedger(ledger) as lg:
        return Many(statuses, errors, calls, lg.receipts(), lg.spent_msat())
