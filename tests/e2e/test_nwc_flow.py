"""httpay.Client pays the demo service's 402 with a Nostr Wallet Connect wallet: the request goes over the
real `nostr-relay` on loopback to a NIP-47 wallet service that pays on the demo service's own Lightning
network, and the data comes back with a receipt the ledger holds."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import httpay
from httpay.demo.runner import RunningServer
from httpay.ledger import SQLiteLedger, Status
from httpay.reconcile import reconcile
from httpay.wallets.nwc import NWCWallet
from tests.e2e.test_cli import httpay_cmd
from tests.fixtures.nostr import NWCBackend, Relay, nwc_backend_on


def _policy(demo: RunningServer) -> httpay.Policy:
    """The demo prices in USD; an NWC wallet reports no rate, so the policy names the demo network's."""
    rate = float(httpx.get(f"{demo.url}/ln/node").json()["usd_per_btc"])
    return httpay.Policy(max_per_payment_usd=1, budget_usd=5, usd_per_btc=rate)


@pytest.fixture
def demo_nwc(demo: RunningServer, nostr_relay: Relay) -> Iterator[NWCBackend]:
    backend = nwc_backend_on(nostr_relay, demo.app.state.demo.network, balance_sat=1_000)
    yield backend
    backend.service.close()


def test_client_pays_the_demo_402_through_nwc(demo: RunningServer, account: dict[str, str], ledger_path: Path,
                                             demo_nwc: NWCBackend) -> None:
    with NWCWallet(demo_nwc.uri, network="regtest", timeout=20) as wallet:
        with httpay.Client(wallet=wallet, policy=_policy(demo),
                           ledger=ledger_path) as c:
            r = c.get(f"{demo.url}/ticker/MSFT", headers=account)
        assert r.status_code == 200 and r.json()["symbol"] == "MSFT"
        rec = httpay.receipt_of(r)
        assert rec is not None and rec.status is Status.SETTLED and rec.amount_msat == 10_000
        assert rec.preimage and hashlib.sha256(bytes.fromhex(rec.preimage)).hexdigest() == rec.payment_hash
        assert wallet.balance_msat() == demo_nwc.funds_msat - 10_000
        assert demo.app.state.demo.network.invoice(rec.payment_hash).settled  # type: ignore[union-attr]
        assert demo_nwc.service.requests.count("pay_invoice") == 1
    assert int(httpx.get(f"{demo.url}/info", headers=account).json()["credits"]) == 0  # bought 1, spent 1
    with SQLiteLedger(ledger_path) as lg:
        rows = lg.receipts()
    assert [x.status for x in rows] == [Status.SETTLED]
    assert demo_nwc.service.client_secret not in repr(rows)


def test_async_client_pays_through_nwc(demo: RunningServer, account: dict[str, str], ledger_path: Path,
                                       demo_nwc: NWCBackend) -> None:
    async def go(wallet: NWCWallet) -> httpx.Response:
        async with httpay.AsyncClient(wallet=wallet, policy=_policy(demo),
                                      ledger=ledger_path) as c:
            return await c.get(f"{demo.url}/ticker/NVDA", headers=account)

    with NWCWallet(demo_nwc.uri, network="regtest", timeout=20) as wallet:
        r = asyncio.run(go(wallet))
        assert r.status_code == 200 and r.json()["symbol"] == "NVDA"
        assert wallet.balance_msat() == demo_nwc.funds_msat - 10_000


def test_a_wallet_service_too_poor_to_pay_leaves_a_failed_row_and_no_data(
        demo: RunningServer, account: dict[str, str], ledger_path: Path, nostr_relay: Relay) -> None:
    poor = nwc_backend_on(nostr_relay, demo.app.state.demo.network, balance_sat=1)
    try:
        with NWCWallet(poor.uri, network="regtest", timeout=20) as wallet:
            with httpay.Client(wallet=wallet, policy=_policy(demo),
                               ledger=ledger_path) as c:
                with pytest.raises(httpay.InsufficientFunds, match="INSUFFICIENT_BALANCE"):
                    c.get(f"{demo.url}/ticker/MSFT", headers=account)
            assert wallet.balance_msat() == 1_000
    finally:
        poor.service.close()
    with SQLiteLedger(ledger_path) as lg:
        assert [x.status for x in lg.receipts()] == [Status.FAILED]


