"""`httpay.read_challenge(status, headers, body, url=...)`: any 402, read by every registered dialect
into neutral challenges (issue 11).

Each challenge says its dialect by name (today's names: the `PROTOCOL` of each protocol module,
"l402-v0.2", "l402-classic", "x402") and carries neutral offers: an id, a title, the payment
methods, and the price as exact money (an int amount in its unit: USD cents, msat, a token's atomic
units) that prints as a person reads it ("$0.01", "10 sat"). A 402 carrying several challenges (L402
next to x402, a v0.2 body next to an L402 header) gives all of them. A response that is not a 402,
or a 402 no dialect claims, gives []. Malformed input raises `httpay.ChallengeError` saying what was
wrong, never a bare exception.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import httpay
from tests.helpers import challenge_body
from tests.hostile.harness import X402_PAY_TO, X402_USDC, HostileService, x402_requirement

URL = "http://127.0.0.1:8402/weather"
V02, CLASSIC, X402 = "l402-v0.2", "l402-classic", "x402"  # today's PROTOCOL constants
CORPUS = Path(__file__).resolve().parents[1] / "corpus"
CORPUS_NAMES = {"l402_v02": V02, "l402_classic": CLASSIC, "x402": X402, "mpp": "mpp"}


def b64json(data: Any) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def classic_headers(*schemes: str) -> list[tuple[str, str]]:
    """A real Aperture-style 402's WWW-Authenticate headers (a fresh macaroon committing to a fresh
    signed invoice of 10 sat), kept for the schemes asked ("L402", "LSAT"), in Aperture's order."""
    svc = HostileService()  # its node and root key only: nothing is served
    response = svc.classic_challenge(10)
    out = []
    for name, value in response.raw_headers:
        text = value.decode()
        if name.decode().lower() == "www-authenticate" and text.split(" ", 1)[0] in schemes:
            out.append(("WWW-Authenticate", text))
    assert len(out) == len(schemes)
    return out


def x402_v1_body(*amounts: str) -> bytes:
    return json.dumps({"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": [
        {"scheme": "exact", "network": "base-sepolia", "maxAmountRequired": a, "resource": URL,
         "description": "Weather data", "mimeType": "application/json", "payTo": X402_PAY_TO,
         "maxTimeoutSeconds": 60, "asset": X402_USDC, "extra": {"name": "USDC", "version": "2"}} for a in amounts
    ]}).encode()


def x402_v2_header(*amounts: str) -> tuple[str, str]:
    return ("PAYMENT-REQUIRED", b64json({"x402Version": 2, "error": "Payment required", "resource": {"url": URL},
                                         "accepts": [x402_requirement(a) for a in amounts]}))


JSON = ("Content-Type", "application/json")


@dataclass
class Want:
    """What one challenge of a case must hold: its dialect and its offers' prices as printed,
    their int amounts, and the ids of offers that must be there."""

    dialect: str
    prices: list[str]
    amounts: list[int]
    offer_ids: list[str] = field(default_factory=list)
    methods: str | None = None  # a payment method every offer lists


@dataclass
class Case:
    name: str
    headers: list[tuple[str, str]]
    body: bytes | None
    want: list[Want]  # every challenge, in any order


def cases() -> list[Case]:
    v02 = json.dumps(challenge_body(base="http://127.0.0.1:8402")).encode()
    ten_sat = Want(CLASSIC, ["10 sat"], [10_000], methods="lightning")
    usdc = Want(X402, ["0.01"], [10_000])
    return [
        Case("l402_v02_offers", [JSON], v02, [Want(
            V02, ["$0.01", "$1", "$4.99"], [1, 100, 499],
            ["offer_c668e0c0", "offer_97bf23f7", "offer_a896b13c"], methods="lightning")]),
        Case("classic_l402", classic_headers("L402"), b"payment required\n", [ten_sat]),
        Case("classic_lsat", classic_headers("LSAT"), b"payment required\n", [ten_sat]),
        Case("x402_v1_body", [JSON], x402_v1_body("10000"), [usdc]),
        Case("x402_v2_header", [x402_v2_header("10000", "20000")], b"{}",
             [Want(X402, ["0.01", "0.02"], [10_000, 20_000])]),
        Case("l402_and_x402_side_by_side", [*classic_headers("L402"), x402_v2_header("10000")], None, [ten_sat, usdc]),
        Case("v02_body_and_l402_header", [JSON, *classic_headers("L402")], v02, [
            Want(V02, ["$0.01", "$1", "$4.99"], [1, 100, 499]), ten_sat]),
    ]


