"""The worker threads an AsyncClient hands its blocking calls to (`httpay.core.workers`): answers and
errors come back, a cancelled caller still waits for the write it began, no call queues behind a
slow one, and a forked child (a fleet's worker, a pre-forking server) gets threads of its own."""

from __future__ import annotations

import asyncio
import contextvars
import multiprocessing
import os
import threading
from typing import Any

import pytest

from httpay.core.workers import WORKERS, ToTheEnd, in_thread, to_the_end, to_the_end_in_thread

WHO = contextvars.ContextVar("WHO", default="nobody")


def test_the_answer_the_error_and_the_context_come_back() -> None:
    def boom() -> None:
        raise ValueError("the ledger said no")

    async def main() -> tuple[Any, Any, str]:
        WHO.set("agent-7")
        return (await in_thread(lambda a, b: a + b, 2, 3), await in_thread(threading.get_ident),
                await in_thread(WHO.get))

    total, ident, who = asyncio.run(main())
    assert (total, who) == (5, "agent-7") and ident != threading.get_ident()
    with pytest.raises(ValueError, match="the ledger said no"):
        asyncio.run(in_thread(boom))


def test_a_cancelled_caller_waits_for_the_write_it_began() -> None:
    """The task is cancelled while its call runs: the call finishes (its write is on record) before
    the cancellation reaches the caller, however many times it is cancelled meanwhile."""
    started, release = threading.Event(), threading.Event()
    written: list[str] = []

    def write() -> str:
        started.set()
        release.wait(10)
        written.append("row")
        return "row"

    async def main() -> str:
        task = asyncio.create_task(in_thread(write))
        await asyncio.to_thread(started.wait, 10)
        for _ in range(3):
            task.cancel()
            await asyncio.sleep(0.01)
            assert not task.done(), "the caller moved on while its write was still being made"
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        return written[0]

    assert asyncio.run(main()) == "row"


def test_a_call_to_the_end_hands_back_its_answer_beside_the_cancellation() -> None:
    """`to_the_end_in_thread` and `to_the_end` (a coroutine) lose nothing to a cancellation: the
    call's answer, or its error, comes back with the first cancellation, for the caller to raise."""
    started, release = threading.Event(), threading.Event()

    def pay() -> str:
        started.set()
        release.wait(10)
        return "preimage"

    def refuse() -> str:
        started.set()
        release.wait(10)
        raise ValueError("no route")

    async def apay() -> str:
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.001)
        return "preimage"

    async def cancelled_meanwhile(call: Any) -> ToTheEnd:
        started.clear()
        release.clear()
        task = asyncio.create_task(call())
        await asyncio.to_thread(started.wait, 10)
        for _ in range(3):
            task.cancel()
            await asyncio.sleep(0.01)
            assert not task.done()
        release.set()
        ended: ToTheEnd = await task  # no CancelledError: it is handed back
        return ended

    async def main() -> None:
        ended = await cancelled_meanwhile(lambda: to_the_end_in_thread(pay))
        assert ended.value == "preimage" and ended.error is None
        assert isinstance(ended.cancelled, asyncio.CancelledError)
        ended = await cancelled_meanwhile(lambda: to_the_end_in_thread(refuse))
        assert ended.value is None and isinstance(ended.error, ValueError)
        assert isinstance(ended.cancelled, asyncio.CancelledError)
        ended = await cancelled_meanwhile(lambda: to_the_end(apay))
        assert ended.value == "preimage" and isinstance(ended.cancelled, asyncio.CancelledError)
        assert await to_the_end_in_thread(lambda: 5) == ToTheEnd(5, None, None)  # never cancelled: nothing held

    asyncio.run(main())


def test_no_call_waits_behind_a_slow_one() -> None:
    """A call that blocks (a person deciding, a wallet paying) leaves the next call its own thread."""
    gate = threading.Event()

    async def main() -> None:
        slow = asyncio.create_task(in_thread(gate.wait, 10))
        await asyncio.sleep(0.01)
        await asyncio.wait_for(in_thread(gate.set), 10)
        assert await slow is True

    asyncio.run(main())


def _child(out: Any) -> None:
    out.put(asyncio.run(asyncio.wait_for(in_thread(os.getpid), 10)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_gets_threads_of_its_own() -> None:
    """The parent has an idle worker when it forks; the child has none of the parent's threads, and
    must not hand its call to one that is not there (it would wait for ever)."""
    asyncio.run(in_thread(lambda: None))  # leaves an idle worker in this process
    assert WORKERS._idle > 0
    fork = multiprocessing.get_context("fork")
    out = fork.Queue()
    child = fork.Process(target=_child, args=(out,))
    child.start()
    child.join(30)
    assert child.exitcode == 0, "the forked child's call was never run"
    assert out.get(timeout=5) == child.pid
