"""Many agents, one budget: racing reservations never overspend, on SQLite or PostgreSQL.

Each worker tries far more reservations than the budget allows, all starting together behind a
barrier; exactly floor(budget / amount) must succeed, whoever wins.
"""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

from httpay.errors import PaymentRefused
from httpay.ledger import Intent, Ledger, open_ledger
from httpay.policy import Limit

BUDGET_MSAT = 10_000
AMOUNT_MSAT = 300  # 33 fit, 100 msat would be left over
EXPECTED = BUDGET_MSAT // AMOUNT_MSAT
TRIES = 12  # per worker: 8 threads or 4 processes try 96 or 48 reservations for 33 places
LIMITS = [Limit("total budget", BUDGET_MSAT)]


def reserve_until_refused(ledger: Ledger, tag: str, barrier: Any) -> int:
    """Try TRIES reservations after the barrier; how many the ledger accepted."""
    barrier.wait(timeout=60)
    won = 0
    for i in range(TRIES):
        try:
            ledger.reserve(Intent(host="a.example", url="https://a.example/", protocol="l402-v0.2",
                                  method="lightning", amount_msat=AMOUNT_MSAT, payment_hash=f"{tag}-{i}"), LIMITS)
            won += 1
        except PaymentRefused as exc:
            assert exc.rule == "budget"
    return won


def process_worker(url: str, tag: str, barrier: Any, results: Any) -> None:
    """Runs in a spawned process with its own ledger connection."""
    try:
        with open_ledger(url) as ledger:
            results.put((tag, reserve_until_refused(ledger, tag, barrier)))
    except BaseException as exc:  # noqa: BLE001 - report, so the parent fails with the reason, not a timeout
        results.put((tag, f"{type(exc).__name__}: {exc}"))


def assert_budget_held(url: str, wins: list[int]) -> None:
    with open_ledger(url) as ledger:
        rows = ledger.receipts()
        assert sum(wins) == EXPECTED == len(rows)
        assert ledger.spent_msat() == EXPECTED * AMOUNT_MSAT <= BUDGET_MSAT
        assert len({r.payment_hash for r in rows}) == EXPECTED


def test_eight_threads_sharing_one_ledger_never_overspend(any_ledger_url: str) -> None:
    barrier = threading.Barrier(8)
    wins: list[int] = []
    errors: list[BaseException] = []
    with open_ledger(any_ledger_url) as ledger:

        def run(tag: str) -> None:
            try:
                wins.append(reserve_until_refused(ledger, tag, barrier))
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(f"t{n}",)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert errors == []
    assert_budget_held(any_ledger_url, wins)


def test_four_processes_with_their_own_ledgers_never_overspend(any_ledger_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    procs = [ctx.Process(target=process_worker, args=(any_ledger_url, f"p{n}", barrier, results)) for n in range(4)]
    for p in procs:
        p.start()
    try:
        answers = dict(results.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
    assert all(isinstance(v, int) for v in answers.values()), answers
    assert_budget_held(any_ledger_url, list(answers.values()))
