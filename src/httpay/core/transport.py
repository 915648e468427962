"""httpx transports that run the payment flow around any other transport, and its two drivers.

Why a transport and not only a Client subclass: a transport composes with every httpx feature
(auth, hooks, proxies, mounts, redirects, timeouts) and with clients we do not create, e.g.
`httpx.Client(transport=httpay.PaymentTransport(...))`. `httpay.Client` is a thin httpx.Client
subclass that installs it for you.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import anyio
import httpx

from httpay import safe
from httpay.core.bounded import bounding, deadline_or, install, installed, within
from httpay.core.deadline import Deadline
from httpay.core.effects import Ask, Beside, Effect, Join, Leave, Outcome, Pay, ReadBody, Send, Sign, SignMessage, Sleep
from httpay.core.flow import (
    DEADLINE_EXTENSION,
    DRY_RUN_EXTENSION,
    MAX_PRICE_EXTENSION,
    OFFER_EXTENSION,
    broken_off,
    first_send,
    receipt_of,
    request_flow,
    unreadable,
)
from httpay.core.payer import Payer
from httpay.core.pooled import keep_assigned, opened_for
from httpay.core.workers import WORKERS, ToTheEnd, in_thread, to_the_end, to_the_end_in_thread
from httpay.errors import ConfigError, HttpayError, PaymentRefused
from httpay.ledger.base import Ledger
from httpay.policy import CANCELLED
from httpay.safe import get_logger

log = get_logger("httpay")

DROPPED = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)  # the connection went, no answer
T = TypeVar("T")
SyncRoute = Callable[[httpx.URL], httpx.BaseTransport]
AsyncRoute = Callable[[httpx.URL], httpx.AsyncBaseTransport]


class _Flights(Protocol):
    """What the sync driver needs of a single-flight registry."""

    def join(self, key: str) -> bool: ...

    def leave(self, key: str) -> None: ...


class _SyncFlights:
    """In-process single-flight for sync clients: one payer per challenge key, the rest wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, threading.Event] = {}

    def join(self, key: str) -> bool:
        """False: the caller now owns the flight. True: it waited for another owner, who is done."""
        with self._lock:
            ev = self._flights.get(key)
            if ev is None:
                self._flights[key] = threading.Event()
                return False
        ev.wait()
        return True

    def leave(self, key: str) -> None:
        with self._lock:
            ev = self._flights.pop(key, None)
        if ev is not None:
            ev.set()


class _AsyncFlights:
    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Event] = {}

    async def join(self, key: str) -> bool:
        """False: the caller now owns the flight. True: it waited for another owner, who is done."""
        ev = self._flights.get(key)
        if ev is None:
            self._flights[key] = asyncio.Event()
            return False
        await ev.wait()
        return True

    def leave(self, key: str) -> None:
        ev = self._flights.pop(key, None)
        if ev is not None:
            ev.set()


class _LeaveOnLoop:
    """An async client's flights as a worker thread driving a `Beside` aside sees them: leaving is
    handed to the event loop (asyncio's events are not thread-safe); an aside joins no flight."""

    def __init__(self, flights: _AsyncFlights, loop: asyncio.AbstractEventLoop) -> None:
        self._flights, self._loop = flights, loop

    def join(self, key: str) -> bool:
        raise TypeError("a Beside aside joins no flight")

    def leave(self, key: str) -> None:
        self._loop.call_soon_threadsafe(self._flights.leave, key)


def _no_route(url: httpx.URL) -> httpx.BaseTransport:
    raise TypeError("a Beside aside sends no request")


def _resume(flow: Generator[Effect, Any, Any], value: Any, error: BaseException | None) -> tuple[Effect | None, Any]:
    """Hand the flow the last effect's result (or error); its next effect, or (None, response) once done."""
    try:
        return (flow.throw(error) if error is not None else flow.send(value)), None
    except StopIteration as stop:
        return None, stop.value


