"""What every ledger backend promises: the same answers from SQLite and from PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from httpay.errors import DuplicatePayment, LedgerError, PaymentRefused
from httpay.ledger import Intent, Ledger, SQLiteLedger, Status, open_ledger
from httpay.ledger.postgres import PostgresLedger, redact_url
from httpay.policy import Limit

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


def intent(amount_msat: int = 1000, *, host: str = "a.example", payment_hash: str | None = None,
           challenge_key: str | None = None) -> Intent:
    return Intent(host=host, url=f"https://{host}/quote", protocol="l402-v0.2", method="lightning",
                  amount_msat=amount_msat, payment_hash=payment_hash, offer_id="offer-1", offer_title="One quote",
                  offer_amount=1, offer_currency="USD", credits=5, wallet="demo", challenge_key=challenge_key)


# -- the life of one payment ---------------------------------------------------------------------

def test_reserve_writes_a_pending_row_with_everything_the_intent_said(any_ledger: Ledger) -> None:
    r = any_ledger.reserve(intent(2500, payment_hash="h1", challenge_key="k1"), now=T0)
    assert r.status is Status.PENDING
    assert (r.host, r.url, r.protocol, r.method) == ("a.example", "https://a.example/quote", "l402-v0.2", "lightning")
    offer = (r.offer_id, r.offer_title, r.offer_amount, r.offer_currency, r.credits)
    assert offer == ("offer-1", "One quote", 1, "USD", 5)
    assert (r.payment_hash, r.amount_msat, r.fee_msat, r.wallet, r.challenge_key) == ("h1", 2500, 0, "demo", "k1")
    assert r.preimage is None and r.reason is None
    assert r.created_at == r.updated_at == T0
    assert r.created_at.tzinfo is UTC
    assert any_ledger.get(r.id) == r


def test_settle_records_the_proof_and_fee(any_ledger: Ledger) -> None:
    r = any_ledger.reserve(intent(2500, payment_hash="h1"))
    any_ledger.note(r.id, "waiting for the wallet")
    s = any_ledger.settle(r.id, preimage="ab" * 32, fee_msat=7)
    assert (s.status, s.preimage, s.fee_msat, s.total_msat, s.reason) == (Status.SETTLED, "ab" * 32, 7, 2507, None)
    assert s.updated_at >= s.created_at
    assert any_ledger.settle(r.id, preimage="cd" * 32, amount_msat=2000).amount_msat == 2000


def test_fail_releases_the_money_and_keeps_a_short_reason(any_ledger: Ledger) -> None:
    r = any_ledger.reserve(intent(2500))
    f = any_ledger.fail(r.id, "no route " * 100)
    assert f.status is Status.FAILED
    assert f.reason is not None and len(f.reason) == 500
    assert any_ledger.spent_msat() == 0


def test_only_a_pending_row_is_failed(any_ledger: Ledger) -> None:
    """A payment settled meanwhile (by another process, or just before a person's write-off) is
    never turned into a failed one: the money left, and budgets keep counting it."""
    r = any_ledger.reserve(intent(5_000))
    any_ledger.settle(r.id, preimage="ab" * 32)
    with pytest.raises(LedgerError, match=f"ledger #{r.id} is settled, not pending"):
        any_ledger.fail(r.id, "written off")
    assert any_ledger.get(r.id).status is Status.SETTLED and any_ledger.spent_msat() == 5_000


def test_a_row_failed_then_settled_is_settled_and_keeps_why_it_had_been_failed(any_ledger: Ledger) -> None:
    """A person wrote a row off while a live process was still paying it: the wallet's proof wins
    (the money left, budgets count it again), and the write-off stays readable on the row."""
    r = any_ledger.reserve(intent(5_000))
    any_ledger.fail(r.id, "written off by a person: looked stuck")
    assert any_ledger.spent_msat() == 0
    done = any_ledger.settle(r.id, preimage="ab" * 32, fee_msat=10)
    assert done.status is Status.SETTLED and any_ledger.spent_msat() == 5_010
    assert done.reason == "settled after it had been failed (written off by a person: looked stuck)"
    noted = any_ledger.note(r.id, "service receipt abc")  # a later note adds to it, never erases it
    assert noted.reason == "settled after it had been failed (written off by a person: looked stuck); service receipt abc"
    assert any_ledger.settle(any_ledger.reserve(intent(1_000, payment_hash="cd" * 32)).id, preimage="cd" * 32).reason is None


def test_a_token_kept_with_its_pending_row_is_restored_once_the_row_settles(any_ledger: Ledger) -> None:
    """A crash between paying and storing the token: the pending row kept the token without its
    preimage; reconciliation holds it again with the wallet's preimage (unless the scope holds a
    newer one), then settles the row, which forgets it, as failing it does."""
    import json
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta

    from httpay.ledger.base import PREIMAGE_MARK

    def kept(scope: str, expires: datetime | None = None) -> str:
        return json.dumps({"scope": scope, "value": f"L402 mac:{PREIMAGE_MARK}",
                           "expires_at": expires.isoformat() if expires else None})
    r = any_ledger.reserve(replace(intent(5_000, payment_hash="ab" * 32), token=kept("host:a.example")))
    assert "mac" not in repr(any_ledger.get(r.id)) and "mac" not in json.dumps(any_ledger.get(r.id).to_dict())
    assert any_ledger.restore_token(r.id, "cd" * 32) and any_ledger.token_for("host:a.example") == "L402 mac:" + "cd" * 32
    any_ledger.save_token("host:a.example", "L402 newer:" + "ef" * 32)
    assert not any_ledger.restore_token(r.id, "cd" * 32)  # a newer token of the scope stays
    assert any_ledger.token_for("host:a.example") == "L402 newer:" + "ef" * 32
    any_ledger.settle(r.id, preimage="cd" * 32)  # settled, the row forgets the token: none to rebuild from it
    any_ledger.drop_token("host:a.example")
    assert not any_ledger.restore_token(r.id, "cd" * 32) and any_ledger.token_for("host:a.example") is None
    old = any_ledger.reserve(replace(intent(5_000, payment_hash="11" * 32),
                                     token=kept("host:b.example", datetime.now(UTC) - timedelta(minutes=1))))
    assert not any_ledger.restore_token(old.id, "22" * 32) and any_ledger.token_for("host:b.example") is None  # expired
    failed = any_ledger.reserve(replace(intent(5_000, payment_hash="33" * 32), token=kept("host:c.example")))
    any_ledger.fail(failed.id, "the wallet refused")
    assert not any_ledger.restore_token(failed.id, "44" * 32)  # nothing was bought


def test_a_scope_holds_its_own_token_and_one_per_kind(any_ledger: Ledger, any_ledger_url: str) -> None:
    """A host fronting several services keeps a token per service ("scope#service") beside its own:
    `tokens_of` finds them all, on every backend and collation; another scope's are not among them."""
    any_ledger.save_token("https://h.example", "L402 own:" + "00" * 32)
    any_ledger.save_token("https://h.example#alpha", "L402 a:" + "11" * 32)
    any_ledger.save_token("https://h.example#beta,gamma", "L402 b:" + "22" * 32)
    any_ledger.save_token("https://h.example.other#alpha", "L402 x:" + "33" * 32)
    any_ledger.save_token("https://h.exampl#alpha", "L402 y:" + "44" * 32)
    assert any_ledger.tokens_of("https://h.example") == {
        "https://h.example": "L402 own:" + "00" * 32, "https://h.example#alpha": "L402 a:" + "11" * 32,
        "https://h.example#beta,gamma": "L402 b:" + "22" * 32}
    assert any_ledger.drop_token("https://h.example#alpha")
    assert sorted(any_ledger.tokens_of("https://h.example")) == ["https://h.example", "https://h.example#beta,gamma"]
    assert any_ledger.tokens_of("https://nobody.example") == {}
    any_ledger._query("UPDATE tokens SET base_scope = NULL", ())  # type: ignore[attr-defined]  # kept before it existed
    reopened = open_ledger(any_ledger_url)  # opening it fills the column in
    try:
        assert sorted(reopened.tokens_of("https://h.example")) == ["https://h.example", "https://h.example#beta,gamma"]
    finally:
        reopened.close()


