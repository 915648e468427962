"""Many requests at once against an honest L402 v0.2 service where one payment buys ONE credit on
the caller's account: the requests that waited on another's payment (a joined flight, or a payment
found made meanwhile) met a fresh 402 once its payer had used that credit, and were told
`PaymentNotHonored: paid (ledger #4 ...) but ... still answers 402 after 5 tries`, carrying the
receipt of a payment they never made (8 threads: 6 payments, 6 served, 2 such errors).

A request that paid nothing never claims a payment: it pays for itself within the policy and its
budgets (each payment one request served), or says truthfully that nothing was paid by it. The race
happens every time: the wallet pays nothing until every request has met its 402. Each case runs with
the credit landing a moment after the payment (a service that learns of it late), landing at once,
and landing at once with the payer's own retry overtaken by another request (which then takes the
credit: the payer, whose credit another request used, pays again or says so with its own receipt).
"credited-at-once" with no overtaking is the order the old flow got right: it guards that order."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import httpay
from httpay.core.flow import TAGS_EXTENSION, receipt_of
from httpay.ledger import Receipt, SQLiteLedger
from httpay.wallets.base import Payment
from tests.helpers import in_threads
from tests.hostile.harness import CountingWallet, HostileService

N = 8
WAIT_S = 30.0  # a safety net only: the order is made by events, never by the clock


class HeldWallet(CountingWallet):
    """Pays its first invoice only once every request has met its 402 (`everyone`). `credits`: the
    account is credited as the payment is made (the service hears of it at once), not a moment later."""

    def __init__(self, svc: HostileService, everyone: threading.Event, *, credits: bool = False) -> None:
        super().__init__(svc.node)
        self.svc, self.everyone, self.credits = svc, everyone, credits
        self.held: list[bool] = []
        self.first_paid = threading.Event()

    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Payment:
        with self._lock:
            first = not self.held
            if first:
                self.held.append(False)
        if first:
            self.held[0] = self.everyone.wait(WAIT_S)
        paid = super().pay_invoice(bolt11, max_fee_msat=max_fee_msat)
        if self.credits:
            with self.svc._lock:
                self.svc.credits += 1
        self.first_paid.set()
        return paid


def overtaken(svc: HostileService, path: str, first_paid: threading.Event) -> None:
    """The first request to reach `path` after the first payment (the payer's own retry, as it is
    sent first) is answered only after another request there was: the credit goes to that one."""
    gate = svc.handlers[path]
    held: list[bool] = []
    other = threading.Event()
    lock = threading.Lock()

    async def handler(request: Request) -> Response:
        with lock:
            hold = first_paid.is_set() and not held
            if hold:
                held.append(True)
        if hold:
            for _ in range(int(WAIT_S / 0.005)):  # (a safety net: another request comes at once)
                if other.is_set():
                    break
                await asyncio.sleep(0.005)
            return await gate(request)
        response = await gate(request)
        if held:
            other.set()
        return response

    svc.handlers[path] = handler


ORDERS = ["credited-late", "credited-at-once", "payer-overtaken"]


def one_credit_service(svc: HostileService, order: str) -> str:
    """`svc`'s v0.2 route /v, one credit per payment: credited a moment after the payment (the
    harness's), or by the wallet as it pays (`HeldWallet(credits=True)`), where the payer's own
    retry may also be overtaken by another request (`overtaken`)."""
    if order == "credited-late":
        return svc.v02("/v")

    async def pay(request: Request) -> Response:
        data = await request.json()
        bolt11, _ = svc.node.mint(10_000, description=str(data.get("offer_id")))
        return JSONResponse({"version": "0.2.2", "offer_id": data.get("offer_id"),
                             "expires_at": "2099-01-01T00:00:00+00:00",
                             "payment_request": {"lightning_invoice": bolt11}})
    return svc.v02("/v", pr_handler=pay)


def counting_402s(svc: HostileService, path: str, n: int) -> threading.Event:
    """An event set once the route at `path` has answered `n` 402s."""
    gate = svc.handlers[path]
    met = threading.Event()
    answered: list[int] = []
    lock = threading.Lock()

    async def counted(request: Request) -> Response:
        response = await gate(request)
        if response.status_code == 402:
            with lock:
                answered.append(1)
                if len(answered) >= n:
                    met.set()
        return response

    svc.handlers[path] = counted
    return met


Outcomes = dict[str, httpx.Response | BaseException]


def crowd(mode: str, url: str, n: int, **settings: Any) -> Outcomes:
    """`n` requests at once, each tagged with its own name (`req=r<i>`), through one httpay.Client
    (threads) or one httpay.AsyncClient (tasks): each one's response or error, by its name."""
    out: Outcomes = {}
    names = [f"r{i}" for i in range(n)]
    if mode == "sync":
        start = threading.Barrier(n)
        with httpay.Client(**settings) as c:
            def one(name: str) -> None:
                start.wait()
                try:
                    out[name] = c.get(url, extensions={TAGS_EXTENSION: {"req": name}})
                except Exception as exc:  # noqa: BLE001 - the test asserts what each one got
                    out[name] = exc
            in_threads(one, names)
    else:
        async def go() -> None:
            async with httpay.AsyncClient(**settings) as c:
                async def one(name: str) -> None:
                    try:
                        out[name] = await c.get(url, extensions={TAGS_EXTENSION: {"req": name}})
                    except Exception as exc:  # noqa: BLE001
                        out[name] = exc
                await asyncio.gather(*(one(name) for name in names))
        asyncio.run(go())
    return out