def _bounded(request: httpx.Request, deadline: Deadline) -> httpx.Request:
    """`request` with each of its timeouts cut to what is left of the deadline (no timeout: that)."""
    left = max(deadline.remaining(), 0.001)
    given = request.extensions.get("timeout") or {}
    request.extensions = {**request.extensions, "timeout": {
        k: left if given.get(k) is None else min(float(given[k]), left) for k in ("connect", "read", "write", "pool")
    }}
    return request


def _stage(request: httpx.Request) -> str:
    return f"the {request.method} to {request.url.host}"


MAX_402_BODY = 4 * 1024 * 1024  # a 402's body past this is no offer anybody meant: not read on, its headers decide


def _too_big(response: httpx.Response, size: int) -> bool:
    """A 402 whose body grew past `MAX_402_BODY`: kept with no body (its challenge is read from its
    headers; the caller closes it), so an endless or enormous body fills no memory."""
    if response.status_code != 402 or size <= MAX_402_BODY:
        return False
    response._content = b""
    log.warning("a 402 sent more than %d bytes of body: not read on; its headers are read instead", MAX_402_BODY)
    return True


def _read_sync(response: httpx.Response, abandoned: threading.Event) -> httpx.Response:
    """Read the body chunk by chunk, giving up (and closing) as soon as the waiting caller gave up."""
    if hasattr(response, "_content"):
        return response
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        if abandoned.is_set():
            response.close()
            return response
        size += len(chunk)
        if _too_big(response, size):
            response.close()
            return response
        chunks.append(chunk)
    response._content = b"".join(chunks)  # what Response.read() stores; the stream is consumed and closed
    return response


def _read_here(response: httpx.Response) -> httpx.Response:
    """Read the body in this thread (its reads bounded by the deadline in force); closed if that fails."""
    try:
        if response.status_code == 402:
            return _read_sync(response, _NEVER)
        response.read()
    except BaseException:
        response.close()
        raise
    return response


async def _aread(response: httpx.Response) -> bytes:
    """The async twin of reading a body: a 402's no further than `MAX_402_BODY`."""
    if response.status_code != 402 or hasattr(response, "_content"):
        return await response.aread()
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if _too_big(response, size):
            await response.aclose()
            return b""
        chunks.append(chunk)
    response._content = b"".join(chunks)
    return response._content


_NEVER = threading.Event()  # (a reader nobody abandons)


def _resending(effect: Send, request: httpx.Request, dropped: BaseException) -> None:
    """A Send whose connection dropped before any answer: `dropped` raised unless the Send may go out
    once more, and only on a connection the pool had kept alive (one the server may have closed
    while idle, as HTTP allows). A connection opened for this request that drops means the server
    took it and failed, and may have acted on it, so it is not sent again (Go's rule too), unless
    the request only asks (for an invoice). A resend is said: a service that counts requests sees both."""
    if effect.resend == "never" or unreadable(dropped) is not None:
        raise dropped
    host = safe.clean(request.url.host, 100)
    if effect.resend == "kept-alive":
        opened = opened_for(dropped)
        if opened is not False:  # opened for it, or a transport that cannot say: the service may have acted
            log.info("the connection %s %s for the %s dropped before any answer (%s); not sent again, since the "
                     "service may have acted on it", "opened to" if opened else "to", host, request.method,
                     type(dropped).__name__)
            raise dropped
    log.info("the connection to %s dropped before any answer (%s); sending the %s once more",
             host, type(dropped).__name__, request.method)


def _handle_sync(effect: Send, transport: httpx.BaseTransport, request: httpx.Request) -> httpx.Response:
    try:
        return transport.handle_request(request)
    except DROPPED as exc:
        _resending(effect, request, exc)
        return transport.handle_request(request)  # a keep-alive connection the server closed meanwhile


async def _handle_async(effect: Send, transport: httpx.AsyncBaseTransport, request: httpx.Request) -> httpx.Response:
    try:
        return await transport.handle_async_request(request)
    except DROPPED as exc:
        _resending(effect, request, exc)
        return await transport.handle_async_request(request)  # a keep-alive connection the server closed meanwhile


