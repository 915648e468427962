"""The SQL that SQLite and PostgreSQL share: one schema template and every query of the contract.

A backend subclasses `SQLLedger` and supplies only what differs: its connection, the lock its
reservations take, and how it stores a time.
"""

from __future__ import annotations

import json
import re
import uuid
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from httpay.errors import ChallengeInFlight, DuplicatePayment, LedgerError, PaymentRefused
from httpay.hosts import host_key, host_parts
from httpay.ledger.base import (
    COLUMNS,
    PREIMAGE_MARK,
    Call,
    Intent,
    Ledger,
    now_utc,
    over_limit,
    split_key,
)
from httpay.ledger.models import Receipt, Refusal, Status
from httpay.policy import Limit
from httpay.safe import mask_urls

TABLE = """
CREATE TABLE IF NOT EXISTS payments (
    id {serial},
    status TEXT NOT NULL CHECK (status IN ('pending', 'settled', 'failed')),
    created_at {time} NOT NULL,
    updated_at {time} NOT NULL,
    host TEXT NOT NULL,
    url TEXT NOT NULL,
    protocol TEXT NOT NULL,
    method TEXT NOT NULL,
    offer_id TEXT,
    offer_title TEXT,
    offer_amount {int},
    offer_currency TEXT,
    credits {int},
    payment_hash TEXT,
    amount_msat {int} NOT NULL CHECK (amount_msat >= 0),
    fee_msat {int} NOT NULL DEFAULT 0,
    wallet TEXT,
    challenge_key TEXT,
    reason TEXT,
    preimage TEXT,
    wallet_id TEXT
);
CREATE INDEX IF NOT EXISTS payments_created ON payments (created_at);
CREATE INDEX IF NOT EXISTS payments_host ON payments (host, created_at);
CREATE UNIQUE INDEX IF NOT EXISTS payments_live_hash ON payments (payment_hash) WHERE status != 'failed';
CREATE INDEX IF NOT EXISTS payments_challenge ON payments (challenge_key);
CREATE INDEX IF NOT EXISTS payments_pending ON payments (id) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS tokens (
    scope TEXT PRIMARY KEY,
    authorization_value TEXT NOT NULL,
    payment_hash TEXT,
    created_at {time} NOT NULL,
    expires_at {time}
);
CREATE TABLE IF NOT EXISTS calls (
    id {serial},
    fingerprint TEXT NOT NULL,
    call_key TEXT NOT NULL,
    created_at {time} NOT NULL,
    receipt_id {int},
    credential TEXT,
    answered_at {time}
);
CREATE INDEX IF NOT EXISTS calls_fingerprint ON calls (fingerprint, created_at);
CREATE TABLE IF NOT EXISTS payment_tags (
    payment_id {int} NOT NULL,
    tag_key TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    created_at {time} NOT NULL,
    PRIMARY KEY (payment_id, tag_key)
);
CREATE INDEX IF NOT EXISTS payment_tags_window ON payment_tags (tag_key, tag_value, created_at);
CREATE TABLE IF NOT EXISTS refusals (
    id {serial},
    created_at {time} NOT NULL,
    host TEXT NOT NULL,
    url TEXT NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    tags TEXT
);
CREATE INDEX IF NOT EXISTS refusals_created ON refusals (created_at);
"""

# Running totals by (host, status), '*' for every host: kept by triggers in the very transaction
# that writes a payment (reserve, settle, fail, anything), so the total budget and `httpay ledger`
# read one row each, whatever the size of the history. A ledger made before gets them on open,
# filled from its rows once, with writers held off (`fill_totals`).
ALL_HOSTS = "*"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TOTALS_TABLE = """CREATE TABLE IF NOT EXISTS payment_totals (
    host TEXT NOT NULL,
    status TEXT NOT NULL,
    n {int} NOT NULL,
    amount_msat {int} NOT NULL,
    fee_msat {int} NOT NULL,
    PRIMARY KEY (host, status)
)"""
TOTALS_FILL = (
    "INSERT INTO payment_totals (host, status, n, amount_msat, fee_msat) "
    "SELECT '*', status, COUNT(*), COALESCE(SUM(amount_msat), 0), COALESCE(SUM(fee_msat), 0) FROM payments "
    "GROUP BY status UNION ALL SELECT host, status, COUNT(*), COALESCE(SUM(amount_msat), 0), "
    "COALESCE(SUM(fee_msat), 0) FROM payments GROUP BY host, status"
)
TOTALS_BUMP = (  # add (sign +1) or take away (-1) one row's amounts: {row} is NEW or OLD
    "INSERT INTO payment_totals (host, status, n, amount_msat, fee_msat) VALUES "
    "('*', {row}.status, {sign}, {sign} * {row}.amount_msat, {sign} * {row}.fee_msat), "
    "({row}.host, {row}.status, {sign}, {sign} * {row}.amount_msat, {sign} * {row}.fee_msat) "
    "ON CONFLICT (host, status) DO UPDATE SET n = payment_totals.n + excluded.n, "
    "amount_msat = payment_totals.amount_msat + excluded.amount_msat, "
    "fee_msat = payment_totals.fee_msat + excluded.fee_msat"
)
TOTALS_COLUMNS = "status, amount_msat, fee_msat, host"  # the columns whose change moves a total

# Time-bucketed running totals, for windowed budgets: for each scope ('*' every host, the host, and
# each tag, `tag_scope`), what the non-failed payments created in each bucket of each grain commit
# (amount + fee, and how many), kept by triggers in the transaction of every write like the totals.
# A window [T, now] is then read exactly as: the rows of T's partial second (by index), then 1-s
# buckets up to the next minute, 60-s buckets up to the next hour, 3600-s buckets up to the next day,
# and day buckets from there on: at most ~150 bucket rows plus one second of rows, whatever the
# traffic in the window. Grain 0 (bucket 0, tags only) is a tag's total over all history.
GRAINS = (1, 60, 3600, 86400)
WHOLE = 0  # the grain of a tag's all-history total
WINDOWS_TABLE = """CREATE TABLE IF NOT EXISTS payment_windows (
    scope TEXT NOT NULL,
    grain {int} NOT NULL,
    bucket {int} NOT NULL,
    n {int} NOT NULL,
    amount_msat {int} NOT NULL,
    PRIMARY KEY (scope, grain, bucket)
){without_rowid}"""
# every tag's total, one row each, without reading the other buckets (`spent_by_tag`)
WINDOWS_WHOLE_INDEX = "CREATE INDEX IF NOT EXISTS payment_windows_whole ON payment_windows (scope) WHERE grain = 0"
WINDOWS_COLUMNS = "status, amount_msat, fee_msat, host, created_at"  # the columns whose change moves a bucket


# Every host recorded, by its name and port (`hosts.host_parts`): a host is one host however a URL
# spelled it (case, a trailing dot, its port, IDNA, an IPv6 literal), so a per-host budget, `ledger
# --host` and `spent_msat(host=...)` read every spelling of it, on every port (or the one it names),
# by equality on the name. A trigger maps each host a payment is written with; a ledger made before
# gets every host it holds mapped on open (the name as Python reads it: rows kept as recorded).
HOSTS_TABLE = """CREATE TABLE IF NOT EXISTS payment_hosts (
    host TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    port TEXT NOT NULL
){without_rowid}"""
HOSTS_INDEX = "CREATE INDEX IF NOT EXISTS payment_hosts_name ON payment_hosts (name, port, host)"


