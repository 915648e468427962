"""LNbitsWallet against a real LNbits (FakeWallet funding source): pay, prove, refuse to pay twice.

Payer and payee are wallets on the same LNbits because FakeWallet only settles invoices it issued.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator

import bolt11
import httpx
import pytest

from httpay.errors import AlreadyPaid, InsufficientFunds, PaymentTimeout, WalletError
from httpay.wallets.base import PaymentStatus
from httpay.wallets.lnbits import LNbitsWallet
from tests.fixtures.lnbits import LNbitsServer

FUNDS_SAT = 1_000


@pytest.fixture
def payer_keys(lnbits: LNbitsServer) -> dict[str, str]:
    return lnbits.new_wallet("payer", balance_sat=FUNDS_SAT)


@pytest.fixture
def payee_keys(lnbits: LNbitsServer) -> dict[str, str]:
    return lnbits.new_wallet("payee")


@pytest.fixture
def payer(lnbits: LNbitsServer, payer_keys: dict[str, str]) -> Iterator[LNbitsWallet]:
    with LNbitsWallet(lnbits.url, payer_keys["adminkey"], network="bitcoin") as w:
        yield w  # type: ignore[misc]


@pytest.fixture
def payee(lnbits: LNbitsServer, payee_keys: dict[str, str]) -> Iterator[LNbitsWallet]:
    with LNbitsWallet(lnbits.url, payee_keys["adminkey"], invoice_key=payee_keys["inkey"]) as w:
        yield w  # type: ignore[misc]


def test_pay_settles_with_proof_and_moves_balances(payer: LNbitsWallet, payee: LNbitsWallet) -> None:
    invoice = payee.create_invoice(100, "httpay test")
    assert invoice.startswith("lnbc")

    payment = payer.pay_invoice(invoice)

    assert payment.status is PaymentStatus.SETTLED
    assert payment.settled
    assert payment.proves(payment.payment_hash)
    assert payment.amount_msat == 100_000
    assert payment.fee_msat == 0
    assert payer.balance_msat() == FUNDS_SAT * 1000 - 100_000
    assert payee.balance_msat() == 100_000


def test_paying_twice_never_pays_twice(payer: LNbitsWallet, payee: LNbitsWallet) -> None:
    invoice = payee.create_invoice(50, "twice")
    payer.pay_invoice(invoice)

    with pytest.raises(AlreadyPaid) as exc:
        payer.pay_invoice(invoice)

    assert "already paid" in str(exc.value).lower()
    assert exc.value.outcome_known
    assert payer.balance_msat() == FUNDS_SAT * 1000 - 50_000
    assert payee.balance_msat() == 50_000


def test_insufficient_funds(payer: LNbitsWallet, payee: LNbitsWallet) -> None:
    invoice = payee.create_invoice(FUNDS_SAT + 1, "too much")

    with pytest.raises(InsufficientFunds) as exc:
        payer.pay_invoice(invoice)

    assert "insufficient balance" in str(exc.value).lower()
    assert exc.value.outcome_known
    assert payer.balance_msat() == FUNDS_SAT * 1000
    assert payee.balance_msat() == 0


def test_lookup_paid_and_unknown(payer: LNbitsWallet, payee: LNbitsWallet) -> None:
    paid = payer.pay_invoice(payee.create_invoice(21, "lookup"))

    found = payer.lookup(paid.payment_hash)

    assert found is not None
    assert found.status is PaymentStatus.SETTLED
    assert found.proves(paid.payment_hash)
    assert found.amount_msat == 21_000
    assert payer.lookup(os.urandom(32).hex()) is None


def test_lookup_ignores_invoices_that_are_not_this_wallets_payments(payer: LNbitsWallet, payee: LNbitsWallet) -> None:
    invoice = payee.create_invoice(7, "not paid")
    paid_hash = payer.pay_invoice(payee.create_invoice(8, "paid")).payment_hash

    # An unpaid invoice of another wallet: the payer never paid it.
    assert payer.lookup(bolt11.decode(invoice).payment_hash) is None
    # The payee's view of a hash it received is an incoming invoice, not a payment it made.
    assert payee.lookup(paid_hash) is None


def test_garbage_invoice_is_a_clear_wallet_error(payer: LNbitsWallet) -> None:
    with pytest.raises(WalletError) as exc:
        payer.pay_invoice("lnbcgarbage")

    assert type(exc.value) is WalletError
    assert "Bolt11 decoding failed" in str(exc.value)
    assert exc.value.outcome_known


def test_wrong_key_is_a_wallet_error_without_the_key(lnbits: LNbitsServer, payee: LNbitsWallet) -> None:
    bad_key = "f" * 32
    wallet = LNbitsWallet(lnbits.url, bad_key)
    try:
        with pytest.raises(WalletError) as exc:
            wallet.pay_invoice(payee.create_invoice(1, "x"))
        assert "api key" in str(exc.value).lower()
        assert bad_key not in str(exc.value)
        with pytest.raises(WalletError):
            wallet.balance_msat()
    finally:
        wallet.close()


def test_invoice_key_cannot_pay(lnbits: LNbitsServer, payer_keys: dict[str, str], payee: LNbitsWallet) -> None:
    with LNbitsWallet(lnbits.url, payer_keys["inkey"]) as wallet, pytest.raises(WalletError) as exc:
        wallet.pay_invoice(payee.create_invoice(1, "x"))
    assert "key" in str(exc.value).lower()
    assert payer_keys["inkey"] not in str(exc.value)


def test_keys_never_leak(
    lnbits: LNbitsServer,
    payer_keys: dict[str, str],
    payee: LNbitsWallet,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = payer_keys["adminkey"]
    inkey = payer_keys["inkey"]
    wallet = LNbitsWallet(lnbits.url, admin, invoice_key=inkey)
    errors: list[BaseException] = []
    try:
        assert admin not in repr(wallet) and admin not in str(wallet)
        assert inkey not in repr(wallet)
        invoice = payee.create_invoice(10, "leak check")
        payment = wallet.pay_invoice(invoice)
        wallet.lookup(payment.payment_hash)
        wallet.lookup(os.urandom(32).hex())
        wallet.balance_msat()
        wallet.create_invoice(3, "self")
        for bad in (invoice, "lnbcgarbage", payee.create_invoice(10 * FUNDS_SAT, "too much")):
            try:
                wallet.pay_invoice(bad)
            except WalletError as exc:
                errors.append(exc)
    finally:
        wallet.close()

    assert len(errors) == 3
    assert any(r.name == "httpay.wallet.lnbits" for r in caplog.records)
    for text in [caplog.text, *map(str, errors), *map(repr, errors)]:
        assert admin not in text
        assert inkey not in text


def _silent_listener() -> socket.socket:
    """A socket that accepts connections (via the backlog) but never answers."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


