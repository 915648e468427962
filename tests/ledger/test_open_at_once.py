"""Processes opening one new SQLite file at the same moment all open it (a fleet starting on a fresh
ledger, an approval queue a paying command and a person's command create together).

SQLite's busy timeout does not cover the switch to WAL and the schema made by another connection
at that very moment: without waiting those out, about one round in three left one opener with
"database is locked"."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from httpay.apps.approvals import ApprovalQueue
from httpay.ledger import SQLiteLedger

OPENERS, ROUNDS = 6, 12


def _open(kind: str, path: str, start: Any, results: Any) -> None:
    start.wait()
    try:
        (ApprovalQueue(path) if kind == "approval queue" else SQLiteLedger(path)).close()
        results.put("opened")
    except Exception as exc:  # noqa: BLE001 - reported by the test
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("kind", ["ledger", "approval queue"])
def test_processes_opening_a_new_file_at_once_all_open_it(kind: str, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for n in range(ROUNDS):
        path = str(tmp_path / f"{n}.db")
        start, results = ctx.Barrier(OPENERS), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(kind, path, start, results)) for _ in range(OPENERS)]
        for p in procs:
            p.start()
        said = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert said == ["opened"] * OPENERS, said
    if kind == "ledger":  # and the file is whole: it opens again, empty
        with SQLiteLedger(tmp_path / "0.db") as lg:
            assert lg.receipts() == [] and lg.spent_msat() == 0
    else:
        with ApprovalQueue(tmp_path / "0.db") as q:
            assert q.recent() == []
