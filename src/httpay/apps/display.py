"""Views that compose several models (budgets: a policy and a ledger), and the names every view
has been reached by (`offers_table`, `html_receipts`, ...).

Each model describes itself (`Invoice.view()`, `PaymentOffers.view()`, `receipts_view`,
`approvals_view`) as a `httpay.view.View`, and one renderer per output kind draws every view: a
rich table in a terminal, an HTML table in a notebook or the dashboard, plain text. Models never
import this module; it imports them.

Amounts show in sat and USD when a BTC/USD rate is known: pass `usd_per_btc=` or set one for
every view with `httpay.apps.display.set_usd_per_btc(rate)` (handy in a notebook). No view shows a
secret: preimages never, payment hashes and invoices shortened. No view obeys a server either:
every cell passes `httpay.safe.clean` and is shown as text, never as markup or HTML.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from httpay.amounts import fmt_msat
from httpay.apps.approvals import MAX_CHOICES_SHOWN, Approval, approvals_view
from httpay.core.model import offers_view
from httpay.errors import ConfigError, PaymentRefused
from httpay.hosts import host_name
from httpay.ledger.models import Receipt, receipts_view
from httpay.lightning import Invoice
from httpay.protocols.l402_v02 import PaymentRequest
from httpay.view import COLOURS, STATUS_TONE, STYLES, Cell, Column, RichView, View, row, sat, set_usd_per_btc
from httpay.view import rate as _rate

if TYPE_CHECKING:
    from httpay.ledger.base import Ledger
    from httpay.policy import Policy

__all__ = [
    "MAX_CHOICES_SHOWN",
    "STATUS_COLOUR",
    "STATUS_STYLE",
    "BudgetLine",
    "approvals_table",
    "budget_lines",
    "budget_table",
    "budget_view",
    "html_approvals",
    "html_budget",
    "html_invoice",
    "html_offers",
    "html_payment_request",
    "html_receipts",
    "invoice_table",
    "offers_table",
    "payment_request_table",
    "receipts_table",
    "set_usd_per_btc",
]

# A status's colour: rich's name for a terminal, the CSS colour for a page (from httpay.view's tones).
STATUS_STYLE = {status: STYLES[tone][0] for status, tone in STATUS_TONE.items()}
STATUS_COLOUR = {status: COLOURS[tone] for status, tone in STATUS_TONE.items()}


# -- every model's view, by the names callers use ---------------------------------------------------------
def offers_table(offers: Iterable[Any], title: str = "Offers", usd_per_btc: float | None = None,
                 chosen: str | None = None) -> RichView:
    return offers_view(offers, title, usd_per_btc, chosen).to_rich()


def html_offers(offers: Iterable[Any], title: str = "Offers", usd_per_btc: float | None = None) -> str:
    return offers_view(offers, title, usd_per_btc).to_html()


def payment_request_table(pr: PaymentRequest, usd_per_btc: float | None = None) -> RichView:
    return pr.view(usd_per_btc).to_rich()


def html_payment_request(pr: PaymentRequest, usd_per_btc: float | None = None) -> str:
    return pr.view(usd_per_btc).to_html()


def invoice_table(inv: Invoice, usd_per_btc: float | None = None) -> RichView:
    return inv.view(usd_per_btc).to_rich()


def html_invoice(inv: Invoice, usd_per_btc: float | None = None) -> str:
    return inv.view(usd_per_btc).to_html()


def receipts_table(receipts: Iterable[Receipt], title: str = "Ledger", usd_per_btc: float | None = None) -> RichView:
    """The ledger in a terminal: columns dropped (hash, method, note) when narrow, never squeezed."""
    return receipts_view(receipts, title, usd_per_btc).to_rich()


def html_receipts(receipts: Iterable[Receipt], title: str = "Ledger", usd_per_btc: float | None = None,
                  hide: Iterable[str] = ()) -> str:
    return receipts_view(receipts, title, usd_per_btc, hide).to_html()


def approvals_table(approvals: Iterable[Approval], title: str = "Approvals") -> RichView:
    return approvals_view(approvals, title).to_rich()


def html_approvals(approvals: Iterable[Approval], title: str = "Approvals") -> str:
    return approvals_view(approvals, title).to_html()


# -- budgets ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BudgetLine:
    """One limit of a policy and how much of it is used now."""

    name: str
    scope: str            # "all hosts" or a host
    window: str           # "all time", "last hour", "last 24h", "each" (payment)
    limit_msat: int
    spent_msat: int | None  # None for the per-payment cap (nothing accumulates)

    @property
    def left_msat(self) -> int | None:
        return None if self.spent_msat is None else max(self.limit_msat - self.spent_msat, 0)

    @property
    def used(self) -> float:
        """Fraction used, 0..1 (0 for the per-payment cap)."""
        if self.spent_msat is None or self.limit_msat <= 0:
            return 0.0 if self.spent_msat is None else 1.0
        return min(self.spent_msat / self.limit_msat, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "scope": self.scope, "window": self.window, "limit_msat": self.limit_msat,
                "spent_msat": self.spent_msat, "left_msat": self.left_msat}


def _window_text(window: timedelta | None) -> str:
    if window is None:
        return "all time"
    return {3600: "last hour", 86400: "last 24h"}.get(int(window.total_seconds()), f"last {window}")


def budget_lines(policy: Policy, ledger: Ledger, usd_per_btc: float | None = None,
                 now: datetime | None = None) -> list[BudgetLine]:
    """Every limit of `policy` with what the ledger says is spent against it, right now.

    Raises ConfigError when the policy has USD limits and no BTC/USD rate is known.
    """
    now = now or datetime.now(UTC)
    rate = policy.usd_per_btc or usd_per_btc
    hosts = sorted({host_name(r.host) for r in ledger.receipts(limit=1000)})  # one line a host, however spelled
    try:
        cap = policy.per_payment_cap(rate)
        general = policy.limits("", rate)
        per_host = [lim for h in hosts for lim in policy.limits(h, rate) if lim.host is not None]
        per_tag = [lim for spec in policy.tag_limits for lim in
                   policy.tag_limit_list(dict([spec.split("=", 1)]), rate)]
    except PaymentRefused:
        raise ConfigError(
            "the policy sets limits in USD but no BTC/USD rate is known: set usd_per_btc in the policy, "
            "pass --usd-per-btc, or configure a wallet that reports a rate (HTTPAY_WALLET)"
        ) from None
    lines: list[BudgetLine] = []
    if cap is not None:
        lines.append(BudgetLine("default per payment" if cap[2] else "per payment", "all hosts", "each", cap[0], None))
    for lim in [x for x in general if x.host is None] + per_host + per_tag:
        since = now - lim.window if lim.window else None
        spent = ledger.spent_msat(host=lim.host, since=since, tag=lim.tag)
        name = "default " + lim.name.removesuffix(" budget") if lim.default else lim.name  # "default hourly"
        scope = lim.host or (f"tag {lim.tag[0]}={lim.tag[1]}" if lim.tag else "all hosts")
        lines.append(BudgetLine(name, scope, _window_text(lim.window), lim.limit_msat, spent))
    return lines


def _pct(fraction: float) -> str:
    return "<1%" if 0 < fraction < 0.01 else f"{fraction:.0%}"


WIDE = 112  # terminal columns from which budgets show the window column and amounts in USD


def budget_view(lines: Sequence[BudgetLine], usd_per_btc: float | None = None, title: str = "Budget") -> View:
    """Budgets: each limit, what is spent against it (fees included) and what is left, with a
    gauge. A terminal narrower than `WIDE` gets bare sat amounts and no window column."""
    rate = _rate(usd_per_btc)

    def build(wide: bool) -> View:
        def amount(msat: int | None) -> str:
            if msat is None:
                return "—"
            return fmt_msat(msat, rate) if wide else sat(msat)

        spent_hint = "fees included: paid ones, and the most a pending payment may still cost"
        columns = (Column("limit", wrap=False), Column("scope", max_width=24, wrap=False),
                   *((Column("window", wrap=False),) if wide else ()),
                   Column("spent incl. fees" if wide else "spent", align="right", wrap=False, hint=spent_hint),
                   Column("of", align="right", wrap=False), Column("left", align="right", wrap=False),
                   Column("used", wrap=False))
        rows = []
        for b in lines:
            used = Cell() if b.spent_msat is None else Cell(_pct(b.used), meter=b.used, meter_width=10 if wide else 6,
                                                            hint=f"{_pct(b.used)} used")
            rows.append(row(b.name, b.scope, *((b.window,) if wide else ()), amount(b.spent_msat), amount(b.limit_msat),
                            amount(b.left_msat), used))
        if not lines:
            note = ""
        elif wide:
            note = "spent includes routing fees: paid ones, and the most a pending payment may still cost"
        else:
            at = f"; at {rate:,.0f} USD/BTC, 1,000 sat = ${1000 / 1e8 * rate:,.2f}" if rate else ""
            note = f"amounts in sat{at}; spent includes fees (held while pending)"
        return View(title, columns, tuple(rows), notes=(Cell(note),) if note else (), dense=True, name="budget",
                    empty="unlimited: no limit is in force; only the wallet's balance limits spending")

    return replace(build(wide=True), narrow=build(wide=False), narrow_below=WIDE)


def budget_table(lines: Sequence[BudgetLine], usd_per_btc: float | None = None, title: str = "Budget") -> RichView:
    return budget_view(lines, usd_per_btc, title).to_rich()


def html_budget(lines: Sequence[BudgetLine], usd_per_btc: float | None = None, title: str = "Budget") -> str:
    return budget_view(lines, usd_per_btc, title).to_html()
