"""The ledger's contract and the logic every backend shares.

Write-ahead: a payment is `reserve`d (written `pending`, with every budget checked in the same
transaction) before the wallet is called, then `settle`d or `fail`ed. A pending row whose
outcome is unknown is reconciled with the wallet, never paid again.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from httpay.amounts import FEES_ADVICE, fee_cap_text, fmt_msat
from httpay.errors import PaymentRefused
from httpay.hosts import host_parts
from httpay.ledger.models import Receipt, Refusal, Status, receipts_view
from httpay.policy import Limit
from httpay.view import View

COLUMNS = (
    "id", "status", "created_at", "updated_at", "host", "url", "protocol", "method", "offer_id", "offer_title",
    "offer_amount", "offer_currency", "credits", "payment_hash", "amount_msat", "fee_msat", "wallet",
    "challenge_key", "reason", "preimage", "wallet_id", "tags", "usd_per_btc",
)


# Where a token kept with a pending row takes its preimage: 64 hex characters as a preimage is (a
# dialect checks its form), no real preimage (it is a hash of these words) nor part of a macaroon's text.
def held_key(scope: str, variant: str | None) -> str:
    """Where a credential of `scope` is stored: the scope itself, or, for one of several kinds the
    scope's service issues (a Challenge's `variant`), the scope and its variant ("https://h#svc")."""
    return scope if not variant else f"{scope}#{variant}"


def split_key(key: str) -> tuple[str, str | None]:
    """(scope, variant) of a stored credential's key: `held_key` read back (None: the scope's own)."""
    scope, _, variant = key.partition("#")
    return scope, variant or None


def host_matches(recorded: str, host: str, *, every_port: bool = True) -> bool:
    """Whether a recorded host is `host` however either is spelled (case, a trailing dot, IDNA, an IPv6
    literal): on the port `host` names, or, named without one, on any port (`every_port=False`: where
    no port was recorded)."""
    (name, port), (want, wanted_port) = host_parts(recorded), host_parts(host)
    return name == want and (port == wanted_port or (wanted_port is None and every_port))


PREIMAGE_MARK = hashlib.sha256(b"httpay: the preimage of this payment goes here").hexdigest()


@dataclass(frozen=True)
class Intent:
    """What is about to be paid: everything the ledger writes in the pending row."""

    host: str
    url: str
    protocol: str
    method: str
    amount_msat: int
    payment_hash: str | None
    offer_id: str | None = None
    offer_title: str | None = None
    offer_amount: int | None = None
    offer_currency: str | None = None
    credits: int | None = None
    wallet: str | None = None          # the wallet's kind ("lnbits", "lnd"): for people
    challenge_key: str | None = None
    not_before: datetime | None = None  # when the request met its 402 (the ledger's clock): settled since then count
    max_fee_msat: int = 0              # the most the wallet may spend on fees: held until settled, counted in budgets
    wallet_id: str | None = None       # the wallet's stable identity: only that wallet reconciles the row
    call_id: int | None = None         # the call (`Ledger.call`) this pays for: one live payment per call
    # the call's key is the caller's own: no other call under it may pay within this window (None: a key httpay made)
    key_window: timedelta | None = None
    tags: Mapping[str, str] = field(default_factory=dict)  # who spent it ("agent": "research"): attribution, budgets
    # The reusable credential this payment buys, its preimage left out (`PREIMAGE_MARK`), as JSON
    # {"scope", "value", "expires_at"}: written with the pending row, so a crash between paying and
    # storing the token loses nothing; settling the row by reconciliation restores it (`restore_token`).
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Call:
    """One call of the application (method, URL, body) as the ledger knows it: the key it issued
    for it (sent as Idempotency-Key and x402 payment id), the payment already made for it, if any,
    and the credential headers that payment presented (secret: never shown)."""

    id: int
    key: str
    fingerprint: str
    created_at: datetime
    receipt: Receipt | None = None
    credential: dict[str, str] | None = field(default=None, repr=False)

    @property
    def paid(self) -> bool:
        """A payment for this call is pending or settled: it is presented again, never made again."""
        return self.receipt is not None and self.receipt.status is not Status.FAILED


def now_utc() -> datetime:
    """This process's clock. Never compared with another process's: the ledger's `now()` is for that."""
    return datetime.now(UTC)


