"""Hostile timing: a payment endpoint that is silent, a server that dribbles bytes, a slow 402 body.

Every request the flow makes itself uses the client's timeouts, and one paid request has a deadline
(`payment_deadline`) from its 402 to the wallet: past it a `PaymentDeadlineExceeded`, nothing paid,
no ledger row. A slow *legitimate* step (a person approving, the retry after paying) is not cut by it.
Each case runs through httpay.Client and httpay.AsyncClient.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

import httpay
from tests.helpers import NOTEBOOK_OFFERS
from tests.hostile.harness import (
    CountingWallet,
    HostileService,
    Outcome,
    client_for,
    run,
)

POLICY = httpay.Policy(budget_sat=1_000, usd_per_btc=100_000)


class Stall:
    """What a stalling handler waits for: the test's `release` (set at the latest at teardown), and
    `answered`, set once a held-back answer has been sent."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.answered = threading.Event()

    async def hold(self, cap_s: float = 30.0) -> None:
        end = time.monotonic() + cap_s
        while not self.release.is_set() and time.monotonic() < end:
            await asyncio.sleep(0.01)


@pytest.fixture
def stall() -> Iterator[Stall]:
    s = Stall()
    yield s
    s.release.set()


def _v02_challenge(svc: HostileService, pr_url: str) -> dict[str, Any]:
    return {"version": "0.2.2", "payment_request_url": pr_url, "payment_context_token": "ctx-1",
            "offers": NOTEBOOK_OFFERS}


def _invoice_answer(svc: HostileService, offer_id: Any) -> dict[str, Any]:
    """A payment request answer with a real invoice; the service credits one call once it is paid."""
    bolt11, payment_hash = svc.node.mint(10_000, description=str(offer_id))

    def credit_when_paid() -> None:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if svc.node.settled(payment_hash):
                with svc._lock:
                    svc.credits += 1
                return
            time.sleep(0.01)
    threading.Thread(target=credit_when_paid, daemon=True).start()
    return {"version": "0.2.2", "offer_id": offer_id, "expires_at": "2099-01-01T00:00:00+00:00",
            "payment_request": {"lightning_invoice": bolt11}}


async def _dribble(data: bytes, stall: Stall, every_s: float = 0.05) -> AsyncIterator[bytes]:
    """One byte at a time, each well within any read timeout, until the test releases it."""
    for i in range(len(data)):
        if stall.release.is_set():
            return
        yield data[i:i + 1]
        await asyncio.sleep(every_s)


# -- the hostile services of the cases -------------------------------------------------------------
def silent_pay_endpoint(svc: HostileService, stall: Stall) -> str:
    """The payment request endpoint says nothing until released, then answers with a real invoice."""
    async def pay(request: Request) -> Response:
        data = await request.json()
        await stall.hold()
        answer = JSONResponse(_invoice_answer(svc, data.get("offer_id")))
        stall.answered.set()
        return answer
    return svc.v02("/silent", pr_path="/pay-silent", pr_handler=pay)


def dribbling_pay_endpoint(svc: HostileService, stall: Stall) -> str:
    """The payment request endpoint answers at once, but its body comes a byte at a time."""
    async def pay(request: Request) -> Response:
        data = await request.json()
        body = json.dumps(_invoice_answer(svc, data.get("offer_id"))).encode()
        return StreamingResponse(_dribble(body, stall), media_type="application/json")
    return svc.v02("/dribble-pay", pr_path="/pay-dribble", pr_handler=pay)


def dribbling_402_body(svc: HostileService, stall: Stall) -> str:
    """The 402 itself arrives a byte at a time (a v0.2 challenge is read from its body)."""
    svc.v02("/unused", pr_path="/pay-402")

    async def gate(request: Request) -> Response:
        body = json.dumps(_v02_challenge(svc, svc.url + "/pay-402")).encode()
        return StreamingResponse(_dribble(body, stall), status_code=402, media_type="application/json")
    return svc.route("/dribble-402", gate)