def test_server_text_with_a_nul_or_a_lone_surrogate_is_stored_alike_on_every_backend(any_ledger: Ledger) -> None:
    """A NUL (which PostgreSQL's text cannot hold) or a lone surrogate (which UTF-8 cannot encode)
    in what a server wrote fails no write on any backend: each is kept as the escape a view shows
    it as, so SQLite and PostgreSQL read back the same text, and a token is found where it was kept."""
    odd = "a\x00b\ud800c"
    shown = "a\\x00b\\ud800c"
    r = any_ledger.reserve(dataclasses.replace(intent(1_000, payment_hash="ab" * 32), offer_title=odd,
                                               offer_id=odd, url=f"https://a.example/{odd}"))
    assert (r.offer_title, r.offer_id, r.url) == (shown, shown, f"https://a.example/{shown}")
    assert any_ledger.note(r.id, odd).reason == shown
    assert any_ledger.settle(r.id, preimage="cd" * 32, note=odd).reason == shown
    assert any_ledger.fail(any_ledger.reserve(intent(1_000)).id, odd).reason == shown
    any_ledger.note_refusal(host="a.example", url="https://a.example/", rule="max_per_payment", reason=odd)
    assert any_ledger.refusals()[0].reason == shown
    any_ledger.save_token(f"https://a.example#{odd}", "L402 m:" + "11" * 32)
    assert any_ledger.token_scopes() == [f"https://a.example#{shown}"]
    assert any_ledger.token_for(f"https://a.example#{odd}") == "L402 m:" + "11" * 32


