"""Sync I/O bounded in total by a payment's deadline.

A socket timeout bounds each read, not their sum: a service dribbling a byte at a time, each within
the timeout, could hold a payment open for ever. Two ways to bound the whole:

- **In the caller's thread** (`bounding`), on the transports httpx builds (`install`): their
  connections are made through `BoundedBackend`, whose streams give every read and write at most
  what is left of the deadline in force in this thread. No thread hand-over on a paid request's
  sends; a new connection (name lookup, every address tried) and its TLS handshake (many reads)
  still go to a helper thread, which alone can cut them short as a whole.
- **In a helper thread** (`within`), for any other transport (a mock, a custom one): the caller
  waits only until the deadline and abandons the work.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpcore
import httpx

from httpay.core.deadline import Deadline
from httpay.core.workers import WORKERS

T = TypeVar("T")
_SLACK_S = 0.05  # a socket timeout this close to the deadline is the deadline's
_PIECE = 16_384  # a write gives each piece of its buffer only what is left of the deadline


def deadline_or(error: BaseException, deadline: Deadline, stage: str) -> BaseException:
    """A timeout that fired with the deadline all but spent was the deadline's cut, not the caller's
    own timeout: report it as the deadline, whichever clock noticed first."""
    if isinstance(error, httpx.TimeoutException | httpcore.TimeoutException) and deadline.remaining() <= _SLACK_S:
        return deadline.exceeded(stage)
    return error


def within(deadline: Deadline, stage: str, work: Callable[[threading.Event], T],
           discard: Callable[[T], None]) -> T:
    """Run `work` in a helper thread and wait for it only until the deadline. Past it the work is
    abandoned (told by the event, its late result discarded) and the caller gets
    PaymentDeadlineExceeded."""
    lock = threading.Lock()
    done, abandoned = threading.Event(), threading.Event()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = work(abandoned)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            box["error"] = exc
        with lock:
            done.set()
            late = abandoned.is_set()
        if late and "value" in box:
            discard(box["value"])

    WORKERS.submit(target)
    done.wait(max(deadline.remaining(), 0.0))
    with lock:
        if not done.is_set():
            abandoned.set()
            raise deadline.exceeded(stage)
    if "error" in box:
        raise deadline_or(box["error"], deadline, stage)
    return box["value"]  # type: ignore[no-any-return]


# -- in the caller's thread ---------------------------------------------------------------------------
class _InForce(threading.local):
    deadline: Deadline | None = None


_IN_FORCE = _InForce()
_INSTALLED: weakref.WeakSet[httpx.BaseTransport] = weakref.WeakSet()


@contextmanager
def bounding(deadline: Deadline) -> Iterator[None]:
    """Within this block, this thread's reads and writes on a bounded stream end by `deadline`."""
    before, _IN_FORCE.deadline = _IN_FORCE.deadline, deadline
    try:
        yield
    finally:
        _IN_FORCE.deadline = before


def _cut(timeout: float | None, deadline: Deadline) -> float:
    """The socket timeout for one operation: the caller's, but never past the deadline (a tiny
    positive value once it has passed, so the operation times out instead of blocking or failing)."""
    left = deadline.remaining()
    return max(left if timeout is None else min(timeout, left), 1e-6)


class BoundedStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the deadline in force in its thread, if any.
    With none in force (every unpaid request) a read or write is the inner stream's own, one call away;
    `get_extra_info` is the inner stream's itself."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner
        self._read, self._write = inner.read, inner.write
        self.get_extra_info = inner.get_extra_info  # type: ignore[method-assign]  # asked on every request; nothing to bound

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        deadline = _IN_FORCE.deadline
        if deadline is not None and deadline.remaining() <= 0:  # a socket timeout never fires while data keeps coming
            raise httpcore.ReadTimeout("the payment deadline has passed")
        return self._read(max_bytes, timeout if deadline is None else _cut(timeout, deadline))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        deadline = _IN_FORCE.deadline
        if deadline is None or len(buffer) <= _PIECE:
            self._write(buffer, timeout if deadline is None else _cut(timeout, deadline))
            return
        view = memoryview(buffer)  # a slow reader is cut piece by piece, not given the whole timeout per send
        for start in range(0, len(buffer), _PIECE):
            self._write(bytes(view[start:start + _PIECE]), _cut(timeout, deadline))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        deadline = _IN_FORCE.deadline
        if deadline is None:
            return BoundedStream(self._inner.start_tls(ssl_context, server_hostname, timeout))
        # a handshake is many reads, each given the whole timeout: bounded as a whole in a helper thread
        return BoundedStream(within(deadline, f"the TLS handshake with {server_hostname or 'the server'}",
                                    lambda abandoned: self._inner.start_tls(ssl_context, server_hostname,
                                                                            _cut(timeout, deadline)),
                                    lambda late: late.close()))


class BoundedBackend(httpcore.NetworkBackend):
    """httpcore's network backend, its connections made as `BoundedStream`s. Under a deadline a new
    connection is made in a helper thread (`within`): a name lookup takes no socket timeout, and
    a name with many addresses would get the whole timeout for each."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        deadline = _IN_FORCE.deadline
        if deadline is None:
            return BoundedStream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))
        stream = within(deadline, f"the connection to {host}",
                        lambda abandoned: self._inner.connect_tcp(host, port, _cut(timeout, deadline), local_address,
                                                                  socket_options),
                        lambda late: late.close())
        return BoundedStream(stream)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        deadline = _IN_FORCE.deadline
        return BoundedStream(self._inner.connect_unix_socket(
            path, timeout if deadline is None else _cut(timeout, deadline), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def install(transport: httpx.BaseTransport) -> bool:
    """Make `transport`'s connections bounded, if it is one httpx builds (`httpx.HTTPTransport`, its
    proxies included) over HTTP/1.1 with no connection open yet. True: its sends under a deadline
    can run in the caller's thread. Anything else (a mock, a custom transport, HTTP/2, whose
    connections read for one another) keeps the helper thread."""
    if transport in _INSTALLED:
        return True
    pool = getattr(transport, "_pool", None) if isinstance(transport, httpx.HTTPTransport) else None
    backend = getattr(pool, "_network_backend", None)
    if (not isinstance(pool, httpcore.ConnectionPool) or not isinstance(backend, httpcore.NetworkBackend)
            or getattr(pool, "_http2", True) or pool.connections):
        return False
    if not isinstance(backend, BoundedBackend):
        pool._network_backend = BoundedBackend(backend)
    _INSTALLED.add(transport)
    return True


def installed(transport: httpx.BaseTransport) -> bool:
    """Whether `transport`'s sends under a deadline run in the caller's thread (see `install`)."""
    return transport in _INSTALLED