def price_unit(price: Any) -> Any:
    return getattr(price, "unit", getattr(price, "currency", None))


def check_offers(challenge: Any, want: Want, case: str) -> None:
    offers = list(challenge.offers)
    assert len(offers) == len(want.prices), f"{case}: {len(offers)} offers, expected {len(want.prices)}"
    for offer, shown, amount in zip(offers, want.prices, want.amounts, strict=True):
        assert isinstance(offer.offer_id, str) and offer.offer_id, f"{case}: an offer without an id"
        assert isinstance(offer.title, str), f"{case}: {offer.offer_id} has no title"
        price = offer.price
        assert isinstance(price.amount, int) and not isinstance(price.amount, bool), \
            f"{case}: {offer.offer_id}'s price amount is {price.amount!r}, not exact (an int in its unit)"
        assert price.amount == amount, f"{case}: {offer.offer_id} costs {price.amount} units, expected {amount}"
        unit = price_unit(price)
        assert isinstance(unit, str) and unit, f"{case}: {offer.offer_id}'s price has no unit: {price!r}"
        assert shown in str(price), f"{case}: {offer.offer_id}'s price reads {str(price)!r}, expected {shown!r}"
        methods = list(offer.payment_methods)
        assert methods and all(isinstance(m, str) and m for m in methods), f"{case}: {offer.offer_id} has no method"
        if want.methods is not None:
            assert want.methods in methods, f"{case}: {offer.offer_id} is not payable by {want.methods}: {methods}"
    assert len({o.offer_id for o in offers}) == len(offers), f"{case}: two offers share an id"
    for oid in want.offer_ids:
        assert oid in [o.offer_id for o in offers], f"{case}: offer {oid} is missing"


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.name)
def test_each_dialect_reads_into_neutral_challenges(case: Case) -> None:
    found = httpay.read_challenge(402, httpx.Headers(case.headers), case.body, url=URL)
    assert isinstance(found, list)
    dialects = [c.dialect for c in found]
    assert all(isinstance(d, str) for d in dialects)
    assert sorted(dialects) == sorted(w.dialect for w in case.want), \
        f"{case.name}: read {dialects}, expected every challenge of the 402: {[w.dialect for w in case.want]}"
    for want in case.want:
        challenge = next(c for c in found if c.dialect == want.dialect)
        check_offers(challenge, want, case.name)


def test_aperture_l402_and_lsat_side_by_side_are_one_price() -> None:
    """Aperture sends the same macaroon and invoice as LSAT and as L402: whatever the reader makes of
    the pair, it is classic L402 at the invoice's price, never a second, different payment."""
    found = httpay.read_challenge(402, httpx.Headers(classic_headers("LSAT", "L402")), b"payment required\n", url=URL)
    assert found and {c.dialect for c in found} == {CLASSIC}
    for challenge in found:
        check_offers(challenge, Want(CLASSIC, ["10 sat"], [10_000], methods="lightning"), "aperture")
    assert len({o.offer_id for c in found for o in c.offers}) == 1, "one invoice, one offer, under both spellings"


def test_plain_mappings_and_text_bodies_are_read_too() -> None:
    """Callers without httpx pass a dict of headers and a str body."""
    v02 = json.dumps(challenge_body(base="http://127.0.0.1:8402"))
    assert [c.dialect for c in httpay.read_challenge(402, {"content-type": "application/json"}, v02, url=URL)] == [V02]
    name, value = x402_v2_header("10000")
    assert [c.dialect for c in httpay.read_challenge(402, {name: value}, "", url=URL)] == [X402]


@pytest.mark.parametrize("status", [200, 401, 403, 404, 500])
def test_a_response_that_is_not_a_402_has_no_challenge(status: int) -> None:
    headers = httpx.Headers([*classic_headers("L402"), x402_v2_header("10000")])
    body = json.dumps(challenge_body()).encode()
    assert httpay.read_challenge(status, headers, body, url=URL) == []


@pytest.mark.parametrize(("headers", "body"), [
    ([("Content-Type", "text/html")], b"<html><body>Payment required</body></html>"),
    ([], None),
    ([("WWW-Authenticate", 'Bearer realm="api"')], b""),
], ids=["html_page", "empty", "bearer_only"])
def test_a_402_no_dialect_claims_has_no_challenge(headers: list[tuple[str, str]], body: bytes | None) -> None:
    assert httpay.read_challenge(402, httpx.Headers(headers), body, url=URL) == []


