"""The approval queue: a payment waits here until a person says yes or no.

An agent's client blocks in `ApprovalQueue.__call__` (or awaits `aapprove`) while the person
decides elsewhere: in `httpay dashboard`, with `httpay approvals approve ID`, or from Python
with `queue.decide(...)`. The queue is a table `approvals` in a SQLite file (the ledger's own
file is fine), so the agent and the person may be different processes. No answer before the
timeout means no (a refusal that says nobody answered); a wait stopped by Ctrl-C denies its approval.

A process killed while it waits (`kill -9`, a host stopping an MCP server) cannot deny its row, so
each row carries its deadline and a heartbeat the waiting request refreshes while it polls: a
row past its deadline is "expired", one whose heartbeat went stale is "abandoned", and answering
either is refused (`ApprovalExpired`): nobody would use the answer, and nothing will be paid. A
heartbeat, not a process id: the asker and the person may be on different machines.

Their clocks may disagree, and a SQLite file has no clock of its own (each process's SQLite reads
its own machine's time), so a reader never closes a row on a comparison of the asker's times with
its own clock alone: a row that looks gone is watched for a lease, on the reader's monotonic clock,
and a heartbeat that moves meanwhile proves its request alive (answered, then, as any other).

    queue = ApprovalQueue("ledger.sqlite3")
    client = httpay.Client(wallet=w, policy=httpay.Policy(approve=queue), ledger="ledger.sqlite3")
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, closing, contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from httpay.amounts import fee_cap_text, fmt_msat, price_and_worth
from httpay.core.model import Offer
from httpay.core.model import Quote as Decision
from httpay.errors import ApprovalError, ApprovalExpired, ConfigError, LedgerError, PaymentRefused
from httpay.ledger.sqlite import connect
from httpay.policy import CANCELLED
from httpay.safe import clean, digits, get_logger, markup, mask_urls, plain
from httpay.view import Cell, Column, Row, View, row, status_cell

log = get_logger("httpay.apps.approvals")

WAITING, APPROVED, DENIED = "waiting", "approved", "denied"

EXPIRED, ABANDONED = "expired", "abandoned"  # a waiting row nobody waits for: never stored, read from its times

HEARTBEAT_S = 1.0       # how often a waiting request says it is still there
LEASE_BEATS = 3         # beats missed before its row reads as abandoned (3 s by default)
LEGACY_TIMEOUT_S = 300.0  # a row an older httpay wrote has no deadline: its askers' default timeout
SHOWN_GONE_S = 3600.0   # an expired or abandoned row is listed this long after it went, then only in `--all`

SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL CHECK (status IN ('waiting', 'approved', 'denied')),
    created_at REAL NOT NULL,
    decided_at REAL,
    host TEXT NOT NULL,
    url TEXT NOT NULL,
    offer_id TEXT,
    offer_title TEXT,
    offer_price TEXT,
    price_msat INTEGER,
    method TEXT,
    usd_per_btc REAL,
    decided_by TEXT,
    reason TEXT,
    choices TEXT,
    chosen_offer_id TEXT,
    deadline_at REAL,
    heartbeat_at REAL,
    lease_s REAL,
    fee_cap_msat INTEGER
);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, id);
"""
# added to queues made by older versions
_ADDED_COLUMNS = {"choices": "TEXT", "chosen_offer_id": "TEXT", "deadline_at": "REAL", "heartbeat_at": "REAL",
                  "lease_s": "REAL", "fee_cap_msat": "INTEGER"}

_COLUMNS = ("id", "status", "created_at", "decided_at", "host", "url", "offer_id", "offer_title", "offer_price",
            "price_msat", "method", "usd_per_btc", "decided_by", "reason", "choices", "chosen_offer_id",
            "deadline_at", "heartbeat_at", "lease_s", "fee_cap_msat")

# A waiting row someone still waits for, at the time `:now` (a row of an older httpay: by its age only).
_AWAITED = (f"COALESCE(deadline_at, created_at + {LEGACY_TIMEOUT_S}) > :now "
            "AND (heartbeat_at IS NULL OR heartbeat_at + COALESCE(lease_s, 0) >= :now)")


@dataclass(frozen=True)
class Choice:
    """One offer the service made, as a person picks among them: `fits` when the policy allows it."""

    offer_id: str
    title: str
    price: str
    fits: bool

    def to_dict(self) -> dict[str, Any]:
        return {"offer_id": self.offer_id, "title": self.title, "price": self.price, "fits": self.fits}


