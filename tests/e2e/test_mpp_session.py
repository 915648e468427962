"""MPP lightning sessions paid by httpay (`httpay.dialects.mpp_session`) against the demo's session
routes, sync and async: open with the deposit and a return invoice, bearer per request, top-up on a
fresh 402 and on the SSE `payment-need-topup` event, close with the refund; the ledger holds every
deposit as a payment within the policy and gives the refund back to the budgets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import httpay
from httpay.demo.runner import RunningServer
from httpay.dialects.mpp_session import AsyncMppSession, MppSession, SessionState, SseEvent
from httpay.errors import PaymentRefused
from httpay.ledger.models import Status
from httpay.wallets.demo import DemoWallet

MODES = ["sync", "async"]


@pytest.fixture
def wallet(demo: RunningServer) -> Iterator[DemoWallet]:
    w = DemoWallet.create(demo.url, balance_sat=1_000)
    yield w
    w.close()


class Driver:
    """One session, driven the same way in both modes: `get`, `stream` (collected), `close`."""

    def __init__(self, mode: str, demo: RunningServer, wallet: DemoWallet, ledger_path: Path, path: str,
                 policy: httpay.Policy | None = None) -> None:
        self.mode, self.url = mode, demo.url + path
        kwargs: dict[str, Any] = {"wallet": wallet, "ledger": ledger_path, "policy": policy, "reconcile_grace_s": None}
        self.client: Any = httpay.Client(**kwargs) if mode == "sync" else httpay.AsyncClient(**kwargs)
        self.session: Any = (MppSession if mode == "sync" else AsyncMppSession)(self.client, self.url)
        self.loop = asyncio.new_event_loop() if mode == "async" else None

    def _do(self, value: Any) -> Any:
        return self.loop.run_until_complete(value) if self.loop else value

    def get(self) -> Any:
        return self._do(self.session.get())

    def stream(self, chunks: int) -> list[SseEvent]:
        if self.loop is None:
            return list(self.session.stream(params={"chunks": chunks}))

        async def collect() -> list[SseEvent]:
            return [e async for e in self.session.stream(params={"chunks": chunks})]

        return self.loop.run_until_complete(collect())

    def close(self) -> SessionState:
        return self._do(self.session.close())  # type: ignore[no-any-return]

    def close_client(self) -> None:
        self._do(self.client.close() if self.loop is None else self.client.aclose())
        if self.loop:
            self.loop.close()


@pytest.mark.parametrize("mode", MODES)
def test_session_open_bearer_top_up_close(mode: str, demo: RunningServer, wallet: DemoWallet, ledger_path: Path) -> None:
    d = Driver(mode, demo, wallet, ledger_path, "/mpp/session/ticker/AAPL")
    try:
        for _ in range(11):  # 20 sat deposit at 2 sat a request: the 11th needs a top-up, paid on its fresh 402
            answer = d.get()
            assert answer.status_code == 200 and answer.json()["symbol"] == "AAPL"
        s = d.session.state
        assert (s.status, s.deposited_sat, s.spent_sat, s.units) == ("open", 40, 22, 11)
        assert wallet.balance_msat() == 960_000
        rows = sorted(d.client.ledger.receipts(), key=lambda r: r.id)
        assert [(r.status, r.amount_msat, r.offer_id, r.protocol) for r in rows] == [
            (Status.SETTLED, 20_000, "session-deposit", "mpp"), (Status.SETTLED, 20_000, "session-top-up", "mpp")]
        assert "spent 22 sat" in (rows[-1].reason or "")
        closed = d.close()
        assert (closed.status, closed.refund_sat, closed.refund_status) == ("closed", 18, "succeeded")
        assert wallet.balance_msat() == 978_000  # the refund came back to the return invoice
        rows = sorted(d.client.ledger.receipts(), key=lambda r: r.id)
        assert sum(r.amount_msat for r in rows) == 22_000  # budgets now count what was spent
        assert "refund 18 sat succeeded" in (rows[-1].reason or "")
        assert demo.app.state.mpp.sessions[s.session_id].status == "closed"
    finally:
        d.close_client()


@pytest.mark.parametrize("mode", MODES)
def test_session_stream_tops_up_mid_stream(mode: str, demo: RunningServer, wallet: DemoWallet, ledger_path: Path) -> None:
    d = Driver(mode, demo, wallet, ledger_path, "/mpp/session/stream/AAPL")
    try:
        events = d.stream(15)
        names = [e.event for e in events]
        assert names.count(None) == 16 and names.count("payment-need-topup") == 1  # 15 chunks and [DONE]
        assert names.index("payment-need-topup") == 10 and names[-2:] == ["payment-receipt", None]
        assert [e.json()["chunk"] for e in events if e.event is None and e.data != "[DONE]"] == list(range(15))
        s = d.session.state
        assert (s.deposited_sat, s.spent_sat, s.units) == (40, 30, 15)
        assert d.close().refund_sat == 10
        assert wallet.balance_msat() == 970_000
    finally:
        d.close_client()


@pytest.mark.parametrize("mode", MODES)
def test_closing_the_client_closes_its_sessions(mode: str, demo: RunningServer, wallet: DemoWallet,
                                                ledger_path: Path) -> None:
    d = Driver(mode, demo, wallet, ledger_path, "/mpp/session/ticker/AAPL")
    assert d.get().status_code == 200
    d.close_client()
    assert d.session.state.status == "closed" and d.session.state.refund_sat == 18
    assert wallet.balance_msat() == 998_000


# (policy, what happens to the first deposit or the top-up, wallet calls' effect on the balance)
REFUSALS = [
    pytest.param(httpay.Policy(max_per_payment_sat=10), "open", "max_per_payment", id="deposit-over-per-payment-cap"),
    pytest.param(httpay.Policy(budget_sat=30), "top-up", "budget", id="top-up-over-the-budget"),
    pytest.param(httpay.Policy(denied_hosts=["127.0.0.1"]), "open", "denied_host", id="denied-host"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("policy", "stage", "rule"), REFUSALS)
def test_session_payments_stay_within_the_policy(mode: str, policy: httpay.Policy, stage: str, rule: str,
                                                 demo: RunningServer, wallet: DemoWallet, ledger_path: Path) -> None:
    d = Driver(mode, demo, wallet, ledger_path, "/mpp/session/ticker/AAPL", policy=policy)
    try:
        if stage == "top-up":
            for _ in range(10):
                assert d.get().status_code == 200
        with pytest.raises(PaymentRefused) as refused:
            d.get()
        assert refused.value.rule == rule
        paid = 20_000 if stage == "top-up" else 0
        assert wallet.balance_msat() == 1_000_000 - paid
        assert sum(r.amount_msat for r in d.client.ledger.receipts() if r.status is Status.SETTLED) == paid
        assert [r for r in d.client.ledger.receipts() if r.status is Status.PENDING] == []
    finally:
        d.close_client()


@pytest.mark.parametrize("mode", MODES)
def test_a_route_that_is_not_a_session_is_left_alone(mode: str, demo: RunningServer, wallet: DemoWallet,
                                                     ledger_path: Path) -> None:
    d = Driver(mode, demo, wallet, ledger_path, "/mpp/ticker/AAPL")
    try:
        answer = d.get()
        assert answer.status_code == 402 and d.session.state.status == "new"
        assert wallet.balance_msat() == 1_000_000 and d.client.ledger.receipts() == []
    finally:
        d.close_client()


def test_the_plain_client_points_at_sessions(demo: RunningServer, wallet: DemoWallet, ledger_path: Path) -> None:
    """The per-request flow does not pay a session challenge; it says how to pay it, and pays nothing."""
    with httpay.Client(wallet=wallet, ledger=ledger_path, reconcile_grace_s=None,
                       policy=httpay.Policy(methods=["lightning", "mpp"])) as client:
        with pytest.raises(PaymentRefused, match=r"httpay\.MppSession\(client, url\)"):
            client.get(demo.url + "/mpp/session/ticker/AAPL")
        assert httpay.MppSession is MppSession and httpay.AsyncMppSession is AsyncMppSession
    assert wallet.balance_msat() == 1_000_000


@pytest.mark.parametrize("mode", MODES)
def test_the_session_can_be_used_between_stream_events(mode: str, demo: RunningServer, wallet: DemoWallet,
                                                       ledger_path: Path) -> None:
    """A request made while a paid stream is being read is paid from the same session (no lock held)."""
    d = Driver(mode, demo, wallet, ledger_path, "/mpp/session/stream/AAPL")
    try:
        seen: list[int] = []
        if d.loop is None:
            for event in d.session.stream(params={"chunks": 3}):
                if event.event is None and event.data != "[DONE]" and not seen:
                    seen.append(d.session.get(demo.url + "/mpp/session/stream/AAPL", params={"chunks": 1}).status_code)
        else:
            async def go() -> None:
                async for event in d.session.stream(params={"chunks": 3}):
                    if event.event is None and event.data != "[DONE]" and not seen:
                        seen.append((await d.session.get(params={"chunks": 1})).status_code)
            d.loop.run_until_complete(go())
        assert seen == [200] and len(d.client.ledger.receipts()) == 1  # one deposit for both
    finally:
        d.close_client()


@pytest.mark.parametrize("mode", MODES)
def test_concurrent_requests_on_a_new_session_pay_one_deposit(mode: str, demo: RunningServer, wallet: DemoWallet,
                                                              ledger_path: Path) -> None:
    """Ten requests at once on a session not yet open: one deposit opens it, all ten are served from it."""
    import threading

    d = Driver(mode, demo, wallet, ledger_path, "/mpp/session/ticker/AAPL")
    try:
        if d.loop is None:
            statuses: list[int] = []
            start = threading.Barrier(10)

            def one() -> None:
                start.wait()
                statuses.append(d.session.get().status_code)

            threads = [threading.Thread(target=one) for _ in range(10)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            async def many() -> list[int]:
                return [r.status_code for r in await asyncio.gather(*(d.session.get() for _ in range(10)))]
            statuses = d.loop.run_until_complete(many())
        assert statuses == [200] * 10
        assert [r.offer_id for r in d.client.ledger.receipts()] == ["session-deposit"]
        assert (d.session.state.spent_sat, wallet.balance_msat()) == (20, 980_000)
    finally:
        d.close_client()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("answer", [True, False])
def test_the_approver_is_asked_about_each_deposit(mode: str, answer: bool, demo: RunningServer, wallet: DemoWallet,
                                                  ledger_path: Path) -> None:
    asked: list[Any] = []

    def approve(quote: Any) -> bool:
        asked.append(quote)
        return answer

    async def approve_async(quote: Any) -> bool:
        return approve(quote)

    policy = httpay.Policy(approve=approve if mode == "sync" else approve_async)
    d = Driver(mode, demo, wallet, ledger_path, "/mpp/session/ticker/AAPL", policy=policy)
    try:
        if answer:
            for _ in range(11):  # the deposit and, on the 11th request, a top-up: each one asked about
                assert d.get().status_code == 200
            assert [q.offer.offer_id for q in asked] == ["session-deposit", "session-top-up"]
            assert asked[0].price_msat == 20_000 and "20 sat at 2 sat a request" in asked[0].offer.title
            assert wallet.balance_msat() == 960_000
        else:
            with pytest.raises(PaymentRefused) as refused:
                d.get()
            assert refused.value.rule == "approval" and "did not approve the session's deposit of 20 sat" in str(refused.value)
            assert wallet.balance_msat() == 1_000_000 and d.client.ledger.receipts() == []
    finally:
        d.close_client()
