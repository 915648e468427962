"""Windowed budgets read time-bucketed running totals (`payment_windows`), kept by triggers in the
transaction of every write: for random histories (several hosts, tags, settles with fees and other
amounts, fails, rows moved, deleted, right at bucket boundaries, times spread over seconds to days),
every windowed sum the ledger makes equals the plain SUM over the rows, on SQLite, PostgreSQL and
PgBouncer; the buckets always equal what a fresh fill from the rows gives; a ledger made before the
buckets gets them filled on open."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from httpay.ledger import Intent, Ledger, open_ledger
from httpay.ledger.sql import SQLLedger, tag_scope, windows_fill
from httpay.policy import Limit

BASE = datetime(2026, 11, 30, tzinfo=UTC)  # midnight: a boundary of every grain
HOSTS = ("a.example", "b.example", "c.example")
TAGS = (("agent", "research"), ("agent", "ops"), ("task", "T-1"), ("a", "b=c"), ("a=b", "c"))  # the last two: one text apart
US, S = timedelta(microseconds=1), timedelta(seconds=1)


def moment(rng: random.Random) -> datetime:
    """A time right at a bucket boundary (of a second, minute, hour or day), a microsecond off one,
    or anywhere within three days of BASE."""
    grain = rng.choice([S, 60 * S, 3600 * S, 86400 * S])
    at = BASE + rng.randrange(-3, 4) * grain * rng.choice([1, 2, 7])
    return at + rng.choice([timedelta(0), timedelta(0), US, -US, S / 2, -S / 2, 59 * S,
                            timedelta(seconds=rng.uniform(-86400 * 2, 86400 * 2))])


def plain(lg: SQLLedger, since: datetime | None, host: str | None = None, tag: tuple[str, str] | None = None) -> int:
    """The plain SUM over the rows (what every window summed before it had buckets)."""
    args: list[Any] = []
    if tag is not None:
        sql = ("SELECT COALESCE(SUM(p.amount_msat + p.fee_msat), 0) AS s FROM payment_tags t JOIN payments p "
               "ON p.id = t.payment_id WHERE t.tag_key = ? AND t.tag_value = ? AND p.status != 'failed'")
        args += list(tag)
        if since is not None:
            sql, args = sql + " AND t.created_at >= ?", [*args, lg._to_db_time(since)]
        return int(lg._query(sql, args)[0]["s"])
    sql = "SELECT COALESCE(SUM(amount_msat + fee_msat), 0) AS s FROM payments WHERE status != 'failed'"
    if host is not None:
        sql, args = sql + " AND host = ?", [host]
    if since is not None:
        sql, args = sql + " AND created_at >= ?", [*args, lg._to_db_time(since)]
    return int(lg._query(sql, args)[0]["s"])


def plain_by_tag(lg: SQLLedger, since: datetime | None) -> list[tuple[str, str, int, int]]:
    """Every tag's payments and spend, grouped over the rows (as `spent_by_tag` did before the buckets)."""
    window, args = ("", []) if since is None else (" AND t.created_at >= ?", [lg._to_db_time(since)])
    rows = lg._query("SELECT t.tag_key AS k, t.tag_value AS v, COUNT(*) AS n, COALESCE(SUM(p.amount_msat + p.fee_msat), "
                     "0) AS spent FROM payment_tags t JOIN payments p ON p.id = t.payment_id WHERE p.status != 'failed'"
                     f"{window} GROUP BY t.tag_key, t.tag_value", args)
    return sorted(((str(r["k"]), str(r["v"]), int(r["n"]), int(r["spent"])) for r in rows),
                  key=lambda t: (-t[3], t[0], t[1]))


def buckets(lg: SQLLedger) -> dict[tuple[str, int, int], tuple[int, int]]:
    rows = lg._query("SELECT scope, grain, bucket, n, amount_msat FROM payment_windows", ())
    return {(str(r["scope"]), int(r["grain"]), int(r["bucket"])): (int(r["n"]), int(r["amount_msat"]))
            for r in rows if r["n"] or r["amount_msat"]}


