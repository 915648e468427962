"""An MPP lightning session interrupted after its money moved: an `AsyncMppSession` task cancelled
(`task.cancel()`, an anyio cancel scope), an `MppSession` stopped by Ctrl-C (SIGINT), while the
wallet pays the deposit or a top-up, while its row is settled, while the exchange it paid for (the
`open`, the `topUp`) is out, or while `close` brings the refund back. The deposit is recorded all
the same (one payment, its row settled, the session open or topped up with it), the task still
ends cancelled (the Ctrl-C still reaches the caller), and the next request is served from that
deposit, never from a second one; the refund is given back to the budgets once.

Against the demo service (which takes an `open` or a `topUp` once only), paid by a demo wallet.
Every step is held with events until the test has cancelled the task or raised SIGINT; timeouts
are only guards.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

import httpay
from httpay.demo.runner import RunningServer, serve_in_thread
from httpay.demo.server import create_app
from httpay.dialects.mpp_session import AsyncMppSession, MppSession, SessionState
from httpay.ledger import SQLiteLedger
from httpay.ledger.models import Status
from httpay.protocols import mpp as wire
from httpay.wallets.base import Payment
from httpay.wallets.demo import DemoWallet
from tests.helpers import cancel_while_held

GUARD_S = 30.0
SAT = 1_000  # msat


class Gate:
    """Held once, the first time its step begins: `entered` is set, then it waits for `release`;
    with `interrupts`, it raises SIGINT that many times instead (a sync session has nobody else to
    release it) and goes on."""

    def __init__(self, interrupts: int = 0) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.interrupts = interrupts

    def hold(self) -> None:
        if self.entered.is_set():
            return
        self.entered.set()
        if self.interrupts:
            for _ in range(self.interrupts):
                signal.raise_signal(signal.SIGINT)
            return
        assert self.release.wait(GUARD_S), "the held step was never released"


@dataclass
class Holds:
    """Which step is held: `where` names it, `nth` counts which of its kind (1: the deposit, 2: the top-up)."""

    where: str = ""
    nth: int = 1
    gate: Gate | None = None

    def at(self, where: str, count: int) -> None:
        if self.gate is not None and where == self.where and count == self.nth:
            self.gate.hold()


class GatedWallet(DemoWallet):
    """Pays on the demo network for real; held once the money has left, before it answers."""

    holds: Holds
    payments: list[str]
    lookups: int

    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Payment:
        payment = super().pay_invoice(bolt11, max_fee_msat=max_fee_msat)
        self.payments.append(payment.payment_hash)
        self.holds.at("wallet", len(self.payments))
        return payment

    def received_msat(self, payment_hash: str) -> int | None:
        got = super().received_msat(payment_hash)
        self.lookups += 1
        self.holds.at("received", self.lookups)
        return got


class GatedLedger(SQLiteLedger):
    """Held as it begins to reserve or settle (the nth time)."""

    def __init__(self, path: Path, holds: Holds) -> None:
        super().__init__(path)
        self.holds = holds
        self.counts: dict[str, int] = {}

    def _at(self, where: str) -> None:
        self.counts[where] = self.counts.get(where, 0) + 1
        self.holds.at(where, self.counts[where])

    def reserve(self, *args: Any, **kwargs: Any) -> Any:
        self._at("reserve")
        return super().reserve(*args, **kwargs)

    def settle(self, *args: Any, **kwargs: Any) -> Any:
        self._at("settle")
        return super().settle(*args, **kwargs)


class HoldAction:
    """ASGI middleware: the first request presenting a session credential of `holds.where`
    (`open`, `topUp`, `close`) is held before the service reads it: it is out, and unanswered."""

    def __init__(self, app: ASGIApp, holds: Holds) -> None:
        self.app, self.holds = app, holds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.holds.gate is not None:
            header = dict(scope["headers"]).get(b"authorization", b"").decode()
            if header.lower().startswith("payment "):
                action = wire.parse_credential(header).payload.get("action")
                if action == self.holds.where:
                    await anyio.to_thread.run_sync(self.holds.gate.hold)
        await self.app(scope, receive, send)


@pytest.fixture
def holds() -> Holds:
    return Holds()


@pytest.fixture
def service(holds: Holds) -> Iterator[RunningServer]:
    app = create_app()
    app.add_middleware(HoldAction, holds=holds)
    with serve_in_thread(app) as server:
        yield server


@pytest.fixture
def wallet(service: RunningServer, holds: Holds) -> Iterator[GatedWallet]:
    w = GatedWallet.create(service.url, balance_sat=1_000)
    assert isinstance(w, GatedWallet)
    w.holds, w.payments, w.lookups = holds, [], 0
    yield w
    w.close()


@pytest.fixture
def ledger(tmp_path: Path, holds: Holds) -> Iterator[GatedLedger]:
    lg = GatedLedger(tmp_path / "ledger.db", holds)
    yield lg
    lg.close()


def paid_out(service: RunningServer, wallet: GatedWallet) -> int:
    """How many payments really left the wallet, as the demo network saw them."""
    return len(service.app.state.demo.network.wallet_for_key(wallet.reveal_key()).payments)


def served_at(service: RunningServer, state: SessionState) -> Any:
    """The service's own record of the session (its deposit, what it debited)."""
    return service.app.state.mpp.sessions[state.session_id]


