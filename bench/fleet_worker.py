"""One agent process of the fleet benchmark (bench/fleet_bench.py): M threads, one client, its own wallet.

Reads one JSON line of settings on stdin, opens its client (so start-up is not timed), prints
"ready", waits for "go" on stdin, then every thread makes one request that needs its own payment.
Prints one JSON line: how many were served and refused, the errors, and the time each step of the
payment took (from the flow's own typed events), so the parent can say where the time goes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import httpay

# what each step's time is spent on: the time from the previous event to this one
STEPS = {"decision": "read 402 + decide", "payment_request": "POST payment request", "invoice": "decode + check invoice",
         "reserved": "ledger reserve (budget lock)", "paid": "wallet pay + ledger settle",
         "served": "retry GET", "refused": "refused"}


def _time_the_ledger(spent: dict[str, list[float]], lock: threading.Lock) -> None:
    """Split the ledger's time: waiting for a pooled connection, waiting for the budget lock, and
    the reservation's own statements (the lock is held only during those)."""
    from contextlib import contextmanager

    from httpay.ledger.postgres import PostgresLedger

    plain_connection, plain_budget = PostgresLedger._connection, PostgresLedger._budget_transaction

    def note(name: str, seconds: float) -> None:
        with lock:
            spent[name].append(seconds)

    @contextmanager
    def connection(self: PostgresLedger) -> Iterator[Any]:
        t = time.perf_counter()
        with plain_connection(self) as conn:
            note("ledger: wait for a pooled connection", time.perf_counter() - t)
            yield conn

    @contextmanager
    def budget(self: PostgresLedger, **kw: Any) -> Iterator[Any]:  # durable=
        t = time.perf_counter()
        with plain_budget(self, **kw) as query:
            held = time.perf_counter()
            note("ledger: wait for connection + budget lock", held - t)
            yield query
        note("ledger: reservation statements + commit (lock held)", time.perf_counter() - held)

    PostgresLedger._connection = connection  # type: ignore[method-assign]
    PostgresLedger._budget_transaction = budget  # type: ignore[assignment,method-assign]


def main() -> None:
    if os.environ.get("HTTPAY_BENCH_SWITCH_S"):
        sys.setswitchinterval(float(os.environ["HTTPAY_BENCH_SWITCH_S"]))
    logging.getLogger("httpay").addHandler(logging.NullHandler())  # refusals are counted, not printed
    cfg: dict[str, Any] = json.loads(sys.stdin.readline())
    marks: dict[str, float] = {}
    spent: dict[str, list[float]] = defaultdict(list)
    lock = threading.Lock()

    def on_event(event: httpay.Event) -> None:
        now = time.perf_counter()
        with lock:
            before = marks.get(event.request_id)
            marks[event.request_id] = now
            if before is not None and event.kind in STEPS:
                spent[STEPS[event.kind]].append(now - before)

    _time_the_ledger(spent, lock)
    wallet = httpay.DemoWallet(cfg["base"], cfg["key"])
    policy = httpay.Policy(**cfg["policy"])

    def one(i: int, c: httpay.Client) -> str:
        token = cfg["tokens"][i]
        try:
            r = c.get(f"{cfg['base']}/ticker/MSFT", headers={"Authorization": f"Bearer {token}"})
            outcome = "served" if r.status_code == 200 else f"HTTP {r.status_code}"
        except httpay.PaymentRefused as exc:
            outcome = f"refused:{exc.rule}"
        except httpay.HttpayError as exc:
            outcome = f"error:{type(exc).__name__}: {exc}"[:300]
        return outcome

    from httpay.ledger.postgres import PostgresLedger

    ledger = PostgresLedger(cfg["ledger"], pool_size=int(cfg.get("pool_size", 4)))
    with ledger, httpay.Client(wallet=wallet, policy=policy, ledger=ledger, on_event=on_event, timeout=120) as c:
        c.ledger.spent_msat()  # the pool is open and warm
        print("ready", flush=True)
        sys.stdin.readline()  # "go"
        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(cfg["tokens"])) as pool:
            outcomes = list(pool.map(lambda i: one(i, c), range(len(cfg["tokens"]))))
        elapsed = time.perf_counter() - t0
    print(json.dumps({
        "served": outcomes.count("served"), "refused": sum(o.startswith("refused") for o in outcomes),
        "errors": [o for o in outcomes if o != "served" and not o.startswith("refused")], "elapsed_s": elapsed,
        "steps": {k: [sum(v), len(v)] for k, v in spent.items()},
    }), flush=True)


if __name__ == "__main__":
    main()
