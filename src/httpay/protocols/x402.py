"""x402: read payment requirements (v1 JSON body, v2 base64 `PAYMENT-REQUIRED` header), no I/O.

Field names follow the x402 SDK 2.25.0 schemas: v1 requirements carry `maxAmountRequired`,
`resource`, `description`, `mimeType`; v2 carries `amount` and moves the resource to the top
level as `{url, description, mimeType}`. Amounts are strings of the asset's atomic units.
The client answers with `X-PAYMENT` (v1) or `PAYMENT-SIGNATURE` (v2) and the server's receipt
comes back in `X-PAYMENT-RESPONSE` / `PAYMENT-RESPONSE`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from httpay.errors import ChallengeError
from httpay.protocols.evm import KNOWN_ASSETS, KnownAsset
from httpay.protocols.l402_v02 import Offer, format_amount
from httpay.protocols.www_authenticate import header_values
from httpay.safe import clean, digits, loads, may_hold_key

__all__ = [
    "PAYMENT_IDENTIFIER",
    "PAYMENT_REQUIRED",
    "PAYMENT_RESPONSE",
    "PAYMENT_SIGNATURE",
    "X_PAYMENT",
    "X_PAYMENT_RESPONSE",
    "X402Challenge",
    "X402Receipt",
    "X402Requirement",
    "decode_payment_response",
    "encode_payment_header",
    "parse",
]

PROTOCOL = "x402"
PAYMENT_REQUIRED = "PAYMENT-REQUIRED"
PAYMENT_SIGNATURE = "PAYMENT-SIGNATURE"
PAYMENT_RESPONSE = "PAYMENT-RESPONSE"
X_PAYMENT = "X-PAYMENT"
X_PAYMENT_RESPONSE = "X-PAYMENT-RESPONSE"

PAYMENT_IDENTIFIER = "payment-identifier"   # v2 extension: an idempotency key for the payment
SIGN_IN_WITH_X = "sign-in-with-x"           # v2 extension: a returning payer signs in instead of paying
SIGN_IN_HEADER = "SIGN-IN-WITH-X"
PAYMENT_ID = re.compile(r"^[A-Za-z0-9_-]{16,128}\Z")

MAX_HEADER_CHARS = 256 * 1024
MAX_AMOUNT = 2**256 - 1  # EVM token amounts are uint256


def _str(d: Mapping[str, Any], key: str, where: str, required: bool = True) -> str | None:
    value = d.get(key)
    if value is None:
        if required:
            raise ChallengeError(f"{where}: field '{key}' is missing", field=key)
        return None
    if not isinstance(value, str):
        raise ChallengeError(f"{where}: field '{key}' must be a string, got {type(value).__name__}", field=key)
    return value


# x402 v1 network names -> EVM chain ids (v2 uses CAIP-2 "eip155:<id>").
CHAIN_IDS: dict[str, int] = {
    "ethereum": 1, "base": 8453, "base-sepolia": 84532, "polygon": 137, "polygon-amoy": 80002,
    "avalanche": 43114, "avalanche-fuji": 43113, "arbitrum": 42161, "arbitrum-sepolia": 421614,
}


def chain_id(network: str) -> int | None:
    """The EVM chain id of an x402 network ("eip155:8453" or a v1 name such as "base"), else None."""
    if network.startswith("eip155:"):
        return digits(network[len("eip155:"):], 18)
    return CHAIN_IDS.get(network)


def _atomic(value: Any, key: str, where: str) -> int:
    """An amount in atomic units: a string of digits (the spec) or a whole JSON number."""
    if isinstance(value, bool) or value is None:
        raise ChallengeError(f"{where}: field '{key}' is missing or not an amount", field=key)
    if isinstance(value, int):
        amount = value
    elif isinstance(value, str) and value.strip().isdigit() and value.strip().isascii() and len(value.strip()) <= 80:
        amount = int(value.strip())
    else:
        shown = value[:30] if isinstance(value, str) else type(value).__name__
        raise ChallengeError(
            f"{where}: field '{key}' must be a whole number of atomic units as a string, got {shown!r}", field=key
        )
    if amount < 0 or amount > MAX_AMOUNT:
        raise ChallengeError(f"{where}: field '{key}' is out of range for a token amount", field=key)
    return amount


@dataclass(frozen=True)
class X402Requirement:
    """One way to pay: `amount` atomic units of `asset` on `network` to `pay_to`, by `scheme`."""

    scheme: str
    network: str
    amount: int
    asset: str
    pay_to: str
    max_timeout_seconds: int | None = None
    resource: str | None = None
    description: str | None = None
    mime_type: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Any, version: int, index: int = 0) -> X402Requirement:
        where = f"x402 accepts[{index}]"
        if not isinstance(d, Mapping):
            raise ChallengeError(f"{where} must be an object, got {type(d).__name__}", field="accepts")
        # v1 names it maxAmountRequired, v2 amount; some servers mix the versions' names.
        names = ("maxAmountRequired", "amount") if version == 1 else ("amount", "maxAmountRequired")
        key = names[1] if names[0] not in d and names[1] in d else names[0]
        timeout = d.get("maxTimeoutSeconds")
        if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1):
            # (0 is no window at all: never read as "none given", which would sign a 300 s one)
            raise ChallengeError(f"{where}: field 'maxTimeoutSeconds' must be a positive whole number of seconds",
                                 field="maxTimeoutSeconds")
        extra = d.get("extra")
        if extra is not None and not isinstance(extra, Mapping):
            raise ChallengeError(f"{where}: field 'extra' must be an object", field="extra")
        return cls(
            scheme=_str(d, "scheme", where) or "",
            network=_str(d, "network", where) or "",
            amount=_atomic(d.get(key), key, where),
            asset=_str(d, "asset", where) or "",
            pay_to=_str(d, "payTo", where) or "",
            max_timeout_seconds=timeout,
            resource=_str(d, "resource", where, required=False),
            description=_str(d, "description", where, required=False),
            mime_type=_str(d, "mimeType", where, required=False),
            extra=dict(extra or {}),
            raw=dict(d),
        )

    @property
    def known_asset(self) -> KnownAsset | None:
        """The asset, when it is a USD stablecoin deployment httpay knows on this network."""
        cid = chain_id(self.network)
        return KNOWN_ASSETS.get((cid, self.asset.lower())) if cid is not None else None

    @property
    def currency(self) -> str:
        """What the asset is called in a view: a known asset's own symbol, else its address. Never the
        server's `extra.name` (its EIP-712 name): a token the server names "USDC" may be anything."""
        known = self.known_asset
        return known.symbol if known is not None else self.asset

    @property
    def offer_id(self) -> str:
        """A stable id for this way of paying (same scheme, network, asset and payee -> same id)."""
        def norm(addr: str) -> str:  # EVM addresses ignore case; others (Solana) do not
            return addr.lower() if addr[:2] in ("0x", "0X") else addr

        key = "|".join((self.scheme, self.network, norm(self.asset), norm(self.pay_to)))
        return "x402_" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]

    @property
    def payment_method(self) -> str:
        """"x402:exact:eip155:8453": the scheme and network are server text, so a view or a JSON field
        built from them is made safe and short here (a real one never changes)."""
        return f"x402:{clean(self.scheme, 40)}:{clean(self.network, 100)}"

    def __str__(self) -> str:
        return (f"{format_amount(self.amount, self.currency)} by {clean(self.scheme, 40)} on {clean(self.network, 80)} "
                f"to {clean(self.pay_to, 100)}")