def test_note_keeps_the_status(any_ledger: Ledger) -> None:
    r = any_ledger.reserve(intent())
    n = any_ledger.note(r.id, "outcome unknown: PaymentTimeout")
    assert (n.status, n.reason) == (Status.PENDING, "outcome unknown: PaymentTimeout")
    assert any_ledger.pending() == [n]


def test_an_unknown_id_is_a_ledger_error_naming_it(any_ledger: Ledger) -> None:
    for call in (lambda: any_ledger.get(999), lambda: any_ledger.settle(999, preimage="x"),
                 lambda: any_ledger.fail(999, "x"), lambda: any_ledger.note(999, "x")):
        with pytest.raises(LedgerError, match="no payment #999"):
            call()


def test_a_naive_now_is_refused(any_ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="timezone-aware"):
        any_ledger.reserve(intent(), now=datetime(2026, 1, 1))
    assert any_ledger.receipts() == []


def test_rows_survive_reopening(any_ledger_url: str) -> None:
    with open_ledger(any_ledger_url) as first:
        r = first.reserve(intent(payment_hash="h1"))
    with open_ledger(any_ledger_url) as second:
        assert second.find(payment_hash="h1") == r


# -- finding and listing -------------------------------------------------------------------------

def test_find_by_hash_or_challenge_key_skips_failed_attempts(any_ledger: Ledger) -> None:
    first = any_ledger.reserve(intent(payment_hash="h1", challenge_key="k"))
    any_ledger.fail(first.id, "no route")
    assert any_ledger.find(payment_hash="h1") is None
    assert any_ledger.find(challenge_key="k") is None
    second = any_ledger.reserve(intent(payment_hash="h2", challenge_key="k"))
    assert any_ledger.find(challenge_key="k") == second
    assert any_ledger.find(payment_hash="h2") == second
    assert any_ledger.find(payment_hash="nope") is None
    assert any_ledger.find() is None


def test_receipts_newest_first_with_filters(any_ledger: Ledger) -> None:
    a = any_ledger.reserve(intent(1000, host="a.example"), now=T0 - 2 * HOUR)
    b = any_ledger.settle(any_ledger.reserve(intent(2000, host="b.example"), now=T0 - HOUR).id, preimage="p")
    c = any_ledger.fail(any_ledger.reserve(intent(3000, host="a.example"), now=T0).id, "no route")
    assert [r.id for r in any_ledger.receipts()] == [c.id, b.id, a.id]
    assert [r.id for r in any_ledger.receipts(limit=2)] == [c.id, b.id]
    assert any_ledger.receipts(status=Status.SETTLED) == [b]
    assert [r.id for r in any_ledger.receipts(status=Status.PENDING)] == [a.id]
    assert [r.id for r in any_ledger.receipts(host="a.example")] == [c.id, a.id]
    assert [r.id for r in any_ledger.receipts(since=T0 - HOUR)] == [c.id, b.id]
    assert [r.id for r in any_ledger.receipts(host="a.example", since=T0 - HOUR, limit=5)] == [c.id]


