"""Windowed budgets in a crowded ledger (issue 13): thousands of payments already inside the hour or
the day, written before the request; the hourly, daily and per-tag budgets still count every one of
them exactly (fees, pending fee caps, failures released, rows just outside the window left out),
now read from the window's buckets instead of its rows. Each case runs through httpay.Client and
httpay.AsyncClient against a loopback service with real invoices, a wallet charging 1 sat per payment.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import httpay
from httpay.ledger import SQLiteLedger, Status
from tests.hostile.harness import CountingWallet, HostileService, run

RATE = 100_000.0  # USD/BTC
CROWD = 5_000     # payments already in the ledger
SEEDED = "crowd.example"


@dataclass(frozen=True)
class Case:
    name: str
    policy: dict[str, Any]
    each_msat: int                     # every seeded payment's amount
    ago_s: tuple[float, float]         # the seeded payments spread between these many seconds ago (newest, oldest)
    status: str = "settled"
    fee_msat: int = 0                  # every seeded payment's fee (a pending one's is its held cap)
    tags: dict[str, str] | None = None  # the seeded payments' tags
    client_tags: dict[str, str] | None = None
    paid: bool = True
    rule: str | None = None
    words: tuple[str, ...] = ()


# The request: a 10 sat invoice, a 1 sat fee cap held (the wallet charges 1 sat): 11,000 msat counted.
CASES = [
    Case("an hourly budget with room left after 5,000 payments in the hour pays", {"per_hour_sat": 100},
         each_msat=17, ago_s=(1, 3_500)),  # 85,000 + 11,000 <= 100,000
    Case("the same hour full but for the fee is refused, fee named", {"per_hour_sat": 100},
         each_msat=18, ago_s=(1, 3_500), paid=False, rule="per_hour", words=("hourly budget", "in fees")),
    Case("fees already paid count", {"per_hour_sat": 100}, each_msat=17, fee_msat=1, ago_s=(1, 3_500),
         paid=False, rule="per_hour", words=("hourly budget",)),  # 90,000 + 11,000 > 100,000
    Case("pending payments count with their held fee caps", {"per_hour_sat": 100}, each_msat=10, fee_msat=8,
         status="pending", ago_s=(1, 3_500), paid=False, rule="per_hour"),
    Case("failed payments are released", {"per_hour_sat": 100}, each_msat=18, status="failed", ago_s=(1, 3_500)),
    Case("payments just outside the hour leave the hourly budget free", {"per_hour_sat": 100},
         each_msat=18, ago_s=(3_601, 7_000)),
    Case("... and fill the daily one", {"per_hour_sat": 100, "per_day_sat": 100}, each_msat=18, ago_s=(3_601, 7_000),
         paid=False, rule="per_day", words=("daily budget",)),
    Case("payments older than the day leave the daily budget free", {"per_day_sat": 100}, each_msat=18,
         ago_s=(86_401, 90_000)),
    Case("a tag's daily budget counts its own payments", {"tag_limits": {"agent=research": {"per_day_sat": 100}}},
         each_msat=18, ago_s=(1, 80_000), tags={"agent": "research"}, client_tags={"agent": "research"},
         paid=False, rule="per_day", words=("agent=research",)),
    Case("... and not another tag's", {"tag_limits": {"agent=research": {"per_day_sat": 100}}},
         each_msat=18, ago_s=(1, 80_000), tags={"agent": "ops"}, client_tags={"agent": "research"}),
    Case("a tag's total budget counts its payments of every age",
         {"tag_limits": {"agent=research": {"budget_sat": 100}}}, each_msat=18, ago_s=(1, 900_000),
         tags={"agent": "research"}, client_tags={"agent": "research"}, paid=False, rule="budget"),
]


def seed(path: Path, case: Case) -> int:
    """CROWD payments written before the request (through the ledger's own triggers); what they commit."""
    SQLiteLedger(path).close()
    now, (newest, oldest) = time.time(), case.ago_s
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    db.execute("WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?) "
               "INSERT INTO payments (status, created_at, updated_at, host, url, protocol, method, payment_hash, "
               "amount_msat, fee_msat) SELECT ?, ? - ? - i * ?, ?, ?, 'https://crowd.example/', 'l402-v0.2', "
               "'lightning', printf('%064x', i + 1), ?, ? FROM k",
               (CROWD, case.status, now, newest, (oldest - newest) / CROWD, now, SEEDED, case.each_msat, case.fee_msat))
    for key, value in (case.tags or {}).items():
        db.execute("INSERT INTO payment_tags (payment_id, tag_key, tag_value, created_at) "
                   "SELECT id, ?, ?, created_at FROM payments", (key, value))
    db.execute("COMMIT")
    db.close()
    return 0 if case.status == "failed" else CROWD * (case.each_msat + case.fee_msat)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_windowed_budgets_in_a_crowded_ledger(svc: HostileService, ledger: Path, mode: str, case: Case) -> None:
    before = seed(ledger, case)
    wallet = CountingWallet(svc.node, fee_msat=1_000)
    policy = httpay.Policy(usd_per_btc=RATE, max_fee_msat=1_000, **case.policy)
    extra: dict[str, Any] = {"tags": case.client_tags} if case.client_tags else {}
    out = run(mode, svc.v02(), wallet=wallet, ledger=ledger, policy=policy, **extra)
    mine = [r for r in out.receipts if r.host != SEEDED]
    assert len(out.receipts) == CROWD + len(mine)
    if case.paid:
        assert out.error is None and out.status == 200, out.error
        assert out.wallet_calls == 1
        assert [(r.status, r.amount_msat, r.fee_msat) for r in mine] == [(Status.SETTLED, 10_000, 1_000)]
        assert out.spent_msat == before + 11_000
        return
    assert isinstance(out.error, httpay.PaymentRefused) and out.error.rule == case.rule, out.error
    for word in case.words:
        assert word in str(out.error), str(out.error)
    assert "left" in str(out.error)
    assert out.wallet_calls == 0 and mine == [], "a refusal pays nothing and writes no payment"
    assert out.spent_msat == before
