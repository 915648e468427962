"""What a fleet needs from the ledger (issue 15), on SQLite and a real PostgreSQL server:
a ledger made by an older httpay gains the wallet identity column; rows are stamped by the
ledger's clock, not the process's; only the wallet that made a payment reconciles it; clients
of one process share one PostgreSQL pool, so 100 of them start within the server's default
100 connections; nothing lives in a session across statements (PgBouncer transaction mode)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

import httpay
from httpay.ledger import Intent, Ledger, Status, open_ledger
from httpay.ledger.sql import TABLE
from httpay.policy import Limit
from httpay.reconcile import reconcile, reconcile_one
from httpay.wallets.base import Payment, PaymentStatus, Wallet, fingerprint


def intent(n: int = 1, **kw: object) -> Intent:
    base: dict[str, object] = {"host": "a.example", "url": "https://a.example/x", "protocol": "l402-v0.2",
                               "method": "lightning", "amount_msat": 10_000, "payment_hash": f"{n:064x}",
                               "wallet": "node", "max_fee_msat": 1_000}
    base.update(kw)
    return Intent(**base)  # type: ignore[arg-type]


class NodeWallet(Wallet):
    """A wallet of kind "node" with its own identity; it knows only the payments it made."""

    name = "node"
    network = "regtest"

    def __init__(self, ident: str | None, paid: dict[str, str] | None = None) -> None:
        self._ident = ident
        self.paid = paid or {}  # payment hash -> preimage
        self.lookups: list[str] = []

    @property
    def identity(self) -> str | None:
        return self._ident

    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Payment:
        raise NotImplementedError

    def lookup(self, payment_hash: str) -> Payment | None:
        self.lookups.append(payment_hash)
        pre = self.paid.get(payment_hash)
        return None if pre is None else Payment(payment_hash, PaymentStatus.SETTLED, 10_000, 500, pre)


# -- 1. a payment is reconciled only through the wallet that made it ------------------------------------------
def test_another_wallet_of_the_same_kind_never_writes_a_payment_off(any_ledger: Ledger) -> None:
    row = any_ledger.reserve(intent(wallet_id="node:A"))
    other, mine = NodeWallet("node:B"), NodeWallet("node:A")
    [out] = reconcile(any_ledger, other, grace_s=0)  # asked, for a proof only: its silence proves nothing
    assert out.outcome == "other_wallet" and other.lookups == [row.payment_hash]
    assert "node:A" in out.detail and "node:B" in out.detail and "stays pending and counted" in out.detail
    assert any_ledger.get(row.id).status is Status.PENDING and any_ledger.spent_msat() == 11_000
    [out] = reconcile(any_ledger, mine, grace_s=0)  # the wallet that made it has no record: nothing was paid
    assert out.outcome == "failed" and any_ledger.spent_msat() == 0


def test_the_owner_settles_with_the_real_fee(any_ledger: Ledger) -> None:
    import hashlib

    pre = "11" * 32
    h = hashlib.sha256(bytes.fromhex(pre)).hexdigest()
    row = any_ledger.reserve(intent(payment_hash=h, wallet_id="node:A"))
    [out] = reconcile(any_ledger, NodeWallet("node:A", {h: pre}), grace_s=0)
    assert out.outcome == "settled" and out.receipt.fee_msat == 500 and any_ledger.spent_msat() == 10_500
    assert any_ledger.get(row.id).status is Status.SETTLED


def test_a_wallet_that_proves_it_paid_settles_the_row_whatever_identity_it_has_now(any_ledger: Ledger) -> None:
    """The wallet that made a payment, reached at another address, has another identity: its proof
    (a preimage of the row's hash) settles the row all the same, and the budget keeps counting it."""
    import hashlib

    pre = "33" * 32
    h = hashlib.sha256(bytes.fromhex(pre)).hexdigest()
    row = any_ledger.reserve(intent(payment_hash=h, wallet_id="node:A@127.0.0.1"))
    [out] = reconcile(any_ledger, NodeWallet("node:A@localhost", {h: pre}), grace_s=0)
    assert out.outcome == "settled" and "proves it paid" in out.detail
    assert any_ledger.get(row.id).status is Status.SETTLED and any_ledger.spent_msat() == 10_500


def test_a_row_without_identity_is_settled_on_proof_but_never_written_off_by_an_identified_wallet(
        any_ledger: Ledger) -> None:
    import hashlib

    pre = "22" * 32
    h = hashlib.sha256(bytes.fromhex(pre)).hexdigest()
    unknown = any_ledger.reserve(intent(1))
    proven = any_ledger.reserve(intent(payment_hash=h))
    outs = {o.receipt.id: o for o in reconcile(any_ledger, NodeWallet("node:B", {h: pre}), grace_s=0)}
    assert outs[unknown.id].outcome == "other_wallet" and "unrecorded identity" in outs[unknown.id].detail
    assert outs[proven.id].outcome == "settled"
    # an adapter without identity keeps the old rule: it is the only wallet of its kind
    [legacy] = reconcile(any_ledger, NodeWallet(None), grace_s=0)
    assert legacy.outcome == "failed"


def test_wallet_identities_are_stable_distinct_and_not_secrets() -> None:
    a = httpay.DemoWallet("http://127.0.0.1:1", "secret-key-a")
    assert a.identity == httpay.DemoWallet("http://127.0.0.1:1/", "secret-key-a").identity
    assert a.identity != httpay.DemoWallet("http://127.0.0.1:1", "secret-key-b").identity
    assert a.identity != httpay.DemoWallet("http://127.0.0.2:1", "secret-key-a").identity
    assert a.identity.startswith("demo:") and "secret" not in a.identity
    lnbits = httpay.LNbitsWallet("https://lnbits.example", "admin-key-1")
    assert lnbits.identity.startswith("lnbits:") and "admin-key-1" not in lnbits.identity
    assert lnbits.identity != httpay.LNbitsWallet("https://lnbits.example", "admin-key-2").identity
    assert fingerprint("x", "p") == fingerprint("x", "p") != fingerprint("x", "q")


# -- 2. one clock: the ledger's ----------------------------------------------------------------------------
def test_rows_are_stamped_by_the_ledgers_clock_not_the_process(any_ledger: Ledger,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace this process's clock with one an hour off: the ledger's stamps and ages stay true."""
    import sys

    wrong = datetime.now(UTC) + timedelta(hours=1)
    for name, module in list(sys.modules.items()):
        if name.startswith("httpay") and hasattr(module, "now_utc"):
            monkeypatch.setattr(module, "now_utc", lambda: wrong)
    row = any_ledger.reserve(intent(wallet_id="node:A"))
    now = datetime.now(UTC)
    assert abs((row.created_at - now).total_seconds()) < 30
    assert abs((any_ledger.now() - now).total_seconds()) < 30
    settled = any_ledger.settle(row.id, preimage="00" * 32, fee_msat=3)
    assert abs((settled.updated_at - now).total_seconds()) < 30
    # a fresh payment unknown to its wallet is "only 0 s old", whatever this process's clock says
    fresh = any_ledger.reserve(intent(2, wallet_id="node:A"))
    out = reconcile_one(any_ledger, NodeWallet("node:A"), fresh, grace_s=120)
    assert out.outcome == "pending" and "old" in out.detail


def test_windows_are_anchored_on_the_ledgers_clock(any_ledger: Ledger) -> None:
    hour = Limit("hourly budget", 25_000, window=timedelta(hours=1))
    any_ledger.reserve(intent(1), now=datetime.now(UTC) - timedelta(hours=2))  # outside the window
    any_ledger.reserve(intent(2), [hour])
    any_ledger.reserve(intent(3), [hour])
    with pytest.raises(httpay.PaymentRefused) as err:
        any_ledger.reserve(intent(4), [hour])
    assert err.value.rule == "per_hour" and "in fees" in str(err.value)


# -- migrations ------------------------------------------------------------------------------------------------
OLD_TABLE = TABLE.replace(",\n    wallet_id TEXT", "")


def test_a_sqlite_ledger_made_before_wallet_identities_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(OLD_TABLE.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT", time="REAL", int="INTEGER"))
    old.execute("INSERT INTO payments (status, created_at, updated_at, host, url, protocol, method, amount_msat, "
                "wallet, payment_hash) VALUES ('settled', 1.0, 1.0, 'h', 'u', 'l402', 'lightning', 5, 'lnd', 'ab')")
    old.commit()
    old.close()
    with open_ledger(path) as lg:
        [row] = lg.receipts()
        assert row.wallet_id is None and row.amount_msat == 5
        assert lg.reserve(intent(wallet_id="lnd:x")).wallet_id == "lnd:x"
    with open_ledger(path) as lg:  # opening again changes nothing
        assert [r.wallet_id for r in lg.receipts()] == ["lnd:x", None]


def test_a_postgres_ledger_made_before_wallet_identities_gains_the_column(clean_postgres_url: str) -> None:
    with psycopg.connect(clean_postgres_url, autocommit=True) as conn:
        for stmt in OLD_TABLE.format(serial="BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", time="TIMESTAMPTZ",
                                     int="BIGINT").split(";"):
            if stmt.strip():
                conn.execute(stmt)  # type: ignore[call-overload]
        conn.execute("INSERT INTO payments (status, created_at, updated_at, host, url, protocol, method, amount_msat, "
                     "wallet) VALUES ('pending', now(), now(), 'h', 'u', 'l402', 'lightning', 5, 'lnd')")
    with open_ledger(clean_postgres_url) as lg:
        [row] = lg.receipts()
        assert row.wallet_id is None and row.status is Status.PENDING
        assert lg.reserve(intent(wallet_id="lnd:x")).wallet_id == "lnd:x"


# -- 3. connections ----------------------------------------------------------------------------------------------
def _connections(url: str, application: str) -> int:
    """Connections to the database opened by `application` (our pool's application_name), but this one."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND application_name = %s AND pid != pg_backend_pid()", (application,)).fetchone()
        assert row is not None
        return int(row[0])


def _max_connections(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW max_connections").fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def own_pool_url(clean_postgres_url: str) -> str:
    """The same database under a URL of its own, so no other test's ledger shares (or leaks into) its pool."""
    return f"{clean_postgres_url}?application_name=httpay-pool-test"


@pytest.fixture
def hundred_clients(own_pool_url: str) -> Iterator[list[httpay.Client]]:
    clients: list[httpay.Client] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def start() -> None:
        try:
            c = httpay.Client(wallet=httpay.DemoWallet("http://127.0.0.1:9", "unused"),
                              policy=httpay.Policy(budget_sat=1_000), ledger=own_pool_url)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            return
        with lock:
            clients.append(c)

    threads = [threading.Thread(target=start) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert errors == [] and len(clients) == 100, errors[:3]
        yield clients
    finally:
        for c in clients:
            c.close()


def test_a_hundred_clients_in_one_process_start_within_the_default_connection_limit(
        own_pool_url: str, hundred_clients: list[httpay.Client]) -> None:
    from httpay.ledger.postgres import redact_url, shared_pools

    assert _max_connections(own_pool_url) == 100, "the server runs with PostgreSQL's default limit"
    assert shared_pools()[redact_url(own_pool_url)] == 100
    barrier = threading.Barrier(100)
    outcomes: list[str] = []

    def work(c: httpay.Client, i: int) -> None:
        barrier.wait(timeout=60)
        try:
            c.ledger.reserve(intent(i, max_fee_msat=0), [Limit("total budget", 500_000)])
            outcomes.append("reserved")
        except httpay.PaymentRefused as exc:
            outcomes.append(exc.rule)
        c.ledger.spent_msat()

    threads = [threading.Thread(target=work, args=(c, i)) for i, c in enumerate(hundred_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(outcomes) == ["budget"] * 50 + ["reserved"] * 50, "all 100 clients worked; exactly 50 fit"
    assert hundred_clients[0].ledger.spent_msat() == 500_000
    assert _connections(own_pool_url, "httpay-pool-test") <= 4, "one shared pool of at most pool_size connections"


def test_the_last_client_to_close_closes_the_pool(own_pool_url: str) -> None:
    from httpay.ledger.postgres import redact_url, shared_pools

    key = redact_url(own_pool_url)
    a, b = open_ledger(own_pool_url), open_ledger(own_pool_url)
    assert shared_pools()[key] == 2
    a.close()
    a.close()  # closing twice releases once
    assert shared_pools()[key] == 1 and b.spent_msat() == 0
    b.close()
    assert key not in shared_pools()
    deadline = time.monotonic() + 30
    while _connections(own_pool_url, "httpay-pool-test") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _connections(own_pool_url, "httpay-pool-test") == 0
    with open_ledger(own_pool_url) as again:  # a new pool opens, and the tables are there
        assert again.receipts() == []


def test_no_session_state_survives_a_statement(clean_postgres_url: str) -> None:
    """PgBouncer in transaction mode hands each transaction any server connection: so no prepared
    statement and no advisory lock may outlive the transaction that made it."""
    with open_ledger(clean_postgres_url) as lg:
        for i in range(30):  # psycopg would prepare a statement after 5 runs unless told not to
            row = lg.reserve(intent(i), [Limit("total budget", 10**9)])
            lg.settle(row.id, preimage="00" * 32, fee_msat=1)
            lg.spent_msat()
            lg.now()
        pool = lg._pool  # type: ignore[attr-defined]
        with pool.connection() as conn:
            prepared = conn.execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone()
            locks = conn.execute("SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'").fetchone()
        assert prepared["n"] == 0 and locks["n"] == 0
