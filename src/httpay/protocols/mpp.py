"""MPP, the HTTP `Payment` authentication scheme (IETF draft-httpauth-payment), read without I/O.

A 402 may carry several `Payment` challenges (one per method and intent, in one header or many,
beside L402/LSAT). Each names an `id`, `realm`, `method`, `intent` and a `request` (base64url of
JSON saying what to pay); `expires`, `digest`, `description` and `opaque` are optional. The
client answers one of them with `Authorization: Payment <base64url JSON>` that echoes the
challenge verbatim beside a method-specific payload, and may get a `Payment-Receipt` back.
This module reads challenges, builds credentials, reads receipts and problem details; which
challenge is paid, and how, is the flow's business. It also holds the server's half of the wire
format (JCS, the HMAC challenge id, challenge headers, credential decoding, receipts, problems) for
the demo service and the tests. Facts: PROTOCOLS-MPP.md; checked against aperture's vectors
(tests/vectors/aperture_mpp_vectors.json).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from httpay.errors import ChallengeError
from httpay.lightning import Invoice
from httpay.protocols.www_authenticate import header_values, may_name, parse_challenges, quote
from httpay.safe import clean, digits, loads

PROTOCOL = "mpp"
SCHEME = "Payment"
REQUIRED = ("id", "realm", "method", "intent", "request")
ECHOED = ("id", "realm", "method", "intent", "request", "description", "opaque", "digest", "expires")
PROBLEM_BASE = "https://paymentauth.org/problems/"
MAX_ENCODED = 64 * 1024  # a request or receipt bigger than this is not one anybody meant to send

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_METHOD = re.compile(r"[a-z]+")  # payment-method-id = 1*LOWERALPHA (draft-httpauth-payment)


def b64url_encode(data: bytes) -> str:
    """base64url without padding, as the scheme sends it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, what: str = "value") -> bytes:
    """Strict base64url: padding is accepted where it belongs; any other spelling of the same bytes
    (standard alphabet, line breaks, stray or excess padding, non-zero trailing bits) is refused,
    so one payload never has two encodings."""
    if not isinstance(text, str) or len(text) > MAX_ENCODED:
        raise ChallengeError(f"the MPP {what} is not a base64url string of a sensible size", field=what)
    body = text.rstrip("=")
    pad = len(text) - len(body)
    if not _B64URL.fullmatch(body) or len(body) % 4 == 1 or (pad and (len(text) % 4 or pad > 2)):
        raise ChallengeError(f"the MPP {what} is not valid base64url", field=what)
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise ChallengeError(f"the MPP {what} is not valid base64url", field=what) from None
    if b64url_encode(raw) != body:
        raise ChallengeError(f"the MPP {what} has stray bits in its last character", field=what)
    return raw


def decode_json(text: str, what: str) -> Any:
    """base64url JSON, read with every failure (deep nesting included) as a ChallengeError."""
    raw = b64url_decode(text, what)
    try:
        return loads(raw)  # depth-guarded: never a RecursionError, whatever the recursion limit
    except ValueError:
        raise ChallengeError(f"the MPP {what} is not base64url of JSON", field=what) from None


