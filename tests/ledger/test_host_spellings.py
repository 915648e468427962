"""One host, one budget, however a URL spells it: `per_host_usd=0.02` (two 10-sat payments) made four
payments, 40 sat, to one service reached as `stock.example`, `stock.example.`, `stock.example:8080`
and `stock.example:8081`, because the per-host budget was kept by host:port as typed. Now every
per-host thing (the reservation's limit, `spent_msat(host=...)`, `receipts`/`totals`, `ledger
--host`, `httpay budget`, previews) reads the host by its one name: case, a trailing dot, its port,
IDNA and IPv6 literals folded; rows an older httpay recorded in another spelling count too."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

import httpay
from httpay.errors import PaymentRefused
from httpay.hosts import host_key, host_parts
from httpay.ledger import Intent, Ledger, SQLiteLedger, open_ledger
from httpay.policy import Limit
from tests.helpers import FakeService, FakeWallet

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SPELLINGS = ("stock.example", "STOCK.example.", "stock.example:8080", "Stock.Example.:8081")


def intent(host: str, n: int, amount_msat: int = 10_000) -> Intent:
    return Intent(host=host, url=f"https://{host}/x", protocol="l402-v0.2", method="lightning",
                  amount_msat=amount_msat, payment_hash=f"{n:064x}")


@pytest.mark.parametrize(("given", "parts"), [
    ("stock.example", ("stock.example", None)), ("STOCK.example.", ("stock.example", None)),
    ("stock.example.:08080", ("stock.example", "8080")), ("xn--bcher-kva.example", ("bücher.example", None)),
    ("BÜCHER.example.:9", ("bücher.example", "9")), ("[0:0::1]:9", ("[::1]", "9")), ("::1", ("[::1]", None)),
    ("[::1]", ("[::1]", None)), ("127.0.0.1:8402", ("127.0.0.1", "8402")), ("a_b.example", ("a_b.example", None)),
])
def test_a_host_reads_as_one_name_and_its_port(given: str, parts: tuple[str, str | None]) -> None:
    assert host_parts(given) == parts
    assert host_parts(host_key(given)) == parts  # the recorded spelling reads back the same


def test_a_per_host_budget_holds_for_the_host_however_spelled(any_ledger: Ledger) -> None:
    limits = httpay.Policy(per_host_usd=0.02, usd_per_btc=100_000).limits("stock.example:8443", 100_000)
    [per_host] = [lim for lim in limits if lim.host is not None]
    assert per_host.host == "stock.example" and per_host.limit_msat == 20_000
    paid = [any_ledger.reserve(intent(h, n), limits).host for n, h in enumerate(SPELLINGS[:2])]
    assert paid == ["stock.example", "stock.example"]  # recorded in its one spelling
    for n, host in enumerate(SPELLINGS):
        with pytest.raises(PaymentRefused, match="per-host budget for stock.example of 20 sat") as err:
            any_ledger.reserve(intent(host, 10 + n), limits)
        assert err.value.rule == "per_host"
    other = httpay.Policy(per_host_usd=0.02, usd_per_btc=100_000).limits("other.example", 100_000)
    assert any_ledger.reserve(intent("other.example", 99), other).host == "other.example"  # another host's own
    assert any_ledger.spent_msat(host="STOCK.EXAMPLE.") == 20_000


def test_every_per_host_read_takes_every_spelling_and_port(any_ledger: Ledger) -> None:
    for n, host in enumerate([*SPELLINGS, "[0:0::1]:9", "[::1]", "xn--bcher-kva.example", "bücher.example:1"]):
        any_ledger.reserve(intent(host, n, 1_000 * (n + 1)), now=T0 + timedelta(seconds=n))
    assert sorted({r.host for r in any_ledger.receipts()}) == [
        "[::1]", "[::1]:9", "bücher.example", "bücher.example:1", "stock.example", "stock.example:8080",
        "stock.example:8081"]
    assert any_ledger.hosts_matching("STOCK.example.") == ["stock.example", "stock.example:8080", "stock.example:8081"]
    assert any_ledger.hosts_matching("stock.example.:8080") == ["stock.example:8080"]
    assert any_ledger.hosts_matching("stock.example", every_port=False) == ["stock.example"]
    assert any_ledger.hosts_matching("::1") == ["[::1]", "[::1]:9"]
    assert any_ledger.spent_msat(host="stock.example.") == 1_000 + 2_000 + 3_000 + 4_000
    assert any_ledger.spent_msat(host="STOCK.example:8081") == 4_000
    assert any_ledger.spent_msat(host="xn--bcher-kva.example") == 7_000 + 8_000
    assert any_ledger.spent_msat(host="[::0:1]") == 5_000 + 6_000
    assert any_ledger.spent_msat(host="stock.example", since=T0 + timedelta(seconds=1)) == 2_000 + 3_000 + 4_000
    assert any_ledger.spent_msat(host=["stock.example"]) == 3_000  # several: exactly as recorded
    assert len(any_ledger.receipts(host="Stock.Example.")) == 4
    assert any_ledger.totals(host="stock.example")["pending_msat"] == 10_000
    assert any_ledger.totals(host="stock.example", since=T0 + timedelta(seconds=2))["pending_msat"] == 7_000


def test_a_windowed_per_host_limit_counts_every_port(any_ledger: Ledger) -> None:
    """The buckets and the partial second of a window, for each port the host was paid on."""
    limit = [Limit("per-host hour", 25_000, host="stock.example.", window=HOUR)]
    now = any_ledger.now()
    any_ledger.reserve(intent("stock.example:8080", 1), limit, now=now - timedelta(minutes=30))
    any_ledger.reserve(intent("stock.example", 2), limit, now=now - timedelta(seconds=1))
    with pytest.raises(PaymentRefused, match="per-host hour"):
        any_ledger.reserve(intent("STOCK.example:8081", 3), limit, now=now)
    with pytest.raises(PaymentRefused, match="per-host hour"):  # the database's clock: the guard's own SQL
        any_ledger.reserve(intent("STOCK.example:8081", 4), limit)
    assert any_ledger.spent_msat(host="stock.example", since=now - HOUR) == 20_000


def test_rows_an_older_httpay_recorded_in_another_spelling_count_sqlite(tmp_path: Path) -> None:
    """A ledger made before the host map holds 'stock.example.' and 'STOCK.example:8080' as typed:
    opened, they are mapped to their one name, and the per-host budget counts them; the rows keep
    their text."""
    path = tmp_path / "old.db"
    SQLiteLedger(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript("DROP TRIGGER payments_hosts_insert; DROP TRIGGER payments_hosts_update; DROP TABLE payment_hosts;")
    for n, host in enumerate(("stock.example.", "STOCK.example:8080")):
        db.execute("INSERT INTO payments (status, created_at, updated_at, host, url, protocol, method, amount_msat) "
                   "VALUES ('settled', ?, ?, ?, 'https://x/', 'l402-v0.2', 'lightning', 10000)", (n, n, host))
    db.close()
    with open_ledger(str(path)) as lg:
        assert lg.spent_msat(host="stock.example") == 20_000
        assert lg.hosts_matching("stock.example") == ["STOCK.example:8080", "stock.example."]
        limits = httpay.Policy(per_host_usd=0.02, usd_per_btc=100_000).limits("stock.example", 100_000)
        with pytest.raises(PaymentRefused) as err:
            lg.reserve(intent("stock.example:9", 5), limits)
        assert err.value.rule == "per_host"


def test_rows_an_older_httpay_recorded_in_another_spelling_count_postgres(clean_postgres_url: str) -> None:
    import psycopg

    from httpay.ledger.postgres import PostgresLedger

    PostgresLedger(clean_postgres_url).close()
    with psycopg.connect(clean_postgres_url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER payments_hosts ON payments")
        conn.execute("DROP TABLE payment_hosts")
        for host in ("stock.example.", "STOCK.example:8080"):
            conn.execute("INSERT INTO payments (status, created_at, updated_at, host, url, protocol, method, "
                         "amount_msat) VALUES ('settled', now(), now(), %s, 'https://x/', 'l402-v0.2', 'lightning', "
                         "10000)", (host,))
    with PostgresLedger(clean_postgres_url) as lg:
        assert lg.spent_msat(host="stock.example") == 20_000
        assert lg.spent_msat(host="stock.example", since=lg.now() - HOUR) == 20_000
        limits = httpay.Policy(per_host_usd=0.02, usd_per_btc=100_000).limits("stock.example", 100_000)
        with pytest.raises(PaymentRefused) as err:
            lg.reserve(intent("stock.example:9", 5), limits)
        assert err.value.rule == "per_host"


def test_a_client_pays_one_host_within_its_budget_however_its_urls_spell_it(tmp_path: Path) -> None:
    svc = FakeService()
    wallet = FakeWallet(svc)
    policy = httpay.Policy(per_host_usd=0.02, usd_per_btc=100_000, max_fee_msat=0)
    ledger = tmp_path / "l.db"
    with httpay.Client(wallet=wallet, ledger=ledger, policy=policy, transport=httpx.MockTransport(svc)) as c:
        for base in ("http://stock.example", "http://stock.example.", "http://STOCK.example:8080",
                     "http://stock.example:8081"):
            for _ in range(3):
                try:
                    c.get(base + "/ticker/MSFT")
                except PaymentRefused as err:
                    assert err.rule == "per_host"
    with SQLiteLedger(ledger) as lg:
        assert lg.spent_msat() <= 20_000 and {r.host for r in lg.receipts()} <= {"stock.example", "stock.example:8080",
                                                                                 "stock.example:8081"}
    assert len(wallet.calls) <= 2


def test_previews_and_budget_views_count_the_host_on_every_port(tmp_path: Path) -> None:
    from httpay.apps import display
    from httpay.core.payer import Payer
    from httpay.core.preview import preview
    from tests.unit.test_policy import CHALLENGE, RATE

    with SQLiteLedger(tmp_path / "l.db") as lg:
        for n, host in enumerate(("stock.example:8080", "stock.example.")):
            lg.settle(lg.reserve(intent(host, n, 5_000)).id, preimage="00" * 32)
        policy = httpay.Policy(per_host_usd=0.1, usd_per_btc=RATE)
        per_host = [b for b in display.budget_lines(policy, lg) if b.name == "per-host budget"]
        assert [(b.scope, b.spent_msat) for b in per_host] == [("stock.example", 10_000)]
        payer = Payer(wallet=None, policy=httpay.Policy(per_host_usd=0.01, usd_per_btc=RATE, max_fee_msat=0), ledger=lg)
        for url in ("http://stock.example:9/x", "http://STOCK.example./x"):
            with pytest.raises(PaymentRefused) as err:
                preview(payer, CHALLENGE, url=url, usd_per_btc=RATE, with_budgets=True, cannot_pay=lambda o: None)
            assert err.value.rule == "per_host"


def test_ledger_host_finds_every_spelling(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with SQLiteLedger(path) as lg:
        for n, host in enumerate(("stock.example", "stock.example:8080", "bücher.example")):
            lg.reserve(intent(host, n, 1_000))

    def shown(*given: str) -> tuple[list[str], int]:
        ran = subprocess.run([sys.executable, "-m", "httpay", "ledger", "--json", "--ledger", str(path), *given],
                             capture_output=True, text=True, check=False)
        assert ran.returncode == 0, ran.stderr
        data = json.loads(ran.stdout)
        return sorted(p["host"] for p in data["payments"]), data["spent_msat"]

    assert shown("--host", "STOCK.example.") == (["stock.example", "stock.example:8080"], 2_000)
    assert shown("--host", "Stock.Example.:8080") == (["stock.example:8080"], 1_000)
    assert shown("--host", "https://STOCK.example.:443/x") == (["stock.example"], 1_000)
    assert shown("--host", "xn--bcher-kva.example") == (["bücher.example"], 1_000)
