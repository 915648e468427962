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
        return Payment(payment_hash=inv.payment_hash, status=PaymentStatus.SETTLED, amount_msat=amount,
                       fee_msat=self.fee_msat, preimage=pre)

    def lookup(self, payment_hash: str) -> Payment | None:
        if payment_hash in self.node.paid:
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
        from httpay.errors import ChallengeError
        from httpay.protocols.l402_classic import parse_credential

        header = request.headers.get("authorization", "")
        try:
            cred = parse_credential(header)
        except ChallengeError:
            return False
        for mac in cred.macaroons:
            info = macaroons.decode(mac)
            if not macaroons.verify(self.root_key, mac, cred.preimage) or not self.node.settled(info.payment_hash or ""):
                return False
        return bool(cred.macaroons)

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