# (stage, where, wallet payments after the cancel, what the session spent by then)
ASYNC_STEPS = [
    ("deposit", "wallet", 1, 2),   # the open still goes out (it was paid for) and is served: one unit
    ("deposit", "settle", 1, 2),
    ("deposit", "open", 1, 2),
    ("top-up", "wallet", 2, 20),   # ten requests spent the deposit; the eleventh's retry is not sent
    ("top-up", "settle", 2, 20),
    ("top-up", "topUp", 2, 20),
]


def _hold(holds: Holds, stage: str, where: str, gate: Gate) -> None:
    holds.where, holds.nth, holds.gate = where, 2 if stage == "top-up" else 1, gate


@pytest.mark.parametrize("how", ["task.cancel", "cancel-scope"])
@pytest.mark.parametrize(("stage", "where", "payments", "spent"), ASYNC_STEPS,
                         ids=[f"{s}-{w}" for s, w, _, _ in ASYNC_STEPS])
def test_an_async_session_cancelled_after_its_money_left_keeps_the_deposit(
        stage: str, where: str, payments: int, spent: int, how: str, service: RunningServer, holds: Holds,
        wallet: GatedWallet, ledger: GatedLedger) -> None:
    gate = Gate()
    url = service.url + "/mpp/session/ticker/AAPL"

    async def main() -> None:
        async with httpay.AsyncClient(wallet=wallet, ledger=ledger, reconcile_grace_s=None) as client:
            session = AsyncMppSession(client, url)
            if stage == "top-up":
                for _ in range(10):  # 20 sat at 2 sat a request: the eleventh needs a top-up
                    assert (await session.get()).status_code == 200
            _hold(holds, stage, where, gate)
            ended = await _cancelled_while_held(session.get, how, gate)
            assert ended == "cancelled", ended  # the task ends cancelled, as its caller asked

            s = session.state
            assert len(wallet.payments) == payments and paid_out(service, wallet) == payments
            rows = sorted(ledger.receipts(), key=lambda r: r.id)
            assert [(r.status, r.amount_msat) for r in rows] == [(Status.SETTLED, 20 * SAT)] * payments
            assert all(r.preimage for r in rows)
            assert (s.status, s.deposited_sat, s.spent_sat, s.receipt_ids) == ("open", 20 * payments, spent,
                                                                                [r.id for r in rows])
            assert served_at(service, s).deposit_sat == 20 * payments  # the service holds it as opened / topped up
            assert f"deposited {20 * payments} sat, spent {spent} sat" in (rows[-1].reason or "")  # and the ledger

            again = await session.get()  # served from that deposit: nothing is paid again
            assert again.status_code == 200 and again.json()["symbol"] == "AAPL"
            assert paid_out(service, wallet) == payments and session.state.spent_sat == spent + 2

            closed = await session.close()
            refund = 20 * payments - spent - 2
            assert (closed.status, closed.refund_sat, closed.refund_status) == ("closed", refund, "succeeded")
            assert sum(r.amount_msat for r in ledger.receipts()) == (spent + 2) * SAT  # budgets count what was spent
            assert len(wallet.payments) == payments

    try:
        asyncio.run(main())
    finally:
        gate.release.set()


async def _cancelled_while_held(call: Any, how: str, gate: Gate) -> str:
    """`call()` in a task, cancelled (by `how`) once `gate` holds its step, then let go on; what
    became of the task."""
    scopes: list[anyio.CancelScope] = []

    async def in_scope() -> str:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await call()
            return "served"
        return "cancelled" if scope.cancelled_caught else "left"

    async def plain() -> str:
        await call()
        return "served"

    task = asyncio.create_task(in_scope() if how == "cancel-scope" else plain())
    await anyio.to_thread.run_sync(gate.entered.wait, GUARD_S)
    assert gate.entered.is_set(), "the held step was never reached"
    await cancel_while_held(task, scopes, how, gate.release)
    with anyio.fail_after(GUARD_S):
        try:
            return await task
        except asyncio.CancelledError:
            return "cancelled"


