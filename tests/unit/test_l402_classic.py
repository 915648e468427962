"""Classic L402/LSAT: every challenge variant of PROTOCOLS.md §2, the credential, and macaroons."""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from httpay.errors import ChallengeError
from httpay.protocols import l402_classic, macaroons
from httpay.protocols.l402_classic import L402Challenge, credential, parse, parse_credential
from tests.helpers import make_invoice

# A real Aperture challenge, as carried in lsat-js's test data (location "lsat", services=meme:0).
APERTURE_MAC = (
    "AgEEbHNhdAJCAAAwpHpumws6ufQoDwiTLNcge0QPUIWA0+tVY+tKPYAJ/zSfmEGlIpNm3VzxuzCqLhEp5KGiyPLUM9L+kcB7uzS+AAIPc2Vy"
    "dmljZXM9bWVtZTowAAISbWVtZV9jYXBhYmlsaXRpZXM9AAAGILA1VCEIExukt4nG+XR9tX8WJ2BVMiHG3UNt1uYJ+NRD"
)
APERTURE_HASH = "30a47a6e9b0b3ab9f4280f08932cd7207b440f508580d3eb5563eb4a3d8009ff"
APERTURE_INVOICE = (
    "lnbcrt100n1p3qqkygpp5xzj85m5mpvatnapgpuyfxtxhypa5gr6sskqd8664v04550vqp8lsdq8f3f5z4qcqzpgsp5tpzvsq5pckqgln3ltpy3e"
    "9cf6tf2aj82ffa2tted77ltweuaweks9qyyssq0w5da3k40wtdukac7hp5s58hsxf8k8f52c5qneezu4xg3xh87xrnkl5jwtw098d2gjywx20nm"
    "kxl2y4vq9fr89kg5kzcwupv9xpdaggp4fc4ms"
)
INVOICE, PREIMAGE = make_invoice(10_000)
MAC = macaroons.mint(b"root key", hashlib.sha256(bytes.fromhex(PREIMAGE)).hexdigest(), caveats=["services=demo:0"])


def www(*values: str) -> httpx.Headers:
    return httpx.Headers([("WWW-Authenticate", v) for v in values])


def test_aperture_sends_lsat_then_l402_and_the_l402_one_wins() -> None:
    ch = parse(402, www(f'LSAT macaroon="{APERTURE_MAC}", invoice="{APERTURE_INVOICE}"',
                        f'L402 macaroon="{MAC}", invoice="{INVOICE}"'), b"payment required\n")
    assert ch is not None
    assert (ch.scheme, ch.macaroon, ch.invoice) == ("L402", MAC, INVOICE)


@pytest.mark.parametrize("header", [
    f'L402 macaroon="{MAC}", invoice="{INVOICE}"',
    f'L402 version="0", token="{MAC}", invoice="{INVOICE}"',
    f'L402 invoice="{INVOICE}", token="{MAC}", version="0"',
    f"L402 macaroon={MAC}, invoice={INVOICE}",
    f'l402 Macaroon="{MAC}" invoice="{INVOICE}"',
    f'Payment id="x", method="tempo", L402 macaroon="{MAC}", invoice="{INVOICE}", Cashu creq',
    f'L402 macaroon="{MAC}", invoice="{INVOICE}", future_param="ignored", caveats="svc=1"',
    f'Bearer realm="api", LSAT macaroon="{MAC}", invoice="{INVOICE}"',
])
def test_every_documented_variant_reads_the_same(header: str) -> None:
    ch = parse(402, www(header), None)
    assert ch is not None
    assert (ch.macaroon, ch.invoice) == (MAC, INVOICE)
    assert ch.scheme in ("L402", "LSAT")


def test_version_is_kept_and_lsat_alone_is_read() -> None:
    ch = parse(402, {"WWW-Authenticate": f'LSAT version="0", token="{MAC}", invoice="{INVOICE}"'}, None)
    assert ch is not None and ch.version == "0" and ch.scheme == "LSAT"