def _read_within(transport: httpx.BaseTransport, deadline: Deadline, stage: str,
                 answer: Callable[[], httpx.Response]) -> httpx.Response:
    """`answer()`'s response with its body read, bounded in total by `deadline`: in this thread on a
    transport httpx built (`bounded.install`), in a helper thread on any other."""
    if installed(transport):
        try:
            with bounding(deadline):
                return _read_here(answer())
        except httpx.TimeoutException as exc:
            raise deadline_or(exc, deadline, stage) from None
    return within(deadline, stage, lambda abandoned: _read_sync(answer(), abandoned), lambda late: late.close())


def _send_sync(effect: Send, transport: httpx.BaseTransport) -> httpx.Response:
    """One Send: bounded in total by its deadline, or starting one if it meets a 402 to pay."""
    if effect.deadline is not None:
        request = _bounded(effect.request, effect.deadline)
        return _read_within(transport, effect.deadline, _stage(request),
                            lambda: _handle_sync(effect, transport, request))
    try:  # `_handle_sync`, written out: this runs on every request, paid or not
        response = transport.handle_request(effect.request)
    except DROPPED as exc:
        _resending(effect, effect.request, exc)
        response = transport.handle_request(effect.request)
    if response.status_code == 402 and effect.payment_deadline_s is not None:
        deadline = Deadline(effect.payment_deadline_s)
        response.extensions[DEADLINE_EXTENSION] = deadline
        _read_within(transport, deadline, "the body of its 402", lambda: response)
    return response


async def _send_async(effect: Send, transport: httpx.AsyncBaseTransport) -> httpx.Response:
    """The async twin of `_send_sync`."""
    if effect.deadline is not None:
        deadline, request = effect.deadline, _bounded(effect.request, effect.deadline)
        try:
            with anyio.fail_after(max(deadline.remaining(), 0.0)):
                response = await _handle_async(effect, transport, request)
                try:
                    await _aread(response)
                except BaseException:
                    await response.aclose()
                    raise
        except TimeoutError:
            raise deadline.exceeded(_stage(request)) from None
        except httpx.TimeoutException as exc:
            raise deadline_or(exc, deadline, _stage(request)) from None
        return response
    response = await _handle_async(effect, transport, effect.request)
    if response.status_code == 402 and effect.payment_deadline_s is not None:
        deadline = Deadline(effect.payment_deadline_s)
        response.extensions[DEADLINE_EXTENSION] = deadline
        try:
            with anyio.fail_after(max(deadline.remaining(), 0.0)):
                await _aread(response)
        except TimeoutError:
            await response.aclose()
            raise deadline.exceeded("the body of its 402") from None
    return response


def _approve_sync(payer: Payer, effect: Ask) -> Any:
    assert payer.policy.approve is not None
    value = payer.policy.approve(effect.quote)
    if inspect.isawaitable(value):
        close = getattr(value, "close", None)
        if callable(close):
            close()  # never awaited: say so instead of a warning later
        raise HttpayError("the policy's approver is async; use httpay.AsyncClient with it")
    if (cancelled := CANCELLED.get()) is not None and cancelled():  # its yes came after nobody awaited it
        raise PaymentRefused("refused: the request was cancelled while it waited for approval; nothing was paid",
                             rule="approval")
    return value


