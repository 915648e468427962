"""What a person overseeing agents reads on the dashboard, over HTTP (Starlette's test client): the
URL bought per row, the refused attempts, the wallet's balance, spend by tag and the tag filter, a
chart scaled to its data; every new view tokened, and every server text shown as text."""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

import httpay
from httpay.apps.dashboard import BUDGET_RANGE, PAGE, create_app, spend_svg
from httpay.errors import WalletError
from httpay.ledger import Intent, SQLiteLedger
from httpay.wallets.base import Payment, Wallet

TOKEN = "t0ken-for-tests"
HOSTILE = "<img src=x onerror=\"window.pwned=1\"></td></table><script>window.pwned=2</script>"


class BalanceWallet(Wallet):
    """A wallet that only tells its balance (or fails as told), counting how often it is asked, and
    able to hold a read until released (to prove the page never waits for it)."""

    name = "lnbits"
    network = "bitcoin"

    def __init__(self, balance_msat: int = 84_210_000, fail: BaseException | None = None,
                 hold: threading.Event | None = None) -> None:
        self.balance, self.fail, self.hold, self.calls = balance_msat, fail, hold, 0

    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Payment:
        raise AssertionError("the dashboard never pays")

    def balance_msat(self) -> int:
        self.calls += 1
        if self.hold is not None:
            assert self.hold.wait(30)
        if self.fail is not None:
            raise self.fail
        return self.balance


def pay(lg: SQLiteLedger, n: int, *, sat: int = 10, tags: dict[str, str] | None = None, url: str | None = None,
        host: str = "api.example") -> int:
    r = lg.reserve(Intent(host=host, url=url or f"https://{host}/v1/item/{n}", protocol="l402-v0.2", method="lightning",
                          amount_msat=sat * 1000, payment_hash=f"{n:064x}", offer_title=f"item {n}",
                          tags=tags or {}))
    lg.settle(r.id, preimage="00" * 32)
    return r.id


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SQLiteLedger]:
    with SQLiteLedger(tmp_path / "ledger.sqlite3") as lg:
        yield lg


def web(lg: SQLiteLedger, **kw: Any) -> TestClient:
    return TestClient(create_app(lg, token=TOKEN, **kw))


def section(client: TestClient, name: str, query: str = "") -> str:
    """A section as the live refresh redraws it."""
    r = client.get(f"/api/state?token={TOKEN}{query}")
    assert r.status_code == 200
    return str(r.json()["sections"][name]["html"])


def test_each_row_shows_the_url_bought_short_with_all_of_it_on_hover_and_no_secret(ledger: SQLiteLedger) -> None:
    long = ("https://bob:hunter2@api.marketdata.example/v2/markets/equities/quotes/latest/by-symbol/MSFT"
            "?fields=price,volume,open,close,high,low&api_key=sk_live_51Hx&session=abc&x=Zq81kQ0v9RrT3sWp7Yx2Lm4N")
    pay(ledger, 1, url=long, host="api.marketdata.example")
    pay(ledger, 2, url="https://api.example/ticker/AAPL")
    with web(ledger) as c:
        page = c.get(f"/?token={TOKEN}").text
        rows = section(c, "ledger")
    for out in (page, rows):
        assert "sk_live_51Hx" not in out and "hunter2" not in out and "Zq81kQ0v9RrT3sWp7Yx2Lm4N" not in out
        assert "session=abc" not in out
    cells = re.findall(r"<td[^>]*title='([^']*)'[^>]*><span class='httpay-url'>([^<]*)</span>", rows)
    assert len(cells) == 2
    (hover_long, shown_long), (hover_short, shown_short) = sorted(cells, key=lambda c: -len(c[0]))
    assert shown_short == "/ticker/AAPL" and hover_short == "https://api.example/ticker/AAPL"
    assert shown_long.startswith("/…/MSFT?fields=price") and shown_long.endswith("…") and len(shown_long) <= 60
    assert html.unescape(hover_long).startswith("https://api.marketdata.example/v2/markets/equities/quotes/latest/")
    assert "api_key=***" in hover_long and "session=***" in hover_long and "x=***" in hover_long