def _choices(decision: Decision) -> list[Choice]:
    fitting = {decision.offer.offer_id} | {o.offer_id for o in decision.alternatives}
    return [Choice(o.offer_id, o.title, str(o.price), o.offer_id in fitting) for o in decision.offers]


def _read_choices(raw: str | None) -> tuple[Choice, ...]:
    try:
        items = json.loads(raw) if raw else []
        return tuple(Choice(str(c["offer_id"]), str(c["title"]), str(c["price"]), bool(c["fits"])) for c in items)
    except (ValueError, TypeError, KeyError):
        return ()


@dataclass(frozen=True)
class Approval:
    """One payment waiting for (or given) a person's answer.

    `status` is what the table holds; `state` is what a person can do about it now: a waiting row
    past its deadline reads "expired", one whose request stopped beating "abandoned" (neither can
    be answered, and nothing will be paid for it)."""

    id: int
    status: str
    created_at: datetime
    decided_at: datetime | None
    host: str
    url: str
    offer_id: str | None
    offer_title: str | None
    offer_price: str | None
    price_msat: int | None
    method: str | None
    usd_per_btc: float | None
    decided_by: str | None
    reason: str | None
    choices: tuple[Choice, ...] = ()       # every offer the service made (approving may pick another)
    chosen_offer_id: str | None = None     # the offer the person approved instead of `offer_id`
    deadline_at: datetime | None = None    # when its request stops waiting (None: not known)
    heartbeat_at: datetime | None = None   # its waiting request's last sign of life
    lease_s: float | None = None           # how long after a heartbeat the request counts as gone
    beating: bool = False                  # its heartbeat was seen moving within its lease: alive, whatever the clocks
    fee_cap_msat: int | None = None        # the most routing fees may add to the price (None: an older httpay's row)

    def state_at(self, now: float | None = None) -> str:
        """waiting, expired or abandoned for a row not decided (at `now`, default the time now); else its status."""
        if self.status != WAITING or self.beating:
            return self.status
        now = time.time() if now is None else now
        if self.deadline_at is not None and now >= self.deadline_at.timestamp():
            return EXPIRED
        if self.heartbeat_at is not None and now > self.heartbeat_at.timestamp() + (self.lease_s or 0.0):
            return ABANDONED
        return WAITING

    @property
    def state(self) -> str:
        return self.state_at()

    @property
    def answerable(self) -> bool:
        """Does a request still wait for a person's answer (approving it may pay)?"""
        return self.state == WAITING

    def gone_at(self) -> datetime | None:
        """When its request stopped waiting, for an expired or abandoned row."""
        state = self.state
        if state == ABANDONED and self.heartbeat_at is not None:
            return datetime.fromtimestamp(self.heartbeat_at.timestamp() + (self.lease_s or 0.0), tz=UTC)
        return self.deadline_at if state == EXPIRED else None

    def why_gone(self) -> str:
        """Why nobody waits for its answer, in words ('' while somebody does)."""
        state = self.state
        if state == EXPIRED and self.deadline_at is not None:
            return f"nobody answered before its deadline, {self.deadline_at:%Y-%m-%d %H:%M:%S} UTC"
        if state == ABANDONED and self.heartbeat_at is not None:
            return f"the request that asked stopped (no sign of it since {self.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC)"
        return ""

    @property
    def price(self) -> str:
        """'$0.01 ≈ 10 sat ($0.01) + up to 5 sat ($0.005) in fees': the offer's price, what the invoice
        should cost, and the fees the wallet may add, which approving it allows too."""
        sat = fmt_msat(self.price_msat, self.usd_per_btc) if self.price_msat is not None else "? sat"
        fees = fee_cap_text(self.fee_cap_msat, self.usd_per_btc)
        return f"{price_and_worth(self.offer_price, sat)}{fees}" if self.offer_price else sat + fees

    def __str__(self) -> str:
        what = f"{self.offer_id} '{self.offer_title}' ({self.price}) by {self.method} for {self.host}"
        if why := self.why_gone():
            return f"approval #{self.id} {self.state}: {why}; nobody waits for an answer, nothing will be paid for {what}"
        who = f" by {self.decided_by}" if self.decided_by else ""
        why = f" ({self.reason})" if self.reason else ""
        instead = ""
        if self.chosen_offer_id:  # what is approved is the offer chosen, at its price; the one asked is named after
            chosen = next((c for c in self.choices if c.offer_id == self.chosen_offer_id), None)
            instead = f", instead of {self.offer_id} '{self.offer_title}' ({self.price})"
            what = (f"{chosen.offer_id} '{chosen.title}' ({chosen.price}) for {self.host}" if chosen is not None
                    else f"{self.chosen_offer_id} for {self.host}")
        return f"approval #{self.id} {self.status}{who}{why}: pay {what}{instead}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able. `status` is where the approval stands now (a waiting row nobody waits for any more
        reads "expired" or "abandoned", never "waiting"); `state` says the same (kept for scripts that read it)."""
        state = self.state
        return {
            "id": self.id, "status": state, "state": state, "answerable": state == WAITING,
            "created_at": self.created_at.isoformat(),
            "deadline_at": self.deadline_at.isoformat() if self.deadline_at else None,
            "heartbeat_at": self.heartbeat_at.isoformat() if self.heartbeat_at else None,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None, "host": self.host,
            "url": mask_urls(self.url), "offer_id": self.offer_id, "offer_title": self.offer_title,
            "offer_price": self.offer_price, "price_msat": self.price_msat, "fee_cap_msat": self.fee_cap_msat,
            "price": self.price, "method": self.method,
            "decided_by": self.decided_by, "reason": self.reason,
            "choices": [c.to_dict() for c in self.choices], "chosen_offer_id": self.chosen_offer_id,
        }

    def view(self) -> View:
        """This approval as a one-row approvals table (with the other offers it may be approved with)."""
        return approvals_view([self])

    def __rich__(self) -> Any:
        return self.view().to_rich()

    def _repr_html_(self) -> str:
        return self.view().to_html()


def unfit_note(a: Approval) -> str | None:
    """What a person is told on approving another offer the policy would refuse (marked "over a limit"):
    the paying request decides again and refuses it if it still does not fit. None when it fit."""
    unfit = [c for c in a.choices if c.offer_id == a.chosen_offer_id and not c.fits] if a.chosen_offer_id else []
    if not unfit:
        return None
    return (f"{clean(unfit[0].offer_id, 80)} was over a limit of the policy when the payment was asked for; the paying "
            "request decides again with every limit and refuses it if it still does not fit (nothing is paid then)")


APPROVALS_WIDE = 100  # a terminal narrower than this is shown the approvals without the "asked" column
MAX_CHOICES_SHOWN = 8  # a service may list hundreds of offers; a view lists this many and counts the rest


def _other_choices(a: Approval) -> tuple[list[Row], int]:
    """Rows for the other offers `a` may be approved with (`httpay approvals approve ID --offer
    OFFER_ID`), marked chosen / over a limit; and how many more were not listed."""
    others = [c for c in a.choices if c.offer_id != a.offer_id]
    rows = []
    for c in others[:MAX_CHOICES_SHOWN]:
        marks = [m for m, on in (("chosen", c.offer_id == a.chosen_offer_id), ("over a limit", not c.fits)) if on]
        price = clean(c.price, 40) + (f" ({', '.join(marks)})" if marks else "")
        rows.append(row("", "", "", "", Cell(f"or --offer {clean(c.offer_id, 80)}: '{clean(c.title, 80)}'", limit=300),
                        Cell(price, limit=200), "", style="dim", css_class="httpay-choice"))
    return rows, max(len(others) - MAX_CHOICES_SHOWN, 0)


def approvals_view(approvals: Iterable[Approval], title: str = "Approvals") -> View:
    """One row per approval; under it, a dim row per other offer it may be approved with instead."""
    columns = (Column("#", align="right", wrap=False), Column("asked (UTC)", wrap=False), Column("status", wrap=False),
               Column("host", wrap=False, max_width=18), Column("offer", ratio=2, min_width=18),
               Column("price", ratio=1, min_width=12),
               Column("answer"))
    rows: list[Row] = []
    now = time.time()
    for a in approvals:
        state = a.state_at(now)
        if state in (EXPIRED, ABANDONED):  # listed, so a person sees the request is gone, not still asking
            answer = Cell("nobody waits", hint=f"{a.why_gone()}; nothing will be paid", style="dim")
        elif state == WAITING:
            answer = Cell(f"due {a.deadline_at:%H:%M:%S}" if a.deadline_at else "",
                          hint=f"its request waits until {a.deadline_at:%Y-%m-%d %H:%M:%S} UTC" if a.deadline_at else "")
        else:
            answer = Cell((a.decided_by or "") + (f" ({a.reason})" if a.reason else ""))
        rows.append(row(str(a.id), Cell(a.created_at.strftime("%m-%d %H:%M:%S"), hint=f"{a.created_at:%Y-%m-%d %H:%M:%S}"),
                        status_cell(state), a.host, f"{clean(a.offer_title or '')} ({clean(a.offer_id, 80)})",
                        a.price, answer))
        if state != WAITING and a.status == WAITING:
            continue  # its other offers cannot be chosen either
        others, more = _other_choices(a)
        rows += others
        if more:
            rows.append(row("", "", "", "", Cell(f"… and {more} more offers (`httpay approvals --json`)"), "", "",
                            style="dim", css_class="httpay-choice"))
    wide = View(title, columns, tuple(rows), empty="nothing waiting for approval", dense=True, name="approvals")
    # a standard terminal drops when it was asked, so the answer (due when, or nobody waits) keeps its room
    narrow = replace(wide, columns=(columns[0], columns[2], replace(columns[3], max_width=16), columns[4],
                                    replace(columns[5], max_width=12), replace(columns[6], min_width=12, wrap=False)),
                     rows=tuple(replace(r, cells=(*r.cells[:1], *r.cells[2:])) for r in rows))
    return replace(wide, narrow=narrow, narrow_below=APPROVALS_WIDE)


Ticker = Callable[[float], None]
Progress = Callable[[Approval], AbstractContextManager[Ticker]]


@contextmanager
def _quiet(approval: Approval) -> Iterator[Ticker]:
    yield lambda elapsed: None


# In-process waiters wake at once on `decide`; other processes are seen at the next poll.
_conditions: dict[str, threading.Condition] = {}
_conditions_lock = threading.Lock()


def _condition(key: str) -> threading.Condition:
    with _conditions_lock:
        return _conditions.setdefault(key, threading.Condition())


APPROVALS_ENV = "HTTPAY_APPROVALS"  # where `httpay get --ask`, `mcp --ask`, `approvals` and `dashboard` keep the queue


def named_queue(flag: str | None = None, env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The approval queue a person named apart from the ledger, and what named it, by the one rule
    every command that asks or answers approvals follows (`httpay get --ask`, `httpay mcp --ask`,
    `httpay approvals`, `httpay dashboard`), so they all meet in one place: the --approvals flag,
    else HTTPAY_APPROVALS. None: the queue is in the ledger's own file."""
    if flag:
        return flag, "--approvals"
    named = (os.environ if env is None else env).get(APPROVALS_ENV, "").strip()
    return (named, APPROVALS_ENV) if named else None


