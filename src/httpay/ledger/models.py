"""A receipt: one line of the ledger, the truth about one payment attempt."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from httpay.amounts import amount_unit, fmt_msat, format_amount, rate_ok
from httpay.safe import clean, safe_url, short_url
from httpay.view import STATUS_TONE, Cell, Column, View, kv, row, sat, status_cell, usd
from httpay.view import rate as view_rate


class Status(str, enum.Enum):
    PENDING = "pending"   # written before the wallet is called; outcome not yet known
    SETTLED = "settled"   # the wallet paid; preimage proves it
    FAILED = "failed"     # the wallet did not pay; nothing left the wallet


@dataclass(frozen=True)
class Receipt:
    """One payment as the ledger knows it. The preimage is kept but never shown whole."""

    id: int
    status: Status
    created_at: datetime
    updated_at: datetime
    host: str
    url: str
    protocol: str
    method: str
    offer_id: str | None
    offer_title: str | None
    offer_amount: int | None
    offer_currency: str | None
    credits: int | None
    payment_hash: str | None
    amount_msat: int
    fee_msat: int = 0  # settled: the fee paid; pending: the most the wallet may spend (held in budgets)
    wallet: str | None = None
    challenge_key: str | None = None
    reason: str | None = None
    preimage: str | None = field(default=None, repr=False)
    wallet_id: str | None = None  # the stable identity of the wallet that made it (never a secret)
    tags: dict[str, str] = field(default_factory=dict)  # who spent it ({"agent": "research", "task": "T-17"})
    usd_per_btc: float | None = None  # the BTC/USD rate the payment was quoted at (for accounting in USD)

    @classmethod
    def of_row(cls, values: dict[str, Any]) -> Receipt:
        """The receipt of a ledger row holding every field, already converted: built without the
        frozen dataclass's per-field `__init__` (most of a ledger read's Python time); the same value."""
        if values.keys() != _FIELDS:
            return cls(**values)
        receipt = object.__new__(cls)
        receipt.__dict__.update(values)
        return receipt

    @property
    def total_msat(self) -> int:
        return self.amount_msat + (self.fee_msat or 0)

    @property
    def fee_text(self) -> str:
        """'fee 1 sat' once paid; a pending payment's 'fee up to 10 sat': the cap its budgets hold,
        not a fee charged (the wallet says what it cost when it settles)."""
        return ("fee up to " if self.status is Status.PENDING and self.fee_msat else "fee ") + fmt_msat(self.fee_msat)

    @property
    def when(self) -> str:
        return self.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")

    def __str__(self) -> str:
        what = f"{clean(self.offer_id, 80)} '{clean(self.offer_title, 120)}'" if self.offer_id else clean(self.protocol, 40)
        reason = f" ({clean(self.reason, 300)})" if self.reason else ""
        fee = (f"fee up to {self.fee_msat / 1000:,g} sat held" if self.status is Status.PENDING
               else f"fee {self.fee_msat / 1000:,g} sat")
        return (
            f"#{self.id} {self.when} {self.status.value:<7} {self.amount_msat / 1000:,g} sat + {fee} "
            f"to {clean(self.host, 120)} for {what} by {clean(self.method, 60)}{reason}"
        )

    def __repr__(self) -> str:
        return (
            f"Receipt(id={self.id}, status={self.status.value!r}, host={self.host!r}, offer_id={self.offer_id!r}, "
            f"amount_msat={self.amount_msat}, fee_msat={self.fee_msat}, payment_hash={(self.payment_hash or '')[:16]!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, without the preimage."""
        return {
            "id": self.id, "status": self.status.value, "created_at": self.created_at.isoformat(),
            "host": self.host, "url": self.url, "protocol": self.protocol, "method": self.method,
            "offer_id": self.offer_id, "offer_title": self.offer_title, "offer_amount": self.offer_amount,
            "offer_currency": self.offer_currency, **self._offer_unit(), "credits": self.credits,
            "payment_hash": self.payment_hash,
            "amount_msat": self.amount_msat, "fee_msat": self.fee_msat, "wallet": self.wallet, "wallet_id": self.wallet_id,
            "reason": self.reason, "tags": dict(self.tags), "usd_per_btc": self.usd_per_btc,
        }

    def _offer_unit(self) -> dict[str, str | None]:
        """What `offer_amount` counts (it is in the currency's smallest unit: 1 USD offer_amount is a
        cent) and the price as a person reads it: {"offer_amount_unit": "1/100 USD", "offer_price": "$0.01"}."""
        known = self.offer_amount is not None and bool(self.offer_currency)
        return {"offer_amount_unit": amount_unit(self.offer_currency or "") if known else None,
                "offer_price": format_amount(self.offer_amount or 0, self.offer_currency or "") if known else None}

    @property
    def proof(self) -> str:
        """What proves the payment, for a person and for accounting: "preimage verified" (it hashes
        to the invoice's payment hash), "preimage does NOT match", the service's "transaction ...",
        or "" (nothing yet)."""
        pre, want = self.preimage or "", (self.payment_hash or "").lower()
        if pre and want and len(pre) == 64 and all(c in "0123456789abcdefABCDEF" for c in pre):
            ok = hashlib.sha256(bytes.fromhex(pre)).hexdigest() == want
            return "preimage verified" if ok else "preimage does NOT match"
        if self.reason and self.reason.startswith("transaction "):
            return self.reason.split(" on ", 1)[0]
        return ""

    def view(self, usd_per_btc: float | None = None) -> View:
        """This payment as a receipt: what was bought where, for how much, and what proves it."""
        return receipt_view(self, usd_per_btc)

    def __rich__(self) -> Any:
        return self.view().to_rich()

    def _repr_html_(self) -> str:
        return self.view().to_html()


