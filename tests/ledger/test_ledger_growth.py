"""Budgets that grow neither with history nor with the traffic inside their window: a total reads its
running total, a window (hourly, daily, per host, per tag) its time buckets by their key plus the rows
of its partial second by index. Asserted on plans and on work counted (SQLite's VM steps,
PostgreSQL's rows per plan node) with 100,000 rows inside the last hour, never on times."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from httpay.ledger.sql import SQLLedger
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


# -- 100,000 rows inside the window ------------------------------------------------------------------

IN_HOUR, IN_DAY = 100_000, 20_000  # the hour's rows are inside the day too: 120,000 in the daily window
RESEARCH = ("agent", "research")


def crowded_limits() -> list[Limit]:
    """httpay's default limits (hourly, daily) plus a host's hour, a tag's day and a tag's total."""
    import httpay

    return [*httpay.Policy().limits("a.example", None), Limit("per-host hour", 10**15, host="a.example", window=HOUR),
            Limit("tag day", 10**15, tag=RESEARCH, window=DAY), Limit("tag total", 10**15, tag=RESEARCH)]


def crowd_sqlite(path: Path, in_hour: int, in_day: int) -> None:
    """`in_hour` settled rows spread over the last hour and `in_day` over the rest of the day, every
    one tagged, written in bulk with the triggers off; the next open fills the totals and buckets."""
    import sqlite3
    import time

    SQLiteLedger(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    db.execute("DROP TABLE payment_totals")
    db.execute("DROP TABLE payment_windows")
    now = time.time()
    for n, first, span in ((in_hour, now - 3599, 3598), (in_day, now - 86399, 86399 - 3601)):
        db.execute("WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?) "
                   "INSERT INTO payments (status, created_at, updated_at, host, url, protocol, method, amount_msat, "
                   "fee_msat) SELECT 'settled', ? + i * ?, ?, CASE WHEN i % 2 THEN 'a.example' ELSE 'b.example' END, "
                   "'https://a.example/', 'l402-v0.2', 'lightning', 1000, 1 FROM k", (n, first, span / n, now))
    db.execute("INSERT INTO payment_tags (payment_id, tag_key, tag_value, created_at) "
               "SELECT id, ?, ?, created_at FROM payments", RESEARCH)
    db.close()


def sum_rows(lg: SQLLedger, since: datetime, host: str | None = None) -> int:
    """The plain sum over the window's rows (every row here carries the tag)."""
    where, args = lg._filters(host, lg._to_db_time(since))
    return int(lg._query(f"SELECT SUM(amount_msat + fee_msat) AS s FROM payments WHERE status != 'failed'{where}",
                         args)[0]["s"])


