"""FewsatsWallet against a fake Fewsats API on loopback: invoices, whole offers, review, errors."""

from __future__ import annotations

import httpx
import pytest

from httpay.errors import AlreadyPaid, InsufficientFunds, WalletError
from httpay.protocols.l402_v02 import PaymentOffers
from httpay.wallets.base import PaymentStatus
from httpay.wallets.fewsats import FewsatsWallet
from tests.helpers import challenge_body, make_invoice
from tests.wallets.conftest import FewsatsBackend
from tests.wallets.fakes import Payee


def test_pays_an_invoice_declaring_its_usd_price(fewsats_backend: FewsatsBackend) -> None:
    b = fewsats_backend
    inv = b.payee.mint(21_000)  # 21 sat at 100k USD/BTC = 2.1 cents -> declared as 3
    wallet = b.wallet()
    payment = wallet.pay_invoice(inv.bolt11)
    assert payment.status is PaymentStatus.SETTLED and payment.proves(inv.payment_hash)
    assert payment.amount_msat == 21_000
    kind, body = b.fake.requests[-1]
    assert kind == "lightning" and body["amount"] == 3 and body["currency"] == "usd" and body["invoice"] == inv.bolt11
    assert wallet.balance_usd_cents() == 997


def test_an_explicit_cent_price_wins(fewsats_backend: FewsatsBackend) -> None:
    b = fewsats_backend
    b.wallet(usd_per_btc=None).pay_invoice(b.payee.mint(10_000).bolt11, amount_usd_cents=5)
    assert b.fake.requests[-1][1]["amount"] == 5 and b.fake.balance_cents == 995


def test_without_a_rate_or_price_nothing_is_sent(fewsats_backend: FewsatsBackend) -> None:
    b = fewsats_backend
    with pytest.raises(WalletError, match="usd_per_btc"):
        b.wallet(usd_per_btc=None).pay_invoice(b.payee.mint().bolt11)
    assert b.fake.requests == []


def test_needs_review_is_pending_never_success(fewsats_backend: FewsatsBackend) -> None:
    b = fewsats_backend
    b.fake.review_over_cents = 2
    inv = b.payee.mint(50_000)
    wallet = b.wallet()
    payment = wallet.pay_invoice(inv.bolt11)
    assert payment.status is PaymentStatus.PENDING and not payment.settled and payment.preimage is None
    assert payment.failure_reason is not None
    assert payment.failure_reason.startswith("needs_review") and "Fewsats app" in payment.failure_reason
    assert b.fake.balance_cents == 1_000
    # A person approves it in the app; the wallet's lookup now sees it paid, with proof.
    b.fake.approve(max(b.fake.purchases))
    found = wallet.lookup(inv.payment_hash)
    assert found is not None and found.settled and found.proves(inv.payment_hash)


def test_success_without_a_preimage_is_not_trusted() -> None:
    inv = Payee().mint(10_000)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": 7, "status": "success", "payment_method": "lightning"})

    wallet = FewsatsWallet("k" * 40, usd_per_btc=1e5, client=httpx.Client(transport=httpx.MockTransport(handler)))
    payment = wallet.pay_invoice(inv.bolt11)
    assert payment.status is PaymentStatus.PENDING
    assert "no preimage" in (payment.failure_reason or "")


def test_already_paid_and_insufficient_balance_map_to_typed_errors(fewsats_backend: FewsatsBackend) -> None:
    b = fewsats_backend
    wallet = b.wallet()
    inv = b.payee.mint(10_000)
    wallet.pay_invoice(inv.bolt11)
    with pytest.raises(AlreadyPaid):
        wallet.pay_invoice(inv.bolt11)
    with pytest.raises(InsufficientFunds, match="Insufficient balance"):
        wallet.pay_invoice(b.payee.mint(200_000_000).bolt11)
    assert b.fake.balance_cents == 999


def test_bad_key_is_named_without_leaking(fewsats_backend: FewsatsBackend) -> None:
    b = fewsats_backend
    wallet = FewsatsWallet("wrong-key-0123456789", base_url=b.url, usd_per_btc=1e5)
    with pytest.raises(WalletError, match="API key") as exc:
        wallet.balance_usd_cents()
    assert "wrong-key-0123456789" not in str(exc.value)


def test_field_errors_are_reported(fewsats_backend: FewsatsBackend) -> None:
    b = fewsats_backend
    with pytest.raises(WalletError, match="Invalid lightning invoice") as exc:
        b.wallet().pay_invoice(make_invoice(1_000, network="bitcoin")[0])  # not the fake payee's invoice
    assert exc.value.outcome_known


def test_pays_a_whole_offer(fewsats_backend: FewsatsBackend) -> None:
    b = fewsats_backend
    offers = PaymentOffers.from_dict(challenge_body(base="https://stock.example", token="ctx-1"))
    offer = offers.offers[1]
    payment = b.wallet().pay_offer(offers, offer)
    assert payment.settled and payment.payment_hash.startswith("fewsats:")
    kind, body = b.fake.requests[-1]
    assert kind == "from-offer"
    assert body["offer_id"] == offer.offer_id and body["payment_context_token"] == "ctx-1"
    assert body["payment_request_url"] == "https://stock.example/l402/payment-request"
    assert {o["id"] for o in body["offers"]} == {o.offer_id for o in offers.offers}
    assert b.fake.balance_cents == 1_000 - offer.amount


def test_offer_under_review_is_pending(fewsats_backend: FewsatsBackend) -> None:
    b = fewsats_backend
    b.fake.review_over_cents = 50
    offers = PaymentOffers.from_dict(challenge_body())
    payment = b.wallet().pay_offer(offers, offers.offers[2])
    assert payment.status is PaymentStatus.PENDING and "needs_review" in (payment.failure_reason or "")
    assert b.fake.balance_cents == 1_000


def test_offer_that_was_not_offered_is_refused(fewsats_backend: FewsatsBackend) -> None:
    b = fewsats_backend
    offers = PaymentOffers.from_dict(challenge_body())
    other = PaymentOffers.from_dict(challenge_body(offers=[{**offers.offers[0].to_dict(), "offer_id": "elsewhere"}]))
    with pytest.raises(WalletError, match="not one of the offers"):
        b.wallet().pay_offer(offers, other.offers[0])
    assert b.fake.requests == []


def test_balance_msat_is_not_pretended(fewsats_backend: FewsatsBackend) -> None:
    with pytest.raises(NotImplementedError, match="balance_usd_cents"):
        fewsats_backend.wallet().balance_msat()
