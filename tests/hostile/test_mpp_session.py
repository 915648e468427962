"""Hostile MPP lightning session services against httpay's session client (`httpay.dialects.mpp_session`),
sync and async: each case asserts the wallet's calls, the ledger rows, the spend including fees, and the
error's type and words. A lying deposit is never paid; a service that takes money and then refuses is a
PaidRequestFailed with its settled row; a service that keeps asking is not paid twice for one request."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import httpay
from httpay.dialects.mpp_session import AsyncMppSession, MppSession, SessionError
from httpay.errors import ConfigError, InvoiceError, PaidRequestFailed
from httpay.ledger import SQLiteLedger
from httpay.protocols import mpp as wire
from tests.hostile.harness import CountingWallet, HostileService


class ReceivingWallet(CountingWallet):
    """A counting wallet that can also receive: its return invoices come from the same node, and it
    sees what was paid to them (`received`: payment hash -> msat, filled by the service's refunds)."""

    received: dict[str, int]

    def create_receive_invoice(self, amount_msat: int | None, *, description: str = "", expiry_s: int = 3600) -> str:
        bolt11, payment_hash = self.node.mint(amount_msat, description=description, expiry=expiry_s)
        self.__dict__.setdefault("received", {})[payment_hash] = 0
        return bolt11

    def received_msat(self, payment_hash: str) -> int | None:
        return self.__dict__.get("received", {}).get(payment_hash)


@dataclass
class SessionService:
    """A session service with one misbehaviour: 20 sat deposits, 2 sat a request."""

    svc: HostileService
    behaviour: str
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    sessions: dict[str, int] = field(default_factory=dict)  # id -> balance sat
    returns: dict[str, str] = field(default_factory=dict)   # id -> the client's return invoice
    wallet: ReceivingWallet | None = None                   # paid a refund on its return invoice
    challenges: int = 0

    def challenge(self, request: Request) -> Response:
        self.challenges += 1
        b = self.behaviour
        deposit_sat = 50 if b == "deposit-lies" else 20
        unit = "3" if b == "price-change" and self.challenges > 1 else "2"
        bolt11, payment_hash = self.svc.node.mint(deposit_sat * 1000, network="bitcoin" if b == "mainnet" else "regtest")
        if b == "hash-lies":
            payment_hash = self.svc.node.mint(20_000)[1]
        req = {"amount": unit, "currency": "sat", "depositInvoice": bolt11, "paymentHash": payment_hash,
               "depositAmount": "20"}
        expires = datetime.now(UTC) + (timedelta(seconds=-1) if b == "expired" else timedelta(minutes=5))
        params = wire.make_challenge(self.secret, realm="127.0.0.1", method="lightning", intent="session", request=req,
                                     expires=expires)
        body = wire.problem_body("payment-insufficient" if request.headers.get("authorization") else "payment-required",
                                 "pay the deposit")
        return JSONResponse(body, status_code=402, headers={"WWW-Authenticate": wire.challenge_header(params)},
                            media_type="application/problem+json")

    async def handle(self, request: Request) -> Response:
        header = request.headers.get("authorization")
        if not header:
            return self.challenge(request)
        cred = wire.parse_credential(header)
        p, b = cred.payload, self.behaviour
        req = wire.decode_json(cred.challenge["request"], "request")
        if p["action"] == "open":
            if b == "open-refused":
                return JSONResponse(wire.problem_body("verification-failed", "no"), status_code=402)
            self.sessions[req["paymentHash"]] = 20 - 2
            self.returns[req["paymentHash"]] = p["returnInvoice"]
            return JSONResponse({"ok": True})
        if p["action"] == "bearer":
            if self.sessions.get(p["sessionId"], 0) < 2 or b == "always-insufficient":
                return self.challenge(request)
            self.sessions[p["sessionId"]] -= 2
            return JSONResponse({"ok": True})
        if p["action"] == "topUp":
            if b == "top-up-refused":
                return JSONResponse({"error": "boom"}, status_code=500)
            self.sessions[p["sessionId"]] += 20
            return JSONResponse({"status": "ok"})
        if p["action"] == "close":
            left = self.sessions.pop(p["sessionId"], 0)
            refund = 999 if b == "refund-lies" else left
            if b not in ("refund-lies", "refund-claimed") and self.wallet is not None:  # pay the refund for real
                from httpay.lightning import decode_invoice

                self.wallet.received[decode_invoice(self.returns[p["sessionId"]]).payment_hash] = refund * 1000
            return JSONResponse({"status": "closed", "refundSats": refund, "refundStatus": "succeeded"})
        return JSONResponse({"error": "?"}, status_code=400)


# (behaviour, requests made, error type, words in it, wallet calls, settled msat in the ledger after close)
CASES: list[Any] = [
    ("deposit-lies", 1, InvoiceError, "asks 50000 msat", 0, 0),
    ("hash-lies", 1, InvoiceError, "payment hash", 0, 0),
    ("mainnet", 1, InvoiceError, "bitcoin", 0, 0),
    ("expired", 1, InvoiceError, "expired", 0, 0),
    ("open-refused", 1, PaidRequestFailed, "would not open the session: it answered 402 (verification-failed)", 1, 20_000),
    ("price-change", 11, SessionError, "changed the session's price from 2 to 3", 1, 2 * 10_000),
    ("always-insufficient", 2, SessionError, "still asks for more after 1 top-up", 2, 2_000),  # 38 sat refunded
    ("top-up-refused", 11, PaidRequestFailed, "would not take the top-up: it answered 500", 2, 40_000),
    ("refund-lies", 1, None, "", 1, 20_000),
    ("refund-claimed", 1, None, "", 1, 20_000),  # says it refunded 18 sat, pays nothing: the budget still counts 20
    ("honest", 11, None, "", 2, 22_000),
]


@pytest.mark.parametrize(("behaviour", "requests", "error", "words", "calls", "settled_msat"), CASES,
                         ids=[c[0] for c in CASES])
def test_hostile_session_services(mode: str, svc: HostileService, ledger: Path, behaviour: str, requests: int,
                                  error: type[Exception] | None, words: str, calls: int, settled_msat: int) -> None:
    service = SessionService(svc, behaviour)
    url = svc.route("/session", service.handle)
    wallet = service.wallet = ReceivingWallet(svc.node)
    raised: Exception | None = None
    state: Any = None

    def sync() -> None:
        nonlocal raised, state
        with httpay.Client(wallet=wallet, ledger=ledger, reconcile_grace_s=None) as client:
            session = MppSession(client, url)
            try:
                for _ in range(requests):
                    assert session.get().status_code == 200
            except Exception as exc:  # noqa: BLE001 - the case asserts it
                raised = exc
            state = session.close()

    async def asynchronous() -> None:
        nonlocal raised, state
        async with httpay.AsyncClient(wallet=wallet, ledger=ledger, reconcile_grace_s=None) as client:
            session = AsyncMppSession(client, url)
            try:
                for _ in range(requests):
                    assert (await session.get()).status_code == 200
            except Exception as exc:  # noqa: BLE001
                raised = exc
            state = await session.close()

    sync() if mode == "sync" else asyncio.run(asynchronous())
    if error is None:
        assert raised is None, raised
    else:
        assert isinstance(raised, error) and words in str(raised), repr(raised)
    assert len(wallet.calls) == calls
    with SQLiteLedger(ledger) as lg:
        rows = lg.receipts()
        assert [r for r in rows if r.status.value == "pending"] == []
        settled = [r for r in rows if r.status.value == "settled"]
        assert sum(r.amount_msat for r in settled) == settled_msat
        assert sum(r.fee_msat for r in settled) == 1_000 * calls  # every payment's fee is on its row
        assert lg.spent_msat() == settled_msat + 1_000 * calls
    if behaviour == "refund-lies":
        assert state.refund_sat == 0 and state.refund_status == "not refunded (200)"
    if behaviour == "refund-claimed":
        said = "the service says it refunded 18 sat; the wallet received 0"
        assert (state.refund_sat, state.refund_status) == (0, said)
    if behaviour == "honest":
        assert (state.refund_sat, state.refund_status, state.spent_sat) == (18, "succeeded", 0)
    if isinstance(raised, PaidRequestFailed):
        assert raised.receipt.status.value == "settled" and "would not" in (raised.receipt.reason or "")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_wallet_that_cannot_receive_opens_no_session(mode: str, svc: HostileService, ledger: Path) -> None:
    url = svc.route("/session", SessionService(svc, "honest").handle)
    wallet = CountingWallet(svc.node)
    with httpay.Client(wallet=wallet, ledger=ledger, reconcile_grace_s=None) as client:
        session: Any = MppSession(client, url) if mode == "sync" else AsyncMppSession(client, url)
        with pytest.raises(ConfigError, match="cannot create the amount-less return invoice"):
            session.get() if mode == "sync" else asyncio.run(session.get())
    assert wallet.calls == []


class LostAnswerWallet(ReceivingWallet):
    """Pays, then loses the answer (a timeout after the money left): the outcome is unknown to httpay."""

    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Any:
        from httpay.errors import PaymentTimeout

        super().pay_invoice(bolt11, max_fee_msat=max_fee_msat)
        raise PaymentTimeout("the wallet did not answer in time")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_deposit_whose_answer_was_lost_stays_pending_and_is_reconciled(mode: str, svc: HostileService,
                                                                         ledger: Path) -> None:
    from httpay.errors import PaymentTimeout
    from httpay.reconcile import reconcile

    url = svc.route("/session", SessionService(svc, "honest").handle)
    wallet = LostAnswerWallet(svc.node)
    with httpay.Client(wallet=wallet, ledger=ledger, reconcile_grace_s=None) as client:
        session: Any = MppSession(client, url) if mode == "sync" else AsyncMppSession(client, url)
        with pytest.raises(PaymentTimeout):
            session.get() if mode == "sync" else asyncio.run(session.get())
        assert session.state.status == "new"  # never opened: nothing presented, nothing paid again
    assert len(wallet.calls) == 1
    with SQLiteLedger(ledger) as lg:
        (row,) = lg.receipts()
        assert row.status.value == "pending" and "reconcile before paying again" in (row.reason or "")
        assert lg.spent_msat() == 20_000 + 1_000 * 10  # the deposit and its fee cap stay held meanwhile
        (outcome,) = reconcile(lg, wallet, grace_s=0)
        assert outcome.outcome == "settled" and lg.get(row.id).status.value == "settled"
