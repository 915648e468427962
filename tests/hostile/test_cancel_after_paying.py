"""An AsyncClient request cancelled after its money left (as `asyncio.wait_for`, a TaskGroup or an
anyio cancel scope does): twenty requests meet one classic L402 402, one pays, and its task is
cancelled while the wallet pays, while the call's credential is kept, while the paid retry is out,
or while the payment is settled in the ledger. The wallet's answer is recorded all the same (one
payment, the row settled, its token stored), the flight is left, the nineteen others are served
with that payment (none waits out `inflight_wait_s` into PaymentOutcomeUnknown), and the cancelled
task still ends cancelled.

Each step is held with events until the test has cancelled the task; timeouts are only guards
(shorter than `inflight_wait_s`, so a request left waiting on a pending row fails the test).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

import httpay
from httpay.ledger import SQLiteLedger
from httpay.ledger.models import Status
from httpay.wallets.base import Payment
from tests.helpers import cancel_while_held
from tests.hostile.harness import CountingSigner, CountingWallet, HostileService, release, x402

GUARD_S = 30.0  # far past what any step here takes, well short of the 60 s a stalled waiter would wait
OTHERS = 19


class Gate:
    """`entered` once the held step began; it goes on once `release` is set."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def hold(self) -> None:
        self.entered.set()
        assert self.release.wait(GUARD_S), "the held step was never released"


class GatedWallet(CountingWallet):
    def __init__(self, svc: HostileService, gate: Gate | None) -> None:
        super().__init__(svc.node)
        self.gate = gate

    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Payment:
        if self.gate is not None:
            self.gate.hold()  # the wallet is paying when the task is cancelled
        return super().pay_invoice(bolt11, max_fee_msat=max_fee_msat)


class GatedLedger(SQLiteLedger):
    def __init__(self, path: Path, *, settle: Gate | None = None, record_call: Gate | None = None) -> None:
        super().__init__(path)
        self.settle_gate, self.record_call_gate = settle, record_call

    def settle(self, *args: Any, **kwargs: Any) -> Any:
        if self.settle_gate is not None:
            self.settle_gate.hold()
        return super().settle(*args, **kwargs)

    def record_call(self, *args: Any, **kwargs: Any) -> None:
        if self.record_call_gate is not None and not self.record_call_gate.entered.is_set():
            self.record_call_gate.hold()  # only the payer's own call keeps a credential first
        super().record_call(*args, **kwargs)


def held_retry(svc: HostileService, path: str, gate: Gate) -> str:
    """The classic route, whose first paid request (the payer's retry) is held until released."""
    svc.classic(path)
    classic = svc.handlers[path]

    async def handler(request: Request) -> Response:
        if svc.authorized(request) and not gate.entered.is_set():
            await anyio.to_thread.run_sync(gate.hold)
        return await classic(request)
    return svc.route(path, handler)


async def _until(condition: Any) -> None:
    with anyio.fail_after(GUARD_S):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("how", ["task.cancel", "cancel-scope"])