def test_timeout_maps_to_payment_timeout(payee: LNbitsWallet) -> None:
    invoice = payee.create_invoice(1, "timeout")
    with _silent_listener() as s:
        port = s.getsockname()[1]
        with LNbitsWallet(f"http://127.0.0.1:{port}", "a" * 32, timeout=0.5) as wallet:
            with pytest.raises(PaymentTimeout) as exc:
                wallet.pay_invoice(invoice)
    assert not exc.value.outcome_known
    assert "a" * 32 not in str(exc.value)


def test_unreachable_server_is_a_wallet_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with LNbitsWallet(f"http://127.0.0.1:{port}", "b" * 32, timeout=2) as wallet, pytest.raises(WalletError) as exc:
        wallet.balance_msat()
    assert "cannot reach" in str(exc.value)
    assert exc.value.outcome_known


# --- States FakeWallet never produces (pending, lying preimage, server errors): scripted answers ---

_HASH = "ab" * 32


def _scripted(handler: Callable[[httpx.Request], httpx.Response]) -> LNbitsWallet:
    wallet = LNbitsWallet("http://lnbits.invalid", "c" * 32)
    wallet._client = httpx.Client(base_url=wallet.url, transport=httpx.MockTransport(handler))
    return wallet


def _payment_body(status: str, preimage: str | None) -> dict[str, object]:
    return {"payment_hash": _HASH, "checking_id": _HASH, "amount": -5000, "fee": -1000,
            "status": status, "preimage": preimage}


def test_pending_payment_is_returned_as_pending() -> None:
    wallet = _scripted(lambda r: httpx.Response(201, json=_payment_body("pending", "00" * 32)))
    payment = wallet.pay_invoice("lnbc1whatever")
    assert payment.status is PaymentStatus.PENDING
    assert payment.preimage is None
    assert payment.amount_msat == 5000 and payment.fee_msat == 1000


def test_settled_without_valid_proof_is_not_trusted() -> None:
    wallet = _scripted(lambda r: httpx.Response(201, json=_payment_body("success", "00" * 32)))
    with pytest.raises(WalletError) as exc:
        wallet.pay_invoice("lnbc1whatever")
    assert "does not prove" in str(exc.value)
    assert not exc.value.outcome_known


def test_still_pending_elsewhere_is_already_paid_with_unknown_outcome() -> None:
    wallet = _scripted(
        lambda r: httpx.Response(520, json={"detail": "Payment is still pending.", "status": "pending"})
    )
    with pytest.raises(AlreadyPaid) as exc:
        wallet.pay_invoice("lnbc1whatever")
    assert not exc.value.outcome_known


def test_server_error_while_paying_leaves_outcome_unknown() -> None:
    wallet = _scripted(lambda r: httpx.Response(500, text="Internal Server Error"))
    with pytest.raises(WalletError) as exc:
        wallet.pay_invoice("lnbc1whatever")
    assert type(exc.value) is WalletError
    assert not exc.value.outcome_known


def test_lookup_without_details_is_an_error_not_none() -> None:
    wallet = _scripted(lambda r: httpx.Response(200, json={"paid": True, "preimage": "00" * 32}))
    with pytest.raises(WalletError, match="key"):
        wallet.lookup(_HASH)


def test_lookup_maps_failed_and_pending() -> None:
    answers = {
        "failed": {"paid": False, "status": "failed", "details": _payment_body("failed", None)},
        "pending": {"paid": False, "status": "pending", "preimage": None, "details": _payment_body("pending", None)},
    }
    for state, expected in (("failed", PaymentStatus.FAILED), ("pending", PaymentStatus.PENDING)):
        wallet = _scripted(lambda r, body=answers[state]: httpx.Response(200, json=body))
        found = wallet.lookup(_HASH)
        assert found is not None and found.status is expected


def test_received_says_what_came_in_on_the_wallets_own_invoice(payer: LNbitsWallet, payee: LNbitsWallet) -> None:
    """How an MPP session's refund is confirmed before budgets give it back: the payee sees 0 before
    it is paid and the amount after; the payer's side of the same hash is no receipt."""
    bolt11 = payee.create_invoice(21, "refund")
    from httpay.lightning import decode_invoice

    payment_hash = decode_invoice(bolt11).payment_hash
    assert payee.received_msat(payment_hash) == 0
    payer.pay_invoice(bolt11)
    assert payee.received_msat(payment_hash) == 21_000
    assert payer.received_msat(payment_hash) is None
    assert payee.received_msat(os.urandom(32).hex()) is None
