"""The SQLite ledger: the default, one file, safe across threads and processes on one machine.

WAL journal plus `BEGIN IMMEDIATE` for every reservation: the budget check and the pending
insert happen under one write lock, so concurrent agents cannot overspend together.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from httpay.errors import LedgerError
from httpay.ledger.base import COLUMNS, DuplicatePayment, Intent, Ledger, limit_since, now_utc, over_limit
from httpay.ledger.models import Receipt, Status
from httpay.policy import Limit

SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'settled', 'failed')),
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    host TEXT NOT NULL,
    url TEXT NOT NULL,
    protocol TEXT NOT NULL,
    method TEXT NOT NULL,
    offer_id TEXT,
    offer_title TEXT,
    offer_amount INTEGER,
    offer_currency TEXT,
    credits INTEGER,
    payment_hash TEXT,
    amount_msat INTEGER NOT NULL CHECK (amount_msat >= 0),
    fee_msat INTEGER NOT NULL DEFAULT 0,
    wallet TEXT,
    challenge_key TEXT,
    reason TEXT,
    preimage TEXT
);
CREATE INDEX IF NOT EXISTS payments_created ON payments (created_at);
CREATE INDEX IF NOT EXISTS payments_host ON payments (host, created_at);
CREATE UNIQUE INDEX IF NOT EXISTS payments_live_hash ON payments (payment_hash) WHERE status != 'failed';
CREATE INDEX IF NOT EXISTS payments_challenge ON payments (challenge_key);
"""


class SQLiteLedger(Ledger):
    """A ledger in one SQLite file (or ':memory:' for a throwaway one)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self.url = self.path
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL" if self.path == ":memory:" else "PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger at {self.path}: {exc}; check the path is writable") from None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"SQLiteLedger({self.path!r})"

    # -- helpers ----------------------------------------------------------------------------------
    def _row(self, row: sqlite3.Row) -> Receipt:
        d: dict[str, Any] = dict(row)
        d["status"] = Status(d["status"])
        for k in ("created_at", "updated_at"):
            d[k] = datetime.fromtimestamp(d[k], tz=timezone.utc)
        return Receipt(**d)

    def _exec(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {self.path}: {exc}") from None

    def _spent(self, host: str | None, since: datetime | None) -> int:
        sql = "SELECT COALESCE(SUM(amount_msat + fee_msat), 0) FROM payments WHERE status != 'failed'"
        args: list[Any] = []
        if host is not None:
            sql += " AND host = ?"
            args.append(host)
        if since is not None:
            sql += " AND created_at >= ?"
            args.append(since.timestamp())
        return int(self._exec(sql, args).fetchone()[0])

    # -- writes -----------------------------------------------------------------------------------
    def reserve(self, intent: Intent, limits: Sequence[Limit] = (), *, usd_per_btc: float | None = None) -> Receipt:
        now = now_utc()
        with self._lock:
            self._exec("BEGIN IMMEDIATE")
            try:
                if intent.payment_hash:
                    row = self._exec(
                        "SELECT * FROM payments WHERE payment_hash = ? AND status != 'failed' ORDER BY id DESC LIMIT 1",
                        (intent.payment_hash,),
                    ).fetchone()
                    if row is not None:
                        existing = self._row(row)
                        raise DuplicatePayment(
                            f"this invoice is already in the ledger as payment #{existing.id} ({existing.status.value}); "
                            "it will not be paid twice",
                            existing=existing,
                        )
                spent = {lim: self._spent(lim.host, limit_since(lim, now)) for lim in limits}
                over_limit(limits, spent, intent.amount_msat, usd_per_btc)
                cur = self._exec(
                    "INSERT INTO payments (status, created_at, updated_at, host, url, protocol, method, offer_id, "
                    "offer_title, offer_amount, offer_currency, credits, payment_hash, amount_msat, fee_msat, wallet, "
                    "challenge_key) VALUES ('pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                    (now.timestamp(), now.timestamp(), intent.host, intent.url, intent.protocol, intent.method,
                     intent.offer_id, intent.offer_title, intent.offer_amount, intent.offer_currency, intent.credits,
                     intent.payment_hash, intent.amount_msat, intent.wallet, intent.challenge_key),
                )
                self._exec("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return self.get(int(cur.lastrowid or 0))

    def _update(self, receipt_id: int, sql: str, args: Sequence[Any]) -> Receipt:
        with self._lock:
            cur = self._exec(f"UPDATE payments SET {sql}, updated_at = ? WHERE id = ?", (*args, now_utc().timestamp(), receipt_id))
            if cur.rowcount != 1:
                raise LedgerError(f"ledger {self.path}: no payment #{receipt_id}")
            return self.get(receipt_id)

    def settle(self, receipt_id: int, *, preimage: str, fee_msat: int = 0, amount_msat: int | None = None) -> Receipt:
        if amount_msat is None:
            return self._update(receipt_id, "status = 'settled', preimage = ?, fee_msat = ?, reason = NULL", (preimage, fee_msat))
        return self._update(
            receipt_id, "status = 'settled', preimage = ?, fee_msat = ?, amount_msat = ?, reason = NULL",
            (preimage, fee_msat, amount_msat),
        )

    def fail(self, receipt_id: int, reason: str) -> Receipt:
        return self._update(receipt_id, "status = 'failed', reason = ?", (reason[:500],))

    def note(self, receipt_id: int, reason: str) -> Receipt:
        """Attach a note (e.g. why a payment is still pending) without changing its status."""
        return self._update(receipt_id, "reason = ?", (reason[:500],))

    # -- reads ------------------------------------------------------------------------------------
    def get(self, receipt_id: int) -> Receipt:
        with self._lock:
            row = self._exec(f"SELECT {', '.join(COLUMNS)} FROM payments WHERE id = ?", (receipt_id,)).fetchone()
        if row is None:
            raise LedgerError(f"ledger {self.path}: no payment #{receipt_id}")
        return self._row(row)

    def find(self, *, payment_hash: str | None = None, challenge_key: str | None = None) -> Receipt | None:
        if payment_hash is None and challenge_key is None:
            return None
        col, val = ("payment_hash", payment_hash) if payment_hash is not None else ("challenge_key", challenge_key)
        with self._lock:
            row = self._exec(
                f"SELECT {', '.join(COLUMNS)} FROM payments WHERE {col} = ? AND status != 'failed' ORDER BY id DESC LIMIT 1",
                (val,),
            ).fetchone()
        return self._row(row) if row else None

    def receipts(self, *, limit: int | None = None, status: Status | None = None, host: str | None = None,
                 since: datetime | None = None) -> list[Receipt]:
        sql = f"SELECT {', '.join(COLUMNS)} FROM payments WHERE 1=1"
        args: list[Any] = []
        if status is not None:
            sql += " AND status = ?"
            args.append(Status(status).value)
        if host is not None:
            sql += " AND host = ?"
            args.append(host)
        if since is not None:
            sql += " AND created_at >= ?"
            args.append(since.timestamp())
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._lock:
            return [self._row(r) for r in self._exec(sql, args).fetchall()]

    def spent_msat(self, *, host: str | None = None, since: datetime | None = None) -> int:
        with self._lock:
            return self._spent(host, since)

    def close(self) -> None:
        with self._lock:
            self._db.close()