def queue_path(where: Any) -> str:
    """The SQLite file for the approvals table, from a path, a sqlite URL or a SQLite ledger."""
    from httpay.ledger import Ledger

    if isinstance(where, Ledger):
        path = getattr(where, "path", None)
        if path is None:
            raise ConfigError(
                f"the approval queue keeps its table in SQLite, and {type(where).__name__} is not SQLite; "
                "give ApprovalQueue a SQLite file path instead (any writable file works)"
            )
        return str(path)
    if where is None:
        from httpay.ledger import default_ledger_path

        return str(default_ledger_path())
    text = os.fspath(where) if not isinstance(where, str) else where
    if text.startswith(("postgres://", "postgresql://")):
        raise ConfigError(
            "the approval queue keeps its table in SQLite only; give it a SQLite file path "
            "(e.g. --approvals ~/.local/share/httpay/apps/approvals.sqlite3) even when the ledger is PostgreSQL"
        )
    return text.removeprefix("sqlite:///")


def _approval_id(value: object) -> int:
    """An approval's number as given by a person, a page or a script: a whole number the queue can
    hold, else ApprovalError saying so (never a ValueError, or SQLite's OverflowError)."""
    number = value if isinstance(value, int) and not isinstance(value, bool) else digits(str(value).strip(), 18)
    if number is None or not 0 < number < 2**63:
        raise ApprovalError(f"{clean(str(value), 40)!r} is not an approval number; `httpay approvals list` shows them")
    return number


