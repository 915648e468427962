"""Reading a 402 once: what httpay remembers between reads never changes what a reader sees.

The `WWW-Authenticate` parse, a decoded macaroon, a BOLT11 decode, a JSON body's verdict and a
payment request URL's check are remembered so every dialect (and every step of one payment) reads
them once. These tests hold the promises a user relies on: two different 402s in a row give their
own offers, a header changed on the same object is read again, what one caller gets is its own (
changing it never changes the next read), a refusal is given every time with the same words, and
a dialect that returns early on a 402 that is not its own decides exactly as it did when it parsed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import httpx
import pytest

import httpay
from httpay.core.events import Retried, emit
from httpay.errors import ChallengeError
from httpay.protocols import l402_v02, macaroons, mpp
from httpay.protocols.www_authenticate import parse_challenges
from tests.helpers import challenge_body, make_invoice
from tests.hostile.harness import X402_PAY_TO, X402_USDC, HostileService

URL = "http://127.0.0.1:8402/ticker"


def classic_402(svc: HostileService) -> tuple[httpx.Headers, str, str]:
    """A fresh Aperture-style 402 (LSAT and L402 challenges): its headers, macaroon and invoice."""
    resp = svc.classic_challenge(10)
    pairs = [(k.decode(), v.decode()) for k, v in resp.raw_headers]
    value = next(v for k, v in pairs if k.lower() == "www-authenticate" and v.startswith("L402"))
    ch = parse_challenges(value)[0]
    return httpx.Headers(pairs), ch.params["macaroon"], ch.params["invoice"]


def read(headers: Any, body: bytes | None = b'{"error": "payment required"}') -> list[httpay.Challenge]:
    return httpay.read_challenge(402, headers, body, url=URL)


def test_two_402s_in_a_row_give_their_own_offers() -> None:
    svc = HostileService()
    first, mac1, inv1 = classic_402(svc)
    second, mac2, inv2 = classic_402(svc)
    assert mac1 != mac2 and inv1 != inv2
    for _ in range(2):  # and again, now that both are remembered
        (a,), (b,) = read(first), read(second)
        assert (a.raw.macaroon, a.raw.invoice) == (mac1, inv1)
        assert (b.raw.macaroon, b.raw.invoice) == (mac2, inv2)
        assert a.offers[0].payload.payment_hash == macaroons.decode(mac1).payment_hash
        assert b.offers[0].payload.payment_hash == macaroons.decode(mac2).payment_hash
        assert a.key != b.key


def test_a_header_changed_on_the_same_object_is_read_again() -> None:
    svc = HostileService()
    headers, mac1, _ = classic_402(svc)
    fresh, mac2, inv2 = classic_402(svc)
    assert read(headers)[0].raw.macaroon == mac1
    headers["www-authenticate"] = fresh.get_list("www-authenticate")[-1]  # the L402 challenge of another 402
    (again,) = read(headers)
    assert (again.raw.macaroon, again.raw.invoice) == (mac2, inv2)
    del headers["www-authenticate"]
    assert read(headers) == []


def test_parsed_challenges_are_the_callers_own() -> None:
    value = 'L402 macaroon="AGIAJEemVQUTEyNCR0exk7ek90Cg==", invoice="lnbc1x", Basic realm="x"'
    mine = parse_challenges(value)
    mine[0].params["invoice"] = "lnbc1forged"
    mine[0].params["extra"] = "added"
    mine.append(mine[0])
    again = parse_challenges(value)
    assert [(c.scheme, c.params) for c in again] == [
        ("L402", {"macaroon": "AGIAJEemVQUTEyNCR0exk7ek90Cg==", "invoice": "lnbc1x"}), ("Basic", {"realm": "x"})]
    assert again[0].params is not mine[0].params


def test_a_decoded_macaroon_is_the_callers_own() -> None:
    mac = macaroons.mint(b"k" * 32, "ab" * 32, caveats=["services=svc:0,other:1", "svc_capabilities=read,write",
                                                         "svc_valid_until=4102444800"])
    mine = macaroons.decode(mac)
    expected = macaroons._decode(mac)
    assert mine == expected
    mine.caveats.append("forged=1")
    mine.services.clear()
    mine.capabilities["svc"].append("admin")
    mine.valid_until_by_service.clear()
    again = macaroons.decode(mac)
    assert again == expected and again.services == [("svc", 0), ("other", 1)]
    assert again.capabilities == {"svc": ["read", "write"]} and again.valid_until is not None
    assert not again.expired(service="svc", now=None)


@pytest.mark.parametrize("token", ["not-a-macaroon", "AAAA", "AgEEbG5kMg"])
def test_a_token_that_is_not_a_macaroon_is_refused_every_time_in_the_same_words(token: str) -> None:
    with pytest.raises(ChallengeError) as first:
        macaroons._decode(token)
    for _ in range(3):
        with pytest.raises(ChallengeError) as err:
            macaroons.decode(token)
        assert (str(err.value), err.value.field) == (str(first.value), first.value.field)
        assert err.value.__cause__ is None


def test_an_invoice_decoded_once_still_says_its_own_fields() -> None:
    (a, pre_a), (b, pre_b) = make_invoice(10_000, description="first"), make_invoice(20_000, description="second")
    hash_a, hash_b = (hashlib.sha256(bytes.fromhex(p)).hexdigest() for p in (pre_a, pre_b))
    for _ in range(2):
        assert (httpay.decode_invoice(a).payment_hash, httpay.decode_invoice(a).description) == (hash_a, "first")
        assert (httpay.decode_invoice(b).amount_msat, httpay.decode_invoice(b).payment_hash) == (20_000, hash_b)


def x402_v1(amount: str = "10000") -> dict[str, Any]:
    return {"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": [
        {"scheme": "exact", "network": "base-sepolia", "maxAmountRequired": amount, "resource": URL,
         "description": "Weather", "mimeType": "application/json", "payTo": X402_PAY_TO, "maxTimeoutSeconds": 60,
         "asset": X402_USDC, "extra": {"name": "USDC", "version": "2"}}]}


def v02_escaped() -> bytes:
    """A v0.2 body whose keys are spelled with JSON escapes: no key is written as such."""
    text = json.dumps(challenge_body())
    return text.replace('"offers"', '"\\u006fffers"').replace('"payment_request_url"', '"payment_request_\\u0075rl"').encode()


# (name, content type, body, the dialects read, or the error's words)
EARLY: list[tuple[str, str | None, bytes, list[str] | str]] = [
    ("x402 body with an escaped key", "application/json",
     json.dumps(x402_v1()).replace('"x402Version"', '"\\u0078402Version"').encode(), ["x402"]),
    ("x402 body in UTF-16", "application/json", json.dumps(x402_v1()).encode("utf-16"), ["x402"]),
    ("x402 body unlabelled", None, json.dumps(x402_v1()).encode(), ["x402"]),
    ("v0.2 body with escaped keys", "application/json", v02_escaped(), ["l402-v0.2"]),
    ("v0.2 body in UTF-16", "application/json", json.dumps(challenge_body()).encode("utf-16"), ["l402-v0.2"]),
    ("JSON label, not JSON, no known key", "application/json", b"<html>payment required</html>",
     "402 body says it is JSON but does not parse as JSON"),
    ("JSON label, broken JSON naming offers", "application/json", b'{"offers": [',
     "402 body says it is JSON but does not parse as JSON"),
    ("JSON label, a JSON array", "application/json", b'[{"offers": []}]', []),
    ("text body, not JSON", "text/plain", b"pay me", []),
    ("unlabelled, not JSON", None, b"pay me", []),
    ("JSON object of another kind", "application/json", b'{"error": "payment required", "price_sat": 10}', []),
]


@pytest.mark.parametrize(("name", "ctype", "body", "expected"), EARLY, ids=[row[0] for row in EARLY])
def test_readers_that_return_early_decide_as_when_they_parsed(name: str, ctype: str | None, body: bytes,
                                                              expected: list[str] | str) -> None:
    headers = httpx.Headers({"content-type": ctype} if ctype else {})
    for _ in range(2):  # the verdict on a body is remembered: the second read must say the same
        if isinstance(expected, str):
            with pytest.raises(ChallengeError, match=expected):
                read(headers, body)
        else:
            assert [c.dialect for c in read(headers, body)] == expected


def mpp_header(bolt11: str, scheme: str = "Payment") -> str:
    request = mpp.b64url_encode(json.dumps({"amount": "10", "currency": "sat",
                                            "methodDetails": {"invoice": bolt11, "network": "regtest"}}).encode())
    return f'{scheme} id="c1", realm="127.0.0.1", method="lightning", intent="charge", request="{request}"'


@pytest.mark.parametrize("scheme", ["Payment", "payment", "PAYMENT"])
def test_a_scheme_in_any_case_is_still_read(scheme: str) -> None:
    svc = HostileService()
    headers, mac, _ = classic_402(svc)
    l402 = next(v for v in headers.get_list("www-authenticate") if v.startswith("L402"))
    spelled = {"Payment": "L402", "payment": "l402", "PAYMENT": "lsat"}[scheme]
    found = read(httpx.Headers([("www-authenticate", spelled + l402[4:]),
                                ("www-authenticate", mpp_header(make_invoice(10_000)[0], scheme))]))
    assert sorted(c.dialect for c in found) == ["l402-classic", "mpp"]
    assert next(c for c in found if c.dialect == "l402-classic").raw.macaroon == mac


@pytest.mark.parametrize("url", ["ftp://pay.example/x", "http://127.0.0.1:abc/pay", "http://[::1/pay", " "])
def test_a_bad_payment_request_url_is_refused_every_time(url: str) -> None:
    for _ in range(3):
        with pytest.raises(ChallengeError) as err:
            l402_v02.check_payment_request_url(url)
        assert err.value.field == "payment_request_url"
    assert l402_v02.check_payment_request_url("/l402/pay") == "/l402/pay"


def test_a_step_is_logged_only_when_someone_listens_and_always_handed_to_the_hook(
        caplog: pytest.LogCaptureFixture) -> None:
    seen: list[object] = []
    event = Retried("http://svc/x?token=1", "rid-1", attempt=1)
    caplog.set_level(logging.WARNING, logger="httpay")
    emit(seen.append, event, "retrying\nforged line")
    assert seen == [event] and not [r for r in caplog.records if r.name == "httpay"]
    caplog.set_level(logging.INFO, logger="httpay")
    emit(seen.append, event, "retrying\nforged line")
    (record,) = [r for r in caplog.records if r.name == "httpay"]
    assert record.getMessage() == "[rid-1] retry: retrying\\nforged line"
    assert record.httpay_step == "retry" and record.httpay_request_id == "rid-1"  # type: ignore[attr-defined]
    assert seen == [event, event]


def _pymacaroons_reading(raw: bytes) -> tuple[bytes, str, list[bytes]] | None:
    from pymacaroons.serializers.binary_serializer import BinarySerializer

    try:
        m = BinarySerializer().deserialize_raw(raw)
        return bytes(m.identifier_bytes), str(m.location or ""), [bytes(c.caveat_id_bytes) for c in m.caveats]
    except Exception:  # noqa: BLE001 - any refusal
        return None


def _macaroon_corpus(rng: Any) -> list[bytes]:
    from pymacaroons import MACAROON_V2, Macaroon

    out: list[bytes] = []
    for n in range(60):
        caveats = [rng.choice(["services=svc:0", "svc_valid_until=4102444800", "ü=✓", "", "x" * rng.randrange(300)])
                   for _ in range(rng.randrange(5))]
        mac = macaroons.mint(rng.randbytes(32), rng.randbytes(32).hex(), location=rng.choice(["", "here", "ü" * 70]),
                             caveats=caveats)
        out.append(macaroons.b64decode_any(mac))
        if n % 6 == 0:  # a third-party caveat, an empty identifier: pymacaroons' own reading
            m = Macaroon(location="loc", identifier=rng.randbytes(rng.choice([0, 66])), key=b"k", version=MACAROON_V2)
            m.add_first_party_caveat("services=a:1")
            m.add_third_party_caveat("https://auth", b"third-key", "third-id")
            out.append(macaroons.b64decode_any(m.serialize()))
    return out


def test_plain_v2_macaroons_read_as_pymacaroons_reads_them() -> None:
    """httpay's reading of a plain v2 macaroon gives pymacaroons' identifier, location and caveats on
    real macaroons and on thousands of mutated ones (flipped, cut, grown, non-UTF-8); whatever it
    does not read (third-party caveats, odd encodings) is left to pymacaroons."""
    import random

    rng = random.Random(13)
    corpus = _macaroon_corpus(rng)
    read_plain = 0
    for raw in corpus:
        plain = macaroons._plain_v2(raw)
        assert plain is None or plain == _pymacaroons_reading(raw)
        read_plain += plain is not None
    assert read_plain >= 60  # every minted macaroon takes the plain reading
    for _ in range(20_000):
        data = bytearray(rng.choice(corpus))
        for _ in range(rng.randint(1, 3)):
            op, at = rng.random(), rng.randrange(len(data))
            if op < 0.4:
                data[at] = rng.choice([0, 1, 2, 4, 6, 0x80, 0xFF, rng.randrange(256)])
            elif op < 0.6:
                del data[at:at + rng.randint(1, 4)]
            elif op < 0.8:
                data[at:at] = bytes([rng.choice([0, 1, 2, 6, 0x80, 0xC3])])
            else:
                del data[at:]
            if not data:
                data = bytearray(b"\x02")
        raw = bytes(data)
        plain = macaroons._plain_v2(raw)
        if plain is not None:
            assert plain == _pymacaroons_reading(raw), raw.hex()


def test_a_macaroon_reads_the_same_whichever_reader_reads_it() -> None:
    mac = macaroons.mint(b"k" * 32, "cd" * 32, location="svc", caveats=["services=svc:0", "svc_valid_until=4102444800"])
    fast = macaroons._decode(mac)
    from pymacaroons.serializers.binary_serializer import BinarySerializer

    m = BinarySerializer().deserialize_raw(macaroons.b64decode_any(mac))
    assert fast.payment_hash == "cd" * 32 and fast.location == str(m.location)
    assert fast.caveats == [bytes(c.caveat_id_bytes).decode() for c in m.caveats]
    assert macaroons.verify(b"k" * 32, mac) and not macaroons.verify(b"j" * 32, mac)
