"""An `httpay.AsyncClient` never blocks its event loop, whatever part of a payment is slow (issue 11).

A watchdog task ticks every 10 ms and records the longest gap between its ticks while the client
pays a 402 on a loopback service. Each case makes one part a user plugs in slow with a plain,
blocking `time.sleep(SLOW_S)` (0.3 s): the policy's rate source, the ledger, the wallet (pay and
lookup), the x402 signer. A loop that waited on that call would show a gap of at least 0.3 s; one that hands it
to a worker thread shows only the ticks. These measure blocking, not speed: the payment itself may
take as long as it needs (a generous safety timeout only ends a hung run).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import pytest

import httpay
from httpay.errors import WalletError
from httpay.wallets.base import Payment
from tests.hostile.harness import CountingSigner, CountingWallet, HostileService, x402

SLOW_S = 0.3          # how long each slow part takes (a blocking sleep; well above MAX_GAP_S)
MAX_GAP_S = 0.2       # the longest the loop may go without running the watchdog
TICK_S = 0.01
SAFETY_S = 90.0       # only ends a hung run; never what a case measures
RATE = 100_000.0      # USD per BTC: $0.01 = 10 sat = the 10,000 msat the services' invoices ask


class LoopWatchdog:
    """Ticks every 10 ms on the running loop; `longest` is the longest gap seen between two ticks
    (or between the last tick and the end of the watched block). A plain thread ticks beside it:
    `stalled` is its own longest gap, how long the machine itself held every thread back (a loaded
    host can starve the process for a second). A call blocking the loop leaves that thread ticking
    (a blocking sleep releases the interpreter), so `blocked` (the loop's gap beyond the machine's)
    is what the loop lost to the client alone."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.stalled = 0.0
        self.ticks = 0
        self._last = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beside, daemon=True)

    @property
    def blocked(self) -> float:
        return max(0.0, self.longest - self.stalled)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.perf_counter()
            self.longest = max(self.longest, now - self._last)
            self._last = now
            self.ticks += 1

    def _beside(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(TICK_S):
            now = time.perf_counter()
            self.stalled = max(self.stalled, now - last)
            last = now

    async def __aenter__(self) -> Self:
        self._last = time.perf_counter()
        self._thread.start()
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)  # let it start before the watched work does
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.longest = max(self.longest, time.perf_counter() - self._last)
        self._stop.set()
        self._thread.join(timeout=5)
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def pay_watched(url: str, **client_kwargs: Any) -> tuple[httpx.Response, float]:
    """GET `url` through an AsyncClient built with `client_kwargs`; the response and the longest
    time the loop was blocked while the request (402, payment, retry) ran, beyond what the machine
    held every thread back (`LoopWatchdog.blocked`). The client is built before the watch starts:
    only the request is measured."""
    async with httpay.AsyncClient(**client_kwargs) as client:
        async with LoopWatchdog() as dog:
            response = await asyncio.wait_for(client.get(url), SAFETY_S)
            await response.aread()
    return response, dog.blocked


def blocked(gap: float, what: str) -> str:
    return (f"the event loop was blocked for {gap:.3f} s (longest gap between {TICK_S * 1000:.0f} ms watchdog ticks, "
            "beyond the longest a plain thread waited; "
            f"at most {MAX_GAP_S} s allowed) while {what} took {SLOW_S} s: AsyncClient ran it on the loop "
            "instead of awaiting it or running it in a worker thread")


def settled_rows(path: Path) -> list[httpay.Receipt]:
    with httpay.open_ledger(path) as lg:
        return [r for r in lg.receipts() if r.status.value == "settled"]


def paywall(svc: HostileService, kind: str) -> str:
    """A loopback paywall of one dialect: L402 v0.2 offers, classic L402 (Aperture-style), x402 v2."""
    if kind == "v02":
        return svc.v02("/v02")
    if kind == "classic":
        return svc.classic("/classic")
    return x402(svc, "/x402")


def payers(svc: HostileService, kind: str, **wallet_kwargs: Any) -> dict[str, Any]:
    """Who pays a `kind` paywall: the counting Lightning wallet, or an x402 signer (no wallet)."""
    if kind == "x402":
        return {"wallet": None, "x402_signer": CountingSigner()}
    return {"wallet": CountingWallet(svc.node, **wallet_kwargs)}


def methods(kind: str) -> list[str]:
    return ["x402"] if kind == "x402" else ["lightning"]


KINDS = ["v02", "classic", "x402"]


# -- a: the policy's rate source is slow -----------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
async def test_a_slow_rate_source_does_not_block_the_loop(kind: str, svc: HostileService, ledger_path: Path) -> None:
    asked: list[float] = []

    def slow_rate() -> float:
        """A plain sync rate source that takes half a second (an exchange's API)."""
        time.sleep(SLOW_S)
        asked.append(time.perf_counter())
        return RATE

    # A USD limit and no fixed rate: the rate is needed, so the source must be asked.
    policy = httpay.Policy(max_per_payment_usd=1, budget_usd=5, rate_source=slow_rate, methods=methods(kind))
    response, gap = await pay_watched(paywall(svc, kind), policy=policy, ledger=ledger_path, **payers(svc, kind))

    assert response.status_code == 200, response.text
    assert asked, "the policy's rate source was never asked, so this case proves nothing"
    assert len(settled_rows(ledger_path)) == 1
    assert gap < MAX_GAP_S, blocked(gap, "the policy's rate_source")


# -- b: the ledger is slow -------------------------------------------------------------------------
def _ledger_api() -> list[str]:
    """Every public method of httpay.Ledger (what the core may call on a ledger), but close()."""
    return sorted(name for name, value in inspect.getmembers(httpay.Ledger, inspect.isfunction)
                  if not name.startswith("_") and name != "close")


