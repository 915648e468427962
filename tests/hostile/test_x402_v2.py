"""Issue 12, x402 v2 against hostile loopback services, sync and async: payment-identifier (409,
malformed declarations, ids across bodies, the application's own retry), `upto` (metered settlement,
an amount above the ceiling, 412 PERMIT2_ALLOWANCE_REQUIRED, the ceiling held to the policy) and
sign-in-with-x (signing in instead of paying, never signing for another domain).

Each case asserts what a person would check: signatures, ledger rows, what was spent, the error's
type and text, what the service saw (payment ids, Idempotency-Keys, sign-ins). No process is killed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import httpay
from httpay.errors import (
    CallAlreadyPaid,
    PaymentIdConflict,
    PaymentRefused,
    PaymentSentUnanswered,
    Permit2AllowanceRequired,
)
from httpay.ledger import SQLiteLedger
from tests.hostile.harness import CountingSigner, CountingWallet, HostileService, run, x402_requirement

RATE = 100_000.0  # USD per BTC: 10,000 atomic USDC ($0.01) = 10,000 msat
FACILITATOR = "0x" + "fa" * 20
PID = {"payment-identifier": {"info": {"required": False}, "schema": {"type": "object"}}}
PID_REQUIRED = {"payment-identifier": {"info": {"required": True}}}


def b64(data: Any) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


@dataclass
class Seen:
    """What the hostile service saw of the paid requests."""

    ids: list[str | None] = field(default_factory=list)      # payment ids, in order
    keys: list[str | None] = field(default_factory=list)     # Idempotency-Key headers, in order
    payloads: list[dict[str, Any]] = field(default_factory=list)
    cache: dict[str, tuple[str, Response]] = field(default_factory=dict)  # id -> (payload, answer)
    sign_ins: list[dict[str, Any]] = field(default_factory=list)


def _pid(payload: dict[str, Any]) -> str | None:
    info = payload.get("extensions", {}).get("payment-identifier", {}).get("info", {})
    found = info.get("id")
    return found if isinstance(found, str) else None


class SigningSigner(CountingSigner):
    """The counting signer, which also signs sign-in messages (EIP-191), counting them."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def sign_message(self, message: str) -> bytes:
        self.messages.append(message)
        return bytes(self.inner.sign_message(message))


def siwx(svc: HostileService, seen: Seen, *, path: str = "/siwx", domain: str | None = None,
         statement: str | None = None, returning: bool = True) -> str:
    """An exact x402 paywall offering sign-in-with-x for `domain` (default: its own host). A sign-in is
    checked as a SIWE verifier does (the `siwe` package rebuilds the message, the signature must recover
    the address): a `returning` payer (one who already paid) is served; anyone else is asked to pay."""
    from eth_account import Account
    from eth_account.messages import encode_defunct
    from siwe import SiweMessage

    url = svc.url + path
    info: dict[str, Any] = {"domain": domain or url.split("//")[1].split("/")[0], "uri": url, "version": "1",
                            "nonce": "a1b2c3d4e5f60718", "issuedAt": "2026-12-01T12:00:00Z", "resources": [url]}
    if statement is not None:
        info["statement"] = statement
    ext = {"sign-in-with-x": {"info": info, "supportedChains": [{"chainId": "eip155:84532", "type": "eip191"}]}}
    pay = v2(svc, seen, path=path + "-pay", extensions=ext)
    paywall = svc.handlers[path + "-pay"]

    async def handler(request: Request) -> Response:
        header = request.headers.get("sign-in-with-x")
        if header is not None and request.headers.get("payment-signature") is None:
            p = json.loads(base64.b64decode(header))
            seen.sign_ins.append(p)
            message = SiweMessage(domain=p["domain"], address=p["address"], uri=p["uri"], version=p["version"],
                                  chain_id=int(p["chainId"].split(":")[1]), nonce=p["nonce"], issued_at=p["issuedAt"],
                                  statement=p.get("statement"), resources=p.get("resources")).prepare_message()
            signer = Account.recover_message(encode_defunct(text=message), signature=p["signature"])
            if signer == p["address"] and returning:
                return JSONResponse({"served": True, "signed_in": signer})
        return await paywall(request)
    del pay
    return svc.route(path, handler)


class LnbtcWallet(CountingWallet):
    """The counting wallet, on Bitcoin testnet (the lnbtc draft names mainnet and testnet only)."""

    network = "testnet"


