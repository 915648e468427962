"""The approval queue: a payment waits until a person answers; no answer in time means no."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path

import httpx
import pytest
from rich.console import Console

import httpay
from httpay.apps.approvals import Approval, ApprovalQueue, spinner
from httpay.errors import ApprovalError, ConfigError
from httpay.ledger import SQLiteLedger, Status
from tests.helpers import FakeService, FakeWallet, challenge_body, quote_of

URL = "http://stock.test/ticker/MSFT"


def decision(url: str = URL) -> httpay.Decision:
    offers = httpay.PaymentOffers.from_dict(challenge_body())
    return quote_of(offers, url, "stock.test", usd_per_btc=100_000)


def answer_when_asked(path: Path, approve: bool, by: str = "alice") -> threading.Thread:
    """A person in another connection (as the dashboard or the CLI would be) answering the first request."""

    def run() -> None:
        with ApprovalQueue(path) as q:
            for _ in range(500):
                waiting = q.pending()
                if waiting:
                    q.decide(waiting[0].id, approve, by)
                    return
                time.sleep(0.01)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.fixture
def queue(ledger_path: Path) -> Iterator[ApprovalQueue]:
    q = ApprovalQueue(ledger_path, timeout_s=20, poll_s=0.02)
    yield q
    q.close()


def test_a_request_waits_and_an_approval_lets_it_through(queue: ApprovalQueue, ledger_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    person = answer_when_asked(ledger_path, True)
    with caplog.at_level(logging.INFO, logger="httpay.apps.approvals"):
        assert queue(decision()) is True
    person.join()
    [a] = queue.recent()
    assert (a.status, a.decided_by, a.offer_id, a.price_msat, a.host) == ("approved", "alice", "offer_c668e0c0", 10_000, "stock.test")
    assert a.offer_title == "1 Credit Package" and a.offer_price == "$0.01" and a.decided_at is not None
    assert queue.pending() == []
    assert "approval #1 waiting" in caplog.text and "httpay approvals approve 1" in caplog.text


def test_a_denial_answers_false(queue: ApprovalQueue, ledger_path: Path) -> None:
    answer_when_asked(ledger_path, False, by="bob").join(0)
    assert queue(decision()) is False
    assert queue.get(1).status == "denied" and queue.get(1).decided_by == "bob"


def test_no_answer_in_time_is_a_no_that_says_so(ledger_path: Path) -> None:
    with ApprovalQueue(ledger_path, timeout_s=0.1, poll_s=0.02) as q:
        with pytest.raises(httpay.PaymentRefused) as no:
            q(decision())
        a = q.get(1)
    assert (a.status, a.reason, a.decided_by) == ("denied", "timed out", "timeout")
    assert no.value.rule == "approval" and "nobody answered approval #1 within 0.1 s" in str(no.value)
    assert "raise ApprovalQueue(timeout_s=...)" in str(no.value) and "refused by the approver" not in str(no.value)


def test_a_wait_stopped_midway_denies_its_approval(ledger_path: Path) -> None:
    """Ctrl-C (or a cancelled task) while waiting: the approval is not left waiting for an answer
    nobody will use (a person approving it later would pay for nothing)."""
    with ApprovalQueue(ledger_path, timeout_s=30, poll_s=0.02) as q:
        waiting = q._wait(decision())
        next(waiting)
        assert [a.id for a in q.pending()] == [1]
        waiting.close()
        a = q.get(1)

        async def cancelled() -> None:
            task = asyncio.ensure_future(q.aapprove(decision()))
            while not q.pending():
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancelled())
        b = q.get(2)
    assert (a.status, a.decided_by) == ("denied", "abandoned") and a.reason == "the request that asked was stopped"
    assert (b.status, b.decided_by) == ("denied", "abandoned")


def test_an_answer_cannot_be_changed_and_unknown_ids_are_named(queue: ApprovalQueue) -> None:
    a = queue.add(decision())
    assert [x.id for x in queue.pending()] == [a.id]
    queue.decide(a.id, True, "alice")
    with pytest.raises(ApprovalError, match="already approved by alice"):
        queue.decide(a.id, False, "mallory")
    with pytest.raises(ApprovalError, match="no approval #99"):
        queue.decide(99, True, "alice")
    assert queue.get(a.id).status == "approved"


def test_pending_lists_only_waiting_ones_oldest_first(queue: ApprovalQueue) -> None:
    ids = [queue.add(decision(f"{URL}?n={i}")).id for i in range(3)]
    queue.decide(ids[1], False, "alice")
    assert [a.id for a in queue.pending()] == [ids[0], ids[2]]
    assert [a.id for a in queue.recent()] == list(reversed(ids))


def test_the_queue_lives_beside_a_sqlite_ledger_and_refuses_postgres(ledger: SQLiteLedger, ledger_path: Path) -> None:
    with ApprovalQueue(ledger) as q:
        assert q.path == str(ledger_path)
        q.add(decision())
    with ApprovalQueue(f"sqlite:///{ledger_path}") as q:
        assert len(q.pending()) == 1
    ledger.reserve(_intent())  # the ledger's own table is untouched by the approvals table
    assert len(ledger.receipts()) == 1
    with pytest.raises(ConfigError, match="SQLite"):
        ApprovalQueue("postgresql://user:pw@db/httpay")
    with pytest.raises(ConfigError):
        ApprovalQueue(ledger_path, timeout_s=0)


def _intent():  # type: ignore[no-untyped-def]
    from httpay.ledger import Intent

    return Intent(host="stock.test", url=URL, protocol="l402-v0.2", method="lightning", amount_msat=1, payment_hash="00" * 32)


def _client(svc: FakeService, w: FakeWallet, ledger: SQLiteLedger, approve: Callable[..., object]) -> httpay.Client:
    pol = httpay.Policy(usd_per_btc=100_000, budget_usd=5, approve=approve)  # type: ignore[arg-type]
    return httpay.Client(wallet=w, policy=pol, ledger=ledger, transport=httpx.MockTransport(svc))


def test_client_pays_only_after_approval(ledger: SQLiteLedger, ledger_path: Path, queue: ApprovalQueue) -> None:
    svc = FakeService()
    w = FakeWallet(svc)
    person = answer_when_asked(ledger_path, True)
    with _client(svc, w, ledger, queue) as c:
        r = c.get(URL)
    person.join()
    assert r.status_code == 200 and len(w.calls) == 1
    assert [x.status for x in ledger.receipts()] == [Status.SETTLED]


def test_client_denied_pays_nothing(ledger: SQLiteLedger, ledger_path: Path, queue: ApprovalQueue) -> None:
    svc = FakeService()
    w = FakeWallet(svc)
    answer_when_asked(ledger_path, False)
    with _client(svc, w, ledger, queue) as c, pytest.raises(httpay.PaymentRefused) as err:
        c.get(URL)
    assert err.value.rule == "approval" and w.calls == [] and ledger.receipts() == []
    assert svc.pr_calls == 0  # not even an invoice was asked for


def test_async_client_waits_without_blocking_the_loop(ledger: SQLiteLedger, ledger_path: Path, queue: ApprovalQueue) -> None:
    svc = FakeService()
    w = FakeWallet(svc)
    ticks: list[int] = []

    async def go() -> httpx.Response:
        async def heartbeat() -> None:
            while True:
                ticks.append(1)
                await asyncio.sleep(0.01)

        beat = asyncio.create_task(heartbeat())
        pol = httpay.Policy(usd_per_btc=100_000, budget_usd=5, approve=queue.aapprove)
        async with httpay.AsyncClient(wallet=w, policy=pol, ledger=ledger, transport=httpx.MockTransport(svc)) as c:
            task = asyncio.create_task(c.get(URL))
            while not queue.pending():
                await asyncio.sleep(0.01)
            seen = len(ticks)
            await asyncio.sleep(0.05)
            assert len(ticks) > seen, "the event loop must keep running while a person decides"
            queue.decide(queue.pending()[0].id, True, "alice")
            r = await task
        beat.cancel()
        return r

    assert httpay.Policy(approve=queue.aapprove).approver_is_async()
    r = asyncio.run(go())
    assert r.status_code == 200 and len(w.calls) == 1


def test_progress_ticks_while_waiting_and_the_spinner_shows_elapsed_time(ledger_path: Path) -> None:
    seen: list[tuple[int, float]] = []

    @contextmanager
    def watch(a: Approval) -> Iterator[Callable[[float], None]]:
        yield lambda elapsed: seen.append((a.id, elapsed))

    with ApprovalQueue(ledger_path, timeout_s=0.1, poll_s=0.02, progress=watch) as q, pytest.raises(httpay.PaymentRefused):
        q(decision())
    assert seen and all(i == 1 for i, _ in seen) and seen[-1][1] >= seen[0][1]

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    with ApprovalQueue(ledger_path, timeout_s=0.1, poll_s=0.02, progress=spinner(console)) as q, \
            pytest.raises(httpay.PaymentRefused):
        q(decision())
    text = out.getvalue()
    assert "waiting for approval #2: 1 Credit Package ($0.01 ≈ 10 sat ($0.01)) for stock.test" in text
    assert "0:00" in text and "httpay approvals approve 2" in text


def test_an_approval_reads_well() -> None:
    from datetime import datetime

    a = Approval(id=3, status="waiting", created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), decided_at=None,
                 host="stock.test", url=URL, offer_id="offer_x", offer_title="<b>1 Credit</b>", offer_price="$0.01",
                 price_msat=10_000, method="lightning", usd_per_btc=100_000, decided_by=None, reason=None)
    assert str(a) == "approval #3 waiting: pay offer_x '<b>1 Credit</b>' ($0.01 ≈ 10 sat ($0.01)) by lightning for stock.test"
    assert a.to_dict()["price_msat"] == 10_000
    html = a._repr_html_()
    assert "&lt;b&gt;1 Credit&lt;/b&gt;" in html and "<b>1 Credit</b>" not in html
    text = _render(a)
    assert "waiting" in text and "$0.01 ≈ 10 sat" in text


def _render(obj: object, width: int = 120) -> str:
    c = Console(record=True, width=width, file=io.StringIO())
    c.print(obj)
    return c.export_text()