def test_refused_attempts_are_listed_newest_first_paged_and_live(ledger: SQLiteLedger) -> None:
    for i in range(PAGE + 3):
        ledger.note_refusal(host="shop.example", url=f"https://shop.example/buy/{i}?token=s3cret", rule="max_per_payment",
                            reason=f"refused: {i} is over the per-payment cap; raise max_per_payment_sat",
                            tags={"agent": "research"})
    with web(ledger) as c:
        first = section(c, "refusals")
        assert first.count("class='httpay-refusal'") == PAGE
        assert first.index(f"{PAGE + 2} is over") < first.index(f"{PAGE + 1} is over")  # newest first
        for want in ("max_per_payment", "shop.example", "/buy/", "agent=research", "raise max_per_payment_sat"):
            assert want in first
        assert "s3cret" not in first
        older = re.search(r"id='refusals-older' href='([^']*)'", first)
        assert older is not None
        href = html.unescape(older.group(1))
        assert f"token={TOKEN}" in href and "rbefore=4" in href
        second = c.get(href).text
        assert "Refused before #4" in second and second.count("class='httpay-refusal'") == 3
        assert "id='refusals-newest'" in second
        assert "Refused before #4" in section(c, "refusals", "&rbefore=4")  # the live refresh keeps the page
        ledger.note_refusal(host="new.example", url="https://new.example/x", rule="allowed_hosts",
                            reason="refused: new.example is not among the allowed hosts")
        assert "new.example is not among the allowed hosts" in section(c, "refusals")  # no reload needed
        assert section(c, "ledger").count("<tr class=") == 0  # nothing refused was paid
    with web(SQLiteLedger(":memory:")) as c:
        assert "nothing refused" in section(c, "refusals")


def test_hostile_text_in_reasons_tags_and_urls_renders_as_text(ledger: SQLiteLedger) -> None:
    ledger.note_refusal(host=HOSTILE, url=f"https://evil.example/{HOSTILE}?q={HOSTILE}", rule=HOSTILE, reason=HOSTILE,
                        tags={"agent": HOSTILE})
    pay(ledger, 1, tags={"agent": HOSTILE, HOSTILE: "x"}, url=f"https://evil.example/{HOSTILE}")
    with web(ledger) as c:
        page = c.get(f"/?token={TOKEN}").text
        state = c.get(f"/api/state?token={TOKEN}").json()
        filtered = c.get(f"/?token={TOKEN}&tag=agent={HOSTILE}").text
    for out in [page, filtered, *(s["html"] for s in state["sections"].values())]:
        assert "<img" not in out and "<script>window" not in out and "onerror=\"" not in out
        assert "</td></table><script>" not in out
    assert "&lt;img src=x onerror=&quot;window.pwned=1&quot;&gt;" in page  # shown, as typed
    assert page.count("<script nonce=") == 1  # the page's own script, nothing else


def test_no_wallet_configured_is_said(ledger: SQLiteLedger) -> None:
    with web(ledger) as c:
        summary = section(c, "summary")
    assert "no wallet configured" in summary and "HTTPAY_WALLET" in summary


def test_the_wallets_balance_is_shown_read_off_the_request_path_and_at_most_every_few_seconds(
        ledger: SQLiteLedger) -> None:
    hold = threading.Event()
    wallet = BalanceWallet(hold=hold)
    app = create_app(ledger, token=TOKEN, wallet=wallet, balance_every_s=3600, usd_per_btc=100_000)
    cache = app.state.dashboard.balance
    with TestClient(app) as c:
        started = time.monotonic()
        summary = section(c, "summary")  # the wallet is still answering: the page does not wait for it
        assert time.monotonic() - started < 10 and "reading…" in summary and "lnbits on bitcoin" in summary
        hold.set()
        assert cache.updated.wait(10)
        for _ in range(30):
            summary = section(c, "summary")
        assert "84,210 sat ($84.21)" in summary and "wallet balance" in summary
        assert wallet.calls == 1  # 30 refreshes, one read: the cache answers within its interval
    fast = BalanceWallet(balance_msat=1_000)
    app = create_app(ledger, token=TOKEN, wallet=fast, balance_every_s=0)
    with TestClient(app) as c:
        cache = app.state.dashboard.balance
        assert cache.updated.wait(10)
        cache.updated.clear()
        fast.balance = 2_000
        section(c, "summary")  # past the interval: this refresh starts a new read (and shows the last one)
        assert cache.updated.wait(10)
        assert "2 sat" in section(c, "summary")
    assert wallet.calls == 1 and fast.calls >= 2