def test_spent_counts_settled_and_pending_with_fees_but_not_failed(any_ledger: Ledger) -> None:
    old = any_ledger.reserve(intent(1000, host="a.example"), now=T0 - 2 * HOUR)
    any_ledger.settle(old.id, preimage="p", fee_msat=5)
    any_ledger.reserve(intent(2000, host="b.example"), now=T0)
    any_ledger.fail(any_ledger.reserve(intent(4000, host="a.example"), now=T0).id, "no route")
    assert any_ledger.spent_msat() == 3005
    assert any_ledger.spent_msat(host="a.example") == 1005
    assert any_ledger.spent_msat(since=T0 - HOUR) == 2000
    assert any_ledger.spent_msat(host="a.example", since=T0 - HOUR) == 0


# -- never twice -----------------------------------------------------------------------------------

@pytest.mark.parametrize("settled", [False, True], ids=["pending", "settled"])
def test_a_recorded_invoice_is_never_reserved_again(any_ledger: Ledger, settled: bool) -> None:
    r = any_ledger.reserve(intent(payment_hash="h1"))
    if settled:
        r = any_ledger.settle(r.id, preimage="p")
    with pytest.raises(DuplicatePayment, match=f"payment #{r.id}") as err:
        any_ledger.reserve(intent(payment_hash="h1"))
    assert err.value.rule == "duplicate"
    assert err.value.existing == r
    assert len(any_ledger.receipts()) == 1


def test_a_failed_invoice_may_be_tried_again(any_ledger: Ledger) -> None:
    any_ledger.fail(any_ledger.reserve(intent(payment_hash="h1")).id, "no route")
    again = any_ledger.reserve(intent(payment_hash="h1"))
    assert again.status is Status.PENDING
    assert any_ledger.find(payment_hash="h1") == again


# -- budgets at their boundaries -------------------------------------------------------------------

LIMITS = {
    "budget": Limit("total budget", 10_000),
    "per_host": Limit("per-host budget", 10_000, host="a.example"),
    "per_hour": Limit("hourly budget", 10_000, window=HOUR),
    "per_day": Limit("daily budget", 10_000, window=DAY),
}


@pytest.mark.parametrize("rule", LIMITS)
def test_every_budget_allows_exactly_the_limit_and_refuses_one_msat_more(any_ledger: Ledger, rule: str) -> None:
    lim = LIMITS[rule]
    any_ledger.reserve(intent(4000), [lim], now=T0)
    with pytest.raises(PaymentRefused) as err:
        any_ledger.reserve(intent(6001), [lim], now=T0)
    assert err.value.rule == rule
    message = str(err.value)
    for number in ("paying 6.001 sat", "of 10 sat", "4 sat spent", "6 sat left"):
        assert number in message
    assert any_ledger.spent_msat() == 4000  # the refusal wrote nothing
    assert any_ledger.reserve(intent(6000), [lim], now=T0).status is Status.PENDING
    with pytest.raises(PaymentRefused, match="0 sat left"):
        any_ledger.reserve(intent(1), [lim], now=T0)


def test_the_first_broken_limit_is_named(any_ledger: Ledger) -> None:
    limits = [Limit("total budget", 50_000), Limit("hourly budget", 3000, window=HOUR)]
    with pytest.raises(PaymentRefused) as err:
        any_ledger.reserve(intent(4000), limits, now=T0)
    assert err.value.rule == "per_hour"


def test_failed_payments_do_not_use_a_budget(any_ledger: Ledger) -> None:
    lim = LIMITS["budget"]
    any_ledger.fail(any_ledger.reserve(intent(10_000), [lim]).id, "no route")
    assert any_ledger.reserve(intent(10_000), [lim]).status is Status.PENDING


def test_a_host_budget_ignores_other_hosts(any_ledger: Ledger) -> None:
    lim = LIMITS["per_host"]
    any_ledger.reserve(intent(9000, host="b.example"))
    assert any_ledger.reserve(intent(10_000, host="a.example"), [lim]).status is Status.PENDING