def refilled(lg: SQLLedger) -> dict[tuple[str, int, int], tuple[int, int]]:
    """The buckets a fresh fill from the rows makes (then rolled back)."""
    out: dict[tuple[str, int, int], tuple[int, int]] = {}
    try:
        with lg._budget_transaction(durable=False) as query:
            query("DELETE FROM payment_windows", ())
            fill = windows_fill(lg.SECOND)
            query(fill if lg.clock_is_local else fill.replace("%", "%%"), ())  # psycopg: `%` is its placeholder
            for r in query("SELECT scope, grain, bucket, n, amount_msat FROM payment_windows", ()):
                if r["n"] or r["amount_msat"]:
                    out[(str(r["scope"]), int(r["grain"]), int(r["bucket"]))] = (int(r["n"]), int(r["amount_msat"]))
            raise LookupError  # roll the fill back
    except LookupError:
        pass
    return out


def check(lg: SQLLedger, rng: random.Random, starts: list[datetime]) -> None:
    assert buckets(lg) == refilled(lg)
    for since in starts:
        assert lg.spent_msat(since=since) == plain(lg, since), since
        for host in HOSTS:
            assert lg.spent_msat(host=host, since=since) == plain(lg, since, host), (since, host)
        for tag in TAGS:
            assert lg.spent_msat(tag=tag, since=since) == plain(lg, since, tag=tag), (since, tag)
    for tag in TAGS:
        assert lg.spent_msat(tag=tag) == plain(lg, None, tag=tag), tag
    for start in [None, *starts[:8]]:  # the dashboard's spend by tag, all time and in a window
        assert lg.spent_by_tag(since=start) == plain_by_tag(lg, start), start
    # the reservation's own statement: every limit's column, its window ending at a chosen `now`
    now = rng.choice(starts) + timedelta(hours=1)
    limits = [Limit("hourly budget", 1, window=timedelta(hours=1)), Limit("daily budget", 1, window=timedelta(days=1)),
              Limit("weekly", 1, window=timedelta(days=7, seconds=0.25)),
              Limit("per-host", 1, host=HOSTS[0], window=timedelta(minutes=61, microseconds=3)),
              Limit("tag day", 1, tag=TAGS[0], window=timedelta(days=1)), Limit("tag total", 1, tag=TAGS[2]),
              Limit("total", 1)]
    sql, args = lg._spent_sql(limits, now)
    row = lg._query(sql, args)[0]
    want = [plain(lg, now - lim.window if lim.window else None, lim.host, lim.tag) for lim in limits]
    assert [int(row[f"s{i}"]) for i in range(len(limits))] == want, now


def _as_before_buckets(path: Any) -> None:
    """Make a SQLite ledger file what an httpay before the buckets left: no window table, no triggers."""
    db = sqlite3.connect(path)
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '%windows%'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    db.execute("DROP TABLE payment_windows")
    db.commit()
    db.close()


