"""Reading MPP `Payment` challenges, credentials, receipts and problems (facts: PROTOCOLS-MPP.md,
aperture's cross-implementation vectors)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from httpay.errors import ChallengeError, InvoiceError
from httpay.lightning import decode_invoice
from httpay.protocols import mpp
from tests.helpers import make_invoice

VECTOR_REQUEST = "eyJhbW91bnQiOiIxMDAifQ"  # {"amount":"100"}
VECTOR_HEADER = ('Payment id="_9D0WlPoPRltxAd6AdpQd6auVOOeQGJ_J8BkGeBE_bU", realm="api.example.com", '
                 f'method="lightning", intent="charge", request="{VECTOR_REQUEST}"')


def b64(doc: object) -> str:
    return mpp.b64url_encode(json.dumps(doc).encode())


def charge_header(bolt11: str, amount: int, *, payment_hash: str | None = None, network: str = "regtest",
                  expires: str | None = None, **extra: str) -> str:
    details = {"invoice": bolt11, "network": network, **({"paymentHash": payment_hash} if payment_hash else {})}
    params = {"id": "c1", "realm": "127.0.0.1", "method": "lightning", "intent": "charge",
              "request": b64({"amount": str(amount), "currency": "sat", "methodDetails": details}), **extra}
    if expires:
        params["expires"] = expires
    return "Payment " + ", ".join(f'{k}="{v}"' for k, v in params.items())


def headers(*values: str) -> httpx.Headers:
    return httpx.Headers([("www-authenticate", v) for v in values])


@pytest.mark.parametrize(("encoded", "hexed"), [
    ("", ""), ("AA", "00"), ("__4", "fffe"), ("__79", "fffefd"), ("aGVsbG8", "68656c6c6f"),
    ("-_-_A-__", "fbffbf03efff"), ("aGVsbG8=", "68656c6c6f"),
])
def test_base64url_accepts_what_the_scheme_sends(encoded: str, hexed: str) -> None:
    assert mpp.b64url_decode(encoded).hex() == hexed


@pytest.mark.parametrize("encoded", ["AB", "aGVs\nbG8", "aGVs\rbG8", "a+b/", "aGV=bG8", "aGVsbG8===", "aGVsbG=",
                                     "aGVsb", "!!!invalid!!!"])
def test_base64url_refuses_second_spellings(encoded: str) -> None:
    with pytest.raises(ChallengeError):
        mpp.b64url_decode(encoded)


def test_the_vector_challenge_reads_and_echoes_verbatim() -> None:
    found = mpp.parse(402, headers(VECTOR_HEADER))
    assert found is not None and len(found) == 1
    (ch,) = found
    assert (ch.id, ch.realm, ch.kind, dict(ch.request)) == (
        "_9D0WlPoPRltxAd6AdpQd6auVOOeQGJ_J8BkGeBE_bU", "api.example.com", "lightning/charge", {"amount": "100"})
    header = ch.credential({"preimage": "ab" * 32})
    assert header.startswith("Payment ") and "=" not in header.removeprefix("Payment ")
    doc = json.loads(base64.urlsafe_b64decode(header.split()[1] + "=="))
    assert doc["challenge"] == {"id": ch.id, "realm": "api.example.com", "method": "lightning", "intent": "charge",
                                "request": VECTOR_REQUEST}
    assert doc["payload"] == {"preimage": "ab" * 32}


def test_several_challenges_beside_l402_and_incomplete_ones_skipped() -> None:
    bolt11, _ = make_invoice(100_000)
    good = charge_header(bolt11, 100)
    found = mpp.parse(402, headers(
        'L402 macaroon="AgE", invoice="lnbc1"',
        good + ', Payment id="x", realm="r", method="tempo", intent="charge", request="' + b64({"amount": "1"}) + '"',
        'Payment id="incomplete", realm="r", method="lightning"',
        'Payment id="bad", realm="r", method="lightning", intent="charge", request="not json!"',
    ))
    assert found is not None
    assert [c.kind for c in found] == ["lightning/charge", "tempo/charge"]
    assert len(found.skipped) == 2 and "lacks intent, request" in found.skipped[0]
    assert found.by_kind("lightning", "charge")[0].id == "c1"


def test_no_payment_challenge_is_none_and_only_broken_ones_is_an_error() -> None:
    assert mpp.parse(402, headers('L402 macaroon="AgE", invoice="lnbc1"')) is None
    assert mpp.parse(200, headers(VECTOR_HEADER)) is None
    with pytest.raises(ChallengeError, match="none is complete"):
        mpp.parse(402, headers('Payment id="x", realm="r"'))


def test_deeply_nested_request_is_a_typed_error() -> None:
    deep = mpp.b64url_encode(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(ChallengeError):
        mpp.parse(402, headers(f'Payment id="x", realm="r", method="lightning", intent="charge", request="{deep}"'))


def test_expires_and_the_payment_authorization_header() -> None:
    past = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    bolt11, _ = make_invoice(1_000)
    (ch,) = mpp.parse(402, headers(charge_header(bolt11, 1, expires=past, header="Payment-Authorization"))) or ()
    assert ch.expired() and ch.credential_header == "Payment-Authorization"
    assert ch.echo()["expires"] == past and "header" not in ch.echo()


def test_lightning_charge_invoice_must_fit() -> None:
    bolt11, _ = make_invoice(100_000)
    inv = decode_invoice(bolt11)
    (ch,) = mpp.parse(402, headers(charge_header(bolt11, 100, payment_hash=inv.payment_hash))) or ()
    charge = mpp.LightningCharge.from_challenge(ch)
    assert (charge.amount_sat, charge.network) == (100, "regtest")
    mpp.check_charge_invoice(charge, inv)
    with pytest.raises(InvoiceError) as err:
        mpp.check_charge_invoice(mpp.LightningCharge(99, bolt11, None, None), inv)
    assert err.value.check == "amount"
    with pytest.raises(InvoiceError) as err:
        mpp.check_charge_invoice(mpp.LightningCharge(100, bolt11, "00" * 32, None), inv)
    assert err.value.check == "payment_hash"
    with pytest.raises(InvoiceError) as err:
        mpp.check_charge_invoice(mpp.LightningCharge(100, bolt11, None, "bitcoin"), inv)
    assert err.value.check == "network"
    with pytest.raises(InvoiceError) as err:
        mpp.check_charge_invoice(charge, inv, expires=datetime.now(UTC) - timedelta(seconds=1))
    assert err.value.check == "expiry"


@pytest.mark.parametrize(("request_doc", "field"), [
    ({"amount": "1.5", "currency": "sat", "methodDetails": {"invoice": "lnbc1"}}, "amount"),
    ({"amount": "9" * 40, "currency": "sat", "methodDetails": {"invoice": "lnbc1"}}, "amount"),
    ({"amount": "1", "currency": "usd", "methodDetails": {"invoice": "lnbc1"}}, "currency"),
    ({"amount": "1", "currency": "sat"}, "methodDetails.invoice"),
    ({"amount": "1", "currency": "sat", "methodDetails": {"invoice": "lnbc1", "network": "moon"}}, "network"),
    # digits that are not 0-9: '²' passes str.isdigit and then fails int(); '٣' would read as 3
    ({"amount": "²", "currency": "sat", "methodDetails": {"invoice": "lnbc1"}}, "amount"),
    ({"amount": "1٣", "currency": "sat", "methodDetails": {"invoice": "lnbc1"}}, "amount"),
    ({"amount": "1", "currency": "sat", "methodDetails": {"invoice": "lnbc1", "network": {"a": 1}}}, "network"),
])
def test_malformed_lightning_charges_name_the_field(request_doc: dict[str, object], field: str) -> None:
    header = f'Payment id="x", realm="r", method="lightning", intent="charge", request="{b64(request_doc)}"'
    (ch,) = mpp.parse(402, headers(header)) or ()
    with pytest.raises(ChallengeError) as err:
        mpp.LightningCharge.from_challenge(ch)
    assert err.value.field == field


def test_receipt_and_problem_details() -> None:
    receipt = {"status": "success", "method": "lightning", "timestamp": "2026-03-10T21:00:00Z",
               "reference": "bc230847abcdef1234567890", "challengeId": "kM9xPqWvT2nJrHsY4aDfEb"}
    got = mpp.read_receipt(httpx.Headers({"payment-receipt": b64(receipt)}))
    assert got is not None and got.success and got.challenge_id == "kM9xPqWvT2nJrHsY4aDfEb"
    assert mpp.read_receipt(httpx.Headers({})) is None
    with pytest.raises(ChallengeError):
        mpp.read_receipt(httpx.Headers({"payment-receipt": b64({"status": "success"})}))
    problem = mpp.read_problem(json.dumps({"type": mpp.PROBLEM_BASE + "payment-expired", "title": "Expired",
                                           "status": 402}))
    assert problem is not None and (problem.kind, problem.status) == ("payment-expired", 402)
    assert mpp.read_problem(b'{"type": "about:blank"}') is None and mpp.read_problem(b"[[[") is None


def test_a_session_with_odd_digits_is_a_typed_error() -> None:
    doc = {"amount": "2", "currency": "sat", "depositInvoice": "lnbc1", "paymentHash": "ab" * 32,
           "depositAmount": "²", "idleTimeout": "²"}
    header = f'Payment id="x", realm="r", method="lightning", intent="session", request="{b64(doc)}"'
    (ch,) = mpp.parse(402, headers(header)) or ()
    with pytest.raises(ChallengeError) as err:
        mpp.LightningSession.from_challenge(ch)
    assert err.value.field is not None and "whole number of sat" in str(err.value)


def evm_header(cid: str, details: dict[str, object]) -> str:
    request = {"amount": "10000", "currency": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",  # USDC, Base Sepolia
               "recipient": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "methodDetails": {"chainId": 84532, **details}}
    return f'Payment id="{cid}", realm="r", method="evm", intent="charge", request="{b64(request)}"'


def test_an_evm_charge_in_a_known_usdc_refused_for_how_it_is_paid_still_shows_its_price() -> None:
    from httpay.dialects.mpp import to_challenge

    found = mpp.parse(402, headers(evm_header("a", {"credentialTypes": ["authorization"]}),
                                   evm_header("b", {"credentialTypes": ["permit2"]}),
                                   evm_header("c", {"credentialTypes": ["authorization"], "splits": [{"x": 1}]})))
    assert found is not None
    payable, permit2, split = to_challenge(found, "https://svc.example/x").offers
    assert payable.unpayable is None and permit2.unpayable is not None and split.unpayable is not None
    assert str(payable.price) == str(permit2.price) == str(split.price) == "0.01 USDC"