_FIELDS = {f.name for f in fields(Receipt)}  # every field: what `Receipt.of_row` needs, exactly


@dataclass(frozen=True)
class Refusal:
    """A payment httpay refused to make: when, for what, by which rule, and why (in words a person
    acts on). Nothing was paid; it is kept so a person overseeing an agent sees what was asked."""

    id: int
    created_at: datetime
    host: str
    url: str
    rule: str
    reason: str
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "created_at": self.created_at.isoformat(), "host": self.host, "url": self.url,
                "rule": self.rule, "reason": self.reason, "tags": dict(self.tags)}

    def view(self) -> View:
        return refusals_view([self])

    def __rich__(self) -> Any:
        return self.view().to_rich()

    def _repr_html_(self) -> str:
        return self.view().to_html()


def refusals_view(refusals: Iterable[Refusal], title: str = "Refused") -> View:
    """The payments httpay refused, newest first: when, where (the URL short, all of it on hover,
    secrets masked), the rule and the reason in its words, and who asked (the tags)."""
    rs = list(refusals)
    any_tags = any(r.tags for r in rs)
    columns = (Column("#", align="right", wrap=False), Column("when (UTC)", wrap=False),
               Column("host", wrap=False, max_width=24), Column("url", wrap=False, max_width=32),
               Column("rule", style="bad", wrap=False), Column("reason", ratio=3, overflow="fold"),
               *((Column("tags", wrap=False, max_width=30),) if any_tags else ()))
    rows = tuple(row(str(r.id), Cell(r.created_at.astimezone(UTC).strftime("%m-%d %H:%M:%S"),
                                     hint=r.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
                     r.host, Cell(_path(r.url), hint=safe_url(r.url), css_class="httpay-url", limit=60),
                     Cell(r.rule, css_class="httpay-rule", limit=60), Cell(r.reason, css_class="httpay-reason", limit=500),
                     *((Cell(tags_text(r.tags), css_class="httpay-tags"),) if any_tags else ()),
                     css_class="httpay-refusal") for r in rs)
    return View(title, columns, rows, empty="nothing refused", dense=True, name="refusals")


def receipt_view(r: Receipt, usd_per_btc: float | None = None) -> View:
    """One payment as a receipt a person hands on: URL, host, offer, amount and fee, USD at the
    rate it was quoted at, status, payment hash, proof, tags, time. Never the preimage itself."""
    quoted = r.usd_per_btc if rate_ok(r.usd_per_btc) else None
    rate = quoted or view_rate(usd_per_btc)
    offer = r.offer_title or r.offer_id or r.protocol
    if r.offer_id and r.offer_title:
        offer += f" ({r.offer_id})"
    if r.offer_amount is not None and r.offer_currency:
        offer += f" at {format_amount(r.offer_amount, r.offer_currency)}"
    in_usd = usd(r.total_msat, rate)
    at = (f"{in_usd} at {quoted:,.0f} USD/BTC (the rate it was quoted at)" if in_usd and quoted
          else f"{in_usd} at {rate:,.0f} USD/BTC (today's rate)" if in_usd and rate else "no BTC/USD rate known")
    proof = r.proof or ("none yet: the payment is pending" if r.status is Status.PENDING
                        else "none: nothing was paid" if r.status is Status.FAILED else "none recorded")
    pairs = [("URL", Cell(safe_url(r.url), limit=500)), ("host", Cell(r.host)), ("offer", Cell(offer)),
             ("amount", Cell(f"{fmt_msat(r.amount_msat)} + {r.fee_text}", style="bold")),
             ("in USD", Cell(at + (", fee included" if in_usd and r.fee_msat else ""))), ("status", status_cell(r.status.value)),
             ("paid by", Cell(f"{r.method} ({r.protocol})" + (f" from {r.wallet}" if r.wallet else ""))),
             ("payment hash", Cell(r.payment_hash or "—", style="code", limit=70)),
             ("proof", Cell(proof, style="good" if r.proof.endswith("verified") or r.proof.startswith("transaction")
                            else "bad" if "NOT" in r.proof else "dim")),
             ("tags", Cell(tags_text(r.tags) or "—")),
             ("time", Cell(f"{r.when} UTC"))]
    if r.reason and not r.proof.startswith("transaction"):
        pairs.append(("note", Cell(r.reason, style=STATUS_TONE.get(r.status.value, ""), limit=500)))
    return kv(f"Receipt #{r.id}", pairs, name="receipt")


def tags_text(tags: dict[str, str]) -> str:
    """'agent=research task=T-17': a payment's tags, sorted, as one line."""
    return " ".join(f"{k}={v}" for k, v in sorted(tags.items()))


WIDEST = 150  # terminal columns from which the ledger also shows the URL bought and the tags
WIDE = 110  # terminal columns from which the ledger shows hash, method and note columns


def _path(url: str) -> str:
    """The URL bought, short: its path and query (the host has its own column), secrets masked."""
    host = safe_url(url).split("://", 1)[-1].split("/", 1)[0]
    short = short_url(url, 48 + len(host))
    _, slash, rest = short.partition("/")
    return slash + rest if slash else short


def _offer_price(r: Receipt) -> str:
    if r.offer_amount is None or not r.offer_currency:
        return "—"
    return format_amount(r.offer_amount, r.offer_currency)


def _fee(r: Receipt) -> str:
    """The fee paid; for a pending payment, the most it may cost (held in the budgets): '≤ 10'."""
    return ("≤ " if r.status is Status.PENDING and r.fee_msat else "") + sat(r.fee_msat)


def receipts_view(receipts: Iterable[Receipt], title: str = "Ledger", usd_per_btc: float | None = None,
                  hide: Iterable[str] = ()) -> View:
    """The ledger as a table that fits: HTML, plain text and a terminal `WIDEST` columns wide show
    the URL bought (short; all of it, secrets masked, on hover) and the tags; a terminal narrower
    than `WIDE` columns also drops the hash, method and note columns (notes go under the table)
    rather than squeezing them into stubs; columns nobody needs (no fee paid, every payment by
    Lightning, no tags) are never shown, nor those a page names in `hide` (by label: "hash")."""
    rs = list(receipts)
    hidden = set(hide)
    usd_rate = view_rate(usd_per_btc)
    any_fee = any(r.fee_msat for r in rs)
    any_note = any(r.reason for r in rs)
    any_method = any(r.method != "lightning" for r in rs)
    any_tags = any(r.tags for r in rs)
    # the offer's own price says something only where it is not the sat amount paid
    any_price = any(not ((r.offer_currency or "").upper() in ("SAT", "SATS") and r.offer_amount is not None
                         and r.offer_amount * 1000 == r.amount_msat) for r in rs)

    def build(wide: bool, urls: bool = False) -> View:
        wide = wide or urls
        columns = [Column("#", align="right", wrap=False), Column("when (UTC)", wrap=False),
                   Column("status", wrap=False), Column("host", wrap=False, max_width=24)]
        columns += [Column("url", wrap=False, max_width=32, hint="the URL bought (hover for all of it)")] if urls else []
        columns += [Column("offer", ratio=2)]
        show_price = (wide or not usd_rate) and any_price
        columns += [Column("method", wrap=False)] if wide and any_method else []
        columns += [Column("price", align="right", wrap=False)] if show_price else []
        columns += [Column("sat" + (" (USD)" if usd_rate else ""), align="right", wrap=False)]
        columns += [Column("fee sat", align="right", wrap=False)] if any_fee else []
        columns += [Column("hash", style="dim code", wrap=False)] if wide else []
        columns += [Column("tags", max_width=30)] if urls and any_tags else []
        columns += [Column("note", ratio=2, overflow="fold")] if wide and any_note else []
        rows = []
        for r in rs:
            in_usd = usd(r.amount_msat, usd_rate)
            cells: list[Cell | str] = [str(r.id), Cell(r.created_at.astimezone(UTC).strftime("%m-%d %H:%M"), hint=r.when),
                                       status_cell(r.status.value), r.host]
            cells += [Cell(_path(r.url), hint=safe_url(r.url), css_class="httpay-url", limit=60)] if urls else []
            cells += [r.offer_title or r.offer_id or r.protocol]
            cells += [r.method] if wide and any_method else []
            cells += [_offer_price(r)] if show_price else []
            cells += [sat(r.amount_msat) + (f" ({in_usd})" if in_usd else "")]
            cells += [_fee(r)] if any_fee else []
            cells += [(r.payment_hash or "")[:10] + "…"] if wide else []
            cells += [Cell(tags_text(r.tags), css_class="httpay-tags")] if urls and any_tags else []
            cells += [Cell(r.reason or "", css_class="httpay-reason")] if wide and any_note else []
            rows.append(row(*cells, css_class=f"httpay-row-{r.status.value}"))
        notes = () if wide else tuple(Cell(f"  #{r.id}: {r.reason}", style=STATUS_TONE.get(r.status.value, ""), limit=500)
                                      for r in rs if r.reason)
        if hidden:
            keep = [i for i, c in enumerate(columns) if c.label not in hidden]
            columns = [columns[i] for i in keep]
            rows = [replace(x, cells=tuple(x.cells[i] for i in keep)) for x in rows]
        return View(title, tuple(columns), tuple(rows), notes=notes, empty="no payments recorded", dense=True,
                    name="ledger")

    wide = replace(build(wide=True), narrow=build(wide=False), narrow_below=WIDE)
    return replace(build(wide=True, urls=True), narrow=wide, narrow_below=WIDEST)
