"""x402 v2 (issue 12) from the specs' own examples, cross-checked with the PyPI `x402` 2.25 package:
payment-identifier (extensions/payment_identifier.md), upto on EVM (schemes/upto/scheme_upto_evm.md)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from httpay.core.dialect import Settlement
from httpay.core.flow import _metered
from httpay.core.quote import method_allowed
from httpay.dialects.x402 import (
    PERMIT2_ADDRESS,
    UPTO_SPENDER,
    X402,
    Valued,
    payment_id_for,
    payment_payload,
    permit2_authorization,
    permit2_typed_data,
    to_challenge,
)
from httpay.errors import PaymentRefused
from httpay.ledger.models import Receipt, Status
from httpay.protocols import x402
from httpay.signers import EvmSigner

KEY = "0x" + "4c" * 32
FACILITATOR = "0x857b06519E91e3A54538791bDbb0E22373e36b66"

# payment_identifier.md, "PaymentRequired": the server advertises support
PID_DECLARED = {
    "info": {"required": False},
    "schema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
               "properties": {"required": {"type": "boolean"}, "id": {"type": "string", "minLength": 16, "maxLength": 128}},
               "required": ["required"]},
}
# scheme_upto_evm.md, "Example PaymentRequired" (its facilitator address made a real one)
UPTO_REQUIRED = {
    "x402Version": 2, "error": "PAYMENT-SIGNATURE header is required",
    "resource": {"url": "https://api.example.com/llm/generate", "description": "LLM text generation endpoint",
                 "mimeType": "application/json"},
    "accepts": [{"scheme": "upto", "network": "eip155:84532", "amount": "5000000",
                 "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                 "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "maxTimeoutSeconds": 300,
                 "extra": {"name": "USDC", "version": "2", "facilitatorAddress": FACILITATOR}}],
}


def b64(data: Any) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def challenge(d: dict[str, Any]) -> x402.X402Challenge:
    found = x402.parse(402, {"PAYMENT-REQUIRED": b64(d)})
    assert found is not None
    return found


# -- payment-identifier ---------------------------------------------------------------------------
def test_the_echoed_extension_is_the_specs_payment_payload_and_their_validator_takes_it() -> None:
    from x402.extensions.payment_identifier import extract_payment_identifier, validate_payment_identifier
    from x402.schemas import PaymentPayload

    ch = challenge({**UPTO_REQUIRED, "extensions": {"payment-identifier": PID_DECLARED}})
    assert ch.payment_identifier() == x402.PaymentIdentifier(required=False)
    assert to_challenge(ch, "https://api.example.com/llm/generate").identified
    out = payment_payload(ch, ch.accepts[0], {"from": "0x1"}, b"\x01" * 65, "pay_7d5d747be160e280504c099d984bcfe0")
    ext = out["extensions"]["payment-identifier"]
    # "Client echoes the extension and appends an id" (the spec's PaymentPayload, exactly)
    assert ext == {**PID_DECLARED, "info": {"required": False, "id": "pay_7d5d747be160e280504c099d984bcfe0"}}
    assert validate_payment_identifier(ext).valid
    assert extract_payment_identifier(PaymentPayload.model_validate(out)) == "pay_7d5d747be160e280504c099d984bcfe0"


@pytest.mark.parametrize(("declared", "key", "outcome"), [
    ({"info": {"required": False}}, "pay_" + "a" * 32, "pay_" + "a" * 32),
    ({"info": {"required": True}}, "pay_" + "a" * 32, "pay_" + "a" * 32),
    # the caller's own key is not of the id's form: an id made from it, the same for every send of the key
    ({"info": {"required": False}}, "short", "pay_f9b0078b5df596d2ea19010c001bbd009e651de2"),
    ({"info": {"required": True}}, "short", "pay_f9b0078b5df596d2ea19010c001bbd009e651de2"),
    ({"info": {"required": True}}, None, "requires an x402 payment id"),
    ({"info": {"required": "yes"}}, "pay_" + "a" * 32, "cannot follow"),
    ({"info": "required"}, "pay_" + "a" * 32, "cannot follow"),
])
def test_the_id_sent_or_a_clear_refusal_before_signing(declared: Any, key: str | None, outcome: str | None) -> None:
    ch = challenge({**UPTO_REQUIRED, "extensions": {"payment-identifier": declared}})
    if outcome is None or outcome.startswith("pay_"):
        assert payment_id_for(ch, key, "api.example.com") == outcome
        return
    with pytest.raises(PaymentRefused, match=outcome) as caught:
        payment_id_for(ch, key, "api.example.com")
    assert caught.value.rule == "x402"


def test_no_declaration_no_id_and_no_identity() -> None:
    ch = challenge(UPTO_REQUIRED)
    assert ch.payment_identifier() is None and payment_id_for(ch, "pay_" + "a" * 32, "h") is None
    assert not to_challenge(ch, "https://api.example.com/").identified
    with pytest.raises(x402.ChallengeError):
        x402.with_payment_id({}, "has spaces in it, not an id")


def test_a_409_is_a_conflict_the_flow_raises_typed() -> None:
    sent = httpx.Request("POST", "https://api.example.com/x", headers={"PAYMENT-SIGNATURE": b64(
        {"x402Version": 2, "accepted": {}, "extensions": {"payment-identifier": {"info": {"id": "pay_" + "b" * 32}}}})})
    proof = X402().settlement(httpx.Response(409, request=sent))
    assert proof is not None and proof.success is False and proof.error is not None
    receipt = Receipt(7, Status.FAILED, *[None] * 2, "api.example.com", "u", "x402", "m", *[None] * 6, 10_000)  # type: ignore[arg-type]
    exc = proof.error(receipt, None)
    assert type(exc).__name__ == "PaymentIdConflict" and "pay_" + "b" * 32 in str(exc) and "ledger #7" in str(exc)


# -- upto -----------------------------------------------------------------------------------------
def test_upto_is_priced_at_its_ceiling_and_named_by_the_method_scheme() -> None:
    ch = to_challenge(challenge(UPTO_REQUIRED), "https://api.example.com/llm/generate")
    (offer,) = ch.offers
    assert offer.unpayable is None and str(offer.price) == "5 USDC" and offer.price.in_usd() == 5
    assert offer.pay_method == "x402:upto:eip155:84532"
    assert method_allowed(["x402"], offer.pay_method) and method_allowed(["x402:upto"], offer.pay_method)
    assert not method_allowed(["x402:exact"], offer.pay_method)
    no_facilitator = {**UPTO_REQUIRED, "accepts": [{**UPTO_REQUIRED["accepts"][0], "extra": {"name": "USDC"}}]}
    assert "facilitatorAddress" in (to_challenge(challenge(no_facilitator), "u").offers[0].unpayable or "")


def test_the_permit_is_the_one_their_client_builds_and_their_verifier_recovers() -> None:
    from x402.mechanisms.evm.types import UptoPermit2Payload
    from x402.mechanisms.evm.upto.client import _build_upto_permit2_typed_data
    from x402.mechanisms.evm.verify import _hash_typed_data, verify_eoa_signature

    ch = challenge(UPTO_REQUIRED)
    valued = to_challenge(ch, "u").offers[0].payload
    assert isinstance(valued, Valued)
    signer = EvmSigner.from_key(KEY)
    auth = permit2_authorization(valued, signer.address, nonce=2**255 + 7, now=1_800_000_000)
    assert auth["spender"] == UPTO_SPENDER and auth["permitted"]["amount"] == "5000000"
    assert auth["witness"] == {"to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "facilitator": FACILITATOR,
                               "validAfter": "0"}
    assert auth["deadline"] == str(1_800_000_000 + 300)
    domain, types, primary, message = permit2_typed_data(valued, auth)
    assert domain == {"name": "Permit2", "chainId": 84532, "verifyingContract": PERMIT2_ADDRESS}
    signature = signer.sign_typed_data(domain, types, primary, message)
    payload = payment_payload(ch, ch.accepts[0], auth, signature)
    theirs = UptoPermit2Payload.from_dict(payload["payload"])  # their reader takes our payload
    t_domain, t_types, t_primary, t_message = _build_upto_permit2_typed_data(theirs.permit2_authorization, 84532)
    digest = _hash_typed_data(t_domain, t_types, t_primary, t_message)
    assert verify_eoa_signature(digest, signature, signer.address)


def test_only_upto_reports_settling_less_and_it_is_noted_never_taken_off_the_budget() -> None:
    def answer(scheme: str, amount: str) -> Settlement | None:
        sent = httpx.Request("GET", "https://h/", headers={"PAYMENT-SIGNATURE": b64(
            {"x402Version": 2, "accepted": {"scheme": scheme}})})
        return X402().settlement(httpx.Response(200, request=sent, headers={"PAYMENT-RESPONSE": b64(
            {"success": True, "transaction": "0x1", "network": "eip155:84532", "amount": amount})}))
    upto, exact = answer("upto", "1858"), answer("exact", "1")
    assert upto is not None and upto.amount == 1858
    assert exact is not None and exact.amount is None  # an exact payment is its full amount, whatever is said
    row = Receipt(1, Status.PENDING, *[None] * 2, "h", "u", "x402", "x402:upto:eip155:84532", None, None,  # type: ignore[arg-type]
                  20_000, "USDC", None, None, 20_000)
    note = _metered(row, upto)  # a note only: the row keeps the ceiling the signature lets the service take
    assert "settled 1858 of the 20000 signed for" in note and "the 20000 stays counted" in note
    over = _metered(row, Settlement(True, amount=30_000))
    assert "service defect" in over and "above the 20000" in over
    assert "settled 0 of the 20000" in _metered(row, Settlement(True, amount=0))
    assert _metered(row, Settlement(True, amount=20_000)) == "; the service reports it settled 20000 of the 20000 signed for"
    assert _metered(row, Settlement(True)) == ""


# -- sign-in-with-x -------------------------------------------------------------------------------
SIWX_INFO = {"domain": "api.example.com", "uri": "https://api.example.com/premium", "version": "1",
             "nonce": "a1b2c3d4e5f67890", "issuedAt": "2026-12-01T12:00:00Z",
             "expirationTime": "2099-01-01T00:00:00Z", "resources": ["https://api.example.com/premium"]}
CHAINS = [{"chainId": "eip155:8453", "type": "eip191"}]


@pytest.mark.parametrize("statement", [None, "Sign in to the premium API"])
def test_the_siwe_message_is_the_one_a_siwe_verifier_rebuilds_and_the_signature_recovers(statement: str | None) -> None:
    from eth_account import Account
    from eth_account.messages import encode_defunct
    from siwe import SiweMessage

    info = {**SIWX_INFO, **({"statement": statement} if statement else {})}
    offer = challenge({**UPTO_REQUIRED, "extensions": {"sign-in-with-x": {"info": info, "supportedChains": CHAINS}}}
                      ).sign_in()
    assert offer is not None and offer.evm_chain() == "eip155:8453"
    assert offer.problem("https://api.example.com/premium", 1_800_000_000) is None
    signer = EvmSigner.from_key(KEY)
    text = offer.message(signer.address, "eip155:8453")
    header = json.loads(base64.b64decode(offer.header(signer.address, "eip155:8453", signer.sign_message(text))))
    theirs = SiweMessage(domain=header["domain"], address=header["address"], uri=header["uri"],
                         version=header["version"], chain_id=8453, nonce=header["nonce"], issued_at=header["issuedAt"],
                         expiration_time=header["expirationTime"], statement=header.get("statement"),
                         resources=header["resources"]).prepare_message()
    assert theirs == text
    assert Account.recover_message(encode_defunct(text=theirs), signature=header["signature"]) == signer.address
    assert (header["chainId"], header["type"]) == ("eip155:8453", "eip191")


@pytest.mark.parametrize(("over", "url", "why"), [
    ({}, "https://evil.example/premium", "never signs in for another domain"),
    ({"domain": "api.example.com.evil.example"}, "https://api.example.com/premium", "another domain"),
    ({"uri": "https://evil.example/premium"}, "https://api.example.com/premium", "is not on https://api.example.com"),
    ({"resources": ["https://bank.example/all"]}, "https://api.example.com/premium", "is not on"),
    ({"statement": "ok\nURI: https://bank.example/"}, "https://api.example.com/premium", "not one line"),
    ({"nonce": "short"}, "https://api.example.com/premium", "nonce"),
    ({"expirationTime": "2020-01-01T00:00:00Z"}, "https://api.example.com/premium", "expired"),
    ({"domain": None}, "https://api.example.com/premium", "lacks domain"),
])
def test_what_is_never_signed(over: dict[str, Any], url: str, why: str) -> None:
    info = {k: v for k, v in {**SIWX_INFO, **over}.items() if v is not None}
    offer = x402.SignIn(info, tuple(CHAINS))
    assert why in (offer.problem(url, 1_800_000_000) or "")
    assert "EIP-191" in (x402.SignIn(SIWX_INFO, ({"chainId": "solana:x", "type": "ed25519"},)).problem(
        "https://api.example.com/premium", 0) or "")


def test_signing_in_is_off_unless_the_policy_says_so() -> None:
    import httpay
    from httpay.errors import ConfigError

    assert httpay.Policy().sign_in is False and httpay.Policy(sign_in=True).sign_in is True
    with pytest.raises(ConfigError, match=r"Policy\(sign_in=...\) must be True or False"):
        httpay.Policy(sign_in="yes")  # type: ignore[arg-type]


# -- Lightning exact (lnbtc): a proposal, read for display, paid only when opted in ------------------
LNBTC_REQUIREMENT = {  # scheme_exact_lnbtc.md, the PaymentRequirements test vector
    "scheme": "exact", "network": "lnbtc:000000000019d6689c085ae165831e93", "amount": "25000", "asset": "BTC",
    "payTo": "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798", "maxTimeoutSeconds": 300,
    "extra": {"assetTransferMethod": "bolt11", "paymentFlow": "upfront",
              "requestHash": "0d6623f775e025501fa7f0a30b54da25aad62b6ccfe35c85da38016711e6c018",
              "requestBindingProfile": "http:1", "requestBindingParams": {"headers": []},
              "invoice": "lnbc250n1pj48ugqpp54y3u9s8ylemsv8l3ewyzzu0klhujvuvmkl6llchq23vy8rzjsf0qsp5zyg3zyg3zyg3zyg3zyg3zyg"
                         "3zyg3zyg3zyg3zyg3zyg3zyg3zygshp5p4nz8am4uqj4q8a87z3sk4x6yk4dv2mvel34epw68qqkwy0xcqvqxqzfvcqpj"
                         "r4rx6ls6j5rpwknuea64evlk7yfx56wmqcer5eerekdsn9tlv6v4ex9mlz5dtm9qapl3svwlqcf7837dmjkru9z9w4h2rvm"
                         "0md52w2sqxrwu5f"}}


def test_the_request_hash_is_the_drafts_test_vector() -> None:
    a = x402.lnbtc_request_hash("GET", "https://api.example.com/article/A", b"", [], {})
    b = x402.lnbtc_request_hash("GET", "https://api.example.com/article/B", b"", [], {})
    assert (a, b) == ("0d6623f775e025501fa7f0a30b54da25aad62b6ccfe35c85da38016711e6c018",
                      "4a99860f75eed1ea8178a5db488e044173bc570c8a6210f2c8590cdf8622d509")
    assert x402.lnbtc_request_hash("POST", "https://api.example.com/article/A", b"", [], {}) != a
    assert x402.lnbtc_request_hash("GET", "https://api.example.com/article/A", b"x", [], {}) != a


def test_lightning_exact_is_shown_in_msat_and_refused_unless_opted_in() -> None:
    from httpay.core.payer import Payer
    from httpay.dialects.x402 import LightningExact, invoice_for
    from httpay.errors import InvoiceError
    from httpay.ledger import open_ledger
    from httpay.policy import Policy

    ch = to_challenge(challenge({"x402Version": 2, "accepts": [LNBTC_REQUIREMENT]}), "https://api.example.com/article/A")
    (offer,) = ch.offers
    assert (offer.price.amount, offer.price.currency, offer.rail, offer.proposal) == (25_000, "MSAT", "lightning",
                                                                                      "x402-lnbtc")
    assert offer.unpayable is None and offer.network == "lnbtc:000000000019d6689c085ae165831e93"
    assert offer.to_dict()["proposal"] == "x402-lnbtc"
    with open_ledger(":memory:") as lg:
        wallet = type("W", (), {"network": "bitcoin"})()
        plain = Payer(wallet=wallet, policy=Policy(), ledger=lg)  # type: ignore[arg-type]
        rule, why = plain.cannot_pay(offer) or ("", "")
        assert rule == "proposal" and "a proposal, not a standard; opt in with Policy(proposals=['x402-lnbtc'])" in why
        opted = Payer(wallet=wallet, policy=Policy(proposals=["x402-lnbtc"]), ledger=lg)  # type: ignore[arg-type]
        assert opted.cannot_pay(offer) is None
    assert isinstance(offer.payload, LightningExact)
    paid = invoice_for(offer.payload, httpx.Request("GET", "https://api.example.com/article/A"))
    assert paid.invoice.payment_hash and paid.amount_msat == 25_000
    with pytest.raises(InvoiceError, match="not bound to this request") as caught:  # article B: not this invoice
        invoice_for(offer.payload, httpx.Request("GET", "https://api.example.com/article/B"))
    assert caught.value.check == "request_binding"


@pytest.mark.parametrize(("over", "why"), [
    ({"network": "lnbtc:regtest"}, "not mainnet or testnet"),
    ({"asset": "SAT"}, "asset must be BTC"),
    ({"payTo": "02" + "zz" * 32}, "node key"),
    ({"extra": {**LNBTC_REQUIREMENT["extra"], "paymentFlow": "deferred"}}, "upfront"),
    ({"extra": {**LNBTC_REQUIREMENT["extra"], "requestBindingProfile": "mcp:1"}}, "http:1"),
    ({"extra": {**LNBTC_REQUIREMENT["extra"], "requestBindingParams": {"headers": ["b", "a"]}}}, "sorted"),
    ({"extra": {**LNBTC_REQUIREMENT["extra"], "invoice": ""}}, "no invoice"),
])
def test_lightning_exact_requirements_httpay_must_not_pay(over: dict[str, Any], why: str) -> None:
    ch = to_challenge(challenge({"x402Version": 2, "accepts": [{**LNBTC_REQUIREMENT, **over}]}), "u")
    assert why in (ch.offers[0].unpayable or "")