@pytest.mark.parametrize("fail, shown", [
    (WalletError("LNbits at https://admin:pw@lnbits.example/api/v1/wallet?api-key=0123456789abcdef0123456789abcdef "
                 "answered 401: invalid key 0123456789abcdef0123456789abcdef"),
     "did not tell its balance: LNbits at https://lnbits.example/api/v1/wallet?api-key=*** answered 401: invalid key ***"),
    (httpx.ConnectError("connect failed to https://lnbits.example?api-key=deadbeefdeadbeefdeadbeef00"),
     "did not tell its balance (ConnectError); check its settings (HTTPAY_WALLET and its variables)"),
    (NotImplementedError("no balance"), "the lnbits wallet cannot tell its balance"),
    (RuntimeError("Traceback (most recent call last): secret=abc"), "did not tell its balance (RuntimeError)"),
], ids=["httpay-error", "transport", "unsupported", "anything"])
def test_a_wallet_error_is_a_clear_note_never_a_traceback_or_secret(ledger: SQLiteLedger, fail: BaseException,
                                                                     shown: str) -> None:
    app = create_app(ledger, token=TOKEN, wallet=BalanceWallet(fail=fail))
    with TestClient(app) as c:
        assert app.state.dashboard.balance.updated.wait(10)
        summary = section(c, "summary")
        page = c.get(f"/?token={TOKEN}").text
    for out in (summary, page):
        assert html.escape(shown, quote=True) in out and "id='wallet-note'" in out
        for secret in ("0123456789abcdef0123456789abcdef", "admin:pw", "deadbeef", "secret=abc", "Traceback"):
            assert secret not in out
        assert "<b>unknown</b><span>wallet balance" in out


def test_spend_by_tag_lists_payments_and_amounts_per_value_and_filters_the_ledger(ledger: SQLiteLedger) -> None:
    for i in range(PAGE + 2):
        pay(ledger, i, sat=10, tags={"agent": "research", "task": "T-17"})
    for i in range(PAGE + 2, PAGE + 5):
        pay(ledger, i, sat=100, tags={"agent": "support"})
    pay(ledger, PAGE + 5, sat=1)  # no tag
    with web(ledger, usd_per_btc=100_000) as c:
        tags = section(c, "tags")
        rows = re.findall(r"<tr class='tag-row[^']*'><td><a class='tag-filter' href='([^']*)'[^>]*>([^<]*)</a></td>"
                          r"<td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td>", tags)
        got = {name: (n, spent) for _href, name, n, spent in rows}
        assert got == {"agent=research": ("52", "520 sat ($0.52)"), "agent=support": ("3", "300 sat ($0.30)"),
                       "task=T-17": ("52", "520 sat ($0.52)")}
        assert [name for _h, name, _n, _s in rows] == ["agent=research", "agent=support", "task=T-17"]  # by key
        href = html.unescape(next(h for h, name, _n, _s in rows if name == "agent=support"))
        assert f"token={TOKEN}" in href and "tag=agent%3Dsupport" in href
        only = c.get(href).text
        ledger_rows = section(c, "ledger", "&tag=agent%3Dsupport")
        for out in (only, ledger_rows):
            assert out.count("httpay-row-settled") == 3 and "agent=support" in out and "agent=research task" not in out
            assert "id='clear-tag'" in out
        assert "tag-row on" in only  # the chosen value is marked; clicking it again clears the filter
        research = c.get(f"/?token={TOKEN}&tag=agent=research").text
        older = html.unescape(re.search(r"id='older' href='([^']*)'", research).group(1))  # type: ignore[union-attr]
        assert "tag=agent%3Dresearch" in older and "before=" in older  # the filter is kept when paging
        page2 = c.get(older).text
        assert page2.count("httpay-row-settled") == 2 and "agent=support" not in section(c, "ledger", "&" + older[2:])
        chart = section(c, "chart", "&tag=agent%3Dsupport")
        assert "payments tagged <b>agent=support</b>" in chart and chart.count("<circle") == 3
        assert "No payment carries agent=nobody" in c.get(f"/?token={TOKEN}&tag=agent=nobody").text
        for bad in ("agent", "=x", "agent=", "%00"):  # a malformed filter is ignored, as a bad page number is
            assert c.get(f"/?token={TOKEN}&tag={bad}").text.count("httpay-row-settled") == PAGE
    with web(SQLiteLedger(":memory:")) as c:
        assert "No payment carries tags yet" in section(c, "tags")


