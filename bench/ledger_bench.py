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


def _seed(path: Path, rows: int) -> None:
    """`rows` settled payments of last month, written straight into a fresh SQLite ledger's table."""
    import sqlite3

    with open_ledger(path):
        pass  # the schema
    old = time.time() - 30 * 86_400
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous=OFF")
    db.executemany(
        "INSERT INTO payments (status, created_at, updated_at, host, url, protocol, method, payment_hash, amount_msat, "
        "fee_msat) VALUES ('settled', ?, ?, 'old.example', 'u', 'l402-v0.2', 'lightning', ?, 1000, 0)",
        ((old + i * 1e-3, old + i * 1e-3, f"seed-{i}") for i in range(rows)))
    db.commit()
    db.close()


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
    lines += growth(n)
    folder = Path(tempfile.mkdtemp(prefix="httpay-pg-bench-"))  # under /tmp: reachable by the postgres user
    try:
        with open_ledger(_postgres(folder)) as pg:
            lines.append(("ledger payments recorded per second (PostgreSQL)", round(payments_per_second(pg, n), 1),
                          TARGET))
            lines += steps(pg, n, "PostgreSQL")
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
    return lines


if __name__ == "__main__":
    for name, value, target in run():
        print(f"{name}: {value} ({target})")