@dataclass(frozen=True)
class X402Challenge:
    """An x402 402: the accepted ways to pay, the server's error text and the resource."""

    version: int
    accepts: tuple[X402Requirement, ...]
    error: str | None = None
    resource: str | None = None
    description: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    protocol: str = PROTOCOL

    @classmethod
    def from_dict(cls, d: Any, default_version: int = 2) -> X402Challenge:
        where = "x402 payment requirements"
        if not isinstance(d, Mapping):
            raise ChallengeError(f"{where} must be a JSON object, got {type(d).__name__}", field=None)
        version = d.get("x402Version", default_version)
        if not isinstance(version, int) or isinstance(version, bool) or version not in (1, 2):
            raise ChallengeError(f"{where}: x402Version {str(version)[:10]!r} is not one httpay reads (1 or 2)",
                                 field="x402Version")
        accepts = d.get("accepts")
        if not isinstance(accepts, list):
            raise ChallengeError(f"{where}: field 'accepts' must be a list", field="accepts")
        if not accepts:
            raise ChallengeError(f"{where}: field 'accepts' is empty: the server named no way to pay", field="accepts")
        reqs = tuple(X402Requirement.from_dict(a, version, i) for i, a in enumerate(accepts))
        error = d.get("error")
        resource: str | None = None
        description: str | None = None
        res = d.get("resource")
        if isinstance(res, Mapping):
            url, desc = res.get("url"), res.get("description")
            resource = url if isinstance(url, str) else None
            description = desc if isinstance(desc, str) else None
        elif isinstance(res, str):
            resource = res
        if resource is None and reqs:
            resource = reqs[0].resource
        return cls(
            version=version,
            accepts=reqs,
            error=error if isinstance(error, str) else (None if error is None else json.dumps(error)[:200]),
            resource=resource,
            description=description,
            raw=dict(d),
        )

    @property
    def extensions(self) -> Mapping[str, Any]:
        """The v2 `extensions` the server declared (empty when none, or not an object)."""
        ext = self.raw.get("extensions")
        return ext if isinstance(ext, Mapping) and self.version == 2 else {}

    def payment_identifier(self) -> PaymentIdentifier | None:
        """The server's payment-identifier declaration, or None when it declared none."""
        if PAYMENT_IDENTIFIER not in self.extensions:
            return None
        ext = self.extensions[PAYMENT_IDENTIFIER]
        info = ext.get("info") if isinstance(ext, Mapping) else None
        required = info.get("required", False) if isinstance(info, Mapping) else None
        if not isinstance(required, bool):
            return PaymentIdentifier(required=True, problem="its info.required is not true or false")
        return PaymentIdentifier(required=required)

    def sign_in(self) -> SignIn | None:
        """The server's sign-in-with-x offer (None: none, or not an object with an `info` object)."""
        ext = self.extensions.get(SIGN_IN_WITH_X)
        info = ext.get("info") if isinstance(ext, Mapping) else None
        if not isinstance(ext, Mapping) or not isinstance(info, Mapping):
            return None
        chains = ext.get("supportedChains")
        return SignIn(info=dict(info), chains=tuple(c for c in chains if isinstance(c, Mapping))
                      if isinstance(chains, list) else ())

    def to_offers(self) -> list[Offer]:
        """The requirements as `Offer`s, so a person or an agent sees the price as for L402 offers."""
        offers: list[Offer] = []
        seen: set[str] = set()
        for i, r in enumerate(self.accepts):
            oid = r.offer_id if r.offer_id not in seen else f"{r.offer_id}_{i}"
            seen.add(oid)
            desc = r.description or self.description or ""
            offers.append(Offer(
                offer_id=oid,
                title=desc or f"{r.scheme} payment on {r.network}",
                description=desc,
                type="one-time",
                balance=None,
                amount=r.amount,
                currency=r.currency,
                payment_methods=(r.payment_method,),
                extra={"x402_version": self.version, "network": r.network, "asset": r.asset, "pay_to": r.pay_to,
                       "requirement": dict(r.raw)},
            ))
        return offers

    def __str__(self) -> str:
        head = f"x402 v{self.version} payment required" + (f" for {clean(self.resource)}" if self.resource else "")
        if self.error:
            head += f" ({clean(self.error, 80)})"
        return head + "".join(f"\n- {r}" for r in self.accepts)