def slow_ledger(inner: httpay.Ledger, delay_s: float) -> httpay.Ledger:
    """`inner` (a real ledger) behind a proxy whose every call first sleeps `delay_s` (a blocking
    sleep, as a far database would take; an awaited one for an async method), then delegates. Built from httpay.Ledger's own method
    list, so a method the core gains is slowed too; `calls` names the calls in order."""
    calls: list[str] = []

    def slow(name: str) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(getattr(httpay.Ledger, name)):
            async def amethod(self: httpay.Ledger, *args: Any, **kwargs: Any) -> Any:
                await asyncio.sleep(delay_s)  # an async ledger method is slow without blocking
                calls.append(name)
                return await getattr(inner, name)(*args, **kwargs)
            amethod.__name__ = name
            return amethod

        def method(self: httpay.Ledger, *args: Any, **kwargs: Any) -> Any:
            time.sleep(delay_s)
            calls.append(name)
            return getattr(inner, name)(*args, **kwargs)
        method.__name__ = name
        return method

    def getattr_(self: httpay.Ledger, name: str) -> Any:  # anything else the real ledger has, unslowed
        return getattr(inner, name)

    namespace: dict[str, Any] = {name: slow(name) for name in _ledger_api()}
    namespace.update(__getattr__=getattr_, close=lambda self: inner.close(), calls=calls,
                     __repr__=lambda self: f"SlowLedger({inner!r})")
    cls = type("SlowLedger", (httpay.Ledger,), namespace)
    made: httpay.Ledger = cls()
    return made


@pytest.mark.parametrize("kind", KINDS)
async def test_b_a_slow_ledger_does_not_block_the_loop(kind: str, svc: HostileService, ledger_path: Path) -> None:
    lg = slow_ledger(httpay.open_ledger(ledger_path), SLOW_S)
    policy = httpay.Policy(budget_sat=1_000, usd_per_btc=RATE, methods=methods(kind))
    try:
        response, gap = await pay_watched(paywall(svc, kind), policy=policy, ledger=lg, **payers(svc, kind))
        calls: list[str] = lg.calls  # type: ignore[attr-defined]
    finally:
        lg.close()

    assert response.status_code == 200, response.text
    assert "reserve" in calls and "settle" in calls, f"the payment did not go through the ledger: {calls}"
    assert len(settled_rows(ledger_path)) == 1, "exactly one payment is written down, settled"
    assert gap < MAX_GAP_S, blocked(gap, f"each ledger call ({', '.join(calls)})")


# -- c: the wallet is slow (a sync pay_invoice, no apay_invoice; and its lookup) -------------------
class SlowWallet(CountingWallet):
    """A sync-only Lightning wallet: `pay_invoice` takes SLOW_S; with `unsure`, it then says it cannot
    tell whether it paid (the payment did go out), so the client must ask `lookup`, which takes as long."""

    def __init__(self, *args: Any, unsure: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, delay_s=SLOW_S, **kwargs)
        self.unsure = unsure
        self.lookups: list[str] = []

    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Payment:
        payment = super().pay_invoice(bolt11, max_fee_msat=max_fee_msat)
        if self.unsure:
            raise WalletError("the node timed out before saying whether it paid", outcome_known=False)
        return payment

    def lookup(self, payment_hash: str) -> Payment | None:
        time.sleep(SLOW_S)
        self.lookups.append(payment_hash)
        return super().lookup(payment_hash)


@pytest.mark.parametrize("unsure", [False, True], ids=["slow_pay", "slow_pay_then_slow_lookup"])
@pytest.mark.parametrize("kind", ["v02", "classic"])
async def test_c_a_slow_sync_wallet_does_not_block_the_loop(kind: str, unsure: bool, svc: HostileService,
                                                             ledger_path: Path) -> None:
    wallet = SlowWallet(svc.node, unsure=unsure)
    assert not hasattr(wallet, "apay_invoice"), "the case is a sync-only wallet"
    policy = httpay.Policy(budget_sat=1_000, usd_per_btc=RATE)
    response, gap = await pay_watched(paywall(svc, kind), wallet=wallet, policy=policy, ledger=ledger_path)

    assert response.status_code == 200, response.text
    assert len(wallet.calls) == 1, "paid once"
    if unsure:
        assert wallet.lookups, "the wallet's lookup was never asked, so this case proves nothing"
    assert len(settled_rows(ledger_path)) == 1
    assert gap < MAX_GAP_S, blocked(gap, "the wallet's pay_invoice" + (" and its lookup" if unsure else ""))


# -- d: the x402 signer is slow --------------------------------------------------------------------
class SlowSigner(CountingSigner):
    """An x402 signer (a real httpay.EvmSigner inside) whose sync sign takes SLOW_S (a remote KMS)."""

    def sign_typed_data(self, domain: Any, types: Any, primary_type: str, message: Any) -> bytes:
        time.sleep(SLOW_S)
        return super().sign_typed_data(domain, types, primary_type, message)


async def test_d_a_slow_x402_signer_does_not_block_the_loop(svc: HostileService, ledger_path: Path) -> None:
    signer = SlowSigner()
    policy = httpay.Policy(budget_sat=1_000, usd_per_btc=RATE, methods=["x402"])
    response, gap = await pay_watched(x402(svc, "/x402"), wallet=None, x402_signer=signer, policy=policy,
                                      ledger=ledger_path)

    assert response.status_code == 200, response.text
    assert len(signer.signed) == 1 and svc.hits.get("x402-paid") == 1, "signed and sent once"
    assert len(settled_rows(ledger_path)) == 1
    assert gap < MAX_GAP_S, blocked(gap, "the x402 signer's sign_typed_data")