def lnbtc(svc: HostileService, seen: Seen, *, path: str = "/lnbtc", bind: str = "request") -> str:
    """An x402 `exact` on Lightning paywall (the lnbtc proposal): a fresh testnet invoice per 402 whose
    description hash is the request's hash (`bind` "other": another request's). Serves a payload whose
    preimage opens an invoice it issued, for the very request bound."""
    from bolt11 import Bolt11, MilliSatoshi, Tags, encode
    from bolt11.types import TagChar

    from httpay.protocols.x402 import lnbtc_request_hash
    from tests.helpers import NODE_KEY

    payee = NODE_KEY.public_key.format().hex()
    issued: dict[str, str] = {}  # payment hash -> request hash

    async def handler(request: Request) -> Response:
        body = await request.body()
        here = lnbtc_request_hash(request.method, str(request.url), body, [], {})
        signed = request.headers.get("payment-signature")
        if signed is not None:
            payload = json.loads(base64.b64decode(signed))
            pre = bytes.fromhex(payload["payload"]["preimage"])
            seen.payloads.append(payload)
            if issued.get(hashlib.sha256(pre).hexdigest()) == here:
                return JSONResponse({"served": True})
            return JSONResponse({"error": "invalid_exact_lnbtc_request_mismatch"}, status_code=402)
        bound = here if bind == "request" else hashlib.sha256(b"another request").hexdigest()
        pre = os.urandom(32)
        tags = Tags()
        tags.add(TagChar.payment_hash, hashlib.sha256(pre).hexdigest())
        tags.add(TagChar.payment_secret, os.urandom(32).hex())
        tags.add(TagChar.description_hash, bound)
        tags.add(TagChar.expire_time, 300)
        bolt11 = encode(Bolt11(currency="tb", date=int(time.time()), tags=tags, amount_msat=MilliSatoshi(10_000)),
                        NODE_KEY.secret.hex())
        svc.node.preimages[hashlib.sha256(pre).hexdigest()] = pre.hex()
        issued[hashlib.sha256(pre).hexdigest()] = here
        req = {"scheme": "exact", "network": "lnbtc:000000000933ea01ad0ee984209779ba", "amount": "10000", "asset": "BTC",
               "payTo": payee, "maxTimeoutSeconds": 300,
               "extra": {"paymentFlow": "upfront", "requestHash": bound, "requestBindingProfile": "http:1",
                         "requestBindingParams": {"headers": []}, "invoice": bolt11}}
        challenge = {"x402Version": 2, "resource": {"url": str(request.url)}, "accepts": [req]}
        return JSONResponse({}, status_code=402, headers={"PAYMENT-REQUIRED": b64(challenge)})
    return svc.route(path, handler)


def v2(svc: HostileService, seen: Seen, *, path: str = "/v2", scheme: str = "exact", amount: str = "10000",
       extensions: dict[str, Any] | None = None, answer: str = "settle", settled: str | None = None) -> str:
    """An x402 v2 paywall. `answer` to a payment: "settle" (200 + receipt, with `settled` as the upto
    amount), "409", "412", "idempotent" (payment-identifier honoured: same id and payload -> the cached
    answer, other payload -> 409; the first answer is lost: 500 without a receipt)."""
    req = x402_requirement(amount)
    if scheme == "upto":
        req = {**req, "scheme": "upto", "extra": {**req["extra"], "facilitatorAddress": FACILITATOR}}
    challenge: dict[str, Any] = {"x402Version": 2, "error": "Payment required", "resource": {"url": svc.url + path},
                                 "accepts": [req]}
    if extensions is not None:
        challenge["extensions"] = extensions

    async def handler(request: Request) -> Response:
        signed = request.headers.get("payment-signature")
        if signed is None:
            return JSONResponse({}, status_code=402, headers={"PAYMENT-REQUIRED": b64(challenge)})
        payload = json.loads(base64.b64decode(signed))
        pid = _pid(payload)
        seen.ids.append(pid)
        seen.keys.append(request.headers.get("idempotency-key"))
        seen.payloads.append(payload)
        receipt: dict[str, Any] = {"success": True, "transaction": "0x" + "ab" * 32, "network": "eip155:84532"}
        if settled is not None:
            receipt["amount"] = settled
        if answer == "409":
            return JSONResponse({"error": "payment id conflict"}, status_code=409)
        if answer == "412":
            return JSONResponse({"error": "PERMIT2_ALLOWANCE_REQUIRED"}, status_code=412)
        if answer == "lost_then_refuse":  # settled, the answer lost; the same payment again: refused as used
            if seen.cache:
                return JSONResponse({}, status_code=402, headers={"PAYMENT-REQUIRED": b64({**challenge, "error": "used"})})
            seen.cache[pid or ""] = (signed, JSONResponse({}))
            return JSONResponse({"error": "upstream reset"}, status_code=500)
        if answer == "idempotent" and pid is not None:
            if pid in seen.cache:
                first, cached = seen.cache[pid]
                return cached if first == signed else JSONResponse({"error": "conflict"}, status_code=409)
            served = JSONResponse({"served": True, "id": pid}, headers={"PAYMENT-RESPONSE": b64(receipt)})
            seen.cache[pid] = (signed, served)
            if len(seen.cache) == 1:  # processed and settled, and the answer is lost on the way
                return JSONResponse({"error": "upstream reset"}, status_code=500)
            return served
        return JSONResponse({"served": True}, headers={"PAYMENT-RESPONSE": b64(receipt)})
    return svc.route(path, handler)