def _timestamp(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ChallengeError(f"the MPP challenge's expires is not an RFC 3339 time: {text[:40]!r}",
                             field="expires") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class MppChallenge:
    """One `Payment` challenge: its parameters as sent (echoed verbatim) and what they decode to."""

    id: str
    realm: str
    method: str
    intent: str
    request: Mapping[str, Any] = field(repr=False)
    params: Mapping[str, str] = field(repr=False)
    expires: datetime | None = None
    description: str | None = None
    opaque: Mapping[str, Any] | None = field(default=None, repr=False)
    digest: str | None = None

    @property
    def kind(self) -> str:
        """`method/intent`, as `Accept-Payment` names them (e.g. `lightning/charge`)."""
        return f"{self.method}/{self.intent}"

    @property
    def credential_header(self) -> str:
        """Where the credential goes: `Authorization`, unless the server asked for `Payment-Authorization`."""
        return "Payment-Authorization" if self.params.get("header", "").lower() == "payment-authorization" \
            else "Authorization"

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and (now or datetime.now(UTC)) >= self.expires

    def echo(self) -> dict[str, str]:
        """The challenge as the credential must repeat it: the parameters the server sent, unchanged."""
        return {k: self.params[k] for k in ECHOED if k in self.params}

    def credential(self, payload: Mapping[str, Any], source: str | None = None) -> str:
        """The header value answering this challenge with `payload` (e.g. `{"preimage": ...}`)."""
        doc: dict[str, Any] = {"challenge": self.echo()}
        if source:
            doc["source"] = source
        doc["payload"] = dict(payload)
        return f"{SCHEME} " + b64url_encode(_compact(doc))

    def __str__(self) -> str:
        amount = self.request.get("amount")
        unit = self.request.get("currency") or ""
        price = f"{clean(amount, 40)} {clean(unit, 20)}".strip() if amount is not None else "no amount"
        return f"MPP {clean(self.kind, 60)} challenge from {clean(self.realm, 120)}: {price}"


def _challenge(params: Mapping[str, str]) -> MppChallenge:
    missing = [k for k in REQUIRED if not params.get(k)]
    if missing:
        raise ChallengeError(f"the MPP challenge lacks {', '.join(missing)}", field=missing[0])
    method = params["method"]
    if not _METHOD.fullmatch(method):
        raise ChallengeError(f"the MPP challenge's method is not a method name: {method[:40]!r}", field="method")
    request = decode_json(params["request"], "request")
    if not isinstance(request, dict):
        raise ChallengeError("the MPP challenge's request is not a JSON object", field="request")
    opaque = None
    if params.get("opaque"):
        opaque = decode_json(params["opaque"], "opaque")
        if not isinstance(opaque, dict):
            raise ChallengeError("the MPP challenge's opaque is not a JSON object", field="opaque")
    return MppChallenge(
        id=params["id"], realm=params["realm"], method=method, intent=params["intent"], request=request,
        params=dict(params), expires=_timestamp(params["expires"]) if params.get("expires") else None,
        description=params.get("description") or None, opaque=opaque, digest=params.get("digest") or None,
    )


@dataclass(frozen=True)
class MppChallenges:
    """Every complete `Payment` challenge of one 402, in the server's order, and why others were skipped."""

    challenges: tuple[MppChallenge, ...]
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.challenges)

    def __iter__(self) -> Iterator[MppChallenge]:
        return iter(self.challenges)

    def by_kind(self, method: str, intent: str | None = None) -> list[MppChallenge]:
        return [c for c in self.challenges if c.method == method and (intent is None or c.intent == intent)]


def complete_params(headers: Any) -> list[dict[str, str]]:
    """The parameters of every complete `Payment` challenge in the `WWW-Authenticate` headers, in order,
    before any decoding: split several per header, other schemes' parameters kept apart, names
    case-insensitive, the first of a repeated parameter kept, incomplete offers skipped. No Payment
    challenge, or none complete, is a ChallengeError (aperture's `challengeLists`)."""
    found = [c for c in parse_challenges(header_values(headers, "www-authenticate")) if c.is_scheme(SCHEME)]
    if not found:
        raise ChallengeError("the response carries no Payment challenge", field="www-authenticate")
    good = [dict(c.params) for c in found if all(c.params.get(k) for k in REQUIRED)]
    if not good:
        raise ChallengeError("every Payment challenge lacks one of " + ", ".join(REQUIRED), field="www-authenticate")
    return good


def parse(status: int, headers: Any, body: bytes | str | None = None) -> MppChallenges | None:
    """The `Payment` challenges of a 402, or None when it has none.

    Incomplete or undecodable challenges are skipped (with the reason kept) so one bad offer
    never hides a good one; a 402 whose every `Payment` challenge is unusable is a ChallengeError.
    """
    if status != 402:
        return None
    values = header_values(headers, "www-authenticate")
    if not may_name(values, (SCHEME,)):
        return None
    found = [c for c in parse_challenges(values) if c.is_scheme(SCHEME)]
    if not found:
        return None
    good: list[MppChallenge] = []
    skipped: list[str] = []
    for ch in found:
        try:
            good.append(_challenge(ch.params))
        except ChallengeError as exc:
            skipped.append(str(exc))
    if not good:
        raise ChallengeError("the 402 offers MPP Payment challenges but none is complete: " + "; ".join(skipped[:3]),
                             field="request")
    return MppChallenges(tuple(good), tuple(skipped))


