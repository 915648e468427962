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
from collections.abc import Callable
from typing import Any, TypeVar

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


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a worker thread (with this task's context variables), awaited. Like anyio's
    `to_thread.run_sync`, the call is never abandoned: a cancellation waits for it to finish and
    is raised then, so a ledger write begun is a write finished and seen. On an event loop other
    than asyncio's, anyio's own threads."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not on asyncio (trio)
        return await anyio.to_thread.run_sync(fn, *args)
    done: asyncio.Future[T] = loop.create_future()
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
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        while not done.done():  # the call runs on: wait for it, however often we are cancelled
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                continue
            except BaseException:  # noqa: BLE001 - its own outcome no longer matters: the cancel does
                break
        raise
