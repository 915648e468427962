"""What a person sees: rich tables in a terminal and HTML in a notebook, for every model."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

import httpay
from httpay.apps import display
from httpay.apps.dashboard import safe_url, spend_svg
from httpay.ledger import Intent, SQLiteLedger
from httpay.ledger.models import refusals_view
from httpay.protocols.l402_v02 import OfferList
from tests.helpers import NOTEBOOK_OFFERS, challenge_body, make_invoice

RATE = 100_000.0  # USD per BTC: 1 cent = 10 sat


def text(obj: Any, width: int = 120) -> str:
    c = Console(record=True, width=width, file=io.StringIO())
    c.print(obj)
    return c.export_text()


def ansi(obj: Any, width: int = 120) -> str:
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=True, color_system="standard").print(obj)
    return out.getvalue()


@pytest.fixture
def rate() -> Iterator[float]:
    display.set_usd_per_btc(RATE)
    yield RATE
    display.set_usd_per_btc(None)


@pytest.fixture
def offers() -> httpay.PaymentOffers:
    return httpay.PaymentOffers.from_dict(challenge_body())


def test_offers_show_price_in_usd_and_sat_credits_and_methods(offers: httpay.PaymentOffers, rate: float) -> None:
    out = text(offers)
    assert "L402 Payment Offers (v0.2.1)" in out
    for row in ("offer_c668e0c0", "1 Credit Package", "$0.01", "offer_a896b13c", "$4.99", "4,990", "750",
                "credit_card", "coinbase_commerce", "top-up"):
        assert row in out, row
    assert "at 100,000 USD/BTC" in out
    one = text(offers[1])
    assert "120 Credits Package" in one and "1,000" in one and "$1.00" in one and "750 Credits" not in one


def test_without_a_rate_sat_is_unknown_and_said_so(offers: httpay.PaymentOffers) -> None:
    out = text(offers)
    assert "—" in out and "needs a BTC/USD rate" in out
    assert "4,990" not in out


def test_offer_list_from_by_payment(offers: httpay.PaymentOffers, rate: float) -> None:
    cards = offers.by_payment("credit_card")
    assert isinstance(cards, OfferList)
    out = text(cards)
    assert "750 Credits Package" in out and "1 Credit Package" not in out
    html = cards._repr_html_()
    assert html.count("<tr>") == 2 and "4,990" in html  # header + one offer


def test_str_stays_plain_text(offers: httpay.PaymentOffers) -> None:
    for obj in (offers, offers[0], offers.by_payment("lightning")):
        s = str(obj)
        assert "\x1b[" not in s and "<" not in s and "[/" not in s and "offer_c668e0c0" in s


def test_html_escapes_what_the_service_sends(rate: float) -> None:
    evil = dict(NOTEBOOK_OFFERS[0], title="<script>alert('x')</script>", offer_id="o<1>")
    offers = httpay.PaymentOffers.from_dict(challenge_body(offers=[evil]))
    for html in (offers._repr_html_(), offers[0]._repr_html_(), offers.by_payment("lightning")._repr_html_()):
        assert "<script>" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
        assert "o&lt;1&gt;" in html
    assert "<script>alert('x')</script>" in text(offers)  # a terminal shows it as text, not markup


def _pr(expires: datetime, **payment_request: Any) -> httpay.PaymentRequest:
    method = "lightning" if "lightning_invoice" in payment_request else "credit_card"
    return httpay.PaymentRequest.from_dict(
        {"version": "0.2.1", "offer_id": "offer_c668e0c0", "expires_at": expires.isoformat(),
         "payment_request": payment_request}, payment_method=method)


def test_payment_request_shows_amount_expiry_and_method(rate: float) -> None:
    bolt11, _ = make_invoice(10_000)
    soon = datetime.now(UTC) + timedelta(minutes=35, seconds=20)
    pr = _pr(soon, lightning_invoice=bolt11)
    out = text(pr)
    assert "Payment request" in out and "offer_c668e0c0" in out and "lightning" in out
    assert f"{soon:%Y-%m-%d %H:%M:%S} UTC" in out and "payable for 35 min" in out
    assert "10 sat ≈ $0.01" in out and bolt11[:40] in out and bolt11 not in out
    html = pr._repr_html_()
    assert "payable for 35 min" in html and "10 sat ≈ $0.01" in html

    card = _pr(datetime.now(UTC) - timedelta(minutes=3), checkout_url="http://127.0.0.1:1/checkout/abc?a=1&b=<2>")
    out = text(card)
    assert "credit_card" in out and "expired 3 min ago" in out and "http://127.0.0.1:1/checkout/abc" in out
    assert "b=&lt;2&gt;" in card._repr_html_()


def test_invoice_shows_sat_usd_network_and_expiry(rate: float) -> None:
    bolt11, _ = make_invoice(10_000, expiry=600, description="1 Credit Package")
    inv = httpay.decode_invoice(bolt11)
    out = text(inv)
    for want in ("BOLT11 invoice", "10 sat ≈ $0.0100", "regtest", "1 Credit Package", inv.payment_hash,
                 "(600 s)", "payable for 10 min"):
        assert want in out, want
    assert "10 sat ≈ $0.0100" in inv._repr_html_()
    old = httpay.decode_invoice(make_invoice(10_000, expiry=60, date=int(datetime.now().timestamp()) - 600)[0])
    assert "expired 9 min ago" in text(old)
    assert "\x1b[" not in str(inv) and "10 sat" in str(inv)


@pytest.fixture
def filled(ledger: SQLiteLedger) -> SQLiteLedger:
    """Three payments: settled, pending, failed (with a long note)."""
    def reserve(h: str, title: str) -> int:
        return ledger.reserve(Intent(host="127.0.0.1:43117", url="http://127.0.0.1:43117/ticker/MSFT", protocol="l402-v0.2",
                                     method="lightning", amount_msat=10_000, payment_hash=h, offer_id="offer_c668e0c0",
                                     offer_title=title, offer_amount=1, offer_currency="USD", credits=1)).id
    ledger.settle(reserve("aa" * 32, "1 Credit Package"), preimage="be" * 32, fee_msat=1_000)
    reserve("bb" * 32, "1 Credit Package")
    ledger.fail(reserve("cc" * 32, "<i>evil</i>"), "InsufficientFunds: the wallet holds 0 sat, the invoice asks 10 sat")
    return ledger


def test_ledger_fits_80_columns_with_status_colours(filled: SQLiteLedger, rate: float) -> None:
    out = text(filled, width=80)
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    for status in ("settled", "pending", "failed"):
        [row] = [line for line in lines if f" {status} " in line]
        assert "10 ($0.01)" in row and "127.0.0.1:43117" in row  # one readable line per payment
    assert "#3: InsufficientFunds: the wallet holds 0 sat, the invoice asks 10 sat" in out  # notes below, not squeezed
    assert "fee sat" in out and "be" * 32 not in out  # there was a fee; the preimage never shows
    coloured = ansi(filled, width=80)
    assert "\x1b[32msettled" in coloured and "\x1b[33mpending" in coloured and "\x1b[31mfailed" in coloured


def test_ledger_wide_shows_hash_and_note_columns(filled: SQLiteLedger) -> None:
    out = text(filled, width=140)
    assert "hash" in out and "aaaaaaaaaa…" in out and "note" in out and "$0.01" in out
    [row] = [line for line in out.splitlines() if " failed " in line]
    assert "InsufficientFunds" in row


def test_no_empty_columns_for_a_clean_ledger(ledger: SQLiteLedger) -> None:
    ledger.settle(ledger.reserve(Intent(host="h", url="http://h/x", protocol="l402-v0.2", method="lightning",
                                        amount_msat=5_000, payment_hash="dd" * 32)).id, preimage="ee" * 32)
    out = text(ledger, width=80)
    assert "note" not in out and "fee" not in out and "5" in out
    assert "no payments recorded" in text(SQLiteLedger(":memory:"))


def test_receipt_and_ledger_html(filled: SQLiteLedger, rate: float) -> None:
    html = filled._repr_html_()
    assert "color:#1a7f37" in html and "color:#9a6700" in html and "color:#cf222e" in html
    assert "&lt;i&gt;evil&lt;/i&gt;" in html and "<i>evil</i>" not in html
    assert "10 ($0.01)" in html and "$0.01" in html and "be" * 32 not in html
    one = filled.receipts()[-1]
    assert "settled" in one._repr_html_() and "settled" in text(one)
    assert "\x1b[" not in str(one) and "settled" in str(one)


def test_budget_lines_and_views(filled: SQLiteLedger) -> None:
    policy = httpay.Policy(max_per_payment_usd=1, budget_usd=0.5, per_day_usd=0.02, per_host_usd=0.1, usd_per_btc=RATE)
    lines = display.budget_lines(policy, filled)
    by_name = {b.name: b for b in lines}
    assert by_name["per payment"].limit_msat == 1_000_000 and by_name["per payment"].spent_msat is None
    assert by_name["total budget"].spent_msat == 21_000 and by_name["total budget"].left_msat == 479_000
    assert by_name["daily budget"].used == 1.0 and by_name["daily budget"].left_msat == 0
    assert by_name["per-host budget"].scope == "127.0.0.1"  # the host on every port (paid on 127.0.0.1:43117)
    out = text(display.budget_table(lines, RATE), width=120)
    narrow = text(display.budget_table(lines, RATE), width=80)
    assert all(len(x) <= 80 for x in narrow.splitlines()) and "…" not in narrow and "479" in narrow and "1,000 sat = $1.00" in narrow
    assert "21 sat ($0.021)" in out and "500 sat ($0.50)" in out and "last 24h" in out and "100%" in out
    html = display.html_budget(lines, RATE)
    assert "httpay-meter" in html and "#cf222e" in html
    with pytest.raises(httpay.ConfigError, match="rate"):
        display.budget_lines(httpay.Policy(budget_usd=1), filled)
    assert "unlimited" in text(display.budget_table([]))  # only Policy.unlimited() has no line at all
    defaults = {b.name: b.limit_msat for b in display.budget_lines(httpay.Policy(), filled)}
    assert defaults == {"default per payment": 1_000_000, "default hourly": 10_000_000, "default daily": 50_000_000}


def test_spend_chart_is_inline_svg(filled: SQLiteLedger) -> None:
    svg = spend_svg(filled.receipts(), budget_msat=30_000)
    assert svg.startswith("<svg") and svg.count("<circle") == 2  # the failed payment spent nothing
    assert "21 sat" in svg and "budget 30 sat" in svg and "https:" not in svg and "src=" not in svg
    assert "no payments yet" in spend_svg([])


def test_urls_shown_to_people_mask_credentials() -> None:
    assert safe_url("https://bob:pw@api.example/x?api_key=s3cret&symbol=MSFT") == "https://api.example/x?api_key=***&symbol=MSFT"
    assert safe_url("http://h/x?Token=abc") == "http://h/x?Token=***"


# -- a receipt shown as a receipt ------------------------------------------------------------------------
def _paid(ledger: SQLiteLedger, *, preimage: str | None, settle: bool = True, **intent: Any) -> httpay.Receipt:
    import hashlib

    good = "be" * 32
    fields: dict[str, Any] = {"host": "api.example", "url": "https://bob:pw@api.example/ticker/MSFT?api_key=s3cret&range=1d",
                                  "protocol": "l402-v0.2", "method": "lightning", "amount_msat": 10_000,
                                  "payment_hash": hashlib.sha256(bytes.fromhex(good)).hexdigest(), "offer_id": "offer_c668e0c0",
                                  "offer_title": "1 Credit Package", "offer_amount": 1, "offer_currency": "USD",
                                  "tags": {"agent": "research", "task": "T-17"}, "wallet": "lnbits"}
    fields.update(intent)
    r = ledger.reserve(Intent(**fields), usd_per_btc=RATE)
    if settle:
        ledger.settle(r.id, preimage=preimage or good, fee_msat=1_000)
    return next(x for x in ledger.receipts() if x.id == r.id)


def test_a_receipt_is_shown_as_a_receipt_in_every_renderer(ledger: SQLiteLedger) -> None:
    r = _paid(ledger, preimage=None)
    v = r.view()
    assert v.name == "receipt" and v.title == f"Receipt #{r.id}" and not v.header
    fields = {c.cells[0].text: c.cells[1].text for c in v.rows}
    assert fields == {
        "URL": "https://api.example/ticker/MSFT?api_key=***&range=1d", "host": "api.example",
        "offer": "1 Credit Package (offer_c668e0c0) at $0.01", "amount": "10 sat + fee 1 sat",
        "in USD": "$0.011 at 100,000 USD/BTC (the rate it was quoted at), fee included", "status": "settled",
        "paid by": "lightning (l402-v0.2) from lnbits", "payment hash": r.payment_hash,
        "proof": "preimage verified", "tags": "agent=research task=T-17", "time": f"{r.when} UTC",
    }
    page = r._repr_html_()
    term = text(r, width=100)
    plain = str(r.view())
    for out in (page, term, plain):
        for want in ("Receipt #", "api.example/ticker/MSFT", "1 Credit Package", "10 sat + fee 1 sat", "preimage verified",
                     "agent=research task=T-17", "100,000 USD/BTC", r.payment_hash or "?"):
            assert want in out, (want, out[:300])
        assert "s3cret" not in out and "bob:pw" not in out and "be" * 32 not in out  # never a secret or the preimage
    assert "color:#1a7f37" in page  # settled and verified, in green
    assert "Receipt #" in text(r) and "ledger" not in v.name  # not a one-row ledger


def test_a_receipts_proof_says_what_proves_it(ledger: SQLiteLedger) -> None:
    assert _paid(ledger, preimage=None).proof == "preimage verified"
    wrong = _paid(ledger, preimage="11" * 32, payment_hash="ab" * 32)
    assert wrong.proof == "preimage does NOT match" and "color:#cf222e" in wrong._repr_html_()
    pending = _paid(ledger, preimage=None, settle=False, payment_hash="cd" * 32, max_fee_msat=2_000)
    assert pending.proof == "" and "none yet: the payment is pending" in str(pending.view())
    assert "10 sat + fee up to 2 sat" in str(pending.view())  # the fee a pending payment may still cost
    x402 = ledger.reserve(Intent(host="x.example", url="https://x.example/a", protocol="x402", method="exact",
                                 amount_msat=5_000, payment_hash=None))
    ledger.settle(x402.id, preimage="")
    ledger.note(x402.id, "transaction 0xabc123 on base-sepolia")  # as the flow records an x402 settlement
    shown = next(x for x in ledger.receipts() if x.id == x402.id)
    assert shown.proof == "transaction 0xabc123"
    fields = {c.cells[0].text: c.cells[1].text for c in shown.view().rows}
    assert fields["proof"] == "transaction 0xabc123" and "note" not in fields


def test_a_receipt_shows_hostile_server_text_as_text(ledger: SQLiteLedger) -> None:
    evil = "<script>alert(1)</script>\n[bold]x"
    r = _paid(ledger, preimage=None, offer_title=evil, url=f"https://api.example/{evil}", tags={"agent": evil})
    page = r._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;\\n[bold]x" in page
    assert "[bold]x" in text(r) and "\n[bold]" not in str(r.view())


def test_view_html_reads_well_without_any_stylesheet(filled: SQLiteLedger) -> None:
    """Borders, padding, alignment and status colours inline: GitHub's notebook preview, VS Code and
    email strip <style>, so the table carries them itself."""
    import re

    for page in (filled._repr_html_(), filled.receipts()[0]._repr_html_()):
        assert re.search(r"<table [^>]*style='[^']*border:1px solid", page)
        cells = re.findall(r"<td style='([^']*)'", page)
        assert cells and all("padding:" in c and "border-bottom:" in c for c in cells)
        assert "<style" not in page and "class=" in page
    ledger_page = filled._repr_html_()
    assert "text-align:right;font-variant-numeric:tabular-nums" in ledger_page  # amounts line up
    assert "color:#1a7f37" in ledger_page and "color:#cf222e" in ledger_page


def test_the_ledger_shows_the_url_bought_and_the_tags(ledger: SQLiteLedger, rate: float) -> None:
    _paid(ledger, preimage=None)
    page = ledger._repr_html_()
    assert "/ticker/MSFT?api_key=***&amp;range=1d" in page and "title='https://api.example/ticker/MSFT?api_key=***" in page
    assert "agent=research task=T-17" in page and "s3cret" not in page
    wide, mid = text(ledger, width=170), text(ledger, width=120)
    assert "/ticker/MSFT" in wide and "agent=research" in wide
    assert "/ticker/MSFT" not in mid and "1 Credit Package" in mid  # a terminal gives the offer its room first
    assert "s3cret" not in wide


def test_refusals_render_as_a_table_in_every_renderer(ledger: SQLiteLedger) -> None:
    ledger.note_refusal(host="shop.example", url="https://shop.example/buy?api_key=s3cret", rule="max_per_payment",
                        reason="refused: <b>5,000 sat</b> is over the per-payment cap; raise max_per_payment_sat",
                        tags={"agent": "research"})
    (ref,) = ledger.refusals()
    page, term, plain = ref._repr_html_(), text(ref, width=250), str(ref.view())
    for out in (page, term, plain):
        for want in ("max_per_payment", "shop.example", "/buy?api_key=***", "raise max_per_payment_sat", "agent=research"):
            assert want in out, (want, out[:300])
        assert "s3cret" not in out
    assert "&lt;b&gt;5,000 sat&lt;/b&gt;" in page and "<b>5,000" not in page
    assert "nothing refused" in str(refusals_view([]))


def test_approvals_waiting_read_at_80_columns(tmp_path: Any) -> None:
    """`httpay approvals` in a standard terminal: every waiting approval's offer and price, and each
    other offer it may be approved with, stay on screen (the offer column used to be squeezed out)."""
    from httpay.apps.approvals import ApprovalQueue, approvals_view
    from tests.helpers import quote_of

    offers = httpay.PaymentOffers.from_dict(challenge_body())
    with ApprovalQueue(tmp_path / "q.db") as q:
        q.add(quote_of(offers, "https://api.stock-service.example.com/ticker/MSFT?range=5y",
                       "api.stock-service.example.com", usd_per_btc=RATE))
        shown = text(approvals_view(q.pending()), width=80)
    assert all(len(line) <= 80 for line in shown.splitlines())
    flat = " ".join(shown.split())
    for want in ("waiting", "1 Credit Package", "(offer_c668e0c0)", "$0.01 ≈ 10", "or --offer", "offer_97bf23f7:",
                 "offer_a896b13c:", "$4.99 (over", "a limit)"):
        assert want in flat, (want, shown)


def test_offers_read_at_80_columns_and_show_everything_when_wide(offers: httpay.PaymentOffers, rate: float) -> None:
    """A standard terminal shows what a choice turns on (id, title, price, sat, methods) whole; a wide
    one adds credits and type (at 80 columns the nine columns were cut to 'tit… pri… cre…')."""
    narrow = text(offers.view(RATE), width=80)
    assert all(len(line) <= 80 for line in narrow.splitlines())
    for want in ("offer_c668e0c0", "1 Credit Package", "$0.01", "4,990", "credit_card", "methods"):
        assert want in narrow, (want, narrow)
    assert "…" not in narrow and "credits" not in narrow
    wide = text(offers.view(RATE), width=140)
    assert "credits" in wide and "top-up" in wide
