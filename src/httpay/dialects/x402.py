"""x402 as a dialect: the `exact` scheme on EVM networks, an EIP-3009 `transferWithAuthorization`
signed by httpay's signer and sent with the request, settled by the service.

The wire types are `httpay.protocols.x402`. Reading values each requirement exactly (a known USD
stablecoin's decimals, never the server's word against them) and says why one must not be paid;
obtaining builds the typed data for the chosen requirement only; the signed payload goes in the
payment header, and the service's `PAYMENT-RESPONSE` says whether it settled. A payment buys one
request. Which offers the policy may pay: `Policy(methods=[..., "x402"])` allows every x402 method,
`"x402:exact"` only the exact scheme, `"x402:exact:eip155:8453"` one network.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from httpay.core.dialect import Credential, Obtaining, Payable, Proof, Settlement, ToSign
from httpay.core.effects import Effect
from httpay.core.model import Challenge, Money, Offer
from httpay.errors import ChallengeError
from httpay.policy import Policy
from httpay.protocols import x402
from httpay.protocols.x402 import X402Challenge, X402Requirement

DEFAULT_TIMEOUT_S = 300       # validBefore when the server gives no maxTimeoutSeconds (the x402 servers' default)
MAX_TIMEOUT_S = 3600          # never sign an authorization that stays valid longer than an hour
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")

# x402 v1 network names -> EVM chain ids (v2 uses CAIP-2 "eip155:<id>").
CHAIN_IDS: dict[str, int] = {
    "ethereum": 1, "base": 8453, "base-sepolia": 84532, "polygon": 137, "polygon-amoy": 80002,
    "avalanche": 43114, "avalanche-fuji": 43113, "arbitrum": 42161, "arbitrum-sepolia": 421614,
}


@dataclass(frozen=True)
class KnownAsset:
    """A USD stablecoin whose contract, decimals and EIP-712 domain are public facts."""

    symbol: str
    decimals: int
    eip712_name: str
    eip712_version: str


# Circle's USDC deployments (6 decimals) on the chains x402 servers use.
KNOWN_ASSETS: dict[tuple[int, str], KnownAsset] = {
    (1, "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"): KnownAsset("USDC", 6, "USD Coin", "2"),
    (8453, "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"): KnownAsset("USDC", 6, "USD Coin", "2"),
    (84532, "0x036cbd53842c5426634e7929541ec2318f3dcf7e"): KnownAsset("USDC", 6, "USDC", "2"),
    (137, "0x3c499c542cef5e3811e1192ce70d8cc03d5c3359"): KnownAsset("USDC", 6, "USD Coin", "2"),
    (42161, "0xaf88d065e77c8cc2239327c5edb3a432268e5831"): KnownAsset("USDC", 6, "USD Coin", "2"),
    (421614, "0x75faf114eafb1bdbe2f0316df893fd58ce46aa4d"): KnownAsset("USDC", 6, "USD Coin", "2"),
    (43114, "0xb97ef9ef8734c71904d8002f8b6bc66dd9c48a6e"): KnownAsset("USDC", 6, "USD Coin", "2"),
}

AUTHORIZATION_TYPES: dict[str, list[dict[str, str]]] = {
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"}, {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"}, {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"}, {"name": "nonce", "type": "bytes32"},
    ],
}


class X402Signer(Protocol):
    """What paying x402 needs from a signer (`httpay.signers.EvmSigner` is one)."""

    @property
    def address(self) -> str: ...

    @property
    def name(self) -> str: ...

    def pays_on(self, network: str) -> bool: ...

    def sign_typed_data(self, domain: Mapping[str, Any], types: Mapping[str, Sequence[Mapping[str, str]]],
                        primary_type: str, message: Mapping[str, Any]) -> bytes: ...


def chain_id(network: str) -> int | None:
    """The EVM chain id of an x402 network ("eip155:8453" or a v1 name such as "base"), else None."""
    if network.startswith("eip155:"):
        tail = network[len("eip155:"):]
        return int(tail) if tail.isascii() and tail.isdigit() and len(tail) <= 18 else None
    return CHAIN_IDS.get(network)


@dataclass(frozen=True)
class Valued:
    """One requirement httpay can sign for, with the facts its typed data needs."""

    requirement: X402Requirement
    chain_id: int
    decimals: int
    eip712_name: str
    eip712_version: str


def _int_extra(extra: Mapping[str, Any], key: str) -> int | None:
    v = extra.get(key)
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= 3:
        return int(v)
    return None


def value(req: X402Requirement) -> tuple[Money, Valued | str]:
    """The requirement's exact price, and either what signing it needs or why it must not be paid.

    Decimals come from the known USDC deployments first (a server must not be able to understate
    a price by claiming more decimals), else from `extra.decimals` for a USD-named token; with
    neither, the value is unknowable and it is not paid.
    """
    unknown = Money(req.amount, req.currency)
    if req.scheme != "exact":
        return unknown, f"scheme {req.scheme!r} is not one httpay signs (only 'exact')"
    cid = chain_id(req.network)
    if cid is None:
        return unknown, f"network {req.network!r} is not an EVM network httpay knows"
    method = req.extra.get("assetTransferMethod")
    if method not in (None, "eip3009"):
        return unknown, f"asset transfer method {str(method)[:20]!r} is not supported (only EIP-3009)"
    if not _ADDRESS.match(req.pay_to) or not _ADDRESS.match(req.asset):
        return unknown, "payTo and asset must be 20-byte hex addresses"
    if int(req.pay_to, 16) == 0:
        return unknown, "payTo is the zero address"
    known = KNOWN_ASSETS.get((cid, req.asset.lower()))
    claimed = _int_extra(req.extra, "decimals")
    name, version = req.extra.get("name"), req.extra.get("version")
    if known is not None:
        if claimed is not None and claimed != known.decimals:
            return unknown, f"the service says {req.currency} has {claimed} decimals, but it has {known.decimals}"
        decimals, symbol = known.decimals, known.symbol
        name = name if isinstance(name, str) and name else known.eip712_name
        version = version if isinstance(version, str) and version else known.eip712_version
    else:
        label = f"{req.currency} {name if isinstance(name, str) else ''}".upper()
        if claimed is None or "USD" not in label or claimed > 36:
            return unknown, (f"asset {req.asset} on {req.network} is not a known USD stablecoin and its value "
                             "cannot be told; not paying an amount whose worth is unknown")
        decimals, symbol = claimed, req.currency
    price = Money(req.amount, symbol, decimals=decimals, asset=req.asset, usd_pegged=True)
    if not isinstance(name, str) or not name or not isinstance(version, str) or not version:
        return price, "the requirement lacks the token's EIP-712 name and version (extra.name, extra.version)"
    return price, Valued(req, cid, decimals, name, version)


def to_challenge(ch: X402Challenge, url: str) -> Challenge:
    offers: list[Offer] = []
    seen: set[str] = set()
    for i, r in enumerate(ch.accepts):
        oid = r.offer_id if r.offer_id not in seen else f"{r.offer_id}_{i}"
        seen.add(oid)
        price, valued = value(r)
        desc = r.description or ch.description or ""
        offers.append(Offer(
            offer_id=oid, title=desc or f"{r.scheme} payment on {r.network}", description=desc, price=price,
            payment_methods=(r.payment_method,), pay_method=r.payment_method, dialect=x402.PROTOCOL, rail="evm",
            network=r.network, unpayable=valued if isinstance(valued, str) else None,
            payload=valued if isinstance(valued, Valued) else r,
        ))
    key = hashlib.sha256(f"x402|{url}|{[o.offer_id for o in offers]}".encode()).hexdigest()[:32]
    return Challenge(x402.PROTOCOL, tuple(offers), key, url=url, version=str(ch.version), reuse="request", raw=ch)


def authorization(v: Valued, payer: str, *, nonce: bytes, now: int) -> dict[str, str]:
    """The EIP-3009 authorization for the chosen requirement only: its payTo, amount and timeout."""
    if len(nonce) != 32:
        raise ValueError("an EIP-3009 nonce is 32 bytes")
    timeout = v.requirement.max_timeout_seconds or DEFAULT_TIMEOUT_S
    return {
        "from": payer, "to": v.requirement.pay_to, "value": str(v.requirement.amount),
        "validAfter": "0", "validBefore": str(now + min(timeout, MAX_TIMEOUT_S)), "nonce": "0x" + nonce.hex(),
    }


def typed_data(v: Valued, auth: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, list[dict[str, str]]], str,
                                                            dict[str, Any]]:
    """(domain, types, primary type, message) of the EIP-712 message the signer signs."""
    domain = {"name": v.eip712_name, "version": v.eip712_version, "chainId": v.chain_id,
              "verifyingContract": v.requirement.asset}
    message = {"from": auth["from"], "to": auth["to"], "value": int(auth["value"]),
               "validAfter": int(auth["validAfter"]), "validBefore": int(auth["validBefore"]),
               "nonce": bytes.fromhex(auth["nonce"][2:])}
    return domain, AUTHORIZATION_TYPES, "TransferWithAuthorization", message


def payment_payload(ch: X402Challenge, req: X402Requirement, auth: Mapping[str, str],
                    signature: bytes) -> dict[str, Any]:
    """The payload the server reads: v2 echoes the accepted requirement, v1 names scheme and network."""
    inner = {"signature": "0x" + signature.hex(), "authorization": dict(auth)}
    if ch.version == 1:
        return {"x402Version": 1, "scheme": req.scheme, "network": req.network, "payload": inner}
    out: dict[str, Any] = {"x402Version": 2, "payload": inner, "accepted": dict(req.raw)}
    for key in ("resource", "extensions"):
        if ch.raw.get(key) is not None:
            out[key] = ch.raw[key]
    return out


class X402:
    """The x402 dialect (v1 and v2, `exact` on EVM)."""

    name = x402.PROTOCOL
    rank = 30

    def read(self, status: int, headers: Any, body: bytes | None, url: str) -> list[Challenge]:
        try:
            found = x402.parse(status, headers, body)
        except ChallengeError as exc:
            if exc.field != "body":
                raise
            found = None
        if found is None:
            # A body labelled JSON that is not JSON (empty, an HTML page): v2 sends its challenge in
            # PAYMENT-REQUIRED with any body at all.
            found = x402.parse(status, headers, None)
        return [] if found is None else [to_challenge(found, url)]

    def obtain(self, ctx: Obtaining) -> Generator[Effect, Any, Payable]:
        """The typed data authorizing the chosen requirement, for the signer's address."""
        v: Valued = ctx.quote.offer.payload
        assert ctx.payer_address is not None and ctx.quote.price_msat is not None
        nonce = secrets.token_bytes(32)
        auth = authorization(v, ctx.payer_address, nonce=nonce, now=int(time.time()))
        domain, types, primary, message = typed_data(v, auth)
        return ToSign(domain, types, primary, message, amount_msat=ctx.quote.price_msat, reference=nonce.hex(),
                      price=f"{ctx.quote.offer.price} on {v.requirement.network}", state=(v, auth))
        yield  # nothing to fetch

    def present(self, challenge: Challenge, payable: Payable, proof: Proof) -> Credential:
        assert isinstance(payable, ToSign) and proof.signature is not None
        ch: X402Challenge = challenge.raw
        v, auth = payable.state
        name, header = x402.encode_payment_header(payment_payload(ch, v.requirement, auth, proof.signature), ch.version)
        return Credential({name: header})

    def advertise(self, policy: Policy, can_sign: bool) -> Mapping[str, str]:
        return {}

    def settlement(self, response: httpx.Response) -> Settlement | None:
        try:
            proof = x402.decode_payment_response(response.headers)
        except ChallengeError:
            proof = None
        if proof is not None:
            return Settlement(proof.success, proof.transaction, proof.network,
                              proof.error_reason or proof.error_message)
        if response.status_code == 402:
            try:
                again = x402.parse(response.status_code, response.headers, response.content)
            except ChallengeError:
                again = None
            if again is not None and again.error:
                return Settlement(None, reason=again.error)
        return None
