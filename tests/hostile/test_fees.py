"""Fees are money (issue 10, item 4): a reservation holds the amount plus the most the wallet may
spend on fees; every budget counts that hold; settling records the real fee and releases the
rest; failing releases all; the wallet is told the very cap that was held.

Every case runs through httpay.Client and httpay.AsyncClient against a hostile loopback service
whose node issues real invoices, paid by a counting wallet that charges `fee_msat` per payment.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import httpay
from httpay.ledger import SQLiteLedger, Status
from httpay.wallets.base import default_fee_limit_msat
from tests.hostile.harness import CountingWallet, HostileService, client_for, run

RATE = 100_000  # USD/BTC: $0.05 = 50,000 msat


@dataclass(frozen=True)
class Case:
    name: str
    policy: dict[str, Any]
    invoice_msat: int = 10_000
    fee_msat: int = 1_000            # what the wallet really charges
    requests: int = 1                # sent one after another
    paid: int = 1                    # wallet calls
    spent_msat: int = 11_000         # committed in the ledger afterwards (fees included)
    refused_rule: str | None = None  # the last request's refusal, if any
    message: tuple[str, ...] = ()    # words the refusal must say
    dialect: str = "v02"
    held_cap: int | None = None      # the fee cap the wallet must be given (default: the wallet's default cap)
    extra: dict[str, Any] = field(default_factory=dict)


CASES = [
    # the issue's own: a 50,000 msat budget, a 50 sat invoice and a 1 sat fee was spent to 51,000
    Case("a fee that would overspend the total budget is refused before paying", {"budget_sat": 50},
         invoice_msat=50_000, paid=0, spent_msat=0, refused_rule="budget", message=("in fees", "total budget", "hold less for routing fees (max_fee_msat")),
    Case("the same, classic L402", {"budget_sat": 50}, invoice_msat=50_000, paid=0, spent_msat=0,
         refused_rule="budget", message=("in fees", "max_fee_msat"), dialect="classic"),
    Case("per-host budget counts the fee", {"per_host_usd": 0.05}, invoice_msat=50_000, paid=0, spent_msat=0,
         refused_rule="per_host", message=("in fees", "per-host budget", "max_fee_msat")),
    Case("hourly budget counts the fee", {"per_hour_usd": 0.05}, invoice_msat=50_000, paid=0, spent_msat=0,
         refused_rule="per_hour", message=("in fees", "hourly budget", "max_fee_msat")),
    Case("daily budget counts the fee", {"per_day_usd": 0.05}, invoice_msat=50_000, paid=0, spent_msat=0,
         refused_rule="per_day", message=("in fees", "daily budget", "max_fee_msat")),
    Case("a fee cap that fits is held, then the real fee recorded", {"budget_sat": 51, "max_fee_msat": 1_000},
         invoice_msat=50_000, paid=1, spent_msat=51_000, held_cap=1_000),
    Case("a budget for exactly N payments with fees pays exactly N", {"budget_sat": 33, "max_fee_msat": 1_000},
         requests=4, paid=3, spent_msat=33_000, refused_rule="budget", held_cap=1_000),
    Case("the default cap (10 sat) is held: 50 sat buys three 10 sat payments, not four",
         {"budget_sat": 50}, requests=5, paid=3, spent_msat=33_000, refused_rule="budget"),
    Case("a 0 fee cap is passed to the wallet and held as 0", {"budget_sat": 20, "max_fee_msat": 0},
         fee_msat=0, requests=3, paid=2, spent_msat=20_000, refused_rule="budget", held_cap=0),
    Case("classic L402: each paid token's fee counts", {"budget_sat": 22, "max_fee_msat": 1_000},
         requests=3, paid=2, spent_msat=22_000, refused_rule="budget", dialect="classic", held_cap=1_000,
         extra={"token_scope": "url"}),
    # "at most N sat per payment" (or --max-cost-sat N) is price and fees together: the wallet's fee cap
    # is cut to what the limit leaves beside the price
    Case("a per-payment limit leaves the fees only what is left of it", {"max_per_payment_sat": 14}, held_cap=4_000),
    Case("at the per-payment limit a payment gets no room for fees", {"max_per_payment_sat": 10}, fee_msat=0,
         spent_msat=10_000, held_cap=0),
    Case("the same, classic L402", {"max_per_payment_sat": 12}, dialect="classic", held_cap=2_000),
]


def _url(svc: HostileService, case: Case, i: int) -> str:
    if case.dialect == "classic":
        return svc.classic(f"/classic{i}", price_sat=case.invoice_msat // 1000)
    cents = case.invoice_msat // 10_000  # at 100,000 USD/BTC one cent is 10 sat
    offer = {"offer_id": "offer_fee", "title": f"{cents} cent credit", "description": "one call", "type": "top-up",
             "balance": 1, "amount": cents, "currency": "USD", "payment_methods": ["lightning"]}
    return svc.v02(invoice_msat=case.invoice_msat, offers=[offer])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fees_count_in_every_budget(svc: HostileService, ledger: Path, mode: str, case: Case) -> None:
    wallet = CountingWallet(svc.node, fee_msat=case.fee_msat)
    policy = httpay.Policy(usd_per_btc=RATE, **case.policy)
    outs = [run(mode, _url(svc, case, i), wallet=wallet, ledger=ledger, policy=policy, **case.extra)
            for i in range(case.requests)]
    last = outs[-1]
    assert last.wallet_calls == case.paid
    assert last.spent_msat == case.spent_msat, [str(r) for r in last.receipts]
    assert all(r.status is Status.SETTLED and r.fee_msat == case.fee_msat for r in last.receipts)
    assert len(last.receipts) == case.paid  # a refusal writes nothing
    cap = case.held_cap if case.held_cap is not None else default_fee_limit_msat(case.invoice_msat)
    assert wallet.max_fees == [cap] * case.paid, "the wallet is given exactly the fee cap the ledger held"
    for out in outs[:case.paid]:
        assert out.error is None and out.status == 200, out.error
    if case.refused_rule is None:
        assert last.error is None
        return
    assert isinstance(last.error, httpay.PaymentRefused) and last.error.rule == case.refused_rule, last.error
    for word in case.message:
        assert word in str(last.error)
    assert "left" in str(last.error)


def test_the_fee_cap_is_held_while_pending_and_released_by_settling(svc: HostileService, ledger: Path,
                                                                     mode: str) -> None:
    """While the wallet pays, the ledger counts amount + cap; afterwards amount + the real fee."""
    seen: list[tuple[int, int]] = []

    class Watching(CountingWallet):
        def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Any:
            with SQLiteLedger(ledger) as lg:
                [row] = lg.pending()
                seen.append((row.fee_msat, lg.spent_msat()))
            return super().pay_invoice(bolt11, max_fee_msat=max_fee_msat)

    wallet = Watching(svc.node, fee_msat=1_000)
    out = run(mode, svc.v02(), wallet=wallet, ledger=ledger, policy=httpay.Policy(budget_sat=100, max_fee_msat=5_000, usd_per_btc=RATE))
    assert out.error is None and out.status == 200
    assert seen == [(5_000, 15_000)], "pending: the fee cap is held in the budget"
    assert [(r.status, r.fee_msat) for r in out.receipts] == [(Status.SETTLED, 1_000)]
    assert out.spent_msat == 11_000, "settled: the unspent part of the cap is released"


def test_a_failed_payment_releases_amount_and_fee(svc: HostileService, ledger: Path, mode: str) -> None:
    wallet = CountingWallet(svc.node, fail=httpay.WalletError("no route", outcome_known=True))
    out = run(mode, svc.v02(), wallet=wallet, ledger=ledger, policy=httpay.Policy(budget_sat=100, usd_per_btc=RATE))
    assert isinstance(out.error, httpay.WalletError) and "no route" in str(out.error)
    assert out.wallet_calls == 1 and out.spent_msat == 0
    assert [(r.status, r.fee_msat) for r in out.receipts] == [(Status.FAILED, 0)]


def test_an_unknown_outcome_keeps_amount_and_fee_cap_counted(svc: HostileService, ledger: Path, mode: str) -> None:
    wallet = CountingWallet(svc.node, fail=httpay.PaymentTimeout("the node did not answer"))
    out = run(mode, svc.v02(), wallet=wallet, ledger=ledger, policy=httpay.Policy(budget_sat=100, usd_per_btc=RATE),
              reconcile_grace_s=None)
    assert isinstance(out.error, httpay.PaymentOutcomeUnknown) and "pending" in str(out.error)
    assert out.wallet_calls == 1
    [row] = out.receipts
    assert row.status is Status.PENDING and row.fee_msat == 10_000 and out.spent_msat == 20_000
    assert "fee up to 10 sat held" in str(row)


# -- under concurrency the overshoot must not grow with payments in flight -----------------------------------
N_REQUESTS = 12
BUDGET_SAT = 50  # payments of 10 sat + a 1 sat fee: room for 4 (44 sat), not 5 (55 sat, what counting no fee allows)
BUDGET_FOR = 4


def _many(mode: str, urls: list[str], wallet: CountingWallet, ledger: Path, policy: httpay.Policy) -> list[Any]:
    """Every URL at once through one client; each result is a response or the error raised."""
    kwargs: dict[str, Any] = {"wallet": wallet, "ledger": ledger, "policy": policy, "token_scope": "url", "timeout": 60}
    if mode == "sync":
        def one(c: httpay.Client, url: str) -> Any:
            try:
                return c.get(url)
            except httpay.HttpayError as exc:
                return exc

        with httpay.Client(**kwargs) as c, ThreadPoolExecutor(len(urls)) as pool:  # type: ignore[arg-type]
            return list(pool.map(lambda u: one(c, u), urls))

    async def go() -> list[Any]:
        client = client_for("async", **kwargs)
        assert isinstance(client, httpay.AsyncClient)
        async with client as c:
            return list(await asyncio.gather(*(c.get(u) for u in urls), return_exceptions=True))
    return asyncio.run(go())


@pytest.mark.parametrize("dialect", ["classic", "v02-each"])
def test_concurrent_payments_never_exceed_the_budget_with_fees(svc: HostileService, ledger: Path, mode: str,
                                                                dialect: str) -> None:
    """12 requests at once, each needing its own payment, a 50 sat budget (4 payments of 10 sat + 1 sat
    fee), a wallet slow enough that they are all in flight together: exactly 4 paid, never a msat over."""
    if dialect == "classic":
        urls = [svc.classic(f"/c{i}", price_sat=10) for i in range(N_REQUESTS)]
    else:  # v0.2 services with their own context each: separate challenges
        urls = [_separate_v02(svc, i) for i in range(N_REQUESTS)]
    wallet = CountingWallet(svc.node, fee_msat=1_000, delay_s=0.05)
    policy = httpay.Policy(budget_sat=BUDGET_SAT, max_fee_msat=1_000, usd_per_btc=RATE)
    results = _many(mode, urls, wallet, ledger, policy)
    served = [r for r in results if isinstance(r, httpx.Response) and r.status_code == 200]
    refused = [r for r in results if isinstance(r, httpay.PaymentRefused)]
    assert len(served) == BUDGET_FOR and len(refused) == N_REQUESTS - BUDGET_FOR, results
    assert all(r.rule == "budget" for r in refused)
    assert len(wallet.calls) == BUDGET_FOR and wallet.max_fees == [1_000] * BUDGET_FOR
    with SQLiteLedger(ledger) as lg:
        assert lg.spent_msat() == 11_000 * BUDGET_FOR
        assert [r.status for r in lg.receipts()] == [Status.SETTLED] * BUDGET_FOR


def _separate_v02(svc: HostileService, i: int) -> str:
    """A v0.2 paywall at /v{i} with its own context token and credits, served by `svc`."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    from tests.helpers import NOTEBOOK_OFFERS

    credits = {"n": 0}

    async def gate(request: Request) -> Response:
        if credits["n"] > 0:
            credits["n"] -= 1
            return JSONResponse({"served": i})
        return JSONResponse({"version": "0.2.2", "payment_request_url": f"{svc.url}/pay{i}",
                             "payment_context_token": f"ctx-{i}", "offers": NOTEBOOK_OFFERS}, status_code=402)

    async def pay(request: Request) -> Response:
        data = await request.json()
        bolt11, payment_hash = svc.node.mint(10_000, description=f"v{i}")

        async def credit() -> None:
            for _ in range(3000):
                if svc.node.settled(payment_hash):
                    credits["n"] += 1
                    return
                await asyncio.sleep(0.01)

        asyncio.get_running_loop().create_task(credit())
        return JSONResponse({"version": "0.2.2", "offer_id": data.get("offer_id"),
                             "expires_at": "2099-01-01T00:00:00+00:00",
                             "payment_request": {"lightning_invoice": bolt11}})

    svc.route(f"/pay{i}", pay)
    return svc.route(f"/v{i}", gate)