def test_every_windowed_sum_equals_the_plain_sum_over_the_rows(any_ledger: Ledger) -> None:
    assert isinstance(any_ledger, SQLLedger)
    lg = any_ledger
    rng = random.Random(13)
    ids: list[int] = []
    for i in range(160):
        tags = dict(rng.sample(TAGS, rng.randrange(3))) if rng.random() < 0.6 else {}
        r = lg.reserve(Intent(host=rng.choice(HOSTS), url="https://x/", protocol="l402-v0.2", method="lightning",
                              amount_msat=rng.randrange(1, 50_000), payment_hash=f"{i:064x}",
                              max_fee_msat=rng.choice([0, 50, 1_000]), tags=tags), now=moment(rng))
        ids.append(r.id)
        step = rng.choice(["settle", "settle", "settle_other", "fail", "note", "pending", "raw"])
        if step == "settle":
            lg.settle(r.id, preimage="00" * 32, fee_msat=rng.randrange(60))
        elif step == "settle_other":
            lg.settle(r.id, preimage="00" * 32, fee_msat=3, amount_msat=r.amount_msat // 2)
            lg.settle(r.id, preimage="00" * 32, fee_msat=3, amount_msat=r.amount_msat // 2)  # again: moves nothing
        elif step == "fail":
            lg.fail(r.id, "no route")
        elif step == "note":
            lg.note(r.id, "outcome unknown")
        else:  # what no httpay call does, and the triggers keep right all the same
            victim = rng.choice(ids)
            what = rng.choice(["move", "rehost", "delete", "untag", "retag_time", "unfail"])
            if what == "move":
                lg._query("UPDATE payments SET created_at = ? WHERE id = ?", (lg._to_db_time(moment(rng)), victim))
            elif what == "rehost":
                lg._query("UPDATE payments SET host = ? WHERE id = ?", (rng.choice(HOSTS), victim))
            elif what == "delete":
                lg._query("DELETE FROM payments WHERE id = ?", (victim,))
                ids.remove(victim)
            elif what == "untag":
                lg._query("DELETE FROM payment_tags WHERE payment_id = ?", (victim,))
            elif what == "retag_time":
                lg._query("UPDATE payment_tags SET created_at = ? WHERE payment_id = ?",
                          (lg._to_db_time(moment(rng)), victim))
            else:
                lg._query("UPDATE payments SET status = 'pending' WHERE id = ? AND status = 'failed'", (victim,))
        if i % 40 == 39:
            check(lg, rng, [moment(rng) for _ in range(6)])
    starts = [moment(rng) for _ in range(30)]
    starts += [BASE - timedelta(days=30), BASE + timedelta(days=30), BASE, BASE - US, BASE + US]
    check(lg, rng, starts)


def test_a_window_ending_on_the_databases_clock_equals_the_plain_sum(any_ledger: Ledger) -> None:
    """`now` None (PostgreSQL): the window's start, its partial second and its buckets all come from
    the one clock of the statement; the rows sit around every boundary of that start."""
    assert isinstance(any_ledger, SQLLedger)
    lg = any_ledger
    windows = [timedelta(hours=1), timedelta(days=1), timedelta(minutes=90), timedelta(days=3, seconds=7)]
    now, i = lg.now(), 0
    for window in windows:
        for off in (-3601.0, -61.0, -1.5, -1.0, -0.5, -1e-6, 0.0, 1e-6, 0.02, 0.3, 0.7, 1.0, 1.5, 61.0, 3601.0):
            i += 1
            lg.reserve(Intent(host=HOSTS[i % 2], url="https://x/", protocol="l402-v0.2", method="lightning",
                              amount_msat=1_000 + i, payment_hash=f"{i:064x}", tags=dict([TAGS[i % 2]])),
                       now=now - window + timedelta(seconds=off))
    for window in windows:
        for scope, where, args in ((None, "", []), (("host", HOSTS[0]), " AND host = ?", [HOSTS[0]])):
            ours, more = lg._window_sum(scope, lg._bounds(None, window) if not lg.clock_is_local
                                        else lg._bounds(lg.now() - window, None))
            start, arg = lg._window_start(None if not lg.clock_is_local else lg.now(), window)
            row = lg._query(f"SELECT {ours} AS ours, (SELECT COALESCE(SUM(amount_msat + fee_msat), 0) FROM payments "
                            f"WHERE status != 'failed'{where} AND created_at >= {start}) AS rows",
                            [*more, *args, arg])[0]
            assert int(row["ours"]) == int(row["rows"]) > 0, (window, scope)
        sql, args = lg._spent_sql([Limit("w", 1, window=window), Limit("t", 1, window=window, tag=TAGS[0])], None)
        assert "statement_timestamp()" in sql or lg.clock_is_local
        got = lg._query(sql, args)[0]
        assert int(got["s0"]) > 0 and int(got["s1"]) > 0


def test_the_buckets_follow_a_reservations_tags_in_its_one_statement(any_ledger: Ledger) -> None:
    """PostgreSQL writes the row and its tags in one statement: each is counted once, in its tag's buckets."""
    assert isinstance(any_ledger, SQLLedger)
    r = any_ledger.reserve(Intent(host="a.example", url="https://x/", protocol="l402-v0.2", method="lightning",
                                  amount_msat=7_000, payment_hash="ab" * 32, max_fee_msat=100,
                                  tags={"agent": "research", "task": "T-1"}))
    day = any_ledger.now() - timedelta(days=1)
    for tag in (("agent", "research"), ("task", "T-1")):
        assert any_ledger.spent_msat(tag=tag, since=day) == any_ledger.spent_msat(tag=tag) == 7_100
    assert any_ledger.spent_msat(since=day) == any_ledger.spent_msat(host="a.example", since=day) == 7_100
    any_ledger.settle(r.id, preimage="00" * 32, fee_msat=4)
    assert any_ledger.spent_msat(tag=("task", "T-1"), since=day) == 7_004
    any_ledger.fail(any_ledger.reserve(Intent(host="b.example", url="https://x/", protocol="l402-v0.2",
                                              method="lightning", amount_msat=9, payment_hash="cd" * 32,
                                              tags={"task": "T-1"})).id, "no route")
    assert any_ledger.spent_msat(tag=("task", "T-1"), since=day) == 7_004
    assert buckets(any_ledger) == refilled(any_ledger)
    assert (tag_scope("task", "T-1"), 0, 0) in buckets(any_ledger)


def test_a_ledger_made_before_the_buckets_gets_them_filled_on_open(any_ledger_url: str) -> None:
    rng = random.Random(5)
    with open_ledger(any_ledger_url) as lg:
        assert isinstance(lg, SQLLedger)
        for i in range(40):
            r = lg.reserve(Intent(host=rng.choice(HOSTS), url="https://x/", protocol="l402-v0.2", method="lightning",
                                  amount_msat=1_000 + i, payment_hash=f"{i:064x}", max_fee_msat=20,
                                  tags=dict([rng.choice(TAGS)])), now=moment(rng))
            if i % 3 == 0:
                lg.settle(r.id, preimage="00" * 32, fee_msat=i)
            elif i % 3 == 1:
                lg.fail(r.id, "no")
        want = buckets(lg)
    if any_ledger_url.startswith("postgresql"):  # as httpay made it before the buckets
        import psycopg

        with psycopg.connect(any_ledger_url, autocommit=True, prepare_threshold=None) as conn:
            for stmt in ("DROP TRIGGER payments_windows ON payments", "DROP TRIGGER payments_windows_update ON payments",
                         "DROP TRIGGER payment_tags_windows ON payment_tags", "DROP TABLE payment_windows"):
                conn.execute(stmt)
    else:
        _as_before_buckets(any_ledger_url)
    with open_ledger(any_ledger_url) as lg, open_ledger(any_ledger_url) as again:  # two openers: filled once
        assert isinstance(lg, SQLLedger)
        assert buckets(lg) == want and want
        for since in [moment(rng) for _ in range(10)]:
            assert lg.spent_msat(since=since) == plain(lg, since)
            assert again.spent_msat(tag=TAGS[0], since=since) == plain(lg, since, tag=TAGS[0])
        lg.reserve(Intent(host="a.example", url="https://x/", protocol="l402-v0.2", method="lightning",
                          amount_msat=5, payment_hash="ee" * 32, tags=dict([TAGS[0]])), now=BASE)
        assert buckets(lg) == refilled(lg)


@pytest.mark.parametrize("key, value", [("a", "b=c"), ("a=b", "c"), ("agent", "research"), ("é", "ü")])
def test_a_tags_scope_names_one_tag_only(any_ledger: Ledger, key: str, value: str) -> None:
    """The bucket scope the triggers write for a tag is the one the reads look up, and no other
    tag's (`a`=`b=c` and `a=b`=`c` are apart)."""
    assert isinstance(any_ledger, SQLLedger)
    any_ledger.reserve(Intent(host="h", url="https://h/", protocol="l402-v0.2", method="lightning", amount_msat=11,
                              payment_hash="ab" * 32, tags={key: value}))
    scopes = {s for s, _, _ in buckets(any_ledger)} - {"*", "h"}
    assert scopes == {tag_scope(key, value)}
    assert any_ledger.spent_msat(tag=(key, value), since=BASE) == 11


def test_many_openers_of_an_older_ledger_fill_its_buckets_once(tmp_path: Path) -> None:
    """Eight threads open a ledger made before the buckets at once, each on its own connection: the
    fill runs under the write lock, once, and every opener then reads the same, right, sums."""
    import threading

    from httpay.ledger.sqlite import SQLiteLedger

    path = tmp_path / "old.db"
    rng = random.Random(3)
    with SQLiteLedger(path) as lg:
        for i in range(30):
            lg.reserve(Intent(host=rng.choice(HOSTS), url="https://x/", protocol="l402-v0.2", method="lightning",
                              amount_msat=100 + i, payment_hash=f"{i:064x}", tags=dict([rng.choice(TAGS)])),
                       now=moment(rng))
        want = buckets(lg)
    _as_before_buckets(path)
    start, opened, errors = threading.Barrier(8), [], []

    def open_it() -> None:
        start.wait()
        try:
            opened.append(SQLiteLedger(path))
        except Exception as exc:  # noqa: BLE001  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(opened) == 8
    try:
        for lg in opened:
            assert buckets(lg) == want
            assert lg.spent_msat(since=BASE) == plain(lg, BASE)
        triggers = opened[0]._query("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'trigger' "
                                    "AND name LIKE '%windows%'", ())[0]["n"]
        assert triggers == 7
    finally:
        for lg in opened:
            lg.close()
