"""A hostile service's text, paid for through httpay, never steers what a person sees afterwards.

Each case: a loopback v0.2 service offers one 10 sat offer whose title, description and id (or
the wallet's failure) carry hostile text; httpay.Client and httpay.AsyncClient pay it (or fail),
and the ledger must say exactly what happened (wallet calls, rows, spend including the fee, the
error). Then every view of that ledger, the receipt and the offers, in each renderer (terminal at
80 and 160 columns, ANSI colour, notebook HTML, plain text), shows the text as typed, on one
line, without a terminal escape, a live tag or rich markup obeyed, and bounded.
"""

from __future__ import annotations

import html
import io
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import httpay
from httpay.apps import display
from httpay.errors import WalletError
from httpay.ledger import SQLiteLedger
from httpay.safe import clean
from tests.hostile.harness import CountingWallet, HostileService, run


@dataclass(frozen=True)
class Case:
    name: str
    text: str                     # what the server (or the wallet) says
    where: str = "title"          # "title", "offer_id" or "wallet" (the failure's message)
    paid: bool = True


CASES = [
    Case("rich markup in the title", "Premium [bold red]FREE[/] [link=https://evil.example]click[/link]"),
    Case("a live script in the title", "<script>alert('x')</script><img src=x onerror=alert(1)>"),
    Case("a newline forging a second ledger line", "1 credit\n#99 settled 0 sat FORGED"),
    Case("terminal escapes clearing the screen", "ten \x1b[2J\x1b[31mred\x07 sat\r"),
    Case("a bidi override reversing the text", "invoice\u202egnp.exe"),
    Case("zero-width and direction marks", "Free\u200f\u200b\u2060\ufeff\u00ad trial"),
    Case("a 200,000 character title", "A" * 200_000),
    Case("markup and a tag in the offer id", "o[/x]<b>1</b>", where="offer_id"),
    Case("the wallet's failure carries markup and escapes", "no [bold]route[/] \x1b[2J\nFORGED", where="wallet",
         paid=False),
]


def offer(case: Case) -> dict[str, Any]:
    o = {"offer_id": "o1", "title": "1 credit", "description": "one call", "type": "top-up", "balance": 1,
         "amount": 10, "currency": "SAT", "payment_methods": ["lightning"]}
    if case.where == "title":
        o.update(title=case.text, description=case.text)
    elif case.where == "offer_id":  # untitled: the ledger names the offer by its id
        o.update(offer_id=case.text, title="")
    return o


def terminal(obj: Any, width: int) -> str:
    c = Console(record=True, width=width, file=io.StringIO())
    c.print(obj)
    return c.export_text()


def colours(obj: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=160, force_terminal=True, color_system="standard").print(obj)
    return out.getvalue()


def harmless(out: str, case: Case, *, is_html: bool = False) -> None:
    head = clean(case.text, 30)[:24]  # how the start of the text reads once made one harmless line
    shown = html.escape(head, quote=True) if is_html else head
    assert shown in out.replace("\n", ""), (case.name, out[:800])
    assert "\x1b[2J" not in out and "\x07" not in out and "\r" not in out
    assert not [ch for ch in out if unicodedata.category(ch) in {"Cf", "Zl", "Zp"}], (case.name, out[:800])
    assert "\n#99 settled" not in out and "\nFORGED" not in out
    assert len(out) < 30_000  # a huge title is shown bounded
    if is_html:
        assert "<script" not in out and "<img" not in out and "<b>1</b>" not in out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_text_paid_for_is_shown_harmless_in_every_view(case: Case, mode: str, svc: HostileService,
                                                              ledger: Path) -> None:
    wallet = CountingWallet(svc.node, fee_msat=1_000,
                            fail=WalletError(case.text, outcome_known=True) if case.where == "wallet" else None)
    url = svc.v02(offers=[offer(case)], invoice_msat=10_000)
    out = run(mode, url, wallet=wallet, ledger=ledger, policy=httpay.Policy(max_per_payment_sat=100))

    assert out.wallet_calls == 1
    [row] = out.receipts
    if case.paid:
        assert out.error is None and out.status == 200, out.error
        assert row.status.value == "settled" and out.spent_msat == 11_000  # 10 sat and the 1 sat fee
    else:
        assert isinstance(out.error, WalletError) and row.status.value == "failed" and out.spent_msat == 0
        assert "route" in str(out.error)  # the wallet's own error, re-raised; the views below clean its text

    with SQLiteLedger(ledger) as lg:
        views: list[Any] = [lg, row, display.receipts_table(lg.receipts())]
        if case.where != "wallet":
            offers = httpay.PaymentOffers.from_dict({"version": "0.2.2", "payment_request_url": url,
                                                     "offers": [offer(case)]})
            views += [offers, offers[0], display.offers_table(offers.offers, chosen=offers[0].offer_id)]
        for v in views:
            for width in (80, 160):
                text = terminal(v, width)
                assert "\x1b" not in text and len(text) < 30_000
            harmless(terminal(v, 160), case)
            harmless(colours(v), case)
            assert "\x1b[1;31mFREE" not in colours(v) and "\x1b]8;" not in colours(v)  # no style, no hyperlink obeyed
            page = v._repr_html_() if hasattr(v, "_repr_html_") else None
            if page is not None:
                harmless(page, case, is_html=True)
        harmless(str(lg.view()), case)
        harmless(display.html_receipts(lg.receipts()), case, is_html=True)
