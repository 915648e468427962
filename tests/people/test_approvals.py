"""The approval queue: a payment waits until a person answers; no answer in time means no."""

from __future__ import annotations

import asyncio
import dataclasses
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
from httpay.errors import ApprovalError, ApprovalExpired, ConfigError
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


@pytest.mark.parametrize("where", ["starting the wait's view", "before the first sleep", "reading the answer"])
def test_ctrl_c_in_the_waits_own_work_denies_its_approval(ledger_path: Path, where: str) -> None:
    """Ctrl-C (or SIGTERM made an exception) can land anywhere once the approval is written, not only
    in a sleep: while the spinner starts, while the first look runs. Every such stop closes the row,
    which was left "waiting" for a person whose yes would pay for nothing (seen in CI: a signal sent
    the moment the approval appeared)."""
    looks = 0

    @contextmanager
    def stopped_view(approval: Approval) -> Iterator[Callable[[float], None]]:
        if where == "starting the wait's view":
            raise KeyboardInterrupt

        def tick(elapsed: float) -> None:
            if where == "before the first sleep":
                raise KeyboardInterrupt
        yield tick

    with ApprovalQueue(ledger_path, timeout_s=30, poll_s=0.02, progress=stopped_view) as q:
        real_get = q.get

        def get(approval_id: int) -> Approval:
            nonlocal looks
            looks += 1
            if where == "reading the answer" and looks == 2:
                raise KeyboardInterrupt
            return real_get(approval_id)
        q.get = get  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            q(decision())
        a = real_get(1)
        assert (a.status, a.decided_by) == ("denied", "abandoned") and q.pending() == []


def test_an_answer_cannot_be_changed_and_unknown_ids_are_named(queue: ApprovalQueue) -> None:
    a = queue.add(decision())
    assert [x.id for x in queue.pending()] == [a.id]
    queue.decide(a.id, True, "alice")
    with pytest.raises(ApprovalError, match="already approved by alice"):
        queue.decide(a.id, False, "mallory")
    with pytest.raises(ApprovalError, match="no approval #99"):
        queue.decide(99, True, "alice")
    assert queue.get(a.id).status == "approved"


def test_an_approval_keeps_no_secret_of_its_url(queue: ApprovalQueue) -> None:
    """The queue is read by people (`httpay approvals --json`, the dashboard): a URL's password and a
    key in its query are masked where the approval is written, so no view can show them."""
    a = queue.add(decision("http://user:s3cretpw@stock.test/ticker/MSFT?api_key=k3yvalue&q=1"))
    for shown in (queue.get(a.id).url, str(queue.get(a.id).to_dict()), str(queue.pending())):
        assert "s3cretpw" not in shown and "k3yvalue" not in shown
    assert "q=1" in queue.get(a.id).url


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


def test_the_person_approving_sees_the_fees_the_payment_may_add(ledger: SQLiteLedger, ledger_path: Path) -> None:
    """Approving a Lightning payment allows its routing fees too (up to the cap every budget holds):
    the person sees that cap beside the price in `httpay approvals` (wide and narrow, and --json),
    the approval's own words, the dashboard's card and the --ask line, as the quote says it."""
    from starlette.testclient import TestClient

    from httpay.apps.approvals import lines
    from httpay.apps.dashboard import create_app

    fees = "+ up to 50 sat ($0.05) in fees"
    seen: dict[str, str] = {}
    out = io.StringIO()

    def person() -> None:
        with ApprovalQueue(ledger_path) as q:
            while not (waiting := q.pending()):
                time.sleep(0.01)
            [a] = waiting
            seen.update(words=str(a), wide=_render(a, 160), narrow=_render(a, 80), json=str(a.to_dict()))
            with TestClient(create_app(ledger, approvals=str(ledger_path), token="t" * 32)) as web:
                seen["card"] = web.get("/?token=" + "t" * 32).text
            q.decide(a.id, True, "alice")

    queue = ApprovalQueue(ledger_path, timeout_s=20, poll_s=0.02, progress=lines(Console(file=out, width=300)))
    svc = FakeService()
    w = FakeWallet(svc)
    pol = httpay.Policy(usd_per_btc=100_000, budget_usd=5, max_fee_msat=50_000, approve=queue)
    answering = threading.Thread(target=person, daemon=True)
    answering.start()
    with queue, httpay.Client(wallet=w, policy=pol, ledger=ledger, transport=httpx.MockTransport(svc)) as c:
        assert c.get(URL).status_code == 200
    answering.join()
    assert "($0.01 ≈ 10 sat ($0.01) + up to 50 sat ($0.05) in fees)" in seen["words"]
    assert fees in " ".join(seen["wide"].split())
    assert "in fees" in seen["narrow"]
    assert "'fee_cap_msat': 50000" in seen["json"] and fees in seen["json"]
    assert f"for <b>$0.01 ≈ 10 sat ($0.01) {fees}</b>" in seen["card"]
    assert fees in out.getvalue().splitlines()[0]


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


def test_a_request_that_keeps_waiting_stays_answerable_long_past_its_lease(ledger_path: Path) -> None:
    """The waiting request's heartbeat keeps its row answerable: only a request that stopped beating
    is taken for gone."""
    with ApprovalQueue(ledger_path, timeout_s=20, poll_s=0.02, heartbeat_s=0.05) as q:
        answers: list[object] = []
        asker = threading.Thread(target=lambda: answers.append(q(decision())), daemon=True)
        asker.start()
        while not q.pending():
            time.sleep(0.01)
        time.sleep(5 * q.lease_s)
        [a] = q.pending()
        assert a.state == "waiting" and a.deadline_at is not None and a.heartbeat_at is not None
        assert a.heartbeat_at > a.created_at  # beaten since it was written
        q.decide(a.id, True, "alice")
        asker.join(10)
    assert answers == [True]


