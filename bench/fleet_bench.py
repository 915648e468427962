"""Fleet throughput: N agent processes x M threads, each request needing its own payment, all on one
PostgreSQL budget. `python bench/fleet_bench.py [--processes 4 --threads 15]` (or via bench/run.py).

Starts its own PostgreSQL (scripts/postgres.sh, as the tests do) and the local demo service; each
process has its own demo wallet; every thread uses its own account, so each request meets its own
402. The budget fits exactly 80% of the requests (the demo network charges no fee and the policy
caps fees at 0), so the guarantee is checked exactly: never a msat over budget, exactly that many
paid, each payment hash paid once, every payment that left a wallet settled in the ledger.
Reports payments per second and, from the flow's own typed events, where each payment's time went.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "src", ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from httpay.demo.runner import serve_in_thread
from httpay.demo.server import create_app
from httpay.ledger import Status, open_ledger

PRICE_MSAT = 10_000  # the demo's cheapest offer at its rate
Line = tuple[str, str, str]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_postgres() -> tuple[str, Path]:
    folder = Path(tempfile.mkdtemp(prefix="httpay-bench-pg-"))
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "postgres.sh"), "start", str(folder), str(_free_port())],
                          capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"scripts/postgres.sh failed: {proc.stderr.strip()[-300:]}")
    return proc.stdout.strip(), folder


def stop_postgres(folder: Path) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "postgres.sh"), "stop", str(folder)], capture_output=True,
                   timeout=120, check=False)
    shutil.rmtree(folder, ignore_errors=True)


def _broke_account(base: str) -> str:
    token = str(httpx.get(f"{base}/signup").json()["id"])
    httpx.get(f"{base}/ticker/AAPL", headers={"Authorization": f"Bearer {token}"})  # the free credit
    return token


def run_fleet(pg_url: str, processes: int, threads: int, pool_size: int = 4) -> dict[str, Any]:
    """One fleet run against a fresh ledger; the figures and the checked guarantee."""
    requests = processes * threads
    fits = max(1, requests * 4 // 5)
    policy = {"budget_sat": fits * PRICE_MSAT // 1000, "max_fee_msat": 0, "max_per_payment_sat": 100}
    with serve_in_thread(create_app()) as srv:
        base = srv.url
        network = srv.app.state.demo.network
        keys = [str(httpx.post(f"{base}/ln/wallets", json={"balance_sat": 10_000}).json()["key"])
                for _ in range(processes)]
        workers = []
        for key in keys:
            w = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fleet_worker.py")], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, cwd=ROOT)
            assert w.stdin is not None and w.stdout is not None
            cfg = {"base": base, "key": key, "ledger": pg_url, "policy": policy, "pool_size": pool_size,
                   "tokens": [_broke_account(base) for _ in range(threads)]}
            w.stdin.write(json.dumps(cfg) + "\n")
            w.stdin.flush()
            workers.append(w)
        for w in workers:
            assert w.stdout is not None
            if w.stdout.readline().strip() != "ready":
                raise RuntimeError("a fleet worker did not start")
        t0 = time.perf_counter()
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        results = []
        for w in workers:
            out, _ = w.communicate(timeout=600)
            results.append(json.loads(out.strip().splitlines()[-1]))
        wall = time.perf_counter() - t0
        paid_by_wallets = sum(len(network.wallet_for_key(k).payments) for k in keys)
    with open_ledger(pg_url) as lg:
        rows = lg.receipts()
        spent = lg.spent_msat()
    settled = [r for r in rows if r.status is Status.SETTLED]
    hashes = [r.payment_hash for r in settled]
    served = sum(r["served"] for r in results)
    errors = [e for r in results for e in r["errors"]]
    steps: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for r in results:
        for name, (total, count) in r["steps"].items():
            steps[name][0] += total
            steps[name][1] += count
    checks = {
        "never over budget": spent <= policy["budget_sat"] * 1000,
        "exactly the payments the budget fits": len(settled) == fits == served,
        "each hash paid once": len(hashes) == len(set(hashes)),
        "every payment that left a wallet is settled": paid_by_wallets == len(settled),
        "nothing left pending": not any(r.status is Status.PENDING for r in rows),
        "no errors": not errors,
    }
    return {"processes": processes, "threads": threads, "requests": requests, "paid": len(settled),
            "wall_s": wall, "payments_per_s": len(settled) / wall, "checks": checks, "errors": errors[:5],
            "steps": {k: {"mean_ms": v[0] / v[1] * 1e3, "count": v[1]} for k, v in steps.items() if v[1]}}


def _fresh(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        for table in ("payments", "tokens", "calls", "payment_tags", "payment_totals", "payment_windows", "refusals"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def run(quick: bool = False, processes: int | None = None, threads: int | None = None,
        pool_size: int = 4) -> list[Line]:
    """Lines for bench/run.py: payments/s and the guarantee, or why the fleet could not run here."""
    n, m = processes or 8, threads or (3 if quick else 8)  # a fleet of 8 agents, as the issue asks
    try:
        pg_url, folder = start_postgres()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return [("fleet payments/s", "not run", f"no PostgreSQL here: {exc}")]
    try:
        _fresh(pg_url)
        res = run_fleet(pg_url, n, m, pool_size)
    finally:
        stop_postgres(folder)
    ok = all(res["checks"].values())
    failed = ", ".join(k for k, v in res["checks"].items() if not v)
    lines: list[Line] = [
        (f"fleet {n} processes x {m} threads (pool of {pool_size}), one PostgreSQL budget: payments/s", f"{res['payments_per_s']:.1f}",
         "reported (on 2 cores: 8 processes share them)"),
        ("fleet guarantee (never over budget, exactly what fits, each hash once, all settled)",
         "held" if ok else f"BROKEN: {failed} {res['errors']}", "held"),
    ]
    for name, s in sorted(res["steps"].items(), key=lambda kv: -kv[1]["mean_ms"]):
        lines.append((f"fleet step: {name} (mean)", f"{s['mean_ms']:.1f} ms", f"{s['count']} times"))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--processes", type=int, default=8)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--pool-size", type=int, default=4, help="PostgreSQL connections per process (default 4)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    lines = run(processes=args.processes, threads=args.threads, pool_size=args.pool_size)
    if args.json:
        print(json.dumps([{"name": a, "value": b, "target": c} for a, b, c in lines], indent=2))
    else:
        for a, b, c in lines:
            print(f"{a}: {b} ({c})")
    return 0 if not any(b.startswith("BROKEN") for _, b, _ in lines) else 1


if __name__ == "__main__":
    raise SystemExit(main())