def dribbling_classic_402(svc: HostileService, stall: Stall) -> str:
    """A classic L402 challenge in its headers, and a body that never ends."""
    async def gate(request: Request) -> Response:
        if svc.authorized(request):
            return JSONResponse({"served": True})
        challenge = svc.classic_challenge()
        headers = [(k, v) for k, v in challenge.headers.items() if k.lower() == "www-authenticate"]
        resp = StreamingResponse(_dribble(b"x" * 100_000, stall), status_code=402, media_type="text/plain")
        for k, v in headers:
            resp.headers.append(k, v)
        return resp
    return svc.route("/dribble-classic", gate)


def slow_but_whole_402(svc: HostileService, stall: Stall) -> str:
    """A 402 body sent slowly in a few pieces, all well within the deadline: it is paid as usual."""
    url = svc.v02("/slow-402", pr_path="/pay-slow")
    inner = svc.handlers["/slow-402"]

    async def gate(request: Request) -> Response:
        answer = await inner(request)
        if answer.status_code != 402:
            return answer
        body = bytes(answer.body)
        pieces = [body[i:i + len(body) // 4 + 1] for i in range(0, len(body), len(body) // 4 + 1)]

        async def slowly() -> AsyncIterator[bytes]:
            for p in pieces:
                yield p
                await asyncio.sleep(0.05)
        return StreamingResponse(slowly(), status_code=402, media_type="application/json")
    svc.route("/slow-402", gate)
    return url


def served_late_after_payment(svc: HostileService, stall: Stall) -> str:
    """Once paid, the service takes longer than the payment deadline to serve: the retry still waits."""
    url = svc.v02("/late", pr_path="/pay-late")
    inner = svc.handlers["/late"]

    async def gate(request: Request) -> Response:
        if svc.credits > 0:
            await asyncio.sleep(1.5)  # longer than the case's 1 s payment deadline
        return await inner(request)
    svc.route("/late", gate)
    return url


class HeaderDribbler:
    """A raw TCP payment endpoint that sends its status line and then its headers a byte at a time
    (no HTTP framework can do that), so only a total bound, not a read timeout, stops it."""

    def __init__(self, stall: Stall) -> None:
        self.stall = stall
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stall.release.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()
        self.sock.close()

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                header = b"x-slow: " + b"a" * 10_000
                for i in range(len(header)):
                    if self.stall.release.is_set():
                        return
                    conn.sendall(header[i:i + 1])
                    time.sleep(0.05)
            except OSError:
                return


class DroppingEndpoint:
    """A raw TCP payment endpoint that drops the first `drops` connections without a word (as a
    server closing a pooled keep-alive connection does), then answers with a real invoice."""

    def __init__(self, svc: HostileService, stall: Stall, drops: int) -> None:
        self.svc, self.stall, self.drops = svc, stall, drops
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stall.release.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                data = conn.recv(65536)
                if self.drops > 0:
                    self.drops -= 1
                    continue
                offer = json.loads(data.split(b"\r\n\r\n", 1)[1] or b"{}").get("offer_id")
                body = json.dumps(_invoice_answer(self.svc, offer)).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.sock.close()


def dropped_once_pay_endpoint(svc: HostileService, stall: Stall) -> str:
    return svc.v02("/dropped-once", pr_url=f"http://127.0.0.1:{DroppingEndpoint(svc, stall, 1).port}/pay")


def always_dropping_pay_endpoint(svc: HostileService, stall: Stall) -> str:
    return svc.v02("/dropped", pr_url=f"http://127.0.0.1:{DroppingEndpoint(svc, stall, 1_000).port}/pay")


def dribbling_pay_headers(svc: HostileService, stall: Stall) -> str:
    dribbler = HeaderDribbler(stall)
    return svc.v02("/dribble-headers", pr_url=f"http://127.0.0.1:{dribbler.port}/pay")


def approver_takes_longer_than_deadline(svc: HostileService, stall: Stall) -> str:
    return svc.v02("/approved", pr_path="/pay-approved")


def _slow_approver(decision: httpay.Decision) -> bool:
    time.sleep(1.5)  # a person thinking: longer than the 1 s payment deadline of the case
    return True


@dataclass
class Case:
    name: str
    service: Callable[[HostileService, Stall], str]
    client: dict[str, Any]
    error: type[BaseException] | None
    says: tuple[str, ...] = ()
    stage: str | None = None
    request: dict[str, Any] = field(default_factory=dict)
    policy: httpay.Policy | None = None
    paid: int = 0
    late_answer: bool = False  # the stalled endpoint answers after the client gave up: still not paid


CASES = [
    Case("silent payment endpoint, client timeout", silent_pay_endpoint, {"timeout": 0.3},
         httpay.PaymentRequestError, ("did not answer within the client's timeout", "nothing was paid"),
         late_answer=True),
    Case("silent payment endpoint, per-request timeout", silent_pay_endpoint, {"timeout": None},
         httpay.PaymentRequestError, ("did not answer within the client's timeout", "ReadTimeout"),
         request={"timeout": 0.3}, late_answer=True),
    Case("silent payment endpoint, no timeout: the deadline", silent_pay_endpoint,
         {"timeout": None, "payment_deadline": 1.0}, httpay.PaymentDeadlineExceeded,
         ("payment_deadline=1 s", "nothing was paid", "Client(payment_deadline=...)"),
         stage="the POST to 127.0.0.1", late_answer=True),
    Case("payment endpoint dribbles its body", dribbling_pay_endpoint, {"timeout": 5, "payment_deadline": 1.0},
         httpay.PaymentDeadlineExceeded, ("payment_deadline=1 s", "nothing was paid"),
         stage="the POST to 127.0.0.1"),
    Case("payment endpoint dribbles its headers", dribbling_pay_headers, {"timeout": 5, "payment_deadline": 1.0},
         httpay.PaymentDeadlineExceeded, ("payment_deadline=1 s", "nothing was paid"),
         stage="the POST to 127.0.0.1"),
    Case("v0.2 402 body dribbles", dribbling_402_body, {"timeout": 5, "payment_deadline": 1.0},
         httpay.PaymentDeadlineExceeded, ("payment_deadline=1 s",), stage="the body of its 402"),
    Case("classic 402 body dribbles", dribbling_classic_402, {"timeout": 5, "payment_deadline": 1.0},
         httpay.PaymentDeadlineExceeded, ("payment_deadline=1 s",), stage="the body of its 402"),
    Case("payment endpoint drops the connection once: asked again", dropped_once_pay_endpoint, {"timeout": 5},
         None, paid=1),
    Case("payment endpoint always drops the connection", always_dropping_pay_endpoint, {"timeout": 5},
         httpay.PaymentRequestError, ("could not be reached", "nothing was paid")),
    Case("slow but whole 402 body is paid", slow_but_whole_402, {"timeout": 5}, None, paid=1),
    Case("retry after payment is not cut by the deadline", served_late_after_payment,
         {"timeout": 10, "payment_deadline": 1.0}, None, paid=1),
    Case("a person's approval time does not count", approver_takes_longer_than_deadline,
         {"timeout": 10, "payment_deadline": 1.0}, None,
         policy=httpay.Policy(budget_sat=1_000, usd_per_btc=100_000, approve=_slow_approver), paid=1),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_timing(case: Case, svc: HostileService, wallet: CountingWallet, ledger: Path, mode: str,
                stall: Stall) -> None:
    url = case.service(svc, stall)
    out: Outcome = run(mode, url, wallet=wallet, ledger=ledger, policy=case.policy or POLICY, request=case.request,
                       **case.client)
    if case.error is None:
        assert out.error is None, out.error
        assert out.status == 200
    else:
        assert type(out.error) is case.error, repr(out.error)
        for text in case.says:
            assert text in str(out.error)
        if case.stage is not None:
            assert isinstance(out.error, httpay.PaymentDeadlineExceeded)
            assert out.error.stage.startswith(case.stage)
            assert out.error.deadline_s == case.client["payment_deadline"]
    if case.late_answer:  # the endpoint finally answers with a real invoice, after the client gave up
        stall.release.set()
        assert stall.answered.wait(10)
        time.sleep(0.1)
    assert out.wallet_calls == case.paid
    assert len(out.receipts) == case.paid  # nothing pending, nothing failed: no row unless paid
    assert len(out.settled) == case.paid
    assert out.spent_msat == case.paid * (10_000 + wallet.fee_msat)


@pytest.mark.parametrize("value", [0, -1, "60", True, math.nan, math.inf, [60]])
def test_payment_deadline_is_validated(value: Any, svc: HostileService, wallet: CountingWallet, ledger: Path,
                                       mode: str) -> None:
    with pytest.raises(httpay.ConfigError, match="payment_deadline= must be a positive number of seconds"):
        client_for(mode, wallet=wallet, ledger=ledger, payment_deadline=value)


@pytest.mark.parametrize("value", [None, 1, 0.25, 60])
def test_payment_deadline_accepts(value: Any, wallet: CountingWallet, ledger: Path, mode: str) -> None:
    c = client_for(mode, wallet=wallet, ledger=ledger, payment_deadline=value)
    try:
        assert c.payer.payment_deadline == value
    finally:
        if isinstance(c, httpay.Client):
            c.close()
        else:
            asyncio.run(c.aclose())


def test_default_deadline_is_finite(wallet: CountingWallet, ledger: Path, mode: str) -> None:
    c = client_for(mode, wallet=wallet, ledger=ledger)
    try:
        assert c.payer.payment_deadline == 60.0
    finally:
        if isinstance(c, httpay.Client):
            c.close()
        else:
            asyncio.run(c.aclose())


# -- x402: the deadline ends before the signer is asked ---------------------------------------------
X402_V1 = {"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": [{
    "scheme": "exact", "network": "base-sepolia", "maxAmountRequired": "10000", "resource": "http://svc/weather",
    "description": "weather", "mimeType": "application/json", "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
    "maxTimeoutSeconds": 60, "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
    "extra": {"name": "USDC", "version": "2"}}]}


class CountingSigner:
    """An EvmSigner that counts what it is asked to sign."""

    def __init__(self) -> None:
        from httpay.signers import EvmSigner

        self.inner = EvmSigner.from_key("0x" + "4c" * 32)
        self.signed = 0

    @property
    def address(self) -> str:
        return self.inner.address

    @property
    def name(self) -> str:
        return self.inner.name

    def pays_on(self, network: str) -> bool:
        return self.inner.pays_on(network)

    def sign_typed_data(self, *args: Any) -> bytes:
        self.signed += 1
        return self.inner.sign_typed_data(*args)


@pytest.mark.parametrize("dribble", [True, False], ids=["dribbled 402 body", "whole 402 body"])
def test_x402_deadline_before_signing(dribble: bool, svc: HostileService, ledger: Path, mode: str,
                                      stall: Stall) -> None:
    async def gate(request: Request) -> Response:
        if request.headers.get("x-payment"):
            return JSONResponse({"served": True})
        body = json.dumps(X402_V1).encode()
        if dribble:
            return StreamingResponse(_dribble(body, stall), status_code=402, media_type="application/json")
        return Response(body, status_code=402, media_type="application/json")

    signer = CountingSigner()
    out = run(mode, svc.route("/x402", gate), wallet=None, ledger=ledger, x402_signer=signer, timeout=5,
              payment_deadline=1.0,
              policy=httpay.Policy(methods=["x402"], usd_per_btc=100_000, max_per_payment_usd=0.05))
    if dribble:
        assert isinstance(out.error, httpay.PaymentDeadlineExceeded), repr(out.error)
        assert out.error.stage == "the body of its 402" and "payment_deadline=1 s" in str(out.error)
        assert signer.signed == 0 and out.receipts == [] and out.spent_msat == 0
    else:  # the same service without the dribble: signed once (so the case above proves the deadline)
        assert signer.signed == 1 and len(out.receipts) == 1