def test_an_async_session_cancelled_before_the_wallet_is_asked_pays_nothing(
        service: RunningServer, holds: Holds, wallet: GatedWallet, ledger: GatedLedger) -> None:
    """Cancelled while the deposit is written down: the wallet is never asked, the row is failed
    (nothing counted), and the next request pays the session's one deposit."""
    gate = Gate()
    url = service.url + "/mpp/session/ticker/AAPL"

    async def main() -> None:
        async with httpay.AsyncClient(wallet=wallet, ledger=ledger, reconcile_grace_s=None) as client:
            session = AsyncMppSession(client, url)
            _hold(holds, "deposit", "reserve", gate)
            assert await _cancelled_while_held(session.get, "task.cancel", gate) == "cancelled"
            assert wallet.payments == [] and session.state.status == "new"
            [row] = ledger.receipts()
            assert row.status is Status.FAILED and "nothing was paid" in (row.reason or "")
            assert ledger.spent_msat() == 0
            assert (await session.get()).status_code == 200
            assert len(wallet.payments) == 1
            assert [r.status for r in sorted(ledger.receipts(), key=lambda r: r.id)] == [Status.FAILED, Status.SETTLED]
            await session.close()

    try:
        asyncio.run(main())
    finally:
        gate.release.set()


@pytest.mark.parametrize("where", ["wallet", "open"])
def test_an_async_stream_cancelled_while_its_deposit_is_paid_keeps_it(
        where: str, service: RunningServer, holds: Holds, wallet: GatedWallet, ledger: GatedLedger) -> None:
    """The stream's own open (the request that streams) is the exchange the deposit paid for: it
    is made and answered, the session holds the deposit, and the next request is served from it."""
    gate = Gate()
    url = service.url + "/mpp/session/stream/AAPL"

    async def main() -> None:
        async with httpay.AsyncClient(wallet=wallet, ledger=ledger, reconcile_grace_s=None) as client:
            session = AsyncMppSession(client, url)

            async def read() -> None:
                async for _ in session.stream(params={"chunks": 3}):
                    pass

            _hold(holds, "deposit", where, gate)
            assert await _cancelled_while_held(read, "task.cancel", gate) == "cancelled"
            s = session.state
            assert (s.status, s.deposited_sat, len(wallet.payments)) == ("open", 20, 1)
            [row] = ledger.receipts()
            assert row.status is Status.SETTLED and served_at(service, s).deposit_sat == 20
            events = [e async for e in session.stream(params={"chunks": 2})]
            assert [e.event for e in events].count(None) == 3  # two chunks and [DONE], from the one deposit
            assert len(wallet.payments) == 1 and len(ledger.receipts()) == 1
            await session.close()

    try:
        asyncio.run(main())
    finally:
        gate.release.set()


@pytest.mark.parametrize("how", ["task.cancel", "cancel-scope"])
@pytest.mark.parametrize(("where", "nth"), [("close", 1), ("received", 1), ("settle", 2)],
                         ids=["close-exchange", "refund-lookup", "refund-given-back"])
def test_an_async_close_cancelled_keeps_its_refund_once(where: str, nth: int, how: str, service: RunningServer,
                                                        holds: Holds, wallet: GatedWallet, ledger: GatedLedger) -> None:
    """Cancelled while the close is out, while the wallet confirms the refund, or while it is
    given back to the budgets: the refund is recorded, once (the budgets count what was spent)."""
    gate = Gate()
    url = service.url + "/mpp/session/ticker/AAPL"

    async def main() -> None:
        async with httpay.AsyncClient(wallet=wallet, ledger=ledger, reconcile_grace_s=None) as client:
            session = AsyncMppSession(client, url)
            assert (await session.get()).status_code == 200
            before = wallet.balance_msat()
            holds.where, holds.nth, holds.gate = where, nth, gate
            assert await _cancelled_while_held(session.close, how, gate) == "cancelled"
            s = session.state
            assert (s.status, s.refund_sat, s.refund_status) == ("closed", 18, "succeeded")
            [row] = ledger.receipts()
            assert (row.status, row.amount_msat) == (Status.SETTLED, 2 * SAT)
            assert "refund 18 sat succeeded" in (row.reason or "")
            assert wallet.balance_msat() - before == 18 * SAT  # the refund the ledger gave back did come
            again = await session.close()  # closed already: nothing asked, nothing given back twice
            assert again.refund_sat == 18 and ledger.get(row.id).amount_msat == 2 * SAT
            assert len(wallet.payments) == 1

    try:
        asyncio.run(main())
    finally:
        gate.release.set()


