"""A Lightning payment is written down while its retry is on the way (`Beside`), and the record
stays the truth: settled by the time the answer reaches the caller, finished when the caller gives
up, and a failure to record it said plainly, with the answer the payment bought kept on the error.

The real flow through the real drivers, with the scripted services, wallet and node of the scenario
table; the ledger is a real SQLite one whose writes a test can hold up or break.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

import httpay
from httpay.core.flow import receipt_of, request_flow
from httpay.core.payer import Payer
from httpay.core.transport import _AsyncFlights, _drive_async
from httpay.errors import LedgerError, PaidRequestFailed
from httpay.ledger.models import Status
from httpay.ledger.sqlite import SQLiteLedger
from httpay.policy import Policy
from tests.core.test_flow_scenarios import CLASSIC, RATE, URLS, V02, Node, ScriptedWallet, Service, drive
from tests.helpers import thread_hops

WAIT_S = 5.0  # how long a held write waits for the retry before the test calls the order wrong


class HeldLedger(SQLiteLedger):
    """Settles only once `release` is set (or `WAIT_S` passed), noting whether it was; `broken`
    makes settling fail as a full disk would; `slow_token_s` holds up storing the credential."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.release = threading.Event()
        self.released_first: bool | None = None
        self.hold = False
        self.broken = False
        self.slow_token_s = 0.0

    def save_token(self, *args: Any, **kwargs: Any) -> None:
        if self.slow_token_s:
            threading.Event().wait(self.slow_token_s)
        super().save_token(*args, **kwargs)

    def settle(self, *args: Any, **kwargs: Any) -> Any:
        if self.hold:
            self.released_first = self.release.wait(WAIT_S)
        if self.broken:
            raise LedgerError("ledger /tmp/x.db: database or disk is full")
        return super().settle(*args, **kwargs)


@pytest.fixture
def ledger() -> Iterator[HeldLedger]:
    opened = HeldLedger()
    yield opened
    opened.close()


def payer_for(ledger: HeldLedger, node: Node) -> Payer:
    return Payer(wallet=ScriptedWallet(node), policy=Policy(usd_per_btc=RATE), ledger=ledger,
                 retries_after_payment=2, retry_delay_s=0.0)


class Retries:
    """Wraps a service: `seen` is set once the paid request comes back (its second GET of the resource)."""

    def __init__(self, service: Service, url: str) -> None:
        self.service, self.path = service, httpx.URL(url).path
        self.gets = 0
        self.seen = threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == self.path:
            self.gets += 1
            if self.gets == 2:
                self.seen.set()
        return self.service(request)


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("dialect", [CLASSIC, V02])
def test_the_retry_goes_out_while_the_payment_is_written_down(dialect: str, driver: str,
                                                              ledger: HeldLedger) -> None:
    """The ledger's settle is held until the service has the paid retry: it completes (one after the
    other it would wait in vain), and the answer comes back with the row already settled."""
    node = Node()
    service = Service(dialect, node)
    retries = Retries(service, URLS[dialect])
    ledger.hold, ledger.release = True, retries.seen
    response = drive(driver, payer_for(ledger, node), httpx.Request("GET", URLS[dialect]), retries)  # type: ignore[arg-type]

    assert response.status_code == 200 and response.json() == {"served": True}
    assert ledger.released_first is True  # the settle saw the retry arrive before it wrote
    receipt = receipt_of(response)
    assert receipt is not None and receipt.status is Status.SETTLED and receipt.preimage
    [row] = ledger.receipts()
    assert row.status is Status.SETTLED and row.id == receipt.id and row.fee_msat == receipt.fee_msat
    assert service.served == 1 and len(node.paid) == 1
    if dialect == CLASSIC:  # the credential bought is stored: the next request presents it
        assert ledger.token_scopes()


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("dialect", [CLASSIC, V02])
def test_a_payment_that_cannot_be_written_down_says_so_and_keeps_its_answer(dialect: str, driver: str,
                                                                          ledger: HeldLedger) -> None:
    """Money left and the ledger refused the settle: PaidRequestFailed says the row stays pending and
    how to settle it, and carries the answer the payment bought, read whole."""
    node = Node()
    service = Service(dialect, node)
    ledger.broken = True
    with pytest.raises(PaidRequestFailed) as caught:
        drive(driver, payer_for(ledger, node), httpx.Request("GET", URLS[dialect]), service)

    error = caught.value
    assert "recording the payment failed (LedgerError)" in str(error) and "httpay ledger reconcile" in str(error)
    assert isinstance(error.response, httpx.Response) and error.response.status_code == 200
    assert error.response.json() == {"served": True}  # read whole: usable, its connection back in the pool
    [row] = ledger.receipts()
    assert row.status is Status.PENDING and error.receipt.id == row.id
    assert len(node.paid) == 1 and service.served == 1  # paid once, served once: nothing repeated


