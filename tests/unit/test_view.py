"""One description per view, three renderers: what a terminal, a notebook and a pipe show is the
same content, every cell harmless in each, whatever a server put in it."""

from __future__ import annotations

import html
import io
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console

import httpay
from httpay.apps.approvals import Approval, Choice
from httpay.ledger import Intent, SQLiteLedger
from httpay.view import Cell, Column, View, kv, row
from tests.helpers import challenge_body, make_invoice

EVIL = "<script>alert('x')</script> [bold red]x[/] \x1b[2J\nFORGED"


def text(obj: Any, width: int = 200) -> str:
    c = Console(record=True, width=width, file=io.StringIO())
    c.print(obj)
    return c.export_text()


def ansi(obj: Any, width: int = 200) -> str:
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=True, color_system="standard").print(obj)
    return out.getvalue()


def sample() -> View:
    return View("Title " + EVIL, (Column("name", key=True), Column("amount", align="right", wrap=False)),
                (row(EVIL, Cell("10", style="good", hint=EVIL)), row("b", Cell("50%", meter=0.5))),
                notes=(Cell("a note " + EVIL, style="dim"),), name="sample")


def test_server_text_is_shown_as_typed_and_never_obeyed_by_any_renderer() -> None:
    v = sample()
    shown = html.escape("<script>alert('x')</script> [bold red]x[/] \\x1b[2J\\nFORGED", quote=True)
    page = v.to_html()
    assert "<script>" not in page and shown in page and "\x1b" not in page and "\n" not in page
    assert f"title='{shown}'" in page  # a hint is escaped as an attribute, too
    term = text(v)
    assert "[bold red]x[/] \\x1b[2J\\nFORGED" in term and "\nFORGED" not in term
    assert "\x1b[1;31mx" not in ansi(v) and "\x1b[2J" not in ansi(v)  # markup shown, escapes neutralised
    plain = str(v)
    assert "\\nFORGED" in plain and "\x1b" not in plain and plain.count("\n") == 5  # title, head, rule, 2 rows, note


def test_the_three_renderers_show_the_same_cells() -> None:
    v = sample()
    for out in (text(v), v.to_html(), str(v)):
        for want in ("name", "amount", "10", "50%", "a note"):
            assert want in out, (want, out)
    assert "green" not in v.to_html() and "color:#1a7f37" in v.to_html()  # a tone, in each renderer's own terms
    assert re.search(r"\x1b\[32m *10", ansi(v))


def test_a_narrow_terminal_gets_the_narrow_variant_html_and_text_the_full_one() -> None:
    narrow = View("T", (Column("a"),), (row("short"),))
    v = View("T", (Column("a"), Column("detail")), (row("short", "lots of detail"),), narrow=narrow, narrow_below=100)
    assert "lots of detail" in text(v, width=120) and "lots of detail" not in text(v, width=80)
    assert "lots of detail" in v.to_html() and "lots of detail" in str(v)


def test_empty_views_say_so_and_notes_stay_out_of_the_rows() -> None:
    v = View("Ledger", (Column("#"), Column("x")), empty="no payments recorded", notes=(Cell("a footnote"),))
    page = v.to_html()
    assert "no payments recorded" in page and "colspan='2'" in page and "no payments recorded" in text(v)
    assert page.index("a footnote") > page.index("</tbody>")  # in <tfoot>: a page counting rows is not misled
    assert "no payments recorded" in str(v)


def test_a_description_that_does_not_add_up_is_refused() -> None:
    with pytest.raises(ValueError, match="2 cells in a view of 1 columns"):
        View("T", (Column("a"),), (row("x", "y"),))
    with pytest.raises(ValueError, match="unknown view style 'blink'"):
        Cell("x", style="blink")


def test_key_value_views_name_their_fields() -> None:
    v = kv("Payment request", [("offer", "o<1>")])
    assert "<th style=" in v.to_html() and "o&lt;1&gt;" in v.to_html()  # the field is the row's header cell
    assert "<thead>" not in v.to_html() and "offer" in text(v)


def _models() -> list[Any]:
    offers = httpay.PaymentOffers.from_dict(challenge_body())
    pr = httpay.PaymentRequest.from_dict({"offer_id": "o1", "payment_request": {"checkout_url": "https://x/c"}},
                                         payment_method="credit_card")
    ledger = SQLiteLedger(":memory:")
    ledger.reserve(Intent(host="h", url="http://h/x", protocol="l402-v0.2", method="lightning", amount_msat=5_000,
                          payment_hash="dd" * 32))
    a = Approval(id=1, status="waiting", created_at=datetime.now(UTC), decided_at=None, host="h", url="https://h/x",
                 offer_id="o1", offer_title="t", offer_price="$0.01", price_msat=10_000, method="lightning",
                 usd_per_btc=None, decided_by=None, reason=None, choices=(Choice("o2", "t2", "$1", True),))
    return [offers, offers[0], offers.by_payment("lightning"), pr, httpay.decode_invoice(make_invoice(10_000)[0]),
            ledger, ledger.receipts()[0], a]


@pytest.mark.parametrize("model", _models(), ids=lambda m: type(m).__name__)
def test_every_model_is_drawn_from_its_own_description(model: Any) -> None:
    """A model's terminal table and notebook HTML are its `view()` drawn by the shared renderers."""
    v = model.view()
    assert isinstance(v, View)
    assert model._repr_html_() == (model.view(title="Ledger") if isinstance(model, SQLiteLedger) else v).to_html()
    assert text(model) == text(v)


@pytest.mark.parametrize("model", _models(), ids=lambda m: type(m).__name__)
def test_notebook_html_needs_no_stylesheet(model: Any) -> None:
    """Every cell carries its own little inline style (padding, alignment, colour), so the table
    reads the same in Jupyter, VS Code, a GitHub preview or a bare browser."""
    page = model._repr_html_()
    cells = re.findall(r"<t[dh]\b[^>]*>", page)
    assert cells and all(" style='" in c for c in cells), [c for c in cells if "style=" not in c]
    assert "<style" not in page and "<script" not in page and "<link" not in page
