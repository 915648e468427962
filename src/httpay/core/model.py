"""The neutral model every dialect reads a 402 into: `Money`, `Offer`, `Challenge`, `Quote`.

Pure data with no I/O and no knowledge of any dialect. A dialect keeps its own wire types
(L402 v0.2's `PaymentOffers`, x402's requirements) as the `payload`/`raw` of these, so the flow,
the quote and every surface work on one shape while nothing of the wire is lost.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from httpay.amounts import (
    MSAT_PER_BTC,
    as_decimal,
    decimal_text,
    fee_cap_text,
    fmt_msat,
    format_amount,
    price_and_worth,
    rate_ok,
)
from httpay.lightning import offer_price_msat
from httpay.safe import clean
from httpay.view import Cell, Column, View, kv, row, sat
from httpay.view import rate as view_rate

_FIAT = ("USD", "EUR", "GBP", "CAD", "AUD")
_SATS = ("SAT", "SATS", "BTC")  # amounts in sat (the smallest unit of BTC)


@dataclass(frozen=True)
class Money:
    """An exact price: `amount` whole smallest units of `currency`.

    Lightning: "MSAT" (or "SAT"/"BTC" counted in sat); fiat: "USD" in cents; a token: its symbol
    with `decimals` (its atomic unit), `asset` (contract address) and `usd_pegged` when one token is
    worth one dollar. A price whose worth no rate can tell (an unknown currency, a token of unknown
    decimals) has no msat value, and a limit never lets such an offer through.
    """

    amount: int
    currency: str
    decimals: int | None = None
    asset: str | None = None
    usd_pegged: bool = False

    @classmethod
    def msat(cls, amount: int) -> Money:
        return cls(amount, "MSAT")

    @property
    def unit(self) -> str:
        """What one of `amount` is, in words: 'msat', 'sat', 'USD cent', '1e-6 USDC'."""
        cur = self.currency.upper()
        if cur == "MSAT":
            return "msat"
        if cur in _SATS:
            return "sat"
        if cur in _FIAT:
            return f"{cur} cent"
        if self.decimals is not None:
            return f"1e-{self.decimals} {clean(self.currency, 24)}" if self.decimals else clean(self.currency, 24)
        return f"smallest unit of {clean(self.currency, 24)}"

    def in_msat(self, usd_per_btc: float | None) -> int | None:
        """What this price is worth in msat, rounded up (a bound never shrinks below the price); None
        when no rate makes that knowable."""
        cur = self.currency.upper()
        if cur == "MSAT":
            return self.amount
        if cur in _SATS:
            return self.amount * 1000
        usd = self.in_usd()
        if usd is None or not rate_ok(usd_per_btc):
            return None
        return math.ceil(usd * MSAT_PER_BTC / as_decimal(usd_per_btc))

    def in_usd(self, usd_per_btc: float | None = None) -> Fraction | None:
        """The exact USD worth: fiat USD and USD-pegged tokens always; Lightning amounts at a rate."""
        cur = self.currency.upper()
        if cur == "USD":
            return Fraction(self.amount, 100)
        if self.usd_pegged and self.decimals is not None:
            return Fraction(self.amount, 10**self.decimals)
        msat = self.in_msat(None) if cur in (*_SATS, "MSAT") else None
        if msat is not None and rate_ok(usd_per_btc):
            return Fraction(msat, MSAT_PER_BTC) * as_decimal(usd_per_btc)
        return None

    def __str__(self) -> str:
        if self.currency.upper() == "MSAT":
            return fmt_msat(self.amount)
        if self.decimals is not None:
            return f"{decimal_text(self.amount, self.decimals)} {clean(self.currency, 48)}"
        return format_amount(self.amount, self.currency)


@dataclass(frozen=True)
class Offer:
    """One way to buy what a 402 guards: its price, what it buys, how it can be paid.

    `payment_methods` name every way the service takes ("lightning", "credit_card",
    "x402:exact:eip155:8453"), `pay_method` the one of them httpay would pay by (None: none is a
    method httpay knows), `rail` what pays it (a Lightning wallet, an EVM signer; another name, such
    as "solana", for what httpay has no way to pay) and `network` where it settles; `unpayable` says why
    httpay must not pay it (found when the dialect read it: an unknown scheme, an asset whose worth
    cannot be told). `pay_to` is who is paid, as the challenge names them (an invoice's payee node,
    an x402 `payTo`, an MPP recipient), and `asset` the token contract, so a person checks both
    before saying yes (server text: shown cleaned). `payload` is the dialect's own offer.
    """

    offer_id: str
    title: str
    price: Money
    payment_methods: tuple[str, ...]
    description: str = ""
    type: str = "one-time"
    balance: int | None = None  # the credits it buys, where the service sells credits
    duration: str | None = None
    dialect: str = ""
    pay_method: str | None = None  # the one of payment_methods httpay pays it by (None: none it can)
    rail: str = "lightning"  # what pays it: "lightning" (a wallet pays an invoice) or "evm" (a signer signs)
    network: str | None = None
    unpayable: str | None = None
    payload: Any = field(default=None, repr=False, compare=False)
    proposal: str | None = None  # the unmerged proposal it follows: paid only with Policy(proposals=[...])
    pay_to: str | None = None
    asset: str | None = None

    @property
    def amount(self) -> int:
        return self.price.amount

    @property
    def currency(self) -> str:
        return self.price.currency

    def supports(self, method: str) -> bool:
        return method in self.payment_methods

    def to_dict(self) -> dict[str, Any]:
        """The offer as JSON-able data (the L402 v0.2 field names, which every dialect's offers share)."""
        d: dict[str, Any] = {
            "offer_id": self.offer_id, "title": self.title, "description": self.description, "type": self.type,
            "amount": self.price.amount, "currency": self.price.currency, "payment_methods": list(self.payment_methods),
            "dialect": self.dialect,
        }
        if self.balance is not None:
            d["balance"] = self.balance
        if self.duration is not None:
            d["duration"] = self.duration
        if self.unpayable is not None:
            d["unpayable"] = self.unpayable
        if self.proposal is not None:
            d["proposal"] = self.proposal
        if self.network is not None:
            d["network"] = clean(self.network, 100)
        if self.pay_to is not None:
            d["pay_to"] = clean(self.pay_to, 200)
        if self.asset is not None:
            d["asset"] = clean(self.asset, 200)
        return d

    def __str__(self) -> str:
        credits = f", {self.balance:,} credits" if self.balance is not None else ""
        return (f"{clean(self.offer_id, 80)}: {clean(self.title, 120)} for {self.price}{credits} "
                f"({clean(', '.join(self.payment_methods), 120)})")


@dataclass(frozen=True)
class Challenge:
    """A 402 read by one dialect: what it offers, and how payments for it are shared.

    `reuse` says what one payment buys: "challenge" (every request that met this challenge: an
    account is credited), "scope" (a credential that serves its whole token scope: classic L402) or
    "request" (this one request: x402). `key` joins the requests one payment answers (single
    flight and the ledger's challenge key); `raw` is the dialect's parsed challenge.
    """

    dialect: str
    offers: tuple[Offer, ...]
    key: str
    url: str = ""
    version: str = ""
    reuse: str = "challenge"
    raw: Any = field(default=None, repr=False, compare=False)
    identified: bool = False  # the service asks for a call identifier (the ledger's call key), whatever the method
    # Which of several credentials of one scope this asks for (an Aperture token's services: one host
    # fronting several services issues a token per service); None: one kind serves the whole scope
    variant: str | None = None

    @property
    def payment_methods(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m for o in self.offers for m in o.payment_methods))

    def offer(self, offer_id: str) -> Offer | None:
        return next((o for o in self.offers if o.offer_id == offer_id), None)

    def __iter__(self) -> Any:
        return iter(self.offers)

    def __len__(self) -> int:
        return len(self.offers)

    def __str__(self) -> str:
        version = f" v{clean(self.version, 12)}" if self.version else ""
        return f"{self.dialect}{version} challenge with {len(self.offers)} offer(s)"

    def view(self, usd_per_btc: float | None = None) -> View:
        return offers_view(self.offers, title=str(self), usd_per_btc=usd_per_btc)

    def __rich__(self) -> Any:
        return self.view().to_rich()

    def _repr_html_(self) -> str:
        return self.view().to_html()


