"""The end-to-end money path through real software: the demo service takes its invoice from a
real LNbits wallet, httpay checks it and pays it from another LNbits wallet, the service sees it
paid in LNbits and serves the data. LNbits runs on loopback with its FakeWallet funding source."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import httpay
from httpay.demo.lnbits_source import LNbitsInvoices
from httpay.demo.runner import RunningServer, serve_in_thread
from httpay.demo.server import create_app
from httpay.ledger import SQLiteLedger, Status
from httpay.wallets.lnbits import LNbitsWallet
from tests.fixtures.lnbits import LNbitsServer


@pytest.fixture
def service_on_lnbits(lnbits: LNbitsServer) -> Iterator[RunningServer]:
    keys = lnbits.new_wallet("stock-service")
    payee = LNbitsWallet(lnbits.url, keys["adminkey"], invoice_key=keys["inkey"])
    with serve_in_thread(create_app(lnbits=LNbitsInvoices(payee))) as server:
        yield server
    payee.close()


def test_lnbits_to_httpay_to_lnbits(lnbits: LNbitsServer, service_on_lnbits: RunningServer, ledger_path: Path) -> None:
    base = service_on_lnbits.url
    auth = {"Authorization": f"Bearer {httpx.get(f'{base}/signup').json()['id']}"}
    assert httpx.get(f"{base}/ticker/AAPL", headers=auth).status_code == 200
    keys = lnbits.new_wallet("agent", balance_sat=1_000)
    wallet = LNbitsWallet(lnbits.url, keys["adminkey"])  # FakeWallet invoices are mainnet (lnbc)
    with httpay.Client(wallet=wallet, policy=httpay.Policy(usd_per_btc=100_000, budget_usd=1), ledger=ledger_path) as c:
        r = c.get(f"{base}/ticker/MSFT", headers=auth)
        assert r.status_code == 200 and r.json()["symbol"] == "MSFT"
        rec = httpay.receipt_of(r)
        assert rec is not None and rec.status is Status.SETTLED and rec.amount_msat == 10_000
        assert wallet.lookup(rec.payment_hash or "").settled  # type: ignore[union-attr]
    assert wallet.balance_msat() == 1_000_000 - 10_000 - rec.fee_msat
    with SQLiteLedger(ledger_path) as lg:
        assert [x.status for x in lg.receipts()] == [Status.SETTLED]
    wallet.close()


def test_a_regtest_wallet_refuses_lnbits_mainnet_invoices(lnbits: LNbitsServer, service_on_lnbits: RunningServer,
                                                           ledger_path: Path) -> None:
    base = service_on_lnbits.url
    auth = {"Authorization": f"Bearer {httpx.get(f'{base}/signup').json()['id']}"}
    httpx.get(f"{base}/ticker/AAPL", headers=auth)
    keys = lnbits.new_wallet("regtest-agent", balance_sat=1_000)
    wallet = LNbitsWallet(lnbits.url, keys["adminkey"], network="regtest")
    with httpay.Client(wallet=wallet, policy=httpay.Policy(usd_per_btc=100_000, budget_usd=1), ledger=ledger_path) as c, \
            pytest.raises(httpay.InvoiceError) as err:
        c.get(f"{base}/ticker/MSFT", headers=auth)
    assert err.value.check == "network" and wallet.balance_msat() == 1_000_000
    wallet.close()
