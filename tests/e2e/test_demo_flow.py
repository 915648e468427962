"""The notebook's story end to end through the real demo server on loopback: 402 -> offers ->
policy -> payment request -> invoice check -> demo Lightning payment -> retry -> data."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import httpx
import pytest

import httpay
from httpay.demo.runner import RunningServer
from httpay.ledger import SQLiteLedger, Status


def credits(demo: RunningServer, auth: dict[str, str]) -> int:
    return int(httpx.get(f"{demo.url}/info", headers=auth).json()["credits"])


def test_paid_request_end_to_end(demo: RunningServer, account: dict[str, str], ledger_path: Path) -> None:
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=1_000)
    before = wallet.balance_msat()
    with httpay.Client(wallet=wallet, policy=httpay.Policy(max_per_payment_usd=1, budget_usd=5),
                       ledger=ledger_path) as c:
        r = c.get(f"{demo.url}/ticker/MSFT", headers=account)
    assert r.status_code == 200 and r.json()["symbol"] == "MSFT"
    rec = httpay.receipt_of(r)
    assert rec is not None and rec.status is Status.SETTLED
    assert rec.offer_id == "offer_c668e0c0" and rec.amount_msat == 10_000
    assert rec.preimage and hashlib.sha256(bytes.fromhex(rec.preimage)).hexdigest() == rec.payment_hash
    assert wallet.balance_msat() == before - 10_000
    state = demo.app.state.demo
    assert state.network.invoice(rec.payment_hash) is not None
    assert credits(demo, account) == 0  # bought 1, spent 1 on MSFT
    with SQLiteLedger(ledger_path) as lg:
        assert [x.status for x in lg.receipts()] == [Status.SETTLED]


def test_offers_from_a_real_402(demo: RunningServer, account: dict[str, str]) -> None:
    resp = httpx.get(f"{demo.url}/ticker/MSFT", headers=account)
    assert resp.status_code == 402
    ofs = httpay.PaymentOffers.from_response(resp)
    assert ofs.payment_request_url == f"{demo.url}/l402/payment-request"
    assert [o.amount for o in ofs.by_payment("lightning")] == [1, 100, 499]
    assert ofs.by_payment("lightning")[0].offer_id == "offer_c668e0c0"
    assert "L402 Payment Offers" in str(ofs)


def test_async_client_end_to_end(demo: RunningServer, account: dict[str, str], ledger_path: Path) -> None:
    async def go() -> httpx.Response:
        wallet = httpay.DemoWallet.create(demo.url, balance_sat=1_000)
        async with httpay.AsyncClient(wallet=wallet, policy=httpay.Policy(max_per_payment_usd=1, budget_usd=5),
                                      ledger=ledger_path) as c:
            return await c.get(f"{demo.url}/ticker/NVDA", headers=account)

    r = asyncio.run(go())
    assert r.status_code == 200 and r.json()["symbol"] == "NVDA"
    assert httpay.receipt_of(r) is not None


def test_choosing_a_bigger_offer_buys_more_credits(demo: RunningServer, account: dict[str, str], ledger_path: Path) -> None:
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=10_000)
    def pick_120(d: httpay.Quote) -> httpay.Offer:
        return next(o for o in d.offers if o.offer_id == "offer_97bf23f7")

    with httpay.Client(wallet=wallet, policy=httpay.Policy(max_per_payment_usd=1, budget_usd=5, approve=pick_120),
                       ledger=ledger_path) as c:
        r = c.get(f"{demo.url}/ticker/TSLA", headers=account)
        assert r.status_code == 200
        assert httpay.receipt_of(r).credits == 120  # type: ignore[union-attr]
        for sym in ("AAPL", "MSFT", "GOOGL"):
            assert c.get(f"{demo.url}/ticker/{sym}", headers=account).status_code == 200
    assert credits(demo, account) == 116
    with SQLiteLedger(ledger_path) as lg:
        assert len(lg.receipts()) == 1 and lg.spent_msat() == 1_000_000


@pytest.mark.parametrize(
    ("policy", "tamper", "error", "what"),
    [
        ({"budget_usd": 0.005}, None, httpay.PaymentRefused, "budget"),
        ({"max_per_payment_usd": 0.001}, None, httpay.PaymentRefused, "max_per_payment"),
        ({"methods": ["x402"]}, None, httpay.PaymentRefused, "methods"),  # the service takes none of them
        ({"approve": lambda d: False}, None, httpay.PaymentRefused, "approval"),
        ({}, lambda offer, msat: msat * 3, httpay.InvoiceError, "amount_above_offer"),
        ({}, lambda offer, msat: None, httpay.InvoiceError, "amount_missing"),
    ],
)
def test_refusals_through_the_real_server_pay_nothing(demo: RunningServer, account: dict[str, str], ledger_path: Path,
                                                     policy, tamper, error, what) -> None:  # type: ignore[no-untyped-def]
    demo.app.state.demo.invoice_tamper = tamper
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=1_000)
    with httpay.Client(wallet=wallet, policy=httpay.Policy(**{"max_per_payment_usd": 1, "budget_usd": 5, **policy}),
                       ledger=ledger_path) as c, pytest.raises(error) as err:
        c.get(f"{demo.url}/ticker/MSFT", headers=account)
    assert getattr(err.value, "rule", getattr(err.value, "check", None)) == what
    assert str(err.value)
    assert wallet.balance_msat() == 1_000_000, "nothing left the wallet"
    assert credits(demo, account) == 0
    with SQLiteLedger(ledger_path) as lg:
        assert lg.receipts() == [] and lg.spent_msat() == 0


def test_expired_invoice_is_refused(demo: RunningServer, account: dict[str, str], ledger_path: Path) -> None:
    net = demo.app.state.demo.network
    real_clock = net._clock
    net._clock = lambda: real_clock() - 3600  # the service's clock is an hour behind: its invoices are born expired
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=1_000)
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_usd=5), ledger=ledger_path) as c, \
            pytest.raises(httpay.InvoiceError) as err:
        c.get(f"{demo.url}/ticker/MSFT", headers=account)
    assert err.value.check == "expired"
    assert wallet.balance_msat() == 1_000_000


def test_wrong_network_is_refused(demo: RunningServer, account: dict[str, str], ledger_path: Path) -> None:
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=1_000)
    wallet.network = "bitcoin"  # a mainnet wallet must not pay a regtest invoice
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_usd=5), ledger=ledger_path) as c, \
            pytest.raises(httpay.InvoiceError) as err:
        c.get(f"{demo.url}/ticker/MSFT", headers=account)
    assert err.value.check == "network"
    assert wallet.balance_msat() == 1_000_000


def test_insufficient_funds_is_recorded_failed(demo: RunningServer, account: dict[str, str], ledger_path: Path) -> None:
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=5)
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_usd=5), ledger=ledger_path) as c, \
            pytest.raises(httpay.InsufficientFunds):
        c.get(f"{demo.url}/ticker/MSFT", headers=account)
    with SQLiteLedger(ledger_path) as lg:
        [row] = lg.receipts()
        assert row.status is Status.FAILED and lg.spent_msat() == 0


def test_bad_request_errors_are_typed(demo: RunningServer, ledger_path: Path) -> None:
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=1_000)
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_usd=5), ledger=ledger_path) as c:
        assert c.get(f"{demo.url}/ticker/NOPE", headers={"Authorization": "Bearer x"}).status_code == 401
    with pytest.raises(httpay.ConfigError, match="Policy"):
        httpay.Policy(budget_usd=-1)
    with pytest.raises(httpay.ConfigError, match="Wallet"):
        httpay.Client(wallet="not a wallet")  # type: ignore[arg-type]


def test_logs_name_each_step_and_no_secret(demo: RunningServer, account: dict[str, str], ledger_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=1_000)
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_usd=5), ledger=ledger_path) as c:
        r = c.get(f"{demo.url}/ticker/MSFT", headers=account)
    rec = httpay.receipt_of(r)
    assert rec is not None
    text = caplog.text
    for step in ("challenge", "decision", "payment_request", "invoice", "reserved", "paid", "retry", "served"):
        assert f"] {step}:" in text, step
    token = account["Authorization"].split()[1]
    key = wallet._DemoWallet__key  # type: ignore[attr-defined]
    for secret in (token, key, rec.preimage):
        assert secret and secret not in text
        assert secret not in repr(wallet) and secret not in repr(rec)


def test_each_step_is_one_structured_log_record_with_a_correlation_id(demo: RunningServer, account: dict[str, str],
                                                                      ledger_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="httpay")
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=1_000)
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_usd=5), ledger=ledger_path) as c:
        c.get(f"{demo.url}/ticker/MSFT", headers=account)
    steps = [r for r in caplog.records if hasattr(r, "httpay_step")]
    assert [r.httpay_step for r in steps] == ["challenge", "decision", "payment_request", "invoice", "reserved", "paid",  # type: ignore[attr-defined]
                                              "retry", "served"]
    assert len({r.httpay_request_id for r in steps}) == 1  # type: ignore[attr-defined]
    assert all(r.httpay_url == f"{demo.url}/ticker/MSFT" for r in steps)  # type: ignore[attr-defined]
