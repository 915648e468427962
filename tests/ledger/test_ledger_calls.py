"""Calls (issue 12): the ledger keys each call of the application, so its own retry never pays twice.
Every test runs on SQLite, PostgreSQL and PostgreSQL through PgBouncer."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from httpay.errors import DuplicatePayment
from httpay.ledger import Intent, Ledger, SQLiteLedger, Status

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=10)
KEY = re.compile(r"^pay_[0-9a-f]{32}$")


def intent(call_id: int | None, payment_hash: str = "h1") -> Intent:
    return Intent(host="a.example", url="https://a.example/order", protocol="x402", method="x402:exact:eip155:8453",
                  amount_msat=10_000, payment_hash=payment_hash, call_id=call_id)


def test_a_call_gets_one_key_within_the_window_and_a_new_one_after(any_ledger: Ledger) -> None:
    first = any_ledger.call("fp1", window=WINDOW, now=T0)
    assert KEY.match(first.key) and 16 <= len(first.key) <= 128
    assert first.receipt is None and first.credential is None and not first.paid
    again = any_ledger.call("fp1", window=WINDOW, now=T0 + timedelta(minutes=9))
    assert (again.id, again.key) == (first.id, first.key)
    other = any_ledger.call("fp2", window=WINDOW, now=T0)  # another body: another call
    assert other.key != first.key
    later = any_ledger.call("fp1", window=WINDOW, now=T0 + timedelta(minutes=11))
    assert later.key not in (first.key, other.key)


def test_the_call_holds_its_payment_and_credential_and_never_shows_the_credential(any_ledger: Ledger) -> None:
    call = any_ledger.call("fp1", window=WINDOW, now=T0)
    receipt = any_ledger.reserve(intent(call.id), now=T0)
    any_ledger.record_call(call.id, receipt.id, {"PAYMENT-SIGNATURE": "secret-payload", "Idempotency-Key": call.key})
    again = any_ledger.call("fp1", window=WINDOW, now=T0 + timedelta(minutes=1))
    assert again.paid and again.receipt is not None and again.receipt.id == receipt.id
    assert again.receipt.status is Status.PENDING
    assert again.credential == {"PAYMENT-SIGNATURE": "secret-payload", "Idempotency-Key": call.key}
    assert "secret-payload" not in repr(again) and "secret-payload" not in str(again)


def test_one_live_payment_per_call_checked_in_the_reservation(any_ledger: Ledger) -> None:
    call = any_ledger.call("fp1", window=WINDOW, now=T0)
    first = any_ledger.reserve(intent(call.id, "h1"), now=T0)
    with pytest.raises(DuplicatePayment, match=f"this call already has payment #{first.id} .pending."):
        any_ledger.reserve(intent(call.id, "h2"), now=T0)
    any_ledger.fail(first.id, "refused")
    fresh = any_ledger.call("fp1", window=WINDOW, now=T0)  # nothing was paid: a new call, a new key
    assert fresh.key != call.key and not fresh.paid
    assert any_ledger.reserve(intent(fresh.id, "h2"), now=T0).status is Status.PENDING


def test_an_answered_call_is_done_and_the_callers_own_key_is_the_key(any_ledger: Ledger) -> None:
    call = any_ledger.call("fp1", window=WINDOW, now=T0)
    any_ledger.record_call(call.id, any_ledger.reserve(intent(call.id), now=T0).id, {"X": "y"})
    any_ledger.answer_call(call.id)
    assert any_ledger.call("fp1", window=WINDOW, now=T0).key != call.key
    own = any_ledger.call("fp3", window=WINDOW, key="order-2026-0001-abcdef", now=T0)
    assert own.key == "order-2026-0001-abcdef"


def test_an_older_ledger_gets_the_calls_table_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with SQLiteLedger(path):
        pass
    db = sqlite3.connect(path)
    db.execute("DROP TABLE calls")  # as a ledger made before calls existed
    db.commit()
    db.close()
    with SQLiteLedger(path) as lg:
        assert KEY.match(lg.call("fp", window=WINDOW).key)


def test_a_callers_key_paid_for_one_call_is_refused_for_another(any_ledger: Ledger) -> None:
    """The application's Idempotency-Key names one operation: sent again with another body (another
    fingerprint) after that call was paid, nothing is paid and the refusal says why. Unpaid, or
    failed, the key may start another call."""
    from httpay.errors import PaymentRefused

    key = "order-2026-0001-abcdef"
    first = any_ledger.call("fp-body-1", window=WINDOW, key=key, now=T0)
    assert any_ledger.call("fp-body-2", window=WINDOW, key=key, now=T0).key == key  # nothing paid yet: allowed
    any_ledger.reserve(intent(first.id), now=T0)
    with pytest.raises(PaymentRefused, match="already names another call") as refused:
        any_ledger.call("fp-body-3", window=WINDOW, key=key, now=T0)
    assert refused.value.rule == "idempotency_key"
    assert any_ledger.call("fp-body-1", window=WINDOW, key=key, now=T0).id == first.id  # the same call still is


def test_a_callers_key_is_taken_by_the_call_that_pays_even_when_another_call_of_it_came_first(
        any_ledger: Ledger) -> None:
    """A call made under the key and never paid (refused by a price cap, say), found again after
    another call paid with the key, is refused too: the key pays for one call only."""
    from httpay.errors import PaymentRefused

    key = "order-2026-0042-abcdef"
    unpaid = any_ledger.call("fp-a", window=WINDOW, key=key, now=T0)  # refused before paying: no payment row
    paid = any_ledger.call("fp-b", window=WINDOW, key=key, now=T0)
    any_ledger.reserve(intent(paid.id), now=T0)
    with pytest.raises(PaymentRefused, match="already names another call") as refused:
        any_ledger.call("fp-a", window=WINDOW, key=key, now=T0 + timedelta(minutes=1))
    assert refused.value.rule == "idempotency_key" and unpaid.id != paid.id


def test_two_calls_under_one_key_sent_at_once_the_second_reservation_is_refused(any_ledger: Ledger) -> None:
    """Both calls exist before either pays (sent at the same moment): the reservation, under the
    ledger's lock, lets only the first pay. A payment still pending holds the key past the window
    (the window runs from the payment, not from the first send); a failed one frees it."""
    from httpay.errors import PaymentRefused

    key = "order-2026-0043-abcdef"
    a = any_ledger.call("fp-a", window=WINDOW, key=key, now=T0)
    b = any_ledger.call("fp-b", window=WINDOW, key=key, now=T0)
    first = any_ledger.reserve(replace(intent(a.id, "h1"), key_window=WINDOW), now=T0)
    with pytest.raises(PaymentRefused, match=f"paid as ledger #{first.id}") as refused:
        any_ledger.reserve(replace(intent(b.id, "h2"), key_window=WINDOW), now=T0)
    assert refused.value.rule == "idempotency_key"
    assert [r.id for r in any_ledger.receipts()] == [first.id]  # nothing written for the second
    later = T0 + timedelta(minutes=11)
    with pytest.raises(PaymentRefused, match=f"paid as ledger #{first.id} .pending."):
        any_ledger.call("fp-c", window=WINDOW, key=key, now=later)
    assert any_ledger.call("fp-a", window=WINDOW, key=key, now=later).id == a.id  # still the call it paid for
    any_ledger.fail(first.id, "the service never settled it")
    late = any_ledger.call("fp-c", window=WINDOW, key=key, now=later)
    assert any_ledger.reserve(replace(intent(late.id, "h3"), key_window=WINDOW), now=later).status is Status.PENDING


def test_a_dropped_token_is_forgotten_by_the_calls_that_presented_it(any_ledger: Ledger) -> None:
    """`httpay tokens drop` leaves no usable credential: the call that presented the token (kept to
    present it again under the caller's key) holds it no more."""
    call = any_ledger.call("fp1", window=WINDOW, key="job-42-abcdefgh", now=T0)
    receipt = any_ledger.reserve(intent(call.id, "ab" * 32), now=T0)
    any_ledger.settle(receipt.id, preimage="cd" * 32)
    any_ledger.save_token("https://a.example", "L402 mac:" + "cd" * 32, payment_hash="ab" * 32)
    any_ledger.record_call(call.id, receipt.id, {"Authorization": "L402 mac:" + "cd" * 32})
    other = any_ledger.call("fp2", window=WINDOW, now=T0)  # another call's credential stays
    kept = any_ledger.reserve(intent(other.id, "ef" * 32), now=T0)
    any_ledger.record_call(other.id, kept.id, {"PAYMENT-SIGNATURE": "payload"})
    assert any_ledger.drop_token("https://a.example")
    again = any_ledger.call("fp1", window=WINDOW, key="job-42-abcdefgh", now=T0)
    assert again.paid and again.credential is None
    assert any_ledger.call("fp2", window=WINDOW, now=T0).credential == {"PAYMENT-SIGNATURE": "payload"}
