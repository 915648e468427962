"""The demo service's MPP routes (the HTTP `Payment` scheme), built on httpay's own wire format.

- `GET /mpp/ticker/{symbol}`: a `lightning` charge. Each 402 carries a fresh invoice; the challenge
  id is the spec's HMAC of its parameters (so the server keeps no state per challenge), it
  `expires`, and the paid answer carries a `Payment-Receipt`. Errors are problem+json bodies of the
  scheme's types beside a fresh challenge; each invoice buys one answer.
- `GET /mpp/evm/ticker/{symbol}`: an `evm` charge paid with the `authorization` credential type
  (EIP-3009, checked offline with eth-account; a settle hook records it instead of a chain).
- `GET /mpp/both/ticker/{symbol}`: both charges in one 402, ranked and filtered by `Accept-Payment`.
- `GET /aperture/ticker/{symbol}`: what Aperture's `l402+mpp` mode sends: `LSAT`, `L402` and
  `Payment` challenges for one invoice in one 402; any of the three buys the answer.
- `GET /mpp/session/ticker/{symbol}` and `GET /mpp/session/stream/{symbol}?chunks=N`: a `lightning`
  session: a deposit invoice, `open {preimage, returnInvoice}`, `bearer {sessionId, preimage}` per
  request or per streamed chunk, `topUp` on a fresh challenge (also while a stream waits after
  `event: payment-need-topup`), `close` with a refund paid to the return invoice.

Everything is labelled DEMO; no real money moves. Facts: PROTOCOLS-MPP.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from httpay.demo import data
from httpay.demo.classic import classic_authorized, classic_challenges
from httpay.demo.network import DemoNetwork, InvoiceRecord, LightningError
from httpay.errors import ChallengeError
from httpay.protocols import mpp as wire

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_UINT = re.compile(r"[0-9]{1,78}")
_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")
# base-sepolia USDC: the token the evm charge asks for (its EIP-712 domain is what clients sign under)
USDC = {"address": "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "chainId": 84532, "decimals": 6,
        "name": "USDC", "version": "2"}
EIP3009_TYPES = {"TransferWithAuthorization": [
    {"name": "from", "type": "address"}, {"name": "to", "type": "address"}, {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"}, {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]}


def evm_available() -> bool:
    """The evm charge needs eth-account (the `x402` extra) to check signatures."""
    try:
        import eth_account  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Session:
    """A lightning session: its deposit(s), what was spent, where the refund goes."""

    id: str  # the deposit invoice's payment hash
    deposit_sat: int
    unit_sat: int
    return_invoice: str = field(repr=False)
    spent_sat: int = 0
    units: int = 0
    status: str = "open"
    refund_sat: int = 0
    refund_status: str | None = None
    last_used: float = field(default_factory=time.time)
    topped_up: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def balance_sat(self) -> int:
        return self.deposit_sat - self.spent_sat


@dataclass
class MppDemo:
    """Settings and state of the demo's MPP routes (one per app: a fresh secret per demo instance)."""

    price_sat: int = 10
    evm_amount: str = "10000"  # 0.01 USDC = 10 sat at the demo's 100,000 USD/BTC
    evm_recipient: str = field(default_factory=lambda: "0x" + secrets.token_hex(20))
    accept_pympp_evm_nonce: bool = True  # pympp 0.16 hashes JSON ["id","realm"]; the spec says id || realm
    challenge_ttl_s: int = 300
    session_unit_sat: int = 2
    session_deposit_sat: int = 20
    session_idle_s: int = 300
    topup_wait_s: float = 60.0
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    consumed: dict[str, str] = field(default_factory=dict, repr=False)  # payment hash / evm nonce -> challenge id
    answers: dict[tuple[str, str], tuple[int, bytes, dict[str, str]]] = field(default_factory=dict, repr=False)
    sessions: dict[str, Session] = field(default_factory=dict, repr=False)
    evm_settled: list[dict[str, Any]] = field(default_factory=list, repr=False)
    # the settle hook: given a verified authorization, settle it and return its reference (a transaction
    # hash). The demo's records it and invents a hash; nothing goes on chain.
    evm_settle: Callable[[dict[str, Any]], str] = field(
        default=lambda a: "0x" + hashlib.sha256(f"{a['from']}{a['nonce']}".encode()).hexdigest(), repr=False)
    issued: int = 0
    paid: int = 0
    refused: int = 0