MALFORMED: list[tuple[str, list[tuple[str, str]], bytes | None]] = [
    ("v02_truncated_json", [JSON], json.dumps(challenge_body()).encode()[:60]),
    ("v02_offer_amount_a_float", [JSON], json.dumps(challenge_body(offers=[
        {"offer_id": "o1", "title": "t", "type": "top-up", "balance": 1, "amount": 0.5, "currency": "USD",
         "payment_methods": ["lightning"]}])).encode()),
    ("v02_deep_nesting", [JSON], b'{"version": "0.2.2", "offers": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("classic_no_invoice", [("WWW-Authenticate", 'L402 macaroon="AgELYXBpLmV4YW1wbGUC"')], b""),
    ("x402_v2_not_base64", [("PAYMENT-REQUIRED", "%%% not base64 %%%")], b""),
    ("x402_v2_amount_above_uint256", [x402_v2_header(str(2**256))], b""),
    ("x402_v1_amount_a_fraction", [JSON], x402_v1_body("10000").replace(b'"10000"', b"0.01")),
]


@pytest.mark.parametrize(("name", "headers", "body"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_raises_a_challenge_error(name: str, headers: list[tuple[str, str]], body: bytes | None) -> None:
    with pytest.raises(httpay.ChallengeError) as caught:
        httpay.read_challenge(402, httpx.Headers(headers), body, url=URL)
    assert str(caught.value), "the error says what was wrong"
    assert type(caught.value) is not ValueError


def test_a_classic_invoice_that_is_not_one_is_a_typed_error() -> None:
    """An L402 header whose invoice does not decode: a typed httpay error naming the invoice."""
    header = classic_headers("L402")[0][1]
    start = header.index('invoice="') + len('invoice="')
    broken = header[:start] + "lnbcrt10n1" + "q" * 40 + header[header.index('"', start):]
    with pytest.raises((httpay.ChallengeError, httpay.InvoiceError)) as caught:
        httpay.read_challenge(402, httpx.Headers([("WWW-Authenticate", broken)]), b"", url=URL)
    assert "invoice" in str(caught.value).lower()


def test_a_dialect_failing_in_a_way_it_did_not_foresee_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A defect in one dialect's reading of a hostile 402 (a ValueError from deep inside) is that
    dialect's ChallengeError, and the other dialects' challenges are still read."""
    from httpay.core import dialect as registry

    real = registry.dialects()
    broken = next(d for d in real if d.name == CLASSIC)

    class Broken:
        name, rank = broken.name, broken.rank

        def read(self, *args: Any) -> list[Any]:
            raise ValueError("invalid literal for int() with base 10: '²'")

    monkeypatch.setattr(registry, "dialects", lambda: [Broken() if d is broken else d for d in real])
    header = classic_headers("L402")[0][1]
    with pytest.raises(httpay.ChallengeError, match=r"the l402-classic challenge cannot be read \(ValueError\)"):
        httpay.read_challenge(402, httpx.Headers([("WWW-Authenticate", header)]), b"", url=URL)
    found = httpay.read_challenge(402, httpx.Headers([("WWW-Authenticate", header)]), json.dumps(challenge_body()),
                                  url=URL)
    assert [c.dialect for c in found] == [V02]


def corpus() -> list[Path]:
    return sorted(CORPUS.glob("*.json"))


@pytest.mark.parametrize("path", corpus(), ids=lambda p: p.stem)
def test_every_402_of_the_corpus(path: Path) -> None:
    """Every real-world-shaped 402 of tests/corpus: the challenges of every dialect that claims it;
    a ChallengeError when the only dialects that recognise it find it malformed; else []. Never
    anything else."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    headers = httpx.Headers([(k.encode(), v.encode("utf-8")) for k, v in doc["headers"]])
    body = base64.b64decode(doc["body_b64"]) if "body_b64" in doc else (
        None if doc["body"] is None else doc["body"].encode("utf-8"))
    expect: Sequence[str] = [CORPUS_NAMES[n] for n in doc["expect"]]
    if not expect and doc["errors"]:
        with pytest.raises(httpay.ChallengeError):
            httpay.read_challenge(doc["status"], headers, body, url=URL)
        return
    found = httpay.read_challenge(doc["status"], headers, body, url=URL)
    read = sorted(c.dialect for c in found)
    assert read == sorted(expect), f"{path.name}: read {read}, expected {sorted(expect)}"
    for challenge in found:
        assert list(challenge.offers), f"{path.name}: a {challenge.dialect} challenge with no offer"
        for offer in challenge.offers:
            assert isinstance(offer.price.amount, int) and str(offer.price)