def test_no_l402_challenge_is_none_and_not_402_is_none() -> None:
    assert parse(402, www('Bearer realm="x"', 'Payment id="1"'), None) is None
    assert parse(402, {}, b'{"offers": []}') is None
    assert parse(200, www(f'L402 macaroon="{MAC}", invoice="{INVOICE}"'), None) is None


def test_a_broken_l402_falls_back_to_a_good_lsat() -> None:
    ch = parse(402, www(f'LSAT macaroon="{MAC}", invoice="{INVOICE}"', f'L402 macaroon="{MAC}"'), None)
    assert ch is not None and ch.scheme == "LSAT"


@pytest.mark.parametrize("header, field", [
    (f'L402 invoice="{INVOICE}"', "macaroon"),
    (f'L402 macaroon="{MAC}"', "invoice"),
    (f'L402 macaroon="not base64!", invoice="{INVOICE}"', "macaroon"),
    (f'L402 macaroon="", invoice="{INVOICE}"', "macaroon"),
    (f'L402 macaroon="{MAC}", invoice="https://pay.example/inv"', "invoice"),
])
def test_a_broken_challenge_names_what_is_wrong(header: str, field: str) -> None:
    with pytest.raises(ChallengeError) as err:
        parse(402, www(header), None)
    assert err.value.field == field


def test_repr_and_str_show_only_the_start_of_the_macaroon() -> None:
    ch = parse(402, www(f'L402 macaroon="{MAC}", invoice="{INVOICE}"'), None)
    assert ch is not None
    for text in (repr(ch), str(ch)):
        assert MAC not in text
        assert MAC[:12] in text
    assert "L402" in str(ch)


def test_credential_shape_and_round_trip() -> None:
    value = credential(MAC, PREIMAGE.upper())
    assert value == f"L402 {MAC}:{PREIMAGE.lower()}"
    assert credential([MAC, APERTURE_MAC], PREIMAGE, scheme="lsat") == f"LSAT {MAC},{APERTURE_MAC}:{PREIMAGE}"
    cred = parse_credential(value)
    assert (cred.scheme, cred.macaroons, cred.preimage) == ("L402", (MAC,), PREIMAGE)
    assert PREIMAGE not in repr(cred)
    ch = L402Challenge(macaroon=MAC, invoice=INVOICE, scheme="LSAT")
    assert ch.credential(PREIMAGE) == f"LSAT {MAC}:{PREIMAGE}"


@pytest.mark.parametrize("bad", ["", "ab" * 31, "ab" * 33, "zz" * 32, PREIMAGE[:-1] + "g", 42],
                         ids=["empty", "31 bytes", "33 bytes", "not hex", "last digit not hex", "not a string"])
def test_credential_refuses_a_bad_preimage_without_echoing_it(bad: object) -> None:
    with pytest.raises(ChallengeError) as err:
        credential(MAC, bad)  # type: ignore[arg-type]
    assert err.value.field == "preimage"
    if isinstance(bad, str) and bad:
        assert bad not in str(err.value)


def test_credential_refuses_bad_macaroons_and_schemes() -> None:
    with pytest.raises(ChallengeError):
        credential([], PREIMAGE)
    with pytest.raises(ChallengeError):
        credential("a:b", PREIMAGE)
    with pytest.raises(ChallengeError):
        credential(MAC, PREIMAGE, scheme="Bearer")


b64_macs = st.binary(min_size=1, max_size=80).map(lambda b: base64.b64encode(b).decode())
hex32 = st.binary(min_size=32, max_size=32).map(bytes.hex)


@given(st.lists(b64_macs, min_size=1, max_size=3), hex32, st.sampled_from(["L402", "LSAT", "l402"]))
def test_credential_output_always_parses_back(macs: list[str], pre: str, scheme: str) -> None:
    cred = parse_credential(credential(macs, pre, scheme=scheme))
    assert (cred.scheme, list(cred.macaroons), cred.preimage) == (scheme.upper(), macs, pre)