def _host_split_sql(h: str) -> tuple[str, str]:
    """The name and port ('' for none) of recorded host `h`, in SQL, as `host_parts` reads a host
    the ledger writes (already in its one spelling: `host_key`); case and a trailing dot are folded
    here too, for a row another writer made."""
    bare = f"rtrim({h}, '0123456789')"
    has_port = f"({bare} LIKE '%:' AND ({h} LIKE '[%' OR {h} NOT LIKE '%:%:%'))"
    name = f"rtrim(lower(CASE WHEN {has_port} THEN substr({h}, 1, length({bare}) - 1) ELSE {h} END), '.')"
    return name, f"(CASE WHEN {has_port} THEN substr({h}, length({bare}) + 1) ELSE '' END)"


def host_map(row: str) -> str:
    """Map the host of payment row `row` (NEW), once: the statement of the trigger that keeps `payment_hosts`."""
    name, port = _host_split_sql(f"{row}.host")
    return (f"INSERT INTO payment_hosts (host, name, port) VALUES ({row}.host, {name}, {port}) "
            "ON CONFLICT (host) DO NOTHING")


def map_hosts(query: Query) -> None:
    """Map every host the payments hold (a ledger made before `payment_hosts`, once, on open, with writers
    held off), each name as Python reads it, so a host recorded in another spelling joins its name."""
    query("DELETE FROM payment_hosts", ())
    hosts = [str(r["host"]) for r in query("SELECT DISTINCT host FROM payments", ())]
    for i in range(0, len(hosts), 200):
        batch = [(h, *host_parts(h)) for h in hosts[i:i + 200]]
        query("INSERT INTO payment_hosts (host, name, port) VALUES " + ", ".join(["(?, ?, ?)"] * len(batch))
              + " ON CONFLICT (host) DO NOTHING", [v for h, name, port in batch for v in (h, name, port or "")])


HostSet = tuple[str, list[Any]]  # SQL for `host IN (...)` and its arguments


def hosts_sql(host: str | Sequence[str]) -> HostSet | None:
    """The recorded hosts a read means, as the inside of `host IN (...)`: a host given as text is that
    host however spelled, on every port (or only the one it names), looked up by its name; several
    (a sequence) are those hosts exactly as recorded (`hosts_matching` gives them). None: no host."""
    if isinstance(host, str):
        name, port = host_parts(host)
        if port is None:
            return "SELECT host FROM payment_hosts WHERE name = ?", [name]
        return "SELECT host FROM payment_hosts WHERE name = ? AND port = ?", [name, port]
    hosts = list(host)
    return (", ".join("?" * len(hosts)), hosts) if hosts else None


def tag_scope(key: str, value: str) -> str:
    """The bucket scope of one tag (length-prefixed: no key and value pair can spell another's)."""
    return f"#{len(key)}:{key}={value}"


# a tag's spend over all history: its one grain-0 bucket (argument: its `tag_scope`)
TAG_TOTAL = f"(SELECT COALESCE(SUM(amount_msat), 0) FROM payment_windows WHERE scope = ? AND grain = {WHOLE} AND bucket = 0)"


def _tag_scope_sql(t: str) -> str:
    return f"'#' || length({t}.tag_key) || ':' || {t}.tag_key || '=' || {t}.tag_value"


def _counted(r: str) -> tuple[str, str]:
    """What row `r` commits (amount + fee) and counts (1), both 0 when it failed."""
    return (f"(CASE WHEN {r}.status != 'failed' THEN {r}.amount_msat + {r}.fee_msat ELSE 0 END)",
            f"(CASE WHEN {r}.status != 'failed' THEN 1 ELSE 0 END)")


_UPSERT = ("ON CONFLICT (scope, grain, bucket) DO UPDATE SET n = payment_windows.n + excluded.n, "
           "amount_msat = payment_windows.amount_msat + excluded.amount_msat")
_INTO = "INSERT INTO payment_windows (scope, grain, bucket, n, amount_msat) "


def _bucket(sec: str, grain: int) -> str:
    """The bucket of Unix second `sec` at `grain`: floor division (right before 1970 too)."""
    if grain == WHOLE:
        return "0"
    return sec if grain == 1 else f"(({sec}) - ((({sec}) % {grain}) + {grain}) % {grain}) / {grain}"


def _row_bump(r: str, n: str, amount: str, second: str) -> str:
    """Add `n` payments and `amount` msat into the buckets of row `r`'s time, for every host and its
    host: one upsert of eight rows, no read."""
    sec = second.format(f"{r}.created_at")
    values = [f"({scope}, {g}, {_bucket(sec, g)}, {n}, {amount})" for scope in ("'*'", f"{r}.host") for g in GRAINS]
    return f"{_INTO}VALUES {', '.join(values)} {_UPSERT}"


def _row_tags_bump(r: str, n: str, amount: str, second: str) -> str:
    """The same for each tag row `r` has, in its tag's buckets at the tag row's time (and its total)."""
    sec = second.format("t.created_at")
    selects = [f"SELECT {_tag_scope_sql('t')}, {g}, {_bucket(sec, g)}, {n}, {amount} FROM payment_tags t "
               f"WHERE t.payment_id = {r}.id" for g in (WHOLE, *GRAINS)]
    return f"{_INTO}{' UNION ALL '.join(selects)} {_UPSERT}"


def _tag_bump(t: str, sign: int, second: str) -> str:
    """Add (`sign` 1) or take away (-1) tag row `t`'s payment in the tag's buckets at the tag row's time."""
    amount, n = _counted("p")
    sec = second.format(f"{t}.created_at")
    selects = [f"SELECT {_tag_scope_sql(t)}, {g}, {_bucket(sec, g)}, {sign} * {n}, {sign} * {amount} FROM payments p "
               f"WHERE p.id = {t}.payment_id" for g in (WHOLE, *GRAINS)]
    return f"{_INTO}{' UNION ALL '.join(selects)} {_UPSERT}"


def window_writes(event: str, second: str) -> list[str]:
    """The statements that keep the buckets right after one row's `event`: "insert", "delete",
    "update" (in place: its host and time unchanged, so its buckets move by the difference only),
    "move" (its host or time changed), and "tag insert", "tag delete", "tag update". A payment's
    insert has no tag yet: each tag row adds itself."""
    (a_old, n_old), (a_new, n_new) = _counted("OLD"), _counted("NEW")
    old = [_row_bump("OLD", f"-{n_old}", f"-{a_old}", second), _row_tags_bump("OLD", f"-{n_old}", f"-{a_old}", second)]
    new = [_row_bump("NEW", n_new, a_new, second), _row_tags_bump("NEW", n_new, a_new, second)]
    dn, da = f"({n_new} - {n_old})", f"({a_new} - {a_old})"
    return {"insert": new[:1], "delete": old, "move": old + new,
            "update": [_row_bump("NEW", dn, da, second), _row_tags_bump("NEW", dn, da, second)],
            "tag insert": [_tag_bump("NEW", 1, second)], "tag delete": [_tag_bump("OLD", -1, second)],
            "tag update": [_tag_bump("OLD", -1, second), _tag_bump("NEW", 1, second)]}[event]


