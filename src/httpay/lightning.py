"""BOLT11 invoices: decode them and check them against what was offered, before any payment.

Decoding uses `httpay.bolt11_reader` (it verifies the signature and recovers the payee, and agrees
with the `bolt11` package field by field at a tenth of its cost). The
checks are pure functions of the invoice, the offer, the wallet's network, a BTC/USD rate
and the current time, so they can be tested by the thousand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from httpay.amounts import MAX_MSAT, MSAT_PER_BTC, as_decimal, rate_ok, sat_text
from httpay.errors import InvoiceError
from httpay.safe import clean
from httpay.view import View, kv, payable
from httpay.view import rate as view_rate

__all__ = ["MAX_MSAT", "MSAT_PER_BTC", "NETWORKS", "Invoice", "check_invoice", "decode_invoice", "offer_price_msat"]

# bolt11's currency codes -> the network names wallets use.
NETWORKS = {"bc": "bitcoin", "tb": "testnet", "tbs": "signet", "bcrt": "regtest", "sb": "simnet"}


@dataclass(frozen=True)
class Invoice:
    """A decoded BOLT11 invoice: what it asks, to whom, until when."""

    bolt11: str = field(repr=False)
    payment_hash: str
    amount_msat: int | None
    network: str
    created_at: datetime
    expiry_s: int
    description: str | None
    payee: str | None
    description_hash: str | None = None

    @property
    def expires_at(self) -> datetime:
        # an absurd expiry (beyond year 9999) reads as "never", not as an OverflowError
        try:
            return datetime.fromtimestamp(self.created_at.timestamp() + self.expiry_s, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return datetime.max.replace(tzinfo=UTC)

    def expired(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        return now >= self.expires_at

    @property
    def amount_sat(self) -> float | None:
        return None if self.amount_msat is None else self.amount_msat / 1000

    def usd(self, usd_per_btc: float | None) -> float | None:
        """The invoice's value in USD at the given rate (None if either is unknown)."""
        if self.amount_msat is None or not usd_per_btc:
            return None
        return self.amount_msat / MSAT_PER_BTC * usd_per_btc

    def __str__(self) -> str:
        amt = f"{sat_text(self.amount_msat)} sat" if self.amount_msat is not None else "no amount"
        return (
            f"BOLT11 invoice on {clean(self.network, 20)}: {amt}, '{clean(self.description or '')}', "
            f"expires {self.expires_at:%Y-%m-%d %H:%M:%S} UTC, payee {(self.payee or '?')[:16]}…"
        )

    def view(self, usd_per_btc: float | None = None) -> View:
        """The invoice as fields a person checks before paying: amount (sat, and USD at a known
        rate), network, description, hash, payee, and how long it stays payable."""
        if self.amount_msat is None:
            shown = "none (httpay refuses amount-less invoices)"
        else:
            in_usd = self.usd(view_rate(usd_per_btc))
            shown = f"{sat_text(self.amount_msat)} sat" + (f" ≈ ${in_usd:,.4f}" if in_usd is not None else "")
        return kv("BOLT11 invoice", [
            ("amount", shown),
            ("network", self.network),
            ("description", self.description or "—"),
            ("payment hash", self.payment_hash),
            ("payee", self.payee or "?"),
            ("created", f"{self.created_at:%Y-%m-%d %H:%M:%S} UTC"),
            ("expires", f"{self.expires_at:%Y-%m-%d %H:%M:%S} UTC ({self.expiry_s} s)"),
            ("status", payable(self.expires_at)),
        ], name="invoice")

    def __rich__(self) -> Any:
        return self.view().to_rich()

    def _repr_html_(self) -> str:
        return self.view().to_html()