# -- the sync session and Ctrl-C ------------------------------------------------------------------

SYNC_STEPS = [
    ("deposit", "wallet", 1, 2),
    ("deposit", "settle", 1, 2),
    ("deposit", "open", 1, 2),
    ("top-up", "wallet", 2, 20),
    ("top-up", "settle", 2, 20),
    ("top-up", "topUp", 2, 20),
]


@pytest.fixture
def ctrl_c() -> Iterator[None]:
    """Python's own SIGINT handler (Ctrl-C raises KeyboardInterrupt), put back as it was."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.usefixtures("ctrl_c")
@pytest.mark.parametrize(("stage", "where", "payments", "spent"), SYNC_STEPS,
                         ids=[f"{s}-{w}" for s, w, _, _ in SYNC_STEPS])
def test_a_sync_session_interrupted_after_its_money_left_keeps_the_deposit(
        stage: str, where: str, payments: int, spent: int, service: RunningServer, holds: Holds,
        wallet: GatedWallet, ledger: GatedLedger) -> None:
    """Ctrl-C while the deposit or top-up is paid, settled or presented is held until the session
    holds it, then raised; the next request is served from it."""
    url = service.url + "/mpp/session/ticker/AAPL"
    with httpay.Client(wallet=wallet, ledger=ledger, reconcile_grace_s=None) as client:
        session = MppSession(client, url)
        if stage == "top-up":
            for _ in range(10):
                assert session.get().status_code == 200
        gate = Gate(interrupts=1)
        _hold(holds, stage, where, gate)
        with pytest.raises(KeyboardInterrupt):
            session.get()
        assert gate.entered.is_set()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is Python's own again
        s = session.state
        rows = sorted(ledger.receipts(), key=lambda r: r.id)
        assert [(r.status, r.amount_msat) for r in rows] == [(Status.SETTLED, 20 * SAT)] * payments
        assert (s.status, s.deposited_sat, s.spent_sat, len(wallet.payments)) == ("open", 20 * payments, spent, payments)
        assert served_at(service, s).deposit_sat == 20 * payments
        assert f"deposited {20 * payments} sat, spent {spent} sat" in (rows[-1].reason or "")
        assert session.get().status_code == 200
        assert len(wallet.payments) == payments and session.state.spent_sat == spent + 2
        closed = session.close()
        assert closed.refund_sat == 20 * payments - spent - 2
        assert sum(r.amount_msat for r in ledger.receipts()) == (spent + 2) * SAT


@pytest.mark.usefixtures("ctrl_c")
def test_a_sync_close_interrupted_keeps_its_refund_once(service: RunningServer, holds: Holds, wallet: GatedWallet,
                                                        ledger: GatedLedger) -> None:
    url = service.url + "/mpp/session/ticker/AAPL"
    with httpay.Client(wallet=wallet, ledger=ledger, reconcile_grace_s=None) as client:
        session = MppSession(client, url)
        assert session.get().status_code == 200
        holds.where, holds.nth, holds.gate = "close", 1, Gate(interrupts=1)
        with pytest.raises(KeyboardInterrupt):
            session.close()
        s = session.state
        assert (s.status, s.refund_sat, s.refund_status) == ("closed", 18, "succeeded")
        [row] = ledger.receipts()
        assert (row.status, row.amount_msat) == (Status.SETTLED, 2 * SAT)
        assert session.close().refund_sat == 18 and ledger.get(row.id).amount_msat == 2 * SAT


@pytest.mark.usefixtures("ctrl_c")
def test_a_second_ctrl_c_stops_at_once_and_the_row_says_the_outcome_is_unknown(
        service: RunningServer, holds: Holds, wallet: GatedWallet, ledger: GatedLedger) -> None:
    """A Ctrl-C held while the wallet pays can be overridden by a second: the wallet's answer is then
    lost, so the row stays pending and counted, and says to reconcile before paying again."""
    url = service.url + "/mpp/session/ticker/AAPL"
    with httpay.Client(wallet=wallet, ledger=ledger, reconcile_grace_s=None) as client:
        session = MppSession(client, url)
        _hold(holds, "deposit", "wallet", Gate(interrupts=2))
        with pytest.raises(KeyboardInterrupt):
            session.get()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert len(wallet.payments) == 1 and session.state.status == "new"
        [row] = ledger.receipts()
        assert row.status is Status.PENDING and "reconcile before paying again" in (row.reason or "")
        assert ledger.spent_msat() >= 20 * SAT  # still counted: the money may have left