class Problem(Exception):
    """A refusal answered with the scheme's problem details (and, at 402, a fresh challenge)."""

    def __init__(self, kind: str, detail: str, status: int = 402) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.status = kind, detail, status


def _cfg(request: Request) -> MppDemo:
    cfg: MppDemo = request.app.state.mpp
    return cfg


def _network(request: Request) -> DemoNetwork:
    network: DemoNetwork = request.app.state.demo.network
    return network


def _realm(request: Request) -> str:
    return request.url.hostname or "localhost"


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp() -> str:
    return _now().strftime("%Y-%m-%dT%H:%M:%SZ")


# -- issuing challenges ----------------------------------------------------------------------------


def _lightning_charge(request: Request, record: InvoiceRecord | None = None) -> dict[str, str]:
    cfg = _cfg(request)
    state = request.app.state.demo
    if record is None:
        record = _network(request).create_invoice(cfg.price_sat * 1000, "MPP ticker answer (demo)",
                                                  expiry=state.invoice_expiry_s)
    req = {"amount": str(cfg.price_sat), "currency": "sat", "description": "one ticker answer (demo)",
           "methodDetails": {"invoice": record.bolt11, "paymentHash": record.payment_hash, "network": "regtest"}}
    cfg.issued += 1
    return wire.make_challenge(cfg.secret, realm=_realm(request), method="lightning", intent="charge", request=req,
                               expires=_now() + timedelta(seconds=cfg.challenge_ttl_s),
                               description="DEMO ticker answer")


def _evm_charge(request: Request) -> dict[str, str]:
    cfg = _cfg(request)
    req = {"amount": cfg.evm_amount, "currency": USDC["address"], "recipient": cfg.evm_recipient,
           "methodDetails": {"chainId": USDC["chainId"], "credentialTypes": ["authorization"],
                             "decimals": USDC["decimals"]}}
    cfg.issued += 1
    return wire.make_challenge(cfg.secret, realm=_realm(request), method="evm", intent="charge", request=req,
                               expires=_now() + timedelta(seconds=cfg.challenge_ttl_s),
                               description="DEMO ticker answer")


def _session_challenge(request: Request, unit_type: str) -> dict[str, str]:
    cfg = _cfg(request)
    record = _network(request).create_invoice(cfg.session_deposit_sat * 1000, "MPP session deposit (demo)",
                                              expiry=request.app.state.demo.invoice_expiry_s)
    req = {"amount": str(cfg.session_unit_sat), "currency": "sat", "unitType": unit_type,
           "depositInvoice": record.bolt11, "paymentHash": record.payment_hash,
           "depositAmount": str(cfg.session_deposit_sat), "idleTimeout": str(cfg.session_idle_s)}
    cfg.issued += 1
    return wire.make_challenge(cfg.secret, realm=_realm(request), method="lightning", intent="session", request=req,
                               expires=_now() + timedelta(seconds=cfg.challenge_ttl_s),
                               description="DEMO ticker session")