@dataclass(frozen=True)
class MppReceipt:
    """A `Payment-Receipt`: the server's word that it took the payment."""

    status: str
    method: str
    reference: str
    timestamp: str | None = None
    challenge_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def success(self) -> bool:
        return self.status == "success"


def read_receipt(headers: Any) -> MppReceipt | None:
    """The response's `Payment-Receipt`, or None without one; a malformed one is a ChallengeError."""
    values = header_values(headers, "payment-receipt")
    if not values:
        return None
    doc = decode_json(values[0].strip(), "receipt")
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in ("status", "method", "reference")):
        raise ChallengeError("the Payment-Receipt lacks status, method or reference", field="receipt")
    known = {"status", "method", "reference", "timestamp", "challengeId"}
    return MppReceipt(
        status=doc["status"], method=doc["method"], reference=doc["reference"],
        timestamp=doc.get("timestamp") if isinstance(doc.get("timestamp"), str) else None,
        challenge_id=doc.get("challengeId") if isinstance(doc.get("challengeId"), str) else None,
        extra={k: v for k, v in doc.items() if k not in known},
    )


def receipt_header(receipt: Mapping[str, Any]) -> str:
    """A `Payment-Receipt` value: base64url of the receipt's compact JSON, members in the order given."""
    return b64url_encode(_compact(receipt))


@dataclass(frozen=True)
class MppProblem:
    """An RFC 9457 problem-details body of the scheme: which kind, and the server's words (untrusted)."""

    kind: str            # payment-insufficient, payment-expired, verification-failed, lightning/invalid-preimage, ...
    title: str | None
    detail: str | None
    status: int | None


def read_problem(body: bytes | str | None) -> MppProblem | None:
    """The scheme's problem details in a response body, or None when the body is not one."""
    if not body:
        return None
    try:
        doc = loads(body)
    except (ValueError, TypeError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str) or not doc["type"].startswith(PROBLEM_BASE):
        return None
    text = {k: doc[k][:500] if isinstance(doc.get(k), str) else None for k in ("title", "detail")}
    status = doc.get("status") if isinstance(doc.get("status"), int) and not isinstance(doc.get("status"), bool) else None
    return MppProblem(doc["type"][len(PROBLEM_BASE):][:100], text["title"], text["detail"], status)


def problem_body(kind: str, detail: str, *, status: int = 402, title: str | None = None) -> dict[str, Any]:
    """An RFC 9457 body of the scheme (`kind` e.g. `payment-expired` or `lightning/invalid-preimage`)."""
    return {"type": PROBLEM_BASE + kind, "title": title or kind.rsplit("/", 1)[-1].replace("-", " ").capitalize(),
            "status": status, "detail": detail}


# -- the server's half: canonical JSON, challenge ids and headers, credentials --------------------


