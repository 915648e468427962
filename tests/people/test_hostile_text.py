"""Server text never controls what a person sees: every terminal view, the CLI, the demo story and
the HTML views show a hostile title, description, URL or error exactly as typed (markup shown, not
obeyed), on one line, without terminal escapes, and bounded; our own hints keep their brackets."""

from __future__ import annotations

import io
import re
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import httpay
from httpay.apps import display
from httpay.apps.approvals import Approval
from httpay.core import events as ev
from httpay.core.quote import quote
from httpay.demo.story import Story
from httpay.dialects.l402_v02 import to_challenge
from httpay.errors import ConfigError
from httpay.ledger import Intent, SQLiteLedger
from httpay.lightning import decode_invoice
from httpay.protocols.l402_v02 import PaymentOffers, PaymentRequest
from httpay.safe import MAX_TEXT, clean, markup
from tests.helpers import make_invoice
from tests.hostile.harness import hostile_service

HOSTILE = {
    "closing_tag": "Premium [/x] plan",
    "style_tag": "[bold red]x",
    "link_tag": "[link=https://evil.example]click[/link]",
    "newline": "ten sat\nFORGED second line",
    "escapes": "ten \x1b[2J\x1b[31mred\x07 sat\r",
    "bidi": "abc\u202egnp.exe",
    "invisible": "Free\u200f\u200b\u2060\ufeff trial",
    "huge": "A" * 2_000_000,
}
SHOWN = {  # what a person must read for each (a substring of the view)
    "closing_tag": "Premium [/x] plan", "style_tag": "[bold red]x", "link_tag": "[link=https://evil.example]click",
    "newline": "ten sat\\nFORGED second line", "escapes": "ten \\x1b[2J\\x1b[31mred\\x07 sat\\r",
    "bidi": "abc\\u202egnp.exe", "invisible": "Free\\u200f\\u200b\\u2060\\ufeff trial", "huge": "AAAA",
}


# what no view may show raw: bidi controls, zero-width and other format characters, separators
HIDDEN = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\U000e0000-\U000e007f]")


def text(obj: Any, width: int = 250) -> str:
    c = Console(record=True, width=width, file=io.StringIO())
    c.print(obj)
    return c.export_text()


def ansi(obj: Any, width: int = 250) -> str:
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=True, color_system="standard").print(obj)
    return out.getvalue()


def offers_with(title: str) -> PaymentOffers:
    return PaymentOffers.from_dict({
        "version": "0.2.2", "payment_request_url": "https://svc.example/pay",
        "offers": [{"offer_id": "o1", "title": title, "description": title, "type": "top-up", "balance": 1,
                    "amount": 10, "currency": "SAT", "payment_methods": ["lightning"], "duration": title[:50]}],
    })


def assert_harmless(out: str, name: str) -> None:
    assert SHOWN[name] in out.replace("\n", "") or SHOWN[name] in out, out[:500]
    assert "\x1b[2J" not in out and "\x07" not in out and not HIDDEN.search(out)
    assert "FORGED second line" not in out or "\\nFORGED" in out
    assert len(out) < 20_000  # a 2 MB title is shown bounded


@pytest.mark.parametrize("name", list(HOSTILE))
def test_offers_views_show_server_text_as_typed(name: str) -> None:
    offers = offers_with(HOSTILE[name])
    for view in (offers, offers.offers[0], offers.by_payment("lightning"),
                 display.offers_table(offers.offers, title=HOSTILE[name], chosen="o1")):
        out = text(view)
        assert_harmless(out, name)
    colours = ansi(offers)
    assert "\x1b[1;31mx" not in colours and "\x1b[31mred" not in colours  # never drawn as the server asked
    assert "evil.example\x1b\\" not in colours  # no terminal hyperlink was made