def decode_invoice(bolt11: str) -> Invoice:
    """Decode and signature-check a BOLT11 string; raise InvoiceError (check='decode') if it is not one."""
    from httpay.bolt11_reader import Bolt11Invalid, read_bolt11

    if not isinstance(bolt11, str) or not bolt11.strip():
        raise InvoiceError("the invoice is empty or not a string", check="decode")
    text = bolt11.strip()
    if text.lower().startswith("lightning:"):
        text = text[len("lightning:"):]
    try:
        inv = read_bolt11(text)
    except Bolt11Invalid as exc:
        raise InvoiceError(f"not a valid BOLT11 invoice ({exc})", check="decode") from None
    if inv.amount_msat is not None and not 0 <= inv.amount_msat <= MAX_MSAT:
        raise InvoiceError(
            "the invoice's amount is more than all the bitcoin there is; not a real invoice", check="amount_above_limit"
        )
    if not inv.payment_hash or len(inv.payment_hash) != 64:
        raise InvoiceError("the invoice carries no valid payment hash", check="decode")
    return Invoice(
        bolt11=text,
        payment_hash=inv.payment_hash,
        amount_msat=inv.amount_msat,
        network=NETWORKS.get(inv.currency, inv.currency),
        created_at=datetime.fromtimestamp(inv.timestamp, tz=UTC),
        expiry_s=inv.expiry if inv.expiry is not None else 3600,
        description=inv.description,
        payee=inv.payee,
        description_hash=inv.description_hash,
    )


def offer_price_msat(amount: int, currency: str, usd_per_btc: float | None) -> int | None:
    """What an offer's price is worth in msat, or None if no rate makes that knowable."""
    cur = currency.upper()
    if cur in ("SAT", "SATS"):
        return amount * 1000
    if cur == "MSAT":
        return amount
    if cur == "BTC":  # smallest unit of BTC is the satoshi
        return amount * 1000
    if cur == "USD" and rate_ok(usd_per_btc):  # an inf or NaN rate is no rate
        # exact: cents * 1e9 / rate, rounded up so the bound never shrinks below the price
        return math.ceil(Fraction(amount) * (MSAT_PER_BTC // 100) / as_decimal(usd_per_btc))
    return None


def check_invoice(
    invoice: Invoice,
    *,
    network: str | None,
    expected_msat: int | None,
    tolerance: float = 0.0,
    max_msat: int | None = None,
    now: datetime | None = None,
    payee: str | None = None,
    payment_hash: str | None = None,
    max_name: str = "per payment",
) -> Invoice:
    """Every check an invoice must pass before a wallet sees it. Returns it, or raises InvoiceError.

    - amount present (an amount-less invoice would let the payee pick the price);
    - network matches the wallet's (None: no wallet is known, as in a preview without one);
    - not expired at `now`;
    - amount at most `expected_msat * (1 + tolerance)`: the offer's price at the policy's rate;
    - amount at most `max_msat` (the per-payment limit), if given;
    - payee and payment hash equal the pinned ones, if given.
    """
    if invoice.amount_msat is None:
        raise InvoiceError(
            "the invoice has no amount; httpay never pays amount-less invoices because the payee would choose the price",
            check="amount_missing",
        )
    if invoice.amount_msat <= 0:
        raise InvoiceError(f"the invoice amount must be positive, got {invoice.amount_msat} msat", check="amount_missing")
    if network is not None and invoice.network != network:
        raise InvoiceError(
            f"the invoice is for the {clean(invoice.network, 20)} network but the wallet pays on {network}",
            check="network",
        )
    if invoice.expired(now):
        raise InvoiceError(
            f"the invoice expired at {invoice.expires_at:%Y-%m-%d %H:%M:%S} UTC; ask the service for a new one",
            check="expired",
        )
    if expected_msat is not None:
        # exact: no float at any size (no tolerance, the usual case, is the price itself)
        bound = expected_msat if tolerance == 0 and isinstance(expected_msat, int) \
            else math.floor(expected_msat * (1 + as_decimal(tolerance)))
        if invoice.amount_msat > bound:
            raise InvoiceError(
                f"the invoice asks {sat_text(invoice.amount_msat)} sat but the offer is worth "
                f"{sat_text(expected_msat)} sat (+{tolerance:.0%} tolerance = {sat_text(bound)} sat)",
                check="amount_above_offer",
            )
    if max_msat is not None and invoice.amount_msat > max_msat:
        raise InvoiceError(
            f"the invoice asks {sat_text(invoice.amount_msat)} sat, above "
            + (f"the limit of {sat_text(max_msat)} sat per payment" if max_name == "per payment"
               else f"{max_name} of {sat_text(max_msat)} sat"),
            check="amount_above_limit",
        )
    if payee is not None and (invoice.payee or "").lower() != payee.lower():
        raise InvoiceError(f"the invoice is payable to {clean(invoice.payee, 70)}, not the pinned payee {payee}", check="payee")
    if payment_hash is not None and invoice.payment_hash != payment_hash.lower():
        raise InvoiceError("the invoice's payment hash is not the one the challenge named", check="payment_hash")
    return invoice