def test_views_show_fees(svc: HostileService, ledger: Path) -> None:
    """str, rich and HTML of a receipt and of the ledger, and the budget view, all show the fee."""
    from rich.console import Console

    from httpay.apps.display import budget_lines, budget_table, html_budget

    wallet = CountingWallet(svc.node, fee_msat=1_500)
    out = run("sync", svc.v02(), wallet=wallet, ledger=ledger, policy=httpay.Policy(budget_sat=100, usd_per_btc=RATE))
    [row] = out.receipts
    assert "fee 1.5 sat" in str(row)
    console = Console(width=140, record=True)
    console.print(row)
    with SQLiteLedger(ledger) as lg:
        console.print(lg)
        assert "1.5" in lg._repr_html_() and "fee sat" in lg._repr_html_()
        lines = budget_lines(httpay.Policy(budget_sat=100, usd_per_btc=RATE), lg)
    console.print(budget_table(lines))
    text = console.export_text()
    assert "fee sat" in text and "1.5" in text and "11.5" in text and "fees" in text
    assert "spent incl. fees" in html_budget(lines) and "11.5 sat" in html_budget(lines)
    assert "1.5" in row._repr_html_()


def test_a_wallet_that_goes_over_its_fee_cap_is_recorded_as_it_is_and_said(svc: HostileService, ledger: Path,
                                                                           mode: str,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A wallet that cannot enforce the cap (LNbits has no per-payment fee limit) charged more: the
    ledger records the truth, not the cap, and a warning says so."""
    wallet = CountingWallet(svc.node, fee_msat=2_000)
    out = run(mode, svc.v02(), wallet=wallet, ledger=ledger,
              policy=httpay.Policy(budget_sat=100, max_fee_msat=1_000, usd_per_btc=RATE))
    assert out.error is None and out.status == 200 and wallet.max_fees == [1_000]
    assert [r.fee_msat for r in out.receipts] == [2_000] and out.spent_msat == 12_000
    assert "spent 2000 msat on fees, above the 1000 msat cap" in caplog.text
