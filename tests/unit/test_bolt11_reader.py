"""httpay's BOLT11 reader agrees with the `bolt11` package: on real invoices field by field, on
the corpus and on mutated inputs accept/reject alike (the full campaign: tools/fuzz.py
--bolt11-differential 1000000), and its failures are typed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from httpay.bolt11_reader import Bolt11Invalid, read_bolt11
from httpay.errors import InvoiceError
from httpay.lightning import decode_invoice
from tests.helpers import make_invoice

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from fuzz_bolt11 import oracle, ours  # noqa: E402 - tools/ is put on the path first


@pytest.mark.parametrize("amount", [None, 1, 10_000, 123_456_789, 21 * 10**11])
@pytest.mark.parametrize("network", ["regtest", "bitcoin", "testnet", "signet"])
def test_fields_agree_with_the_bolt11_package(amount: int | None, network: str) -> None:
    text, _ = make_invoice(amount, network=network, description="1 Credit Package ✓", expiry=1234)
    assert ours(text) == oracle(text) is not None
    fields = read_bolt11(text)
    assert fields.amount_msat == amount and fields.expiry == 1234 and fields.description == "1 Credit Package ✓"


def test_uppercase_invoices_read_the_same() -> None:
    text, _ = make_invoice(10_000)
    assert read_bolt11(text.upper()) == read_bolt11(text)


@pytest.mark.parametrize("text", ["", "lnbc1", "lnbc10u1qqqqqq", "x" * 5000, "lnbc1" + "q" * 600, "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"])
def test_what_is_not_an_invoice_is_a_typed_error(text: str) -> None:
    with pytest.raises(Bolt11Invalid):
        read_bolt11(text)
    with pytest.raises(InvoiceError) as err:
        decode_invoice(text or " ")
    assert err.value.check == "decode"


def test_a_tampered_amount_fails_the_signature_through_a_pinned_payee() -> None:
    text, _ = make_invoice(10_000)
    payee = read_bolt11(text).payee
    assert payee and len(payee) == 66
    # the payee recovered from a tampered invoice is some other key: the payee check catches it
    hrp_end = text.rfind("1")
    from bech32 import CHARSET, bech32_create_checksum

    data = [CHARSET.index(c) for c in text[hrp_end + 1:]][:-6]
    forged = "lnbcrt200n1" + "".join(CHARSET[d] for d in data + bech32_create_checksum("lnbcrt200n", data))
    assert read_bolt11(forged).payee != payee


def test_a_differential_smoke_of_the_fuzz_campaign() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "fuzz.py"), "--bolt11-differential", "3000",
                          "--seed", "smoke", "--workers", "1"], capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 disagreements" in run.stdout and "3,000 inputs" in run.stdout


def test_the_checksum_is_bech32s_own_on_every_length_and_value() -> None:
    """The table-driven checksum computes exactly `bech32.bech32_polymod`: every single group, every
    length up to 700 groups (odd and even), and random group strings; a checksum one group off is
    refused, so a wrong table could never let a corrupted invoice through."""
    import random

    from bech32 import bech32_polymod, bech32_verify_checksum

    from httpay.bolt11_reader import _checksum_ok, _polymod

    rng = random.Random(402)
    cases = [bytes([v]) for v in range(32)] + [b""]
    cases += [bytes(rng.randrange(32) for _ in range(n)) for n in range(700)]
    cases += [bytes([31] * n) for n in range(0, 700, 7)]
    for values in cases:
        assert _polymod(values) == bech32_polymod(values), len(values)
    for text in [make_invoice(a)[0] for a in (None, 1, 10_000)]:
        pos = text.rfind("1")
        data = bytearray(CHARSET_VALUES[c] for c in text[pos + 1:])
        assert _checksum_ok(text[:pos], bytes(data)) and bech32_verify_checksum(text[:pos], data)
        data[-1] ^= 1
        assert not _checksum_ok(text[:pos], bytes(data)) and not bech32_verify_checksum(text[:pos], data)


def test_characters_outside_bech32_are_refused_anywhere() -> None:
    """Spaces, controls, non-ASCII and characters that are not bech32 (b, i, o) are refused, in the
    prefix or the data, with the same typed error; a character that lower-cases to bech32 is read."""
    text, _ = make_invoice(10_000)
    pos = text.rfind("1")
    for bad in (" ", "\x00", "\x7f", "é", "b", "i", "o", "\n"):
        for where in (2, pos + 5, len(text) - 1):
            forged = text[:where] + bad + text[where + 1:]
            if forged == text:
                continue
            with pytest.raises(Bolt11Invalid):
                read_bolt11(forged)
            assert oracle(forged) is None
    assert ours(text.replace("k", "\u212a")) == oracle(text.replace("k", "\u212a"))  # Kelvin sign lower-cases to k


CHARSET_VALUES = {c: i for i, c in enumerate("qpzry9x8gf2tvdw0s3jn54khce6mua7l")}


@pytest.mark.parametrize("amount", ["15p", "10000005p", "1p"])
def test_a_pico_amount_that_is_no_whole_millisatoshi_is_refused(amount: str) -> None:
    """BOLT 11: a reader MUST fail an invoice whose pico-bitcoin amount is not a multiple of 10 (the
    bolt11 package rounds it down; 1p was read as 0 msat)."""
    from httpay.bolt11_reader import Bolt11Invalid, read_bolt11
    from tests.helpers import make_invoice

    good, _ = make_invoice(10_000)
    hrp, _, rest = good.partition("1")
    bad = _rechecksummed("lnbcrt" + amount, good)
    with pytest.raises(Bolt11Invalid, match="not a whole number of millisatoshi"):
        read_bolt11(bad)
    assert hrp.startswith("lnbcrt") and rest


def _rechecksummed(hrp: str, invoice: str) -> str:
    """`invoice`'s data under another human-readable part, with a checksum made for it."""
    import bech32

    _, data = bech32.bech32_decode(invoice)
    assert data is not None
    return bech32.bech32_encode(hrp, data)
