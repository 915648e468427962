"""The dashboard as a person uses it: a real headless Chromium (Playwright) approves and denies an
agent's payment while the agent's request waits in another thread."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

import httpay
from httpay.apps.approvals import ApprovalQueue
from httpay.apps.dashboard import RunningDashboard, create_app, serve_in_thread
from httpay.demo.runner import RunningServer
from httpay.ledger import Intent, SQLiteLedger
from httpay.wallets.demo import DemoWallet


@dataclass
class Agent:
    """An httpay client asking for /ticker/MSFT in the background, its payments held for approval."""

    wallet: DemoWallet
    thread: threading.Thread | None = None
    outcome: dict[str, Any] = field(default_factory=dict)

    def start(self, base: str, auth: dict[str, str], ledger: Path, rate: float) -> None:
        queue = ApprovalQueue(ledger, timeout_s=30, poll_s=0.05)
        policy = httpay.Policy(max_per_payment_usd=1, budget_usd=5, usd_per_btc=rate, approve=queue)

        def run() -> None:
            try:
                with httpay.Client(wallet=self.wallet, policy=policy, ledger=str(ledger), timeout=10) as c:
                    r = c.get(f"{base}/ticker/MSFT", headers=auth)
                    self.outcome["status"] = r.status_code
                    self.outcome["json"] = r.json()
                    self.outcome["receipt"] = httpay.receipt_of(r)
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                self.outcome["error"] = exc
            finally:
                queue.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def finish(self) -> dict[str, Any]:
        assert self.thread is not None
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the agent's request is still waiting"
        return self.outcome


@pytest.fixture
def wallet(demo: RunningServer) -> Iterator[DemoWallet]:
    w = DemoWallet.create(demo.url, balance_sat=1_000)
    yield w
    w.close()


@pytest.fixture
def dashboard(tmp_path: Path, wallet: DemoWallet) -> Iterator[tuple[RunningDashboard, Path]]:
    ledger = tmp_path / "ledger.sqlite3"
    policy = httpay.Policy(max_per_payment_usd=1, budget_usd=5, per_day_usd=2, usd_per_btc=wallet.usd_per_btc())
    with serve_in_thread(create_app(ledger, policy=policy, refresh_ms=300)) as dash:
        yield dash, ledger


def test_a_person_approves_in_the_browser_and_the_agent_is_served(
    demo: RunningServer, account: dict[str, str], wallet: DemoWallet, dashboard: tuple[RunningDashboard, Path],
    page: Any, artifacts: Path,
) -> None:
    dash, ledger = dashboard
    page.goto(dash.page_url)
    expect(page.locator("#no-approvals")).to_be_visible()

    agent = Agent(wallet)
    agent.start(demo.url, account, ledger, wallet.usd_per_btc() or 0)
    card = page.locator("#approvals .approval")
    expect(card).to_have_count(1, timeout=15_000)  # the page polls: no reload needed
    expect(card).to_contain_text("1 Credit Package")
    expect(card).to_contain_text("$0.01 ≈ 10 sat ($0.01)")
    expect(card).to_contain_text("/ticker/MSFT")
    expect(page).to_have_title("(1) httpay dashboard", timeout=5_000)
    page.screenshot(path=str(artifacts / "dashboard-waiting.png"), full_page=True)
    assert agent.thread is not None and agent.thread.is_alive()  # nothing is paid while a person decides

    card.locator("button.approve").click()
    expect(page.locator("#flash")).to_contain_text("Approved")
    out = agent.finish()
    assert "error" not in out, out.get("error")
    assert out["status"] == 200 and out["json"]["symbol"] == "MSFT"
    assert out["receipt"].status.value == "settled"
    with SQLiteLedger(ledger) as lg:
        assert [r.status.value for r in lg.receipts()] == ["settled"]
        assert lg.spent_msat() == 10_000

    page.reload()
    rows = page.locator("#ledger tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("settled")
    expect(rows.first).to_contain_text("1 Credit Package")
    expect(rows.first.locator(".httpay-settled")).to_have_css("color", "rgb(26, 127, 55)")
    expect(page.locator("#no-approvals")).to_be_visible()
    expect(page.locator("#budget")).to_contain_text("total budget")
    expect(page.locator("#budget")).to_contain_text("10 sat ($0.01)")
    expect(page.locator("#chart svg circle")).to_have_count(1)
    expect(page.locator("#card-committed")).to_contain_text("10 sat")
    page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
    html = page.content()
    preimage = _preimage(ledger)
    assert preimage and preimage not in html
    assert account["Authorization"].split()[1] not in html


def test_a_person_denies_and_nothing_is_paid(
    demo: RunningServer, account: dict[str, str], wallet: DemoWallet, dashboard: tuple[RunningDashboard, Path],
    page: Any,
) -> None:
    dash, ledger = dashboard
    before = wallet.balance_msat()
    agent = Agent(wallet)
    agent.start(demo.url, account, ledger, wallet.usd_per_btc() or 0)
    page.goto(dash.page_url)
    card = page.locator("#approvals .approval")
    expect(card).to_have_count(1, timeout=15_000)
    card.locator("button.deny").click()
    expect(page.locator("#flash")).to_contain_text("Denied")
    out = agent.finish()
    err = out.get("error")
    assert isinstance(err, httpay.PaymentRefused) and err.rule == "approval", out
    assert wallet.balance_msat() == before
    with SQLiteLedger(ledger) as lg:
        assert lg.receipts() == [] and lg.spent_msat() == 0
    with ApprovalQueue(ledger) as q:
        decided = q.recent()[0]
        assert (decided.status, decided.decided_by) == ("denied", "dashboard")
    expect(page.locator("#ledger")).to_contain_text("no payments recorded")


def test_without_the_token_everything_is_forbidden(dashboard: tuple[RunningDashboard, Path], page: Any) -> None:
    dash, ledger = dashboard
    with ApprovalQueue(ledger) as q:
        waiting = q.add(_decision())
    near = dash.token[:-1] + ("y" if dash.token.endswith("x") else "x")  # one character off, never the token itself
    for url in (f"{dash.url}/", f"{dash.url}/?token=wrong", f"{dash.url}/api/state?token={near}",
                f"{dash.url}/anything?token={dash.token}"):
        resp = page.goto(url)
        assert resp is not None and resp.status == 403, url
        assert "1 Credit Package" not in page.content()
    forged = httpx.post(f"{dash.url}/approvals/{waiting.id}/approve", data={"token": "guess"})
    assert forged.status_code == 403
    with ApprovalQueue(ledger) as q:
        assert q.get(waiting.id).status == "waiting"
    ok = page.goto(dash.page_url)
    assert ok is not None and ok.status == 200
    assert ok.headers["referrer-policy"] == "no-referrer" and "script-src 'nonce-" in ok.headers["content-security-policy"]


def _decision() -> httpay.Decision:
    from tests.helpers import challenge_body, quote_of

    offers = httpay.PaymentOffers.from_dict(challenge_body())
    return quote_of(offers, "https://stock.example/ticker/MSFT?api_key=s3cret", "stock.example", usd_per_btc=100_000)


def _preimage(ledger: Path) -> str | None:
    with SQLiteLedger(ledger) as lg:
        return lg.receipts()[0].preimage


# -- what a person overseeing agents reads: URLs, refusals, balance, tags, a chart that fits -------------------
ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "<img src=x onerror=\"window.pwned=1\"><b id='pwn'>bold</b>"


def _screenshot_script() -> Any:
    """scripts/screenshot.py, whose demo data the README's picture shows (one source for both)."""
    spec = importlib.util.spec_from_file_location("httpay_screenshot", ROOT / "scripts" / "screenshot.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pay(ledger: Path, n: int, tags: dict[str, str], sat: int = 50) -> None:
    with SQLiteLedger(ledger) as lg:
        r = lg.reserve(Intent(host="late.example", url=f"https://late.example/item/{n}", protocol="l402-v0.2",
                              method="lightning", amount_msat=sat * 1000, payment_hash=f"{n:064x}",
                              offer_title=f"late {n}", tags=tags))
        lg.settle(r.id, preimage="00" * 32)


@pytest.fixture
def oversight(tmp_path: Path) -> Iterator[tuple[RunningDashboard, Path]]:
    shot = _screenshot_script()
    ledger = tmp_path / "ledger.sqlite3"
    shot.fill(ledger)
    with SQLiteLedger(ledger) as lg:
        lg.note_refusal(host="evil.example", url="https://evil.example/x?token=s3cret", rule="allowed_hosts",
                        reason=HOSTILE, tags={"agent": HOSTILE})
    app = create_app(ledger, policy=shot.policy(), wallet=shot.DemoBalance(), refresh_ms=300)
    with serve_in_thread(app) as dash:
        yield dash, ledger


def test_a_person_reads_urls_refusals_balance_tags_and_a_fitting_chart(
    oversight: tuple[RunningDashboard, Path], page: Any, artifacts: Path,
) -> None:
    dash, ledger = oversight
    page.goto(dash.page_url)
    expect(page.locator("#card-wallet")).to_contain_text("84,210 sat ($81.68)")  # read in the background
    expect(page.locator("#card-wallet")).to_contain_text("lnbits on bitcoin")

    # the URL bought, per row: short, all of it on hover, never its secret
    msat_row = page.locator("#ledger tbody tr").last
    url_cell = msat_row.locator("td:has(> .httpay-url)")
    expect(url_cell).to_contain_text("/v2/quotes/MSFT?fields=price")
    assert "api_key=***" in (url_cell.get_attribute("title") or "")
    expect(msat_row).to_contain_text("agent=research")
    assert "sk_live" not in page.content() and "s3cret" not in page.content()

    # refused attempts, newest first, hostile text shown as typed and never run
    refusals = page.locator("#refusals tr.httpay-refusal")
    expect(refusals).to_have_count(4)
    expect(refusals.first).to_contain_text('<img src=x onerror="window.pwned=1">')
    expect(refusals.first.locator(".httpay-rule")).to_have_text("allowed_hosts")
    expect(refusals.nth(1)).to_contain_text("over its daily budget")
    assert page.evaluate("window.pwned") is None
    expect(page.locator("#pwn")).to_have_count(0)
    expect(page.locator("main img")).to_have_count(0)
    with SQLiteLedger(ledger) as lg:
        lg.note_refusal(host="new.example", url="https://new.example/buy", rule="max_per_payment",
                        reason="refused: 9,000 sat is over the per-payment cap", tags={"agent": "support"})
    expect(refusals).to_have_count(5)  # live: no reload
    expect(refusals.first).to_contain_text("9,000 sat is over the per-payment cap")

    # spend by tag, and the filter it sets, kept across the live refresh
    expect(page.locator("#tags tr.tag-row").first).to_contain_text("agent=research")
    expect(page.locator("#tags tr.tag-row", has_text="agent=support")).to_contain_text("129 sat ($0.125)")
    page.locator("#tags a.tag-filter", has_text="agent=support").click()
    expect(page).to_have_url(re.compile(r"tag=agent%3Dsupport"))
    rows = page.locator("#ledger tbody tr")
    expect(rows).to_have_count(4)
    for i in range(4):
        expect(rows.nth(i)).to_contain_text("agent=support")
    expect(page.locator("#tag-filter")).to_contain_text("agent=support")
    expect(page.locator("#chart-scope")).to_contain_text("payments tagged agent=support")
    _pay(ledger, 101, {"agent": "research"})
    _pay(ledger, 102, {"agent": "support"})
    expect(rows).to_have_count(5)  # the new support payment arrives by the live refresh, the research one does not
    expect(rows.first).to_contain_text("late 102")
    expect(page.locator("#ledger")).not_to_contain_text("late 101")

    # the chart fits the payments shown, here the support agent's 179 sat
    svg = page.locator("#chart svg")
    expect(svg).to_have_attribute("data-total-msat", "179000")
    top = int(svg.get_attribute("data-ymax-msat") or 0)
    assert 179_000 < top < 2 * 179_000
    page.screenshot(path=str(artifacts / "dashboard-oversight-filtered.png"), full_page=True)

    page.locator("#clear-tag").click()
    expect(rows).to_have_count(14)
    total = int(page.locator("#chart svg").get_attribute("data-total-msat") or 0)
    assert total == 734_000 and total < int(page.locator("#chart svg").get_attribute("data-ymax-msat") or 0) < 2 * 1_200_000
    expect(page.locator("#chart svg line.budget")).to_have_count(1)  # the 1,200 sat budget is in range: drawn
    page.screenshot(path=str(artifacts / "dashboard-oversight.png"), full_page=True)


def test_the_readme_screenshot_is_made_by_the_script(chromium_path: str, tmp_path: Path) -> None:
    out = tmp_path / "dashboard.png"
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "screenshot.py"), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    width = int.from_bytes(data[16:20], "big")
    assert width == 1280