def test_every_view_of_the_dashboard_needs_the_token(ledger: SQLiteLedger) -> None:
    ledger.note_refusal(host="h", url="https://h/x", rule="r", reason="secret reason", tags={"agent": "a"})
    pay(ledger, 1, tags={"agent": "a"})
    with web(ledger, wallet=BalanceWallet()) as c:
        for q in ("", "&tag=agent=a", "&rbefore=2", "&before=2"):
            for path in ("/", "/api/state"):
                for token in ("", "?token=", f"?token={TOKEN[:-1]}x"):
                    url = f"{path}{token or '?'}{q}"
                    r = c.get(url)
                    assert r.status_code == 403, url
                    assert "secret reason" not in r.text and "84,210" not in r.text and "agent=a" not in r.text
            assert c.get(f"/?token={TOKEN}{q}").status_code == 200
        assert c.get(f"/api/refusals?token={TOKEN}").status_code == 403  # no other route answers


def test_the_dashboard_listens_on_loopback_only(ledger: SQLiteLedger) -> None:
    from httpay.apps.dashboard import serve_in_thread

    with pytest.raises(httpay.ConfigError, match="loopback"), serve_in_thread(create_app(ledger), host="0.0.0.0"):
        pass


# -- the chart's scale fits the payments it draws ------------------------------------------------------------
def _receipts(sats: list[int]) -> list[Any]:
    lg = SQLiteLedger(":memory:")
    for i, s in enumerate(sats):
        pay(lg, i, sat=s)
    return lg.receipts()


def _scale(svg: str) -> tuple[int, int]:
    m = re.search(r"data-ymax-msat='(\d+)' data-total-msat='(\d+)'", svg)
    assert m is not None
    return int(m.group(1)), int(m.group(2))


@pytest.mark.parametrize("sats", [[1], [3, 4, 14], [250, 250], [1_000_000, 2_500_000], [7] * 40])
def test_the_amount_axis_fits_the_payments_drawn(sats: list[int]) -> None:
    svg = spend_svg(_receipts(sats), budget_msat=10**12)  # a budget far away does not set the scale
    top, total = _scale(svg)
    assert total == sum(sats) * 1000 and total < top < 2 * total, (top, total)
    ticks = re.findall(r"<text class='tick'[^>]*>([^<]*)</text>", svg)
    assert ticks[0] == "0" and 3 <= len(ticks) <= 8 and all(t.endswith(" sat") for t in ticks[1:])
    assert "class='budget'" not in svg and "is far above this spend" in svg and "<1% of it used" in svg


def test_a_budget_is_drawn_when_it_is_in_range_of_the_data() -> None:
    rs = _receipts([10, 11])  # 21 sat
    near = spend_svg(rs, budget_msat=30_000, budget_name="total budget")
    top, _ = _scale(near)
    assert "class='budget'" in near and "total budget 30 sat" in near and 30_000 < top < 60_000
    over = spend_svg(rs, budget_msat=10_000)  # spent past its budget: both on the scale
    assert "class='budget'" in over and _scale(over)[0] > 21_000
    far = spend_svg(rs, budget_msat=int(21_000 * BUDGET_RANGE * 2))
    assert "class='budget'" not in far and _scale(far)[0] < 42_000
    partial = spend_svg(rs, budget_msat=30_000, complete=False)  # only the newest rows: not from zero
    assert "class='budget'" not in partial and "only the newest payments are" in partial


