"""The demo service's x402 v2 routes, verified by a local facilitator: no chain, no network.

- `GET|POST /x402/ticker/{symbol}`: the `exact` scheme (an EIP-3009 USDC authorization on Base
  Sepolia, $0.01), declaring the payment-identifier extension: a payment id is looked up before
  the payment is verified, so the same id with the same payload gets the first answer again (a
  client that lost it recovers it) and the same id with another payload gets 409 Conflict.
- `POST /x402/summarize`: the `upto` scheme (a Permit2 PermitWitnessTransferFrom for at most
  $0.05); the route meters its work (by the size of the text sent) and settles that amount only,
  reported in `PAYMENT-RESPONSE`. `X402Demo.permit2_approved = False` makes it answer 412
  PERMIT2_ALLOWANCE_REQUIRED, as a facilitator does for a payer who never approved Permit2.

The local facilitator checks what a real one checks before settling: the EIP-712 signature
recovers the payer (eth-account), the authorization pays this route's payee the route's amount
(or at most its ceiling), it has not expired and its nonce was never used. eth-account is needed
only by these routes: the demo imports without it, and without it they ask for no payment (a
client would sign one nobody can verify) but answer 501 naming the `x402` extra. Everything is labelled DEMO; no real money moves.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from httpay.demo import data
from httpay.errors import ConfigError

NETWORK = "eip155:84532"                                   # Base Sepolia
USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"        # USDC there (6 decimals, EIP-712 "USDC" v2)
PAY_TO = "0x000000000000000000000000000000000000dE40"      # the demo's payee (DEMO: nobody holds it)
FACILITATOR = "0x000000000000000000000000000000000000FAC1"  # the local facilitator's address
PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
UPTO_SPENDER = "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002"
PAYMENT_ID_DECLARED = {
    "info": {"required": False},
    "schema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
               "properties": {"required": {"type": "boolean"},
                              "id": {"type": "string", "minLength": 16, "maxLength": 128}},
               "required": ["required"]},
}
_AUTH_FIELDS = [("from", "address"), ("to", "address"), ("value", "uint256"), ("validAfter", "uint256"),
                ("validBefore", "uint256"), ("nonce", "bytes32")]
_UPTO_TYPES = {
    "PermitWitnessTransferFrom": [
        {"name": "permitted", "type": "TokenPermissions"}, {"name": "spender", "type": "address"},
        {"name": "nonce", "type": "uint256"}, {"name": "deadline", "type": "uint256"},
        {"name": "witness", "type": "Witness"}],
    "TokenPermissions": [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint256"}],
    "Witness": [{"name": "to", "type": "address"}, {"name": "facilitator", "type": "address"},
                {"name": "validAfter", "type": "uint256"}],
}


class Refused(Exception):
    """The local facilitator's verdict on a payment: an x402 error code, answered with a 402."""


