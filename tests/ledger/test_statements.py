"""What one payment costs the ledger, in statements, on SQLite, PostgreSQL and PgBouncer: a
reservation reads its three duplicate checks, every budget and the clock in ONE statement (a
duplicate found is then read whole to name it), a settle with a note is ONE write, SQLite's clock
costs no statement; and the duplicate checks refuse exactly as they always did (same error, same
message, same precedence, nothing written)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import httpay
from httpay.errors import ChallengeInFlight, DuplicatePayment, PaymentRefused
from httpay.ledger import Intent, Ledger, Receipt, Status
from httpay.ledger.sql import SQLLedger
from httpay.policy import Limit

WINDOW = timedelta(minutes=10)


def intent(payment_hash: str | None = "aa" * 32, *, challenge_key: str | None = None, call_id: int | None = None,
           not_before: datetime | None = None, amount_msat: int = 1000, **kw: Any) -> Intent:
    return Intent(host="a.example", url="https://a.example/q", protocol="l402-v0.2", method="lightning",
                  amount_msat=amount_msat, payment_hash=payment_hash, challenge_key=challenge_key, call_id=call_id,
                  not_before=not_before, **kw)


@contextmanager
def statements(lg: Ledger) -> Iterator[list[str]]:
    """Every statement the ledger sends to its database meanwhile, transaction control and PRAGMAs
    too: on PostgreSQL, each is one round trip."""
    assert isinstance(lg, SQLLedger)
    seen: list[str] = []
    run = lg._run  # type: ignore[attr-defined]  # each backend has its own

    def counting(*args: Any) -> Any:
        seen.append(" ".join(next(a for a in args if isinstance(a, str)).split()))  # (conn,) sql, args
        return run(*args)

    lg._run = counting  # type: ignore[attr-defined]
    try:
        yield seen
    finally:
        del lg._run  # type: ignore[attr-defined]


def reads(seen: list[str]) -> list[str]:
    """The statements that read (PostgreSQL's lock is taken by a SELECT, but reads nothing)."""
    return [s for s in seen if s.startswith("SELECT") and "pg_advisory_xact_lock" not in s]


def is_sqlite(lg: Ledger) -> bool:
    return lg.clock_is_local


# -- statements per step ---------------------------------------------------------------------------

def test_a_reservation_reads_its_three_checks_every_budget_and_the_clock_in_one_select(any_ledger: Ledger) -> None:
    call = any_ledger.call("fp", window=WINDOW)
    limits = [*httpay.Policy(budget_sat=10**6).limits("a.example", None),
              Limit("tag budget", 10**9, tag=("agent", "research"), window=timedelta(days=1))]
    met_402 = any_ledger.now() - WINDOW
    with statements(any_ledger) as seen:
        r = any_ledger.reserve(intent(challenge_key="ch", call_id=call.id, not_before=met_402,
                                      tags={"agent": "research", "task": "T-1"}), limits)
    assert r.status is Status.PENDING and r.tags == {"agent": "research", "task": "T-1"}
    assert len(reads(seen)) == 1, seen
    guard = reads(seen)[0]
    assert all(part in guard for part in ("payment_hash = ?", "challenge_key = ?", "FROM calls", "payment_totals"))
    if is_sqlite(any_ledger):  # the clock is this process's: no statement reads it
        writes = [s.split("(")[0].strip() for s in seen if s.startswith(("INSERT", "UPDATE"))]
        assert writes == ["INSERT INTO payments", "INSERT INTO payment_tags",
                          "UPDATE calls SET receipt_id = ?, credential = NULL WHERE id = ?"]
        assert seen == ["PRAGMA synchronous=FULL", "BEGIN IMMEDIATE", guard, *seen[3:6], "COMMIT",
                        "PRAGMA synchronous=NORMAL"]
        assert "httpay_now()" not in guard
    else:  # one round trip opens the transaction and takes the lock; the fleet's one clock read after it;
        # the row, its tags and its call written by one statement
        assert seen[0].startswith("BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(")
        assert seen[1] == guard and seen[-1] == "COMMIT" and len(seen) == 4, seen
        assert seen[2].startswith("WITH p AS (INSERT INTO payments") and "INSERT INTO payment_tags" in seen[2]
        assert "UPDATE calls SET receipt_id" in seen[2]
        assert "statement_timestamp()" in guard
    assert any_ledger.spent_by_tag() == [("agent", "research", 1, 1000), ("task", "T-1", 1, 1000)]
    assert any_ledger.receipts(tag=("task", "T-1")) == [r]
    assert any_ledger.call("fp", window=WINDOW).receipt == r


def test_a_plain_reservation_is_one_read_and_one_insert(any_ledger: Ledger) -> None:
    with statements(any_ledger) as seen:
        any_ledger.reserve(intent(), httpay.Policy().limits("a.example", None))
    assert len(reads(seen)) == 1 and [s.split(" (")[0] for s in seen if s.startswith("INSERT")] == ["INSERT INTO payments"]
    assert len(seen) == (6 if is_sqlite(any_ledger) else 4), seen  # PostgreSQL: every round trip


def test_a_calls_key_costs_no_sync_of_its_own_its_reservation_syncs_it(any_ledger: Ledger) -> None:
    with statements(any_ledger) as seen:
        call = any_ledger.call("fp", window=WINDOW)
    kinds = [s.split(" ")[0] for s in seen]
    if is_sqlite(any_ledger):  # under the write lock, but no fsync: the reservation's synced commit carries it
        assert kinds == ["BEGIN", "SELECT", "DELETE", "INSERT", "COMMIT"], seen
    else:  # under the lock; the database's clock read by the statements themselves
        assert kinds == ["BEGIN", "SELECT", "DELETE", "INSERT", "COMMIT"], seen
        assert "pg_advisory_xact_lock" in seen[0] and "statement_timestamp()" in seen[1]
    with statements(any_ledger) as seen:
        r = any_ledger.reserve(intent(call_id=call.id))
    if is_sqlite(any_ledger):
        assert seen[0] == "PRAGMA synchronous=FULL" and seen[-1] == "PRAGMA synchronous=NORMAL"
    assert any_ledger.call("fp", window=WINDOW).receipt == r


def test_settling_with_a_note_is_one_update_and_the_row_is_settled_with_the_note(any_ledger: Ledger) -> None:
    r = any_ledger.reserve(intent(max_fee_msat=50))
    any_ledger.note(r.id, "waiting for the wallet")
    with statements(any_ledger) as seen:
        s = any_ledger.settle(r.id, preimage="ab" * 32, fee_msat=7, note="signed payment: the server settles it")
    assert len(seen) == 1 and seen[0].startswith("UPDATE payments SET status = 'settled'"), seen
    assert (s.status, s.preimage, s.fee_msat, s.reason) == (Status.SETTLED, "ab" * 32, 7,
                                                            "signed payment: the server settles it")
    assert any_ledger.get(r.id) == s
    assert any_ledger.totals()["settled_msat"] == 1000 and any_ledger.totals()["fee_msat"] == 7  # the running totals
    long = any_ledger.settle(any_ledger.reserve(intent("bb" * 32)).id, preimage="cd" * 32, note="x" * 900)
    assert long.reason == "x" * 500
    plain = any_ledger.settle(r.id, preimage="ab" * 32, fee_msat=7)
    assert plain.reason is None, "without a note a settle clears the reason, as before"


def test_the_ledger_clock_sqlite_reads_time_without_a_statement_postgres_reads_the_database(any_ledger: Ledger) -> None:
    before = time.time()
    with statements(any_ledger) as seen:
        now = any_ledger.now()
    after = time.time()
    assert now.tzinfo is UTC
    if is_sqlite(any_ledger):
        assert seen == []
        assert before <= now.timestamp() <= after
        r = any_ledger.reserve(intent())
        assert before <= r.created_at.timestamp() <= time.time() and r.created_at.tzinfo is UTC
    else:
        assert not any_ledger.clock_is_local
        assert seen == ["SELECT clock_timestamp() AS now"]
        r = any_ledger.reserve(intent())  # stamped by the database's clock, between two readings of it
        assert now <= r.created_at <= any_ledger.now() and r.created_at.tzinfo is UTC
        assert r.created_at == r.updated_at


def test_the_base_ledger_says_its_clock_is_not_local() -> None:
    assert Ledger.clock_is_local is False
    assert httpay.ledger.SQLiteLedger.clock_is_local is True


# -- the three duplicate checks refuse exactly as before --------------------------------------------

@dataclasses.dataclass(frozen=True)
class Dup:
    name: str
    setup: Callable[[Ledger, int], dict[str, Receipt]]  # the rows already there, by name
    attempt: Callable[[Ledger, int], Intent]
    error: type[Exception] | None
    blame: str = ""        # which row the error names
    message: str = ""      # {id} and {status} of that row


INVOICE = "this invoice is already in the ledger as payment #{id} ({status}); it will not be paid twice"
CHALLENGE = "this challenge already has payment #{id} ({status}); it is not paid twice"
CALL = "this call already has payment #{id} ({status}); it is not paid twice"
PAST = datetime(2026, 1, 1, tzinfo=UTC)
FUTURE = datetime(2099, 1, 1, tzinfo=UTC)


def _one(status: Status, h: str, challenge_key: str | None = None,
         paid_call: bool = False) -> Callable[[Ledger, int], dict[str, Receipt]]:
    """A payment already there (for the call when `paid_call`), left pending, settled or failed."""
    def setup(lg: Ledger, call: int) -> dict[str, Receipt]:
        r = lg.reserve(intent(h, challenge_key=challenge_key, call_id=call if paid_call else None))
        if status is Status.SETTLED:
            r = lg.settle(r.id, preimage="11" * 32)
        elif status is Status.FAILED:
            r = lg.fail(r.id, "no route")
        return {"row": r}
    return setup


def _all_three(lg: Ledger, call: int) -> dict[str, Receipt]:
    """An invoice row, a challenge row and a call row, all distinct, all live."""
    return {"invoice": lg.reserve(intent("11" * 32)), "challenge": lg.reserve(intent("22" * 32, challenge_key="ch")),
            "call": lg.reserve(intent("33" * 32, call_id=call))}


def _challenge_and_call(lg: Ledger, call: int) -> dict[str, Receipt]:
    return {"challenge": lg.reserve(intent("22" * 32, challenge_key="ch")),
            "call": lg.reserve(intent("33" * 32, call_id=call))}


DUPS = [
    Dup("invoice pending", _one(Status.PENDING, "aa" * 32), lambda lg, c: intent("aa" * 32), DuplicatePayment, "row", INVOICE),
    Dup("invoice settled", _one(Status.SETTLED, "aa" * 32), lambda lg, c: intent("aa" * 32), DuplicatePayment, "row", INVOICE),
    Dup("invoice failed: tried again", _one(Status.FAILED, "aa" * 32), lambda lg, c: intent("aa" * 32), None),
    Dup("challenge pending", _one(Status.PENDING, "aa" * 32, "ch"),
        lambda lg, c: intent("bb" * 32, challenge_key="ch", not_before=FUTURE), ChallengeInFlight, "row", CHALLENGE),
    Dup("challenge settled after the 402", _one(Status.SETTLED, "aa" * 32, "ch"),
        lambda lg, c: intent("bb" * 32, challenge_key="ch", not_before=PAST), ChallengeInFlight, "row", CHALLENGE),
    Dup("challenge settled before the 402: paid again", _one(Status.SETTLED, "aa" * 32, "ch"),
        lambda lg, c: intent("bb" * 32, challenge_key="ch", not_before=FUTURE), None),
    Dup("challenge settled, no 402 time: only pending counts", _one(Status.SETTLED, "aa" * 32, "ch"),
        lambda lg, c: intent("bb" * 32, challenge_key="ch"), None),
    Dup("challenge failed: paid again", _one(Status.FAILED, "aa" * 32, "ch"),
        lambda lg, c: intent("bb" * 32, challenge_key="ch", not_before=PAST), None),
    Dup("call paid, pending", _one(Status.PENDING, "aa" * 32, paid_call=True), lambda lg, c: intent("bb" * 32, call_id=c),
        DuplicatePayment, "row", CALL),
    Dup("call paid, settled", _one(Status.SETTLED, "aa" * 32, paid_call=True), lambda lg, c: intent("bb" * 32, call_id=c),
        DuplicatePayment, "row", CALL),
    Dup("call's payment failed: paid again", _one(Status.FAILED, "aa" * 32, paid_call=True),
        lambda lg, c: intent("bb" * 32, call_id=c), None),
    Dup("invoice before challenge before call", _all_three,
        lambda lg, c: intent("11" * 32, challenge_key="ch", call_id=c, not_before=PAST), DuplicatePayment, "invoice",
        INVOICE),
    Dup("challenge before call", _challenge_and_call,
        lambda lg, c: intent("44" * 32, challenge_key="ch", call_id=c, not_before=PAST), ChallengeInFlight,
        "challenge", CHALLENGE),
    Dup("invoice before the invoice's own challenge", _one(Status.PENDING, "aa" * 32, "ch"),
        lambda lg, c: intent("aa" * 32, challenge_key="ch", not_before=PAST), DuplicatePayment, "row", INVOICE),
    Dup("a duplicate before a budget it would break", _one(Status.PENDING, "aa" * 32),
        lambda lg, c: intent("aa" * 32, amount_msat=10**12), DuplicatePayment, "row", INVOICE),
]


@pytest.mark.parametrize("case", DUPS, ids=[d.name for d in DUPS])
def test_the_duplicate_checks_refuse_exactly_as_before(any_ledger: Ledger, case: Dup) -> None:
    call = any_ledger.call("fp", window=WINDOW).id
    rows = case.setup(any_ledger, call)
    before = any_ledger.receipts()
    limits = httpay.Policy(budget_sat=10**6).limits("a.example", None)
    attempt = case.attempt(any_ledger, call)
    if case.error is None:
        assert any_ledger.reserve(attempt, limits).status is Status.PENDING
        assert len(any_ledger.receipts()) == len(before) + 1
        return
    with pytest.raises(case.error) as err:
        any_ledger.reserve(attempt, limits)
    blamed = rows[case.blame]
    assert str(err.value).startswith(case.message.format(id=blamed.id, status=blamed.status.value))
    assert err.value.existing == any_ledger.get(blamed.id)  # type: ignore[attr-defined]
    assert err.value.rule == ("in_flight" if case.error is ChallengeInFlight else "duplicate")  # type: ignore[attr-defined]
    assert any_ledger.receipts() == before, "a refused reservation writes nothing"


def test_a_budget_is_still_checked_in_the_same_statement(any_ledger: Ledger) -> None:
    limits = [Limit("total budget", 5_000), Limit("hourly budget", 3_000, window=timedelta(hours=1))]
    any_ledger.reserve(intent("11" * 32, amount_msat=2_000, challenge_key="c1"), limits)
    with statements(any_ledger) as seen, pytest.raises(PaymentRefused, match="hourly budget") as err:
        any_ledger.reserve(intent("22" * 32, amount_msat=1_500, challenge_key="c2"), limits)
    assert err.value.rule == "per_hour" and len(reads(seen)) == 1
    assert len(any_ledger.receipts()) == 1


# -- each check still reads by its index ---------------------------------------------------------

def test_the_one_select_reads_every_part_by_its_index(any_ledger: Ledger) -> None:
    assert isinstance(any_ledger, SQLLedger)
    call = any_ledger.call("fp", window=WINDOW).id
    for i in range(50):
        any_ledger.reserve(intent(f"{i:064x}", challenge_key=f"ch{i}"))
    limits = [*httpay.Policy(budget_sat=10**6).limits("a.example", None),
              Limit("tag budget", 10**9, tag=("agent", "a"), window=timedelta(days=1))]
    now = None if not any_ledger.clock_is_local else any_ledger.now()
    sql, args = any_ledger._guard_sql(intent("ff" * 32, challenge_key="ch", call_id=call, not_before=PAST), limits, now)
    if is_sqlite(any_ledger):
        details = [str(r["detail"]) for r in any_ledger._query("EXPLAIN QUERY PLAN " + sql, args)]
        plan = " | ".join(details)
        assert [d for d in details if d.startswith("SCAN")] == ["SCAN CONSTANT ROW"], plan  # no table is scanned
        for index in ("SEARCH payments USING INDEX payments_live_hash (payment_hash=?)",
                      "SEARCH payments USING INDEX payments_challenge (challenge_key=?)",
                      "SEARCH c USING INTEGER PRIMARY KEY", "SEARCH p USING INTEGER PRIMARY KEY",
                      "payment_totals", "SEARCH payments USING INDEX payments_created (created_at>? AND created_at<?)",
                      "payment_tags_window", "SEARCH payment_windows USING PRIMARY KEY (scope=? AND grain=? AND bucket>?"):
            assert index in plan, (index, plan)
        return
    with any_ledger._budget_transaction() as query:  # seq scans off: a plan without one proves each index is usable
        query("SET LOCAL enable_seqscan = off", ())
        plan = " | ".join(str(next(iter(r.values()))) for r in query("EXPLAIN " + sql, args))
    assert "Seq Scan on payments" not in plan and "Seq Scan on calls" not in plan, plan
    for index in ("payments_live_hash", "payments_challenge", "payments_pkey", "calls_pkey", "payment_totals_pkey"):
        assert index in plan, (index, plan)
    assert sql.count("httpay_window_spent_v1(") == 3  # the hourly, daily and tag windows
    # The windows are read by a function whose statements EXPLAIN does not show: in a new session (no
    # plan kept yet), seq scans off, the guard's transaction reads every table by an index alone.
    import psycopg

    def scans(conn: psycopg.Connection[tuple[Any, ...]]) -> dict[str, tuple[int, int]]:
        """(seq, index) scans of each table by this session not yet flushed: read before and after."""
        return {r[0]: (r[1], r[2]) for r in conn.execute(
            "SELECT relname, seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname IN "
            "('payments', 'payment_tags', 'payment_windows', 'payment_totals', 'calls')").fetchall()}

    with psycopg.connect(any_ledger._pool.conninfo, prepare_threshold=None) as conn, conn.transaction():  # type: ignore[attr-defined]
        conn.execute("SET LOCAL enable_seqscan = off")
        before = scans(conn)
        conn.execute(sql.replace("?", "%s"), args).fetchall()
        after = scans(conn)
    made = {t: (seq - before.get(t, (0, 0))[0], idx - before.get(t, (0, 0))[1]) for t, (seq, idx) in after.items()}
    assert set(made) == {"payments", "payment_tags", "payment_windows", "payment_totals", "calls"}, made
    assert all(seq == 0 and idx > 0 for seq, idx in made.values()), made


# -- reading a row builds the same Receipt, quicker -------------------------------------------------

def test_a_row_read_is_the_same_receipt_the_dataclass_builds(any_ledger: Ledger) -> None:
    r = any_ledger.settle(any_ledger.reserve(intent(tags={"agent": "a"}), usd_per_btc=65_000.0).id,
                          preimage="ab" * 32, fee_msat=2, note="n")
    built = Receipt(**{f.name: getattr(r, f.name) for f in dataclasses.fields(Receipt)})
    assert r == built and repr(r) == repr(built) and str(r) == str(built) and r.to_dict() == built.to_dict()
    assert dataclasses.replace(r, reason="m").reason == "m" and r.reason == "n"
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.amount_msat = 1  # type: ignore[misc]
    assert Receipt.of_row({"id": 1, "status": Status.PENDING, "created_at": r.created_at,
                           "updated_at": r.created_at, "host": "h", "url": "u", "protocol": "p", "method": "m",
                           "offer_id": None, "offer_title": None, "offer_amount": None, "offer_currency": None,
                           "credits": None, "payment_hash": None, "amount_msat": 5}).fee_msat == 0, "defaults kept"
