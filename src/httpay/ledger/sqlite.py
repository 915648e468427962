"""The SQLite ledger: the default, one file, safe across threads and processes on one machine.

WAL journal plus `BEGIN IMMEDIATE` for every reservation: the budget check and the pending
insert happen under one write lock, so concurrent agents cannot overspend together.

Durability where it matters: a reservation (the pending row written before the wallet is
called) is committed with `synchronous=FULL`, so it is on disk even if the machine loses power
the next instant. Later writes (settled, failed, notes, tokens) use `NORMAL`: they survive any
crash of the process, and should a power loss ever undo one, the row is back to `pending` and
reconciliation with the wallet restores the truth. A call's key (`call()`) uses `NORMAL` too: it
is written before its reservation, whose synced commit of the WAL carries it to disk, and nothing
is paid for a call before that. That keeps one fsync per payment.
"""

from __future__ import annotations

import math
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from httpay.errors import LedgerError
from httpay.ledger.sql import (
    AFTER_MIGRATIONS,
    HOSTS_INDEX,
    HOSTS_TABLE,
    MIGRATIONS,
    TOTALS_COLUMNS,
    TOTALS_FILL,
    TOTALS_TABLE,
    WINDOWS_COLUMNS,
    WINDOWS_TABLE,
    WINDOWS_WHOLE_INDEX,
    Query,
    Rows,
    SQLLedger,
    bump,
    host_map,
    map_hosts,
    schema,
    storable,
    window_writes,
    windows_changed,
    windows_fill,
    windows_moved,
)
from httpay.safe import get_logger

log = get_logger("httpay.ledger")

SCHEMA = schema(serial="INTEGER PRIMARY KEY AUTOINCREMENT", time="REAL", int_type="INTEGER")
TRIGGERS = (  # keep payment_totals right in the transaction of every write
    f"CREATE TRIGGER payments_totals_insert AFTER INSERT ON payments BEGIN {bump('NEW', 1)}; END",
    (f"CREATE TRIGGER payments_totals_update AFTER UPDATE OF {TOTALS_COLUMNS} ON payments "
     f"BEGIN {bump('OLD', -1)}; {bump('NEW', 1)}; END"),
    f"CREATE TRIGGER payments_totals_delete AFTER DELETE ON payments BEGIN {bump('OLD', -1)}; END",
)

SECOND = "(CAST({0} AS INTEGER) - ({0} < CAST({0} AS INTEGER)))"  # floor() of a REAL time: exact, no math extension


def _trigger(name: str, when: str, event: str, condition: str = "") -> str:
    return (f"CREATE TRIGGER {name} AFTER {when}{f' WHEN {condition}' if condition else ''} "
            f"BEGIN {'; '.join(window_writes(event, SECOND))}; END")


WINDOW_TRIGGERS = (  # keep payment_windows right in the transaction of every write; an update that moves nothing fires none
    _trigger("payments_windows_insert", "INSERT ON payments", "insert"),
    _trigger("payments_windows_update", f"UPDATE OF {WINDOWS_COLUMNS} ON payments", "update", windows_changed()),
    _trigger("payments_windows_move", f"UPDATE OF {WINDOWS_COLUMNS} ON payments", "move", windows_moved()),
    _trigger("payments_windows_delete", "DELETE ON payments", "delete"),
    _trigger("payment_tags_windows_insert", "INSERT ON payment_tags", "tag insert"),
    _trigger("payment_tags_windows_update", "UPDATE ON payment_tags", "tag update"),
    _trigger("payment_tags_windows_delete", "DELETE ON payment_tags", "tag delete"),
)
HOST_TRIGGERS = (  # keep payment_hosts right: each host a payment is written with, mapped once
    f"CREATE TRIGGER payments_hosts_insert AFTER INSERT ON payments BEGIN {host_map('NEW')}; END",
    f"CREATE TRIGGER payments_hosts_update AFTER UPDATE OF host ON payments BEGIN {host_map('NEW')}; END",
)


OPEN_WAIT_S = 30.0  # how long an open waits for another process's lock (the busy timeout too)


