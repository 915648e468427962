"""Amounts as exact integers, and as text a person reads, with no float anywhere in between.

A float turns a 4,000-digit amount into an OverflowError and 1e308 into "inf sat", so amounts
are read into bounded integers (`checked`) and formatted with integer arithmetic only.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import TypeGuard

from httpay.safe import clean

MSAT_PER_BTC = 100_000_000_000
MAX_MSAT = 21_000_000 * MSAT_PER_BTC   # every bitcoin there will ever be: no real amount is larger
MAX_OFFER_AMOUNT = 2**63 - 1           # an offer's amount in its currency's smallest unit (fits the ledger)
_SHOWN_DIGITS = 40                     # an integer longer than this is shown by its size, not digit by digit


def _too_big(n: int) -> bool:
    return abs(n).bit_length() > _SHOWN_DIGITS * 10 // 3  # about 10^40: cheap on a number of any size


def _magnitude(n: int, scale_digits: int) -> str:
    """'over 10^36' for an absurd integer, computed from its bit length (no int->str of it)."""
    exponent = int((abs(n).bit_length() - 1) * math.log10(2)) - scale_digits
    return f"over 10^{max(exponent, 0)}"


def decimal_text(amount: int, decimals: int, *, strip: bool = True) -> str:
    """`amount` smallest units shown with `decimals` places, thousands separated: '1,234.50'.

    `strip` drops trailing zeros of the fraction (and the point when none is left)."""
    if _too_big(amount):
        return ("-" if amount < 0 else "") + _magnitude(amount, decimals)
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**decimals)
    text = f"{whole:,}"
    if decimals:
        digits = f"{frac:0{decimals}d}"
        if strip:
            digits = digits.rstrip("0")
        if digits:
            text += "." + digits
    return sign + text


def sat_text(msat: int) -> str:
    """msat as sat, exact to the msat: 10_500 -> '10.5'."""
    return decimal_text(msat, 3)


@functools.lru_cache(maxsize=256, typed=True)
def as_decimal(number: float) -> Fraction:
    """`Fraction(str(number))`: a rate or a tolerance as the decimal it prints as, exactly.

    Remembered (a Fraction is immutable; typed, so 2**60 and 2.0**60, equal but printed apart,
    never share an entry): the same policy rate and tolerance are read on every payment."""
    return Fraction(str(number))


def usd_value(msat: int, usd_per_btc: float) -> Fraction:
    """The exact USD worth of `msat` at `usd_per_btc` (the rate taken as the decimal it prints as)."""
    return Fraction(msat, MSAT_PER_BTC) * as_decimal(usd_per_btc)


def usd_text(msat: int, usd_per_btc: float, *, small_places: int = 2) -> str:
    """'$0.01'; an amount under a cent gets at least `small_places` places and enough to show its
    first digit ('1 sat ($0.001)', never a limit of "$0.00" that is not nothing), at most 8.

    Real amounts round as they always have (float formatting); absurd ones exactly, never 'inf'."""
    if abs(msat) <= MAX_MSAT and rate_ok(usd_per_btc):
        usd_f = msat / MSAT_PER_BTC * usd_per_btc
        if 0 < usd_f < 0.01:
            return f"${usd_f:,.{_small_places(usd_f, small_places)}f}"
        return f"${usd_f:,.2f}"
    usd = usd_value(msat, usd_per_btc)
    places = _small_places(float(usd), small_places) if 0 < usd < Fraction(1, 100) else 2
    return "$" + decimal_text(math.floor(usd * 10**places + Fraction(1, 2)), places, strip=False)  # half up


def _small_places(usd: float, at_least: int) -> int:
    return max(at_least, min(8, -math.floor(math.log10(usd)))) if usd > 0 else at_least


def rate_ok(rate: object) -> TypeGuard[float]:
    """True for a usable BTC/USD rate: a finite positive number (not a bool, not NaN, not inf)."""
    return (isinstance(rate, int | float) and not isinstance(rate, bool) and 0 < rate < 10**15
            and math.isfinite(rate))  # the range first: math.isfinite of a huge int overflows


def fmt_msat(msat: int, usd_per_btc: float | None = None) -> str:
    """'10 sat ($0.01)': how amounts are shown to people and to LLMs (exact at any size)."""
    sat = sat_text(msat) + " sat"
    return f"{sat} ({usd_text(msat, usd_per_btc)})" if rate_ok(usd_per_btc) else sat


def format_amount(amount: int, currency: str) -> str:
    """Render an amount in the currency's smallest unit for a person (exact integers, any size)."""
    cur = currency.upper()
    if cur in ("USD", "EUR", "GBP", "CAD", "AUD"):
        sym = {"USD": "$", "EUR": "€", "GBP": "£"}.get(cur, "")
        return f"{sym}{decimal_text(amount, 2, strip=False)}" + ("" if sym else f" {cur}")
    if cur in ("SAT", "SATS", "BTC"):
        return f"{decimal_text(amount, 0)} sat"
    if cur in ("USDC", "USDT", "EURC", "PYUSD"):  # stablecoins with 6 decimals (x402's usual assets)
        return decimal_text(amount, 6) + f" {cur}"
    if cur == "MSAT":
        return decimal_text(amount, 3) + " sat"
    return f"{decimal_text(amount, 0)} {clean(currency, 48)} (smallest unit)"  # as written: an address keeps its case