PERSON_AHEAD = """
import json, sys, time
import httpay.apps.approvals as A
real = time.time
time.time = lambda: real() + 5.0  # this machine's clock runs 5 s ahead of the asker's
with A.ApprovalQueue(sys.argv[1]) as looking, A.ApprovalQueue(sys.argv[1]) as answering:
    first = looking.pending()
    time.sleep(1.5)  # a refreshed page, a beat later
    print(json.dumps({"first": [a.id for a in first], "then": [a.to_dict()["state"] for a in looking.pending()],
                      "answer": answering.decide(1, True, "alice").status}))
"""


def test_a_person_whose_clock_runs_ahead_still_answers_a_live_request(ledger_path: Path) -> None:
    """The asker and the person on two machines whose clocks disagree by more than a lease: by the
    person's clock the live request looks gone, but its heartbeat moves, so the person's page lists
    it once it saw a beat, their answer is taken (a fresh `httpay approvals approve` watches for one),
    and the request is paid, instead of being closed as abandoned while both waited."""
    import json
    import os
    import subprocess
    import sys

    answers: list[object] = []
    with ApprovalQueue(ledger_path, timeout_s=30, poll_s=0.05) as q:
        asker = threading.Thread(target=lambda: answers.append(q(decision())), daemon=True)
        asker.start()
        while not q.pending():
            time.sleep(0.01)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        person = subprocess.run([sys.executable, "-c", PERSON_AHEAD, str(ledger_path)], capture_output=True,
                                text=True, env=env, timeout=60, check=False)
        asker.join(30)
    assert person.returncode == 0, person.stderr
    seen = json.loads(person.stdout)
    assert seen["then"] == ["waiting"] and seen["answer"] == "approved", seen
    assert answers == [True]


def test_a_request_that_died_leaves_an_abandoned_approval_nobody_can_answer(ledger_path: Path) -> None:
    """A request killed while it waits (kill -9: no code of its own runs again) stops beating: its
    approval reads abandoned, and approving it is refused, saying nothing will be paid, instead of
    "approved: pay ..." for a request that no longer exists."""
    with ApprovalQueue(ledger_path, timeout_s=30, poll_s=0.02, heartbeat_s=0.02) as q:
        waiting = q._wait(decision())
        next(waiting)  # the row is written; then the asker is gone without a word
        time.sleep(2 * q.lease_s)
        assert q.pending() == []
        [gone] = q.unanswerable()
        assert (gone.id, gone.status, gone.state, gone.answerable) == (1, "waiting", "abandoned", False)
        assert "nobody waits for an answer, nothing will be paid" in str(gone) and "the request that asked stopped" in str(gone)
        assert gone.to_dict()["state"] == "abandoned" and gone.to_dict()["answerable"] is False
        assert gone.to_dict()["status"] == "abandoned"  # one truthful status (it read "waiting" beside "abandoned")
        with pytest.raises(ApprovalExpired) as refused:
            q.decide(1, True, "alice")
        assert refused.value.state == "abandoned" and refused.value.approval_id == 1
        assert "nobody waits for an answer and nothing will be paid" in str(refused.value)
        closed = q.get(1)
        assert (closed.status, closed.decided_by) == ("denied", "abandoned") and "alice" in (closed.reason or "")
        assert q.unanswerable() == [] and q.pending() == []
        with pytest.raises(ApprovalExpired, match="is closed: .*nothing will be paid"):  # and so it stays
            q.decide(1, True, "alice")
        with pytest.raises(StopIteration) as paused:  # a request that was only paused finds it denied: pays nothing
            next(waiting)
        assert paused.value.value is False


def test_an_approval_past_its_deadline_is_expired_and_its_request_says_nobody_answered(ledger_path: Path) -> None:
    with ApprovalQueue(ledger_path, timeout_s=0.2, poll_s=0.02) as q:
        waiting = q._wait(decision())
        next(waiting)
        [a] = q.pending()
        assert a.deadline_at is not None and 0.19 <= (a.deadline_at - a.created_at).total_seconds() <= 0.21
        time.sleep(0.25)
        assert q.pending() == [] and [x.state for x in q.unanswerable()] == ["expired"]
        with pytest.raises(ApprovalExpired, match=r"approval #1 is expired: nobody answered before its deadline") as late:
            q.decide(1, False, "bob")
        assert late.value.state == "expired"
        assert (q.get(1).status, q.get(1).decided_by) == ("denied", "timeout")
        with pytest.raises(httpay.PaymentRefused, match="nobody answered approval #1 within 0.2 s"):
            next(waiting)


def test_an_abandoned_approval_reads_as_such_in_its_view() -> None:
    from datetime import datetime, timedelta

    asked = datetime.now(UTC) - timedelta(seconds=30)
    a = Approval(id=4, status="waiting", created_at=asked, decided_at=None, host="stock.test", url=URL,
                 offer_id="offer_x", offer_title="1 Credit", offer_price="$0.01", price_msat=10_000, method="lightning",
                 usd_per_btc=100_000, decided_by=None, reason=None, deadline_at=asked + timedelta(seconds=300),
                 heartbeat_at=asked + timedelta(seconds=1), lease_s=3.0)
    text = _render(a, width=160)
    assert "abandoned" in text and "nobody waits" in text and "waiting" not in text
    live = dataclasses.replace(a, heartbeat_at=datetime.now(UTC))
    assert live.state == "waiting" and f"due {a.deadline_at:%H:%M:%S}" in _render(live, width=160)
