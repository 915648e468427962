"""Invoice decoding and the checks every invoice passes before a wallet sees it."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from httpay import InvoiceError, check_invoice, decode_invoice
from httpay.lightning import offer_price_msat
from tests.helpers import NODE_KEY, make_invoice


def test_decode_reads_amount_network_hash_payee_expiry() -> None:
    s, pre = make_invoice(10_000, description="1 Credit Package", expiry=900)
    inv = decode_invoice(s)
    assert inv.amount_msat == 10_000 and inv.amount_sat == 10
    assert inv.network == "regtest"
    assert inv.description == "1 Credit Package"
    assert inv.payee == NODE_KEY.public_key.format().hex()
    assert inv.expiry_s == 900 and not inv.expired()
    import hashlib

    assert inv.payment_hash == hashlib.sha256(bytes.fromhex(pre)).hexdigest()
    assert "10 sat" in str(inv) and "regtest" in str(inv)
    assert decode_invoice("lightning:" + s).payment_hash == inv.payment_hash


@pytest.mark.parametrize("bad", ["", "   ", "lnbc1xyz", "hello", "lnbcrt" + "q" * 200])
def test_garbage_is_a_decode_error(bad: str) -> None:
    with pytest.raises(InvoiceError) as err:
        decode_invoice(bad)
    assert err.value.check == "decode"


def test_tampered_invoice_changes_the_payee() -> None:
    s, _ = make_invoice(10_000)
    # flip one character of the data part: the signature no longer matches the original node
    i = len("lnbcrt100n1") + 10
    t = s[:i] + ("q" if s[i] != "q" else "p") + s[i + 1:]
    try:
        inv = decode_invoice(t)
    except InvoiceError:
        return
    with pytest.raises(InvoiceError) as err:
        check_invoice(inv, network="regtest", expected_msat=10_000, payee=NODE_KEY.public_key.format().hex())
    assert err.value.check in ("payee", "payment_hash")


def _check(s: str, **kw):  # type: ignore[no-untyped-def]
    args = {"network": "regtest", "expected_msat": 10_000, "tolerance": 0.05}
    args.update(kw)
    return check_invoice(decode_invoice(s), **args)


def test_checks_pass_for_a_fair_invoice() -> None:
    s, _ = make_invoice(10_400)
    assert _check(s).amount_msat == 10_400


@pytest.mark.parametrize(
    ("kwargs", "check_kw", "check"),
    [
        ({"amount_msat": None}, {}, "amount_missing"),
        ({"network": "bitcoin"}, {}, "network"),
        ({"date": int(time.time()) - 7200, "expiry": 60}, {}, "expired"),
        ({"amount_msat": 10_501}, {}, "amount_above_offer"),
        ({"amount_msat": 9_000}, {"max_msat": 8_000}, "amount_above_limit"),
        ({}, {"payee": "02" + "11" * 32}, "payee"),
        ({}, {"payment_hash": "00" * 32}, "payment_hash"),
    ],
)
def test_each_check_refuses(kwargs, check_kw, check) -> None:  # type: ignore[no-untyped-def]
    s, _ = make_invoice(**{"amount_msat": 10_000, **kwargs})
    with pytest.raises(InvoiceError) as err:
        _check(s, **check_kw)
    assert err.value.check == check
    assert str(err.value)


def test_expiry_is_judged_at_the_given_time() -> None:
    s, _ = make_invoice(10_000, expiry=60)
    inv = decode_invoice(s)
    later = datetime.now(UTC) + timedelta(seconds=61)
    with pytest.raises(InvoiceError, match="expired"):
        check_invoice(inv, network="regtest", expected_msat=None, now=later)


def test_offer_prices_in_msat() -> None:
    assert offer_price_msat(1, "USD", 100_000) == 10_000
    assert offer_price_msat(499, "USD", 100_000) == 4_990_000
    assert offer_price_msat(21, "SAT", None) == 21_000
    assert offer_price_msat(1, "USD", None) is None
    assert offer_price_msat(1, "EUR", 100_000) is None


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 10**9), st.integers(1, 10**9), st.floats(0, 0.5))
def test_amount_bound_is_exact(amount, expected, tol) -> None:  # type: ignore[no-untyped-def]
    s, _ = make_invoice(amount)
    inv = decode_invoice(s)
    bound = int(expected * (1 + tol))
    if amount <= bound:
        assert check_invoice(inv, network="regtest", expected_msat=expected, tolerance=tol) is inv
    else:
        with pytest.raises(InvoiceError):
            check_invoice(inv, network="regtest", expected_msat=expected, tolerance=tol)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_decode_never_raises_anything_but_invoice_error(text) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(InvoiceError):
        decode_invoice(text)


def test_an_absurd_expiry_reads_as_never() -> None:
    s, _ = make_invoice(10_000, expiry=2**40)
    inv = decode_invoice(s)
    assert inv.expires_at.year == 9999 and not inv.expired()
    assert "9999" in str(inv)