@dataclass(frozen=True)
class PaymentIdentifier:
    """A payment-identifier declaration: whether the server requires an id, and what is wrong with it
    (`problem`: a declaration httpay cannot follow, so it is treated as required and not met)."""

    required: bool
    problem: str | None = None


_SIWE_FIELDS = (("uri", "URI"), ("version", "Version"), ("chainId", "Chain ID"), ("nonce", "Nonce"),
                ("issuedAt", "Issued At"), ("expirationTime", "Expiration Time"), ("notBefore", "Not Before"),
                ("requestId", "Request ID"))


@dataclass(frozen=True)
class SignIn:
    """A sign-in-with-x offer: the CAIP-122 message fields (`info`) and the chains it accepts."""

    info: Mapping[str, Any]
    chains: tuple[Mapping[str, Any], ...] = ()

    def evm_chain(self) -> str | None:
        """The first EVM chain signed by EIP-191 (personal_sign) the server accepts, as "eip155:<id>"."""
        for c in self.chains:
            cid = c.get("chainId")
            if (c.get("type") == "eip191" and isinstance(cid, str) and cid.startswith("eip155:")
                    and cid[7:].isascii() and cid[7:].isdigit() and len(cid) <= 30):
                return cid
        return None

    def problem(self, url: str, now: float) -> str | None:
        """Why httpay must not sign this for a request to `url` (None: it may): another domain or origin
        (never sign in for another site), a field that would add lines to the message, no EVM chain, expired."""
        from urllib.parse import urlsplit

        from httpay.safe import clean

        info, here = self.info, urlsplit(url)
        netloc = (here.hostname or "").lower() + (f":{here.port}" if here.port else "")
        for key in ("domain", "uri", "version", "nonce", "issuedAt"):
            if not isinstance(info.get(key), str) or not info[key]:
                return f"its message lacks {key}"
        for key, value in info.items():
            texts = value if isinstance(value, list) else [value]
            if any(not isinstance(t, str) or "\n" in t or "\r" in t for t in texts if t is not None):
                return f"its {clean(str(key), 30)} is not one line of text"
        if str(info["domain"]).lower() != netloc:
            return f"it is for {clean(str(info['domain']), 80)!r}, not {netloc!r}: httpay never signs in for another domain"
        for uri in [info["uri"], *(info.get("resources") or [])]:
            there = urlsplit(str(uri))
            if (there.scheme, (there.hostname or "").lower(), there.port) != (here.scheme, here.hostname, here.port):
                return f"its URI {clean(str(uri), 80)!r} is not on {here.scheme}://{netloc}"
        if not (str(info["nonce"]).isascii() and str(info["nonce"]).isalnum() and len(str(info["nonce"])) >= 8):
            return "its nonce is not 8 or more letters and digits"
        if self.evm_chain() is None:
            return "it accepts no EVM chain signed by EIP-191"
        expires = info.get("expirationTime")
        if isinstance(expires, str):
            from datetime import datetime

            try:
                if datetime.fromisoformat(expires).timestamp() <= now:
                    return "its message has expired"
            except ValueError:
                return "its expirationTime is not a time"
        return None

    def message(self, address: str, chain: str) -> str:
        """The EIP-4361 (SIWE) text of this offer for `address` on `chain`, as a SIWE verifier rebuilds it."""
        info = {**self.info, "chainId": chain.removeprefix("eip155:")}
        head = f"{info['domain']} wants you to sign in with your Ethereum account:\n{address}\n"
        statement = info.get("statement")
        head += f"\n{statement}\n" if statement else "\n"  # as EIP-4361: a blank statement line stays
        lines = [f"{label}: {info[key]}" for key, label in _SIWE_FIELDS if info.get(key)]
        resources = info.get("resources")
        if resources:
            lines.append("Resources:" + "".join(f"\n- {r}" for r in resources))
        return head + "\n" + "\n".join(lines)

    def header(self, address: str, chain: str, signature: bytes) -> str:
        """The `SIGN-IN-WITH-X` value: base64 JSON of the message fields, the address, chain, type and signature."""
        payload = {**{k: v for k, v in self.info.items() if v is not None}, "address": address, "chainId": chain,
                   "type": "eip191", "signature": "0x" + signature.hex()}
        return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode("ascii")


