"""A fake Lightspark GraphQL API that the real `lightspark` SDK talks to (it takes a `base_url`).

It answers the operations the SDK sends, by operationName, with the aliased JSON keys of the SDK's
own fragments: RecoverNodeSigningKey (an RSA key encrypted with the node password in the SDK's v4
cipher format), PayInvoice (checks HTTP Basic auth and the RSA-PSS `X-Lightspark-Signing` over the
payload, honours idempotency keys, answers PENDING and settles on the next read like the real
service), GetEntity, OutgoingPaymentsForPaymentHash, and the adapter's HttpayNodeBalance query.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import bolt11
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.wallets.fakes import FakeAccount, Invoice

GRAPHQL_PATH = "/graphql/server/2023-09-13"
KDF_ITERATIONS = 1_000  # the SDK reads the count from the cipher header; real keys use 500,000


@dataclass
class Op:
    """One OutgoingPayment as Lightspark keeps it."""

    id: str
    invoice: Invoice
    status: str  # SUCCESS | FAILED | PENDING
    origin: str
    fee_msat: int = 0
    reason: str | None = None
    idempotency_key: str | None = None
    reads_until_settled: int = 0
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


def _amount(msat: int) -> dict[str, Any]:
    return {
        "__typename": "CurrencyAmount", "currency_amount_original_value": msat,
        "currency_amount_original_unit": "MILLISATOSHI", "currency_amount_preferred_currency_unit": "SATOSHI",
        "currency_amount_preferred_currency_value_rounded": msat // 1000,
        "currency_amount_preferred_currency_value_approx": msat / 1000,
    }


def _encrypt(plaintext: bytes, password: str) -> tuple[str, str]:
    """The SDK's v4 cipher: PBKDF2-SHA256 -> AES-256-GCM key and nonce; value = base64(salt + ciphertext)."""
    salt = os.urandom(16)
    derived = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, KDF_ITERATIONS, 32 + 12)
    ciphertext = AESGCM(derived[:32]).encrypt(derived[32:], plaintext, None)
    return json.dumps({"v": 4, "i": KDF_ITERATIONS}), base64.b64encode(salt + ciphertext).decode()


