"""A receipt: one line of the ledger, the truth about one payment attempt."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from httpay.amounts import format_amount
from httpay.view import STATUS_TONE, Cell, Column, View, row, sat, status_cell, usd
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

    @property
    def total_msat(self) -> int:
        return self.amount_msat + (self.fee_msat or 0)

    @property
    def when(self) -> str:
        return self.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")

    def __str__(self) -> str:
        what = f"{self.offer_id} '{self.offer_title}'" if self.offer_id else self.protocol
        reason = f" ({self.reason})" if self.reason else ""
        fee = (f"fee up to {self.fee_msat / 1000:,g} sat held" if self.status is Status.PENDING
               else f"fee {self.fee_msat / 1000:,g} sat")
        return (
            f"#{self.id} {self.when} {self.status.value:<7} {self.amount_msat / 1000:,g} sat + {fee} "
            f"to {self.host} for {what} by {self.method}{reason}"
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
            "offer_currency": self.offer_currency, "credits": self.credits, "payment_hash": self.payment_hash,
            "amount_msat": self.amount_msat, "fee_msat": self.fee_msat, "wallet": self.wallet, "wallet_id": self.wallet_id,
            "reason": self.reason, "tags": dict(self.tags), "usd_per_btc": self.usd_per_btc,
        }

    def view(self, usd_per_btc: float | None = None) -> View:
        """This receipt as a one-row ledger table."""
        return receipts_view([self], usd_per_btc=usd_per_btc)

    def __rich__(self) -> Any:
        return self.view().to_rich()

    def _repr_html_(self) -> str:
        return self.view().to_html()


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


WIDE = 110  # terminal columns from which the ledger shows hash, method and note columns


def _offer_price(r: Receipt) -> str:
    if r.offer_amount is None or not r.offer_currency:
        return "—"
    return format_amount(r.offer_amount, r.offer_currency)


def _fee(r: Receipt) -> str:
    """The fee paid; for a pending payment, the most it may cost (held in the budgets): '≤ 10'."""
    return ("≤ " if r.status is Status.PENDING and r.fee_msat else "") + sat(r.fee_msat)


def receipts_view(receipts: Iterable[Receipt], title: str = "Ledger", usd_per_btc: float | None = None) -> View:
    """The ledger as a table that fits: a terminal narrower than `WIDE` columns drops the hash,
    method and note columns (notes go under the table) rather than squeezing them into stubs;
    columns nobody needs (no fee paid, every payment by Lightning) are never shown."""
    rs = list(receipts)
    usd_rate = view_rate(usd_per_btc)
    any_fee = any(r.fee_msat for r in rs)
    any_note = any(r.reason for r in rs)
    any_method = any(r.method != "lightning" for r in rs)

    def build(wide: bool) -> View:
        columns = [Column("#", align="right", wrap=False), Column("when (UTC)", wrap=False),
                   Column("status", wrap=False), Column("host", wrap=False, max_width=24), Column("offer", ratio=2)]
        show_price = wide or not usd_rate
        columns += [Column("method", wrap=False)] if wide and any_method else []
        columns += [Column("price", align="right", wrap=False)] if show_price else []
        columns += [Column("sat" + (" (USD)" if usd_rate else ""), align="right", wrap=False)]
        columns += [Column("fee sat", align="right", wrap=False)] if any_fee else []
        columns += [Column("hash", style="dim code", wrap=False)] if wide else []
        columns += [Column("note", ratio=2, overflow="fold")] if wide and any_note else []
        rows = []
        for r in rs:
            in_usd = usd(r.amount_msat, usd_rate)
            cells: list[Cell | str] = [str(r.id), Cell(r.created_at.astimezone(UTC).strftime("%m-%d %H:%M"), hint=r.when),
                                       status_cell(r.status.value), r.host, r.offer_title or r.offer_id or r.protocol]
            cells += [r.method] if wide and any_method else []
            cells += [_offer_price(r)] if show_price else []
            cells += [sat(r.amount_msat) + (f" ({in_usd})" if in_usd else "")]
            cells += [_fee(r)] if any_fee else []
            cells += [(r.payment_hash or "")[:10] + "…"] if wide else []
            cells += [r.reason or ""] if wide and any_note else []
            rows.append(row(*cells, css_class=f"httpay-row-{r.status.value}"))
        notes = () if wide else tuple(Cell(f"  #{r.id}: {r.reason}", style=STATUS_TONE.get(r.status.value, ""), limit=500)
                                      for r in rs if r.reason)
        return View(title, tuple(columns), tuple(rows), notes=notes, empty="no payments recorded", dense=True,
                    name="ledger")

    return replace(build(wide=True), narrow=build(wide=False), narrow_below=WIDE)
