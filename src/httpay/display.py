"""How offers, payment requests, invoices and receipts look to a person: rich tables in a
terminal, HTML tables in a notebook. Plain `__str__` lives on the models themselves."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from httpay.ledger.models import Receipt
    from httpay.lightning import Invoice
    from httpay.protocols.l402_v02 import Offer, PaymentRequest

STATUS_STYLE = {"settled": "green", "pending": "yellow", "failed": "red"}


def _credits(o: "Offer") -> str:
    if o.balance is not None:
        return f"{o.balance:,}"
    return o.duration or "—"


def offers_table(offers: Iterable["Offer"], title: str = "Offers", usd_per_btc: float | None = None,
                 chosen: str | None = None) -> Table:
    from httpay.lightning import offer_price_msat

    t = Table(title=title, title_justify="left")
    for col, kw in (("id", {"style": "cyan", "no_wrap": True}), ("title", {}), ("price", {"justify": "right"}),
                    ("≈ sat", {"justify": "right"}), ("credits", {"justify": "right"}), ("type", {}), ("methods", {})):
        t.add_column(col, **kw)  # type: ignore[arg-type]
    for o in offers:
        msat = offer_price_msat(o.amount, o.currency, usd_per_btc)
        sat = f"{msat / 1000:,.0f}" if msat is not None else "—"
        style = "bold green" if chosen == o.offer_id else None
        mark = " ✔" if chosen == o.offer_id else ""
        t.add_row(o.offer_id + mark, o.title, o.price, sat, _credits(o), o.type, ", ".join(o.payment_methods), style=style)
    return t


def html_offers(offers: Iterable["Offer"], title: str = "Offers") -> str:
    rows = "".join(
        f"<tr><td><code>{_e(o.offer_id)}</code></td><td>{_e(o.title)}</td><td style='text-align:right'>{_e(o.price)}</td>"
        f"<td style='text-align:right'>{_e(_credits(o))}</td><td>{_e(o.type)}</td><td>{_e(', '.join(o.payment_methods))}</td></tr>"
        for o in offers
    )
    return (f"<table><caption style='text-align:left'><b>{_e(title)}</b></caption><thead><tr><th>id</th><th>title</th>"
            f"<th>price</th><th>credits</th><th>type</th><th>methods</th></tr></thead><tbody>{rows}</tbody></table>")


def _kv_table(title: str, rows: Sequence[tuple[str, str]]) -> Table:
    t = Table(title=title, title_justify="left", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    for k, v in rows:
        t.add_row(k, v)
    return t


def _kv_html(title: str, rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th style='text-align:left'>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table><caption style='text-align:left'><b>{_e(title)}</b></caption>{body}</table>"


def _pr_rows(pr: "PaymentRequest") -> list[tuple[str, str]]:
    rows = [("offer", pr.offer_id), ("method", pr.payment_method)]
    if pr.expires_at:
        rows.append(("expires", f"{pr.expires_at:%Y-%m-%d %H:%M:%S %Z}"))
    if pr.lightning_invoice:
        rows.append(("invoice", pr.lightning_invoice[:40] + "…"))
    if pr.checkout_url:
        rows.append(("checkout", pr.checkout_url))
    for chain, addr in (pr.contract_addresses or {}).items():
        rows.append((f"contract (chain {chain})", addr))
    if pr.address:
        rows.append(("address", f"{pr.address} ({pr.asset or '?'} on {pr.chain or '?'})"))
    return rows


def payment_request_table(pr: "PaymentRequest") -> Table:
    return _kv_table("Payment request", _pr_rows(pr))


def html_payment_request(pr: "PaymentRequest") -> str:
    return _kv_html("Payment request", _pr_rows(pr))


def invoice_rows(inv: "Invoice", usd_per_btc: float | None = None) -> list[tuple[str, str]]:
    if inv.amount_msat is None:
        amount = "none (httpay refuses amount-less invoices)"
    else:
        usd = inv.usd(usd_per_btc)
        amount = f"{inv.amount_msat / 1000:,g} sat" + (f" ≈ ${usd:,.4f}" if usd is not None else "")
    return [
        ("amount", amount),
        ("network", inv.network),
        ("description", inv.description or "—"),
        ("payment hash", inv.payment_hash),
        ("payee", inv.payee or "?"),
        ("created", f"{inv.created_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("expires", f"{inv.expires_at:%Y-%m-%d %H:%M:%S} UTC ({inv.expiry_s} s)"),
    ]


def invoice_table(inv: "Invoice", usd_per_btc: float | None = None) -> Table:
    return _kv_table("BOLT11 invoice", invoice_rows(inv, usd_per_btc))


def html_invoice(inv: "Invoice") -> str:
    return _kv_html("BOLT11 invoice", invoice_rows(inv))


def receipts_table(receipts: Iterable["Receipt"], title: str = "Ledger", usd_per_btc: float | None = None) -> Table:
    t = Table(title=title, title_justify="left")
    for col, kw in (("#", {"justify": "right"}), ("when (UTC)", {}), ("status", {}), ("host", {}), ("offer", {}),
                    ("method", {}), ("sat", {"justify": "right"}), ("fee sat", {"justify": "right"}),
                    ("hash", {"style": "dim"}), ("note", {})):
        t.add_column(col, **kw)  # type: ignore[arg-type]
    for r in receipts:
        style = STATUS_STYLE.get(r.status.value, "")
        sat = f"{r.amount_msat / 1000:,g}"
        if usd_per_btc:
            sat += f" (${r.amount_msat / 1e11 * usd_per_btc:,.2f})"
        t.add_row(str(r.id), r.when, f"[{style}]{r.status.value}[/]", r.host, r.offer_title or r.offer_id or "—",
                  r.method, sat, f"{r.fee_msat / 1000:,g}", (r.payment_hash or "")[:12] + "…", r.reason or "")
    return t


def html_receipts(receipts: Iterable["Receipt"], title: str = "Ledger") -> str:
    colours = {"settled": "#1a7f37", "pending": "#9a6700", "failed": "#cf222e"}
    rows = "".join(
        f"<tr><td>{r.id}</td><td>{_e(r.when)}</td><td style='color:{colours.get(r.status.value, '')}'>{_e(r.status.value)}</td>"
        f"<td>{_e(r.host)}</td><td>{_e(r.offer_title or r.offer_id or '')}</td><td>{_e(r.method)}</td>"
        f"<td style='text-align:right'>{r.amount_msat / 1000:,g}</td><td style='text-align:right'>{r.fee_msat / 1000:,g}</td>"
        f"<td><code>{_e((r.payment_hash or '')[:12])}…</code></td><td>{_e(r.reason or '')}</td></tr>"
        for r in receipts
    )
    return (f"<table><caption style='text-align:left'><b>{_e(title)}</b></caption><thead><tr><th>#</th><th>when (UTC)</th>"
            f"<th>status</th><th>host</th><th>offer</th><th>method</th><th>sat</th><th>fee sat</th><th>hash</th><th>note</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>")


def _e(x: Any) -> str:
    return html.escape(str(x))