def _drive_sync(flow: Generator[Effect, Any, T], route: SyncRoute, payer: Payer, flights: _Flights) -> T:
    """Perform the flow's effects one by one in this thread; errors go back into the flow."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:  # `_resume`, written out: this loop runs on every request, paid or not
            effect = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            done: T = stop.value
            return done
        value, error = None, None
        try:
            if effect.blocking:
                value = effect.run(payer)
            elif isinstance(effect, Send):
                value = _send_sync(effect, route(effect.request.url))
            elif isinstance(effect, ReadBody):
                value = _read_here(effect.response).content
            elif isinstance(effect, Ask):
                value = _approve_sync(payer, effect)
            elif isinstance(effect, Sleep):
                time.sleep(effect.seconds)
            elif isinstance(effect, Join):
                value = flights.join(effect.key)
            elif isinstance(effect, Leave):
                flights.leave(effect.key)
            elif isinstance(effect, Beside):
                value = _beside_sync(effect, route, payer, flights)
            else:
                raise TypeError(f"no driver for effect {type(effect).__name__}")
        except BaseException as exc:  # noqa: BLE001 - handed back into the flow, which decides
            error = exc


def _aside_job(effect: Beside, payer: Payer, flights: _Flights, done: Callable[[Outcome], None]) -> Callable[[], None]:
    """`effect.aside` driven whole in one worker thread (its writes one after the other, no hop
    between them); `done` gets its outcome, kept whole."""

    def job() -> None:
        try:
            outcome = Outcome(_drive_sync(effect.aside, _no_route, payer, flights))
        except BaseException as exc:  # noqa: BLE001 - kept for the flow, which decides
            outcome = Outcome(error=exc)
        done(outcome)

    return job


def _beside_sync(effect: Beside, route: SyncRoute, payer: Payer, flights: _Flights) -> tuple[Outcome, Outcome]:
    """`main` here, `aside` in a worker thread; both outcomes once both have ended (an interrupt of
    `main` still waits for `aside`, which finishes writing what it writes)."""
    kept: list[Outcome] = []
    ended = threading.Event()

    def done(outcome: Outcome) -> None:
        kept.append(outcome)
        ended.set()

    job = _aside_job(effect, payer, flights, done)
    try:
        WORKERS.submit(job)
    except RuntimeError:  # no thread to be had (an interpreter shutting down): one after the other
        job()
    try:
        main = Outcome(_drive_sync(effect.main, route, payer, flights))
    except Exception as exc:  # noqa: BLE001 - kept for the flow, which decides
        main = Outcome(error=exc)
    finally:
        ended.wait()
    return main, kept[0]


async def _approve_async(payer: Payer, effect: Ask) -> Any:
    """An async approver is awaited (ApprovalQueue's `aapprove` too); a sync one runs in a worker
    thread, so a person taking their time never stalls the event loop."""
    approve = payer.policy.approve
    assert approve is not None
    aapprove = getattr(approve, "aapprove", None)
    if callable(aapprove):
        return await aapprove(effect.quote)
    if inspect.iscoroutinefunction(approve) or inspect.iscoroutinefunction(type(approve).__call__):
        return await approve(effect.quote)
    value = await in_thread(approve, effect.quote)
    return await value if inspect.isawaitable(value) else value


async def _pay_async(payer: Payer, effect: Pay) -> ToTheEnd:
    """The wallet's answer, awaited to its end even when the task is cancelled meanwhile: money may
    have left, so what the wallet says is handed to the flow (to record) beside the cancellation."""
    apay = getattr(payer.lightning, "apay_invoice", None)
    if apay is not None:
        return await to_the_end(lambda: apay(effect.invoice, max_fee_msat=effect.max_fee_msat))
    return await to_the_end_in_thread(effect.run, payer)


async def _drive_async(flow: Generator[Effect, Any, T], route: AsyncRoute, payer: Payer, flights: _AsyncFlights) -> T:
    """Perform the flow's effects: awaited where they can be, blocking ones (ledger, rate source,
    wallet, signer) in a worker thread, so the event loop never waits on them.

    From the wallet's payment until the flow next goes out (a request, a wait), nothing is cut
    short (`_recording`): a cancellation that comes meanwhile is held, the wallet's answer and the
    writes that record it reach their end, the flight is left, and the cancellation is raised then,
    in the flow's next step out; the task ends cancelled, as its caller asked."""
    value: Any = None
    error: BaseException | None = None
    guarded = False  # after a payment, until the flow next goes out
    cancelled: BaseException | None = None  # a cancellation held while the payment is recorded
    while True:
        try:
            effect, finished = _resume(flow, value, error)
        except BaseException as exc:
            if cancelled is None or exc is cancelled:
                raise
            log.warning("the request was cancelled while its payment was made, which then ended in %s: %s",
                        type(exc).__name__, safe.clean(str(exc), 300))
            raise cancelled from exc  # cancelled, as the caller asked, whatever the payment came to
        if effect is None:
            if cancelled is not None:
                if isinstance(finished, httpx.Response):
                    await finished.aclose()
                raise cancelled
            done: T = finished
            return done
        value, error = None, None
        if guarded:
            if cancelled is not None or _records(effect):
                value, error, came = await _recording(effect, payer, flights, cancelled)
                cancelled = cancelled or came
                continue
            guarded = False  # the flow goes out again: a cancellation from now on is thrown in at once
        try:
            if isinstance(effect, Pay):
                guarded = True
                value, error, cancelled = await _pay_async(payer, effect)
            elif effect.blocking:
                known, value = effect.answer_in_memory(payer)
                if not known:
                    value = await in_thread(effect.run, payer)
            elif isinstance(effect, Send):
                value = await _send_async(effect, route(effect.request.url))
            elif isinstance(effect, ReadBody):
                value = await _aread(effect.response)
            elif isinstance(effect, Ask):
                value = await _approve_async(payer, effect)
            elif isinstance(effect, Sleep):
                await anyio.sleep(effect.seconds)
            elif isinstance(effect, Join):
                value = await flights.join(effect.key)
            elif isinstance(effect, Leave):
                flights.leave(effect.key)
            elif isinstance(effect, Beside):
                value = await _beside_async(effect, route, payer, flights)
            else:
                raise TypeError(f"no driver for effect {type(effect).__name__}")
        except BaseException as exc:  # noqa: BLE001 - handed back into the flow, which decides
            error = exc