@pytest.mark.parametrize("where", ["wallet", "record-call", "retry", "settle"])
def test_a_request_cancelled_after_paying_records_the_payment_and_frees_the_others(
        where: str, how: str, svc: HostileService, tmp_path: Path) -> None:
    gate = Gate()
    path = "/c"
    url = held_retry(svc, path, gate) if where == "retry" else svc.classic(path)
    wallet = GatedWallet(svc, gate if where == "wallet" else None)
    ledger = GatedLedger(tmp_path / "ledger.db", settle=gate if where == "settle" else None,
                         record_call=gate if where == "record-call" else None)
    method = "POST" if where == "record-call" else "GET"  # a POST is a call, which keeps its credential
    scopes: list[anyio.CancelScope] = []

    async def main() -> tuple[str, list[Any]]:
        async with httpay.AsyncClient(wallet=wallet, ledger=ledger) as client:
            async def send(i: int) -> httpx.Response:
                return await client.request(method, url, content=f"body {i}".encode() if method == "POST" else None)

            async def paying() -> str:
                with anyio.CancelScope() as scope:
                    scopes.append(scope)
                    await send(0)
                    return "served"
                return "cancelled" if scope.cancelled_caught else "left"

            payer = asyncio.create_task(paying() if how == "cancel-scope" else send(0))  # type: ignore[arg-type]
            await anyio.to_thread.run_sync(gate.entered.wait, GUARD_S)
            assert gate.entered.is_set(), f"the payer never reached the {where}"
            others = [asyncio.create_task(send(i)) for i in range(1, OTHERS + 1)]
            await _until(lambda: svc.hits.get(path, 0) >= OTHERS + 1)  # every other request met a 402 too
            await cancel_while_held(payer, scopes, how, gate.release)
            with anyio.fail_after(GUARD_S):
                try:
                    ended = await payer
                except asyncio.CancelledError:
                    ended = "cancelled"
                served = await asyncio.gather(*others, return_exceptions=True)
            return str(ended), served

    try:
        ended, served = asyncio.run(main())
        assert ended == "cancelled", ended  # the cancelled task ends cancelled, as its caller asked
        errors = [r for r in served if isinstance(r, BaseException)]
        assert not errors, errors  # none waited out a pending row (PaymentOutcomeUnknown)
        assert [r.status_code for r in served] == [200] * OTHERS  # type: ignore[union-attr]
        assert len(wallet.calls) == 1 and len(svc.node.paid) == 1  # one payment, for all twenty
        [row] = ledger.receipts()
        assert row.status is Status.SETTLED and row.preimage, (row.status, row.reason)
        assert ledger.token_scopes()  # the credential it bought is held: the next request presents it
    finally:
        gate.release.set()
        ledger.close()


class GatedSigner(CountingSigner):
    def __init__(self, gate: Gate) -> None:
        super().__init__()
        self.gate = gate

    def sign_typed_data(self, domain: Any, types: Any, primary_type: str, message: Any) -> bytes:
        self.gate.hold()
        return super().sign_typed_data(domain, types, primary_type, message)


@pytest.mark.parametrize("where", ["signing", "sent"])
def test_an_x402_request_cancelled_while_signing_or_sent_says_what_became_of_its_row(
        where: str, svc: HostileService, tmp_path: Path) -> None:
    """Cancelled while the signer signs: the signature is dropped unsent, so the row is failed (nothing
    counted). Cancelled once the signed payment went out: the row stays pending and counted (the
    service holds the signature) and says the request was cancelled while it was sent."""
    gate = Gate()
    url = x402(svc, answer="hang" if where == "sent" else "settle")
    signer = GatedSigner(gate) if where == "signing" else CountingSigner()
    policy = httpay.Policy(methods=["x402"], usd_per_btc=100_000.0)

    async def main() -> None:
        async with httpay.AsyncClient(ledger=tmp_path / "ledger.db", policy=policy, x402_signer=signer) as client:
            task = asyncio.create_task(client.post(url, content=b"{}"))
            if where == "signing":
                await anyio.to_thread.run_sync(gate.entered.wait, GUARD_S)
            else:
                await _until(lambda: svc.hits.get("x402-paid", 0) >= 1)
            task.cancel()
            for _ in range(20):
                await asyncio.sleep(0)
            gate.release.set()
            with anyio.fail_after(GUARD_S), pytest.raises(asyncio.CancelledError):
                await task

    try:
        asyncio.run(main())
    finally:
        gate.release.set()
        release(svc)
    with SQLiteLedger(tmp_path / "ledger.db") as lg:
        [row] = lg.receipts()
        if where == "signing":
            assert row.status is Status.FAILED and lg.spent_msat() == 0, (row.status, row.reason)
            assert "cancelled while it was being signed; nothing was sent" in (row.reason or "")
        else:
            assert row.status is Status.PENDING and lg.spent_msat() == row.amount_msat > 0
            assert "cancelled while sending the signed payment" in (row.reason or "")