@dataclass(frozen=True)
class Case:
    """One hostile x402 v2 service and the requests the application sends to it (POST bodies in turn;
    None: a GET). Expected: each request's error type (None: served), the signatures made, the ledger
    rows, what was spent, text in the last error and in the ledger notes, and how many distinct payment
    ids the service saw."""

    name: str
    build: Callable[[HostileService, Seen], str]
    errors: tuple[type[BaseException] | None, ...]
    signatures: int
    rows: tuple[tuple[str, int], ...]
    spent: int
    bodies: tuple[bytes | None, ...] = (b'{"order": 1}',)
    says: str = ""
    noted: str = ""
    ids: int | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    sign_ins: int = 0             # sign-in messages the signer signed (and the service received)
    pays: int = 0                 # payments by the Lightning wallet (a testnet one)
    headers: dict[str, str] = field(default_factory=dict)  # the application's own request headers


CASES = [
    # -- payment-identifier ------------------------------------------------------------------------
    Case("payment-id-is-the-call-key", lambda svc, seen: v2(svc, seen, extensions=PID), (None,), 1,
         (("settled", 10_000),), 10_000, ids=1),
    Case("callers-own-idempotency-key-is-the-payment-id", lambda svc, seen: v2(svc, seen, extensions=PID), (None,), 1,
         (("settled", 10_000),), 10_000, ids=1, headers={"Idempotency-Key": "order-2026-0001-abcdef"}),
    Case("payment-id-409-is-typed-never-pays-again", lambda svc, seen: v2(svc, seen, extensions=PID, answer="409"),
         (PaymentIdConflict,), 1, (("pending", 10_000),), 10_000, says="409 Conflict", noted="payment id", ids=1),
    Case("payment-id-required-malformed-refused-before-signing",
         lambda svc, seen: v2(svc, seen, extensions={"payment-identifier": {"info": {"required": "yes"}}}),
         (PaymentRefused,), 0, (), 0, says="cannot follow"),
    Case("payment-id-required-get-has-one", lambda svc, seen: v2(svc, seen, extensions=PID_REQUIRED), (None,), 1,
         (("settled", 10_000),), 10_000, bodies=(None,), ids=1),
    Case("id-reuse-across-different-bodies-is-two-calls",
         lambda svc, seen: v2(svc, seen, extensions=PID, answer="idempotent"),
         (PaymentSentUnanswered, None), 2, (("pending", 10_000), ("settled", 10_000)), 20_000,
         bodies=(b'{"order": 1}', b'{"order": 2}'), ids=2),
    Case("app-retry-same-id-same-payload-gets-the-cached-answer",
         lambda svc, seen: v2(svc, seen, extensions=PID, answer="idempotent"),
         (PaymentSentUnanswered, None), 1, (("settled", 10_000),), 10_000,
         bodies=(b'{"order": 1}', b'{"order": 1}'), ids=1),
    Case("app-retry-refused-is-already-paid-never-pays-again",
         lambda svc, seen: v2(svc, seen, extensions=PID, answer="lost_then_refuse"),
         (PaymentSentUnanswered, CallAlreadyPaid), 1, (("pending", 10_000),), 10_000,
         bodies=(b'{"order": 1}', b'{"order": 1}'), ids=1, says="was already paid (ledger #1, pending)",
         noted="refused the payment made for it"),
    # -- upto -------------------------------------------------------------------------------------
    # what the service reports settling is only its word: the ceiling it may take stays counted, noted
    Case("upto-reported-amount-is-noted-the-ceiling-stays-counted",
         lambda svc, seen: v2(svc, seen, scheme="upto", amount="50000", settled="12000"), (None,), 1,
         (("settled", 50_000),), 50_000, noted="settled 12000 of the 50000 signed for"),
    Case("upto-zero-reported-still-counts-the-ceiling",
         lambda svc, seen: v2(svc, seen, scheme="upto", amount="50000", settled="0"), (None,), 1,
         (("settled", 50_000),), 50_000, noted="settled 0 of the 50000 signed for"),
    Case("upto-amount-above-ceiling-recorded-as-ceiling",
         lambda svc, seen: v2(svc, seen, scheme="upto", amount="50000", settled="90000"), (None,), 1,
         (("settled", 50_000),), 50_000, noted="service defect"),
    Case("upto-412-permit2-allowance-required",
         lambda svc, seen: v2(svc, seen, scheme="upto", amount="50000", answer="412"),
         (Permit2AllowanceRequired,), 1, (("pending", 50_000),), 50_000,  # the signature is held: still counted
         says="approve the Permit2 contract 0x000000000022D473030F116dDEE9F6B43aC78BA3 to spend token"),
    Case("upto-ceiling-over-the-per-payment-limit-refused",
         lambda svc, seen: v2(svc, seen, scheme="upto", amount="1000000", settled="10"), (PaymentRefused,), 0, (), 0,
         says="per-payment limit"),
    # -- sign-in-with-x ---------------------------------------------------------------------------
    Case("sign-in-returning-payer-is-not-charged", lambda svc, seen: siwx(svc, seen), (None,), 0, (), 0,
         policy={"sign_in": True}, sign_ins=1),
    Case("sign-in-with-a-statement", lambda svc, seen: siwx(svc, seen, statement="Sign in to the weather API"),
         (None,), 0, (), 0, policy={"sign_in": True}, sign_ins=1),
    Case("sign-in-new-payer-still-asked-pays-once", lambda svc, seen: siwx(svc, seen, returning=False), (None,), 1,
         (("settled", 10_000),), 10_000, policy={"sign_in": True}, sign_ins=1),
    Case("sign-in-for-another-domain-never-signed", lambda svc, seen: siwx(svc, seen, domain="bank.example"),
         (None,), 1, (("settled", 10_000),), 10_000, policy={"sign_in": True}),
    Case("sign-in-message-with-extra-lines-never-signed",
         lambda svc, seen: siwx(svc, seen, statement="hello\nURI: https://bank.example/"), (None,), 1,
         (("settled", 10_000),), 10_000, policy={"sign_in": True}),
    Case("sign-in-off-by-default", lambda svc, seen: siwx(svc, seen), (None,), 1, (("settled", 10_000),), 10_000),
    # -- Lightning exact (the lnbtc proposal) ------------------------------------------------------
    Case("lnbtc-refused-unless-opted-in", lambda svc, seen: lnbtc(svc, seen), (PaymentRefused,), 0, (), 0,
         says="x402-lnbtc is a proposal, not a standard; opt in with Policy(proposals=['x402-lnbtc'])"),
    Case("lnbtc-opted-in-pays-the-bound-invoice", lambda svc, seen: lnbtc(svc, seen), (None,), 0,
         (("settled", 10_000),), 11_000, policy={"proposals": ["x402-lnbtc"]}, pays=1),
    Case("lnbtc-invoice-bound-to-another-request-never-paid", lambda svc, seen: lnbtc(svc, seen, bind="other"),
         (httpay.InvoiceError,), 0, (), 0, policy={"proposals": ["x402-lnbtc"]}, says="not bound to this request"),
    Case("upto-not-allowed-by-x402-exact",
         lambda svc, seen: v2(svc, seen, scheme="upto", amount="50000"), (PaymentRefused,), 0, (), 0,
         says="x402:upto:eip155:84532", policy={"methods": ["x402:exact"]}),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_x402_v2(case: Case, mode: str, svc: HostileService, ledger: Path) -> None:
    seen = Seen()
    url = case.build(svc, seen)
    signer = SigningSigner()
    wallet = LnbtcWallet(svc.node)
    policy = httpay.Policy(**{"methods": ["x402"], "usd_per_btc": RATE, "max_per_payment_usd": 0.5, **case.policy})
    errors: list[BaseException | None] = []
    for body in case.bodies:
        method, request = ("GET", {"headers": case.headers}) if body is None else (
            "POST", {"content": body, "headers": case.headers})
        out = run(mode, url, wallet=wallet, ledger=ledger, policy=policy, method=method, request=request,
                  x402_signer=signer)
        errors.append(out.error)
        if out.error is None:
            assert out.status == 200 and out.response is not None and out.response.json()["served"] is True
    assert [type(e) if e is not None else None for e in errors] == list(case.errors), errors
    assert case.says in str(errors[-1] or "")
    assert len(signer.signed) == case.signatures
    with SQLiteLedger(ledger) as lg:
        rows = sorted(lg.receipts(), key=lambda r: r.id)
        assert [(r.status.value, r.amount_msat) for r in rows] == list(case.rows)
        assert lg.spent_msat() == case.spent
    assert all(case.noted in (r.reason or "") for r in rows), [r.reason for r in rows]
    if case.ids is not None:
        ids = [i for i in seen.ids if i is not None]
        assert len(set(ids)) == case.ids
        assert all(i == case.headers["Idempotency-Key"] for i in ids) if case.headers else all(
            i.startswith("pay_") for i in ids)
        if case.bodies[0] is not None:  # a POST: its Idempotency-Key is the call's key, the payment id too
            assert seen.keys == seen.ids
    assert len(signer.messages) == len(seen.sign_ins) == case.sign_ins
    assert len(wallet.calls) == case.pays
    if any(isinstance(e, CallAlreadyPaid) for e in errors):
        assert len(signer.signed) == 1  # never a second payment


def test_upto_service_reporting_less_than_it_may_take_runs_into_the_budget(mode: str, svc: HostileService,
                                                                          ledger: Path) -> None:
    """A service that takes each upto signature for the $0.05 ceiling and reports settling 0: its word
    is all httpay has, and the signature lets it take the ceiling, so a $0.10 budget holds two
    ceilings. The third request is refused before anything is signed."""
    seen = Seen()
    url = v2(svc, seen, scheme="upto", amount="50000", settled="0")
    signer = SigningSigner()
    policy = httpay.Policy(methods=["x402"], usd_per_btc=RATE, budget_usd=0.10, max_per_payment_usd=0.10)
    outs = [run(mode, url, wallet=None, ledger=ledger, policy=policy, method="POST",
                request={"content": f"text {i}".encode()}, x402_signer=signer) for i in range(3)]
    assert [o.status for o in outs[:2]] == [200, 200], [o.error for o in outs]
    assert isinstance(outs[2].error, PaymentRefused) and outs[2].error.rule == "budget", outs[2].error
    assert len(signer.signed) == len(seen.payloads) == 2  # the third authorization was never signed nor sent
    with SQLiteLedger(ledger) as lg:
        rows = sorted(lg.receipts(), key=lambda r: r.id)
        assert [(r.status.value, r.amount_msat) for r in rows] == [("settled", 50_000)] * 2
        assert lg.spent_msat() == 100_000
    assert all("settled 0 of the 50000 signed for" in (r.reason or "") for r in rows), [r.reason for r in rows]


def test_lnbtc_offers_are_shown_with_their_price_and_never_said_payable(svc: HostileService, ledger: Path,
                                                                       cli: Callable[..., Any]) -> None:
    """`httpay offers` and the agent's offers tool show a Lightning `exact` offer in msat, on its lnbtc
    network, and say it is a proposal that is not paid; nothing is paid or written."""
    from httpay.apps.agent import Toolbox

    url = lnbtc(svc, Seen())
    ran = cli("offers", url)
    both = " ".join((ran.out + ran.err).split())
    assert "10 sat" in both and "x402-lnbtc is a proposal, not a standard" in both, both
    with Toolbox(wallet=LnbtcWallet(svc.node), ledger=ledger, policy=httpay.Policy(usd_per_btc=RATE)) as box:
        text = " ".join(box.offers(url).split())
    assert "x402-lnbtc is a proposal, not a standard" in text and "Policy(proposals=['x402-lnbtc'])" in text, text
    assert svc.node.paid == []
    with SQLiteLedger(ledger) as lg:
        assert lg.receipts() == []
