"""httpcore's connection pool, kept from closing a connection it has handed to a request.

httpcore 1.0 (encode/httpcore#1110) hands an idle connection to a waiting request, and the
connection stays idle until that request's thread or task starts on it. A pass the pool makes
meanwhile, for another request, may still close it: as a surplus keep-alive, as expired, or to make
room. The close runs outside the pool's lock, so it can land after the request started: the socket
is closed under a request the server may already have acted on (a credit spent), and its answer is
lost. A crowd meeting one 402 makes that likely: it waits on one payment, then sends all at once
on connections idle for as long as the payment took. An idempotent request sent once more then
reaches the server twice.

`keep_assigned` makes each connection the pool creates answer "neither idle nor expired" while a
request the pool holds refers to it; everything else is httpcore's own.
"""

from __future__ import annotations

from typing import Any

import httpcore
import httpx

_KEPT = "_httpay_kept"


class _Kept:
    """A pooled connection that is neither idle nor expired while a request of the pool holds it."""

    __slots__ = ("_inner", "held")

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.held = False

    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        response: httpcore.Response = self._inner.handle_request(request)
        return response

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        response: httpcore.Response = await self._inner.handle_async_request(request)
        return response

    def close(self) -> None:
        self._inner.close()

    async def aclose(self) -> None:
        await self._inner.aclose()

    def info(self) -> str:
        return str(self._inner.info())

    def can_handle_request(self, origin: httpcore.Origin) -> bool:
        return bool(self._inner.can_handle_request(origin))

    def is_available(self) -> bool:
        return bool(self._inner.is_available())

    def has_expired(self) -> bool:
        return not self.held and bool(self._inner.has_expired())

    def is_idle(self) -> bool:
        return not self.held and bool(self._inner.is_idle())

    def is_closed(self) -> bool:
        return bool(self._inner.is_closed())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return repr(self._inner)


def keep_assigned(transport: httpx.BaseTransport | httpx.AsyncBaseTransport) -> bool:
    """Keep the pool of `transport` (one httpx builds, sync or async, proxies included) from closing a
    connection it has handed to a request. False, and nothing changed, for any other transport or
    a pool that already holds connections (they would not be kept)."""
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, httpcore.ConnectionPool | httpcore.AsyncConnectionPool):
        return False
    if getattr(pool, _KEPT, False):
        return True
    create, assign = getattr(pool, "create_connection", None), getattr(pool, "_assign_requests_to_connections", None)
    if (not callable(create) or not callable(assign) or not isinstance(getattr(pool, "_requests", None), list)
            or getattr(pool, "_connections", None) != []):
        return False

    def create_connection(origin: httpcore.Origin) -> Any:
        return _Kept(create(origin))

    def assign_requests_to_connections() -> Any:
        # Called under the pool's lock: mark what the pool's requests hold, then its own pass.
        for connection in pool._connections:
            if isinstance(connection, _Kept):
                connection.held = False
        for request in pool._requests:
            held = getattr(request, "connection", None)
            if isinstance(held, _Kept):
                held.held = True
        return assign()

    pool.create_connection = create_connection  # type: ignore[method-assign]
    pool._assign_requests_to_connections = assign_requests_to_connections  # type: ignore[method-assign]
    setattr(pool, _KEPT, True)
    return True


def pooled_client(**kwargs: Any) -> httpx.Client:
    """An `httpx.Client` (built from `kwargs`) whose pools keep the connections they hand out: for a
    wallet's own calls, where a payment's POST closed under it leaves the payment's fate unknown."""
    client = httpx.Client(**kwargs)
    keep_assigned(client._transport)
    for transport in client._mounts.values():
        if transport is not None:
            keep_assigned(transport)
    return client
