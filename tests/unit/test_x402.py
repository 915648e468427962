"""x402 v1 (JSON body) and v2 (PAYMENT-REQUIRED header) read into offers people can compare."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from httpay.errors import ChallengeError
from httpay.protocols import x402
from httpay.protocols.l402_v02 import Offer

USDC_BASE_SEPOLIA = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"

V1: dict[str, Any] = {
    "x402Version": 1,
    "error": "X-PAYMENT header is required",
    "accepts": [{
        "scheme": "exact", "network": "base-sepolia", "maxAmountRequired": "10000",
        "resource": "https://api.example/weather", "description": "Current weather", "mimeType": "application/json",
        "payTo": PAY_TO, "maxTimeoutSeconds": 60, "asset": USDC_BASE_SEPOLIA,
        "extra": {"name": "USDC", "version": "2"},
    }],
}
V2: dict[str, Any] = {
    "x402Version": 2,
    "error": "Payment required",
    "resource": {"url": "https://api.example/weather", "description": "Current weather", "mimeType": "application/json"},
    "accepts": [
        {"scheme": "exact", "network": "eip155:84532", "amount": "10000", "asset": USDC_BASE_SEPOLIA, "payTo": PAY_TO,
         "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2"}},
        {"scheme": "exact", "network": "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1", "amount": "10000",
         "asset": "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU", "payTo": "CKPKJWNdJEqa81x7CkZ14BVPiY6y16Sxs7owznqtWYp5",
         "maxTimeoutSeconds": 300},
    ],
}


def b64(d: Any) -> str:
    return base64.b64encode(json.dumps(d).encode()).decode()


def test_v1_body_reads_with_the_sdk_field_names() -> None:
    ch = x402.parse(402, {"content-type": "application/json"}, json.dumps(V1))
    assert ch is not None and ch.version == 1
    [r] = ch.accepts
    assert (r.scheme, r.network, r.amount, r.asset, r.pay_to) == ("exact", "base-sepolia", 10000, USDC_BASE_SEPOLIA, PAY_TO)
    assert (r.max_timeout_seconds, r.resource, r.description, r.mime_type) == (
        60, "https://api.example/weather", "Current weather", "application/json")
    assert ch.error == "X-PAYMENT header is required"
    assert ch.resource == "https://api.example/weather"


def test_v2_header_reads_and_wins_over_the_body() -> None:
    headers = httpx.Headers({"PAYMENT-REQUIRED": b64(V2), "content-type": "application/json"})
    ch = x402.parse(402, headers, json.dumps(V1))
    assert ch is not None and ch.version == 2
    assert [r.network for r in ch.accepts] == ["eip155:84532", "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"]
    assert ch.resource == "https://api.example/weather" and ch.description == "Current weather"
    assert "x402 v2 payment required for https://api.example/weather" in str(ch)


def test_offers_show_the_price_like_every_other_protocol() -> None:
    ch = x402.parse(402, {"PAYMENT-REQUIRED": b64(V2)}, None)
    assert ch is not None
    usdc, sol = ch.to_offers()
    assert isinstance(usdc, Offer)
    assert (usdc.amount, usdc.currency, usdc.payment_methods) == (10000, "USDC", ("x402:exact:eip155:84532",))
    assert sol.currency == "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU", "no name given: the asset address"
    assert usdc.title == "Current weather"
    assert usdc.extra["requirement"]["payTo"] == PAY_TO
    assert "0.01 USDC" in str(usdc)


def test_offer_ids_are_stable_and_distinct() -> None:
    a = x402.parse(402, {"PAYMENT-REQUIRED": b64(V2)}, None)
    moved = json.loads(json.dumps(V2))
    moved["accepts"][0]["amount"] = "20000"  # the price changed; the way to pay did not
    moved["accepts"][0]["payTo"] = PAY_TO.lower()
    b = x402.parse(402, {"PAYMENT-REQUIRED": b64(moved)}, None)
    assert a is not None and b is not None
    assert [o.offer_id for o in a.to_offers()] == [o.offer_id for o in b.to_offers()]
    assert len({o.offer_id for o in a.to_offers()}) == 2
    twice = dict(V2, accepts=[V2["accepts"][0], V2["accepts"][0]])
    c = x402.parse(402, {"PAYMENT-REQUIRED": b64(twice)}, None)
    assert c is not None and len({o.offer_id for o in c.to_offers()}) == 2


def test_unpadded_and_urlsafe_header_is_read() -> None:
    raw = base64.urlsafe_b64encode(json.dumps(V2).encode()).decode().rstrip("=")
    assert x402.parse(402, {"payment-required": raw}, None) is not None


@pytest.mark.parametrize("status, headers, body", [
    (200, {"PAYMENT-REQUIRED": b64(V2)}, None),
    (402, {}, None),
    (402, {}, b""),
    (402, {"content-type": "text/html"}, b"<html>402</html>"),
    (402, {"content-type": "application/json"}, b'{"offers": [], "payment_request_url": "x"}'),
    (402, {}, b"[1, 2, 3]"),
    (402, {}, b"{not json"),
])
def test_not_x402_is_none(status: int, headers: dict[str, str], body: bytes | None) -> None:
    assert x402.parse(status, headers, body) is None


@pytest.mark.parametrize("headers, body, field", [
    ({"PAYMENT-REQUIRED": "%%%not base64%%%"}, None, "PAYMENT-REQUIRED"),
    ({"PAYMENT-REQUIRED": b64([1, 2])}, None, None),
    ({"PAYMENT-REQUIRED": b64({"x402Version": 3, "accepts": []})}, None, "x402Version"),
    ({}, json.dumps({"x402Version": 1}), "accepts"),
    ({}, json.dumps({"x402Version": 1, "accepts": [{"scheme": "exact"}]}), "network"),
    ({}, json.dumps(dict(V1, accepts=[dict(V1["accepts"][0], maxAmountRequired="1.5")])), "maxAmountRequired"),
    ({}, json.dumps(dict(V1, accepts=[dict(V1["accepts"][0], maxAmountRequired="-1")])), "maxAmountRequired"),
    ({}, json.dumps(dict(V1, accepts=[dict(V1["accepts"][0], maxAmountRequired="9" * 90)])), "maxAmountRequired"),
    ({}, json.dumps(dict(V1, accepts=[dict(V1["accepts"][0], maxAmountRequired=True)])), "maxAmountRequired"),
    ({}, json.dumps(dict(V1, accepts=[dict(V1["accepts"][0], payTo=7)])), "payTo"),
    ({}, json.dumps(dict(V1, accepts=[dict(V1["accepts"][0], extra=[1])])), "extra"),
])
def test_garbage_is_a_typed_error_naming_the_field(headers: dict[str, str], body: str | None, field: str | None) -> None:
    with pytest.raises(ChallengeError) as err:
        x402.parse(402, headers, body)
    assert err.value.field == field


def test_payment_header_names_by_version() -> None:
    payload = {"payload": {"signature": "0xabc"}, "accepted": V2["accepts"][0]}
    name, value = x402.encode_payment_header(payload, 2)
    assert name == "PAYMENT-SIGNATURE"
    assert json.loads(base64.b64decode(value)) == dict(payload, x402Version=2)
    name1, value1 = x402.encode_payment_header({"x402Version": 1, "scheme": "exact", "payload": {}}, 1)
    assert name1 == "X-PAYMENT" and json.loads(base64.b64decode(value1))["x402Version"] == 1
    with pytest.raises(ChallengeError):
        x402.encode_payment_header(payload, 3)


def test_receipt_header_v2_then_v1() -> None:
    settled = {"success": True, "transaction": "0xdead", "network": "eip155:84532", "payer": "0xabc", "amount": "10000"}
    r = x402.decode_payment_response(httpx.Headers({"PAYMENT-RESPONSE": b64(settled)}))
    assert r is not None and (r.success, r.transaction, r.amount, r.version) == (True, "0xdead", 10000, 2)
    failed = {"success": False, "errorReason": "insufficient_funds", "transaction": "", "network": "base"}
    r1 = x402.decode_payment_response({"X-PAYMENT-RESPONSE": b64(failed)})
    assert r1 is not None and r1.version == 1 and not r1.success and "insufficient_funds" in str(r1)
    assert x402.decode_payment_response({"content-type": "text/plain"}) is None
    with pytest.raises(ChallengeError):
        x402.decode_payment_response({"PAYMENT-RESPONSE": b64({"transaction": "0x"})})


amounts = st.integers(0, 2**256 - 1).map(str)
texts = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
requirement_v2 = st.fixed_dictionaries(
    {"scheme": texts, "network": texts, "amount": amounts, "asset": texts, "payTo": texts,
     "maxTimeoutSeconds": st.integers(1, 10**6)},
    optional={"extra": st.dictionaries(texts, texts, max_size=3)},
)


@given(st.lists(requirement_v2, min_size=1, max_size=4), st.one_of(st.none(), texts))
@settings(max_examples=200)
def test_requirements_to_header_and_back(accepts: list[dict[str, Any]], error: str | None) -> None:
    ch = x402.parse(402, {"PAYMENT-REQUIRED": b64({"x402Version": 2, "accepts": accepts, "error": error})}, None)
    assert ch is not None and ch.error == error
    assert [(r.scheme, r.network, str(r.amount), r.asset, r.pay_to) for r in ch.accepts] == [
        (a["scheme"], a["network"], a["amount"], a["asset"], a["payTo"]) for a in accepts]
    assert len({o.offer_id for o in ch.to_offers()}) == len(accepts)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4), max_leaves=20,
)


@given(st.one_of(json_values, st.fixed_dictionaries({"x402Version": st.sampled_from([1, 2, "1", None]),
                                                      "accepts": st.lists(json_values, max_size=3)})))
@settings(max_examples=400)
def test_any_json_gives_a_challenge_none_or_a_typed_error(doc: Any) -> None:
    for headers, body in (({"PAYMENT-REQUIRED": b64(doc)}, None), ({}, json.dumps(doc))):
        try:
            out = x402.parse(402, headers, body)
        except ChallengeError:
            continue
        assert out is None or isinstance(out, x402.X402Challenge)
        if out is not None:
            assert all(isinstance(o, Offer) for o in out.to_offers())


@given(st.binary(max_size=300), st.text(max_size=200))
@settings(max_examples=300)
def test_any_bytes_give_a_challenge_none_or_a_typed_error(body: bytes, header: str) -> None:
    for headers in ({}, {"PAYMENT-REQUIRED": header}, {"X-PAYMENT-RESPONSE": header}):
        try:
            out = x402.parse(402, headers, body)
            x402.decode_payment_response(headers)
        except ChallengeError:
            continue
        assert out is None or isinstance(out, x402.X402Challenge)
