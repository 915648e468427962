"""The L402 v0.2 reader: the notebook's challenge, every accepted variant, every malformed field."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from httpay import ChallengeError, Offer, PaymentOffers, PaymentRequest, PaymentRequestError, parse
from httpay.protocols.l402_v02 import payment_request_body
from tests.helpers import NOTEBOOK_OFFERS, challenge_body

JSON = {"content-type": "application/json"}


def test_notebook_challenge_reads_as_offers() -> None:
    ofs = parse(402, JSON, json.dumps(challenge_body()))
    assert ofs is not None
    assert ofs.version == "0.2.1"
    assert ofs.payment_context_token == "tok-123"
    assert [o.offer_id for o in ofs] == ["offer_c668e0c0", "offer_97bf23f7", "offer_a896b13c"]
    o = ofs.by_payment("lightning")[0]
    assert (o.amount, o.balance, o.currency, o.type) == (1, 1, "USD", "top-up")
    assert ofs.by_payment("lightning", reverse=True)[0].offer_id == "offer_a896b13c"
    assert [x.offer_id for x in ofs.by_payment("credit_card")] == ["offer_a896b13c"]
    assert ofs.supports("coinbase_commerce") and not ofs.supports("onchain")
    assert o.supports("lightning") and not o.supports("credit_card")


def test_str_is_readable_and_repr_hides_the_context_token() -> None:
    ofs = PaymentOffers.from_dict(challenge_body(token="secret-bearer-0123456789"))
    text = str(ofs)
    assert text.startswith("L402 Payment Offers (v0.2.1)")
    assert "offer_c668e0c0 '1 Credit Package' $0.01 for 1 credits via lightning" in text
    assert "secret-bearer-0123456789" not in repr(ofs)
    assert "secret-bearer-0123456789" not in text
    assert "$4.99" in str(ofs.by_payment("credit_card"))


def test_spec_variants_are_accepted() -> None:
    body = challenge_body(metadata={"resource_id": "MSFT", "client_note": "x"}, expiry="2030-01-01T00:00:00Z")
    body["offers"] = [
        {"id": "a", "title": "A", "description": "", "type": "subscription", "credits": 5, "amount": 100.0,
         "currency": "usd", "payment_methods": ["lightning", "onchain"], "duration": "1 month", "future": 1},
    ]
    del body["terms_url"]
    ofs = PaymentOffers.from_dict(body)
    o = ofs.offers[0]
    assert (o.offer_id, o.balance, o.amount, o.currency, o.duration) == ("a", 5, 100, "USD", "1 month")
    assert ofs.metadata == {"resource_id": "MSFT", "client_note": "x"}
    assert ofs.terms_url is None and ofs.expiry == "2030-01-01T00:00:00Z"
    assert o.extra == {"future": 1}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.pop("offers"), "offers"),
        (lambda b: b.__setitem__("offers", "nope"), "offers"),
        (lambda b: b.pop("payment_request_url"), "payment_request_url"),
        (lambda b: b["offers"][0].pop("offer_id"), "offer_id"),
        (lambda b: b["offers"][0].__setitem__("amount", 1.5), "amount"),
        (lambda b: b["offers"][0].__setitem__("amount", "1"), "amount"),
        (lambda b: b["offers"][0].__setitem__("amount", -3), "amount"),
        (lambda b: b["offers"][0].__setitem__("amount", True), "amount"),
        (lambda b: b["offers"][0].pop("currency"), "currency"),
        (lambda b: b["offers"][0].__setitem__("payment_methods", "lightning"), "payment_methods"),
        (lambda b: b["offers"][0].__setitem__("payment_methods", [1]), "payment_methods"),
        (lambda b: b.__setitem__("payment_context_token", 5), "payment_context_token"),
        (lambda b: b["offers"].append(dict(b["offers"][0])), "offers"),
    ],
)
def test_malformed_fields_are_named(mutate, field) -> None:  # type: ignore[no-untyped-def]
    body = json.loads(json.dumps(challenge_body()))
    mutate(body)
    with pytest.raises(ChallengeError) as err:
        parse(402, JSON, json.dumps(body))
    assert err.value.field == field
    assert field in str(err.value)


def test_non_challenges_are_not_claimed() -> None:
    assert parse(200, JSON, json.dumps(challenge_body())) is None
    assert parse(402, {"content-type": "text/plain"}, "pay me") is None
    assert parse(402, {}, b"\x00\x01") is None
    assert parse(402, JSON, json.dumps({"error": "no"})) is None
    with pytest.raises(ChallengeError, match="does not parse as JSON"):
        parse(402, JSON, "{not json")


def test_payment_request_body_echoes_the_context_token() -> None:
    ofs = PaymentOffers.from_dict(challenge_body())
    o = ofs.by_payment("lightning")[0]
    assert payment_request_body(ofs, o, "lightning") == {
        "offer_id": "offer_c668e0c0", "payment_method": "lightning", "payment_context_token": "tok-123"}
    with pytest.raises(ChallengeError, match="cannot be paid with 'credit_card'"):
        payment_request_body(ofs, o, "credit_card")


def test_payment_request_answers_by_method() -> None:
    ln = PaymentRequest.from_dict(
        {"version": "0.2.1", "offer_id": "o", "expires_at": "2024-12-19T11:58:46.097984+00:00",
         "payment_request": {"lightning_invoice": "lnbc1..."}}, payment_method="lightning", offer_id="o")
    assert ln.lightning_invoice == "lnbc1..." and ln.expires_at == datetime(2024, 12, 19, 11, 58, 46, 97984, UTC)
    cb = PaymentRequest.from_dict(
        {"offer_id": "o", "expires_at": "2024-12-19T11:58:45Z", "payment_request": {
            "checkout_url": "https://c/pay", "contract_addresses": {"1": "0xA", "137": "0xB"}}},
        payment_method="coinbase_commerce")
    assert cb.contract_addresses == {"1": "0xA", "137": "0xB"} and cb.checkout_url == "https://c/pay"
    oc = PaymentRequest.from_dict({"offer_id": "o", "payment_request": {"address": "bcrt1q", "asset": "BTC", "chain": "regtest"}},
                                  payment_method="onchain")
    assert (oc.address, oc.asset, oc.chain) == ("bcrt1q", "BTC", "regtest")
    cc = PaymentRequest.from_dict({"offer_id": "o", "payment_request": {"checkout_url": None}}, payment_method="credit_card")
    assert cc.checkout_url is None
    assert "checkout" in str(cc)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ([], "must be a JSON object"),
        ({"offer_id": "o"}, "'payment_request' is missing"),
        ({"offer_id": "x", "payment_request": {}}, "it is for offer 'x'"),
        ({"offer_id": "o", "payment_request": {}}, "needs 'payment_request.lightning_invoice'"),
        ({"offer_id": "o", "expires_at": "soon", "payment_request": {"lightning_invoice": "ln"}}, "not an ISO 8601"),
        ({"offer_id": "o", "payment_request": {"lightning_invoice": 5}}, "must be a string"),
    ],
)
def test_bad_payment_request_answers(body, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PaymentRequestError, match=match):
        PaymentRequest.from_dict(body, payment_method="lightning", offer_id="o")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
offer_keys = st.sampled_from(["offer_id", "id", "title", "description", "type", "balance", "credits", "amount",
                              "currency", "payment_methods", "duration"])


@settings(max_examples=150, deadline=None)  # the fuzz campaign (tools/fuzz.py) goes deeper
@given(st.dictionaries(st.sampled_from(["version", "payment_request_url", "payment_context_token", "offers",
                                        "terms_url", "metadata", "expiry"]),
                       json_values | st.lists(st.dictionaries(offer_keys, json_values), max_size=3)))
def test_any_json_gives_offers_none_or_a_challenge_error(body) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(ChallengeError):
        parse(402, JSON, json.dumps(body))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["application/json", "", "text/html", "application/problem+json"]))
def test_any_bytes_never_crash(raw, ctype) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(ChallengeError):
        parse(402, {"content-type": ctype}, raw)


offer_st = st.builds(
    Offer,
    offer_id=st.text(min_size=1, max_size=12), title=st.text(max_size=12), description=st.text(max_size=12),
    type=st.sampled_from(["top-up", "subscription", "one-time"]), balance=st.none() | st.integers(0, 10**6),
    amount=st.integers(0, 10**9), currency=st.sampled_from(["USD", "SAT", "EUR"]),
    payment_methods=st.lists(st.sampled_from(["lightning", "credit_card", "coinbase_commerce", "onchain"]),
                             min_size=1, max_size=4, unique=True).map(tuple),
    duration=st.none() | st.sampled_from(["1 month", "1 week"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(offer_st, min_size=1, max_size=6, unique_by=lambda o: o.offer_id), st.text(max_size=20))
def test_round_trip_and_by_payment_is_sorted(offers, token) -> None:  # type: ignore[no-untyped-def]
    ofs = PaymentOffers(version="0.2.2", payment_request_url="https://x/pr", offers=tuple(offers),
                        payment_context_token=token or None)
    data = ofs.to_dict()
    data["payment_context_token"] = token or None
    again = PaymentOffers.from_dict(json.loads(json.dumps(data)))
    assert again.offers == ofs.offers
    for method in ("lightning", "credit_card"):
        amounts = [o.amount for o in again.by_payment(method)]
        assert amounts == sorted(amounts)
        assert all(o.supports(method) for o in again.by_payment(method))
        assert len(again.by_payment(method)) == sum(o.supports(method) for o in offers)


def test_notebook_offers_fixture_matches_the_notebook() -> None:
    assert [(o["amount"], o["balance"]) for o in NOTEBOOK_OFFERS] == [(1, 1), (100, 120), (499, 750)]