def rows_of(ledger: Path) -> list[Receipt]:
    with SQLiteLedger(ledger) as lg:
        return lg.receipts()


def carried(outcome: httpx.Response | BaseException) -> Receipt | None:
    """The receipt a response or an error presents as this request's payment."""
    if isinstance(outcome, httpx.Response):
        return receipt_of(outcome)
    found = getattr(outcome, "receipt", None)
    return found if isinstance(found, Receipt) else None


def assert_own_receipts(out: Outcomes, rows: list[Receipt]) -> None:
    """No response or error carries a receipt its request did not pay: a payment is one request's
    (its tag), and what a request presents is its own latest one. (A request pays a second time only
    when another request was served with the one credit its first bought: that one paid nothing.)"""
    latest: dict[str, int] = {}
    for r in rows:
        latest[r.tags["req"]] = max(r.id, latest.get(r.tags["req"], 0))
    for name, outcome in out.items():
        receipt = carried(outcome)
        if receipt is not None:
            assert receipt.tags.get("req") == name and receipt.id == latest[name], (
                f"{name} carries ledger #{receipt.id}, paid by {receipt.tags.get('req')}: {outcome!r}")
    twice = sum(n - 1 for n in Counter(r.tags["req"] for r in rows).values())
    free = [name for name, o in out.items() if isinstance(o, httpx.Response) and receipt_of(o) is None]
    assert twice <= len(free), "a request paid again only for a credit another request was served with"