@given(b64_macs, st.sampled_from(["L402", "LSAT"]), st.one_of(st.none(), st.text("0123456789.", max_size=4)))
def test_challenge_to_header_and_back(mac: str, scheme: str, version: str | None) -> None:
    ch = L402Challenge(macaroon=mac, invoice=APERTURE_INVOICE, version=version, scheme=scheme)
    assert parse(402, www(ch.to_header()), None) == ch


@given(st.one_of(st.text(max_size=400), st.binary(max_size=400).map(lambda b: b.decode("latin-1"))))
@settings(max_examples=400)
def test_any_header_gives_a_challenge_none_or_a_typed_error(text: str) -> None:
    for value in (text, "L402 " + text, f'L402 macaroon="{MAC}", ' + text):
        try:
            out = parse(402, www(value) if value.isascii() and value.isprintable() else {"www-authenticate": value}, None)
        except ChallengeError:
            continue
        assert out is None or isinstance(out, L402Challenge)


# --- macaroons -------------------------------------------------------------------------------


def test_decode_a_real_aperture_macaroon() -> None:
    info = macaroons.decode(APERTURE_MAC)
    assert info.identifier_version == 0
    assert info.payment_hash == APERTURE_HASH
    assert info.location == "lsat"
    assert info.caveats == ["services=meme:0", "meme_capabilities="]
    assert info.services == [("meme", 0)]
    assert info.capabilities == {"meme": []}
    assert info.valid_until is None and not info.expired()


def test_decode_accepts_urlsafe_and_unpadded_and_lsat_js_hex_identifiers() -> None:
    urlsafe = APERTURE_MAC.replace("+", "-").replace("/", "_").rstrip("=")
    assert macaroons.decode(urlsafe) == macaroons.decode(APERTURE_MAC)
    hexid = ("AgEIbG9jYXRpb24ChAEwMDAwN2NlZjkzZjJjNTFhYTY1MjA4YmVjMTQ0N2ZjMzhmYzU4ZDliY2UxMzc1YTUzMmVkYjBkY2QyOTBhMmMz"
             "MzBhZTljNTMyNjZiMWJlMzE1MGI2NjZiM2Y2ZWM3MGYyOGJkNDNhOWQ0ZmQxOTQ2MWE2MjBmYmFjYzMzNzY4YTk5OTQAAhhleHBpcmF0"
             "aW9uPTE2NDQxOTQyNjM2OTMAAAYg_1CMq8TuMXv-ERHDWQCtlIhsQwwKiUDmnnh1maDFpkQ")
    assert macaroons.decode(hexid).payment_hash == "7cef93f2c51aa65208bec1447fc38fc58d9bce1375a532edb0dcd290a2c330ae"


def test_later_caveats_narrow_earlier_ones() -> None:
    mac = macaroons.mint(b"k", APERTURE_HASH, caveats=[
        "services=a:0,b:1,c:0", "a_capabilities=read,write,delete", "a_valid_until=2000000000",
        "services=b:2,a:0", "a_capabilities=write,read,admin", "a_valid_until=1900000000", "a_valid_until=1950000000",
        "b_valid_until=2100000000",
    ])
    info = macaroons.decode(mac)
    assert info.services == [("a", 0), ("b", 2)]
    assert info.capabilities == {"a": ["read", "write"]}
    assert info.valid_until_by_service["a"] == datetime.fromtimestamp(1900000000, UTC)
    assert info.valid_until == datetime.fromtimestamp(1900000000, UTC)
    between = datetime.fromtimestamp(2000000000, UTC)
    assert info.expired(between, service="a") and not info.expired(between, service="b")
    assert not info.expired(between), "still usable for b, so not thrown away"
    assert info.expired(datetime.fromtimestamp(2200000000, UTC))


@given(hex32, st.binary(min_size=32, max_size=32),
       st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30), max_size=5))
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
def test_mint_then_decode_gives_back_hash_token_and_caveats(payment_hash: str, token_id: bytes, cavs: list[str]) -> None:
    plain = [c.replace("=", ":") for c in cavs]  # keep them free-form, not services/deadline caveats
    info = macaroons.decode(macaroons.mint(b"root", payment_hash, token_id, location="here", caveats=plain))
    assert (info.payment_hash, info.token_id, info.location, info.caveats) == (payment_hash, token_id.hex(), "here", plain)


