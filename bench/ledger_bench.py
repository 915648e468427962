"""How many payments per second each ledger backend records (reserve + settle, budget checked).

`run()` returns `(name, value, target)` lines for bench/run.py; run this file alone to print them.
PostgreSQL is a throwaway server on loopback started with scripts/postgres.sh and stopped after.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from httpay.ledger import Intent, Ledger, open_ledger
from httpay.policy import Limit

SCRIPT = ROOT / "scripts" / "postgres.sh"
# A paid request costs a Lightning payment (hundreds of ms); the ledger must never be the bottleneck.
TARGET = ">= 100/s"
LIMITS = [Limit("total budget", 10**15), Limit("per-host budget", 10**15, host="bench.example"),
          Limit("daily budget", 10**15, window=timedelta(days=1))]


def payments_per_second(ledger: Ledger, n: int) -> float:
    """Reserve (with budget checks) then settle `n` payments, one after another."""
    start = time.perf_counter()
    for i in range(n):
        r = ledger.reserve(Intent(host="bench.example", url="https://bench.example/", protocol="l402-v0.2",
                                  method="lightning", amount_msat=1000, payment_hash=f"bench-{i}"), LIMITS)
        ledger.settle(r.id, preimage="00" * 32, fee_msat=1)
    return n / (time.perf_counter() - start)


def steps(ledger: Ledger, n: int, backend: str) -> list[tuple[str, float, str]]:
    """Per step of a paid request: the median µs of a reservation (three duplicate checks, the
    default limits and a total budget), a settle with a note, a lookup and the ledger's clock; and
    how many statements the ledger sends for each (on PostgreSQL, each one round trip)."""
    import statistics

    import httpay

    limits = httpay.Policy(budget_sat=10**9).limits("bench.example", None)
    sent: list[str] = []
    run = ledger._run  # type: ignore[attr-defined]

    def counting(*args: object) -> object:
        sent.append(next(a for a in args if isinstance(a, str)))
        return run(*args)

    def one(i: int) -> Intent:
        return Intent(host="bench.example", url="https://bench.example/", protocol="x402", method="x402:exact",
                      amount_msat=1000, payment_hash=f"step-{i}-{time.time_ns()}", challenge_key=f"ch-{i}-{time.time_ns()}",
                      max_fee_msat=10)

    times: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    steps_of = {
        "reserve": lambda i, r: ledger.reserve(one(i), limits),
        "settle with a note": lambda i, r: ledger.settle(r.id, preimage="00" * 32, fee_msat=1, note="signed"),
        "find": lambda i, r: ledger.find(payment_hash=r.payment_hash),
        "now": lambda i, r: ledger.now(),
    }
    for i in range(n + 1):
        r = None
        for name, step in steps_of.items():
            sent.clear()
            ledger._run = counting  # type: ignore[attr-defined]
            start = time.perf_counter()
            got = step(i, r)
            times.setdefault(name, []).append(time.perf_counter() - start)
            del ledger._run  # type: ignore[attr-defined]
            counts[name] = len(sent)
            r = got if name == "reserve" else r
    out = [(f"ledger {name}, us ({backend})", round(statistics.median(t[1:]) * 1e6, 1), "report") for name, t in times.items()]
    goals = {"reserve": "<= 6" if backend == "SQLite" else "<= 4", "settle with a note": "1", "find": "1",
             "now": "0" if ledger.clock_is_local else "1"}
    return out + [(f"ledger {name}, statements ({backend})", float(counts[name]), goals[name]) for name in steps_of]


def after_idle(ledger: Ledger, n: int, gap_s: float = 0.003) -> list[tuple[str, float, str]]:
    """A reservation as a paid request makes it: after `gap_s` of waiting on the network, not
    straight after the last one. On a virtual machine the fsync then costs more (the disk and the
    CPU have gone idle): this is the figure a paid request's ratio carries, not the tight loop's."""
    import statistics

    import httpay

    limits = httpay.Policy(budget_sat=10**9).limits("bench.example", None)
    took: list[float] = []
    for i in range(n):
        time.sleep(gap_s)
        start = time.perf_counter()
        r = ledger.reserve(Intent(host="bench.example", url="https://bench.example/", protocol="x402",
                                  method="x402:exact", amount_msat=1000, payment_hash=f"idle-{i}-{time.time_ns()}"),
                           limits)
        took.append(time.perf_counter() - start)
        ledger.settle(r.id, preimage="00" * 32, fee_msat=1)
    return [(f"ledger reserve after {gap_s * 1e3:g} ms idle (as in a paid request), us (SQLite)",
             round(statistics.median(took) * 1e6, 1), "report")]


def _bulk(path: Path, statements: list[tuple[str, tuple[object, ...]]]) -> None:
    """Rows written straight into a fresh SQLite ledger's tables, with its triggers off: the next
    open fills its running totals and window buckets from them, as for a ledger made before them."""
    import sqlite3

    with open_ledger(path):
        pass  # the schema
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    db.execute("DROP TABLE payment_totals")
    db.execute("DROP TABLE payment_windows")
    for sql, args in statements:
        db.execute(sql, args)
    db.execute("COMMIT")
    db.close()


ROWS = ("WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?) "
        "INSERT INTO payments (status, created_at, updated_at, host, url, protocol, method, payment_hash, amount_msat, "
        "fee_msat) SELECT 'settled', ? + i * ?, ? + i * ?, ?, 'u', 'l402-v0.2', 'lightning', 'seed-' || i, ?, 0 FROM k")


def _seed(path: Path, rows: int) -> None:
    """`rows` settled payments of last month (a millisecond apart)."""
    old = time.time() - 30 * 86_400
    _bulk(path, [(ROWS, (rows, old, 1e-3, old, 1e-3, "old.example", 1000))])


def _crowd(path: Path, rows: int) -> None:
    """`rows` settled payments spread over the last hour (inside every default window; of 0 msat, so
    that the default hourly budget still has room)."""
    first = time.time() - 3_590
    _bulk(path, [(ROWS, (rows, first, 3_580 / rows, first, 3_580 / rows, "crowd.example", 0))])


def _reserve_seconds(ledgers: dict[int, Ledger], n: int, tag: str) -> dict[int, float]:
    """The median seconds of `n` reservations under httpay's default limits (hourly, daily) on each
    ledger, interleaved one by one so that a busy moment of the machine hits every ledger alike
    (the median: an fsync that stalls now and then is the disk's noise, not the window's cost)."""
    import statistics

    import httpay

    limits = httpay.Policy().limits("bench.example", None)
    times: dict[int, list[float]] = {rows: [] for rows in ledgers}
    for i in range(n):
        for rows, lg in ledgers.items():
            intent = Intent(host="bench.example", url="u", protocol="l402-v0.2", method="lightning",
                            amount_msat=1, payment_hash=f"{tag}-{rows}-{i}")
            start = time.perf_counter()
            r = lg.reserve(intent, limits)
            times[rows].append(time.perf_counter() - start)
            lg.settle(r.id, preimage="00" * 32)
    return {rows: statistics.median(t) for rows, t in times.items()}


def crowded(n: int, rows: int = 100_000) -> list[tuple[str, float, str]]:
    """A reservation under the default limits with `rows` payments inside its last hour (so inside
    its hourly and daily windows) against one with 10: the windows read their buckets, not their rows."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = {size: Path(tmp) / f"crowded-{size}.sqlite3" for size in (10, rows)}
        for size, path in paths.items():
            _crowd(path, size)
        os.sync()
        return _crowded_line({size: open_ledger(path) for size, path in paths.items()}, n, rows, "SQLite")