@dataclass
class X402Demo:
    """The x402 routes' settings and books (per app): prices, what was settled, payment ids seen."""

    price: int = 10_000              # exact: $0.01 in USDC's atomic units
    ceiling: int = 50_000            # upto: at most $0.05
    per_byte: int = 10               # upto: what the summary costs per byte of text sent
    permit2_approved: bool = True    # False: every upto payer has no Permit2 allowance (412)
    settlements: list[dict[str, Any]] = field(default_factory=list)
    used_nonces: set[str] = field(default_factory=set)
    answers: dict[str, tuple[str, int, bytes, dict[str, str]]] = field(default_factory=dict, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _x402(request: Request) -> X402Demo:
    found: X402Demo = request.app.state.x402
    return found


def _b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode("ascii")


def _eth() -> Any:
    """eth-account, or ConfigError naming the extra (only a paid request to these routes needs it)."""
    from httpay.extras import require

    require("x402")
    import eth_account

    return eth_account


def requirement(scheme: str, amount: int, path: str) -> dict[str, Any]:
    extra: dict[str, Any] = {"name": "USDC", "version": "2"}
    if scheme == "upto":
        extra["facilitatorAddress"] = FACILITATOR
    return {"scheme": scheme, "network": NETWORK, "amount": str(amount), "asset": USDC, "payTo": PAY_TO,
            "maxTimeoutSeconds": 300, "description": f"DEMO {path}", "mimeType": "application/json", "extra": extra}


def _challenge(request: Request, req: dict[str, Any], error: str = "PAYMENT-SIGNATURE header is required",
               status: int = 402) -> Response:
    body = {"x402Version": 2, "error": error,
            "resource": {"url": str(request.url), "description": req["description"], "mimeType": "application/json"},
            "accepts": [req], "extensions": {"payment-identifier": PAYMENT_ID_DECLARED}}
    return JSONResponse({"error": error}, status_code=status, headers={"PAYMENT-REQUIRED": _b64(body),
                                                                      "Cache-Control": "no-store"})


def _payment_id(payload: dict[str, Any]) -> str | None:
    ext = payload.get("extensions")
    info = ext.get("payment-identifier", {}).get("info", {}) if isinstance(ext, dict) else {}
    found = info.get("id") if isinstance(info, dict) else None
    return found if isinstance(found, str) else None


def _verify_exact(eth: Any, cfg: X402Demo, req: dict[str, Any], payload: dict[str, Any]) -> tuple[str, int, str]:
    """(payer, amount, nonce) of a valid EIP-3009 authorization for `req`, else Refused."""
    from eth_account.messages import encode_typed_data

    inner = payload.get("payload") or {}
    auth, signature = inner.get("authorization") or {}, inner.get("signature")
    try:
        message = {k: (int(auth[k]) if t == "uint256" else bytes.fromhex(auth[k][2:]) if t == "bytes32" else auth[k])
                   for k, t in _AUTH_FIELDS}
        typed = {"types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                            {"name": "chainId", "type": "uint256"},
                                            {"name": "verifyingContract", "type": "address"}],
                           "TransferWithAuthorization": [{"name": k, "type": t} for k, t in _AUTH_FIELDS]},
                 "primaryType": "TransferWithAuthorization",
                 "domain": {"name": "USDC", "version": "2", "chainId": 84532, "verifyingContract": USDC},
                 "message": message}
        signer = eth.Account.recover_message(encode_typed_data(full_message=typed), signature=signature)
    except (KeyError, TypeError, ValueError, binascii.Error, AttributeError):
        raise Refused("invalid_exact_evm_payload") from None
    if str(signer).lower() != str(auth["from"]).lower():
        raise Refused("invalid_exact_evm_payload_signature")
    if str(auth["to"]).lower() != PAY_TO.lower() or int(message["value"]) != int(req["amount"]):
        raise Refused("invalid_exact_evm_payload_recipient_or_amount")
    if int(message["validBefore"]) <= time.time():
        raise Refused("invalid_exact_evm_payload_authorization_valid_before")
    return str(signer), int(message["value"]), str(auth["nonce"])


def _verify_upto(eth: Any, cfg: X402Demo, payload: dict[str, Any]) -> tuple[str, int, str]:
    """(payer, ceiling, nonce) of a valid upto Permit2 authorization, else Refused."""
    from eth_account.messages import encode_typed_data

    inner = payload.get("payload") or {}
    auth, signature = inner.get("permit2Authorization") or {}, inner.get("signature")
    try:
        witness, permitted = auth["witness"], auth["permitted"]
        message = {"permitted": {"token": permitted["token"], "amount": int(permitted["amount"])},
                   "spender": auth["spender"], "nonce": int(auth["nonce"]), "deadline": int(auth["deadline"]),
                   "witness": {"to": witness["to"], "facilitator": witness["facilitator"],
                               "validAfter": int(witness["validAfter"])}}
        typed = {"types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"},
                                            {"name": "verifyingContract", "type": "address"}], **_UPTO_TYPES},
                 "primaryType": "PermitWitnessTransferFrom",
                 "domain": {"name": "Permit2", "chainId": 84532, "verifyingContract": PERMIT2}, "message": message}
        signer = eth.Account.recover_message(encode_typed_data(full_message=typed), signature=signature)
    except (KeyError, TypeError, ValueError, binascii.Error, AttributeError):
        raise Refused("invalid_upto_evm_payload") from None
    if str(signer).lower() != str(auth.get("from", "")).lower():
        raise Refused("invalid_permit2_signature")
    if str(auth["spender"]).lower() != UPTO_SPENDER.lower():
        raise Refused("invalid_permit2_spender")
    if str(witness["to"]).lower() != PAY_TO.lower():
        raise Refused("invalid_permit2_recipient_mismatch")
    if str(witness["facilitator"]).lower() != FACILITATOR.lower():
        raise Refused("upto_facilitator_mismatch")
    if str(permitted["token"]).lower() != USDC.lower() or message["permitted"]["amount"] != cfg.ceiling:
        raise Refused("permit2_amount_mismatch")
    if message["deadline"] <= time.time():
        raise Refused("permit2_deadline_expired")
    return str(signer), cfg.ceiling, str(message["nonce"])


