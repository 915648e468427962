"""The total budget and `httpay ledger` read running totals, kept by the database in the very
transaction of each write, so they cost the same at 10 rows of history or a million; they always
equal what the rows add up to, on SQLite, PostgreSQL and PgBouncer, and an older ledger gets them
filled from its rows when it is opened."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from httpay.errors import PaymentRefused
from httpay.ledger import Intent, Ledger, open_ledger
from httpay.ledger.sqlite import SQLiteLedger
from httpay.policy import Limit


def intent(i: int, host: str, amount: int = 1_000) -> Intent:
    return Intent(host=host, url=f"https://{host}/x", protocol="l402-v0.2", method="lightning", amount_msat=amount,
                  payment_hash=f"{i:064x}", max_fee_msat=50)


def by_rows(lg: Ledger, host: str | None = None) -> int:
    return sum(r.amount_msat + r.fee_msat for r in lg.receipts(host=host) if r.status.value != "failed")


def test_totals_equal_the_rows_after_every_kind_of_write(any_ledger: Ledger) -> None:
    rng = random.Random(7)
    for i in range(60):
        host = f"h{rng.randrange(3)}"
        r = any_ledger.reserve(intent(i, host, 1_000 + rng.randrange(5_000)))
        step = rng.choice(["settle", "settle_other_amount", "fail", "note", "pending"])
        if step == "settle":
            any_ledger.settle(r.id, preimage="00" * 32, fee_msat=rng.randrange(50))
        elif step == "settle_other_amount":
            any_ledger.settle(r.id, preimage="00" * 32, fee_msat=3, amount_msat=r.amount_msat // 2)
            any_ledger.settle(r.id, preimage="00" * 32, fee_msat=3)  # settled twice: counted once
        elif step == "fail":
            any_ledger.fail(r.id, "no route")
        elif step == "note":
            any_ledger.note(r.id, "outcome unknown")
        for host_ in (None, "h0", "h1", "h2"):
            assert any_ledger.spent_msat(host=host_) == by_rows(any_ledger, host_), (i, step, host_)
    for host_ in (None, "h0", "h2"):
        assert any_ledger.totals(host=host_) == Ledger.totals(any_ledger, host=host_)


def test_a_total_budget_is_enforced_from_the_running_total(any_ledger: Ledger) -> None:
    limits = [Limit("total budget", 5_000, knob="budget_sat")]
    first = any_ledger.reserve(intent(1, "a"), limits)
    any_ledger.settle(first.id, preimage="00" * 32, fee_msat=10)
    second = any_ledger.reserve(intent(2, "b", 3_000), limits)
    any_ledger.fail(second.id, "no route")  # released: counts nothing
    any_ledger.reserve(intent(3, "b", 3_000), limits)
    with pytest.raises(PaymentRefused) as caught:
        any_ledger.reserve(intent(4, "c", 1_000), limits)
    assert caught.value.rule == "budget"


def test_a_total_budget_reads_no_row_of_history(tmp_path: Path) -> None:
    with SQLiteLedger(tmp_path / "l.db") as lg:
        sql, args = lg._spent_sql([Limit("total budget", 5_000), Limit("per-host budget", 5_000, host="a")],
                                  datetime.now(UTC))
        shown = "\n".join(str(r["detail"]) for r in lg._query("EXPLAIN QUERY PLAN " + sql, args))
        totals = "\n".join(str(r["detail"]) for r in lg._query(
            "EXPLAIN QUERY PLAN SELECT status, n FROM payment_totals WHERE host = ?", ("*",)))
    assert "payments " not in shown + " " and "payment_totals" in shown, shown
    assert "SCAN" not in totals, totals


def test_an_older_ledger_gets_its_totals_filled_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with SQLiteLedger(path) as lg:
        for i in range(10):
            r = lg.reserve(intent(i, "a" if i % 2 else "b"))
            if i % 3:
                lg.settle(r.id, preimage="00" * 32, fee_msat=5)
    db = sqlite3.connect(path)  # as httpay made it before running totals
    db.executescript("DROP TRIGGER payments_totals_insert; DROP TRIGGER payments_totals_update; "
                     "DROP TRIGGER payments_totals_delete; DROP TABLE payment_totals;")
    db.close()
    with open_ledger(str(path)) as lg:
        assert lg.spent_msat() == by_rows(lg) > 0
        assert lg.spent_msat(host="a") == by_rows(lg, "a")
        r = lg.reserve(intent(99, "a"))
        assert lg.spent_msat() == by_rows(lg)
        lg.fail(r.id, "no")
        assert lg.totals() == Ledger.totals(lg)
