"""httpx transports that run the payment pipeline around any other transport.

Why a transport and not only a Client subclass: a transport composes with every httpx feature
(auth, hooks, proxies, mounts, redirects, timeouts) and with clients we do not create, e.g.
`httpx.Client(transport=httpay.PaymentTransport(...))`. `httpay.Client` is a thin httpx.Client
subclass that installs it for you.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from collections.abc import Generator
from typing import Any

import anyio
import anyio.to_thread
import httpx

from httpay.errors import HttpayError
from httpay.pipeline import (
    DRY_RUN_EXTENSION, MAX_PRICE_EXTENSION, OFFER_EXTENSION, Ask, Effect, Join, Leave, Pay, Payer, Send, Sleep,
    request_flow,
)


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


def _resume(flow: Generator[Effect, Any, httpx.Response], value: Any,
            error: BaseException | None) -> tuple[Effect | None, Any]:
    """Hand the flow the last effect's result (or error); its next effect, or (None, response) once done."""
    try:
        return (flow.throw(error) if error is not None else flow.send(value)), None
    except StopIteration as stop:
        return None, stop.value


def _drive_sync(flow: Generator[Effect, Any, httpx.Response], transport: httpx.BaseTransport, payer: Payer,
                flights: _SyncFlights) -> httpx.Response:
    value: Any = None
    error: BaseException | None = None
    while True:
        effect, finished = _resume(flow, value, error)
        if effect is None:
            return finished
        value, error = None, None
        try:
            if isinstance(effect, Send):
                value = transport.handle_request(effect.request)
            elif isinstance(effect, Pay):
                value = payer.lightning.pay_invoice(effect.invoice, max_fee_msat=effect.max_fee_msat)
            elif isinstance(effect, Ask):
                assert payer.policy.approve is not None
                value = payer.policy.approve(effect.decision)
                if inspect.isawaitable(value):
                    raise HttpayError("the policy's approver is async; use httpay.AsyncClient with it")
            elif isinstance(effect, Sleep):
                time.sleep(effect.seconds)
            elif isinstance(effect, Join):
                value = flights.join(effect.key)
            elif isinstance(effect, Leave):
                flights.leave(effect.key)
        except BaseException as exc:  # noqa: BLE001 - handed back into the flow, which decides
            error = exc


async def _drive_async(flow: Generator[Effect, Any, httpx.Response], transport: httpx.AsyncBaseTransport,
                       payer: Payer, flights: _AsyncFlights) -> httpx.Response:
    value: Any = None
    error: BaseException | None = None
    while True:
        effect, finished = _resume(flow, value, error)
        if effect is None:
            return finished
        value, error = None, None
        try:
            if isinstance(effect, Send):
                value = await transport.handle_async_request(effect.request)
                await value.aread()
            elif isinstance(effect, Pay):
                apay = getattr(payer.lightning, "apay_invoice", None)
                if apay is not None:
                    value = await apay(effect.invoice, max_fee_msat=effect.max_fee_msat)
                else:
                    value = await anyio.to_thread.run_sync(
                        functools.partial(payer.lightning.pay_invoice, effect.invoice, max_fee_msat=effect.max_fee_msat)
                    )
            elif isinstance(effect, Ask):
                assert payer.policy.approve is not None
                value = payer.policy.approve(effect.decision)
                if inspect.isawaitable(value):
                    value = await value
            elif isinstance(effect, Sleep):
                await anyio.sleep(effect.seconds)
            elif isinstance(effect, Join):
                value = await flights.join(effect.key)
            elif isinstance(effect, Leave):
                flights.leave(effect.key)
        except BaseException as exc:  # noqa: BLE001
            error = exc


def _flow(payer: Payer, request: httpx.Request) -> Generator[Effect, Any, httpx.Response]:
    ext = request.extensions
    return request_flow(payer, request, dry_run=bool(ext.get(DRY_RUN_EXTENSION)),
                        max_price_msat=ext.get(MAX_PRICE_EXTENSION), offer_id=ext.get(OFFER_EXTENSION))


class PaymentTransport(httpx.BaseTransport):
    """Wraps a transport: a 402 with L402 v0.2 offers is paid per the policy, then retried."""

    def __init__(self, payer: Payer, transport: httpx.BaseTransport | None = None) -> None:
        self.payer = payer
        self.inner = transport or httpx.HTTPTransport()
        self._flights = _SyncFlights()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()  # the body must be replayable for the retry
        return _drive_sync(_flow(self.payer, request), self.inner, self.payer, self._flights)

    def close(self) -> None:
        self.inner.close()


class AsyncPaymentTransport(httpx.AsyncBaseTransport):
    """The async twin of `PaymentTransport`; the same pipeline, driven with await."""

    def __init__(self, payer: Payer, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.payer = payer
        self.inner = transport or httpx.AsyncHTTPTransport()
        self._flights = _AsyncFlights()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return await _drive_async(_flow(self.payer, request), self.inner, self.payer, self._flights)

    async def aclose(self) -> None:
        await self.inner.aclose()