def windows_fill(second: str) -> str:
    """Every bucket, from the rows (a ledger made before the buckets, once, on open): one grouped insert."""
    amount, n = _counted("p")
    sec = second.format("p.created_at")
    items = " UNION ALL ".join([
        f"SELECT '*' AS scope, {sec} AS s, 0 AS whole, {amount} AS amount, {n} AS n FROM payments p",
        f"SELECT p.host, {sec}, 0, {amount}, {n} FROM payments p",
        (f"SELECT {_tag_scope_sql('t')}, {second.format('t.created_at')}, 1, {amount}, {n} "
         "FROM payment_tags t JOIN payments p ON p.id = t.payment_id")])
    grains = " UNION ALL ".join(f"SELECT {g} AS grain" for g in (WHOLE, *GRAINS))
    g = "NULLIF(g.grain, 0)"  # grain 0 is the one bucket 0 (no division by it)
    bucket = f"COALESCE((x.s - ((x.s % {g}) + {g}) % {g}) / {g}, 0)"
    return (f"{_INTO}SELECT x.scope, g.grain, {bucket}, SUM(x.n), SUM(x.amount) FROM ({items}) x "
            f"JOIN ({grains}) g ON g.grain != 0 OR x.whole = 1 GROUP BY x.scope, g.grain, {bucket} "
            f"HAVING SUM(x.n) != 0 OR SUM(x.amount) != 0 {_UPSERT}")


def windows_changed(old: str = "OLD", new: str = "NEW") -> str:
    """Whether an update in place (host and time unchanged) moves a bucket: else it writes nothing."""
    (a_old, n_old), (a_new, n_new) = _counted(old), _counted(new)
    return (f"{old}.host = {new}.host AND {old}.created_at = {new}.created_at "
            f"AND ({a_old} != {a_new} OR {n_old} != {n_new})")


def windows_moved(old: str = "OLD", new: str = "NEW") -> str:
    """Whether an update moves a row to another host or time (its buckets taken out, then put in)."""
    return f"{old}.host != {new}.host OR {old}.created_at != {new}.created_at"


def _tags_of(raw: Any) -> dict[str, str]:
    """A row's tags, from the JSON it stores them as ({} for none, or for anything unreadable)."""
    if not raw:
        return {}
    try:
        found = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def bump(row: str, sign: int) -> str:
    return TOTALS_BUMP.format(row=row, sign=sign)


_SELECT = f"SELECT {', '.join(COLUMNS)} FROM payments"
_RETURNING = f" RETURNING {', '.join(COLUMNS)}"

# Columns added after the first release: a ledger made before gets them on open (`ADD COLUMN`).
MIGRATIONS = (("payments", "wallet_id", "TEXT"), ("payments", "tags", "TEXT"),
              ("payments", "usd_per_btc", "DOUBLE PRECISION"), ("payments", "token", "TEXT"),
              ("tokens", "base_scope", "TEXT"))
# Made once the migrated columns exist: a scope's kinds ("scope#variant") found by equality on their
# scope, whatever the database's collation orders "#" as
AFTER_MIGRATIONS = ("CREATE INDEX IF NOT EXISTS tokens_base ON tokens (base_scope)",
                    "CREATE INDEX IF NOT EXISTS calls_key ON calls (call_key, created_at)",
                    # the calls still holding a payment's credential, by payment: a dropped token is forgotten there too
                    "CREATE INDEX IF NOT EXISTS calls_credential ON calls (receipt_id) WHERE credential IS NOT NULL")

Rows = list[dict[str, Any]]
Query = Callable[[str, Sequence[Any]], Rows]

# What a backend cannot store as text: NUL (PostgreSQL's text has none) and lone surrogates (no UTF-8)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _escaped(m: re.Match[str]) -> str:
    n = ord(m.group())
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def storable(args: Sequence[Any]) -> Sequence[Any]:
    """A statement's arguments as every backend stores them alike: a NUL or a lone surrogate in
    server text (a title, a reason, a service's name) is kept as the escape a view shows it as
    (`safe.clean`), instead of failing the write on one backend and not the other. Every statement
    of both backends passes here, so a lookup finds what a write stored."""
    if not any(isinstance(a, str) and _UNSTORABLE.search(a) for a in args):
        return args
    return [_UNSTORABLE.sub(_escaped, a) if isinstance(a, str) else a for a in args]


def schema(*, serial: str, time: str, int_type: str) -> list[str]:
    """The payments table and its indexes, one statement each, in a backend's column types."""
    text = TABLE.format(serial=serial, time=time, int=int_type)
    return [stmt.strip() for stmt in text.split(";") if stmt.strip()]


# A call the application named with its Idempotency-Key is still that call while made within the
# window, while its payment is pending, or once that payment settled within the window: the window
# runs from the payment, not from the first send (an approval, or a service slow to settle, may take
# longer than the window). A call httpay keyed itself (by its method, URL and body) lasts the window
# from its first send: past it, the same request is another call (a pending x402 signature expires).
_LIVE_CALL = ("(c.created_at >= {start} OR p.status = 'pending' "
              "OR (p.status = 'settled' AND p.updated_at >= {start}))")
_RECENT_CALL = "c.created_at >= {start}"


def _key_taken(receipt_id: int, status: str) -> PaymentRefused:
    """The refusal of a call sent under an Idempotency-Key another call of the window already paid with."""
    return PaymentRefused(
        f"refused: this request's Idempotency-Key already names another call, with another method, URL or body, "
        f"paid as ledger #{receipt_id} ({status}); nothing is paid: give each operation its own key",
        rule="idempotency_key")


AFTER_FAILED = "settled after it had been failed"  # how a row failed, then proved paid, begins its reason


def _base_of(key: str) -> str | None:
    """The scope a kind of credential belongs to ("https://h" of "https://h#svc"); None for a scope's own."""
    scope, variant = split_key(key)
    return scope if variant else None


