"""Threads kept waiting for httpay's blocking work, and the one way the async driver uses them.

A thread hand-over is most of what a ledger write costs an `AsyncClient` payment: anyio's
`to_thread.run_sync` took 0.45-0.6 ms on this project's machine after a few milliseconds of network
wait, a job put on an idle thread here and answered with `call_soon_threadsafe` about half that.
The same threads carry the sync client's deadline-bounded reads and the writes made beside a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

import anyio.to_thread

T = TypeVar("T")


class Workers:
    """Daemon threads taking jobs from one queue. When every thread is busy a new one is started,
    so no job waits behind another (an abandoned read holds its thread until its socket gives up;
    a person asked to approve may take minutes). A thread idle for a minute goes. Daemons: a process
    may exit while a read it abandoned is still hanging. After a fork the child starts afresh (the
    parent's threads are not in it)."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        """Run `job` (which must not raise) in a worker thread; RuntimeError if none can be started."""
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1
        self._jobs.put(job)
        if start:
            threading.Thread(target=self._work, args=(self._jobs,), name="httpay-worker", daemon=True).start()

    def _work(self, jobs: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            try:
                job = jobs.get(timeout=60.0)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0 and jobs.empty():
                        self._idle -= 1
                        return  # idle for a minute: let the thread go
                continue
            job()
            with self._lock:
                self._idle += 1


WORKERS = Workers()


def _deliver(done: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if done.done():
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(value)


class ToTheEnd(NamedTuple):
    """A call awaited to its end: its value or the exception it raised, and the first cancellation
    of the awaiting task that came meanwhile (None: none came), for the caller to raise once it has
    used the answer."""

    value: Any
    error: BaseException | None
    cancelled: BaseException | None


async def _wait_out(done: asyncio.Future[Any]) -> ToTheEnd:
    """`done`'s outcome, however often this task is cancelled while it runs on."""
    cancelled: BaseException | None = None
    while True:
        try:
            return ToTheEnd(await asyncio.shield(done), None, cancelled)
        except asyncio.CancelledError as exc:
            if not done.done():
                cancelled = cancelled or exc
                continue  # the call runs on: wait for it
            cancelled = cancelled or exc  # (it ended as the cancel came, or it was itself cancelled)
            if done.cancelled():
                return ToTheEnd(None, exc, cancelled)
            error = done.exception()
            return ToTheEnd(None if error is not None else done.result(), error, cancelled)
        except BaseException as exc:  # noqa: BLE001 - its outcome, handed to the caller
            return ToTheEnd(None, exc, cancelled)


def _submit(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], args: tuple[Any, ...]) -> asyncio.Future[Any]:
    done: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def job() -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            value = context.run(fn, *args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            error = exc
        with contextlib.suppress(RuntimeError):  # a loop closed meanwhile: nobody is waiting any more
            loop.call_soon_threadsafe(_deliver, done, value, error)

    WORKERS.submit(job)
    return done


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a worker thread (with this task's context variables), awaited. Like anyio's
    `to_thread.run_sync`, the call is never abandoned: a cancellation waits for it to finish and
    is raised then, so a ledger write begun is a write finished and seen. On an event loop other
    than asyncio's, anyio's own threads."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not on asyncio (trio)
        return await anyio.to_thread.run_sync(fn, *args)
    ended = await _wait_out(_submit(loop, fn, args))
    if ended.cancelled is not None:
        raise ended.cancelled  # its own outcome no longer matters: the cancel does
    if ended.error is not None:
        raise ended.error
    result: T = ended.value
    return result


async def to_the_end_in_thread(fn: Callable[..., Any], *args: Any) -> ToTheEnd:
    """`fn(*args)` in a worker thread, as `in_thread`, but its answer is never lost to a cancellation:
    the cancellation is handed back beside it (for a wallet's answer, which must be recorded before
    the caller stops). On trio the call is shielded, and the cancellation comes at the next checkpoint."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not on asyncio (trio)
        with anyio.CancelScope(shield=True):
            try:
                return ToTheEnd(await anyio.to_thread.run_sync(fn, *args), None, None)
            except Exception as exc:  # noqa: BLE001 - its outcome, handed to the caller
                return ToTheEnd(None, exc, None)
    return await _wait_out(_submit(loop, fn, args))


async def to_the_end(call: Callable[[], Awaitable[Any]]) -> ToTheEnd:
    """`await call()`, never abandoned: a cancellation of this task waits for it to end and is handed
    back beside its answer (`to_the_end_in_thread` for a coroutine, an async wallet's payment)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # not on asyncio (trio)
        with anyio.CancelScope(shield=True):
            try:
                return ToTheEnd(await call(), None, None)
            except Exception as exc:  # noqa: BLE001 - its outcome, handed to the caller
                return ToTheEnd(None, exc, None)
    return await _wait_out(asyncio.ensure_future(call()))