def test_verify_checks_key_preimage_and_deadline() -> None:
    pre = os.urandom(32)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    until = int((now + timedelta(hours=1)).timestamp())
    mac = macaroons.mint(b"root", hashlib.sha256(pre).hexdigest(), caveats=["services=demo:0", f"demo_valid_until={until}"])
    assert macaroons.verify(b"root", mac, pre.hex(), now=now)
    assert macaroons.verify(b"root", mac, now=now)
    assert not macaroons.verify(b"other root", mac, pre.hex(), now=now)
    assert not macaroons.verify(b"root", mac, os.urandom(32).hex(), now=now)
    assert not macaroons.verify(b"root", mac, "not hex", now=now)
    assert not macaroons.verify(b"root", mac, pre.hex(), now=now + timedelta(hours=2))
    assert not macaroons.verify(b"root", "garbage!!", pre.hex())
    unknown = macaroons.mint(b"root", hashlib.sha256(pre).hexdigest(), caveats=["ip=1.2.3.4"])
    assert not macaroons.verify(b"root", unknown, pre.hex(), now=now), "an unknown caveat is never assumed satisfied"


def test_tampered_macaroon_fails_verification() -> None:
    raw = bytearray(base64.b64decode(MAC))
    raw[-1] ^= 1
    assert not macaroons.verify(b"root key", base64.b64encode(bytes(raw)).decode())
    assert macaroons.verify(b"root key", MAC, PREIMAGE)


@pytest.mark.parametrize("bad", ["", "!!!", "A", base64.b64encode(b"0000junk\n").decode(),
                                 base64.b64encode(b"\x02\x01").decode(), base64.b64encode(b"hello").decode(),
                                 "AgEEbHNhdAJCAAAwpHpumws6uf", 12])
def test_bad_macaroons_are_a_typed_error(bad: object) -> None:
    with pytest.raises(ChallengeError):
        macaroons.decode(bad)  # type: ignore[arg-type]


def test_bad_caveat_values_are_a_typed_error() -> None:
    for cav in ("services=oops", "svc_valid_until=soon", "svc_valid_until=99999999999999999999"):
        with pytest.raises(ChallengeError):
            macaroons.decode(macaroons.mint(b"k", APERTURE_HASH, caveats=[cav]))


def test_mint_refuses_bad_hash_and_token_id() -> None:
    with pytest.raises(ChallengeError):
        macaroons.mint(b"k", "abc")
    with pytest.raises(ChallengeError):
        macaroons.mint(b"k", APERTURE_HASH, token_id=b"short")


@given(st.binary(max_size=300))
@settings(max_examples=400)
def test_any_bytes_decode_to_info_or_a_typed_error(raw: bytes) -> None:
    for text in (base64.b64encode(raw).decode(), base64.b64encode(b"\x02" + raw).decode(), raw.decode("latin-1")):
        try:
            info = macaroons.decode(text)
        except ChallengeError:
            continue
        assert isinstance(info, macaroons.MacaroonInfo)


def test_challenge_macaroon_info_is_the_decoded_macaroon() -> None:
    ch = l402_classic.L402Challenge(macaroon=APERTURE_MAC, invoice=APERTURE_INVOICE)
    assert ch.macaroon_info().payment_hash == APERTURE_HASH


@pytest.mark.parametrize("caveat", ["services=svc:²", "services=svc:٣", "svc_valid_until=²"])
def test_a_caveat_with_digits_that_are_not_0_to_9_is_a_typed_error(caveat: str) -> None:
    """str.isdigit takes '²' (then int() fails: a bare ValueError) and '٣' (read as 3): a caveat's
    number is read from 0-9 only."""
    from httpay.protocols import macaroons

    token = macaroons.mint(b"k" * 32, "ab" * 32, caveats=[caveat])
    with pytest.raises(ChallengeError):
        macaroons.decode(token)