# x402 `exact` on Lightning: an unmerged proposal (x402 PRs #1311, #2861; draft scheme_exact_lnbtc.md).
LNBTC_PROPOSAL = "x402-lnbtc"
LNBTC_NETWORKS = {"lnbtc:000000000019d6689c085ae165831e93": "bitcoin", "lnbtc:000000000933ea01ad0ee984209779ba": "testnet"}
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9a-z-]+\Z")


def lnbtc_request_hash(method: str, url: str, body: bytes, bound: Sequence[str], headers: Mapping[str, str]) -> str:
    """The `http:1` request hash of the lnbtc draft: SHA-256 of the JCS of {domain, method, url, bodyHash,
    headers} (each bound header's value hashed as 0x01 || value, an absent one as 0x00)."""
    def value_hash(name: str) -> str:
        value = headers.get(name)
        if value is None:
            return hashlib.sha256(b"\x00").hexdigest()
        if not value.isascii():
            raise ValueError(f"header {name} is not ASCII")
        return hashlib.sha256(b"\x01" + value.encode("ascii")).hexdigest()

    binding = {"domain": "x402:exact:lnbtc:bolt11:http:1", "method": method, "url": url,
               "bodyHash": hashlib.sha256(body).hexdigest(),
               "headers": [{"name": n, "valueHash": value_hash(n)} for n in bound]}
    # JCS of an object of ASCII-keyed strings, arrays and objects: sorted keys, no whitespace, UTF-8
    text = json.dumps(binding, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def with_payment_id(extensions: Mapping[str, Any], payment_id: str) -> dict[str, Any]:
    """The server's extensions echoed, the payment-identifier's `info.id` set (as the spec's PaymentPayload)."""
    if not PAYMENT_ID.match(payment_id):
        raise ChallengeError("an x402 payment id is 16-128 of A-Z, a-z, 0-9, '_' and '-'", field="id")
    out = {k: v for k, v in extensions.items()}
    ext = extensions.get(PAYMENT_IDENTIFIER)
    ext = dict(ext) if isinstance(ext, Mapping) else {}
    info = ext.get("info")
    ext["info"] = {**(dict(info) if isinstance(info, Mapping) else {}), "id": payment_id}
    out[PAYMENT_IDENTIFIER] = ext
    return out


def decode_payment_header(value: str) -> Any:
    """The payment payload in a `PAYMENT-SIGNATURE` / `X-PAYMENT` value (ChallengeError if it is not one)."""
    return _b64json(value, PAYMENT_SIGNATURE)


def _b64json(value: str, what: str) -> Any:
    text = "".join(value.split())
    if len(text) > MAX_HEADER_CHARS:
        raise ChallengeError(f"{what} is too long to be real", field=what)
    text = text.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        return loads(raw)
    except (binascii.Error, ValueError):  # ValueError covers bad text, absurd nesting and absurd integers
        raise ChallengeError(f"{what} is not base64-encoded JSON", field=what) from None


_BODY_KEYS = ("x402Version",)


def _content_type(headers: Any) -> str:
    values = header_values(headers, "content-type")
    return values[0].lower() if values else ""


def parse(status: int, headers: Any, body: bytes | str | None = None) -> X402Challenge | None:
    """Read a response into an `X402Challenge`, or None when it is not an x402 challenge.

    v2's `PAYMENT-REQUIRED` header wins over a body; a body counts when it is a JSON object with
    `x402Version`. Garbage in either raises ChallengeError.
    """
    if status != 402:
        return None
    header = [v for v in header_values(headers, PAYMENT_REQUIRED) if v.strip()]
    if header:
        return X402Challenge.from_dict(_b64json(header[0], PAYMENT_REQUIRED), default_version=2)
    if body is None or (isinstance(body, bytes | str) and not body.strip()):
        return None
    if not isinstance(body, bytes | str):
        raise ChallengeError(f"the 402 body must be bytes or text, got {type(body).__name__}", field=None)
    if len(body) > 4 * 1024 * 1024 or not may_hold_key(body, _BODY_KEYS):
        return None  # cannot be an object with x402Version: not parsed at all
    ctype = _content_type(headers)
    if ctype and "json" not in ctype:
        return None
    try:
        data = loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or "x402Version" not in data:
        return None
    return X402Challenge.from_dict(data, default_version=1)


def encode_payment_header(payload: Mapping[str, Any], version: int) -> tuple[str, str]:
    """The header carrying a signed payment payload: `X-PAYMENT` (v1) or `PAYMENT-SIGNATURE` (v2)."""
    if version not in (1, 2):
        raise ChallengeError(f"x402 version must be 1 or 2, got {version!r}", field="x402Version")
    if not isinstance(payload, Mapping):
        raise ChallengeError("the x402 payment payload must be an object", field="payload")
    body = dict(payload)
    body.setdefault("x402Version", version)
    try:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ChallengeError(f"the x402 payment payload is not JSON-able ({exc})", field="payload") from None
    value = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return (X_PAYMENT if version == 1 else PAYMENT_SIGNATURE), value


@dataclass(frozen=True)
class X402Receipt:
    """The server's settlement answer: did it settle, which transaction, who paid."""

    success: bool
    transaction: str | None
    network: str | None
    payer: str | None = None
    amount: int | None = None
    error_reason: str | None = None
    error_message: str | None = None
    version: int = 2
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __str__(self) -> str:
        if self.success:
            return f"x402 settled on {clean(self.network, 80)}: transaction {clean(self.transaction, 120)}"
        return f"x402 settlement failed: {clean(self.error_reason or self.error_message or 'no reason given', 200)}"


def decode_payment_response(headers: Any) -> X402Receipt | None:
    """Read `PAYMENT-RESPONSE` (v2) or `X-PAYMENT-RESPONSE` (v1); None when neither is present."""
    for name, version in ((PAYMENT_RESPONSE, 2), (X_PAYMENT_RESPONSE, 1)):
        values = [v for v in header_values(headers, name) if v.strip()]
        if not values:
            continue
        d = _b64json(values[0], name)
        if not isinstance(d, Mapping) or not isinstance(d.get("success"), bool):
            raise ChallengeError(f"{name} must be a JSON object with a boolean 'success'", field=name)

        def s(key: str) -> str | None:
            v = d.get(key)  # noqa: B023 - called only within this iteration
            return v if isinstance(v, str) else None

        amount = d.get("amount")
        return X402Receipt(
            success=d["success"],
            transaction=s("transaction"),
            network=s("network"),
            payer=s("payer"),
            amount=_atomic(amount, "amount", name) if amount is not None else None,
            error_reason=s("errorReason"),
            error_message=s("errorMessage"),
            version=version,
            raw=dict(d),
        )
    return None
