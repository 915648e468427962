"""httpcore's connection pool: kept from closing a connection it has handed to a request, and asked
whether a dropped request's connection was opened for it.

httpcore 1.0 (encode/httpcore#1110) hands an idle connection to a waiting request, and the
connection stays idle until that request's thread or task starts on it. A pass the pool makes
meanwhile, for another request, may still close it: as a surplus keep-alive, as expired, or to make
room. The close runs outside the pool's lock, so it can land after the request started: the socket
is closed under a request the server may already have acted on (a credit spent), and its answer is
lost. A crowd meeting one 402 makes that likely: it waits on one payment, then sends all at once
on connections idle for as long as the payment took. An idempotent request sent once more then
reaches the server twice.

`keep_assigned` makes each connection a request of the pool holds answer "neither idle nor
expired" to the pool's passes; everything else is httpcore's own. Only a held connection is
touched (its two answers shadowed, from one pass to the next), so a pool that serves one request
at a time costs next to nothing more.

`opened_for` tells, after a request's connection dropped, whether the pool opened that connection
for it: only a request that went out on a kept-alive connection may be sent once more.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpcore
import httpx

_KEPT = "_httpay_kept"
_SHADOWED = ("is_idle", "has_expired")


def _no() -> bool:
    return False


def keep_assigned(transport: httpx.BaseTransport | httpx.AsyncBaseTransport) -> bool:
    """Keep the pool of `transport` (one httpx builds, sync or async, proxies included) from closing a
    connection it has handed to a request. False, and nothing changed, for any other transport."""
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, httpcore.ConnectionPool | httpcore.AsyncConnectionPool):
        return False
    if getattr(pool, _KEPT, False):
        return True
    assign = getattr(pool, "_assign_requests_to_connections", None)
    if not callable(assign) or not isinstance(getattr(pool, "_requests", None), list):
        return False
    held: list[Any] = []

    def assign_requests_to_connections() -> Any:
        # Called under the pool's lock: what its requests hold now is shadowed until the next pass.
        # (Run twice per request: kept to a loop over the pool's requests when nothing is held.)
        if held:
            for connection in held:
                for name in _SHADOWED:
                    vars(connection).pop(name, None)
            held.clear()
        for request in pool._requests:
            connection = getattr(request, "connection", None)  # (a later httpcore may name it otherwise)
            shadows = getattr(connection, "__dict__", None)  # (None: no connection yet, or one with slots)
            if shadows is not None and "is_idle" not in shadows:
                shadows["is_idle"] = shadows["has_expired"] = _no
                held.append(connection)
        return assign()

    pool._assign_requests_to_connections = assign_requests_to_connections  # type: ignore[method-assign]
    setattr(pool, _KEPT, True)
    return True


_Client = TypeVar("_Client", httpx.Client, httpx.AsyncClient)


def kept(client: _Client) -> _Client:
    """`client`, its pools (the default transport's and every mount's) keeping the connections they
    hand out: for the clients httpay builds for itself (a wallet's, an MPP session's), where a
    payment's POST closed under it leaves the payment's fate unknown."""
    keep_assigned(client._transport)
    for transport in client._mounts.values():
        if transport is not None:
            keep_assigned(transport)
    return client


def _connection_codes() -> tuple[Any, ...]:
    """The code of the httpcore methods that open a pooled connection for the request they serve
    (sync and async): their frame holds `stream` only when this request opened the connection."""
    methods = (getattr(httpcore.HTTPConnection, "handle_request", None),
               getattr(httpcore.AsyncHTTPConnection, "handle_async_request", None))
    codes = (getattr(method, "__code__", None) for method in methods)
    # (a later httpcore laid out otherwise: unknown, as for any transport)
    return tuple(code for code in codes if code is not None and "stream" in code.co_varnames)


_OPENING = _connection_codes()


def opened_for(dropped: BaseException) -> bool | None:
    """Whether the request that failed with `dropped` went out on a connection opened for it (True),
    or on one the pool had kept alive (False); None when it cannot be told (not httpcore's pool).

    Read from the traceback httpcore's error carries (httpx raises its own from it), so a request
    that succeeds costs nothing: the frame of the connection's `handle_request` holds `stream` only
    if that call connected."""
    seen: set[int] = set()
    error: BaseException | None = dropped
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        tb = error.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code in _OPENING:
                return "stream" in tb.tb_frame.f_locals
            tb = tb.tb_next
        error = error.__cause__ or error.__context__
    return None