def test_the_dashboards_chart_uses_the_tags_budget_when_filtered(ledger: SQLiteLedger) -> None:
    for i in range(3):
        pay(ledger, i, sat=100, tags={"agent": "research"})
    pay(ledger, 9, sat=5_000, tags={"agent": "support"})
    policy = httpay.Policy(budget_sat=1_000_000, tag_limits={"agent=research": {"budget_sat": 500}})
    with web(ledger, policy=policy) as c:
        all_of_it = section(c, "chart")
        research = section(c, "chart", "&tag=agent%3Dresearch")
    assert "class='budget'" not in all_of_it and "is far above this spend" in all_of_it
    assert _scale(all_of_it)[1] == 5_300_000
    assert "budget of agent=research 500 sat" in research and _scale(research)[1] == 300_000
    assert 500_000 < _scale(research)[0] < 1_000_000


# -- `httpay dashboard` takes its wallet from HTTPAY_WALLET ---------------------------------------------------
def _serve_cli(ledger: Path, env: dict[str, str]) -> tuple[Any, str]:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HTTPAY_WALLET", "HTTPAY_DEMO", "HTTPAY_POLICY",
                                                                      "LNBITS_"))}
    proc = subprocess.Popen([sys.executable, "-m", "httpay.apps.cli", "dashboard", "--ledger", str(ledger), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**base, "PYTHONPATH": str(root / "src"), "NO_COLOR": "1", **env})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("httpay dashboard: "):
        proc.kill()
        raise AssertionError(line + (proc.stderr.read() if proc.stderr else ""))
    return proc, line.split(": ", 1)[1].strip()


def _summary_when(url: str, want: str) -> str:
    """The overview as the live refresh sees it, once it says `want` (the balance is read in the background)."""
    state = url.replace("/?", "/api/state?")
    deadline = time.monotonic() + 30
    while True:
        try:
            summary = str(httpx.get(state).json()["sections"]["summary"]["html"])
            if want in summary or time.monotonic() > deadline:
                return summary
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def test_the_dashboard_command_shows_the_balance_of_the_wallet_in_httpay_wallet(demo: Any, ledger: SQLiteLedger) -> None:
    key = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 4_321}).json()["key"]
    proc, url = _serve_cli(Path(ledger.url), {"HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": demo.url, "HTTPAY_DEMO_KEY": key})
    try:
        summary = _summary_when(url, "4,321 sat")
        assert "4,321 sat" in summary and "demo on regtest" in summary and key not in summary
        assert key not in httpx.get(url).text
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_a_wallet_set_up_wrong_is_a_note_on_the_page_not_a_crash(ledger: SQLiteLedger) -> None:
    proc, url = _serve_cli(Path(ledger.url), {"HTTPAY_WALLET": "lnbits"})
    try:
        summary = _summary_when(url, "wallet-note")
        assert "no wallet: HTTPAY_WALLET=lnbits needs the environment variable" in summary
        assert "LNBITS_URL" in summary and "Traceback" not in summary
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert "note: no wallet: HTTPAY_WALLET=lnbits needs" in err and "Traceback" not in err


def test_the_tag_filter_shows_only_that_tags_refusals_too(ledger: SQLiteLedger) -> None:
    for i, agent in enumerate(["research", "support", "research"]):
        ledger.note_refusal(host="h.example", url=f"https://h.example/{i}", rule="daily budget",
                            reason=f"refused #{i} of {agent}", tags={"agent": agent})
    with web(ledger) as c:
        research = section(c, "refusals", "&tag=agent%3Dresearch")
        page = c.get(f"/?token={TOKEN}&tag=agent=support").text
    assert research.count("class='httpay-refusal'") == 2 and "of support" not in research
    assert "Only those asked by agent=research" in research
    assert "refused #1 of support" in page and "of research" not in page