def connect(path: str, schema_sql: str, what: str, *, make_folder: bool = False) -> sqlite3.Connection:
    """Open (creating) a SQLite file the way httpay's stores share: WAL, autocommit, rows as
    mappings, usable from any thread; the schema applied. LedgerError naming `what` if it fails.

    The file's folder must exist unless `make_folder` (httpay's own default place): a mistyped
    folder would otherwise start a fresh, empty ledger, and budgets would stop counting what the
    real one holds.

    Several processes opening one new file at once (a fleet starting on a fresh ledger) meet a
    lock SQLite's busy timeout does not wait for: the switch to WAL, and the schema, made by
    another at that moment. Those steps are tried again until `OPEN_WAIT_S` has passed."""
    if path != ":memory:" and not path.startswith("file:"):
        folder = Path(path).expanduser().parent
        try:
            if make_folder:
                folder.mkdir(parents=True, exist_ok=True)
            elif not folder.is_dir():
                raise LedgerError(f"cannot open the {what} at {path}: the folder {folder} does not exist; "
                                  "check the path, or create the folder first")
        except OSError as exc:
            raise LedgerError(f"cannot open the {what} at {path}: {exc.strerror or exc}") from None
        _private(Path(path).expanduser())
    try:
        db = sqlite3.connect(path, timeout=OPEN_WAIT_S, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        _set_up(db, path, schema_sql)
    except sqlite3.Error as exc:
        advice = ("it is not a SQLite file: check the path names the " + what if "not a database" in str(exc)
                  else "check the path is writable")
        raise LedgerError(f"cannot open the {what} at {path}: {exc}; {advice}") from None
    return db


def _private(path: Path) -> None:
    """A new store file is made readable by its owner only (0600; SQLite gives its -wal and -shm
    files the same mode): it holds preimages and reusable credentials another local user could spend."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        _existing_private(path)
    except OSError:
        pass  # (SQLite says what is wrong with the path, in its own words)


def _existing_private(path: Path) -> None:
    """An empty file (made with `touch`) becomes the store now: 0600, as a new one. A store others
    may read keeps the mode its owner gave it, and is named with what to run: a mode set on purpose
    (a group that oversees) is theirs to keep, but never unnoticed."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) or not info.st_mode & 0o077:
            return
        if info.st_size == 0 and info.st_uid == os.getuid():
            path.chmod(0o600)
            return
    except OSError:
        return
    log.warning("%s can be read by other users (mode %s); it holds preimages and reusable credentials they could "
                "spend: chmod 600 %s", path, oct(info.st_mode & 0o777), path)


def _set_up(db: sqlite3.Connection, path: str, schema_sql: str) -> None:
    give_up, pause = time.monotonic() + OPEN_WAIT_S, 0.005
    while True:
        try:
            if path != ":memory:":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(schema_sql)
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() + pause > give_up:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


class SQLiteLedger(SQLLedger):
    """A ledger in one SQLite file (or ':memory:' for a throwaway one)."""

    # The clock every row is stamped with, evaluated by SQLite itself (under its write lock for
    # reservations): the machine's OS clock in Unix seconds, microsecond precision (SQLite's own
    # julianday('now') is only ms, too coarse to order a settle and the next request's 402). All
    # processes sharing a SQLite file are on one machine, so this is one source of time.
    NOW = "httpay_now()"
    clock_is_local = True  # httpay_now() is this process's time.time(): read it without a statement

    def __init__(self, path: str | os.PathLike[str], *, make_folder: bool = False) -> None:
        self.path = str(path)
        self.url = self.path
        self._db = connect(self.path, ";\n".join(SCHEMA) + ";", "ledger", make_folder=make_folder)
        self._db.create_function("httpay_now", 0, time.time, deterministic=False)
        self._lock = threading.RLock()
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns a ledger made by an older httpay lacks, and its running totals (filled from
        its rows once), under the write lock: many may open it, and no write slips in between."""
        with self._budget_transaction() as query:
            for table, column, kind in MIGRATIONS:
                if not any(r["name"] == column for r in query(f"PRAGMA table_info({table})", ())):
                    query(f"ALTER TABLE {table} ADD COLUMN {column} {kind}", ())
            for stmt in AFTER_MIGRATIONS:
                query(stmt, ())
            # a service's token kept before `base_scope` existed: found by its scope again
            query("UPDATE tokens SET base_scope = substr(scope, 1, instr(scope, '#') - 1) "
                  "WHERE base_scope IS NULL AND instr(scope, '#') > 0", ())
            if not query("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name = 'payments_totals_insert'",
                         ()):
                query(TOTALS_TABLE.format(int="INTEGER"), ())
                query("DELETE FROM payment_totals", ())
                query(TOTALS_FILL, ())
                for stmt in TRIGGERS:
                    query(stmt, ())
            if not query("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name = 'payments_windows_insert'",
                         ()):  # windowed budgets' buckets: filled from the rows once, like the totals
                query(WINDOWS_TABLE.format(int="INTEGER", without_rowid=" WITHOUT ROWID"), ())
                query(WINDOWS_WHOLE_INDEX, ())
                query("DELETE FROM payment_windows", ())
                query(windows_fill(SECOND), ())
                for stmt in WINDOW_TRIGGERS:
                    query(stmt, ())
            if not query("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name = 'payments_hosts_insert'",
                         ()):  # the host map: every host held mapped once, by its name as Python reads it
                query(HOSTS_TABLE.format(without_rowid=" WITHOUT ROWID"), ())
                query(HOSTS_INDEX, ())
                map_hosts(query)
                for stmt in HOST_TRIGGERS:
                    query(stmt, ())

    def __repr__(self) -> str:
        return f"SQLiteLedger({self.path!r})"

    def _run(self, sql: str, args: Sequence[Any] = ()) -> Rows:
        try:
            return [dict(r) for r in self._db.execute(sql, storable(args)).fetchall()]
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {self.path}: {exc}") from None

    def _query(self, sql: str, args: Sequence[Any] = ()) -> Rows:
        with self._lock:
            return self._run(sql, args)

    @contextmanager
    def _budget_transaction(self, *, durable: bool = True) -> Iterator[Query]:
        with self._lock:
            if durable:  # the pending row must be on disk before the wallet is called
                self._run("PRAGMA synchronous=FULL")
            self._run("BEGIN IMMEDIATE")
            try:
                yield self._run
                self._run("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                if durable:
                    self._run("PRAGMA synchronous=NORMAL")

    def _store_version(self, *, wait: bool) -> int | None:
        """SQLite's `data_version`: it changes when another connection (another process, another
        Ledger on the file) commits; this connection's own writes keep `held_scopes` right already.
        A read of the WAL index: it never waits on a writer, only (`wait`) on this ledger's lock."""
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return None
        finally:
            self._lock.release()

    def now(self) -> datetime:
        """The clock every row is stamped with (`httpay_now()`), read here: no statement."""
        return datetime.fromtimestamp(time.time(), tz=UTC)

    SECOND = SECOND

    def _ceil_second(self, when: datetime) -> int:
        return math.ceil(when.timestamp())  # of the very float the rows are compared with

    def _to_db_time(self, when: datetime) -> float:
        return when.timestamp()

    def _from_db_time(self, value: Any) -> datetime:
        return datetime.fromtimestamp(value, tz=UTC)

    def close(self) -> None:
        with self._lock:
            self._db.close()
