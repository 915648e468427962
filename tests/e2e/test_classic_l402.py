"""Classic L402 end to end through the demo service's Aperture-like route: pay the macaroon's
invoice once, present `L402 <macaroon>:<preimage>`, reuse the token until the server answers
402 again, then evict it (never a loop)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import httpay
from httpay.demo.runner import RunningServer
from httpay.ledger import SQLiteLedger, Status


def client(demo: RunningServer, ledger: Path, wallet: httpay.Wallet, **kw) -> httpay.Client:  # type: ignore[no-untyped-def]
    return httpay.Client(wallet=wallet, policy=httpay.Policy(budget_sat=1_000, max_per_payment_sat=100), ledger=ledger, **kw)


def test_pay_once_then_reuse_the_token(demo: RunningServer, ledger_path: Path) -> None:
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=1_000)
    kinds: list[str] = []
    with client(demo, ledger_path, wallet, on_event=lambda e: kinds.append(e.kind)) as c:
        r = c.get(f"{demo.url}/l402/ticker/MSFT")
        assert r.status_code == 200 and r.json()["symbol"] == "MSFT"
        rec = httpay.receipt_of(r)
        assert rec is not None and rec.protocol == "l402-classic" and rec.amount_msat == 10_000
        for sym in ("AAPL", "NVDA", "MSFT"):
            again = c.get(f"{demo.url}/l402/ticker/{sym}")
            assert again.status_code == 200 and httpay.receipt_of(again) is None  # no new payment
    assert kinds.count("paid") == 1 and "payment_request" not in kinds
    assert wallet.balance_msat() == 990_000
    assert demo.app.state.classic.issued == 1 and demo.app.state.classic.served == 4
    with SQLiteLedger(ledger_path) as lg:
        assert [x.status for x in lg.receipts()] == [Status.SETTLED]
        assert lg.token_scopes() == [demo.url + "#stock"]  # the host's "stock" service token


def test_another_routes_402_of_another_dialect_keeps_the_token(demo: RunningServer, ledger_path: Path) -> None:
    """The token's scope is the host: a route of the same host asking for x402 or MPP never judged
    the L402 token, so its 402 keeps it (it used to evict it, and the next L402 call paid again)."""
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=1_000)
    with client(demo, ledger_path, wallet) as c:
        assert httpay.receipt_of(c.get(f"{demo.url}/l402/ticker/META")) is not None
        with pytest.raises(httpay.PaymentRefused):
            c.get(f"{demo.url}/x402/ticker/AAPL")  # an x402 402 (no signer here): refused, nothing paid
        assert c.ledger.token_scopes() == [demo.url + "#stock"]
        again = c.get(f"{demo.url}/l402/ticker/AAPL")
        assert again.status_code == 200 and httpay.receipt_of(again) is None  # the same token, no new payment
    assert demo.app.state.classic.issued == 1 and wallet.balance_msat() == 990_000


def test_a_restart_reuses_the_stored_token(demo: RunningServer, ledger_path: Path) -> None:
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=1_000)
    with client(demo, ledger_path, wallet) as c:
        assert c.get(f"{demo.url}/l402/ticker/MSFT").status_code == 200
    with client(demo, ledger_path, wallet) as c:
        assert c.get(f"{demo.url}/l402/ticker/AAPL").status_code == 200
    assert demo.app.state.classic.issued == 1 and wallet.balance_msat() == 990_000


def test_a_stale_token_is_evicted_and_paid_for_once(demo: RunningServer, ledger_path: Path) -> None:
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=1_000)
    with client(demo, ledger_path, wallet) as c:
        assert c.get(f"{demo.url}/l402/ticker/MSFT").status_code == 200
        demo.app.state.classic.root_key = b"\x01" * 32  # the server forgets every token it issued
        r = c.get(f"{demo.url}/l402/ticker/MSFT")
        assert r.status_code == 200 and httpay.receipt_of(r) is not None
    assert demo.app.state.classic.issued == 2 and wallet.balance_msat() == 980_000


def test_lsat_only_servers_are_answered_with_lsat(demo: RunningServer, ledger_path: Path) -> None:
    """An older server that only speaks LSAT gets `LSAT <mac>:<preimage>` back."""
    from httpay.protocols import l402_classic

    r = httpx.get(f"{demo.url}/l402/ticker/MSFT")
    ch = l402_classic.parse(r.status_code, r.headers, r.content)
    assert ch is not None and ch.scheme == "L402"  # Aperture sends both: L402 is preferred
    lsat = l402_classic.parse(402, {"www-authenticate": r.headers.get_list("www-authenticate")[0]}, b"")
    assert lsat is not None and lsat.scheme == "LSAT" and lsat.credential("ab" * 32).startswith("LSAT ")


def test_price_above_the_limit_is_refused(demo: RunningServer, ledger_path: Path) -> None:
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=1_000)
    with httpay.Client(wallet=wallet, policy=httpay.Policy(max_per_payment_sat=5), ledger=ledger_path) as c, \
            pytest.raises(httpay.PaymentRefused) as err:
        c.get(f"{demo.url}/l402/ticker/MSFT")
    assert err.value.rule == "max_per_payment" and wallet.balance_msat() == 1_000_000


def test_x402_challenges_are_shown_and_refused_clearly(ledger_path: Path) -> None:
    body = {"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": [{
        "scheme": "exact", "network": "base-sepolia", "maxAmountRequired": "10000", "resource": "http://svc/x",
        "description": "weather", "mimeType": "application/json", "payTo": "0x" + "ab" * 20,
        "maxTimeoutSeconds": 60, "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "extra": {"name": "USDC", "version": "2"}}]}
    transport = httpx.MockTransport(lambda req: httpx.Response(402, json=body))
    from tests.helpers import FakeService, FakeWallet

    wallet = FakeWallet(FakeService())
    with httpay.Client(wallet=wallet, ledger=ledger_path, transport=transport) as c, \
            pytest.raises(httpay.PaymentRefused) as err:
        c.get("http://svc/x")
    assert err.value.rule == "no_signer" and "0.01 USDC" in str(err.value) and "base-sepolia" in str(err.value)
    assert [o.payment_methods for o in err.value.offers] == [("x402:exact:base-sepolia",)]
    assert wallet.calls == []
