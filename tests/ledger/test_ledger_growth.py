"""Budgets that do not grow with history: the sums a reservation makes under window and host
limits read their windows through an index, never the whole table (asserted on SQLite's plan)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from httpay.ledger.sqlite import SQLiteLedger
from httpay.policy import Limit

HOUR, DAY = timedelta(hours=1), timedelta(days=1)


def plan(ledger: SQLiteLedger, limits: list[Limit]) -> str:
    sql, args = ledger._spent_sql(limits, datetime.now(UTC))
    rows = ledger._query("EXPLAIN QUERY PLAN " + sql, args)
    return "\n".join(str(r["detail"]) for r in rows)


def test_window_and_host_budgets_read_their_window_by_index(tmp_path: Path) -> None:
    with SQLiteLedger(tmp_path / "l.db") as lg:
        shown = plan(lg, [Limit("hourly budget", 10_000, window=HOUR), Limit("daily budget", 50_000, window=DAY),
                          Limit("per-host budget", 5_000, host="api.example")])
    assert "SCAN payments" not in shown, shown
    assert shown.count("USING INDEX") >= 3 or shown.count("SEARCH payments") >= 3, shown


def test_httpays_default_limits_need_no_scan_of_history(tmp_path: Path) -> None:
    """httpay's default policy has hourly and daily limits and no total: nothing it sums reads all rows."""
    import httpay

    with SQLiteLedger(tmp_path / "l.db") as lg:
        limits = httpay.Policy().limits("api.example", None)
        shown = plan(lg, limits)
    assert limits and all(lim.window is not None for lim in limits)
    assert "SCAN payments" not in shown, shown


def test_the_ledgers_totals_are_computed_in_sql_and_agree_with_its_rows(tmp_path: Path) -> None:
    """`httpay ledger` shows totals from one grouped statement; they are what the rows add up to."""
    from httpay.ledger import Intent
    from httpay.ledger.base import Ledger

    with SQLiteLedger(tmp_path / "l.db") as lg:
        for i in range(30):
            r = lg.reserve(Intent(host=f"h{i % 3}", url="u", protocol="l402-v0.2", method="lightning",
                                  amount_msat=1_000 + i, payment_hash=f"{i:064x}", max_fee_msat=50))
            if i % 3 == 0:
                lg.settle(r.id, preimage="00" * 32, fee_msat=7)
            elif i % 3 == 1:
                lg.fail(r.id, "no route")
        for host in (None, "h0", "h1"):
            in_sql = lg.totals(host=host)
            from_rows = Ledger.totals(lg, host=host)  # the generic way: every row read
            assert in_sql == from_rows, host
        assert lg.totals()["count"] == 30 and lg.totals()["settled"] == 10 and lg.totals()["fee_msat"] == 70


def test_start_up_reconciliation_finds_pending_rows_by_index(tmp_path: Path) -> None:
    from httpay.ledger.sql import _SELECT

    with SQLiteLedger(tmp_path / "l.db") as lg:
        rows = lg._query(f"EXPLAIN QUERY PLAN {_SELECT} WHERE status = 'pending' ORDER BY id DESC", ())
        shown = "\n".join(str(r["detail"]) for r in rows)
    assert "payments_pending" in shown and "SCAN payments\n" not in shown + "\n", shown