def _crowded_line(ledgers: dict[int, Ledger], n: int, rows: int, backend: str) -> list[tuple[str, float, str]]:
    """The crowded-window figure from a ledger with 10 rows in its hour and one with `rows` (closed after)."""
    try:
        spent = _reserve_seconds(ledgers, n, f"crowd-{backend}")
    finally:
        for lg in ledgers.values():
            lg.close()
    return [(f"ledger reserve with {rows:,} rows in the last hour / with 10, default limits ({backend})",
             round(spent[rows] / spent[10], 2), "<= 1.10")]


def _crowd_postgres(url: str, rows: int) -> None:
    """`rows` settled payments over the last hour, written with the triggers off (then filled on open)."""
    import psycopg

    open_ledger(url).close()  # the schema
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        for trigger, table in (("payments_totals", "payments"), ("payments_windows", "payments"),
                               ("payments_windows_update", "payments"), ("payment_tags_windows", "payment_tags")):
            conn.execute(f"DROP TRIGGER {trigger} ON {table}")
        conn.execute("INSERT INTO payments (status, created_at, updated_at, host, url, protocol, method, payment_hash, "
                     "amount_msat, fee_msat) SELECT 'settled', now() - make_interval(secs => 3590 - i * %s), now(), "
                     "'crowd.example', 'u', 'l402-v0.2', 'lightning', 'seed-' || i, 0, 0 "
                     "FROM generate_series(0, %s - 1) i", (3_580 / rows, rows))
        conn.execute("ANALYZE")