@dataclass(frozen=True)
class Quote:
    """What the policy would pay for one challenge: one offer, by one method, at one price.

    The price is in msat (and USD) at the one rate resolved for this attempt; `checks` lists every
    limit the quote was held to, in words. The inputs are kept (`spent_msat`, `max_price_msat`,
    `methods`) so an approver's other choice is quoted again on exactly the same ones.
    """

    challenge: Challenge
    offer: Offer
    method: str
    price_msat: int | None
    url: str
    host: str
    usd_per_btc: float | None
    alternatives: tuple[Offer, ...] = ()
    checks: tuple[str, ...] = ()
    spent_msat: int = 0
    max_price_msat: int | None = None
    methods: tuple[str, ...] | None = None
    challenges: tuple[Challenge, ...] = ()  # every challenge of the 402 it chose among, when there were several
    fee_cap_msat: int = 0  # the most routing fees may add (a Lightning payment), held with the price by every budget
    cap_msat: int | None = None  # the most this one payment may cost, fees included (per-payment limit, price cap)

    @property
    def offers(self) -> tuple[Offer, ...]:
        """Every offer it chose among, of every challenge of the 402 (what an approver may pick from)."""
        if self.challenges:
            return tuple(o for c in self.challenges for o in c.offers)
        return self.challenge.offers

    @property
    def usd(self) -> Fraction | None:
        """The price in USD: the offer's own USD price, else its msat price at the quote's rate."""
        own = self.offer.price.in_usd(self.usd_per_btc)
        if own is not None:
            return own
        if self.price_msat is None or not rate_ok(self.usd_per_btc):
            return None
        return Fraction(self.price_msat, MSAT_PER_BTC) * as_decimal(self.usd_per_btc)

    def view(self) -> View:
        """The quote as a person checks it: what, how, for how much, and every limit it was held to."""
        price = fmt_msat(self.price_msat, self.usd_per_btc) if self.price_msat is not None else "—"
        pairs = [("offer", f"{self.offer.offer_id} '{self.offer.title}'"), ("price", price_and_worth(self.offer.price, price)),
                 ("by", self.method), ("for", self.url)]
        if self.fee_cap_msat:
            pairs.insert(2, ("fees", f"up to {fmt_msat(self.fee_cap_msat, self.usd_per_btc)} more (routing)"))
        pairs += [("checked", c) for c in self.checks]
        if self.alternatives:
            pairs.append(("also fits", ", ".join(o.offer_id for o in self.alternatives)))
        return kv(f"Quote ({self.challenge.dialect})", pairs, name="quote")

    def __rich__(self) -> Any:
        return self.view().to_rich()

    def _repr_html_(self) -> str:
        return self.view().to_html()

    def __str__(self) -> str:
        price = fmt_msat(self.price_msat, self.usd_per_btc) if self.price_msat is not None else str(self.offer.price)
        fees = fee_cap_text(self.fee_cap_msat, self.usd_per_btc)
        return (f"pay {clean(self.offer.offer_id, 80)} '{clean(self.offer.title)}' ({price_and_worth(self.offer.price, price)}{fees}) "
                f"by {clean(self.method, 80)} for {clean(self.url)}")