@functools.cache
def _node_key() -> rsa.RSAPrivateKey:
    """One RSA signing key per test session (generating 2048-bit keys is the slow part of the fake)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeLightspark:
    """State of one Lightspark account with one node paying from `account`."""

    def __init__(self, account: FakeAccount, *, client_id: str, client_secret: str, node_id: str, node_password: str) -> None:
        self.account = account
        self.client_id, self.node_id = client_id, node_id
        self._basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._key = _node_key()
        der = self._key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
        self.cipher, self.encrypted_key = _encrypt(der, node_password)
        self.ops: dict[str, Op] = {}
        self.reads_until_settled = 1

    # -- JSON in the SDK's fragment shapes ------------------------------------------------------

    def payment_json(self, op: Op) -> dict[str, Any]:
        settled = op.status == "SUCCESS"
        return {
            "__typename": "OutgoingPayment", "outgoing_payment_id": op.id,
            "outgoing_payment_created_at": op.created, "outgoing_payment_updated_at": op.created,
            "outgoing_payment_status": op.status,
            "outgoing_payment_resolved_at": op.created if op.status != "PENDING" else None,
            "outgoing_payment_amount": _amount(op.invoice.amount_msat),
            "outgoing_payment_transaction_hash": None, "outgoing_payment_is_uma": False,
            "outgoing_payment_origin": {"id": op.origin}, "outgoing_payment_destination": None,
            "outgoing_payment_fees": _amount(op.fee_msat) if settled else None,
            "outgoing_payment_payment_request_data": None,
            "outgoing_payment_failure_reason": op.reason,
            "outgoing_payment_failure_message": {"rich_text_text": f"payment failed: {op.reason}"} if op.reason else None,
            "outgoing_payment_uma_post_transaction_data": None,
            "outgoing_payment_payment_preimage": op.invoice.preimage if settled else None,
            "outgoing_payment_is_internal_payment": False,
            "outgoing_payment_idempotency_key": op.idempotency_key,
        }

    def _read(self, op: Op) -> dict[str, Any]:
        if op.status == "PENDING" and op.reads_until_settled > 0:
            op.reads_until_settled -= 1
            if op.reads_until_settled == 0:
                op.status = "SUCCESS"
        return self.payment_json(op)

    # -- operations -----------------------------------------------------------------------------

    def recover(self, variables: dict[str, Any]) -> dict[str, Any]:
        if variables.get("node_id") != self.node_id:
            return {"entity": None}
        return {"entity": {"__typename": "LightsparkNodeWithOSK", "encrypted_signing_private_key": {
            "encrypted_value": self.encrypted_key, "cipher": self.cipher}}}

    def pay(self, variables: dict[str, Any]) -> dict[str, Any]:
        key = variables.get("idempotency_key")
        for op in self.ops.values():
            if key and op.idempotency_key == key:
                return {"pay_invoice": {"payment": self._read(op)}}
        try:
            decoded = bolt11.decode(variables["encoded_invoice"])
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"invalid encoded_invoice: {type(exc).__name__}") from None
        acct = self.account
        inv = acct.payee.find(variables["encoded_invoice"]) or Invoice(
            variables["encoded_invoice"], decoded.payment_hash, "00" * 32, decoded.amount_msat or 0)
        op = Op(f"OutgoingPayment:{len(self.ops) + 1}", inv, "FAILED", self.node_id, idempotency_key=key)
        if inv.payment_hash not in acct.payee.invoices:
            op.reason = "INCORRECT_PAYMENT_DETAILS"
        elif inv.paid_by is not None:
            op.reason = "INVOICE_ALREADY_PAID"
        elif acct.fee_msat > int(variables["maximum_fees_msats"]):
            op.reason = "NO_ROUTE"
        elif acct.balance_msat < inv.amount_msat + acct.fee_msat:
            op.reason = "INSUFFICIENT_BALANCE"
        else:
            sent = acct.pay(inv)
            op.status, op.fee_msat, op.reads_until_settled = "PENDING", sent.fee_msat, self.reads_until_settled
            if op.reads_until_settled == 0:
                op.status = "SUCCESS"
        self.ops[op.id] = op
        return {"pay_invoice": {"payment": self.payment_json(op)}}

    def entity(self, variables: dict[str, Any]) -> dict[str, Any]:
        op = self.ops.get(variables.get("id", ""))
        return {"entity": self._read(op) if op else None}

    def for_hash(self, variables: dict[str, Any]) -> dict[str, Any]:
        h = str(variables.get("payment_hash", "")).lower()
        found = [self._read(op) for op in self.ops.values() if op.invoice.payment_hash == h]
        return {"outgoing_payments_for_payment_hash": {"payments": found}}

    def balance(self, variables: dict[str, Any]) -> dict[str, Any]:
        if variables.get("id") != self.node_id:
            return {"entity": None}
        return {"entity": {"__typename": "LightsparkNodeWithOSK", "balances": {"available_to_send_balance": {
            "original_value": self.account.balance_msat, "original_unit": "MILLISATOSHI"}}}}

    def signature_ok(self, payload: bytes, header: str | None) -> bool:
        try:
            signature = base64.b64decode(json.loads(header or "")["signature"])
            self._key.public_key().verify(
                signature, payload,
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH), hashes.SHA256(),
            )
        except (ValueError, KeyError, TypeError, InvalidSignature):
            return False
        return True


def create_app(fake: FakeLightspark) -> Starlette:
    handlers = {
        "RecoverNodeSigningKey": fake.recover, "PayInvoice": fake.pay, "GetEntity": fake.entity,
        "OutgoingPaymentsForPaymentHash": fake.for_hash, "HttpayNodeBalance": fake.balance,
    }

    async def graphql(request: Request) -> Response:
        if request.headers.get("authorization") != fake._basic:
            return JSONResponse({"errors": [{"message": "Unauthorized"}]}, status_code=401)
        raw = await request.body()
        encoding = request.headers.get("content-encoding")
        if encoding == "zstd":
            import zstandard

            raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        elif encoding == "deflate":
            raw = zlib.decompress(raw)
        body = json.loads(raw)
        operation = body.get("operationName")
        fake.account.calls.append(str(operation))
        handler = handlers.get(operation)
        if handler is None:
            return JSONResponse({"errors": [{"message": f"unknown operation {operation}"}]})
        if operation == "PayInvoice" and not fake.signature_ok(raw, request.headers.get("x-lightspark-signing")):
            return JSONResponse({"errors": [{"message": "Request signature is invalid", "extensions": {"error_name": "InvalidSignature"}}]})
        try:
            data = handler(body.get("variables") or {})
        except ValueError as exc:
            return JSONResponse({"errors": [{"message": str(exc)}]})
        if operation == "PayInvoice" and fake.account.delay_s:
            await asyncio.sleep(fake.account.delay_s)
        return JSONResponse({"data": data})

    return Starlette(routes=[Route(GRAPHQL_PATH, graphql, methods=["POST"])])