def _compact(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _es_number(value: float) -> str:
    """A JSON number as ECMAScript's Number.prototype.toString writes the double nearest it (RFC 8785 §3.2.2.3)."""
    try:
        x = float(value)
    except OverflowError:
        raise ChallengeError("a number is too large for canonical JSON", field="request") from None
    if not math.isfinite(x):
        raise ChallengeError("canonical JSON has no NaN or infinity", field="request")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    _, digits_t, exp = Decimal(repr(abs(x))).as_tuple()
    assert isinstance(exp, int)  # a finite float's exponent
    digits = "".join(map(str, digits_t)).rstrip("0") or "0"
    exp += len("".join(map(str, digits_t))) - len(digits)
    k, n = len(digits), exp + len(digits)  # value = 0.digits x 10^n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
        text = f"{mantissa}e{'+' if n - 1 > 0 else '-'}{abs(n - 1)}"
    return sign + text


def _jcs(value: Any, out: list[str]) -> None:
    if value is None or isinstance(value, bool):
        out.append({None: "null", True: "true", False: "false"}[value])
    elif isinstance(value, int | float):
        out.append(_es_number(value))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, Mapping):
        out.append("{")
        for i, key in enumerate(sorted(value, key=lambda k: str(k).encode("utf-16-be", "surrogatepass"))):
            if not isinstance(key, str):
                raise ChallengeError("canonical JSON member names must be strings", field="request")
            out.append(("," if i else "") + json.dumps(key, ensure_ascii=False) + ":")
            _jcs(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _jcs(item, out)
        out.append("]")
    else:
        raise ChallengeError(f"canonical JSON cannot hold a {type(value).__name__}", field="request")


def canonical_json(value: Any) -> str:
    """RFC 8785 (JCS) text of a JSON value: members ordered by UTF-16 code units, numbers as ECMAScript
    writes them, only the escapes JSON requires. What a `request` or `opaque` is encoded from."""
    out: list[str] = []
    _jcs(value, out)
    return "".join(out)


def encode_json(value: Any) -> str:
    """base64url (no padding) of a value's canonical JSON: a `request` or `opaque` parameter."""
    return b64url_encode(canonical_json(value).encode())


HMAC_SLOTS = ("realm", "method", "intent", "request", "expires", "digest", "opaque")


def challenge_id(secret: bytes, params: Mapping[str, str]) -> str:
    """The spec's suggested stateless id: base64url(HMAC-SHA256(secret, realm|method|intent|request|expires|digest|opaque)),
    absent optional slots kept as empty strings, `description` not covered."""
    text = "|".join(params.get(k) or "" for k in HMAC_SLOTS)
    return b64url_encode(hmac.new(secret, text.encode(), hashlib.sha256).digest())


def make_challenge(secret: bytes, *, realm: str, method: str, intent: str, request: Mapping[str, Any],
                   expires: datetime | None = None, digest: str | None = None, description: str | None = None,
                   opaque: Mapping[str, str] | None = None) -> dict[str, str]:
    """A server's challenge parameters, in the order they are sent, with `id` = challenge_id(secret, ...)."""
    params = {"realm": realm, "method": method, "intent": intent, "request": encode_json(request)}
    if expires is not None:
        params["expires"] = expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if digest:
        params["digest"] = digest
    if description:
        params["description"] = description
    if opaque:
        params["opaque"] = encode_json(dict(opaque))
    return {"id": challenge_id(secret, params), **params}


def challenge_header(params: Mapping[str, str]) -> str:
    """The `WWW-Authenticate` value of one challenge: every parameter a quoted-string (RFC 9110 quoted-pairs)."""
    return SCHEME + " " + ", ".join(f"{k}={quote(v)}" for k, v in params.items())


@dataclass(frozen=True)
class MppCredential:
    """A decoded `Authorization: Payment` credential: the echoed challenge, the payer's DID and the payload."""

    challenge: Mapping[str, str] = field(repr=False)
    payload: Mapping[str, Any] = field(repr=False)
    source: str | None = None

    @property
    def id(self) -> str:
        return self.challenge["id"]

    def __repr__(self) -> str:  # the payload holds preimages: never shown
        return f"MppCredential(id={self.id[:16]!r}, method={self.challenge['method']!r}, intent={self.challenge['intent']!r})"


def parse_credential(header: str) -> MppCredential:
    """Read `Payment <base64url JSON>` strictly (scheme case-insensitive); ChallengeError with the field otherwise."""
    if not isinstance(header, str):
        raise ChallengeError("the Payment credential is not text", field="authorization")
    scheme, _, token = header.strip().partition(" ")
    if scheme.casefold() != SCHEME.casefold():
        raise ChallengeError("the credential is not of the Payment scheme", field="authorization")
    token = token.strip()
    if not token:
        raise ChallengeError("the Payment credential is empty", field="authorization")
    doc = decode_json(token, "credential")
    if not isinstance(doc, dict):
        raise ChallengeError("the Payment credential is not a JSON object", field="credential")
    challenge, payload, source = doc.get("challenge"), doc.get("payload"), doc.get("source")
    if not isinstance(challenge, dict) or not all(isinstance(challenge.get(k), str) and challenge[k] for k in REQUIRED):
        raise ChallengeError("the credential's challenge lacks one of " + ", ".join(REQUIRED), field="challenge")
    if not all(isinstance(v, str) for v in challenge.values()):
        raise ChallengeError("the credential's challenge holds a value that is not a string", field="challenge")
    if not isinstance(payload, dict):
        raise ChallengeError("the credential carries no payload object", field="payload")
    if source is not None and not isinstance(source, str):
        raise ChallengeError("the credential's source is not a string", field="source")
    return MppCredential(challenge=dict(challenge), payload=payload, source=source)


# -- the lightning method's charge intent ([lnc]) -------------------------------------------------
NETWORKS = {"mainnet": "bitcoin", "regtest": "regtest", "signet": "signet", "testnet": "testnet"}


@dataclass(frozen=True)
class LightningCharge:
    """What a `lightning`/`charge` request asks: an amount in sat and the invoice that collects it."""

    amount_sat: int
    invoice: str = field(repr=False)
    payment_hash: str | None
    network: str | None  # as wallets name networks (bitcoin, regtest, ...)
    description: str | None = None

    @classmethod
    def from_challenge(cls, challenge: MppChallenge) -> LightningCharge:
        if challenge.method != "lightning" or challenge.intent != "charge":
            raise ChallengeError(f"not a lightning charge: {challenge.kind}", field="method")
        req = challenge.request
        amount, currency = req.get("amount"), req.get("currency")
        sat = digits(amount, 18)
        if sat is None:
            raise ChallengeError("the lightning charge's amount is not a whole number of sat", field="amount")
        if currency is not None and currency != "sat":
            raise ChallengeError(f"the lightning charge is priced in {str(currency)[:20]!r}, not sat", field="currency")
        details = req.get("methodDetails")
        if not isinstance(details, dict) or not isinstance(details.get("invoice"), str) or not details["invoice"]:
            raise ChallengeError("the lightning charge carries no invoice", field="methodDetails.invoice")
        payment_hash = details.get("paymentHash")
        if payment_hash is not None and not (isinstance(payment_hash, str) and re.fullmatch(r"[0-9a-fA-F]{64}", payment_hash)):
            raise ChallengeError("the lightning charge's paymentHash is not 64 hex characters", field="paymentHash")
        network = details.get("network")
        if network is not None and (not isinstance(network, str) or network not in NETWORKS):
            raise ChallengeError(f"the lightning charge names an unknown network {clean(str(network), 20)!r}",
                                 field="network")
        desc = req.get("description")
        return cls(sat, details["invoice"], payment_hash.lower() if payment_hash else None,
                   NETWORKS[network] if network else None, desc if isinstance(desc, str) else None)

    @staticmethod
    def payload(preimage: str) -> dict[str, str]:
        return {"preimage": preimage.lower()}


def check_charge_invoice(charge: LightningCharge, invoice: Invoice, *, expires: datetime | None = None,
                         now: datetime | None = None) -> None:
    """The invoice must be exactly what the charge asks: its amount, its payment hash, its network,
    and neither it nor the challenge may have expired. InvoiceError otherwise."""
    from httpay.errors import InvoiceError

    if invoice.amount_msat != charge.amount_sat * 1000:
        raise InvoiceError(f"the invoice asks {invoice.amount_msat} msat, the MPP charge {charge.amount_sat} sat",
                           check="amount")
    if charge.payment_hash is not None and invoice.payment_hash != charge.payment_hash:
        raise InvoiceError("the invoice's payment hash is not the one the MPP charge names", check="payment_hash")
    if charge.network is not None and invoice.network != charge.network:
        raise InvoiceError(f"the invoice is for {invoice.network}, the MPP charge says {charge.network}", check="network")
    moment = now or datetime.now(UTC)
    if invoice.expired(moment) or (expires is not None and moment >= expires):
        raise InvoiceError("the MPP charge or its invoice has expired; not paying it", check="expiry")


# -- the lightning method's session intent ([lns]) ----------------------------------------------


def _sat(value: Any, what: str, *, default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    sat = digits(value, 18)
    if sat is None:
        raise ChallengeError(f"the lightning session's {what} is not a whole number of sat", field=what)
    return sat


@dataclass(frozen=True)
class LightningSession:
    """What a `lightning`/`session` request asks: a price per unit and a deposit invoice that opens (or
    tops up) a session whose id is the deposit's payment hash."""

    unit_sat: int
    deposit_sat: int
    deposit_invoice: str = field(repr=False)
    payment_hash: str
    unit_type: str | None = None
    idle_timeout_s: int | None = None

    @classmethod
    def from_challenge(cls, challenge: MppChallenge) -> LightningSession:
        if challenge.method != "lightning" or challenge.intent != "session":
            raise ChallengeError(f"not a lightning session: {challenge.kind}", field="intent")
        req = challenge.request
        if req.get("currency", "sat") != "sat":
            raise ChallengeError(f"the lightning session is priced in {str(req.get('currency'))[:20]!r}, not sat",
                                 field="currency")
        unit = _sat(req.get("amount"), "amount")
        deposit = _sat(req.get("depositAmount"), "depositAmount", default=unit * 20)
        invoice, payment_hash = req.get("depositInvoice"), req.get("paymentHash")
        if not isinstance(invoice, str) or not invoice:
            raise ChallengeError("the lightning session carries no deposit invoice", field="depositInvoice")
        if not (isinstance(payment_hash, str) and re.fullmatch(r"[0-9a-fA-F]{64}", payment_hash)):
            raise ChallengeError("the lightning session's paymentHash is not 64 hex characters", field="paymentHash")
        idle = req.get("idleTimeout")
        unit_type = req.get("unitType")
        return cls(unit, deposit, invoice, payment_hash.lower(), unit_type if isinstance(unit_type, str) else None,
                   digits(idle, 9))

    def as_charge(self) -> LightningCharge:
        """The deposit as a charge, so the one invoice check (amount, hash, network, expiry) applies."""
        return LightningCharge(self.deposit_sat, self.deposit_invoice, self.payment_hash, None)

    @staticmethod
    def open_payload(preimage: str, return_invoice: str) -> dict[str, str]:
        return {"action": "open", "preimage": preimage.lower(), "returnInvoice": return_invoice}

    @staticmethod
    def bearer_payload(session_id: str, preimage: str) -> dict[str, str]:
        return {"action": "bearer", "sessionId": session_id, "preimage": preimage.lower()}

    @staticmethod
    def top_up_payload(session_id: str, top_up_preimage: str) -> dict[str, str]:
        return {"action": "topUp", "sessionId": session_id, "topUpPreimage": top_up_preimage.lower()}

    @staticmethod
    def close_payload(session_id: str, preimage: str) -> dict[str, str]:
        return {"action": "close", "sessionId": session_id, "preimage": preimage.lower()}


# -- the evm method's charge intent ([evm]) --------------------------------------------------------


def evm_challenge_hash(challenge_id: str, realm: str) -> str:
    """The EIP-3009 nonce that binds an `authorization` credential to its challenge, as [evm] defines it:
    keccak256(abi.encodePacked(id, realm)), i.e. of the two strings' UTF-8 bytes back to back (mppx 0.11
    agrees; pympp 0.16 hashes the JSON text `["id","realm"]` instead). Needs eth-account's keccak."""
    try:
        from eth_utils.crypto import keccak
    except ImportError:  # pragma: no cover - depends on the install
        from httpay.errors import ConfigError

        raise ConfigError("the evm method needs eth-account: pip install 'httpay[x402]'") from None
    return "0x" + keccak((challenge_id + realm).encode()).hex()