# -- views: one description, drawn as a rich table, notebook HTML or text ------------------------------
def _credits(o: Any) -> str:
    if o.balance is not None:
        return f"{o.balance:,}" + (f" / {o.duration}" if o.duration else "")
    return o.duration or "—"


OFFERS_WIDE = 100  # terminal columns from which the offers table shows credits and type too


def offers_view(offers: Iterable[Any], title: str = "Offers", usd_per_btc: float | None = None,
                chosen: str | None = None) -> View:
    """Offers as a table a person compares: price as offered, in sat and in USD (at a known BTC/USD
    rate), what it buys, how it is paid, and by which dialect when a 402 offers several; the `chosen`
    offer marked. Any objects with an Offer's fields do."""
    usd_rate = view_rate(usd_per_btc)
    listed = list(offers)
    dialects = {getattr(o, "dialect", "") for o in listed}
    several = len(dialects) > 1
    usd_of = [o.price.in_usd(usd_rate) if hasattr(o.price, "in_usd") else None for o in listed]
    with_usd = any(u is not None and o.currency.upper() != "USD" for o, u in zip(listed, usd_of, strict=True))
    columns = [Column("id", style="accent code", wrap=False), Column("title", min_width=12),
               Column("price", align="right"), Column("≈ sat", align="right")]
    if with_usd:
        columns.append(Column("≈ USD", align="right"))
    columns += [Column("credits", align="right"), Column("type"), Column("methods")]
    pays_to = any(getattr(o, "pay_to", None) for o in listed)
    if pays_to:
        columns.append(Column("pays", style="code", wrap=False))
    if several:
        columns.append(Column("via"))
    rows, unknown = [], False
    for o, usd in zip(listed, usd_of, strict=True):
        price = o.price  # the neutral offers' price is exact money that knows its worth in msat
        in_sat = sat(price.in_msat(usd_rate) if hasattr(price, "in_msat") else offer_price_msat(o.amount, o.currency,
                                                                                                usd_rate))
        unknown = unknown or in_sat == "—"
        mark = " ✔" if chosen == o.offer_id else ""
        cells: list[Any] = [Cell(clean(o.offer_id, 80) + mark), Cell(o.title, hint=o.description), str(price), in_sat]
        if with_usd:
            cells.append(_usd_text(usd))
        cells += [_credits(o), o.type, ", ".join(o.payment_methods)]
        if pays_to:
            cells.append(Cell(_short(getattr(o, "pay_to", None)), hint=_pays_hint(o)))
        if several:
            cells.append(clean(o.dialect, 20) + (" (not payable)" if getattr(o, "unpayable", None) else ""))
        rows.append(row(*cells, style="bold good" if chosen == o.offer_id else ""))
    notes = ("≈ sat needs a BTC/USD rate (usd_per_btc)",) if unknown else (f"at {usd_rate:,.0f} USD/BTC",) if usd_rate else ()
    wide = View(title, tuple(columns), tuple(rows), notes=tuple(Cell(n) for n in notes), name="offers")
    # an 80-column terminal shows what a choice turns on: credits, type and payee go (the title says what it buys)
    keep = [i for i, c in enumerate(columns) if c.label not in ("credits", "type", "pays")]
    narrow = replace(wide, columns=tuple(columns[i] for i in keep),
                     rows=tuple(replace(r, cells=tuple(r.cells[i] for i in keep)) for r in rows))
    return replace(wide, narrow=narrow, narrow_below=OFFERS_WIDE)


def _short(who: str | None) -> str:
    """A payee as a person compares it: its ends (`0x2096…287C`, `02e627…a1b2`); the whole is the hint."""
    if not who:
        return "—"
    who = clean(who, 200)
    return who if len(who) <= 14 else f"{who[:6]}…{who[-4:]}"


def _pays_hint(o: Any) -> str:
    """Who is paid, whole, and in which token: what a person checks before saying yes."""
    who, asset = getattr(o, "pay_to", None), getattr(o, "asset", None)
    return clean(f"pays {who or 'the service'}" + (f" in token {asset}" if asset else ""), 400)


def _usd_text(usd: Fraction | None) -> str:
    """A USD worth as a person reads it: cents for a dollar or more, four places below one."""
    if usd is None:
        return "—"
    if usd >= 1:
        return f"${float(usd):,.2f}"
    return f"${float(usd):.4f}".rstrip("0").rstrip(".") if usd else "$0"
