"""MPP (`Payment` scheme) against services that behave and misbehave, sync and async.

Each case is a row: how the service answers, what httpay must do (wallet calls, ledger rows,
spend with fees, the error's type and words). The service here is a small MPP server written
from the spec (PROTOCOLS-MPP.md): HMAC challenge ids, real signed invoices, single-use proofs,
`Payment-Receipt`, problem details. Peers' own servers are in tests/interop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import httpay
from httpay.dialects.mpp import challenge_hash
from httpay.ledger import SQLiteLedger
from tests.hostile.harness import X402_PAY_TO, X402_USDC, CountingSigner, CountingWallet, HostileService, run

SECRET = b"hostile-mpp-secret"
REALM = "hostile.example"


def b64url(data: Any) -> str:
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


@dataclass
class MppServer:
    """One MPP route's state: challenges issued, proofs used, what the requests carried."""

    svc: HostileService
    issued: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> params
    used: set[str] = field(default_factory=set)
    seen_accept: list[str | None] = field(default_factory=list)
    served: int = 0

    def params(self, method: str, intent: str, request: dict[str, Any], **extra: str) -> dict[str, str]:
        req = b64url(request)
        expires = extra.pop("expires", (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"))
        slots = [REALM, method, intent, req, expires, extra.get("digest", ""), extra.get("opaque", "")]
        cid = base64.urlsafe_b64encode(hmac.new(SECRET, "|".join(slots).encode(), hashlib.sha256).digest()) \
            .rstrip(b"=").decode()
        p = {"id": cid, "realm": REALM, "method": method, "intent": intent, "request": req, "expires": expires, **extra}
        self.issued[cid] = p
        return p

    def lightning(self, amount_sat: int = 10, *, invoice_sat: int | None = None, bad_hash: bool = False,
                  **extra: str) -> dict[str, str]:
        bolt11, payment_hash = self.svc.node.mint((invoice_sat or amount_sat) * 1000, description="mpp charge")
        details = {"invoice": bolt11, "paymentHash": "00" * 32 if bad_hash else payment_hash, "network": "regtest"}
        return self.params("lightning", "charge", {"amount": str(amount_sat), "currency": "sat",
                                                   "methodDetails": details}, **extra)

    def evm(self, amount: str = "10000", types: list[str] | None = None) -> dict[str, str]:
        return self.params("evm", "charge", {"amount": amount, "currency": X402_USDC, "recipient": X402_PAY_TO,
                                             "methodDetails": {"chainId": 84532,
                                                               "credentialTypes": types or ["authorization"]}})


def header(p: dict[str, str]) -> str:
    return "Payment " + ", ".join(f'{k}="{v}"' for k, v in p.items())


def problem(kind: str, status: int = 402) -> dict[str, Any]:
    return {"type": f"https://paymentauth.org/problems/{kind}", "title": kind, "status": status}


def mpp_route(svc: HostileService, path: str, offers: str, *, answer: str = "ok") -> tuple[str, MppServer]:
    """An MPP paywall. `offers` names what one 402 carries (comma-separated): lightning,
    lightning_wrong_amount, lightning_bad_hash, lightning_expired, lightning_payment_authorization,
    lightning_digest, evm, evm_permit2_only, tempo. `answer` to a good credential: ok, or a problem
    kind to refuse it with."""
    server = MppServer(svc)

    def challenge(request_body: bytes) -> Response:
        values = []
        for name in offers.split(","):
            if name == "lightning":
                values.append(header(server.lightning()))
            elif name == "lightning_5":
                values.append(header(server.lightning(5)))
            elif name == "lightning_wrong_amount":
                values.append(header(server.lightning(10, invoice_sat=11)))
            elif name == "lightning_bad_hash":
                values.append(header(server.lightning(bad_hash=True)))
            elif name == "lightning_expired":
                values.append(header(server.lightning(expires="2020-01-01T00:00:00Z")))
            elif name == "lightning_payment_authorization":
                values.append(header(server.lightning(header="Payment-Authorization")))
            elif name == "lightning_digest":
                digest = "sha-256=:" + base64.b64encode(hashlib.sha256(request_body).digest()).decode() + ":"
                values.append(header(server.lightning(digest=digest)))
            elif name == "lightning_other_digest":
                values.append(header(server.lightning(digest="sha-256=:" + base64.b64encode(b"x" * 32).decode() + ":")))
            elif name == "evm":
                values.append(header(server.evm()))
            elif name == "evm_permit2_only":
                values.append(header(server.evm(types=["permit2"])))
            elif name == "tempo":
                values.append(header(server.params("tempo", "charge", {"amount": "10000", "currency": "0x20c0"})))
            elif name == "classic":
                resp = svc.classic_challenge(10)
                values.extend(v for k, v in resp.headers.items() if k == "www-authenticate")
        resp = JSONResponse(problem("payment-required"), status_code=402, headers={"Cache-Control": "no-store"})
        for v in values:
            resp.headers.append("WWW-Authenticate", v)
        return resp

    def verify(cred: dict[str, Any]) -> str | None:
        echo = cred.get("challenge", {})
        issued = server.issued.get(echo.get("id", ""))
        if issued is None or any(issued.get(k) != echo.get(k) for k in issued if k != "header"):
            return "invalid-challenge"
        if echo["id"] in server.used:
            return "invalid-challenge"
        payload = cred.get("payload", {})
        if issued["method"] == "lightning":
            req = unb64url(issued["request"])
            pre = payload.get("preimage", "")
            if hashlib.sha256(bytes.fromhex(pre)).hexdigest() != req["methodDetails"]["paymentHash"]:
                return "lightning/invalid-preimage"
        elif issued["method"] == "evm":
            from eth_account import Account
            from eth_account.messages import encode_typed_data

            nonce = "0x" + challenge_hash(echo["id"], echo["realm"]).hex()
            if payload.get("type") != "authorization" or payload.get("nonce") != nonce:
                return "verification-failed"
            msg = {k: int(payload[k]) if k in ("value", "validAfter", "validBefore") else payload[k]
                   for k in ("from", "to", "value", "validAfter", "validBefore")}
            msg["nonce"] = bytes.fromhex(payload["nonce"][2:])
            typed = encode_typed_data(
                domain_data={"name": "USDC", "version": "2", "chainId": 84532, "verifyingContract": X402_USDC},
                message_types={"TransferWithAuthorization": [
                    {"name": "from", "type": "address"}, {"name": "to", "type": "address"},
                    {"name": "value", "type": "uint256"}, {"name": "validAfter", "type": "uint256"},
                    {"name": "validBefore", "type": "uint256"}, {"name": "nonce", "type": "bytes32"}]},
                message_data=msg)
            if Account.recover_message(typed, signature=payload["signature"]).lower() != payload["from"].lower():
                return "verification-failed"
            if payload["to"] != X402_PAY_TO or payload["value"] != "10000":
                return "payment-insufficient"
        server.used.add(echo["id"])
        return None

    async def handler(request: Request) -> Response:
        server.seen_accept.append(request.headers.get("accept-payment"))
        body = await request.body()
        value = request.headers.get("payment-authorization") or request.headers.get("authorization") or ""
        if "lightning_payment_authorization" in offers and request.headers.get("authorization", "").startswith(
                "Payment "):
            return JSONResponse(problem("malformed-credential"), status_code=402)
        if value.startswith("Payment "):
            cred = unb64url(value[len("Payment "):])
            issued = server.issued.get(cred.get("challenge", {}).get("id", ""), {})
            if issued.get("digest") and not issued["digest"].endswith(
                    base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"):
                return JSONResponse(problem("verification-failed"), status_code=402)
            kind = verify(cred) if answer == "ok" else answer
            if kind is not None:
                resp = challenge(body)
                resp.body = json.dumps(problem(kind)).encode()
                resp.headers["content-length"] = str(len(resp.body))
                return resp
            server.served += 1
            ref = cred["challenge"]["id"][:16]
            receipt = {"status": "success", "method": issued["method"], "reference": ref,
                       "timestamp": "2026-12-01T00:00:00Z", "challengeId": cred["challenge"]["id"]}
            return JSONResponse({"served": True}, headers={"Payment-Receipt": b64url(receipt),
                                                           "Cache-Control": "private"})
        if value and svc.authorized(request):
            server.served += 1
            return JSONResponse({"served": True, "by": "l402"})
        return challenge(body)

    return svc.route(path, handler), server


@dataclass(frozen=True)
class Case:
    name: str
    offers: str
    answer: str = "ok"
    error: type[BaseException] | None = None
    words: str = ""               # in the error's text
    calls: int = 1                # wallet calls
    signed: int = 0               # signer calls
    settled: int = 1              # settled ledger rows
    rows: int = 1                 # ledger rows
    problem: str | None = None    # the error's problem type
    note: str = ""                # in the settled row's note
    method: str = "GET"
    body: bytes | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    dialect: str = "mpp"          # the settled row's protocol


CASES = [
    Case("lightning charge paid once, the receipt on the row", "lightning", note="service receipt"),
    Case("the credential goes where the server asks", "lightning_payment_authorization"),
    Case("a method httpay does not pay is refused by name", "tempo", error=httpay.PaymentRefused,
         words="tempo/charge", calls=0, settled=0, rows=0),
    Case("beside an unpayable method, the lightning charge is paid", "tempo,lightning"),
    Case("an invoice for more than the charge is never paid", "lightning_wrong_amount", error=httpay.PaymentRefused,
         words="its amount (10 sat) is not its invoice's (11 sat)", calls=0, settled=0, rows=0),
    Case("an invoice for another hash is never paid", "lightning_bad_hash", error=httpay.InvoiceError,
         words="payment hash", calls=0, settled=0, rows=0),
    Case("an expired challenge is never paid", "lightning_expired", error=httpay.InvoiceError, words="expired",
         calls=0, settled=0, rows=0),
    Case("a refused proof names the problem", "lightning", answer="lightning/invalid-preimage",
         error=httpay.PaymentNotHonored, words="preimage does not pay its invoice", problem="lightning/invalid-preimage"),
    Case("the paid POST resends the body its digest binds", "lightning_digest", method="POST", body=b'{"q": 1}'),
    Case("a digest of another body is not paid", "lightning_other_digest", method="POST", body=b'{"q": 1}',
         error=httpay.PaymentRefused, words="digest", calls=0, settled=0, rows=0),
    Case("cheapest across dialects: the 5 sat MPP charge over a 10 sat L402", "classic,lightning_5"),
    Case("the policy's preferred dialect over a cheaper one", "classic,lightning_5",
         policy={"prefer": ["l402-classic"]}, dialect="l402-classic"),
    Case("same price: the L402 token (serves the whole host) over a one-request charge", "lightning,classic",
         dialect="l402-classic"),
    Case("evm authorization signed once, bound to the challenge", "evm", calls=0, signed=1,
         policy={"methods": ["mpp"]}, note="transaction"),
    Case("evm without the authorization type is refused by name", "evm_permit2_only", error=httpay.PaymentRefused,
         words="authorization", calls=0, settled=0, rows=0, policy={"methods": ["mpp"]}),
    Case("evm not allowed by the policy: the lightning charge instead", "evm,lightning"),
    Case("a refused evm payment names the problem, and is failed", "evm", answer="payment-expired",
         error=httpay.PaymentRejected, words="challenge expired", calls=0, signed=1, settled=0,
         problem="payment-expired", policy={"methods": ["mpp"]}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_mpp_case(case: Case, svc: HostileService, wallet: CountingWallet, ledger: Path, mode: str) -> None:
    url, server = mpp_route(svc, "/mpp", case.offers, answer=case.answer)
    signer = CountingSigner()
    policy = httpay.Policy(usd_per_btc=100_000, **case.policy)
    request = {"content": case.body} if case.body is not None else None
    out = run(mode, url, wallet=wallet, ledger=ledger, policy=policy, method=case.method, request=request,
              x402_signer=signer)
    if case.error is None:
        assert out.error is None, out.error
        assert out.status == 200 and out.response is not None and out.response.json()["served"]
    else:
        assert isinstance(out.error, case.error), out.error
        assert case.words in str(out.error), str(out.error)
        assert getattr(out.error, "problem", None) == case.problem
    assert out.wallet_calls == case.calls
    assert len(signer.signed) == case.signed
    assert len(out.settled) == case.settled and len(out.receipts) == case.rows
    if case.settled:
        row = out.settled[0]
        assert row.protocol == case.dialect
        assert case.note in (row.reason or "")
        fee = 1_000 if case.calls else 0
        assert out.spent_msat == row.amount_msat + fee
    if case.calls == 0 and case.signed == 0:
        assert server.served == 0 and not svc.node.paid


def test_accept_payment_names_what_the_policy_allows(svc: HostileService, wallet: CountingWallet,
                                                     ledger: Path, mode: str) -> None:
    """Once a host has asked in MPP, its requests (the paid retry first) carry `Accept-Payment` with the
    methods the policy allows; a host never seen asking gets no header at all (the unpaid path to
    everyone else adds nothing); a caller's own header is left alone."""
    url, server = mpp_route(svc, "/mpp", "lightning")
    run(mode, url, wallet=wallet, ledger=ledger, policy=httpay.Policy(usd_per_btc=100_000))
    assert server.seen_accept == [None, "lightning/charge"]
    run(mode, url, wallet=wallet, ledger=ledger, x402_signer=CountingSigner(),
        policy=httpay.Policy(usd_per_btc=100_000, methods=["lightning", "mpp"]))
    assert server.seen_accept[-1] == "lightning/charge, evm/charge"
    run(mode, url, wallet=wallet, ledger=ledger, request={"headers": {"Accept-Payment": "tempo/charge"}},
        policy=httpay.Policy(usd_per_btc=100_000))
    assert server.seen_accept[-2:] == ["tempo/charge", "tempo/charge"]  # the caller's own header is left alone


def test_a_host_that_asked_in_mpp_gets_accept_payment_on_every_later_request(
        svc: HostileService, wallet: CountingWallet, ledger: Path) -> None:
    url, _ = mpp_route(svc, "/mpp", "lightning")
    seen: list[str | None] = []

    async def free(request: Request) -> Response:
        seen.append(request.headers.get("accept-payment"))
        return JSONResponse({"free": True})

    other = svc.route("/free-too", free)
    with httpay.Client(wallet=wallet, ledger=ledger) as c:
        c.get(other)
        c.get(url)
        c.get(other)
    assert seen == [None, "lightning/charge"]


def test_evm_nonce_is_the_challenge_hash(svc: HostileService, wallet: CountingWallet, ledger: Path) -> None:
    url, server = mpp_route(svc, "/mpp", "evm")
    signer = CountingSigner()
    out = run("sync", url, wallet=wallet, ledger=ledger, policy=httpay.Policy(methods=["mpp"], usd_per_btc=100_000), x402_signer=signer)
    assert out.error is None
    (cid,) = server.used
    assert signer.signed[0]["nonce"] == challenge_hash(cid, REALM)
    assert out.settled[0].payment_hash == challenge_hash(cid, REALM).hex()


def test_one_l402_token_serves_the_next_requests(svc: HostileService, wallet: CountingWallet, ledger: Path) -> None:
    """An Aperture-style 402 (LSAT, L402 and Payment for one price): the token is bought once and
    reused, where paying the one-request charge each time would pay again and again."""
    url, server = mpp_route(svc, "/aperture", "lightning,classic")
    with httpay.Client(wallet=wallet, ledger=ledger) as c:
        for _ in range(3):
            assert c.get(url).status_code == 200
    assert len(wallet.calls) == 1 and server.served == 3


def test_200_concurrent_requests_on_a_402_of_every_dialect_make_one_payment(
        svc: HostileService, wallet: CountingWallet, ledger: Path) -> None:
    """LSAT, L402 and MPP challenges in one 402, 200 requests at once: the quote picks the L402
    token for all of them, and the single flight pays it once."""
    import asyncio

    url, server = mpp_route(svc, "/aperture", "lightning,classic")

    async def go() -> list[int]:
        # half of them wait for one of the pool's 100 connections: a busy machine's 5 s pool timeout
        # would be a PoolTimeout that says nothing of payments (60 s: only a guard)
        async with httpay.AsyncClient(wallet=wallet, ledger=ledger, timeout=60) as c:
            return [r.status_code for r in await asyncio.gather(*(c.get(url) for _ in range(200)))]

    assert asyncio.run(go()) == [200] * 200
    assert len(wallet.calls) == 1 and server.served == 200
    with SQLiteLedger(ledger) as lg:
        (row,) = lg.receipts()
    assert row.protocol == "l402-classic" and row.status.value == "settled"