class Ledger(ABC):
    """Where payments are recorded. Use `httpay.open_ledger(url_or_path)` to get one."""

    url: str

    # True when the ledger's clock is this process's own clock (`time.time()`, as SQLite's is: every
    # process sharing its file runs on one machine): `now()` then costs no statement. False for a
    # database shared across machines (PostgreSQL), whose one clock every process reads.
    clock_is_local: bool = False

    # -- writes ------------------------------------------------------------------------------------
    @abstractmethod
    def reserve(self, intent: Intent, limits: Sequence[Limit] = (), *, usd_per_btc: float | None = None,
                now: datetime | None = None) -> Receipt:
        """Write a pending payment, checking every limit in the same transaction.

        Raises PaymentRefused (rule = the limit's name) when it would overspend, and
        `DuplicatePayment` when the payment hash is already recorded pending or settled.
        `now` (tz-aware; default: the clock) stamps the row and anchors the time windows, so
        imports and tests can place a payment in time without waiting.
        """

    @abstractmethod
    def settle(self, receipt_id: int, *, preimage: str, fee_msat: int = 0, amount_msat: int | None = None,
               note: str | None = None) -> Receipt:
        """Mark a payment settled with its proof; `note` becomes its reason in the same write (else the
        reason is cleared), so a payment settled with a note is one write, never two."""

    @abstractmethod
    def fail(self, receipt_id: int, reason: str) -> Receipt:
        """Mark a pending payment failed: the wallet paid nothing, the reservation is released. A row no
        longer pending (settled meanwhile) is a LedgerError and keeps its status."""

    @abstractmethod
    def note(self, receipt_id: int, reason: str) -> Receipt:
        """Attach a note (why a payment is still pending) without changing its status."""

    # -- calls: one key per call of the application, so its own retry never pays twice ---------------
    @abstractmethod
    def call(self, fingerprint: str, *, window: timedelta, key: str | None = None,
             now: datetime | None = None) -> Call:
        """The call with this fingerprint issued within `window`, with its payment and credential;
        else a new one with a fresh random key (or `key`, the caller's own Idempotency-Key). A call
        whose payment failed gets a new key: nothing was paid for it; so does one already answered."""

    @abstractmethod
    def get_call(self, call_id: int) -> Call | None:
        """The call as it stands (its payment and credential), read without taking the write lock;
        None when it is gone."""

    @abstractmethod
    def record_call(self, call_id: int, receipt_id: int, headers: dict[str, str]) -> None:
        """Keep the credential headers the call's payment presents, to present them again on a retry."""

    @abstractmethod
    def answer_call(self, call_id: int) -> None:
        """The call's answer reached the application: the call is done, the same request sent again is
        a new call (its credential is forgotten)."""

    # -- reads -------------------------------------------------------------------------------------
    @abstractmethod
    def get(self, receipt_id: int) -> Receipt: ...

    @abstractmethod
    def find(self, *, payment_hash: str | None = None, challenge_key: str | None = None) -> Receipt | None:
        """The newest non-failed payment for a hash or a challenge key."""

    @abstractmethod
    def receipts(
        self, *, limit: int | None = None, status: Status | None = None, host: str | Sequence[str] | None = None,
        since: datetime | None = None, before: int | None = None, tag: tuple[str, str] | None = None,
        after: int | None = None,
    ) -> list[Receipt]:
        """Newest first; `before` pages back: only the rows older than that id (read by the primary
        key, so the thousandth page costs what the first does); `after` pages forward instead, oldest
        first (an export streams the whole history so); `tag` ("agent", "research") keeps only the
        payments carrying it; `host` the payments to that host however a URL spelled it (case, a
        trailing dot, IDNA, an IPv6 literal), on every port ('api.example.com') or on the one it names
        ('127.0.0.1:8402'), or to any of several hosts exactly as recorded (`hosts_matching` gives them)."""

    @abstractmethod
    def spent_msat(self, *, host: str | Sequence[str] | None = None, since: datetime | None = None,
                   tag: tuple[str, str] | None = None) -> int:
        """Money committed: settled plus pending (a pending payment may have gone out). `host` as
        `receipts` reads it: a host named without a port counts on every port, as its per-host budget does."""

    def hosts_matching(self, host: str, *, every_port: bool = True) -> list[str]:
        """The hosts recorded for `host`, however each was spelled: it on the port it names or, named
        without one, on every port ('127.0.0.1' finds '127.0.0.1:8402'; `every_port=False`: only where
        no port was recorded). (A SQL ledger reads them off its host map.)"""
        return sorted({r.host for r in self.receipts() if host_matches(r.host, host, every_port=every_port)})

    # -- L402 tokens: paid credentials reused until the server answers 402 again -----------------------
    @abstractmethod
    def save_token(self, scope: str, authorization: str, *, payment_hash: str | None = None,
                   expires_at: datetime | None = None) -> None:
        """Remember the Authorization value that a payment bought for `scope` (replacing any older one)."""

    @abstractmethod
    def tokens_of(self, scope: str, *, now: datetime | None = None) -> dict[str, str]:
        """Every credential held for `scope`, its own and those of its kinds ("scope#variant", one
        host fronting several services), by where each is stored; expired ones are dropped."""

    @abstractmethod
    def restore_token(self, receipt_id: int, preimage: str) -> bool:
        """Store the reusable credential a pending payment bought (kept with its row, `Intent.token`),
        with the preimage the wallet proved it by, unless its scope holds one already: the token a
        crash lost between paying and storing it. Called before the row is settled (settling, or
        failing, a row forgets its token). True when one was stored."""

    @abstractmethod
    def token_for(self, scope: str, *, now: datetime | None = None) -> str | None:
        """The stored Authorization value for `scope`, unless it has expired (then it is dropped)."""

    @abstractmethod
    def drop_token(self, scope: str) -> bool:
        """Forget the token of `scope` (the server no longer takes it). True if there was one."""

    # The scopes this process knows hold a credential, kept by the ledger as it reads and writes them
    # (None: nothing known, ask the store). Plain data, so a driver reads it without any I/O.
    held_scopes: set[str] | None = None
    # Of those, the ones that hold one kind of a scope's credentials ("https://h#svc", the flow's
    # `held_key`), by their scope: where to look when a host issues several kinds
    held_variants: dict[str, set[str]] | None = None

    def holds_token(self, scope: str, *, fresh: bool = False) -> bool:
        """Whether a credential may be held for `scope` without asking the store (True: look).
        `fresh`: the look before paying, when another process may have stored one meanwhile."""
        return True

    def held_scopes_exact(self, *, wait: bool = True) -> bool:
        """Whether `held_scopes` is the store's own: nobody else has written it since it was read, so a
        fresh look is answered from memory. False when that cannot be told (`wait=False`: without
        waiting for another thread's statement, as an event loop may not)."""
        return False

    @abstractmethod
    def token_scopes(self) -> list[str]:
        """The scopes holding a token (never the tokens themselves)."""

    def note_refusal(self, *, host: str, url: str, rule: str, reason: str, tags: Mapping[str, str] | None = None) -> None:
        """Keep a refused payment (nothing paid) for the people who oversee: a backend without a
        place for them keeps none."""

    def refusals(self, *, limit: int = 50, before: int | None = None,
                 tag: tuple[str, str] | None = None) -> list[Refusal]:
        """The refused payments, newest first; `tag` ("agent", "research") keeps only those asked by it."""
        return []

    def spent_by_tag(self, *, since: datetime | None = None) -> list[tuple[str, str, int, int]]:
        """(tag key, tag value, payments, msat committed) for every tag, most spent first; a backend
        without a tag index sums its rows."""
        sums: dict[tuple[str, str], list[int]] = {}
        for r in self.receipts(since=since):
            if r.status is not Status.FAILED:
                for kv in r.tags.items():
                    n = sums.setdefault(kv, [0, 0])
                    n[0], n[1] = n[0] + 1, n[1] + r.total_msat
        return sorted(((k, v, n, m) for (k, v), (n, m) in sums.items()), key=lambda t: (-t[3], t[0], t[1]))

    def token_info(self) -> list[dict[str, Any]]:
        """Each held credential as a person lists it: scope, the payment that bought it, when it was
        stored and when it expires; never the credential itself."""
        return [{"scope": scope, "payment_hash": None, "created_at": None, "expires_at": None}
                for scope in self.token_scopes()]

    def totals(self, *, host: str | Sequence[str] | None = None, since: datetime | None = None,
               tag: tuple[str, str] | None = None) -> dict[str, int]:
        """Counts and sums by status (count, settled, pending, failed, settled_msat, fee_msat,
        pending_msat): what a person reads under the ledger, without a row per payment."""
        t = {"count": 0, "settled": 0, "pending": 0, "failed": 0, "settled_msat": 0, "pending_msat": 0, "fee_msat": 0}
        for r in self.receipts(host=host, since=since, tag=tag):
            t["count"] += 1
            t[r.status.value] += 1
            if r.status is Status.SETTLED:
                t["settled_msat"] += r.amount_msat
                t["fee_msat"] += r.fee_msat or 0
            elif r.status is Status.PENDING:
                t["pending_msat"] += r.amount_msat
        return t

    def pending(self) -> list[Receipt]:
        return self.receipts(status=Status.PENDING)

    def now(self) -> datetime:
        """The ledger's own clock (the database's): every time compared across processes comes from it,
        so a machine whose clock is off cannot make another pay twice or write a payment off. Where
        `clock_is_local`, that clock is this process's `time.time()`, read with no statement."""
        return now_utc()

    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __str__(self) -> str:
        rows = self.receipts(limit=20)
        lines = [f"Ledger {self.url}: {len(rows)} recent payment(s), {fmt_msat(self.spent_msat())} committed"]
        lines += [f"  {r}" for r in rows]
        return "\n".join(lines)

    def view(self, title: str | None = None, usd_per_btc: float | None = None, limit: int = 50) -> View:
        """The latest `limit` payments as a ledger table."""
        return receipts_view(self.receipts(limit=limit), title=title or f"Ledger ({self.url})", usd_per_btc=usd_per_btc)

    def __rich__(self) -> Any:
        return self.view().to_rich()

    def _repr_html_(self) -> str:
        return self.view(title="Ledger").to_html()


