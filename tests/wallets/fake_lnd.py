"""A fake LND REST API (grpc-gateway shapes) over a `FakeAccount`: SendPaymentV2, TrackPaymentV2, ChannelBalance.

Faithful to what `httpay.wallets.lnd` documents: macaroon header, 64-bit ints as strings, hex hashes and
preimages in `lnrpc.Payment`, newline-delimited `{"result": ...}` streams, `{"error": {code, message}}`
statuses (AlreadyExists "invoice is already paid", NotFound "payment isn't initiated").
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import bolt11
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.wallets.fakes import FakeAccount, Invoice, Sent

BAD_MACAROON = "verification failed: signature mismatch after caveat verification"


def _status(code: int, message: str, http: int, *, stream: bool) -> Response:
    st = {"code": code, "message": message, "details": []}
    return JSONResponse({"error": st} if stream else st, status_code=http)


def _payment(inv: Invoice, status: str, *, fee_msat: int = 0, reason: str = "FAILURE_REASON_NONE",
             index: int = 0) -> dict[str, Any]:
    settled = status == "SUCCEEDED"
    return {
        "payment_hash": inv.payment_hash,
        "value": str(inv.amount_msat // 1000), "value_sat": str(inv.amount_msat // 1000), "value_msat": str(inv.amount_msat),
        "payment_preimage": inv.preimage if settled else "0" * 64,
        "payment_request": inv.bolt11, "status": status,
        "fee": str(fee_msat // 1000), "fee_sat": str(fee_msat // 1000), "fee_msat": str(fee_msat),
        "creation_time_ns": str(time.time_ns()), "htlcs": [], "payment_index": str(index), "failure_reason": reason,
    }


def _lines(*updates: dict[str, Any], delay_s: float = 0.0, after: int = 1) -> StreamingResponse:
    """Stream updates as JSON lines, sleeping `delay_s` before update number `after`."""

    async def body() -> AsyncIterator[bytes]:
        for i, update in enumerate(updates):
            if i == after and delay_s:
                await asyncio.sleep(delay_s)
            yield (json.dumps({"result": update}) + "\n").encode()

    return StreamingResponse(body(), media_type="application/json")


def create_app(account: FakeAccount, macaroon_hex: str) -> Starlette:
    def authorised(request: Request) -> bool:
        account.calls.append(f"{request.method} {request.url.path}")
        return request.headers.get("grpc-metadata-macaroon") == macaroon_hex

    async def send(request: Request) -> Response:
        if not authorised(request):
            return _status(2, BAD_MACAROON, 500, stream=True)
        body = json.loads(await request.body())
        if not isinstance(body.get("timeout_seconds"), int) or body["timeout_seconds"] <= 0:
            return _status(3, "timeout_seconds must be specified", 400, stream=True)
        invoice = str(body.get("payment_request", ""))
        try:
            decoded = bolt11.decode(invoice)
        except Exception:  # noqa: BLE001 - lnd's zpay32 refuses it before paying
            return _status(2, "invalid bech32 string length 3", 500, stream=True)
        inv = account.payee.find(invoice)
        if inv is None:  # LND tries to pay, the payee refuses
            ghost = Invoice(invoice, decoded.payment_hash, "00" * 32, decoded.amount_msat or 0)
            return _lines(_payment(ghost, "FAILED", reason="FAILURE_REASON_INCORRECT_PAYMENT_DETAILS"))
        earlier = account.sent.get(inv.payment_hash)
        if earlier is not None:
            return _status(6, "invoice is already paid", 409, stream=True)
        fee_limit = int(body.get("fee_limit_msat", "0"))
        if account.fee_msat > fee_limit:
            return _lines(_payment(inv, "IN_FLIGHT"), _payment(inv, "FAILED", reason="FAILURE_REASON_NO_ROUTE"))
        if account.balance_msat < inv.amount_msat + account.fee_msat:
            return _lines(_payment(inv, "FAILED", reason="FAILURE_REASON_INSUFFICIENT_BALANCE"))
        sent: Sent = account.pay(inv)  # the money moves now, whether or not the client hears back
        index = int(sent.id.rsplit("-", 1)[1])
        return _lines(
            _payment(inv, "IN_FLIGHT", index=index),
            _payment(inv, "SUCCEEDED", fee_msat=sent.fee_msat, index=index),
            delay_s=account.delay_s,
        )

    async def track(request: Request) -> Response:
        if not authorised(request):
            return _status(2, BAD_MACAROON, 500, stream=True)
        raw = request.path_params["payment_hash"]
        try:
            payment_hash = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).hex()
        except ValueError:
            return _status(3, "invalid payment hash", 400, stream=True)
        sent = account.sent.get(payment_hash)
        if sent is None:
            return _status(5, "payment isn't initiated", 404, stream=True)
        return _lines(_payment(sent.invoice, "SUCCEEDED", fee_msat=sent.fee_msat))

    async def balance(request: Request) -> Response:
        if not authorised(request):
            return _status(2, BAD_MACAROON, 500, stream=False)
        msat = account.balance_msat
        amount = {"sat": str(msat // 1000), "msat": str(msat)}
        zero = {"sat": "0", "msat": "0"}
        return JSONResponse({
            "balance": str(msat // 1000), "pending_open_balance": "0", "local_balance": amount,
            "remote_balance": zero, "unsettled_local_balance": zero, "unsettled_remote_balance": zero,
            "pending_open_local_balance": zero, "pending_open_remote_balance": zero,
        })

    return Starlette(routes=[
        Route("/v2/router/send", send, methods=["POST"]),
        Route("/v2/router/track/{payment_hash}", track),
        Route("/v1/balance/channels", balance),
    ])