def test_a_cancelled_async_request_still_finishes_writing_its_payment(ledger: HeldLedger) -> None:
    """The caller gives up while the retry is out and the credential is still being stored: the
    cancellation reaches the caller, and the payment's record is finished all the same."""
    node = Node()
    service = Service(CLASSIC, node)
    retry_out = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if "authorization" in request.headers:  # the paid retry: it never answers
            retry_out.set()
            await anyio.sleep_forever()
        return service(request)

    ledger.slow_token_s = 0.3  # the cancellation lands while the record is being written
    transport = httpx.MockTransport(handler)
    payer = payer_for(ledger, node)

    async def go() -> None:
        task = asyncio.create_task(_drive_async(request_flow(payer, httpx.Request("GET", URLS[CLASSIC])),
                                                lambda url: transport, payer, _AsyncFlights()))
        await retry_out.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    [row] = ledger.receipts()
    assert row.status is Status.SETTLED and row.preimage  # recorded, though nobody waited for it
    assert ledger.token_scopes()


class HeldWallet(ScriptedWallet):
    """Pays once `release` is set; `entered` once it was asked. `awaitable`: an async-native adapter
    (`apay_invoice`, awaited by the driver), else a blocking one (run in a worker thread)."""

    def __init__(self, node: Node, awaitable: bool) -> None:
        super().__init__(node)
        self.entered, self.release = threading.Event(), threading.Event()
        if awaitable:
            self.apay_invoice = self._apay

    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Any:
        self.entered.set()
        assert self.release.wait(WAIT_S), "the wallet was never released"
        return super().pay_invoice(bolt11, max_fee_msat=max_fee_msat)

    async def _apay(self, bolt11: str, *, max_fee_msat: int | None = None) -> Any:
        self.entered.set()
        while not self.release.is_set():
            await asyncio.sleep(0.001)
        return super().pay_invoice(bolt11, max_fee_msat=max_fee_msat)


@pytest.mark.parametrize("awaitable", [False, True], ids=["blocking wallet", "async wallet"])
def test_a_request_cancelled_while_its_wallet_pays_records_the_payment_and_leaves_its_flight(
        awaitable: bool, ledger: HeldLedger) -> None:
    """The task is cancelled (again and again) while the wallet pays: the wallet's answer is awaited
    and recorded (settled, its credential stored), the flight is left, the paid retry is never sent
    (nobody awaits it), and the task ends cancelled."""
    node = Node()
    service = Service(CLASSIC, node)
    transport = httpx.MockTransport(service)
    wallet = HeldWallet(node, awaitable)
    payer = Payer(wallet=wallet, policy=Policy(usd_per_btc=RATE), ledger=ledger, retry_delay_s=0.0)
    flights = _AsyncFlights()

    async def go() -> None:
        task = asyncio.create_task(_drive_async(request_flow(payer, httpx.Request("GET", URLS[CLASSIC])),
                                                lambda url: transport, payer, flights))
        await anyio.to_thread.run_sync(wallet.entered.wait, WAIT_S)
        assert flights._flights, "the paying request holds no flight"
        for _ in range(3):
            task.cancel()
            for _ in range(10):
                await asyncio.sleep(0)
            assert not task.done(), "the request stopped while its wallet was still paying"
        wallet.release.set()
        with anyio.fail_after(WAIT_S), pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    [row] = ledger.receipts()
    assert row.status is Status.SETTLED and row.preimage and len(node.paid) == 1
    assert ledger.token_scopes()  # the credential it bought: the next request presents it
    assert flights._flights == {}  # left: requests waiting on it go on
    assert service.served == 0  # the paid retry never went out


