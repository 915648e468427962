"""Amounts as exact integers, and as text a person reads, with no float anywhere in between.

A float turns a 4,000-digit amount into an OverflowError and 1e308 into "inf sat", so amounts
are read into bounded integers (`checked`) and formatted with integer arithmetic only.
"""

from __future__ import annotations

import functools
import math
import re
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
    """'$12.50' from a dollar up; below one, three significant digits ('$0.025', '$0.015', '$0.01',
    '$0.005'), an amount under a cent with at least `small_places` places, at most 8. Every amount
    is rounded by this one rule, so 15 sat never reads as the 10 sat beside it, 25 sat not as 20,
    and nothing that is not zero as "$0.00".

    Real amounts round as they always have (float formatting); absurd ones exactly, never 'inf'."""
    if abs(msat) <= MAX_MSAT and rate_ok(usd_per_btc):
        usd_f = msat / MSAT_PER_BTC * usd_per_btc
        places, keep = _places(abs(usd_f), small_places)
        return "$" + _padded_to(f"{usd_f:,.{places}f}", keep)
    usd = usd_value(msat, usd_per_btc)
    places, keep = _places(float(abs(usd)), small_places) if abs(usd) < 1 else (2, 2)
    rounded = math.floor(abs(usd) * 10**places + Fraction(1, 2)) * (-1 if usd < 0 else 1)  # half up
    return "$" + _padded_to(decimal_text(rounded, places, strip=False), keep)


def _places(usd: float, small_places: int) -> tuple[int, int]:
    """(decimal places showing three significant digits, the places kept when they end in zeros):
    cents from a dollar up, and for nothing; at least `small_places` under a cent."""
    if not 0 < usd < 1:
        return 2, 2
    keep = 2 if usd >= 0.01 else small_places
    return max(keep, min(8, 2 - math.floor(math.log10(usd)))), keep


def _padded_to(text: str, keep: int) -> str:
    """`text` without the zeros its significant digits padded beyond `keep` places: '0.0250' -> '0.025'."""
    whole, dot, frac = text.partition(".")
    if not dot or len(frac) <= keep:
        return text
    return f"{whole}.{frac.rstrip('0').ljust(keep, '0')}" if keep or frac.rstrip("0") else whole


def rate_ok(rate: object) -> TypeGuard[float]:
    """True for a usable BTC/USD rate: a finite positive number (not a bool, not NaN, not inf)."""
    return (isinstance(rate, int | float) and not isinstance(rate, bool) and 0 < rate < 10**15
            and math.isfinite(rate))  # the range first: math.isfinite of a huge int overflows


def fmt_msat(msat: int, usd_per_btc: float | None = None) -> str:
    """'10 sat ($0.01)': how amounts are shown to people and to LLMs (exact at any size)."""
    sat = sat_text(msat) + " sat"
    return f"{sat} ({usd_text(msat, usd_per_btc)})" if rate_ok(usd_per_btc) else sat


# a refusal's advice when the price alone fits and only the fee cap held beside it does not
FEES_ADVICE = ", or hold less for routing fees (max_fee_msat; the real fee is counted once the payment settles)"


def fee_cap_text(fee_cap_msat: int | None, usd_per_btc: float | None = None) -> str:
    """' + up to 50 sat ($0.05) in fees' after a price: what routing may add to it, the cap every
    budget holds and the wallet may spend ('' when nothing may be added)."""
    return f" + up to {fmt_msat(fee_cap_msat, usd_per_btc)} in fees" if fee_cap_msat else ""


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


def amount_unit(currency: str) -> str:
    """The unit `format_amount` reads an amount of `currency` in, said for a script: '1/100 USD' (cents),
    'sat', '1/1000000 USDC', 'msat', or the smallest unit of a currency httpay does not know."""
    cur = currency.upper()
    if cur in ("USD", "EUR", "GBP", "CAD", "AUD"):
        return f"1/100 {cur}"
    if cur in ("SAT", "SATS", "BTC"):
        return "sat"
    if cur in ("USDC", "USDT", "EURC", "PYUSD"):
        return f"1/1000000 {cur}"
    if cur == "MSAT":
        return "msat"
    return f"the smallest unit of {clean(currency, 48)}"


def price_and_worth(price: object, worth: str) -> str:
    """An offer's price and what it comes to, as a person reads it: "0.01 USDC ≈ 10 sat ($0.01)";
    a price in sat is its own worth ("10 sat ($0.01)", never "10 sat ≈ 10 sat ($0.01)"). `price`: a
    Money, or its text as a ledger or an approval kept it."""
    unit = getattr(price, "unit", None)
    in_sat = unit in ("msat", "sat") if unit is not None else bool(re.fullmatch(r"[\d,.]+ m?sat", str(price).strip()))
    return worth if in_sat else f"{price} ≈ {worth}"