@pytest.mark.parametrize(("rule", "window"), [("per_hour", HOUR), ("per_day", DAY)])
def test_payments_older_than_a_window_do_not_count_toward_it(any_ledger: Ledger, rule: str, window: timedelta) -> None:
    lim = LIMITS[rule]
    any_ledger.reserve(intent(9000), now=T0 - window - timedelta(seconds=1))
    any_ledger.reserve(intent(1000), now=T0 - window + timedelta(seconds=1))
    assert any_ledger.reserve(intent(9000), [lim], now=T0).status is Status.PENDING
    with pytest.raises(PaymentRefused) as err:
        any_ledger.reserve(intent(1), [lim], now=T0)
    assert err.value.rule == rule
    # The total budget has no window: every row counts.
    with pytest.raises(PaymentRefused, match="19 sat spent"):
        any_ledger.reserve(intent(1), [Limit("total budget", 19_000)], now=T0)


# -- both backends answer alike; no secret leaks ---------------------------------------------------

def test_both_backends_return_identical_receipts(tmp_path: Path, clean_postgres_url: str) -> None:
    answers: list[dict[str, Any]] = []
    for where in (str(tmp_path / "l.sqlite3"), clean_postgres_url):
        with open_ledger(where) as lg:
            r = lg.reserve(intent(2500, payment_hash="h1", challenge_key="k"), now=T0)
            r = lg.settle(r.id, preimage="ab" * 32, fee_msat=3)
            fields = dataclasses.asdict(r)
            answers.append({k: (type(v), v) for k, v in fields.items() if k != "updated_at"})
            assert r.updated_at.tzinfo is UTC
    assert answers[0] == answers[1]


def test_open_ledger_routes_urls_to_the_right_backend(tmp_path: Path, postgres_url: str) -> None:
    with open_ledger(postgres_url) as pg, open_ledger(postgres_url.replace("postgresql://", "postgres://", 1)) as pg2:
        assert isinstance(pg, PostgresLedger) and isinstance(pg2, PostgresLedger)
    with open_ledger(f"sqlite:///{tmp_path}/x.sqlite3") as lite:
        assert isinstance(lite, SQLiteLedger)


def test_the_postgres_password_never_shows(postgres_url: str) -> None:
    password = postgres_url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    with open_ledger(postgres_url) as lg:
        lg.reserve(intent())
        shown = [repr(lg), str(lg), lg.url]
    assert repr(lg).startswith("PostgresLedger('postgresql://httpay:***@127.0.0.1:")
    assert all(password not in text for text in shown)
    with PostgresLedger(postgres_url) as lg, pytest.raises(LedgerError, match="no payment #42") as missing:
        lg.get(42)
    assert password not in str(missing.value)


def test_a_wrong_password_is_a_clear_ledger_error_without_the_password(postgres_url: str) -> None:
    wrong = "not-the-real-secret-1234"
    bad = postgres_url.replace(postgres_url.split(":")[2].split("@")[0], wrong)
    with pytest.raises(LedgerError) as err:
        PostgresLedger(bad)
    text = str(err.value)
    assert "password authentication failed" in text and "cannot open the PostgreSQL ledger" in text
    assert wrong not in text and wrong not in repr(err.value)


def test_an_unreachable_server_is_a_clear_ledger_error() -> None:
    from tests.fixtures.postgres import free_port

    url = f"postgresql://httpay:hunter2hunter2@127.0.0.1:{free_port()}/httpay"
    with pytest.raises(LedgerError, match="cannot open the PostgreSQL ledger at postgresql://httpay:\\*\\*\\*@") as err:
        PostgresLedger(url, connect_timeout=2)
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:p%40ss@db:5432/x", "postgresql://u:***@db:5432/x"),
    ("postgresql://u@db/x?password=sec&sslmode=require", "postgresql://u@db/x?password=***&sslmode=require"),
    ("postgresql://db/x", "postgresql://db/x"),
])
def test_redact_url_hides_every_spelling_of_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# -- one payment per challenge, across processes ---------------------------------------------------

def test_a_pending_payment_for_a_challenge_blocks_another(any_ledger: Ledger) -> None:
    from httpay.errors import ChallengeInFlight

    first = any_ledger.reserve(intent(payment_hash="aa" * 32, challenge_key="ch-1"), now=T0)
    with pytest.raises(ChallengeInFlight) as err:
        any_ledger.reserve(dataclasses.replace(intent(payment_hash="bb" * 32, challenge_key="ch-1"), not_before=T0), now=T0)
    assert err.value.existing.id == first.id and err.value.rule == "in_flight"
    assert any_ledger.reserve(intent(payment_hash="cc" * 32, challenge_key="ch-2"), now=T0).status is Status.PENDING


