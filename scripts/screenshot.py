"""Make the README's picture of `httpay dashboard`: a ledger of realistic demo data (three agents
tagged, payments over the last hours, refusals), a wallet with a balance, a policy with a budget,
served on 127.0.0.1 and photographed by headless Chromium (scripts/browser.sh installs it).

    .venv/bin/python scripts/screenshot.py [--out docs/dashboard.png]

Nothing here touches the network beyond 127.0.0.1; the data is made up and says so.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import httpay  # noqa: E402
from httpay.apps.dashboard import create_app, serve_in_thread  # noqa: E402
from httpay.ledger import Intent, SQLiteLedger  # noqa: E402
from httpay.wallets.base import Payment, Wallet  # noqa: E402

RATE = 97_000.0  # USD per BTC for the demo
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

# (minutes ago, agent, task, host, path, offer, sat, fee msat, outcome)
PAYMENTS = [
    (410, "research", "T-17", "api.marketdata.example", "/v2/quotes/MSFT?fields=price,volume&api_key=sk_live_51Hx",
     "1 Credit Package", 10, 0, "settled"),
    (380, "research", "T-17", "api.marketdata.example", "/v2/quotes/AAPL?fields=price,volume", "1 Credit Package",
     10, 0, "settled"),
    (331, "support", "T-20", "llm-gateway.example", "/v1/chat/completions", "1k tokens", 42, 1_000, "settled"),
    (302, "research", "T-18", "papers.example", "/api/fulltext/2411.01234", "Full text", 150, 2_000, "settled"),
    (260, "pricing", "T-31", "weather.example", "/forecast/hourly?lat=52.52&lon=13.40", "Forecast", 25, 0, "settled"),
    (214, "support", "T-20", "llm-gateway.example", "/v1/chat/completions", "1k tokens", 42, 1_000, "settled"),
    (190, "support", "T-21", "llm-gateway.example", "/v1/embeddings", "Embeddings batch", 80, 1_000, "failed"),
    (151, "research", "T-18", "papers.example", "/api/fulltext/2410.09876", "Full text", 150, 1_000, "settled"),
    (96, "pricing", "T-31", "api.marketdata.example", "/v2/history/BTC-USD?range=30d", "History 30d", 120, 1_000,
     "settled"),
    (48, "support", "T-22", "llm-gateway.example", "/v1/chat/completions", "1k tokens", 42, 1_000, "settled"),
    (21, "research", "T-19", "api.marketdata.example", "/v2/quotes/NVDA?fields=price", "1 Credit Package", 10, 0,
     "settled"),
    (3, "pricing", "T-32", "weather.example", "/forecast/daily?lat=48.85&lon=2.35", "Forecast", 25, 1_000, "pending"),
]
REFUSALS = [
    (270, "research", "T-18", "papers.example", "/api/bulk/export", "max_per_payment",
     "refused: 5,000 sat is over the per-payment cap of 1,000 sat; raise max_per_payment_sat to pay it"),
    (120, "support", "T-21", "unknown-api.example", "/v1/generate?session=abc", "allowed_hosts",
     "refused: unknown-api.example is not among the allowed hosts; add it to allowed_hosts to pay it"),
    (35, "pricing", "T-31", "api.marketdata.example", "/v2/history/ETH-USD?range=1y", "daily budget",
     "refused: 600 sat would take agent=pricing over its daily budget of 500 sat (tag_limits)"),
]


class DemoBalance(Wallet):
    """A wallet that only tells its balance: the picture needs no payment."""

    name = "lnbits"
    network = "bitcoin"

    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Payment:
        raise NotImplementedError("the screenshot wallet does not pay")

    def balance_msat(self) -> int:
        return 84_210_000


def fill(path: Path, now: datetime | None = None) -> None:
    """Write the demo payments and refusals into the ledger at `path`, dated minutes before `now`."""
    now = now or datetime.now(UTC)
    when: list[tuple[str, int, datetime]] = []
    with SQLiteLedger(path) as lg:
        for i, (ago, agent, task, host, path_q, offer, sat, fee, outcome) in enumerate(PAYMENTS):
            preimage = hashlib.sha256(f"demo-{i}".encode()).hexdigest()
            r = lg.reserve(Intent(host=host, url=f"https://{host}{path_q}", protocol="l402-v0.2", method="lightning",
                                  amount_msat=sat * 1000, payment_hash=hashlib.sha256(bytes.fromhex(preimage)).hexdigest(),
                                  offer_id=f"offer_{i:04x}", offer_title=offer, offer_amount=sat, offer_currency="SAT",
                                  wallet="lnbits", max_fee_msat=max(fee, 1_000), tags={"agent": agent, "task": task}),
                           usd_per_btc=RATE)
            if outcome == "settled":
                lg.settle(r.id, preimage=preimage, fee_msat=fee)
            elif outcome == "failed":
                lg.fail(r.id, "WalletError: no route to the service's node (nothing left the wallet)")
            when.append(("payments", r.id, now - timedelta(minutes=ago)))
        for _ago, agent, task, host, path_q, rule, reason in REFUSALS:
            lg.note_refusal(host=host, url=f"https://{host}{path_q}", rule=rule, reason=reason,
                            tags={"agent": agent, "task": task})
        for ref, (ago, *_) in zip(reversed(lg.refusals()), REFUSALS, strict=True):  # oldest first, as written
            when.append(("refusals", ref.id, now - timedelta(minutes=ago)))
    db = sqlite3.connect(path)  # back-date the rows: the ledger stamps them with its own clock
    with db:
        for table, row_id, at in when:
            t = at.timestamp()
            if table == "payments":
                db.execute("UPDATE payments SET created_at = ?, updated_at = ? WHERE id = ?", (t, t, row_id))
                db.execute("UPDATE payment_tags SET created_at = ? WHERE payment_id = ?", (t, row_id))
            else:
                db.execute("UPDATE refusals SET created_at = ? WHERE id = ?", (t, row_id))
    db.close()


def policy() -> httpay.Policy:
    return httpay.Policy(max_per_payment_sat=1_000, budget_sat=1_200, per_day_sat=1_000, usd_per_btc=RATE,
                         tag_limits={"agent=pricing": {"per_day_sat": 500}})


def chromium() -> str:
    p = subprocess.run(["bash", str(ROOT / "scripts" / "browser.sh")], capture_output=True, text=True, check=True)
    return p.stdout.strip().splitlines()[-1]


def shoot(out: Path, width: int = 1280) -> Path:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "ledger.sqlite3"
        fill(ledger)
        app = create_app(ledger, policy=policy(), wallet=DemoBalance(), refresh_ms=60_000)
        app.state.dashboard.balance.refresh_soon()
        app.state.dashboard.balance.updated.wait(10)
        with serve_in_thread(app) as dash, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": width, "height": 900}, device_scale_factor=1)
            page.goto(dash.page_url)
            page.wait_for_selector("#card-wallet b:not(:text('reading…'))")
            page.add_style_tag(content="header .muted:first-of-type{visibility:hidden}")  # the temp path
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    ap.add_argument("--width", type=int, default=1280)
    args = ap.parse_args()
    print(shoot(args.out, args.width))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
