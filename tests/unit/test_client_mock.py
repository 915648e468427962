"""The client's whole pipeline against an in-memory paywall (httpx.MockTransport): every refusal
path shows the error, pays nothing and leaves the ledger right."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

import httpay
from httpay.ledger import SQLiteLedger, Status
from tests.helpers import FakeService, FakeWallet

URL = "http://stock.test/ticker/MSFT"


def client(svc: FakeService, wallet: FakeWallet, ledger: SQLiteLedger, **policy) -> httpay.Client:  # type: ignore[no-untyped-def]
    pol = httpay.Policy(**{"usd_per_btc": 100_000, "max_per_payment_usd": 1, "budget_usd": 5, **policy})
    return httpay.Client(wallet=wallet, policy=pol, ledger=ledger, transport=httpx.MockTransport(svc))


def test_402_is_paid_and_retried_transparently(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    w = FakeWallet(svc)
    events: list[str] = []
    with httpay.Client(wallet=w, policy=httpay.Policy(usd_per_btc=100_000, budget_usd=5), ledger=ledger,
                       transport=httpx.MockTransport(svc), on_event=lambda e: events.append(e.kind)) as c:
        r = c.get(URL)
    assert r.status_code == 200 and r.json()["symbol"] == "MSFT"
    assert len(w.calls) == 1 and svc.pr_calls == 1
    rec = httpay.receipt_of(r)
    assert rec is not None and rec.status is Status.SETTLED and rec.offer_id == "offer_c668e0c0"
    assert rec.amount_msat == 10_000 and rec.fee_msat == 3 and rec.credits == 1
    [row] = ledger.receipts()
    assert row.status is Status.SETTLED and row.preimage and row.host == "stock.test"
    assert events == ["challenge", "decision", "payment_request", "invoice", "reserved", "paid", "retry", "served"]


def test_async_client_runs_the_same_pipeline(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    w = FakeWallet(svc)

    async def go() -> httpx.Response:
        async with httpay.AsyncClient(wallet=w, policy=httpay.Policy(usd_per_btc=100_000, budget_usd=5), ledger=ledger,
                                      transport=httpx.MockTransport(svc)) as c:
            return await c.get(URL)

    r = asyncio.run(go())
    assert r.status_code == 200 and len(w.calls) == 1
    assert [x.status for x in ledger.receipts()] == [Status.SETTLED]


def _refused(ledger: SQLiteLedger, svc: FakeService, w: FakeWallet, exc: type[Exception], **policy):  # type: ignore[no-untyped-def]
    with client(svc, w, ledger, **policy) as c, pytest.raises(exc) as err:
        c.get(URL)
    assert w.calls == [], "nothing may reach the wallet"
    return err.value


def test_over_per_payment_limit(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    e = _refused(ledger, svc, FakeWallet(svc), httpay.PaymentRefused, max_per_payment_usd=0.001)
    assert e.rule == "max_per_payment" and "per-payment limit" in str(e) and e.offers is not None
    assert svc.pr_calls == 0 and ledger.receipts() == []


def test_over_budget(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    e = _refused(ledger, svc, FakeWallet(svc), httpay.PaymentRefused, budget_usd=0.005)
    assert e.rule == "budget" and "budget" in str(e)
    assert ledger.receipts() == []


def test_budget_is_enforced_by_the_ledger_across_payments(ledger: SQLiteLedger) -> None:
    svc = FakeService(invoice_msat=10_000)
    w = FakeWallet(svc)
    # each payment holds 10 sat + a 10 msat fee cap while pending: two fit in 21 sat, a third would not
    with client(svc, w, ledger, budget_usd=0.021, max_fee_msat=10) as c:
        assert c.get(URL).status_code == 200
        assert c.get(URL).status_code == 200
        with pytest.raises(httpay.PaymentRefused) as err:
            c.get(URL)
    assert err.value.rule == "budget" and len(w.calls) == 2
    assert ledger.spent_msat() == 20_006


def test_invoice_above_offer(ledger: SQLiteLedger) -> None:
    svc = FakeService(invoice_msat=20_000)
    e = _refused(ledger, svc, FakeWallet(svc), httpay.InvoiceError)
    assert e.check == "amount_above_offer" and ledger.receipts() == []


def test_amountless_invoice(ledger: SQLiteLedger) -> None:
    svc = FakeService(invoice_msat=None)
    e = _refused(ledger, svc, FakeWallet(svc), httpay.InvoiceError)
    assert e.check == "amount_missing" and ledger.receipts() == []


def test_wrong_network(ledger: SQLiteLedger) -> None:
    svc = FakeService(network="bitcoin")
    e = _refused(ledger, svc, FakeWallet(svc), httpay.InvoiceError)
    assert e.check == "network" and ledger.receipts() == []


def test_unknown_method(ledger: SQLiteLedger) -> None:
    svc = FakeService(offers=[{"offer_id": "cc", "title": "t", "description": "", "type": "top-up", "balance": 1,
                                "amount": 1, "currency": "USD", "payment_methods": ["credit_card"]}])
    e = _refused(ledger, svc, FakeWallet(svc), httpay.PaymentRefused)
    # no policy could allow a card: said so, with no knob to turn (it advised allowing it in Policy(methods=...))
    assert e.rule == "unpayable" and "takes only credit_card, which httpay cannot pay" in str(e)
    assert "Policy(methods" not in str(e)


def test_malformed_402(ledger: SQLiteLedger) -> None:
    def bad(request: httpx.Request) -> httpx.Response:
        return httpx.Response(402, json={"offers": [{"amount": 1}], "payment_request_url": "http://stock.test/pr"})

    w = FakeWallet(FakeService())
    with httpay.Client(wallet=w, ledger=ledger, transport=httpx.MockTransport(bad)) as c, \
            pytest.raises(httpay.ChallengeError, match="payment_methods"):
        c.get(URL)
    assert w.calls == [] and ledger.receipts() == []


def test_payment_request_url_on_another_site_is_refused(ledger: SQLiteLedger) -> None:
    svc = FakeService(pr_url="http://evil.test/l402/payment-request")
    e = _refused(ledger, svc, FakeWallet(svc), httpay.PaymentRefused)
    assert e.rule == "payment_host" and svc.pr_calls == 0


def test_approval_hook_can_deny_and_approve(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    seen = []
    e = _refused(ledger, svc, FakeWallet(svc), httpay.PaymentRefused, approve=lambda d: seen.append(d) or False)
    assert e.rule == "approval" and seen[0].offer.offer_id == "offer_c668e0c0"
    w = FakeWallet(svc)
    with client(svc, w, ledger, approve=lambda d: True) as c:
        assert c.get(URL).status_code == 200


def test_wallet_failure_is_recorded_as_failed(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    w = FakeWallet(svc, fail=httpay.InsufficientFunds("not enough sats"))
    with client(svc, w, ledger) as c, pytest.raises(httpay.InsufficientFunds):
        c.get(URL)
    [row] = ledger.receipts()
    assert row.status is Status.FAILED and "not enough sats" in (row.reason or "")
    assert ledger.spent_msat() == 0


def test_unknown_outcome_stays_pending_and_is_never_repaid(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    w = FakeWallet(svc, fail=httpay.PaymentTimeout("no answer"))
    with client(svc, w, ledger) as c, pytest.raises(httpay.PaymentOutcomeUnknown):
        c.get(URL)
    [row] = ledger.receipts()
    # the amount and the fee cap it may have cost (default: 10 sat) stay counted until it is reconciled
    assert row.status is Status.PENDING and row.fee_msat == 10_000 and ledger.spent_msat() == 20_000


def test_paid_but_still_402_is_a_clear_error(ledger: SQLiteLedger) -> None:
    svc = FakeService()

    class Stingy(FakeService):
        def pay(self, payment_hash: str) -> str:
            self.paid.add(payment_hash)
            return self.invoices[payment_hash]

    stingy = Stingy()
    w = FakeWallet(stingy)
    with client(stingy, w, ledger) as c:
        c.payer.retries_after_payment, c.payer.retry_delay_s = 2, 0
        with pytest.raises(httpay.PaymentNotHonored, match="still answers 402"):
            c.get(URL)
    assert ledger.receipts()[0].status is Status.SETTLED
    assert svc.pr_calls == 0


@pytest.mark.parametrize("tries", [0, -3])
def test_no_retries_after_payment_still_sends_the_paid_request_once(tries: int, ledger: SQLiteLedger) -> None:
    """A payer set to retry nothing after paying still sends the request the payment bought, once."""
    svc = FakeService()
    w = FakeWallet(svc)
    with client(svc, w, ledger) as c:
        c.payer.retries_after_payment = tries
        r = c.get(URL)
    assert r.status_code == 200 and len(w.calls) == 1
    assert ledger.receipts()[0].status is Status.SETTLED


def test_no_secret_in_logs(ledger: SQLiteLedger, caplog: pytest.LogCaptureFixture) -> None:
    svc = FakeService()
    w = FakeWallet(svc)
    caplog.set_level(logging.DEBUG)
    with client(svc, w, ledger) as c:
        r = c.get(URL)
    rec = httpay.receipt_of(r)
    assert rec is not None and rec.preimage
    text = caplog.text
    assert "tok-123" not in text and rec.preimage not in text
    assert "challenge" in text and "paid" in text
    assert rec.preimage not in repr(rec) and rec.preimage not in str(rec)


def test_default_ledger_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPAY_LEDGER", str(tmp_path / "l.sqlite3"))
    svc = FakeService()
    with httpay.Client(wallet=FakeWallet(svc), policy=httpay.Policy(usd_per_btc=100_000),
                       transport=httpx.MockTransport(svc)) as c:
        assert c.get(URL).status_code == 200
        assert c.ledger.url == str(tmp_path / "l.sqlite3")
    assert (tmp_path / "l.sqlite3").exists()


def test_rate_source_is_asked_and_a_failing_one_refuses(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    w = FakeWallet(svc)
    calls = []
    pol = httpay.Policy(budget_usd=1, rate_source=lambda: calls.append(1) or 100_000.0)
    with httpay.Client(wallet=w, policy=pol, ledger=ledger, transport=httpx.MockTransport(svc)) as c:
        assert c.get(URL).status_code == 200
    assert calls and len(w.calls) == 1

    def broken() -> float:
        raise RuntimeError("exchange down at https://me:hunter2@rates.example/?api_key=s3cret")

    with httpay.Client(wallet=w, policy=httpay.Policy(budget_usd=1, rate_source=broken), ledger=ledger,
                       transport=httpx.MockTransport(svc)) as c, pytest.raises(httpay.PaymentRefused) as err:
        c.get(URL)
    assert err.value.rule == "exchange_rate" and len(w.calls) == 1
    # the refusal names the source that failed, by its kind only: its own text may carry a secret
    assert "(the policy's rate_source could not be read: RuntimeError)" in str(err.value)
    assert "hunter2" not in str(err.value) and "s3cret" not in str(err.value)


def test_waiters_retry_together_once_the_challenge_is_paid(ledger: SQLiteLedger) -> None:
    """After one payment, every request that waited on it retries at once, not one by one: the
    service holds each paid-for answer until all of them have arrived (a barrier, which breaks
    after 20 s if the retries came one at a time)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    n = 12
    svc = FakeService()
    arrived = threading.Barrier(n, timeout=20)
    all_met_the_402 = threading.Event()
    count_402 = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/l402/payment-request" or not svc.paid:
            resp = svc(request)
            if resp.status_code == 402:
                count_402.append(1)
                if len(count_402) >= n:
                    all_met_the_402.set()
            return resp
        arrived.wait()
        return httpx.Response(200, json={"symbol": "MSFT"})

    w = FakeWallet(svc)
    pay = w.pay_invoice

    def pay_once_everyone_waits(bolt11: str, **kw):  # type: ignore[no-untyped-def]
        all_met_the_402.wait(timeout=20)  # every request has met the 402 and waits on this payment
        return pay(bolt11, **kw)

    w.pay_invoice = pay_once_everyone_waits  # type: ignore[method-assign]
    with httpay.Client(wallet=w, policy=httpay.Policy(usd_per_btc=100_000, budget_usd=1), ledger=ledger,
                       transport=httpx.MockTransport(handler)) as c, ThreadPoolExecutor(n) as pool:
        codes = list(pool.map(lambda _: c.get(URL).status_code, range(n)))
    assert codes == [200] * n and len(w.calls) == 1


@pytest.mark.parametrize("make", [httpay.Client, httpay.AsyncClient])
def test_a_misspelt_setting_is_named_before_anything_else(make: type, tmp_path: Path) -> None:
    """`Client(walet=...)` said "a paying client needs wallet=" (the typo hidden behind it), and a
    dict policy without a wallet said the same instead of how to write the Policy."""
    with pytest.raises(httpay.ConfigError, match=r"takes no setting walet \(did you mean wallet\?\)"):
        make(walet=None)
    with pytest.raises(httpay.ConfigError, match=r"no setting verfy \(did you mean verify\?\)"):
        make(verfy=False, wallet=FakeWallet(FakeService()))
    with pytest.raises(httpay.ConfigError, match=r"write httpay.Policy\(budget_usd=5\)"):
        make(policy={"budget_usd": 5})
    assert not list(tmp_path.iterdir())