def _accept_rank(request: Request, challenges: list[dict[str, str]]) -> list[dict[str, str]]:
    """`Accept-Payment` (e.g. `evm/charge, lightning/*;q=0.5, */session;q=0`): drop q=0, best first.
    A header that rules everything out is ignored (the 402 must still say what would pay)."""
    header = request.headers.get("accept-payment")
    if not header:
        return challenges
    prefs: list[tuple[str, str, float]] = []
    for part in header.split(","):
        name, *params = (p.strip() for p in part.split(";"))
        method, _, intent = name.partition("/")
        q = 1.0
        for p in params:
            k, _, v = p.partition("=")
            if k.strip().lower() == "q":
                try:
                    q = min(max(float(v), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        prefs.append((method.lower() or "*", intent.lower() or "*", q))

    def quality(ch: dict[str, str]) -> float:
        best: tuple[int, float] | None = None
        for method, intent, q in prefs:
            if method in ("*", ch["method"]) and intent in ("*", ch["intent"]):
                specific = (method != "*") + (intent != "*")
                if best is None or specific > best[0]:
                    best = (specific, q)
        return best[1] if best else 0.0

    ranked = sorted(((quality(c), i, c) for i, c in enumerate(challenges)), key=lambda t: (-t[0], t[1]))
    kept = [c for q, _, c in ranked if q > 0]
    return kept or challenges


def _payment_required(request: Request, challenges: list[dict[str, str]], *, kind: str = "payment-required",
                      detail: str | None = None, status: int = 402, extra: Sequence[str] = ()) -> Response:
    body = wire.problem_body(kind, detail or f"payment is required for {_realm(request)} (DEMO: no real money)",
                             status=status)
    if challenges:
        body["challengeId"] = challenges[0]["id"]
    response = JSONResponse(body, status_code=status, media_type="application/problem+json")
    for value in extra:
        response.headers.append("WWW-Authenticate", value)
    for ch in challenges:
        response.headers.append("WWW-Authenticate", wire.challenge_header(ch))
    response.headers["Cache-Control"] = "no-store"
    return response


def _paid(content: Any, receipt: dict[str, Any], *, status: int = 200) -> Response:
    response = JSONResponse(content, status_code=status)
    response.headers["Payment-Receipt"] = wire.receipt_header(receipt)
    response.headers["Cache-Control"] = "private"
    return response


# -- reading credentials ---------------------------------------------------------------------------


def _credential(request: Request) -> wire.MppCredential | None:
    """The request's Payment credential (None without one); a malformed one is a Problem."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("payment ") and header.strip().lower() != "payment":
        header = request.headers.get("payment-authorization", "")
        if not header:
            return None
    try:
        return wire.parse_credential(header)
    except ChallengeError as exc:
        raise Problem("malformed-credential", f"the Payment credential cannot be read: {exc}") from None


def _authenticate(request: Request, cred: wire.MppCredential, method: str, intent: str, *,
                  check_expiry: bool = True) -> dict[str, Any]:
    """The echoed challenge is one this server issued, unchanged, for this route's method and intent:
    the HMAC id recomputed over what was echoed. Returns the decoded request."""
    echo = cred.challenge
    if echo.get("realm") != _realm(request):
        raise Problem("invalid-challenge", "the credential answers a challenge of another realm")
    if not hmac.compare_digest(wire.challenge_id(_cfg(request).secret, echo), echo["id"]):
        raise Problem("invalid-challenge", "the credential's challenge was not issued here or was altered")
    if (echo["method"], echo["intent"]) != (method, intent):
        raise Problem("method-unsupported", f"this route takes {method}/{intent}, not {echo['method']}/{echo['intent']}",
                      status=400)
    if check_expiry:
        expires = echo.get("expires")
        try:
            when = datetime.fromisoformat(expires) if expires else None
        except ValueError:
            when = None
        if when is None or _now() >= when:
            raise Problem("payment-expired", "the challenge this credential answers has expired; pay the fresh one")
    try:
        req = wire.decode_json(echo["request"], "request")
    except ChallengeError:
        raise Problem("invalid-challenge", "the echoed request cannot be read") from None
    if not isinstance(req, dict):
        raise Problem("invalid-challenge", "the echoed request is not an object")
    return req


def _preimage_of(payload: Any, name: str, payment_hash: str) -> str:
    value = payload.get(name) if isinstance(payload, dict) else None
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise Problem("lightning/malformed-credential", f"the payload's {name} is not 64 lowercase hex characters")
    if not hmac.compare_digest(hashlib.sha256(bytes.fromhex(value)).hexdigest(), payment_hash):
        raise Problem("lightning/invalid-preimage", f"the {name} does not hash to the invoice's payment hash")
    return value


def _replayed(request: Request, cred: wire.MppCredential) -> Response | None:
    """With the same `Idempotency-Key`, a repeated credential gets the first answer, not a second charge."""
    key = request.headers.get("idempotency-key")
    if not key:
        return None
    with _cfg(request).lock:
        found = _cfg(request).answers.get((cred.id, key))
    if found is None:
        return None
    status, body, headers = found
    return Response(body, status_code=status, headers=headers)


def _remember(request: Request, cred: wire.MppCredential, response: Response) -> Response:
    key = request.headers.get("idempotency-key")
    if key:
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        with _cfg(request).lock:
            _cfg(request).answers[(cred.id, key)] = (response.status_code, bytes(response.body), headers)
    return response


def _consume(request: Request, key: str, challenge_id: str) -> None:
    cfg = _cfg(request)
    with cfg.lock:
        if key in cfg.consumed:
            raise Problem("invalid-challenge", "this payment was already used for an answer; pay the fresh challenge")
        cfg.consumed[key] = challenge_id
        cfg.paid += 1


def _verify_lightning_charge(request: Request, cred: wire.MppCredential) -> dict[str, Any]:
    """Check a lightning charge credential and consume its invoice; the receipt on success."""
    req = _authenticate(request, cred, "lightning", "charge")
    details = req.get("methodDetails")
    payment_hash = details.get("paymentHash") if isinstance(details, dict) else None
    record = _network(request).invoice(payment_hash) if isinstance(payment_hash, str) else None
    if record is None:
        raise Problem("lightning/unknown-challenge", "the charge names no invoice this service issued")
    _preimage_of(cred.payload, "preimage", record.payment_hash)
    _consume(request, "ln:" + record.payment_hash, cred.id)
    return {"method": "lightning", "challengeId": cred.id, "reference": record.payment_hash, "status": "success",
            "timestamp": _timestamp()}


def _verify_evm_charge(request: Request, cred: wire.MppCredential) -> dict[str, Any]:
    """Check an EIP-3009 `authorization` offline (terms, window, challenge binding, signature), then settle
    it through the hook (recorded, no chain) once per (payer, nonce)."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    cfg = _cfg(request)
    req = _authenticate(request, cred, "evm", "charge")
    p = cred.payload
    if p.get("type") != "authorization":
        raise Problem("verification-failed", "this charge takes the authorization credential type only")
    for key, pattern in (("from", _ADDRESS), ("to", _ADDRESS), ("value", _UINT), ("validAfter", _UINT),
                         ("validBefore", _UINT), ("nonce", re.compile(r"0x[0-9a-fA-F]{64}")), ("signature", _SIGNATURE)):
        if not isinstance(p.get(key), str) or not pattern.fullmatch(p[key]):
            raise Problem("malformed-credential", f"the authorization's {key} is malformed")
    if p["to"].lower() != str(req.get("recipient", "")).lower():
        raise Problem("verification-failed", "the authorization pays another recipient")
    if p["value"] != req.get("amount"):
        raise Problem("payment-insufficient" if int(p["value"]) < int(req.get("amount", "0")) else "verification-failed",
                      f"the authorization moves {p['value']}, the charge asks {req.get('amount')}")
    now = int(time.time())
    expires = datetime.fromisoformat(cred.challenge["expires"]).timestamp()
    if int(p["validAfter"]) > now or int(p["validBefore"]) <= now:
        raise Problem("verification-failed", "the authorization is not valid now")
    if int(p["validBefore"]) > max(expires, now + 3600):
        raise Problem("verification-failed", "the authorization is valid for too long")
    bound = {wire.evm_challenge_hash(cred.id, cred.challenge["realm"])}
    if cfg.accept_pympp_evm_nonce:
        from eth_utils.crypto import keccak

        legacy = json.dumps([cred.id, cred.challenge["realm"]], separators=(",", ":"), ensure_ascii=False)
        bound.add("0x" + keccak(text=legacy).hex())
    if p["nonce"].lower() not in bound:
        raise Problem("verification-failed", "the authorization's nonce is not this challenge's hash (challenge hash mismatch)")
    details = req["methodDetails"] if isinstance(req.get("methodDetails"), dict) else {}
    domain = {"name": USDC["name"], "version": USDC["version"], "chainId": details.get("chainId"),
              "verifyingContract": req.get("currency")}
    message = {"from": p["from"], "to": p["to"], "value": int(p["value"]), "validAfter": int(p["validAfter"]),
               "validBefore": int(p["validBefore"]), "nonce": bytes.fromhex(p["nonce"][2:])}
    try:
        signable = encode_typed_data(domain_data=domain, message_types=EIP3009_TYPES, message_data=message)
        signer = str(Account.recover_message(signable, signature=p["signature"]))
    except Exception:  # noqa: BLE001 - any failure to recover is a bad signature
        raise Problem("verification-failed", "the authorization's signature cannot be checked") from None
    if signer.lower() != p["from"].lower():
        raise Problem("verification-failed", "the authorization is not signed by its payer")
    _consume(request, f"evm:{p['from'].lower()}:{p['nonce'].lower()}", cred.id)
    verified = {"from": p["from"], "to": p["to"], "value": p["value"], "nonce": p["nonce"].lower(),
                "validBefore": p["validBefore"], "signature": p["signature"], "challenge_id": cred.id}
    try:
        reference = cfg.evm_settle(verified)
    except Exception:  # noqa: BLE001 - a settlement that failed settles nothing: the payer may retry
        with cfg.lock:
            cfg.consumed.pop(f"evm:{p['from'].lower()}:{p['nonce'].lower()}", None)
        raise Problem("verification-failed", "the authorization could not be settled") from None
    with cfg.lock:
        cfg.evm_settled.append({k: verified[k] for k in ("from", "to", "value", "nonce", "challenge_id")}
                               | {"reference": reference})
    return {"method": "evm", "challengeId": cred.id, "reference": reference, "status": "success",
            "timestamp": _timestamp()}


# -- the charge routes -----------------------------------------------------------------------------


def _ticker_or_404(request: Request) -> dict[str, Any] | Response:
    symbol = request.path_params["symbol"]
    body = data.ticker(symbol)
    if body is None:
        return JSONResponse({"error": f"unknown ticker {symbol.upper()}; known: {', '.join(data.known_symbols())}"},
                            status_code=404)
    return {**body, "demo": True}


Issuer = Callable[[Request], dict[str, str]]
Verifier = Callable[[Request, wire.MppCredential], dict[str, Any]]


async def _charge_route(request: Request, offers: list[tuple[str, Issuer, Verifier]]) -> Response:
    body = _ticker_or_404(request)
    if isinstance(body, Response):
        return body

    def challenges() -> list[dict[str, str]]:
        return _accept_rank(request, [issue(request) for _, issue, _ in offers])

    try:
        cred = _credential(request)
        if cred is None:
            return _payment_required(request, challenges())
        replay = _replayed(request, cred)
        if replay is not None:
            return replay
        kind = f"{cred.challenge['method']}/{cred.challenge['intent']}"
        verify = next((v for k, _, v in offers if k == kind), None)
        if verify is None:
            raise Problem("method-unsupported", f"this route does not take {kind}", status=400)
        receipt = verify(request, cred)
    except Problem as problem:
        _cfg(request).refused += 1
        if problem.status != 402:
            return JSONResponse(wire.problem_body(problem.kind, problem.detail, status=problem.status),
                                status_code=problem.status, media_type="application/problem+json")
        return _payment_required(request, challenges(), kind=problem.kind, detail=problem.detail)
    return _remember(request, cred, _paid(body, receipt))


async def mpp_ticker(request: Request) -> Response:
    """A ticker behind an MPP lightning charge: 10 sat per answer (DEMO)."""
    return await _charge_route(request, [("lightning/charge", _lightning_charge, _verify_lightning_charge)])


async def mpp_evm_ticker(request: Request) -> Response:
    """A ticker behind an MPP evm charge (EIP-3009 authorization, 0.01 base-sepolia USDC, DEMO)."""
    if not evm_available():
        return JSONResponse({"error": "the evm charge needs eth-account: pip install 'httpay[x402]'"}, status_code=501)
    return await _charge_route(request, [("evm/charge", _evm_charge, _verify_evm_charge)])


async def mpp_both_ticker(request: Request) -> Response:
    """Both charges in one 402, in the order `Accept-Payment` asks for."""
    offers: list[tuple[str, Issuer, Verifier]] = [("lightning/charge", _lightning_charge, _verify_lightning_charge)]
    if evm_available():
        offers.append(("evm/charge", _evm_charge, _verify_evm_charge))
    return await _charge_route(request, offers)


async def aperture_ticker(request: Request) -> Response:
    """Aperture's `l402+mpp`: one invoice behind `LSAT`, `L402` and `Payment` challenges in one 402."""
    body = _ticker_or_404(request)
    if isinstance(body, Response):
        return body
    scheme = request.headers.get("authorization", "").split(" ", 1)[0].upper()
    if scheme in ("L402", "LSAT") and classic_authorized(request):
        request.app.state.classic.served += 1
        return JSONResponse(body)

    def challenge(kind: str = "payment-required", detail: str | None = None) -> Response:
        state = request.app.state.demo
        record = _network(request).create_invoice(request.app.state.classic.price_sat * 1000,
                                                  "Aperture-style access (demo)", expiry=state.invoice_expiry_s)
        return _payment_required(request, [_lightning_charge(request, record)], kind=kind, detail=detail,
                                 extra=classic_challenges(request, record))

    if scheme != "PAYMENT":
        return challenge()
    try:
        cred = _credential(request)
        assert cred is not None
        receipt = _verify_lightning_charge(request, cred)
    except Problem as problem:
        _cfg(request).refused += 1
        return challenge(problem.kind, problem.detail)
    return _paid(body, receipt)


# -- the session routes ----------------------------------------------------------------------------


def _session_receipt(session: Session, challenge_id: str | None = None, **extra: Any) -> dict[str, Any]:
    receipt: dict[str, Any] = {"method": "lightning", "reference": session.id, "status": "success",
                               "timestamp": _timestamp()}
    if challenge_id:
        receipt["challengeId"] = challenge_id
    receipt.update(extra)
    return receipt


def _session_for(request: Request, payload: Any, key: str = "preimage") -> Session:
    sid = payload.get("sessionId") if isinstance(payload, dict) else None
    session = _cfg(request).sessions.get(sid) if isinstance(sid, str) else None
    if session is None:
        raise Problem("lightning/unknown-challenge", "no such session; open one with the deposit invoice")
    _preimage_of(payload, key, session.id)
    if session.status == "open" and time.time() - session.last_used > _cfg(request).session_idle_s:
        _refund(request, session)  # idle past its idleTimeout: closed here, the rest refunded
    if session.status != "open":
        raise Problem("payment-expired", "this session is closed; open a new one")
    return session


def _refund(request: Request, session: Session) -> None:
    """Close the session and try once to pay what is left to its return invoice."""
    with _cfg(request).lock:
        if session.status != "open":
            return
        session.status = "closing"
        refund = session.balance_sat
    status = "skipped"
    if refund > 0:
        try:
            _network(request).pay_out(session.return_invoice, refund * 1000)
            status = "succeeded"
        except LightningError:
            status = "failed"
    session.status, session.refund_sat, session.refund_status = "closed", refund if status == "succeeded" else 0, status
    session.topped_up.set()  # a stream waiting for a top-up ends


def _open(request: Request, cred: wire.MppCredential, req: dict[str, Any]) -> Session:
    from httpay.lightning import decode_invoice

    cfg = _cfg(request)
    payment_hash = req.get("paymentHash")
    if not isinstance(payment_hash, str) or _network(request).invoice(payment_hash) is None:
        raise Problem("lightning/unknown-challenge", "the session names no deposit invoice this service issued")
    _preimage_of(cred.payload, "preimage", payment_hash)
    ret = cred.payload.get("returnInvoice")
    try:
        invoice = decode_invoice(ret) if isinstance(ret, str) else None
    except Exception:  # noqa: BLE001 - any unreadable invoice is a malformed credential
        invoice = None
    if invoice is None or invoice.amount_msat is not None or invoice.network != "regtest":
        raise Problem("lightning/malformed-credential", "open needs returnInvoice: an amount-less regtest BOLT11 invoice")
    _consume(request, "ln:" + payment_hash, cred.id)
    session = Session(id=payment_hash, deposit_sat=int(req.get("depositAmount") or cfg.session_deposit_sat),
                      unit_sat=int(req.get("amount") or cfg.session_unit_sat), return_invoice=str(ret))
    with cfg.lock:
        cfg.sessions[session.id] = session
    return session


def _top_up(request: Request, cred: wire.MppCredential, req: dict[str, Any]) -> Response:
    payload = cred.payload
    sid = payload.get("sessionId")
    session = _cfg(request).sessions.get(sid) if isinstance(sid, str) else None
    if session is None or session.status != "open":
        raise Problem("lightning/unknown-challenge", "no open session to top up")
    payment_hash = req.get("paymentHash")
    if not isinstance(payment_hash, str) or _network(request).invoice(payment_hash) is None:
        raise Problem("lightning/unknown-challenge", "the top-up names no deposit invoice this service issued")
    _preimage_of(payload, "topUpPreimage", payment_hash)
    _consume(request, "ln:" + payment_hash, cred.id)
    with _cfg(request).lock:
        session.deposit_sat += int(req.get("depositAmount") or _cfg(request).session_deposit_sat)
        session.last_used = time.time()
    session.topped_up.set()
    return _paid({"status": "ok", "sessionId": session.id, "balanceSats": session.balance_sat},
                 _session_receipt(session, cred.id))


def _close(request: Request, cred: wire.MppCredential) -> Response:
    session = _session_for(request, cred.payload)
    _refund(request, session)
    refund, status = session.refund_sat, session.refund_status or "skipped"
    extra: dict[str, Any] = {"refundStatus": status}
    if refund:
        extra = {"refundSats": refund, **extra}  # omitted when 0, as aperture does
    body = {"status": "closed", "sessionId": session.id, "refundSats": refund, "refundStatus": status,
            "spentSats": session.spent_sat}
    return _paid(body, _session_receipt(session, cred.id, **extra))


def _debit(request: Request, session: Session) -> bool:
    with _cfg(request).lock:
        if session.status != "open" or session.balance_sat < session.unit_sat:
            return False
        session.spent_sat += session.unit_sat
        session.units += 1
        session.last_used = time.time()
        return True


async def _session_route(request: Request, stream: bool) -> Response:
    body = _ticker_or_404(request)
    if isinstance(body, Response):
        return body
    unit_type = "chunk" if stream else "request"

    def challenge(kind: str = "payment-required", detail: str | None = None) -> Response:
        return _payment_required(request, [_session_challenge(request, unit_type)], kind=kind, detail=detail)

    try:
        cred = _credential(request)
        if cred is None:
            return challenge()
        replay = _replayed(request, cred)
        if replay is not None:
            return replay
        action = cred.payload.get("action")
        # bearer and close echo the challenge the session was opened with: its expiry no longer matters
        req = _authenticate(request, cred, "lightning", "session", check_expiry=action in ("open", "topUp"))
        if action == "open":
            session = _open(request, cred, req)
        elif action == "bearer":
            session = _session_for(request, cred.payload)
        elif action == "topUp":
            return _remember(request, cred, _top_up(request, cred, req))
        elif action == "close":
            return _remember(request, cred, _close(request, cred))
        else:
            raise Problem("lightning/malformed-credential", "the session payload's action is not open, bearer, topUp or close")
        if stream:
            return _stream(request, session, body, cred.id)
        if not _debit(request, session):
            raise Problem("payment-insufficient", f"the session holds {session.balance_sat} sat, a request costs "
                          f"{session.unit_sat}; top it up with the fresh challenge")
    except Problem as problem:
        _cfg(request).refused += 1
        return challenge(problem.kind, problem.detail)
    return _remember(request, cred, _paid(body, _session_receipt(session, cred.id, spent=session.spent_sat,
                                                                 units=session.units)))


def _sse(event: str | None, payload: Any) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return ((f"event: {event}\n" if event else "") + f"data: {text}\n\n").encode()


def _stream(request: Request, session: Session, body: dict[str, Any], challenge_id: str) -> Response:
    """Server-sent events, one ticker chunk per unit; when the balance runs out, `payment-need-topup` and
    wait (up to `topup_wait_s`) for a top-up, then go on; `payment-receipt` and `[DONE]` at the end."""
    cfg = _cfg(request)
    try:
        chunks = max(1, min(int(request.query_params.get("chunks", "5")), 1000))
    except ValueError:
        chunks = 5

    async def events() -> AsyncIterator[bytes]:
        for i in range(chunks):
            while not _debit(request, session):
                if session.status != "open":
                    yield _sse("session-closed", {"sessionId": session.id})
                    return
                session.topped_up.clear()
                yield _sse("payment-need-topup", {"sessionId": session.id, "balanceSpent": session.spent_sat,
                                                  "balanceRequired": session.unit_sat})
                try:
                    await asyncio.wait_for(session.topped_up.wait(), cfg.topup_wait_s)
                except TimeoutError:
                    yield _sse("session-timeout", {"sessionId": session.id})
                    return
            yield _sse(None, {"chunk": i, "of": chunks, **body})
        receipt = _session_receipt(session, challenge_id, spent=session.spent_sat, units=session.units)
        yield _sse("payment-receipt", receipt)
        yield _sse(None, "[DONE]")

    response = StreamingResponse(events(), media_type="text/event-stream")
    response.headers["Cache-Control"] = "no-cache, private"
    return response


async def mpp_session_ticker(request: Request) -> Response:
    """A ticker paid from a lightning session: each request debits the session's unit price."""
    return await _session_route(request, stream=False)


async def mpp_session_stream(request: Request) -> Response:
    """An SSE stream of ticker chunks paid from a lightning session, chunk by chunk."""
    return await _session_route(request, stream=True)
