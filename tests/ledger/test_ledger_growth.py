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