@pytest.mark.parametrize("name", list(HOSTILE))
def test_invoice_payment_request_receipt_approval_budget_views(name: str, tmp_path: Path) -> None:
    t = HOSTILE[name]
    bolt11, _ = make_invoice(10_000, description=t[:500])
    inv = decode_invoice(bolt11)
    out = text(inv)
    assert "\x1b[2J" not in out and "\x07" not in out and len(out) < 20_000
    if len(t) < 500:  # the invoice carries the whole description
        assert_harmless(out, name)
    pr = PaymentRequest.from_dict({"offer_id": t, "payment_request": {"checkout_url": t}}, payment_method="credit_card")
    assert_harmless(text(pr), name)
    with SQLiteLedger(tmp_path / "l.db") as lg:
        r = lg.reserve(Intent(host="svc.example", url="https://svc.example/x", protocol="l402-v0.2", method="lightning",
                              amount_msat=10_000, payment_hash="ab" * 32, offer_id="o1", offer_title=t,
                              offer_amount=10, offer_currency="SAT"), [])
        lg.fail(r.id, t)
        rows = lg.receipts()
    for width in (80, 250):  # narrow terminals put notes under the table
        out = text(display.receipts_table(rows), width=width)
        assert "\x1b[2J" not in out and "\x07" not in out and len(out) < 20_000
    assert_harmless(text(display.receipts_table(rows)), name)
    a = Approval(id=1, status="waiting", created_at=datetime.now(UTC), decided_at=None, host=t,
                 url="https://svc.example/x", offer_id=t, offer_title=t, offer_price=t, price_msat=10_000,
                 method="lightning", usd_per_btc=None, decided_by=t, reason=t)
    assert_harmless(text(display.approvals_table([a])), name)
    assert "\x1b" not in display.html_approvals([a]) and len(display.html_approvals([a])) < 20_000
    html = display.html_offers(offers_with(t).offers) + display.html_receipts(rows)
    assert "<script" not in html.lower() or "&lt;script" in html.lower()
    assert "\x1b" not in html and "\n" not in clean(t) and len(html) < 20_000


def test_html_views_escape_markup_and_scripts() -> None:
    offers = offers_with("<script>alert(1)</script>\n[bold]x")
    html = display.html_offers(offers.offers)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;\\n[bold]x" in html


def test_the_demo_story_shows_server_text_as_typed() -> None:
    out = io.StringIO()
    story = Story(Console(file=out, width=200, record=True), None)
    offers = offers_with("Premium [/x] plan\nFORGED")
    url = "https://svc.example/x"
    challenge = to_challenge(offers, url)
    decision = quote(challenge, httpay.Policy(max_per_payment_sat=100), url=url, host="svc.example", usd_per_btc=None)
    with story:  # a refusal no exception follows is said as the story ends
        story.on_event(ev.ChallengeMet(url, "r1", challenge))
        story.on_event(ev.Quoted(url, "r1", decision))
        story.on_event(ev.Refused(url, "r1", rule="x", reason="refused: [bold red]no[/] [/x]"))
        story.on_event(ev.PaymentFailed(url, "r1", receipt=None, error="[/oops]"))
    shown = story.console.export_text()
    assert "Premium [/x] plan\\nFORGED" in shown and "refused: [bold red]no[/] [/x]" in shown and "[/oops]" in shown


# -- the CLI ---------------------------------------------------------------------------------------
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from httpay.apps.cli import main

    for k in ("HTTPAY_WALLET", "HTTPAY_POLICY", "HTTPAY_DEMO_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("NO_COLOR", "1")
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", ["closing_tag", "style_tag", "link_tag", "newline", "escapes", "huge"])
def test_httpay_offers_and_dry_run_show_hostile_offers_literally(name: str, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str],
                                                                tmp_path: Path) -> None:
    t = HOSTILE[name]
    with hostile_service() as svc:
        url = svc.v02("/v02", offers=[{"offer_id": "o1", "title": t, "type": "top-up", "balance": 1, "amount": 10,
                                       "currency": "SAT", "payment_methods": ["lightning"]}])
        code, out, err = run_cli(monkeypatch, capsys, "offers", url)
        assert code == 0, err
        assert_harmless(out, name)
        policy = tmp_path / "policy.toml"
        policy.write_text("max_per_payment_sat = 100\nbudget_sat = 1000\n")
        code, out, err = run_cli(monkeypatch, capsys, "get", url, "--dry-run", "--policy", str(policy),
                                 "--ledger", str(tmp_path / "l.db"))
        assert code == 0, err
        assert_harmless(out, name)
        assert "would pay" in out and SHOWN[name][:40] in out.split("would pay", 1)[1].replace("\n", "")
    assert svc.node.paid == []