_SPENDS = (Pay, Sign, SignMessage)  # blocking effects never begun once a cancellation is held


def _records(effect: Effect) -> bool:
    """What writes a payment's outcome down: a blocking effect that spends nothing (the ledger, a
    wallet's lookup), or leaving the flight."""
    return isinstance(effect, Leave) or (effect.blocking and not isinstance(effect, _SPENDS))


async def _recording(effect: Effect, payer: Payer, flights: _AsyncFlights,
                     cancelled: BaseException | None) -> tuple[Any, BaseException | None, BaseException | None]:
    """One effect after a payment, before the flow goes out again: its value or error, and a
    cancellation that came while it ran. What records the payment runs to its end however often
    the task is cancelled; once a cancellation is held (`cancelled`), a `Beside` writes its record
    and never sends its retry (nobody awaits the answer), and anything else (a request, a wait, a
    payment) is not begun: the cancellation is thrown into the flow in its place."""
    if isinstance(effect, Leave):
        flights.leave(effect.key)
        return None, None, None
    if _records(effect):
        known, value = effect.answer_in_memory(payer)
        if known:
            return value, None, None
        ended = await to_the_end_in_thread(effect.run, payer)
        return ended.value, ended.error, ended.cancelled
    assert cancelled is not None
    if isinstance(effect, Beside):
        effect.main.close()
        kept: list[Outcome] = []
        job = _aside_job(effect, payer, _LeaveOnLoop(flights, asyncio.get_running_loop()), kept.append)
        try:
            await to_the_end_in_thread(job)
        except RuntimeError:  # no thread to be had (an interpreter shutting down): here, on the loop
            if not kept:
                job()
        return (Outcome(error=cancelled), kept[0]), None, None
    return None, cancelled, None