def crowded_postgres(n: int, few_url: str, many_url: str, rows: int = 100_000) -> list[tuple[str, float, str]]:
    """The same figure on PostgreSQL: two servers, one with 10 rows in the hour, one with `rows`."""
    _crowd_postgres(few_url, 10)
    _crowd_postgres(many_url, rows)
    return _crowded_line({10: open_ledger(few_url), rows: open_ledger(many_url)}, n, rows, "PostgreSQL")


def growth(n: int, sizes: tuple[int, ...] = (10, 100_000, 1_000_000)) -> list[tuple[str, float, str]]:
    """A reservation + settle under httpay's default limits plus a total budget (the running total),
    and `httpay ledger`'s read (totals and the newest page of rows), at each size of history."""
    import httpay

    limits = httpay.Policy(budget_sat=10**9).limits("bench.example", None)
    paid: dict[int, float] = {}
    shown: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {rows: Path(tmp) / f"grown-{rows}.sqlite3" for rows in sizes}
        for rows, path in paths.items():
            _seed(path, rows)
        os.sync()  # the seeds' writes reach the disk first: they would slow the measured fsyncs
        ledgers = {rows: open_ledger(path) for rows, path in paths.items()}
        paid = dict.fromkeys(sizes, 0.0)
        try:
            for round_ in range(5):  # interleaved, so a busy moment of the machine hits every size alike
                for rows, lg in ledgers.items():
                    start = time.perf_counter()
                    for i in range(n // 5):
                        r = lg.reserve(Intent(host="bench.example", url="u", protocol="l402-v0.2", method="lightning",
                                              amount_msat=1, payment_hash=f"grow-{round_}-{i}"), limits)
                        lg.settle(r.id, preimage="00" * 32)
                    paid[rows] += time.perf_counter() - start
            for rows, lg in ledgers.items():
                start = time.perf_counter()
                lg.totals()
                lg.spent_msat()
                lg.receipts(limit=50)
                shown[rows] = time.perf_counter() - start
        finally:
            for lg in ledgers.values():
                lg.close()
    small, big = sizes[0], sizes[-1]
    out = [(f"ledger reserve + settle at {rows:,} rows / at {small}, default limits + total budget (SQLite)",
            round(paid[rows] / paid[small], 2), "<= 1.10") for rows in sizes[1:]]
    out += [(f"`httpay ledger` totals + newest 50 rows at {rows:,} rows, seconds", round(shown[rows], 4),
             "< 0.3" if rows <= 100_000 else "< 1") for rows in sizes[1:]]
    assert big in paid
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _postgres(folder: Path) -> str:
    proc = subprocess.run(["bash", str(SCRIPT), "start", str(folder), str(_free_port())],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/postgres.sh start failed: {proc.stderr[-2000:]}")
    return proc.stdout.strip()


def run(n: int = 300) -> list[tuple[str, float, str]]:
    lines: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp, open_ledger(Path(tmp) / "bench.sqlite3") as lite:
        lines.append(("ledger payments recorded per second (SQLite)", round(payments_per_second(lite, n), 1), TARGET))
        lines += steps(lite, n, "SQLite")
        lines += after_idle(lite, max(n // 3, 20))
    lines += growth(n)
    lines += crowded(n)
    folders = [Path(tempfile.mkdtemp(prefix="httpay-pg-bench-")) for _ in range(2)]  # under /tmp: the postgres user's
    try:
        url = _postgres(folders[0])
        with open_ledger(url) as pg:
            lines.append(("ledger payments recorded per second (PostgreSQL)", round(payments_per_second(pg, n), 1),
                          TARGET))
            lines += steps(pg, n, "PostgreSQL")
        with open_ledger(url) as pg:
            pg._query("DROP TABLE payments, payment_tags, payment_totals, payment_windows", ())  # type: ignore[attr-defined]
        lines += crowded_postgres(n, url, _postgres(folders[1]))
    finally:
        for folder in folders:
            subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)
            shutil.rmtree(folder, ignore_errors=True)
    return lines


if __name__ == "__main__":
    for name, value, target in run():
        print(f"{name}: {value} ({target})")