def test_the_cli_pays_with_httpay_wallet_nwc(demo: RunningServer, demo_nwc: NWCBackend, tmp_path: Path) -> None:
    """`HTTPAY_WALLET=nwc` and `NWC_URI` are all the CLI needs: the balance, then a paid `httpay get`."""
    env = {"HTTPAY_WALLET": "nwc", "NWC_URI": demo_nwc.uri, "NWC_NETWORK": "regtest",
           "HTTPAY_LEDGER": str(tmp_path / "cli.sqlite3")}
    balance = httpay_cmd("wallet", "balance", "--json", env=env)
    assert balance.returncode == 0, balance.stderr
    assert json.loads(balance.stdout) == {"wallet": "nwc", "network": "regtest", "balance_msat": 1_000_000,
                                          "usd_per_btc": None}
    rate = httpx.get(f"{demo.url}/ln/node").json()["usd_per_btc"]
    paid = httpay_cmd("get", f"{demo.url}/mpp/ticker/MSFT", "--json", "--usd-per-btc", str(rate), env=env)
    assert paid.returncode == 0, paid.stdout + paid.stderr
    result = json.loads(paid.stdout)
    assert result["paid"] is True and result["receipt"]["proof_verified"] is True
    assert demo_nwc.service.requests.count("pay_invoice") == 1
    assert demo_nwc.network.balance_msat(demo_nwc.service.wallet_key) < 1_000_000
    for p in (balance, paid):
        assert demo_nwc.service.client_secret not in p.stdout + p.stderr


def test_the_cli_with_a_broken_nwc_uri_says_which_part_and_never_the_secret(tmp_path: Path) -> None:
    secret = "ab" * 32
    uri = f"nostr+walletconnect://{'cd' * 32}?secret={secret}"  # no relay
    p = httpay_cmd("wallet", "balance", env={"HTTPAY_WALLET": "nwc", "NWC_URI": uri})
    assert p.returncode == 1
    assert "NWC_URI: the NWC connection URI names no relay=" in p.stderr
    assert secret not in p.stdout + p.stderr and "Traceback" not in p.stderr


def test_an_answer_too_late_leaves_the_row_pending_and_reconcile_settles_it(
        demo: RunningServer, account: dict[str, str], ledger_path: Path, demo_nwc: NWCBackend) -> None:
    """The wallet service pays, but answers after the client gave up: the client does not guess (the row
    stays pending, counted in the budget, nothing paid twice); once the answer is in, reconcile finds the
    payment at the wallet with its proof and settles the row."""
    demo_nwc.service.delay_s = 1.5  # every answer, the lookup after the timeout too
    demo_nwc.service.answered.clear()
    with NWCWallet(demo_nwc.uri, network="regtest", timeout=0.3) as slow:
        with httpay.Client(wallet=slow, policy=_policy(demo), ledger=ledger_path) as c:
            with pytest.raises(httpay.PaymentOutcomeUnknown) as exc:
                c.get(f"{demo.url}/ticker/MSFT", headers=account)
    assert exc.value.receipt is not None and exc.value.receipt.status is Status.PENDING
    assert demo_nwc.service.answered.wait(30)
    demo_nwc.service.delay_s = 0.0
    with SQLiteLedger(ledger_path) as lg:
        [row] = lg.receipts()
        assert row.status is Status.PENDING
        with NWCWallet(demo_nwc.uri, network="regtest", timeout=20) as wallet:
            [outcome] = reconcile(lg, wallet, grace_s=0)
            assert wallet.balance_msat() == demo_nwc.funds_msat - 10_000  # paid exactly once
        [row] = lg.receipts()
    assert outcome.outcome == "settled", outcome
    assert row.status is Status.SETTLED and row.preimage
    assert row.wallet == "nwc" and row.wallet_id == NWCWallet(demo_nwc.uri).identity  # only this wallet reconciles it
    assert hashlib.sha256(bytes.fromhex(row.preimage)).hexdigest() == row.payment_hash
    assert demo_nwc.service.requests.count("pay_invoice") == 1
