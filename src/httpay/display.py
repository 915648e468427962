"""How offers, payment requests, invoices, receipts, approvals and budgets look to a person: rich
tables in a terminal, HTML tables in a notebook or the dashboard. Plain `__str__` lives on the
models themselves.

Amounts show in sat and USD when a BTC/USD rate is known: pass `usd_per_btc=` or set one for
every view with `httpay.display.set_usd_per_btc(rate)` (handy in a notebook). No view shows a
secret: preimages never, payment hashes and invoices shortened.

No view obeys a server either: every cell is a `Text` made by `httpay.safe.plain` (one line, no
control characters, bounded, never parsed as rich markup) and every HTML value passes `_e`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from httpay.amounts import rate_ok, sat_text, usd_text
from httpay.safe import clean, plain

if TYPE_CHECKING:
    from httpay.approvals import Approval
    from httpay.ledger.base import Ledger
    from httpay.ledger.models import Receipt
    from httpay.lightning import Invoice
    from httpay.policy import Policy
    from httpay.protocols.l402_v02 import Offer, PaymentRequest

STATUS_STYLE = {"settled": "green", "pending": "yellow", "failed": "red",
                "waiting": "yellow", "approved": "green", "denied": "red"}
STATUS_COLOUR = {"settled": "#1a7f37", "pending": "#9a6700", "failed": "#cf222e",
                 "waiting": "#9a6700", "approved": "#1a7f37", "denied": "#cf222e"}

_default_rate: float | None = None


def set_usd_per_btc(rate: float | None) -> None:
    """Set the BTC/USD rate every view uses when none is passed (None: show sat only)."""
    global _default_rate
    if rate is not None and not rate_ok(rate):
        raise ValueError("the BTC/USD rate must be a finite positive number")
    _default_rate = rate


def _rate(rate: float | None) -> float | None:
    return rate if rate_ok(rate) else _default_rate  # an inf or NaN rate is no rate: never "$inf"


def _sat(msat: int | None) -> str:
    return "—" if msat is None else sat_text(msat)


def _usd(msat: int | None, rate: float | None) -> str | None:
    if msat is None or not rate_ok(rate):
        return None
    return usd_text(msat, rate, small_places=4)


def _until(when: datetime, now: datetime | None = None) -> str:
    """'in 35 min' / 'expired 2 min ago': how soon a person must act."""
    now = now or datetime.now(UTC)
    secs = (when - now).total_seconds()
    span = abs(secs)
    text = f"{span:.0f} s" if span < 90 else f"{span / 60:.0f} min" if span < 5400 else f"{span / 3600:.1f} h"
    return f"in {text}" if secs > 0 else f"expired {text} ago"


def _payable(expires_at: datetime) -> str:
    left = _until(expires_at)
    return left if left.startswith("expired") else f"payable for {left.removeprefix('in ')}"


def _e(x: Any, limit: int = 1000) -> str:
    """Text for HTML: one bounded line (`httpay.safe.clean`), then escaped."""
    return html.escape(clean(x, limit), quote=True)


def _row(*cells: Any) -> list[Any]:
    """Table cells that rich shows as typed: `Text` stays, anything else becomes `plain` text."""
    return [c if isinstance(c, Text) else plain(c) for c in cells]


def _caption(title: str) -> str:
    return f"<caption style='text-align:left;caption-side:top'><b>{_e(title)}</b></caption>"


def _status_html(status: str) -> str:
    colour = STATUS_COLOUR.get(status, "inherit")
    return f"<span class='httpay-status httpay-{_e(status)}' style='color:{colour};font-weight:600'>{_e(status)}</span>"


# -- offers --------------------------------------------------------------------------------------------
def _credits(o: Offer) -> str:
    if o.balance is not None:
        return f"{o.balance:,}" + (f" / {o.duration}" if o.duration else "")
    return o.duration or "—"


def _offer_sat(o: Offer, rate: float | None) -> str:
    from httpay.lightning import offer_price_msat

    return _sat(offer_price_msat(o.amount, o.currency, rate))


def offers_table(offers: Iterable[Offer], title: str = "Offers", usd_per_btc: float | None = None,
                 chosen: str | None = None) -> Table:
    rate = _rate(usd_per_btc)
    offers = list(offers)
    t = Table(title=plain(title, 300), title_justify="left")
    for col, kw in (("id", {"style": "cyan", "no_wrap": True}), ("title", {}), ("price", {"justify": "right"}),
                    ("≈ sat", {"justify": "right"}), ("credits", {"justify": "right"}), ("type", {}), ("methods", {})):
        t.add_column(col, **kw)
    unknown = False
    for o in offers:
        sat = _offer_sat(o, rate)
        unknown = unknown or sat == "—"
        mark = " ✔" if chosen == o.offer_id else ""
        t.add_row(*_row(clean(o.offer_id, 80) + mark, o.title, str(o.price), sat, _credits(o), o.type,
                        ", ".join(o.payment_methods)), style="bold green" if chosen == o.offer_id else None)
    if unknown:
        t.caption = "≈ sat needs a BTC/USD rate (usd_per_btc)"
    elif rate:
        t.caption = f"at {rate:,.0f} USD/BTC"
    t.caption_justify = "left"
    return t


def html_offers(offers: Iterable[Offer], title: str = "Offers", usd_per_btc: float | None = None) -> str:
    rate = _rate(usd_per_btc)
    rows = "".join(
        f"<tr><td><code>{_e(o.offer_id)}</code></td><td title='{_e(o.description)}'>{_e(o.title)}</td>"
        f"<td style='text-align:right'>{_e(o.price)}</td><td style='text-align:right'>{_e(_offer_sat(o, rate))}</td>"
        f"<td style='text-align:right'>{_e(_credits(o))}</td><td>{_e(o.type)}</td>"
        f"<td>{_e(', '.join(o.payment_methods))}</td></tr>"
        for o in offers
    )
    return (f"<table class='httpay-offers'>{_caption(title)}<thead><tr><th>id</th><th>title</th><th>price</th>"
            f"<th>≈ sat</th><th>credits</th><th>type</th><th>methods</th></tr></thead><tbody>{rows}</tbody></table>")


# -- key/value views --------------------------------------------------------------------------------
def _kv_table(title: str, rows: Sequence[tuple[str, str]]) -> Table:
    t = Table(title=plain(title, 300), title_justify="left", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    for k, v in rows:
        t.add_row(*_row(k, v))
    return t


def _kv_html(title: str, rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th style='text-align:left'>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table class='httpay-kv'>{_caption(title)}{body}</table>"


def _pr_rows(pr: PaymentRequest, usd_per_btc: float | None = None) -> list[tuple[str, str]]:
    rows = [("offer", pr.offer_id), ("method", pr.payment_method)]
    if pr.expires_at:
        rows.append(("expires", f"{pr.expires_at:%Y-%m-%d %H:%M:%S %Z}"))
        rows.append(("status", _payable(pr.expires_at)))
    if pr.lightning_invoice:
        from httpay.errors import InvoiceError
        from httpay.lightning import decode_invoice

        rows.append(("invoice", pr.lightning_invoice[:40] + "…"))
        try:
            rows.append(("amount", _amount(decode_invoice(pr.lightning_invoice).amount_msat, _rate(usd_per_btc))))
        except InvoiceError:
            rows.append(("amount", "unknown: not a valid BOLT11 invoice"))
    if pr.checkout_url:
        rows.append(("checkout", pr.checkout_url))
    for chain, addr in (pr.contract_addresses or {}).items():
        rows.append((f"contract (chain {chain})", addr))
    if pr.address:
        rows.append(("address", f"{pr.address} ({pr.asset or '?'} on {pr.chain or '?'})"))
    return rows


def payment_request_table(pr: PaymentRequest, usd_per_btc: float | None = None) -> Table:
    return _kv_table("Payment request", _pr_rows(pr, usd_per_btc))


def html_payment_request(pr: PaymentRequest, usd_per_btc: float | None = None) -> str:
    return _kv_html("Payment request", _pr_rows(pr, usd_per_btc))


def _amount(msat: int | None, rate: float | None) -> str:
    if msat is None:
        return "no amount"
    usd = _usd(msat, rate)
    return f"{_sat(msat)} sat" + (f" ≈ {usd}" if usd else "")


def invoice_rows(inv: Invoice, usd_per_btc: float | None = None) -> list[tuple[str, str]]:
    rate = _rate(usd_per_btc)
    if inv.amount_msat is None:
        amount = "none (httpay refuses amount-less invoices)"
    else:
        usd = inv.usd(rate)
        amount = f"{sat_text(inv.amount_msat)} sat" + (f" ≈ ${usd:,.4f}" if usd is not None else "")
    return [
        ("amount", amount),
        ("network", inv.network),
        ("description", inv.description or "—"),
        ("payment hash", inv.payment_hash),
        ("payee", inv.payee or "?"),
        ("created", f"{inv.created_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("expires", f"{inv.expires_at:%Y-%m-%d %H:%M:%S} UTC ({inv.expiry_s} s)"),
        ("status", _payable(inv.expires_at)),
    ]


def invoice_table(inv: Invoice, usd_per_btc: float | None = None) -> Table:
    return _kv_table("BOLT11 invoice", invoice_rows(inv, usd_per_btc))


def html_invoice(inv: Invoice, usd_per_btc: float | None = None) -> str:
    return _kv_html("BOLT11 invoice", invoice_rows(inv, usd_per_btc))


# -- receipts (the ledger) --------------------------------------------------------------------------
def _when(r: Receipt) -> str:
    return r.created_at.astimezone(UTC).strftime("%m-%d %H:%M")


def _paid_text(r: Receipt, rate: float | None) -> str:
    usd = _usd(r.amount_msat, rate)
    return _sat(r.amount_msat) + (f" ({usd})" if usd else "")


def _offer_text(r: Receipt) -> str:
    return r.offer_title or r.offer_id or r.protocol


def _offer_price(r: Receipt) -> str:
    from httpay.protocols.l402_v02 import format_amount

    if r.offer_amount is None or not r.offer_currency:
        return "—"
    return format_amount(r.offer_amount, r.offer_currency)


class ReceiptsView:
    """The ledger as a rich table that fits the terminal: columns are dropped (hash, method,
    fee, note) when narrow or empty, never squeezed into unreadable stubs."""

    def __init__(self, receipts: Iterable[Receipt], title: str = "Ledger", usd_per_btc: float | None = None) -> None:
        self.receipts = list(receipts)
        self.title = title
        self.rate = _rate(usd_per_btc)

    def table(self, width: int = 120) -> Table:
        rs = self.receipts
        wide = width >= 110
        show_fee = any(r.fee_msat for r in rs)
        show_note = wide and any(r.reason for r in rs)
        show_price = wide or not self.rate
        show_method = wide and any(r.method != "lightning" for r in rs)
        t = Table(title=plain(self.title, 300), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  show_edge=False, padding=(0, 1, 0, 0))
        t.add_column("#", justify="right", no_wrap=True)
        t.add_column("when (UTC)", no_wrap=True)
        t.add_column("status", no_wrap=True)
        t.add_column("host", no_wrap=True, overflow="ellipsis", max_width=24)
        t.add_column("offer", ratio=2)
        if show_method:
            t.add_column("method", no_wrap=True)
        if show_price:
            t.add_column("price", justify="right", no_wrap=True)
        t.add_column("sat" + (" (USD)" if self.rate else ""), justify="right", no_wrap=True)
        if show_fee:
            t.add_column("fee sat", justify="right", no_wrap=True)
        if wide:
            t.add_column("hash", style="dim", no_wrap=True)
        if show_note:
            t.add_column("note", ratio=2, overflow="fold")
        for r in rs:
            row: list[str | Text] = [str(r.id), _when(r), Text(r.status.value, style=STATUS_STYLE.get(r.status.value, "")), r.host,
                   _offer_text(r)]
            if show_method:
                row.append(r.method)
            if show_price:
                row.append(_offer_price(r))
            row.append(_paid_text(r, self.rate))
            if show_fee:
                row.append(_fee(r))
            if wide:
                row.append((r.payment_hash or "")[:10] + "…")
            if show_note:
                row.append(r.reason or "")
            t.add_row(*_row(*row))
        if not rs:
            t.caption = "no payments recorded"
            t.caption_justify = "left"
        return t

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)
        if options.max_width < 110:  # too narrow for a note column: notes go below the table
            for r in self.receipts:
                if r.reason:
                    yield plain(f"  #{r.id}: {r.reason}", 500, style=STATUS_STYLE.get(r.status.value, ""))


def _fee(r: Receipt) -> str:
    """The fee paid; for a pending payment, the most it may cost (held in the budgets): '≤ 10'."""
    return ("≤ " if r.status.value == "pending" and r.fee_msat else "") + _sat(r.fee_msat)


def receipts_table(receipts: Iterable[Receipt], title: str = "Ledger", usd_per_btc: float | None = None) -> ReceiptsView:
    return ReceiptsView(receipts, title=title, usd_per_btc=usd_per_btc)


def html_receipts(receipts: Iterable[Receipt], title: str = "Ledger", usd_per_btc: float | None = None) -> str:
    rate = _rate(usd_per_btc)
    rs = list(receipts)
    show_note = any(r.reason for r in rs)
    rows = []
    for r in rs:
        note = f"<td>{_e(r.reason or '')}</td>" if show_note else ""
        rows.append(
            f"<tr class='httpay-row-{_e(r.status.value)}'><td>{r.id}</td><td>{_e(r.when)}</td>"
            f"<td>{_status_html(r.status.value)}</td><td>{_e(r.host)}</td><td>{_e(_offer_text(r))}</td>"
            f"<td>{_e(r.method)}</td><td style='text-align:right'>{_e(_offer_price(r))}</td>"
            f"<td style='text-align:right'>{_e(_paid_text(r, rate))}</td>"
            f"<td style='text-align:right'>{_e(_fee(r))}</td>"
            f"<td><code>{_e((r.payment_hash or '')[:12])}…</code></td>{note}</tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("#", "when (UTC)", "status", "host", "offer", "method", "price",
                                              "sat" + (" (USD)" if rate else ""), "fee sat", "hash"))
    if show_note:
        head += "<th>note</th>"
    body = "".join(rows) or "<tr><td colspan='10'>no payments recorded</td></tr>"
    return f"<table class='httpay-ledger'>{_caption(title)}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# -- approvals -------------------------------------------------------------------------------------------
MAX_CHOICES_SHOWN = 8  # a service may list hundreds of offers; a view lists this many and counts the rest


def _choices(a: Approval) -> tuple[list[tuple[str, str, str]], int]:
    """The other offers `a` may be approved with (`httpay approvals approve ID --offer OFFER_ID`) as
    (offer id, title, price and marks), server text cleaned; and how many more were not listed."""
    others = [c for c in a.choices if c.offer_id != a.offer_id]
    rows = []
    for c in others[:MAX_CHOICES_SHOWN]:
        marks = [m for m, on in (("chosen", c.offer_id == a.chosen_offer_id), ("over a limit", not c.fits)) if on]
        rows.append((clean(c.offer_id, 80), clean(c.title, 80),
                     clean(c.price, 40) + (f" ({', '.join(marks)})" if marks else "")))
    return rows, max(len(others) - MAX_CHOICES_SHOWN, 0)


def _choice_lines(a: Approval) -> list[str]:
    rows, more = _choices(a)
    lines = [f"{offer_id} '{title}' {price}" for offer_id, title, price in rows]
    return lines + ([f"… and {more} more (`httpay approvals --json`)"] if more else [])


def approvals_table(approvals: Iterable[Approval], title: str = "Approvals") -> Table:
    """One row per approval; under it, a dim row per other offer it may be approved with instead."""
    t = Table(title=plain(title, 300), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for col, kw in (("#", {"justify": "right", "no_wrap": True}), ("asked (UTC)", {"no_wrap": True}),
                    ("status", {"no_wrap": True}), ("host", {"no_wrap": True, "max_width": 24}),
                    ("offer", {"ratio": 1}), ("price", {"no_wrap": True}), ("decided by", {})):
        t.add_column(col, **kw)
    items = list(approvals)
    for a in items:
        who = (a.decided_by or "") + (f" ({a.reason})" if a.reason else "")
        t.add_row(*_row(str(a.id), a.created_at.strftime("%m-%d %H:%M:%S"),
                        plain(a.status, 20, style=STATUS_STYLE.get(a.status, "")),
                        a.host, f"{clean(a.offer_title or '')} ({clean(a.offer_id, 80)})", a.price, who))
        rows, more = _choices(a)
        for offer_id, offer_title, price in rows:
            t.add_row("", "", "", "", plain(f"or --offer {offer_id}: '{offer_title}'", 300, style="dim"),
                      plain(price, 200, style="dim"), "")
        if more:
            t.add_row("", "", "", "", plain(f"… and {more} more offers (`httpay approvals --json`)", style="dim"), "", "")
    if not items:
        t.caption = "nothing waiting for approval"
        t.caption_justify = "left"
    return t


def html_approvals(approvals: Iterable[Approval], title: str = "Approvals") -> str:
    rows = "".join(
        f"<tr><td>{a.id}</td><td>{_e(a.created_at.strftime('%Y-%m-%d %H:%M:%S'))}</td><td>{_status_html(a.status)}</td>"
        f"<td>{_e(a.host)}</td><td>{_e(a.offer_title or '')} <code>{_e(a.offer_id or '')}</code></td>"
        f"<td>{_e(a.price)}</td><td>{'<br>'.join(_e(line, 300) for line in _choice_lines(a))}</td>"
        f"<td>{_e(a.decided_by or '')}</td></tr>"
        for a in approvals
    ) or "<tr><td colspan='8'>nothing waiting for approval</td></tr>"
    return (f"<table class='httpay-approvals'>{_caption(title)}<thead><tr><th>#</th><th>asked (UTC)</th><th>status</th>"
            f"<th>host</th><th>offer</th><th>price</th><th>or approve with --offer</th><th>decided by</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


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
    from httpay.errors import ConfigError, PaymentRefused

    now = now or datetime.now(UTC)
    rate = policy.usd_per_btc or usd_per_btc
    hosts = sorted({r.host for r in ledger.receipts(limit=1000)})
    try:
        cap = policy.per_payment_cap(rate)
        general = policy.limits("", rate)
        per_host = [lim for h in hosts for lim in policy.limits(h, rate) if lim.host is not None]
    except PaymentRefused:
        raise ConfigError(
            "the policy sets limits in USD but no BTC/USD rate is known: set usd_per_btc in the policy, "
            "pass --usd-per-btc, or configure a wallet that reports a rate (HTTPAY_WALLET)"
        ) from None
    lines: list[BudgetLine] = []
    if cap is not None:
        lines.append(BudgetLine("default per payment" if cap[2] else "per payment", "all hosts", "each", cap[0], None))
    for lim in [x for x in general if x.host is None] + per_host:
        since = now - lim.window if lim.window else None
        spent = ledger.spent_msat(host=lim.host, since=since)
        name = "default " + lim.name.removesuffix(" budget") if lim.default else lim.name  # "default hourly"
        lines.append(BudgetLine(name, lim.host or "all hosts", _window_text(lim.window), lim.limit_msat, spent))
    return lines


def _pct(fraction: float) -> str:
    return "<1%" if 0 < fraction < 0.01 else f"{fraction:.0%}"


def _bar(fraction: float, width: int = 10) -> Text:
    full = round(fraction * width)
    style = "red" if fraction >= 0.9 else "yellow" if fraction >= 0.6 else "green"
    return Text("█" * full, style=style) + Text("░" * (width - full), style="dim")


class BudgetView:
    """Budgets as a rich table; amounts carry USD only where the terminal is wide enough."""

    def __init__(self, lines: Sequence[BudgetLine], usd_per_btc: float | None = None, title: str = "Budget") -> None:
        self.lines = list(lines)
        self.rate = _rate(usd_per_btc)
        self.title = title

    def table(self, width: int = 120) -> Table:
        from httpay.policy import fmt_msat

        wide = width >= 112
        rate = self.rate if wide else None

        def amount(msat: int | None) -> str:
            if msat is None:
                return "—"
            return fmt_msat(msat, rate) if rate else _sat(msat)

        t = Table(title=plain(self.title, 300), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  show_edge=False, padding=(0, 1, 0, 0))
        t.add_column("limit", no_wrap=True)
        t.add_column("scope", max_width=24, overflow="ellipsis", no_wrap=True)
        if wide:
            t.add_column("window", no_wrap=True)
        for col in ("spent", "of", "left"):
            t.add_column(col, justify="right", no_wrap=True)
        t.add_column("used", no_wrap=True)
        for b in self.lines:
            used: Any = "" if b.spent_msat is None else _bar(b.used, 10 if wide else 6) + Text(f" {_pct(b.used)}")
            row = [b.name, b.scope] + ([b.window] if wide else [])
            t.add_row(*_row(*row, amount(b.spent_msat), amount(b.limit_msat), amount(b.left_msat)), used)
        if not self.lines:
            t.caption = "unlimited: Policy.unlimited() sets no limit; only the wallet's balance limits spending"
        elif not wide:
            t.caption = "amounts in sat" + (f"; at {self.rate:,.0f} USD/BTC, 1,000 sat = ${1000 / 1e8 * self.rate:,.2f}"
                                            if self.rate else "") + "; spent includes fees (held while pending)"
            t.caption_justify = "left"
        else:
            t.caption = "spent includes routing fees: paid ones, and the most a pending payment may still cost"
            t.caption_justify = "left"
        return t

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)


def budget_table(lines: Sequence[BudgetLine], usd_per_btc: float | None = None, title: str = "Budget") -> BudgetView:
    return BudgetView(lines, usd_per_btc, title)


def html_budget(lines: Sequence[BudgetLine], usd_per_btc: float | None = None, title: str = "Budget") -> str:
    from httpay.policy import fmt_msat

    rate = _rate(usd_per_btc)
    rows = []
    for b in lines:
        spent = "—" if b.spent_msat is None else fmt_msat(b.spent_msat, rate)
        left = "—" if b.left_msat is None else fmt_msat(b.left_msat, rate)
        colour = "#cf222e" if b.used >= 0.9 else "#9a6700" if b.used >= 0.6 else "#1a7f37"
        meter = "" if b.spent_msat is None else (
            f"<div class='httpay-meter' title='{_pct(b.used)} used'><div style='width:{b.used * 100:.1f}%;"
            f"background:{colour}'></div></div> {_pct(b.used)}")
        rows.append(f"<tr><td>{_e(b.name)}</td><td>{_e(b.scope)}</td><td>{_e(b.window)}</td>"
                    f"<td style='text-align:right'>{_e(spent)}</td><td style='text-align:right'>{_e(fmt_msat(b.limit_msat, rate))}</td>"
                    f"<td style='text-align:right'>{_e(left)}</td><td>{meter}</td></tr>")
    body = "".join(rows) or "<tr><td colspan='7'>unlimited: only the wallet's balance limits spending</td></tr>"
    return (f"<table class='httpay-budget'>{_caption(title)}<thead><tr><th>limit</th><th>scope</th><th>window</th>"
            f"<th title='fees included: paid ones, and the most a pending payment may still cost'>spent incl. fees</th><th>of</th><th>left</th><th>used</th></tr></thead><tbody>{body}</tbody></table>")