async def _beside_async(effect: Beside, route: AsyncRoute, payer: Payer,
                        flights: _AsyncFlights) -> tuple[Outcome, Outcome]:
    """`main` in this task, `aside` in one worker thread, from a task shielded from cancellation (a
    record is finished whatever the caller does); both outcomes once both have ended. The thread is
    asked for once `main` waits on the network: started earlier, its writes would contend with the
    retry's own work for the interpreter (measured: slower)."""
    loop = asyncio.get_running_loop()
    kept: list[Outcome] = []

    job = _aside_job(effect, payer, _LeaveOnLoop(flights, loop), kept.append)

    async def aside() -> None:
        with anyio.CancelScope(shield=True):
            try:
                await in_thread(job)
            except RuntimeError:  # no thread to be had (an interpreter shutting down): here, on the loop
                if not kept:
                    job()

    async with anyio.create_task_group() as group:
        group.start_soon(aside)
        try:
            main = Outcome(await _drive_async(effect.main, route, payer, flights))
        except Exception as exc:  # noqa: BLE001 - kept for the flow, which decides
            main = Outcome(error=exc)
    return main, kept[0]


class _PaidSyncBody(httpx.SyncByteStream):
    """The body a payment bought, streamed to the caller as it arrives: if it breaks off, the caller
    gets PaidRequestFailed with the receipt (never a bare httpx error), and the ledger row says so."""

    def __init__(self, inner: Any, payer: Payer, receipt: Any) -> None:
        self.inner, self.payer, self.receipt = inner, payer, receipt

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.inner
        except Exception as exc:
            note, error = broken_off(self.receipt, exc)
            try:
                error.receipt = self.payer.ledger.note(self.receipt.id, note)
            except Exception:  # noqa: BLE001 - the caller must learn of the payment whatever the ledger does
                log.warning("could not note the broken answer on ledger #%s", self.receipt.id)
            raise error from exc

    def close(self) -> None:
        self.inner.close()


class _PaidAsyncBody(httpx.AsyncByteStream):
    """The async twin of `_PaidSyncBody` (the ledger note is written in a worker thread)."""

    def __init__(self, inner: Any, payer: Payer, receipt: Any) -> None:
        self.inner, self.payer, self.receipt = inner, payer, receipt

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.inner:
                yield chunk
        except Exception as exc:
            note, error = broken_off(self.receipt, exc)
            try:
                error.receipt = await in_thread(self.payer.ledger.note, self.receipt.id, note)
            except Exception:  # noqa: BLE001 - the caller must learn of the payment whatever the ledger does
                log.warning("could not note the broken answer on ledger #%s", self.receipt.id)
            raise error from exc

    async def aclose(self) -> None:
        await self.inner.aclose()


def _unread(response: httpx.Response) -> bool:
    return not hasattr(response, "_content") and not response.is_stream_consumed


def _flow(payer: Payer, request: httpx.Request,
          sent: tuple[httpx.Response, float] | None = None) -> Generator[Effect, Any, httpx.Response]:
    ext = request.extensions
    return request_flow(payer, request, dry_run=bool(ext.get(DRY_RUN_EXTENSION)),
                        max_price_msat=ext.get(MAX_PRICE_EXTENSION), offer_id=ext.get(OFFER_EXTENSION), sent=sent)


def _payer_for(payer: Payer | None, settings: dict[str, Any]) -> tuple[Payer, bool]:
    """The payer a transport was given, or one made from `httpay.Client`'s settings (wallet=, policy=,
    ledger=, ...), and whether the transport opened that ledger (and so closes it)."""
    if payer is None:
        unknown = sorted(set(settings) - set(inspect.signature(Payer.create).parameters))
        if unknown:
            raise ConfigError(f"a payment transport takes no {', '.join(unknown)}=; it takes httpay.Client's "
                              "settings: wallet=, policy=, ledger=, x402_signer=, token_scope=, tags=, ...")
        return Payer.create(**settings), not isinstance(settings.get("ledger"), Ledger)
    if not isinstance(payer, Payer):
        raise ConfigError(f"a payment transport takes an httpay.Payer or httpay.Client's settings "
                          f"(PaymentTransport(wallet=..., policy=..., ledger=...)), got {type(payer).__name__}")
    if settings:
        raise ConfigError(f"give a payment transport a Payer or settings, not both (got {', '.join(settings)})")
    return payer, False