async def _paid(request: Request, scheme: str, path: str, serve: Any) -> Response:
    """The x402 gate: 402 without a payment; with one, the payment id looked up first (the first
    answer again, or 409), then the local facilitator's checks, then the route, then settlement."""
    cfg = _x402(request)
    req = requirement(scheme, cfg.ceiling if scheme == "upto" else cfg.price, path)
    try:  # a demo that could not verify a payment asks for none: a client would sign one for nothing
        eth = _eth()
    except ConfigError as exc:
        return JSONResponse({"error": str(exc)}, status_code=501)
    signed = request.headers.get("payment-signature")
    if not signed:
        return _challenge(request, req)
    try:
        payload = json.loads(base64.b64decode(signed, validate=True))
    except (ValueError, binascii.Error):
        payload = None
    if not isinstance(payload, dict):
        return _challenge(request, req, "invalid_payload")
    pid = _payment_id(payload)
    with cfg.lock:
        if pid is not None and pid in cfg.answers:  # looked up before verifying: a resend may not verify again
            first, status, body, headers = cfg.answers[pid]
            if first != signed:
                return JSONResponse({"error": "payment id already used for another payment"}, status_code=409)
            return Response(body, status_code=status, headers=headers, media_type="application/json")
    try:
        if payload.get("accepted") != req:
            raise Refused("the accepted requirement is not this route's")
        payer, authorized, nonce = (_verify_upto(eth, cfg, payload) if scheme == "upto"
                                    else _verify_exact(eth, cfg, req, payload))
        if scheme == "upto" and not cfg.permit2_approved:
            return JSONResponse({"error": "PERMIT2_ALLOWANCE_REQUIRED",
                                 "message": f"approve Permit2 ({PERMIT2}) for {USDC} on {NETWORK}"}, status_code=412)
        with cfg.lock:
            if nonce in cfg.used_nonces:
                raise Refused("authorization_already_used")
            cfg.used_nonces.add(nonce)
    except Refused as exc:
        return _challenge(request, req, str(exc))
    result, amount = await serve(request, authorized)
    tx = "0x" + hashlib.sha256(f"demo|{nonce}".encode()).hexdigest()
    receipt: dict[str, Any] = {"success": True, "transaction": tx if amount else "", "network": NETWORK, "payer": payer}
    if scheme == "upto":
        receipt["amount"] = str(amount)
    headers = {"PAYMENT-RESPONSE": _b64(receipt), "Cache-Control": "private"}
    body = json.dumps(result).encode()
    with cfg.lock:
        cfg.settlements.append({"scheme": scheme, "payer": payer, "amount": amount, "transaction": tx, "id": pid})
        if pid is not None:
            cfg.answers[pid] = (signed, 200, body, headers)
    return Response(body, status_code=200, headers=headers, media_type="application/json")


async def x402_ticker(request: Request) -> Response:
    """DEMO: a stock quote for $0.01 in USDC (x402 `exact`, payment-identifier declared)."""
    symbol = request.path_params["symbol"]
    quote = data.ticker(symbol)
    if quote is None:  # never priced, never paid
        return JSONResponse({"error": f"unknown ticker {symbol.upper()[:12]}; known: {', '.join(data.known_symbols())}"},
                            status_code=404)

    async def serve(_: Request, amount: int) -> tuple[dict[str, Any], int]:
        return {"demo": True, "paid_by": "x402 exact", **quote}, amount
    return await _paid(request, "exact", "/x402/ticker", serve)


async def x402_summarize(request: Request) -> Response:
    """DEMO: summarizes the text sent for up to $0.05 (x402 `upto`), charging by its size."""
    async def serve(req: Request, ceiling: int) -> tuple[dict[str, Any], int]:
        text = (await req.body()).decode("utf-8", "replace")
        cost = min(ceiling, len(text.encode()) * _x402(req).per_byte)
        words = text.split()
        return {"demo": True, "paid_by": "x402 upto", "summary": " ".join(words[:12]), "words": len(words),
                "charged": cost, "ceiling": ceiling}, cost
    return await _paid(request, "upto", "/x402/summarize", serve)
