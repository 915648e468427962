"""How many payments per second each ledger backend records (reserve + settle, budget checked).

`run()` returns `(name, value, target)` lines for bench/run.py; run this file alone to print them.
PostgreSQL is a throwaway server on loopback started with scripts/postgres.sh and stopped after.
"""

from __future__ import annotations

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


def _seed(path: Path, rows: int) -> None:
    """`rows` settled payments of last month, written straight into a fresh SQLite ledger's table."""
    import sqlite3

    with open_ledger(path):
        pass  # the schema
    old = time.time() - 30 * 86_400
    db = sqlite3.connect(path)
    db.executemany(
        "INSERT INTO payments (status, created_at, updated_at, host, url, protocol, method, payment_hash, amount_msat, "
        "fee_msat) VALUES ('settled', ?, ?, 'old.example', 'u', 'l402-v0.2', 'lightning', ?, 1000, 0)",
        ((old + i * 1e-3, old + i * 1e-3, f"seed-{i}") for i in range(rows)))
    db.commit()
    db.close()


def growth(n: int) -> list[tuple[str, float, str]]:
    """A reservation under httpay's default limits (hourly and daily) with 10 rows of history and with 100,000."""
    import httpay

    limits = httpay.Policy().limits("bench.example", None)
    rates: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (10, 100_000):
            path = Path(tmp) / f"grown-{rows}.sqlite3"
            _seed(path, rows)
            with open_ledger(path) as lg:
                start = time.perf_counter()
                for i in range(n):
                    r = lg.reserve(Intent(host="bench.example", url="u", protocol="l402-v0.2", method="lightning",
                                          amount_msat=1, payment_hash=f"grow-{i}"), limits)
                    lg.settle(r.id, preimage="00" * 32)
                rates[rows] = (time.perf_counter() - start) / n
    return [("ledger reserve + settle at 100,000 rows / at 10, default limits (SQLite)",
             round(rates[100_000] / rates[10], 2), "<= 1.10")]


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
    lines += growth(n)
    folder = Path(tempfile.mkdtemp(prefix="httpay-pg-bench-"))  # under /tmp: reachable by the postgres user
    try:
        with open_ledger(_postgres(folder)) as pg:
            lines.append(("ledger payments recorded per second (PostgreSQL)", round(payments_per_second(pg, n), 1),
                          TARGET))
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
    return lines


if __name__ == "__main__":
    for name, value, target in run():
        print(f"{name}: {value} ({target})")