class PaymentTransport(httpx.BaseTransport):
    """Wraps a transport: a 402 that a registered dialect reads is paid per the policy, then retried.

    `flights` shares one single-flight registry among several wrapped routes (httpay.Client wraps
    its default transport and every mount with one); `route` picks the transport for a request the
    flow makes to another URL (the payment request endpoint), so it goes the way httpx would send it.
    """

    def __init__(self, payer: Payer | None = None, transport: httpx.BaseTransport | None = None, *,
                 flights: _SyncFlights | None = None, route: SyncRoute | None = None, **settings: Any) -> None:
        self.payer, self._own_ledger = _payer_for(payer, settings)
        self.inner = transport or httpx.HTTPTransport()
        keep_assigned(self.inner)  # a crowd's connections are not closed under its requests
        install(self.inner)  # its paid sends then need no helper thread for their deadline
        self._flights = flights if flights is not None else _SyncFlights()
        self._route: SyncRoute = route or (lambda url: self.inner)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not hasattr(request, "_content"):  # (httpx reads a body it was given whole as it builds the request)
            request.read()  # the body must be replayable for the retry
        first = first_send(self.payer, request)
        if first is None:
            response = _drive_sync(_flow(self.payer, request), self._route, self.payer, self._flights)
        else:  # nothing to put on it: sent as it is, and the flow starts only at a 402
            mark = time.monotonic()
            response = _send_sync(first, self.inner)  # httpx picked this transport for the request's URL
            if response.status_code != 402:
                return response
            response = _drive_sync(_flow(self.payer, request, (response, mark)), self._route, self.payer,
                                   self._flights)
        receipt = receipt_of(response)
        if receipt is not None and _unread(response):
            response.stream = _PaidSyncBody(response.stream, self.payer, receipt)
        return response

    def __enter__(self) -> Self:
        self.inner.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None = None, exc_value: BaseException | None = None,
                 traceback: TracebackType | None = None) -> None:
        self.inner.__exit__(exc_type, exc_value, traceback)
        self._close_ledger()

    def close(self) -> None:
        self.inner.close()
        self._close_ledger()

    def _close_ledger(self) -> None:
        if self._own_ledger:
            self._own_ledger = False
            self.payer.ledger.close()


class AsyncPaymentTransport(httpx.AsyncBaseTransport):
    """The async twin of `PaymentTransport`; the same flow, driven with await."""

    def __init__(self, payer: Payer | None = None, transport: httpx.AsyncBaseTransport | None = None, *,
                 flights: _AsyncFlights | None = None, route: AsyncRoute | None = None, **settings: Any) -> None:
        self.payer, self._own_ledger = _payer_for(payer, settings)
        self.inner = transport or httpx.AsyncHTTPTransport()
        keep_assigned(self.inner)  # a crowd's connections are not closed under its requests
        self._flights = flights if flights is not None else _AsyncFlights()
        self._route: AsyncRoute = route or (lambda url: self.inner)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not hasattr(request, "_content"):
            await request.aread()  # the body must be replayable for the retry
        first = first_send(self.payer, request)
        if first is None:
            response = await _drive_async(_flow(self.payer, request), self._route, self.payer, self._flights)
        else:  # nothing to put on it: sent as it is, and the flow starts only at a 402
            mark = time.monotonic()
            response = await _send_async(first, self.inner)  # httpx picked this transport for the request's URL
            if response.status_code != 402:
                return response
            response = await _drive_async(_flow(self.payer, request, (response, mark)), self._route, self.payer,
                                          self._flights)
        receipt = receipt_of(response)
        if receipt is not None and _unread(response):
            response.stream = _PaidAsyncBody(response.stream, self.payer, receipt)
        return response

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None = None, exc_value: BaseException | None = None,
                        traceback: TracebackType | None = None) -> None:
        await self.inner.__aexit__(exc_type, exc_value, traceback)
        self._close_ledger()

    async def aclose(self) -> None:
        await self.inner.aclose()
        self._close_ledger()

    def _close_ledger(self) -> None:
        if self._own_ledger:
            self._own_ledger = False
            self.payer.ledger.close()
