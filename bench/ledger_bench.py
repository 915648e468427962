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