class ApprovalQueue:
    """Hold each payment the policy would make until a person approves or denies it.

    Use the queue itself as `Policy(approve=queue)` with `httpay.Client`, and `queue.aapprove`
    with `httpay.AsyncClient`. It answers True (approved) or False (denied); nobody answering
    within `timeout_s` is a PaymentRefused saying so. `progress` shows the wait (the CLI passes a spinner); the wait is also
    logged. While it waits it writes a heartbeat every `heartbeat_s`; a row whose heartbeat is
    `LEASE_BEATS` beats old reads as abandoned, and answering it is refused.
    """

    def __init__(self, where: Any = None, *, timeout_s: float = 300.0, poll_s: float = 0.2,
                 progress: Progress | None = None, heartbeat_s: float = HEARTBEAT_S) -> None:
        for name, v in (("timeout_s", timeout_s), ("poll_s", poll_s), ("heartbeat_s", heartbeat_s)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"ApprovalQueue({name}=...) must be a positive number of seconds, got {v!r:.40}")
        self.path = queue_path(where)
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.progress: Progress = progress or _quiet
        # httpay's own default place (the ledger's file) is made as the ledger makes it: the first
        # `httpay get --ask` on a machine asks; a folder a person named must exist (a typo is no queue)
        own_place = where is None and not os.environ.get("HTTPAY_LEDGER")
        self._db = connect(self.path, SCHEMA, "approval queue", make_folder=own_place)
        self._lock = threading.RLock()
        self._seen: dict[int, tuple[float, float, bool]] = {}  # id -> (heartbeat, monotonic when read, moved)
        self._upgrade()
        key = self.path if self.path == ":memory:" else str(Path(self.path).expanduser().resolve())
        self._cond = _condition(f"{key}#{id(self)}" if self.path == ":memory:" else key)

    def __repr__(self) -> str:
        return f"ApprovalQueue({self.path!r}, timeout_s={self.timeout_s:g})"

    # -- storage -------------------------------------------------------------------------------
    def _run(self, sql: str, args: tuple[Any, ...] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                return [dict(r) for r in self._db.execute(sql, args).fetchall()]
            except sqlite3.Error as exc:
                raise LedgerError(f"approval queue {self.path}: {exc}") from None

    def _upgrade(self) -> None:
        """Add the columns a queue made by an older httpay lacks (choosing another offer, the deadline
        and heartbeat; the rows it wrote keep none: they are read by their age)."""
        have = {r["name"] for r in self._run("PRAGMA table_info(approvals)")}
        for name, kind in _ADDED_COLUMNS.items():
            if name not in have:
                try:
                    self._run(f"ALTER TABLE approvals ADD COLUMN {name} {kind}")
                except LedgerError:
                    if name not in {r["name"] for r in self._run("PRAGMA table_info(approvals)")}:
                        raise  # not another process adding it at the same moment

    def _row(self, d: dict[str, Any]) -> Approval:
        a = self._parse(d)
        return replace(a, beating=True) if self._beating(a) else a

    def _beating(self, a: Approval) -> bool:
        """Whether this queue has read `a`'s heartbeat change within its lease, timed on this process's
        monotonic clock only: proof its request is alive that no difference between two machines'
        clocks can fake or hide (a first read proves nothing: the clocks decide then)."""
        if a.status != WAITING or a.heartbeat_at is None:
            return False
        beat, now = a.heartbeat_at.timestamp(), time.monotonic()
        with self._lock:
            seen = self._seen.get(a.id)
            if seen is None or seen[0] != beat:
                seen = self._seen[a.id] = (beat, now, seen is not None)
                if len(self._seen) > 10_000:  # bounded: the oldest ids are forgotten first
                    del self._seen[min(self._seen)]
        return seen[2] and now - seen[1] <= (a.lease_s or self.lease_s)

    @staticmethod
    def _parse(d: dict[str, Any]) -> Approval:
        d = dict(d)
        d["choices"] = _read_choices(d.get("choices"))
        d["created_at"] = datetime.fromtimestamp(d["created_at"], tz=UTC)
        d["decided_at"] = datetime.fromtimestamp(d["decided_at"], tz=UTC) if d["decided_at"] else None
        if d["deadline_at"] is None:  # written by an older httpay, whose askers waited 300 s unless told otherwise
            d["deadline_at"] = d["created_at"].timestamp() + LEGACY_TIMEOUT_S
        d["deadline_at"] = datetime.fromtimestamp(d["deadline_at"], tz=UTC)
        d["heartbeat_at"] = datetime.fromtimestamp(d["heartbeat_at"], tz=UTC) if d["heartbeat_at"] else None
        return Approval(**d)

    @property
    def lease_s(self) -> float:
        """How long after its last heartbeat a waiting request counts as gone: a few beats (polls
        longer than a beat are beats), so one slow write is not taken for a dead request."""
        return LEASE_BEATS * max(self.heartbeat_s, self.poll_s)

    def add(self, decision: Decision) -> Approval:
        """Write a waiting approval for `decision` (what `__call__` does before it waits), due in
        `timeout_s` and alive for `lease_s` unless its waiting request beats."""
        now = time.time()
        rows = self._run(
            "INSERT INTO approvals (status, created_at, host, url, offer_id, offer_title, offer_price, price_msat, "
            "method, usd_per_btc, choices, deadline_at, heartbeat_at, lease_s, fee_cap_msat) "
            f"VALUES ('waiting', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {', '.join(_COLUMNS)}",
            (now, decision.host, mask_urls(decision.url), decision.offer.offer_id, decision.offer.title,
             str(decision.offer.price), decision.price_msat, decision.method, decision.usd_per_btc,
             json.dumps([c.to_dict() for c in _choices(decision)]), now + self.timeout_s, now, self.lease_s,
             decision.fee_cap_msat),
        )
        return self._row(rows[0])

    def _beat(self, approval_id: int) -> None:
        """Say the request waiting for `approval_id` is still there. A write that fails (the file
        busy) is tried at the next beat: the lease spans several."""
        try:
            self._run("UPDATE approvals SET heartbeat_at = ? WHERE id = ? AND status = 'waiting'",
                      (time.time(), approval_id))
        except LedgerError as exc:
            log.debug("approval #%d: heartbeat not written (%s)", approval_id, exc)

    def get(self, approval_id: int) -> Approval:
        rows = self._run(f"SELECT {', '.join(_COLUMNS)} FROM approvals WHERE id = ?", (_approval_id(approval_id),))
        if not rows:
            raise ApprovalError(f"no approval #{approval_id} in {self.path}; `httpay approvals list` shows the waiting ones")
        return self._row(rows[0])

    def pending(self) -> list[Approval]:
        """Approvals a request still waits on (a person may answer them), oldest first."""
        # and those gone lately by this machine's clock: read, so a heartbeat that moves is seen (`beating`)
        rows = self._run(f"SELECT {', '.join(_COLUMNS)} FROM approvals WHERE status = 'waiting' AND "
                         f"({_AWAITED} OR heartbeat_at > :now - {SHOWN_GONE_S}) ORDER BY id", {"now": time.time()})
        return [a for a in map(self._row, rows) if a.answerable]

    def unanswerable(self, within_s: float = SHOWN_GONE_S) -> list[Approval]:
        """Approvals still written as waiting that nobody waits on any more (expired, abandoned), gone
        within the last `within_s` seconds, oldest first: shown, so a person sees the request is gone."""
        now = time.time()
        rows = self._run(f"SELECT {', '.join(_COLUMNS)} FROM approvals WHERE status = 'waiting' AND NOT ({_AWAITED}) "
                         "ORDER BY id DESC LIMIT 500", {"now": now})
        gone = [a for a in map(self._row, rows) if (at := a.gone_at()) is not None and at.timestamp() > now - within_s]
        return gone[::-1]

    def recent(self, limit: int = 20) -> list[Approval]:
        """The newest approvals, decided or not."""
        rows = self._run(f"SELECT {', '.join(_COLUMNS)} FROM approvals ORDER BY id DESC LIMIT ?", (int(limit),))
        return [self._row(r) for r in rows]

    def decide(self, approval_id: int, approve: bool, by: str, reason: str | None = None, *,
               offer_id: str | None = None) -> Approval:
        """Record a person's answer; `offer_id` approves another of the service's offers instead. The
        paying request then decides again for that offer with every limit, exactly as for its own
        choice. Raises ApprovalError if the id is unknown, already decided, or the offer was not made;
        ApprovalExpired if no request waits for the answer any more (the approval is closed then)."""
        if offer_id is not None:
            current = self.get(approval_id)
            if not approve:
                raise ApprovalError("an offer is chosen only when approving; deny takes no offer")
            if offer_id not in {c.offer_id for c in current.choices}:
                made = ", ".join(c.offer_id for c in current.choices) or "none recorded"
                raise ApprovalError(f"approval #{approval_id} has no offer {offer_id[:60]!r}; the service offered {made}")
        only = _AWAITED
        for _ in range(3):  # a heartbeat landing between two writes makes it answerable again
            if (decided := self._set(approval_id, approve, by, reason, offer_id, only=only)) is not None:
                self._woken(decided)
                return decided
            current = self.get(approval_id)  # raises for an unknown id
            if current.status == DENIED and current.decided_by in ("abandoned", "timeout"):  # closed, never answered
                state = ABANDONED if current.decided_by == "abandoned" else EXPIRED
                raise ApprovalExpired(f"approval #{approval_id} is closed: {current.reason or 'nobody answered'}, "
                                      "so nobody waits for an answer and nothing will be paid for it",
                                      approval_id=current.id, state=state)
            if current.status != WAITING:
                raise ApprovalError(f"approval #{approval_id} was already {current.status}"
                                    + (f" by {current.decided_by}" if current.decided_by else ""))
            if current.state != WAITING and (current := self._watch(current)).beating:
                only = "1"  # its request beats: alive, though this machine's clock says otherwise
                continue
            if current.state != WAITING and (refusal := self._unawaited(current, by)) is not None:
                raise refusal
        raise ApprovalError(f"approval #{approval_id} changed while it was being answered; try again")

    def _set(self, approval_id: int, approve: bool, by: str, reason: str | None, offer_id: str | None = None, *,
             only: str = "1") -> Approval | None:
        """Write an answer to a row still waiting and matching the SQL condition `only` (`_AWAITED`:
        a request waits on it); None if there was no such row."""
        rows = self._run(
            "UPDATE approvals SET status = :status, decided_at = :now, decided_by = :by, reason = :reason, "
            f"chosen_offer_id = :offer WHERE id = :id AND status = 'waiting' AND ({only}) "
            f"RETURNING {', '.join(_COLUMNS)}",
            {"status": APPROVED if approve else DENIED, "now": time.time(), "by": by[:100],
             "reason": reason[:200] if reason else None, "offer": offer_id, "id": _approval_id(approval_id)},
        )
        return self._row(rows[0]) if rows else None

    def _watch(self, a: Approval) -> Approval:
        """`a` read again for up to its lease: returned once its heartbeat moves (`beating`), it is
        answered, or the lease passed with no sign of its request (then it is gone, on one clock)."""
        end = time.monotonic() + (a.lease_s or self.lease_s)
        while a.heartbeat_at is not None and a.status == WAITING and not a.beating and time.monotonic() < end:
            time.sleep(min(self.poll_s, max(end - time.monotonic(), 0.0)))
            a = self.get(a.id)
        return a

    def _unawaited(self, a: Approval, by: str) -> ApprovalExpired | None:
        """The refusal of an answer nobody waits for; the row is closed as denied (as its request would
        have closed it), so nobody is offered it again and a request that was only paused pays nothing.
        None if the row changed meanwhile (answered, or its request beat again)."""
        why, state = a.why_gone(), a.state
        person = clean(by, 60)
        closer, reason = (("timeout", f"timed out before {person} answered") if state == EXPIRED else
                          ("abandoned", f"its request stopped before {person} answered"))
        if (closed := self._set(a.id, False, closer, reason, only=f"NOT ({_AWAITED})")) is None:
            return None
        self._woken(closed)
        return ApprovalExpired(f"approval #{a.id} is {state}: {why}, so nobody waits for an answer and nothing will "
                               f"be paid for it; it is closed as denied (`httpay approvals` lists those still waiting)",
                               approval_id=a.id, state=state)

    def _woken(self, decided: Approval) -> None:
        log.info("approval #%d %s by %s", decided.id, decided.status, decided.decided_by)
        with self._cond:
            self._cond.notify_all()

    def _close(self, approval_id: int, by: str, reason: str) -> Approval | None:
        """Deny a waiting approval its own request stops waiting for (None: a person answered at the
        last moment, and their answer stands)."""
        if (closed := self._set(approval_id, False, by, reason)) is not None:
            self._woken(closed)
        return closed

    def _unanswered(self, a: Approval, decision: Decision) -> PaymentRefused:
        """No answer in time is a no, said as such: the person should know nobody was asked in vain."""
        return PaymentRefused(f"refused: nobody answered approval #{a.id} within {self.timeout_s:g} s "
                              f"({clean(decision, 300)}); it is recorded as denied", rule="approval",
                              offers=decision.offers, knob="approval_timeout",
                              advice="answer sooner (`httpay approvals`, the dashboard) or raise {knob}")

    # -- the approver --------------------------------------------------------------------------
    def _answer(self, a: Approval, decision: Decision) -> bool | Offer:
        """True/False, or the service's `Offer` the person chose instead (the flow re-decides it)."""
        if a.status == DENIED:
            log.warning("approval #%d denied%s%s", a.id, f" by {a.decided_by}" if a.decided_by else "",
                        f" ({a.reason})" if a.reason else "")
        if a.status == APPROVED and a.chosen_offer_id and a.chosen_offer_id != decision.offer.offer_id:
            return next((o for o in decision.offers if o.offer_id == a.chosen_offer_id), False)
        return a.status == APPROVED

    def _wait(self, decision: Decision) -> Generator[float, None, bool | Offer]:
        """The waiting, written once for both callers: yields how long to sleep before looking again,
        returns the answer (True = pay, an Offer = pay that one instead) once a person decided or the
        timeout passed (False)."""
        a = self.add(decision)
        try:
            log.info("approval #%d waiting (up to %g s) for a person: %s; answer with `httpay approvals approve %d` "
                     "(or deny) or in `httpay dashboard`", a.id, self.timeout_s, decision, a.id)
            start = beat = time.monotonic()
            with self.progress(a) as tick:
                while True:
                    current = self.get(a.id)
                    elapsed = time.monotonic() - start
                    if current.status == DENIED and current.decided_by == "timeout":  # closed as expired by a reader
                        raise self._unanswered(current, decision)
                    if current.status != WAITING:
                        return self._answer(current, decision)
                    if elapsed >= self.timeout_s:
                        if (expired := self._close(a.id, "timeout", "timed out")) is not None:
                            raise self._unanswered(expired, decision)
                        return self._answer(self.get(a.id), decision)
                    if time.monotonic() - beat >= self.heartbeat_s:
                        self._beat(a.id)
                        beat = time.monotonic()
                    tick(elapsed)
                    yield min(self.poll_s, self.timeout_s - elapsed)
        except BaseException:
            # the asking request stopped however it stopped: closed at a sleep (a cancelled task), or
            # Ctrl-C / SIGTERM landing in the wait's own work, even before its first sleep. Nobody waits
            # now, so the row is closed (a no-op when it was answered or timed out meanwhile).
            with suppress(Exception):
                self._close(a.id, "abandoned", "the request that asked was stopped")
            raise

    def __call__(self, decision: Decision) -> bool | Offer:
        """Block until a person answers (True = pay, an Offer = pay that one; False: denied).
        PaymentRefused when nobody answered within `timeout_s`; an interrupted wait (Ctrl-C, or the
        caller's `CANCELLED` saying so: an MCP tool call its host cancelled) denies the approval,
        so it is not left waiting for an answer nobody will use, and nothing is paid."""
        cancelled = CANCELLED.get()
        with closing(_Steps(self._wait(decision))) as waiting:
            while (delay := waiting.delay()) is not None:
                if cancelled is not None and cancelled():
                    raise PaymentRefused("refused: the request was cancelled while it waited for a person's "
                                         "approval; nothing was paid", rule="approval")
                with self._cond:  # woken early when a decision is made in this process
                    self._cond.wait(delay)
            return waiting.answer

    async def aapprove(self, decision: Decision) -> bool | Offer:
        """The async twin of calling the queue: `Policy(approve=queue.aapprove)` with AsyncClient (a
        cancelled task denies its approval)."""
        with closing(_Steps(self._wait(decision))) as waiting:
            while (delay := waiting.delay()) is not None:
                await asyncio.sleep(delay)
            return waiting.answer

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Steps:
    """`ApprovalQueue._wait` driven step by step, the same by both callers: `delay()` is how long to
    sleep before looking again, None once `answer` is known; closing it stops the wait (denied)."""

    def __init__(self, steps: Generator[float, None, bool | Offer]) -> None:
        self._steps = steps
        self.answer: bool | Offer = False

    def delay(self) -> float | None:
        try:
            return next(self._steps)
        except StopIteration as done:
            self.answer = done.value
            return None

    def close(self) -> None:
        self._steps.close()


def lines(console: Any, every_s: float = 10.0) -> Progress:
    """A `progress` for ApprovalQueue without a terminal: a line when the wait starts and one every
    `every_s` seconds, so a script's log shows that the request waits for a person, and for how long."""

    @contextmanager
    def show(a: Approval) -> Iterator[Ticker]:
        what = plain(f"approval #{a.id}: {a.offer_title or a.offer_id} ({a.price}) for {a.host}", 300)
        console.print(plain(f"· waiting for {what}; approve with `httpay approvals approve {a.id}` or in "
                            "`httpay dashboard`", 400))
        last = [0.0]

        def tick(elapsed: float) -> None:
            if elapsed - last[0] >= every_s:
                last[0] = elapsed
                m, s = divmod(int(elapsed), 60)
                console.print(plain(f"· still waiting for approval #{a.id} ({m}:{s:02d})", 200))

        yield tick

    return show


def spinner(console: Any) -> Progress:
    """A `progress` for ApprovalQueue: a rich spinner with the elapsed time (used by the CLI in a terminal)."""

    @contextmanager
    def show(a: Approval) -> Iterator[Ticker]:
        what = markup(f"approval #{a.id}: {a.offer_title or a.offer_id} ({a.price}) for {a.host}", 300)
        hint = f"approve with `httpay approvals approve {a.id}` or in `httpay dashboard`"
        with console.status(f"waiting for {what} — 0:00 — {hint}") as status:
            def tick(elapsed: float) -> None:
                m, s = divmod(int(elapsed), 60)
                status.update(f"waiting for {what} — {m}:{s:02d} — {hint}")

            yield tick

    return show