def test_an_approval_number_nobody_can_hold_is_a_clear_answer_not_a_500(ledger: SQLiteLedger, tmp_path: Any) -> None:
    """The page, the CLI and Python take an approval's number from a person: one too large for the
    queue, negative or not a number is said to be one (the page answered 500: SQLite's OverflowError)."""
    from httpay.apps.approvals import ApprovalQueue
    from httpay.errors import ApprovalError

    queue = ApprovalQueue(tmp_path / "q.db")
    with TestClient(create_app(ledger, token=TOKEN, approvals=tmp_path / "q.db")) as c:
        r = c.post("/approvals/99999999999999999999/approve", data={"token": TOKEN},
                   headers={"accept": "application/json"})
    assert r.status_code == 409 and "is not an approval number" in r.json()["error"]
    for bad in ("abc", -1, 0, 2**63):
        with pytest.raises(ApprovalError, match="is not an approval number"):
            queue.decide(bad, True, "alice")  # type: ignore[arg-type]
    for kw in ({"timeout_s": float("nan")}, {"poll_s": "1"}):
        with pytest.raises(httpay.ConfigError, match="must be a positive number of seconds"):
            ApprovalQueue(tmp_path / "q2.db", **kw)  # type: ignore[arg-type]
    queue.close()


def test_an_approval_whose_request_is_gone_is_shown_so_and_cannot_be_approved(ledger: SQLiteLedger, tmp_path: Path) -> None:
    """A request killed while it waited leaves its approval: the page shows it abandoned, with no
    Approve button, counts it nowhere as awaiting, and an approval posted anyway (a stale tab, a
    script) is refused saying nobody waits and nothing will be paid."""
    from httpay.apps.approvals import ApprovalQueue
    from tests.helpers import challenge_body, quote_of

    offers = httpay.PaymentOffers.from_dict(challenge_body())
    secret_url = "https://stock.example/ticker/MSFT?api_key=sk_live_51HxSECRET"
    path = tmp_path / "q.db"
    with ApprovalQueue(path, heartbeat_s=0.01, poll_s=0.01) as dead, ApprovalQueue(path, timeout_s=60) as live:
        gone = dead.add(quote_of(offers, secret_url, "stock.example", usd_per_btc=100_000))  # nobody will beat it
        waiting = live.add(quote_of(offers, "https://stock.example/ticker/AAPL", "stock.example", usd_per_btc=100_000))
        time.sleep(3 * dead.lease_s)
        with TestClient(create_app(ledger, token=TOKEN, approvals=path)) as c:
            page = c.get(f"/?token={TOKEN}").text
            state = c.get(f"/api/state?token={TOKEN}").json()
            r = c.post(f"/approvals/{gone.id}/approve", data={"token": TOKEN}, headers={"accept": "application/json"})
            after = section(c, "approvals")
    card = page[page.index(f"id='approval-{gone.id}'"):]
    card = card[:card.index("</div></div></div>")]
    assert "abandoned" in card and "nobody waits for an answer" in card and "nothing will be paid" in page
    assert f"id='approve-{gone.id}'" not in page and f"id='approve-{waiting.id}'" in page
    assert waiting.deadline_at is not None and f"answer by {waiting.deadline_at:%H:%M:%S} UTC" in page
    assert re.search(r"id='card-awaiting'><b>1</b>", page) and "<title>(1) httpay dashboard" in page
    assert state["waiting"] == 1 and [a["id"] for a in state["pending"]] == [waiting.id]
    [shown] = state["unanswerable"]
    assert (shown["id"], shown["state"], shown["answerable"]) == (gone.id, "abandoned", False) and shown["heartbeat_at"]
    assert "sk_live_51HxSECRET" not in page and "sk_live_51HxSECRET" not in str(state)
    assert r.status_code == 409 and r.json()["state"] == "abandoned"
    assert "nobody waits for an answer and nothing will be paid" in r.json()["error"]
    assert f"id='approval-{gone.id}'" not in after  # closed as denied: no longer listed
    with ApprovalQueue(path) as q:
        assert (q.get(gone.id).status, q.get(gone.id).decided_by) == ("denied", "abandoned")
        assert q.get(waiting.id).status == "waiting"
