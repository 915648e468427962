"""The dashboard as a person uses it: a real headless Chromium (Playwright) approves and denies an
agent's payment while the agent's request waits in another thread."""

from __future__ import annotations

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
from httpay.ledger import SQLiteLedger
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
    for url in (f"{dash.url}/", f"{dash.url}/?token=wrong", f"{dash.url}/api/state?token={dash.token[:-1]}x",
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