class SQLLedger(Ledger):
    """The queries SQLite and PostgreSQL share (written with `?` placeholders).

    A backend supplies a connection (`_query`), a transaction that holds the one budget lock
    every reservation takes (`_budget_transaction`), how it stores a time, and `NOW`: the SQL
    expression of the database's clock, which stamps every row so that processes on machines
    whose clocks disagree still compare times on one clock.
    """

    NOW: str = ""
    WRITABLE_CTE: bool = False  # INSERT/UPDATE inside WITH (PostgreSQL): a reservation's writes in one statement
    STATEMENT_NOW: str = ""  # the clock as one statement reads it once (default: NOW), e.g. statement_timestamp()
    CONTAINS: str = "instr({}, ?) > 0"  # a column holds a text, exactly (case and all): no wildcard to escape

    @abstractmethod
    def _query(self, sql: str, args: Sequence[Any] = ()) -> Rows:
        """Run one statement in its own transaction; rows as dicts. Driver errors become LedgerError."""

    @abstractmethod
    def _budget_transaction(self, *, durable: bool = True) -> AbstractContextManager[Query]:
        """A transaction holding the budget lock; yields a query function; commits on success.
        `durable`: on disk when it returns (a reservation); else it may wait for the next durable
        commit, which carries it (a backend that writes every commit to disk ignores it)."""

    @abstractmethod
    def _to_db_time(self, when: datetime) -> Any: ...

    @abstractmethod
    def _from_db_time(self, value: Any) -> datetime: ...

    def _to_db_interval(self, span: timedelta) -> Any:
        """A span of time as the database subtracts it from its clock (seconds, as times are stored)."""
        return span.total_seconds()

    def _row(self, row: dict[str, Any]) -> Receipt:
        d = dict(row)
        d["status"] = Status(d["status"])
        d["created_at"] = self._from_db_time(d["created_at"])
        d["updated_at"] = self._from_db_time(d["updated_at"])
        d["tags"] = _tags_of(d.get("tags"))
        return Receipt.of_row(d)

    def now(self) -> datetime:
        """The database's clock, read by a statement (a backend whose clock is local overrides this)."""
        return self._from_db_time(self._query(f"SELECT {self.NOW} AS now")[0]["now"])

    def _missing(self, receipt_id: int) -> LedgerError:
        return LedgerError(f"ledger {self.url}: no payment #{receipt_id}")

    @staticmethod
    def _filters(host: str | Sequence[str] | None, since: Any, status: str | None = None) -> tuple[str, list[Any]]:
        """The WHERE clauses of a read: the hosts a host means (`hosts_sql`) are matched by equality
        (`host IN`), so the host index finds the rows and no database collation decides which hosts are alike."""
        sql, args = "", []
        for clause, value in (("status = ?", status), ("created_at >= ?", since)):
            if value is not None:
                sql += f" AND {clause}"
                args.append(value)
        if host is not None:
            hosts = hosts_sql(host)
            sql += f" AND host IN ({hosts[0]})" if hosts else " AND 1 = 0"
            args += hosts[1] if hosts else []
        return sql, args

    def hosts_matching(self, host: str, *, every_port: bool = True) -> list[str]:
        """The hosts recorded for `host`, however each was spelled: it on every port, or on the one it
        names ('127.0.0.1' finds '127.0.0.1:8402'; `every_port=False`: only where no port was
        recorded), read off the host map by its name, never the payments."""
        name, port = host_parts(host)
        sql, args = "SELECT host FROM payment_hosts WHERE name = ?", [name]
        if port is not None or not every_port:
            sql, args = sql + " AND port = ?", [*args, port or ""]
        return sorted(str(r["host"]) for r in self._query(sql, args))

    def _spent(self, query: Query, host: str | Sequence[str] | None, since: datetime | None) -> int:
        if since is None:  # all history: the running totals, one row per host and status
            hosts = None if host is None else hosts_sql(host)
            if host is not None and hosts is None:
                return 0
            where, args = ("host = ?", [ALL_HOSTS]) if hosts is None else (f"host IN ({hosts[0]})", hosts[1])
            rows = query(f"SELECT COALESCE(SUM(amount_msat + fee_msat), 0) AS spent FROM payment_totals "
                         f"WHERE {where} AND status != 'failed'", args)
            return int(rows[0]["spent"])
        if host is not None and hosts_sql(host) is None:
            return 0
        sql, args = self._window_sum(None if host is None else ("host", host), self._bounds(since, None))
        return int(query(f"SELECT {sql} AS spent", args)[0]["spent"])

    def _window_start(self, now: datetime | None, window: timedelta) -> tuple[str, Any]:
        """The SQL and argument for the start of a window ending now: `now`, or (None) the database's
        clock read inside the statement itself, so the reservation spends no statement on it."""
        if now is None:  # a subquery: evaluated once (an index bound), not once per row a scan filters
            return f"(SELECT {self.STATEMENT_NOW or self.NOW} - ?)", self._to_db_interval(window)
        return "?", self._to_db_time(now - window)

    # -- windows, from their buckets ----------------------------------------------------------------
    # The epoch second of a time, in SQL: SECOND floors a stored time column; CEIL_SECONDS is
    # ceil(ceil(epoch of {0}) / {1}), for a window whose start the database's clock gives (`now` None,
    # a backend whose clock is not local), and SECOND_TIME the stored time of a second {0}.
    SECOND: str = ""
    CEIL_SECONDS: str = ""
    SECOND_TIME: str = ""

    def _ceil_second(self, when: datetime) -> int:
        """The first whole Unix second at or after `when`, exactly (microseconds and all)."""
        whole, part = divmod(when - EPOCH, timedelta(seconds=1))
        return int(whole) + (part > timedelta(0))

    def _bounds(self, start: datetime | None, window: timedelta | None) -> dict[str, tuple[str, list[Any]]]:
        """Where a window starting at `start` (or, None, `window` before the database's clock) splits:
        `lo`..`hi` its partial second, read from the rows; then the buckets of each grain from `*_lo`
        to `*_hi` (1-s `s`, 60-s `m`, 3600-s `h`, 86400-s `d`, this one with no end). SQL and args each."""
        if start is not None:
            c0 = self._ceil_second(start)
            m, h, d = -(-c0 // 60), -(-c0 // 3600), -(-c0 // 86400)
            values = {"lo": self._to_db_time(start), "hi": self._to_db_time(EPOCH + timedelta(seconds=c0)),
                      "s_lo": c0, "s_hi": m * 60, "m_lo": m, "m_hi": h * 60, "h_lo": h, "h_hi": d * 24, "d_lo": d}
            return {name: ("?", [value]) for name, value in values.items()}
        assert window is not None and self.CEIL_SECONDS, "a backend whose clock is local passes `now`"
        lo = f"(SELECT {self.STATEMENT_NOW or self.NOW} - ?)"
        span = [self._to_db_interval(window)]

        def up(grain: int) -> tuple[str, list[Any]]:
            return self.CEIL_SECONDS.format(lo, grain), span

        return {"lo": (lo, span), "hi": (self.SECOND_TIME.format(up(1)[0]), span), "s_lo": up(1),
                "s_hi": (f"{up(60)[0]} * 60", span), "m_lo": up(60), "m_hi": (f"{up(3600)[0]} * 60", span),
                "h_lo": up(3600), "h_hi": (f"{up(86400)[0]} * 24", span), "d_lo": up(86400)}

    @staticmethod
    def _window_sum(scope: tuple[str, Any] | None, bounds: dict[str, tuple[str, list[Any]]], *,
                    count: bool = False) -> tuple[str, list[Any]]:
        """What a window commits (`bounds`, from `_bounds`) for every host (`scope` None), ("host", h)
        (the hosts h means, `hosts_sql`: each host's rows and buckets) or ("tag", (k, v)), as one SQL
        expression: its partial second's rows by index, plus its buckets by their key; at most a second
        of rows and ~150 bucket rows (a host's: for each port it was paid on), whatever the window
        holds. `count`: how many payments instead (not failed, like the msat)."""
        args: list[Any] = []
        bucket = "n" if count else "amount_msat"

        def rows(p: str = "") -> str:
            return "COUNT(*)" if count else f"SUM({p}amount_msat + {p}fee_msat)"

        def at(name: str) -> str:
            sql, values = bounds[name]
            args.extend(values)
            return sql

        if scope is not None and scope[0] == "tag":
            key, value = scope[1]
            args += [key, value]
            parts = [(f"(SELECT COALESCE({rows('p.')}, 0) FROM payment_tags t JOIN payments p ON "
                     f"p.id = t.payment_id WHERE t.tag_key = ? AND t.tag_value = ? AND t.created_at >= {at('lo')} "
                     f"AND t.created_at < {at('hi')} AND p.status != 'failed')")]
            name = tag_scope(key, value)
            scopes: HostSet = ("?", [name])
        else:
            where = ""
            scopes = ("?", [ALL_HOSTS])
            if scope is not None:
                scopes = hosts_sql(scope[1]) or ("NULL", [])
                where = f"host IN ({scopes[0]}) AND "
                args += scopes[1]
            parts = [(f"(SELECT COALESCE({rows()}, 0) FROM payments WHERE {where}"
                     f"created_at >= {at('lo')} AND created_at < {at('hi')} AND status != 'failed')")]
        for grain, lo, hi in ((1, "s_lo", "s_hi"), (60, "m_lo", "m_hi"), (3600, "h_lo", "h_hi"), (86400, "d_lo", None)):
            args += scopes[1]
            lower = at(lo)  # the arguments in the order of their placeholders
            upper = "" if hi is None else f" AND bucket < {at(hi)}"
            which = "scope = ?" if scopes[0] == "?" else f"scope IN ({scopes[0]})"
            parts.append(f"(SELECT COALESCE(SUM({bucket}), 0) FROM payment_windows WHERE {which} AND grain = {grain} "
                         f"AND bucket >= {lower}{upper})")
        return f"({' + '.join(parts)})", args

    def _window_spent(self, scope: tuple[str, Any] | None, now: datetime | None,
                      window: timedelta) -> tuple[str, list[Any]]:
        """The SQL of what a window ending `now` (None: the database's clock) has committed, for a
        reservation's guard statement: its buckets and partial second (`_window_sum`). A backend
        that plans every statement anew may read it through a function whose plans it keeps."""
        return self._window_sum(scope, self._bounds(None if now is None else now - window, window))

    def _spent_columns(self, limits: Sequence[Limit], now: datetime | None) -> tuple[list[str], list[Any]]:
        """One column per limit, `s{i}`: what it has spent, each from its running total or its
        window's buckets (`_window_sum`): none reads more rows as the history or the window grows."""
        if now is None and self.clock_is_local:
            now = self.now()
        sums: list[str] = []
        args: list[Any] = []
        for i, lim in enumerate(limits):
            if lim.window is None:  # a total over all history: its running total
                if lim.tag is not None:
                    sums.append(f"{TAG_TOTAL} AS s{i}")
                    args.append(tag_scope(*lim.tag))
                else:  # (a per-host limit: its host's running totals on every port it names, `hosts_sql`)
                    hosts = ("?", [ALL_HOSTS]) if lim.host is None else hosts_sql(lim.host) or ("NULL", [])
                    sums.append("(SELECT COALESCE(SUM(amount_msat + fee_msat), 0) FROM payment_totals "
                                f"WHERE host IN ({hosts[0]}) AND status != 'failed') AS s{i}")
                    args += hosts[1]
                continue
            scope = ("tag", lim.tag) if lim.tag is not None else None if lim.host is None else ("host", lim.host)
            sql, more = self._window_spent(scope, now, lim.window)
            sums.append(f"{sql} AS s{i}")
            args += more
        return sums, args

    def _spent_sql(self, limits: Sequence[Limit], now: datetime | None) -> tuple[str, list[Any]]:
        """One statement summing what each limit has spent: a total from its running total, a window
        from its buckets and its partial second's rows (`_window_sum`), so a reservation under hourly
        and daily limits costs the same at 10 rows in the window or a million."""
        sums, args = self._spent_columns(limits, now)
        return f"SELECT {', '.join(sums)}", args

    def _guard_sql(self, intent: Intent, limits: Sequence[Limit], now: datetime | None) -> tuple[str, list[Any]]:
        """The one statement a reservation reads under the lock, one row: what every limit has spent
        (`s{i}`), the database's clock when `now` is None, and the payment that makes this one a
        duplicate, each check by its index: `dup_invoice` (its invoice, live), `dup_challenge` (its
        challenge, pending or settled since this request met its 402), `dup_call` (its call, live).
        Empty when there is nothing to read."""
        cols, args = self._spent_columns(limits, now)
        if now is None:
            cols.append(f"{self.STATEMENT_NOW or self.NOW} AS now")
        if intent.payment_hash:
            cols.append("(SELECT MAX(id) FROM payments WHERE payment_hash = ? AND status != 'failed') AS dup_invoice")
            args.append(intent.payment_hash)
        if intent.challenge_key:
            settled = ""
            args.append(intent.challenge_key)
            if intent.not_before is not None:
                settled = " OR (status = 'settled' AND updated_at >= ?)"
                args.append(self._to_db_time(intent.not_before))
            cols.append(f"(SELECT MAX(id) FROM payments WHERE challenge_key = ? AND (status = 'pending'{settled})) "
                        "AS dup_challenge")
        if intent.call_id is not None:
            cols.append("(SELECT MAX(p.id) FROM calls c JOIN payments p ON p.id = c.receipt_id WHERE c.id = ? "
                        "AND p.status != 'failed') AS dup_call")
            args.append(intent.call_id)
            if intent.key_window is not None:  # the caller's key, already paying another call (sent at the same moment)
                start, since = self._window_start(now, intent.key_window)
                cols.append("(SELECT MAX(p.id) FROM calls o JOIN calls c ON c.call_key = o.call_key AND c.id != o.id "
                            f"JOIN payments p ON p.id = c.receipt_id WHERE o.id = ? AND {_LIVE_CALL.format(start=start)} "
                            "AND p.status != 'failed') AS dup_key")
                args += [intent.call_id, since, since]
        return (f"SELECT {', '.join(cols)}", args) if cols else ("", [])

    def _refuse_duplicate(self, query: Query, guard: dict[str, Any]) -> None:
        """Raise for the first duplicate the guard statement found: its invoice, then its challenge,
        then its call (the row read whole, in the same transaction, only then)."""
        for check, error, what in (
            ("dup_invoice", DuplicatePayment,
             "this invoice is already in the ledger as payment #{id} ({status}); it will not be paid twice"),
            ("dup_challenge", ChallengeInFlight, "this challenge already has payment #{id} ({status}); it is not paid twice"),
            ("dup_call", DuplicatePayment, "this call already has payment #{id} ({status}); it is not paid twice"),
        ):
            if guard.get(check) is not None:
                existing = self._row(query(f"{_SELECT} WHERE id = ?", (guard[check],))[0])
                raise error(what.format(id=existing.id, status=existing.status.value), existing=existing)
        if guard.get("dup_key") is not None:
            existing = self._row(query(f"{_SELECT} WHERE id = ?", (guard["dup_key"],))[0])
            raise _key_taken(existing.id, existing.status.value)

    # -- writes -----------------------------------------------------------------------------------
    def reserve(self, intent: Intent, limits: Sequence[Limit] = (), *, usd_per_btc: float | None = None,
                now: datetime | None = None) -> Receipt:
        if now is not None and now.tzinfo is None:
            raise LedgerError("reserve(now=...) needs a timezone-aware datetime, e.g. datetime.now(timezone.utc)")
        if intent.max_fee_msat < 0:
            raise LedgerError(f"a fee cap cannot be negative, got {intent.max_fee_msat} msat")
        with self._budget_transaction() as query:
            if now is None and self.clock_is_local:  # read under the lock: one clock for every process
                now = self.now()
            # one statement: the three duplicate checks, every limit's spend, and (else) the database's clock
            sql, sql_args = self._guard_sql(intent, limits, now)
            guard = query(sql, sql_args)[0] if sql else {}
            self._refuse_duplicate(query, guard)
            if now is None:
                now = self._from_db_time(guard["now"])
            stamp = self._to_db_time(now)
            spent = {lim: int(guard[f"s{i}"]) for i, lim in enumerate(limits)}
            over_limit(limits, spent, intent.amount_msat, usd_per_btc, intent.max_fee_msat)
            # fee_msat holds the fee cap while pending (counted in every budget); settling records the real fee
            insert = ("INSERT INTO payments (status, created_at, updated_at, host, url, protocol, method, offer_id, "
                      "offer_title, offer_amount, offer_currency, credits, payment_hash, amount_msat, fee_msat, wallet, "
                      "challenge_key, wallet_id, tags, usd_per_btc, token) "
                      "VALUES ('pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" + _RETURNING)
            args: list[Any] = [
                stamp, stamp, host_key(intent.host), mask_urls(intent.url), intent.protocol, intent.method, intent.offer_id,
                intent.offer_title, intent.offer_amount, intent.offer_currency, intent.credits, intent.payment_hash,
                intent.amount_msat, intent.max_fee_msat, intent.wallet, intent.challenge_key, intent.wallet_id,
                json.dumps(dict(sorted(intent.tags.items())), separators=(",", ":")) if intent.tags else None,
                usd_per_btc, intent.token]
            tags = sorted(intent.tags.items())
            if self.WRITABLE_CTE and (tags or intent.call_id is not None):  # the row, its tags and its call: one statement
                parts = [f"p AS ({insert})"]
                if tags:
                    parts.append("t AS (INSERT INTO payment_tags (payment_id, tag_key, tag_value, created_at) "
                                 "SELECT p.id, v.k, v.v, p.created_at FROM p, (VALUES "
                                 + ", ".join(["(?, ?)"] * len(tags)) + ") AS v (k, v))")
                    args += [v for kv in tags for v in kv]
                if intent.call_id is not None:
                    parts.append("c AS (UPDATE calls SET receipt_id = (SELECT id FROM p), credential = NULL WHERE id = ?)")
                    args.append(intent.call_id)
                rows = query(f"WITH {', '.join(parts)} SELECT * FROM p", args)
                return self._row(rows[0])
            rows = query(insert, args)
            if tags:  # every tag in one statement
                query("INSERT INTO payment_tags (payment_id, tag_key, tag_value, created_at) VALUES "
                      + ", ".join(["(?, ?, ?, ?)"] * len(tags)),
                      [v for key, value in tags for v in (rows[0]["id"], key, value, stamp)])
            if intent.call_id is not None:
                query("UPDATE calls SET receipt_id = ?, credential = NULL WHERE id = ?", (rows[0]["id"], intent.call_id))
        return self._row(rows[0])

    # -- calls ------------------------------------------------------------------------------------
    def call(self, fingerprint: str, *, window: timedelta, key: str | None = None,
             now: datetime | None = None) -> Call:
        # under the lock: two retries at once get one key. Not synced on its own: nothing is paid for the call
        # before its reservation, whose durable commit carries this one to disk with it
        with self._budget_transaction(durable=False) as query:
            if now is None and self.clock_is_local:
                now = self.now()
            start, since = self._window_start(now, window)  # else the database's clock, in the statement itself
            cols = "id, call_key, fingerprint, created_at, receipt_id, credential"
            rows = query(f"SELECT {', '.join('c.' + c for c in cols.split(', '))} FROM calls c LEFT JOIN payments p "
                         f"ON p.id = c.receipt_id WHERE c.fingerprint = ? AND "
                         f"{(_LIVE_CALL if key is not None else _RECENT_CALL).format(start=start)} "
                         "AND c.answered_at IS NULL ORDER BY c.id DESC LIMIT 1",
                         (fingerprint, since, since) if key is not None else (fingerprint, since))
            receipt: Receipt | None = None
            if rows and rows[0]["receipt_id"] is not None:
                found = query(f"{_SELECT} WHERE id = ?", (rows[0]["receipt_id"],))
                receipt = self._row(found[0]) if found else None
                if receipt is not None and receipt.status is Status.FAILED and key is None:
                    rows, receipt = [], None  # nothing was paid for it: a new call, with a new key
            if key is not None and (receipt is None or receipt.status is Status.FAILED):
                # the application's key names one operation, whatever else it is sent with: the call it paid
                # for (this call's own row, found again unpaid, does not free the key for it)
                other = query(f"SELECT p.id, p.status FROM calls c JOIN payments p ON p.id = c.receipt_id "
                              f"WHERE c.call_key = ? AND c.fingerprint != ? AND {_LIVE_CALL.format(start=start)} "
                              "AND p.status != 'failed' ORDER BY c.id DESC LIMIT 1", (key, fingerprint, since, since))
                if other:
                    raise _key_taken(int(other[0]["id"]), str(other[0]["status"]))
            if not rows:
                query("DELETE FROM calls WHERE fingerprint = ?", (fingerprint,))
                stamp, at = ("?", [self._to_db_time(now)]) if now is not None else (self.NOW, [])
                rows = query(f"INSERT INTO calls (fingerprint, call_key, created_at) VALUES (?, ?, {stamp}) "
                             f"RETURNING {cols}", [fingerprint, key or "pay_" + uuid.uuid4().hex, *at])
        return self._call(rows[0], receipt)

    def _call(self, r: dict[str, Any], receipt: Receipt | None) -> Call:
        credential = json.loads(r["credential"]) if r["credential"] and receipt is not None else None
        return Call(int(r["id"]), str(r["call_key"]), str(r["fingerprint"]), self._from_db_time(r["created_at"]),
                    receipt, credential)

    def get_call(self, call_id: int) -> Call | None:
        # a read, never the write lock: requests waiting on one call's payment poll it
        rows = self._query("SELECT id, call_key, fingerprint, created_at, receipt_id, credential FROM calls "
                           "WHERE id = ?", (call_id,))
        if not rows:
            return None
        found = self._query(f"{_SELECT} WHERE id = ?", (rows[0]["receipt_id"],)) if rows[0]["receipt_id"] else []
        return self._call(rows[0], self._row(found[0]) if found else None)

    def record_call(self, call_id: int, receipt_id: int, headers: dict[str, str]) -> None:
        self._query("UPDATE calls SET receipt_id = ?, credential = ? WHERE id = ?",
                    (receipt_id, json.dumps(dict(headers)), call_id))

    def answer_call(self, call_id: int) -> None:
        self._query(f"UPDATE calls SET answered_at = {self.NOW}, credential = NULL WHERE id = ?", (call_id,))

    # -- tokens -----------------------------------------------------------------------------------
    def holds_token(self, scope: str, *, fresh: bool = False) -> bool:
        """Whether a credential is known for `scope`, with no query once the scopes are read: the
        unpaid path costs nothing. Another process's new credential is found on the 402 it spares,
        which the flow answers by looking again (`fresh`): from memory while nobody else has written
        the store since its scopes were read (`held_scopes_exact`), else by asking it."""
        if self.held_scopes is None:
            self._read_held()
        elif fresh and not self.held_scopes_exact():  # (which may read them again)
            return True
        return scope in (self.held_scopes or ()) or bool((self.held_variants or {}).get(scope))

    # A store changed by someone else has its held scopes read again whole when there are this few
    # (one short query); with more, each fresh look asks for its own scope.
    REREAD_SCOPES = 256
    _held_version: int | None = None

    def _store_version(self, *, wait: bool) -> int | None:
        """A number that changes whenever another connection commits to the store (None: the store
        cannot tell, or not without waiting)."""
        return None

    def _read_held(self) -> None:
        version = self._store_version(wait=True)  # before the scopes: a write in between reads as a change
        self.held_scopes, self._held_version = set(self.token_scopes()), version
        self.held_variants = {}
        for scope in self.held_scopes:
            if (base := _base_of(scope)) is not None:
                self.held_variants.setdefault(base, set()).add(scope)

    def held_scopes_exact(self, *, wait: bool = True) -> bool:
        held, known = self.held_scopes, self._held_version
        if held is None or known is None:
            return False
        version = self._store_version(wait=wait)
        if version is None:
            return False
        if version == known:
            return True
        if wait and len(held) <= self.REREAD_SCOPES:
            self._read_held()
            return self._held_version is not None
        return False

    def _learn(self, scope: str, held: bool) -> None:
        if self.held_scopes is not None:
            (self.held_scopes.add if held else self.held_scopes.discard)(scope)
        if self.held_variants is not None and (base := _base_of(scope)) is not None:
            kinds = self.held_variants.setdefault(base, set())
            (kinds.add if held else kinds.discard)(scope)

    def save_token(self, scope: str, authorization: str, *, payment_hash: str | None = None,
                   expires_at: datetime | None = None) -> None:
        exp = None if expires_at is None else self._to_db_time(expires_at)
        self._query("INSERT INTO tokens (scope, authorization_value, payment_hash, created_at, expires_at, base_scope) "
                    f"VALUES (?, ?, ?, {self.NOW}, ?, ?) ON CONFLICT (scope) DO UPDATE SET authorization_value = excluded.authorization_value, "
                    "payment_hash = excluded.payment_hash, created_at = excluded.created_at, expires_at = excluded.expires_at, "
                    "base_scope = excluded.base_scope",
                    (scope, authorization, payment_hash, exp, _base_of(scope)))
        self._learn(scope, True)

    def restore_token(self, receipt_id: int, preimage: str) -> bool:
        rows = self._query("SELECT token, payment_hash FROM payments WHERE id = ? AND status = 'pending'",
                           (receipt_id,))
        if not rows or not rows[0]["token"] or not preimage:
            return False
        try:
            kept = json.loads(rows[0]["token"])
            scope, value = str(kept["scope"]), str(kept["value"])
            expires = datetime.fromisoformat(kept["expires_at"]) if kept.get("expires_at") else None
        except (ValueError, KeyError, TypeError):
            return False  # not a token this httpay wrote: nothing to restore
        if expires is not None and expires <= now_utc():
            return False
        exp = None if expires is None else self._to_db_time(expires)
        stored = self._query(
            "INSERT INTO tokens (scope, authorization_value, payment_hash, created_at, expires_at, base_scope) "
            f"VALUES (?, ?, ?, {self.NOW}, ?, ?) ON CONFLICT (scope) DO NOTHING RETURNING scope",
            (scope, value.replace(PREIMAGE_MARK, preimage), rows[0]["payment_hash"], exp,
             _base_of(scope)))
        if stored:
            self._learn(scope, True)
        return bool(stored)

    def token_for(self, scope: str, *, now: datetime | None = None) -> str | None:
        rows = self._query("SELECT authorization_value, expires_at FROM tokens WHERE scope = ?", (scope,))
        if not rows:
            self._learn(scope, False)
            return None
        exp = rows[0]["expires_at"]
        if exp is not None and self._from_db_time(exp) <= (now or now_utc()):
            self.drop_token(scope)
            return None
        self._learn(scope, True)
        return str(rows[0]["authorization_value"])

    def tokens_of(self, scope: str, *, now: datetime | None = None) -> dict[str, str]:
        # the scope's own key and its kinds ("scope#variant"): one range of the primary key
        rows = self._query("SELECT scope, authorization_value, expires_at FROM tokens WHERE scope = ? OR "
                           "base_scope = ?", (scope, scope))
        found: dict[str, str] = {}
        for r in rows:
            exp = r["expires_at"]
            if exp is not None and self._from_db_time(exp) <= (now or now_utc()):
                self.drop_token(str(r["scope"]))
                continue
            found[str(r["scope"])] = str(r["authorization_value"])
        return found

    def drop_token(self, scope: str) -> bool:
        self._learn(scope, False)
        # the calls that presented it forget it first: a dropped token is presented nowhere again
        self._query("UPDATE calls SET credential = NULL WHERE credential IS NOT NULL AND receipt_id IN "
                    "(SELECT p.id FROM tokens t JOIN payments p ON p.payment_hash = t.payment_hash WHERE t.scope = ?)",
                    (scope,))
        return bool(self._query("DELETE FROM tokens WHERE scope = ? RETURNING scope", (scope,)))

    def note_refusal(self, *, host: str, url: str, rule: str, reason: str, tags: Mapping[str, str] | None = None) -> None:
        self._query(f"INSERT INTO refusals (created_at, host, url, rule, reason, tags) VALUES ({self.NOW}, ?, ?, ?, ?, ?)",
                    (host[:300], mask_urls(url)[:2000], rule[:100], reason[:500],
                     json.dumps(dict(sorted(tags.items()))) if tags else None))

    def refusals(self, *, limit: int = 50, before: int | None = None,
                 tag: tuple[str, str] | None = None) -> list[Refusal]:
        clauses: list[str] = []
        args: list[Any] = []
        if before is not None:
            clauses.append("id < ?")
            args.append(int(before))
        if tag is not None:  # the tags are kept as sorted JSON: the pair is `"k": "v"` then `,` or `}`
            pair = json.dumps(tag[0]) + ": " + json.dumps(tag[1])
            clauses.append(f"({self.CONTAINS.format('tags')} OR {self.CONTAINS.format('tags')})")
            args += [pair + ",", pair + "}"]
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        rows = self._query(f"SELECT id, created_at, host, url, rule, reason, tags FROM refusals{where} "
                           "ORDER BY id DESC LIMIT ?", [*args, int(limit)])
        kept = [Refusal(int(r["id"]), self._from_db_time(r["created_at"]), str(r["host"]), str(r["url"]),
                        str(r["rule"]), str(r["reason"]), _tags_of(r["tags"])) for r in rows]
        return kept if tag is None else [r for r in kept if r.tags.get(tag[0]) == tag[1]]

    def token_info(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT scope, payment_hash, created_at, expires_at FROM tokens ORDER BY scope", ())
        return [{"scope": str(r["scope"]), "payment_hash": r["payment_hash"],
                 "created_at": self._from_db_time(r["created_at"]).isoformat(),
                 "expires_at": None if r["expires_at"] is None else self._from_db_time(r["expires_at"]).isoformat()}
                for r in rows]

    def token_scopes(self) -> list[str]:
        return [str(r["scope"]) for r in self._query("SELECT scope FROM tokens ORDER BY scope", ())]

    def _update(self, receipt_id: int, sql: str, args: Sequence[Any]) -> Receipt:
        rows = self._query(f"UPDATE payments SET {sql}, updated_at = {self.NOW} WHERE id = ?" + _RETURNING,
                           (*args, receipt_id))
        if not rows:
            raise self._missing(receipt_id)
        return self._row(rows[0])

    def settle(self, receipt_id: int, *, preimage: str, fee_msat: int = 0, amount_msat: int | None = None,
               note: str | None = None) -> Receipt:
        # A row failed meanwhile (a person's write-off while a live process still paid it) is settled,
        # the truth about the money, and keeps why it had been failed, so nobody's word is lost
        # (the token kept with the pending row is stored by now, or restored first: the row keeps none)
        sets = ("status = 'settled', preimage = ?, fee_msat = ?, token = NULL, reason = CASE WHEN status = 'failed' "
                f"THEN substr('{AFTER_FAILED} (' || COALESCE(reason, '') || ')' || "
                "COALESCE('; ' || ?, ''), 1, 500) ELSE ? END")
        kept = None if note is None else note[:500]
        args: list[Any] = [preimage, fee_msat, kept, kept]
        if amount_msat is not None:
            sets, args = sets + ", amount_msat = ?", [*args, amount_msat]
        return self._update(receipt_id, sets, args)

    def fail(self, receipt_id: int, reason: str) -> Receipt:
        """Failed: nothing left the wallet, so the amount and the held fee are both released. Only a
        pending row, in the same statement: one settled meanwhile (by another process) stays settled."""
        rows = self._query(f"UPDATE payments SET status = 'failed', fee_msat = 0, token = NULL, reason = ?, updated_at = {self.NOW} "
                           "WHERE id = ? AND status = 'pending'" + _RETURNING, (reason[:500], receipt_id))
        if rows:
            return self._row(rows[0])
        current = self.get(receipt_id)  # a LedgerError for an unknown id
        raise LedgerError(f"ledger #{current.id} is {current.status.value}, not pending: it is not failed")

    def note(self, receipt_id: int, reason: str) -> Receipt:
        # a row settled after it had been failed (a person's write-off) keeps saying so, with the note after
        return self._update(receipt_id, "reason = CASE WHEN substr(reason, 1, ?) = ? THEN "
                            "substr(reason || '; ' || ?, 1, 500) ELSE ? END",
                            (len(AFTER_FAILED), AFTER_FAILED, reason[:500], reason[:500]))

    # -- reads ------------------------------------------------------------------------------------
    def get(self, receipt_id: int) -> Receipt:
        rows = self._query(f"{_SELECT} WHERE id = ?", (receipt_id,))
        if not rows:
            raise self._missing(receipt_id)
        return self._row(rows[0])

    def find(self, *, payment_hash: str | None = None, challenge_key: str | None = None) -> Receipt | None:
        if payment_hash is None and challenge_key is None:
            return None
        col, val = ("payment_hash", payment_hash) if payment_hash is not None else ("challenge_key", challenge_key)
        rows = self._query(f"{_SELECT} WHERE {col} = ? AND status != 'failed' ORDER BY id DESC LIMIT 1", (val,))
        return self._row(rows[0]) if rows else None

    def receipts(self, *, limit: int | None = None, status: Status | None = None,
                 host: str | Sequence[str] | None = None, since: datetime | None = None, before: int | None = None,
                 tag: tuple[str, str] | None = None, after: int | None = None) -> list[Receipt]:
        where, args = self._filters(
            host, None if since is None else self._to_db_time(since), None if status is None else Status(status).value,
        )
        if tag is not None:
            where += " AND id IN (SELECT payment_id FROM payment_tags WHERE tag_key = ? AND tag_value = ?)"
            args += [tag[0], tag[1]]
        if before is not None:
            where += " AND id < ?"
            args.append(int(before))
        if after is not None:
            where += " AND id > ?"
            args.append(int(after))
        sql = f"{_SELECT} WHERE 1=1{where} ORDER BY id {'ASC' if after is not None else 'DESC'}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [self._row(r) for r in self._query(sql, args)]

    def pending(self) -> list[Receipt]:
        """The payments still pending, found by a partial index (start-up reconciliation reads only them)."""
        return [self._row(r) for r in self._query(f"{_SELECT} WHERE status = 'pending' ORDER BY id DESC", ())]

    def totals(self, *, host: str | Sequence[str] | None = None, since: datetime | None = None,
               tag: tuple[str, str] | None = None) -> dict[str, int]:
        """Counts and sums by status: over all history the running totals (a row per status), else
        one grouped statement over the window's (or the tag's) rows, by index."""
        if tag is not None:
            where, args = self._filters(host, None if since is None else self._to_db_time(since))
            rows = self._query("SELECT status, COUNT(*) AS n, COALESCE(SUM(amount_msat), 0) AS amount, "
                               "COALESCE(SUM(fee_msat), 0) AS fee FROM payments WHERE id IN (SELECT payment_id FROM "
                               f"payment_tags WHERE tag_key = ? AND tag_value = ?){where} GROUP BY status",
                               [tag[0], tag[1], *args])
        elif since is None:  # the running totals of the host(s): a row per host and status, summed
            hosts = ("?", [ALL_HOSTS]) if host is None else hosts_sql(host)
            rows = self._query("SELECT status, SUM(n) AS n, SUM(amount_msat) AS amount, SUM(fee_msat) AS fee "
                               f"FROM payment_totals WHERE host IN ({hosts[0]}) GROUP BY status",
                               hosts[1]) if hosts else []
        else:
            where, args = self._filters(host, self._to_db_time(since))
            rows = self._query("SELECT status, COUNT(*) AS n, COALESCE(SUM(amount_msat), 0) AS amount, "
                               f"COALESCE(SUM(fee_msat), 0) AS fee FROM payments WHERE 1=1{where} GROUP BY status",
                               args)
        t = {"count": 0, "settled": 0, "pending": 0, "failed": 0, "settled_msat": 0, "pending_msat": 0, "fee_msat": 0}
        for r in rows:
            status, n = str(r["status"]), int(r["n"])
            t["count"] += n
            t[status] = n
            if status == "settled":
                t["settled_msat"], t["fee_msat"] = int(r["amount"]), int(r["fee"])
            elif status == "pending":
                t["pending_msat"] = int(r["amount"])
        return t

    def spent_msat(self, *, host: str | Sequence[str] | None = None, since: datetime | None = None,
                   tag: tuple[str, str] | None = None) -> int:
        if tag is None:  # a host's (every port's, or several's; or every host's) running totals or window buckets
            return self._spent(self._query, host, since)
        if host is None:  # the tag's total or its window's buckets
            if since is None:
                rows = self._query(f"SELECT {TAG_TOTAL} AS spent", (tag_scope(*tag),))
                return int(rows[0]["spent"])
            sql, args = self._window_sum(("tag", tag), self._bounds(since, None))
            return int(self._query(f"SELECT {sql} AS spent", args)[0]["spent"])
        # a tag on a host (or several): the tag's rows, by its index, with the host and window filters
        where, args = self._filters(host, None if since is None else self._to_db_time(since))
        rows = self._query("SELECT COALESCE(SUM(amount_msat + fee_msat), 0) AS spent FROM payments WHERE "
                           "status != 'failed' AND id IN (SELECT payment_id FROM payment_tags WHERE tag_key = ? "
                           f"AND tag_value = ?){where}", [tag[0], tag[1], *args])
        return int(rows[0]["spent"])

    def spent_by_tag(self, *, since: datetime | None = None) -> list[tuple[str, str, int, int]]:
        """(tag key, tag value, payments, msat committed) for every tag, most spent first: each tag's
        total is one bucket row (grain 0, by a partial index); a window (`since`) sums each tag's
        buckets (`_window_sum`), a batch of tags a statement: the work grows with the tags, not the rows."""
        found: list[tuple[str, str, int, int]] = []
        for r in self._query(f"SELECT scope, n, amount_msat FROM payment_windows WHERE grain = {WHOLE} AND n != 0", ()):
            length, _, rest = str(r["scope"])[1:].partition(":")  # '#' len ':' key '=' value
            found.append((rest[:int(length)], rest[int(length) + 1:], int(r["n"]), int(r["amount_msat"])))
        if since is not None:
            windowed: list[tuple[str, str, int, int]] = []
            bounds = self._bounds(since, None)  # one window for every tag
            for i in range(0, len(found), 50):
                batch, cols, args = found[i:i + 50], [], []
                for j, (k, v, _, _) in enumerate(batch):
                    for count in (True, False):
                        sql, more = self._window_sum(("tag", (k, v)), bounds, count=count)
                        cols.append(f"{sql} AS {'n' if count else 'm'}{j}")
                        args += more
                row = self._query(f"SELECT {', '.join(cols)}", args)[0]
                windowed += [(k, v, int(row[f"n{j}"]), int(row[f"m{j}"])) for j, (k, v, _, _) in enumerate(batch)
                             if int(row[f"n{j}"])]
            found = windowed
        return sorted(found, key=lambda t: (-t[3], t[0], t[1]))