def test_our_own_hints_keep_their_brackets(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import httpay.apps.cli

    def boom(*_: Any) -> int:
        raise ConfigError("the Lightspark wallet needs the `lightspark` SDK: pip install 'httpay[lightspark]'")

    monkeypatch.setattr(httpay.apps.cli, "_run", boom)
    code, _, err = run_cli(monkeypatch, capsys, "budget")
    assert code == 1 and "pip install 'httpay[lightspark]'" in err


def test_clean_and_markup_are_the_one_place() -> None:
    assert clean("a\nb\r\x1b[31m\u2028") == "a\\nb\\r\\x1b[31m\\u2028"
    assert len(clean("x" * 10_000_000)) == MAX_TEXT and clean("x" * 10_000_000).endswith("…")
    assert markup("[bold red]x") == "\\[bold red]x"
    assert text(markup("pip install 'httpay[lightspark]'")).strip() == "pip install 'httpay[lightspark]'"
    assert clean(object.__new__(_Unprintable)) == "<_Unprintable>"


def test_every_invisible_or_format_character_is_shown_as_an_escape() -> None:
    hidden = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) in {"Cc", "Cf", "Zl", "Zp", "Cs"}]
    hidden += ["\u3164", "\u115f", "\u034f", "\ufe0f"]  # a Hangul filler, a grapheme joiner, a stray selector
    kept = [ch for ch in hidden if ch in clean(f"a{ch}b")]
    assert kept == [], [f"U+{ord(ch):04X}" for ch in kept]
    assert clean("a\u200fb\U000e0041") == "a\\u200fb\\U000e0041"
    assert clean("Café 日本 ❤️ 👍") == "Café 日本 ❤️ 👍"  # real text, and an emoji's own selector, as written
    assert clean("❤\ufe0f" + "\ufe01" * 8) == "❤\ufe0f" + "\\ufe01" * 8  # a run of selectors hides bytes


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_the_approval_spinner_shows_a_hostile_title_as_typed(tmp_path: Path) -> None:
    from httpay.apps.approvals import ApprovalQueue, spinner

    offers = offers_with("[bold red]Premium [/x] plan\nFORGED")
    decision = quote(to_challenge(offers, "https://svc.example/x"), httpay.Policy(max_per_payment_sat=100),
                     url="https://svc.example/x", host="svc.example", usd_per_btc=None)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=250)
    with ApprovalQueue(tmp_path / "q.db", timeout_s=0.1, poll_s=0.02, progress=spinner(console)) as q, \
            pytest.raises(httpay.PaymentRefused) as no:
        q(decision)
    assert "\x1b[" not in str(no.value) and "\nFORGED" not in str(no.value)
    shown = out.getvalue()
    assert "[bold red]Premium [/x] plan\\nFORGED" in shown and "\x1b[1;31mPremium" not in shown


FORGED = "\x1b[2J\x1b[31mFAKE\nINFO httpay: all good"


def test_every_str_a_person_prints_shows_server_text_as_one_harmless_line(tmp_path: Path) -> None:
    """An error's text, a receipt, an MPP challenge, an x402 receipt and the offers are printed as
    they are (`print(err)`, the README's `print(receipt_of(r))`): server text in them has its
    control characters shown, never an escape sequence or a forged second log line."""
    from httpay.protocols import mpp
    from httpay.protocols.x402 import X402Receipt
    from tests.helpers import challenge_body

    with SQLiteLedger(tmp_path / "l.db") as lg:
        row = lg.reserve(Intent(host="svc.example", url="https://svc.example/x", protocol="l402-v0.2",
                                method="lightning", amount_msat=5_000, payment_hash="ab" * 32, offer_id="o1",
                                offer_title=FORGED, offer_amount=5, offer_currency="SAT"))
        row = lg.note(row.id, FORGED)
    challenge = mpp.MppChallenge(id="c", realm=FORGED, method="tempo", intent="charge",
                                 request={"amount": FORGED, "currency": FORGED}, params={})
    refusal = httpay.PaymentRefused(f"refused: {FORGED}", rule="x", knob="budget_usd", advice="raise {knob}")
    shown = [str(refusal), refusal.render(), str(httpay.PaymentNotHonored(f"paid but {FORGED}", receipt=row, response=None)),
             str(row), str(challenge), str(X402Receipt(True, FORGED, FORGED)),
             str(X402Receipt(False, None, None, error_reason=FORGED))]
    for text in shown:
        assert "\x1b" not in text and "\n" not in text and "\\x1b[2J" in text, text
    offers = str(PaymentOffers.from_dict({**challenge_body(), "version": f"0.2{FORGED}"}))
    assert "\x1b" not in offers and "\nINFO" not in offers and offers.startswith("L402 Payment Offers (v0.2\\x1b")