def over_limit(limits: Sequence[Limit], spent: dict[Limit, int], amount_msat: int, usd_per_btc: float | None,
               max_fee_msat: int = 0) -> None:
    """Raise PaymentRefused for the first limit `amount_msat` plus the fee it may cost would break."""
    for lim in limits:
        used = spent[lim]
        if used + amount_msat + max_fee_msat > lim.limit_msat:
            left = max(lim.limit_msat - used, 0)
            fee = fee_cap_text(max_fee_msat, usd_per_btc)
            raise PaymentRefused(
                f"refused: paying {fmt_msat(amount_msat, usd_per_btc)}{fee} would exceed the {lim.describe(usd_per_btc)} "
                f"({fmt_msat(used, usd_per_btc)} spent, {fmt_msat(left, usd_per_btc)} left)",
                rule=_rule_name(lim), knob=lim.knob,
                advice=("raise {knob} or wait for the window to pass" if lim.window else "raise {knob}")
                + (FEES_ADVICE if max_fee_msat and used + amount_msat <= lim.limit_msat else ""),
            )


def _rule_name(lim: Limit) -> str:
    return {"total budget": "budget", "per-host budget": "per_host", "hourly budget": "per_hour",
            "daily budget": "per_day"}.get(lim.name, lim.name)


def limit_since(lim: Limit, now: datetime) -> datetime | None:
    return now - lim.window if lim.window else None