def held_crowd(svc: HostileService, order: str, n_402: int) -> tuple[str, HeldWallet]:
    """The route /v and a wallet that pays nothing until `n_402` requests met its 402, in `order`."""
    url = one_credit_service(svc, order)
    everyone = counting_402s(svc, "/v", n_402)
    wallet = HeldWallet(svc, everyone, credits=order != "credited-late")
    if order == "payer-overtaken":
        overtaken(svc, "/v", wallet.first_paid)
    return url, wallet


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("prior", [0, 2], ids=["no-credit-before", "two-credits-before"])
def test_a_crowd_on_one_credit_per_payment_is_served_each_by_its_own_payment(
        svc: HostileService, ledger: Path, mode: str, prior: int, order: str) -> None:
    svc.credits = prior  # what the account holds already: that many requests need no payment
    url, wallet = held_crowd(svc, order, N - prior)
    policy = httpay.Policy(usd_per_btc=100_000, budget_sat=1_000)
    out = crowd(mode, url, N, wallet=wallet, policy=policy, ledger=ledger)

    assert wallet.held == [True], "every request met its 402 before anything was paid"
    errors = {name: o for name, o in out.items() if isinstance(o, BaseException)}
    assert errors == {}, errors
    assert sorted(o.status_code for o in out.values() if isinstance(o, httpx.Response)) == [200] * N
    rows = rows_of(ledger)
    assert wallet.paid == N - prior and [r.status.value for r in rows] == ["settled"] * (N - prior), \
        "one payment per request served beyond the credits the account held"
    assert_own_receipts(out, rows)
    with SQLiteLedger(ledger) as lg:
        assert lg.spent_msat() == (N - prior) * 11_000  # within the budget


@pytest.mark.parametrize("order", ORDERS)
def test_a_budget_for_one_payment_serves_one_and_refuses_the_rest_truthfully(
        svc: HostileService, ledger: Path, mode: str, order: str) -> None:
    url, wallet = held_crowd(svc, order, N)
    policy = httpay.Policy(usd_per_btc=100_000, budget_sat=20, max_fee_msat=1_000)  # 10 sat + 1 sat: one payment
    out = crowd(mode, url, N, wallet=wallet, policy=policy, ledger=ledger)

    assert wallet.held == [True]
    rows = rows_of(ledger)
    assert wallet.paid == 1 and [r.status.value for r in rows] == ["settled"]
    served = [name for name, o in out.items() if isinstance(o, httpx.Response)]
    assert len(served) == 1 and out[served[0]].status_code == 200  # type: ignore[union-attr]
    assert not [o for o in out.values() if isinstance(o, httpay.PaymentNotHonored)]
    payer = rows[0].tags["req"]
    for name, outcome in out.items():
        if name in served:
            continue
        if name == payer:  # its credit went to the one served: it says it paid, with its own receipt
            assert isinstance(outcome, httpay.PaidRequestFailed) and carried(outcome) == rows[0], outcome
            continue
        assert isinstance(outcome, httpay.PaymentRefused), f"{name}: {outcome!r}"  # nothing paid by it
        assert outcome.rule == "budget", outcome
        text = str(outcome)
        assert "another request" in text and "nothing was paid by this request" in text, text
        assert f"#{rows[0].id}" in text, text
    assert_own_receipts(out, rows)
    with SQLiteLedger(ledger) as lg:
        assert lg.spent_msat() == 11_000  # within the budget of 20 sat


def test_a_service_honouring_no_payment_is_paid_once_and_the_rest_pay_nothing(
        svc: HostileService, ledger: Path, mode: str) -> None:
    """A v0.2 service that takes the payment and answers 402 to it: the payer says so with its own
    receipt; every other request says nothing was paid by it and pays nothing for the same 402."""
    url = svc.v02("/v")
    everyone = counting_402s(svc, "/v", N)
    wallet = HeldWallet(svc, everyone)
    svc.credits = -10**9  # never served, whatever is paid
    policy = httpay.Policy(usd_per_btc=100_000, budget_sat=1_000)
    out = crowd(mode, url, N, wallet=wallet, policy=policy, ledger=ledger)

    rows = rows_of(ledger)
    assert wallet.paid == 1 and len(rows) == 1
    payer = rows[0].tags["req"]
    assert isinstance(out[payer], httpay.PaymentNotHonored) and carried(out[payer]) == rows[0]
    for name, outcome in out.items():
        if name != payer:
            assert isinstance(outcome, httpay.PaymentRefused), f"{name}: {outcome!r}"
            assert "nothing was paid by this request" in str(outcome), outcome
    assert_own_receipts(out, rows)