def vm_steps(lg: SQLiteLedger, run: Callable[..., object], *args: object) -> int:
    """SQLite's virtual-machine instructions spent by `run`: work done, counted, not timed."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    lg._db.set_progress_handler(count, 1)
    try:
        run(*args)
    finally:
        lg._db.set_progress_handler(None, 1)
    return steps[0]


def guard_sql(lg: SQLLedger, now: datetime | None) -> tuple[str, list[object]]:
    from httpay.ledger import Intent

    return lg._guard_sql(Intent(host="a.example", url="https://a.example/", protocol="l402-v0.2", method="lightning",
                                amount_msat=1_000, payment_hash="ab" * 32, challenge_key="ch", tags=dict([RESEARCH])),
                         crowded_limits(), now)


def test_a_reservation_with_100000_rows_in_its_hour_reads_buckets_not_rows_sqlite(tmp_path: Path) -> None:
    crowd_sqlite(tmp_path / "few.db", 6, 4)
    crowd_sqlite(tmp_path / "many.db", IN_HOUR, IN_DAY)
    steps: dict[str, int] = {}
    for name in ("few", "many"):
        with SQLiteLedger(tmp_path / f"{name}.db") as lg:
            lg._query("ANALYZE", ())  # the planner knows how crowded the window is
            sql, args = guard_sql(lg, lg.now())
            details = [str(r["detail"]) for r in lg._query("EXPLAIN QUERY PLAN " + sql, args)]
            shown = " | ".join(details)
            assert [d for d in details if d.startswith("SCAN")] == ["SCAN CONSTANT ROW"], shown
            assert shown.count("SEARCH payment_windows USING PRIMARY KEY (scope=? AND grain=? AND bucket") == 4 * 4 + 1
            assert "payments_created (created_at>? AND created_at<?)" in shown, shown  # the partial second only
            assert "payments_host (host=? AND created_at>? AND created_at<?)" in shown, shown
            assert "payment_tags_window (tag_key=? AND tag_value=? AND created_at>? AND created_at<?)" in shown, shown
            steps[name] = vm_steps(lg, lg._query, sql, args)
            hour = lg.now() - HOUR
            plain = vm_steps(lg, lg._query, "SELECT SUM(amount_msat + fee_msat) FROM payments "
                             "WHERE status != 'failed' AND created_at >= ?", (hour.timestamp(),))
            if name == "many":  # the truth, and what a sum over the window's rows would have cost
                day = lg.now() - DAY
                assert lg.spent_msat(since=hour) == sum_rows(lg, hour) > (IN_HOUR - 1_000) * 1_001
                assert lg.spent_msat(since=day, tag=RESEARCH) == sum_rows(lg, day) > IN_HOUR * 1_001
                assert lg.spent_msat(host="a.example", since=hour) == sum_rows(lg, hour, "a.example")
                assert steps["many"] * 100 < plain, (steps, plain)
                spent = vm_steps(lg, partial(lg.spent_msat, since=hour))
                assert spent * 100 < plain, (spent, plain)
    # 12,000 times the rows in its windows, at most a few times the work (the buckets fill up to ~150 a window)
    assert steps["many"] < 4 * steps["few"], steps


def test_a_reservation_with_100000_rows_in_its_hour_reads_buckets_not_rows_postgres(clean_postgres_url: str) -> None:
    """PostgreSQL's own count of the rows the guard statement read (its transaction's table
    statistics, `pg_stat_xact_user_tables`, which count the reads of the window function's own
    statements too), the planner knowing the table (ANALYZE): a few hundred, and no table scanned,
    with 120,000 rows inside the daily window."""
    import psycopg

    from httpay.ledger.postgres import PostgresLedger

    PostgresLedger(clean_postgres_url).close()
    with psycopg.connect(clean_postgres_url, autocommit=True, prepare_threshold=None) as conn:
        for trigger, table in (("payments_totals", "payments"), ("payments_windows", "payments"),
                               ("payments_windows_update", "payments"), ("payment_tags_windows", "payment_tags")):
            conn.execute(f"DROP TRIGGER {trigger} ON {table}")
        for n, first, span in ((IN_HOUR, 3599, 3598), (IN_DAY, 86399, 86399 - 3601)):
            conn.execute("INSERT INTO payments (status, created_at, updated_at, host, url, protocol, method, amount_msat, "
                         "fee_msat) SELECT 'settled', now() - make_interval(secs => %s) + make_interval(secs => i * %s), "
                         "now(), CASE WHEN mod(i, 2) = 1 THEN 'a.example' ELSE 'b.example' END, 'https://a.example/', "
                         "'l402-v0.2', 'lightning', 1000, 1 FROM generate_series(0, %s - 1) i", (first, span / n, n))
        conn.execute("INSERT INTO payment_tags (payment_id, tag_key, tag_value, created_at) "
                     "SELECT id, %s, %s, created_at FROM payments", RESEARCH)
        conn.execute("ANALYZE")
    with PostgresLedger(clean_postgres_url) as lg:  # an older ledger: its totals and buckets filled on open
        sql, args = guard_sql(lg, None)

        def reads(conn: Any) -> dict[str, tuple[int, int]]:
            """(seq scans, rows read) per table by this session, not yet flushed: read before and after."""
            return {str(r["relname"]): (int(r["seq_scan"]), int(r["seq_tup_read"]) + int(r["idx_tup_fetch"]))
                    for r in conn.execute("SELECT relname, seq_scan, seq_tup_read, idx_tup_fetch FROM "
                                          "pg_stat_xact_user_tables WHERE relname IN "
                                          "('payments', 'payment_tags', 'payment_windows')").fetchall()}

        with lg._connection() as conn, conn.transaction():
            before = reads(conn)
            for _ in range(7):  # past PL/pgSQL's first plans: the ones it keeps are read too
                conn.execute(sql.replace("?", "%s"), args).fetchall()
            stats = {t: (seq - before.get(t, (0, 0))[0], rows - before.get(t, (0, 0))[1])
                     for t, (seq, rows) in reads(conn).items()}
        assert set(stats) == {"payments", "payment_tags", "payment_windows"}, stats
        assert all(scans == 0 for scans, _ in stats.values()), stats  # no table scanned
        read = sum(rows for _, rows in stats.values()) / 7
        assert read < 1_500, stats  # per guard, vs 120,000 rows in the daily window, 100,000 in the hourly
        hour, day = lg.now() - HOUR, lg.now() - DAY
        assert lg.spent_msat(since=hour) == sum_rows(lg, hour) > (IN_HOUR - 1_000) * 1_001
        assert lg.spent_msat(since=day, tag=RESEARCH) == sum_rows(lg, day) > IN_HOUR * 1_001