def test_a_payment_settled_after_the_402_counts_one_settled_before_does_not(any_ledger: Ledger) -> None:
    from httpay.errors import ChallengeInFlight

    r = any_ledger.reserve(intent(payment_hash="aa" * 32, challenge_key="ch"), now=T0)
    any_ledger.settle(r.id, preimage="11" * 32)
    met_402_before = dataclasses.replace(intent(payment_hash="bb" * 32, challenge_key="ch"),
                                         not_before=datetime.now(UTC) - timedelta(minutes=5))
    with pytest.raises(ChallengeInFlight):
        any_ledger.reserve(met_402_before)
    met_402_after = dataclasses.replace(intent(payment_hash="cc" * 32, challenge_key="ch"),
                                        not_before=datetime.now(UTC) + timedelta(minutes=5))
    assert any_ledger.reserve(met_402_after).status is Status.PENDING


# -- L402 tokens ---------------------------------------------------------------------------------

def test_tokens_are_kept_replaced_expired_and_dropped(any_ledger_url: str) -> None:
    lg = open_ledger(any_ledger_url)
    assert lg.token_for("host:a") is None
    lg.save_token("host:a", "L402 mac1:" + "11" * 32, payment_hash="aa" * 32)
    lg.save_token("host:b", "L402 mac2:" + "22" * 32, expires_at=T0)
    lg.close()
    lg = open_ledger(any_ledger_url)  # survives a restart
    assert lg.token_for("host:a") == "L402 mac1:" + "11" * 32
    assert lg.token_for("host:b") is None  # expired: dropped
    assert lg.token_scopes() == ["host:a"]
    lg.save_token("host:a", "L402 mac3:" + "33" * 32)
    assert lg.token_for("host:a") == "L402 mac3:" + "33" * 32
    assert lg.drop_token("host:a") is True and lg.drop_token("host:a") is False
    assert lg.token_for("host:a") is None
    lg.close()


def test_a_host_without_its_port_finds_it_on_every_port_by_equality(any_ledger: Ledger) -> None:
    """`httpay ledger --host 127.0.0.1` found nothing (the rows say 127.0.0.1:8402): the hosts a
    host means are read off the running totals, then its rows, totals and spending by equality."""
    ids: dict[str, int] = {}
    for n, host in enumerate(("127.0.0.1:8402", "127.0.0.1:9000", "127.0.0.10:8402", "127.0.0.1x:1", "a_b.example",
                              "axb.example:1", "[::1]:9")):
        ids[host] = any_ledger.reserve(intent(1000 * (n + 1), host=host), now=T0 + timedelta(seconds=n)).id
    assert any_ledger.hosts_matching("127.0.0.1") == ["127.0.0.1:8402", "127.0.0.1:9000"]
    assert any_ledger.hosts_matching("127.0.0.1:9000") == ["127.0.0.1:9000"]
    assert any_ledger.hosts_matching("a_b.example") == ["a_b.example"]  # '_' is no wildcard
    assert any_ledger.hosts_matching("[::1]") == ["[::1]:9"] and any_ledger.hosts_matching("nowhere") == []
    both = any_ledger.hosts_matching("127.0.0.1")
    assert [r.id for r in any_ledger.receipts(host=both)] == [ids["127.0.0.1:9000"], ids["127.0.0.1:8402"]]
    assert any_ledger.receipts(host=[]) == [] and any_ledger.totals(host=[])["count"] == 0
    totals = any_ledger.totals(host=both)
    assert (totals["count"], totals["pending"], totals["pending_msat"]) == (2, 2, 3000)
    assert any_ledger.totals(host=both, since=T0 + timedelta(seconds=1))["pending_msat"] == 2000
    assert any_ledger.spent_msat(host=both) == 3000
    assert any_ledger.spent_msat(host=both, since=T0 + timedelta(seconds=1)) == 2000
    assert any_ledger.spent_msat(host="127.0.0.1:8402") == 1000  # one host as before: a per-host budget's