def test_requests_waiting_on_a_payment_are_released_once_it_is_written_down(ledger: HeldLedger) -> None:
    """Two requests meet the same scope's 402; one pays. Its retry is answered only after the other
    request is served: the waiter is released when the payment is recorded, not after the retry."""
    node = Node()
    service = Service(CLASSIC, node)
    waiter_served = threading.Event()
    payer_met_402 = threading.Event()
    waiter_met_402 = threading.Event()
    threads: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        who = request.headers["x-who"]
        if "authorization" not in request.headers:
            (payer_met_402 if who == "payer" else waiter_met_402).set()
        elif who == "payer":  # the paying request's own retry: held until the waiter is served
            assert waiter_served.wait(WAIT_S), "the waiter was held until the payer's retry was answered"
        return service(request)

    class Wallet(ScriptedWallet):
        def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Any:
            assert waiter_met_402.wait(WAIT_S)  # both requests are in before anything is paid
            threading.Event().wait(0.05)  # the waiter is joining the flight
            return super().pay_invoice(bolt11, max_fee_msat=max_fee_msat)

    payer = Payer(wallet=Wallet(node), policy=Policy(usd_per_btc=RATE), ledger=ledger, retries_after_payment=2,
                  retry_delay_s=0.0)
    with httpx.Client(transport=httpay.PaymentTransport(payer, httpx.MockTransport(handler))) as client:
        answers: dict[str, httpx.Response] = {}

        def get(who: str) -> None:
            answers[who] = client.get(URLS[CLASSIC], headers={"x-who": who})
            threads.append(who)
            if who == "waiter":
                waiter_served.set()

        first = threading.Thread(target=get, args=("payer",))
        first.start()
        assert payer_met_402.wait(WAIT_S)
        second = threading.Thread(target=get, args=("waiter",))
        second.start()
        first.join(WAIT_S * 2)
        second.join(WAIT_S * 2)

    assert threads == ["waiter", "payer"]
    assert all(r.status_code == 200 for r in answers.values())
    assert len(node.paid) == 1 and service.served == 2  # one payment served both
    assert [r.status for r in ledger.receipts()] == [Status.SETTLED]


def test_an_async_payment_is_written_down_in_one_worker_thread(ledger: HeldLedger, monkeypatch: Any) -> None:
    """On an AsyncClient the credential and the settle are written one after the other in the same
    worker thread: one hand-over for the record, not one per write (each costs the loop a wake-up)."""
    from httpay.core.effects import SaveToken, Settle

    hops = thread_hops(monkeypatch)
    node = Node()
    service = Service(CLASSIC, node)
    response = drive("async", payer_for(ledger, node), httpx.Request("GET", URLS[CLASSIC]), service)
    assert response.status_code == 200 and ledger.token_scopes()
    assert ledger.receipts()[0].status is Status.SETTLED
    assert not [h for h in hops if isinstance(h, SaveToken | Settle)], "a write of the record took a hop of its own"
    assert [getattr(h, "__qualname__", "") for h in hops].count("_aside_job.<locals>.job") == 1


def test_an_async_record_with_no_thread_to_be_had_is_written_on_the_loop(ledger: HeldLedger,
                                                                         monkeypatch: Any) -> None:
    """An interpreter that can start no more threads (shutting down) still gets its payment written
    down, on the event loop itself: the row settled, the credential kept, the answer served."""
    from httpay.core import transport

    real = transport.in_thread

    async def no_thread_for_the_record(func: Any, *args: Any) -> Any:
        if "_aside_job" in getattr(func, "__qualname__", ""):
            raise RuntimeError("can't start new thread")
        return await real(func, *args)

    monkeypatch.setattr(transport, "in_thread", no_thread_for_the_record)
    node = Node()
    service = Service(CLASSIC, node)
    response = drive("async", payer_for(ledger, node), httpx.Request("GET", URLS[CLASSIC]), service)
    assert response.status_code == 200 and ledger.token_scopes() and len(node.paid) == 1
    assert ledger.receipts()[0].status is Status.SETTLED
