"""`client.stream(...)` hands over a 200's first chunk before its body ends, paid or not (issue 11).

The loopback service's 200 sends a first chunk, then holds the rest until the test says it has
received that chunk. A client that buffers the body cannot give the test that chunk until the body
has ended, so the service waits out its hold (a few seconds, a safety net) and the test fails,
saying the body was buffered. Cases: a free 200, and the 200 that a paid L402 v0.2, classic
L402 or x402 402 bought (the retry after the payment streams too), through `httpay.AsyncClient.stream`
and its sync twin `httpay.Client.stream`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

import httpay
from tests.hostile.harness import MODES, CountingSigner, CountingWallet, HostileService, x402_requirement

FIRST = b"first chunk of a slow body\n"
LAST = b"the rest, sent once the client has the first chunk\n"
HOLD_S = 3.0        # the longest the service holds the rest of its body (a safety net, never the measure)
SAFETY_S = 60.0     # ends a hung async run
RATE = 100_000.0    # USD per BTC: $0.01 = 10 sat = the 10,000 msat the v0.2 invoice asks


class SlowBody:
    """A 200 whose first chunk goes out at once and the rest only when `release` is set (or after
    HOLD_S); `ended` is set when the service stops holding, `held_out` when the test never released it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.ended = threading.Event()
        self.held_out = False
        self.served = 0

    def response(self, headers: dict[str, str] | None = None) -> Response:
        self.served += 1

        async def body() -> AsyncIterator[bytes]:
            yield FIRST
            for _ in range(int(HOLD_S / 0.01)):
                if self.release.is_set():
                    break
                await asyncio.sleep(0.01)
            else:
                self.held_out = True
            self.ended.set()
            yield LAST
        return StreamingResponse(body(), media_type="text/plain", headers=headers)


def b64json(data: Any) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def serve_slow(svc: HostileService, kind: str, slow: SlowBody) -> str:
    """`kind` "free": the slow 200 for anyone; "v02" / "classic" / "x402": the slow 200 once paid
    (x402: with its settlement receipt in PAYMENT-RESPONSE)."""
    if kind == "free":
        async def free(request: Request) -> Response:
            return slow.response()
        return svc.route("/slow", free)
    if kind == "v02":
        svc.v02("/v02-gate", pr_path="/v02-pay")
        gate = svc.handlers["/v02-gate"]

        async def v02(request: Request) -> Response:
            with svc._lock:
                paid = svc.credits > 0
                if paid:
                    svc.credits -= 1
            return slow.response() if paid else await gate(request)
        return svc.route("/v02", v02)

    if kind == "x402":
        challenge = {"x402Version": 2, "error": "Payment required", "resource": {"url": svc.url + "/x402"},
                     "accepts": [x402_requirement("10000")]}
        receipt = {"success": True, "transaction": "0x" + "ab" * 32, "network": "eip155:84532", "payer": "0x"}

        async def x402(request: Request) -> Response:
            if request.headers.get("payment-signature") is None:
                return JSONResponse({}, status_code=402, headers={"PAYMENT-REQUIRED": b64json(challenge)})
            return slow.response({"PAYMENT-RESPONSE": b64json(receipt)})
        return svc.route("/x402", x402)

    async def classic(request: Request) -> Response:
        return slow.response() if svc.authorized(request) else svc.classic_challenge(10)
    return svc.route("/classic", classic)


def buffered(slow: SlowBody) -> str:
    return (f"the client handed over no byte of the 200 before its body ended: it buffered the whole body "
            f"(the service held the rest for {HOLD_S} s waiting for the client to show it had the first chunk"
            f"{', and gave up' if slow.held_out else ''})")


def stream_sync(url: str, slow: SlowBody, **client_kwargs: Any) -> tuple[bytes, bool, httpay.Receipt | None]:
    """Stream `url` through httpay.Client: the whole body, whether the body had ended when the first
    chunk arrived, and the response's receipt."""
    with httpay.Client(timeout=30, **client_kwargs) as client:
        with client.stream("GET", url) as response:
            assert response.status_code == 200, response.read()
            chunks: Iterator[bytes] = response.iter_bytes()
            got = b""
            while len(got) < len(FIRST):
                got += next(chunks)
            ended_first = slow.ended.is_set()
            slow.release.set()
            got += b"".join(chunks)
            return got, ended_first, httpay.receipt_of(response)


async def stream_async(url: str, slow: SlowBody, **client_kwargs: Any) -> tuple[bytes, bool, httpay.Receipt | None]:
    """The async twin of `stream_sync`, through httpay.AsyncClient.stream."""
    async def go() -> tuple[bytes, bool, httpay.Receipt | None]:
        async with httpay.AsyncClient(timeout=30, **client_kwargs) as client:
            async with client.stream("GET", url) as response:
                assert response.status_code == 200, await response.aread()
                chunks = response.aiter_bytes()
                got = b""
                while len(got) < len(FIRST):
                    got += await chunks.__anext__()
                ended_first = slow.ended.is_set()
                slow.release.set()
                async for chunk in chunks:
                    got += chunk
                return got, ended_first, httpay.receipt_of(response)
    return await asyncio.wait_for(go(), SAFETY_S)


async def stream(mode: str, url: str, slow: SlowBody, **client_kwargs: Any) -> tuple[bytes, bool, httpay.Receipt | None]:
    if mode == "sync":
        return await asyncio.to_thread(stream_sync, url, slow, **client_kwargs)
    return await stream_async(url, slow, **client_kwargs)


@pytest.mark.parametrize("mode", MODES)
async def test_an_unpaid_200_streams(mode: str, svc: HostileService, ledger_path: Path) -> None:
    slow = SlowBody()
    url = serve_slow(svc, "free", slow)
    wallet = CountingWallet(svc.node)
    body, ended_first, receipt = await stream(mode, url, slow, wallet=wallet, ledger=ledger_path)

    assert not ended_first and not slow.held_out, buffered(slow)
    assert body == FIRST + LAST, "every byte arrives, in order"
    assert receipt is None and wallet.calls == [], "nothing was paid for a free 200"


@pytest.mark.parametrize("kind", ["v02", "classic", "x402"])
@pytest.mark.parametrize("mode", MODES)
async def test_the_200_a_payment_bought_streams(mode: str, kind: str, svc: HostileService, ledger_path: Path) -> None:
    """After the 402 is paid, the retry's 200 streams as any other: the caller gets its first chunk
    while the service is still sending (a paid event stream or large download must not be buffered)."""
    slow = SlowBody()
    url = serve_slow(svc, kind, slow)
    wallet = CountingWallet(svc.node)
    signer = CountingSigner()
    payer: dict[str, Any] = {"wallet": None, "x402_signer": signer} if kind == "x402" else {"wallet": wallet}
    body, ended_first, receipt = await stream(mode, url, slow, ledger=ledger_path, **payer,
                                              policy=httpay.Policy(budget_sat=1_000, usd_per_btc=RATE,
                                                                   methods=[kind if kind == "x402" else "lightning"]))

    assert len(wallet.calls) + len(signer.signed) == 1, "the 402 was paid once"
    assert receipt is not None and receipt.status.value == "settled", "the streamed response carries its receipt"
    assert slow.served == 1, "the paid body was asked for once"
    assert not ended_first and not slow.held_out, buffered(slow)
    assert body == FIRST + LAST, "every byte arrives, in order"
    with httpay.open_ledger(ledger_path) as lg:
        assert [r.status.value for r in lg.receipts()] == ["settled"]
        fee = 0 if kind == "x402" else 1_000
        assert lg.spent_msat() == 10_000 + fee, "the price (and the Lightning fee), once"
