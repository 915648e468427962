"""LightsparkWallet driving the real `lightspark` SDK against a fake Lightspark GraphQL API on loopback."""

from __future__ import annotations

import pytest

from httpay.errors import AlreadyPaid, InsufficientFunds, PaymentTimeout, WalletError
from httpay.wallets.base import PaymentStatus
from tests.wallets.conftest import FUNDS_MSAT, LightsparkBackend
from tests.wallets.fake_lightspark import Op


def test_pays_through_the_sdk_signing_each_request(lightspark_backend: LightsparkBackend) -> None:
    b = lightspark_backend
    inv = b.payee.mint(40_000)
    wallet = b.wallet()
    payment = wallet.pay_invoice(inv.bolt11)
    assert payment.status is PaymentStatus.SETTLED and payment.proves(inv.payment_hash)
    assert (payment.amount_msat, payment.fee_msat) == (40_000, 2_000)
    assert wallet.balance_msat() == FUNDS_MSAT - 42_000
    # PayInvoice answered PENDING; the wallet polled the payment until it settled.
    assert b.account.calls[:3] == ["RecoverNodeSigningKey", "PayInvoice", "GetEntity"]


def test_signing_key_is_recovered_once(lightspark_backend: LightsparkBackend) -> None:
    wallet = lightspark_backend.wallet()
    for amount in (1_000, 2_000):
        wallet.pay_invoice(lightspark_backend.payee.mint(amount).bolt11)
    assert lightspark_backend.account.calls.count("RecoverNodeSigningKey") == 1


def test_wrong_node_password_pays_nothing(lightspark_backend: LightsparkBackend) -> None:
    b = lightspark_backend
    b.node_password = "not-the-password"
    with pytest.raises(WalletError, match="node password") as exc:
        b.wallet().pay_invoice(b.payee.mint().bolt11)
    assert exc.value.outcome_known
    assert "not-the-password" not in str(exc.value)
    assert b.account.balance_msat == FUNDS_MSAT and "PayInvoice" not in b.account.calls


def test_wrong_api_secret_is_named_without_leaking(lightspark_backend: LightsparkBackend) -> None:
    b = lightspark_backend
    b.secret = "wrong-secret-0123456789"
    with pytest.raises(WalletError, match="API token") as exc:
        b.wallet().balance_msat()
    assert "wrong-secret-0123456789" not in str(exc.value)


def test_retrying_the_same_invoice_returns_the_same_payment(lightspark_backend: LightsparkBackend) -> None:
    b = lightspark_backend
    inv = b.payee.mint(10_000)
    wallet = b.wallet()
    first = wallet.pay_invoice(inv.bolt11)
    again = wallet.pay_invoice(inv.bolt11)  # same idempotency key: Lightspark returns the earlier payment
    assert again.settled and again.preimage == first.preimage
    assert b.account.balance_msat == FUNDS_MSAT - 12_000


def test_already_paid_by_this_node_outside_httpay_returns_that_payment(lightspark_backend: LightsparkBackend) -> None:
    b = lightspark_backend
    inv = b.payee.mint(7_000)
    sent = b.account.pay(inv)  # paid earlier from the Lightspark dashboard: no httpay idempotency key
    b.fake.ops["OutgoingPayment:dashboard"] = Op("OutgoingPayment:dashboard", inv, "SUCCESS", b.node_id, sent.fee_msat)
    payment = b.wallet().pay_invoice(inv.bolt11)
    assert payment.settled and payment.proves(inv.payment_hash)
    assert b.account.balance_msat == FUNDS_MSAT - 9_000


def test_already_paid_by_someone_else_is_already_paid(lightspark_backend: LightsparkBackend) -> None:
    b = lightspark_backend
    inv = b.payee.mint(7_000)
    inv.paid_by = "another node"
    with pytest.raises(AlreadyPaid) as exc:
        b.wallet().pay_invoice(inv.bolt11)
    assert "INVOICE_ALREADY_PAID" in str(exc.value) and exc.value.outcome_known
    assert b.account.balance_msat == FUNDS_MSAT


def test_fee_cap_is_passed_to_lightspark(lightspark_backend: LightsparkBackend) -> None:
    b = lightspark_backend
    with pytest.raises(WalletError, match="NO_ROUTE"):
        b.wallet().pay_invoice(b.payee.mint(5_000).bolt11, max_fee_msat=1_999)
    assert b.account.balance_msat == FUNDS_MSAT


def test_insufficient_balance_on_the_node(lightspark_backend: LightsparkBackend) -> None:
    b = lightspark_backend
    with pytest.raises(InsufficientFunds):
        b.wallet().pay_invoice(b.payee.mint(FUNDS_MSAT).bolt11)


def test_payment_pending_past_the_deadline_is_a_timeout_and_stays_visible(lightspark_backend: LightsparkBackend) -> None:
    b = lightspark_backend
    b.fake.reads_until_settled = 10_000
    inv = b.payee.mint(3_000)
    wallet = b.wallet(timeout=0.3, poll_interval=0.05)
    with pytest.raises(PaymentTimeout) as exc:
        wallet.pay_invoice(inv.bolt11)
    assert not exc.value.outcome_known
    found = wallet.lookup(inv.payment_hash)
    assert found is not None and found.status is PaymentStatus.PENDING and found.preimage is None


def test_undecodable_invoice_is_refused_before_calling_lightspark(lightspark_backend: LightsparkBackend) -> None:
    with pytest.raises(WalletError, match="BOLT11") as exc:
        lightspark_backend.wallet().pay_invoice("lnbcgarbage")
    assert exc.value.outcome_known
    assert lightspark_backend.account.calls == []


def test_missing_credentials_are_named() -> None:
    from httpay.wallets.lightspark import LightsparkWallet

    with pytest.raises(WalletError, match="client_secret, node_password"):
        LightsparkWallet("id", "", "node", "")
