"""Paying x402 with an EVM signer: the `exact` scheme, EIP-3009 `transferWithAuthorization`.

The pipeline hands an x402 challenge here when a signer is configured. Pure steps first (value
the offers in USD, then in msat at the policy's BTC/USD rate so the ledger's budgets apply;
build the authorization and the payment header), then one flow that writes the ledger row
pending *before* signing, sends the request once with the payment, and settles or fails the row
from the server's `PAYMENT-RESPONSE` receipt. A second 402 is never paid again.

Which offers the policy may pay: `Policy(methods=[..., "x402"])` allows every x402 method;
`"x402:exact"` only the exact scheme; `"x402:exact:eip155:8453"` one network. Methods are named
`x402:<scheme>:<network>` as in the challenge's offers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import secrets
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any, Protocol

import httpx

from httpay.challenge import PaymentChallenge
from httpay.errors import (
    ChallengeError,
    HttpayError,
    PaidRequestFailed,
    PaymentRefused,
    WalletError,
)
from httpay.events import Event, emit
from httpay.ledger import Intent, Receipt, Status
from httpay.lightning import MSAT_PER_BTC
from httpay.pipeline import (
    RECEIPT_EXTENSION,
    Ask,
    Effect,
    Payer,
    PaymentNotHonored,
    PaymentOutcomeUnknown,
    Send,
    approved_decision,
    deadline_of,
    decide,
    host_of,
    refused,
    within_deadline,
)
from httpay.policy import Decision, fmt_msat
from httpay.protocols import x402
from httpay.protocols.l402_v02 import Offer, PaymentOffers
from httpay.safe import get_logger

log = get_logger("httpay")

DEFAULT_TIMEOUT_S = 300       # validBefore when the server gives no maxTimeoutSeconds (the x402 servers' default)
MAX_TIMEOUT_S = 3600          # never sign an authorization that stays valid longer than an hour
MAX_MSAT = 2**62              # beyond this an amount is not real money (and would not fit the ledger)
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
    """What the flow needs from a signer (`httpay.signers.EvmSigner` is one)."""

    @property
    def address(self) -> str: ...

    @property
    def name(self) -> str: ...

    def pays_on(self, network: str) -> bool: ...

    def sign_typed_data(self, domain: Mapping[str, Any], types: Mapping[str, Sequence[Mapping[str, str]]],
                        primary_type: str, message: Mapping[str, Any]) -> bytes: ...


class PaymentSentUnanswered(PaidRequestFailed, PaymentOutcomeUnknown):
    """The signed x402 payment went out and the service did not say whether it settled it (no
    answer, or a 5xx without a receipt): the ledger row stays pending and `receipt` is kept."""

    def __init__(self, message: str, *, receipt: Receipt, response: httpx.Response | None = None) -> None:
        HttpayError.__init__(self, message)
        self.receipt = receipt
        self.response = response


class PaymentRejected(HttpayError):
    """The service refused the signed x402 payment (it answered 402 again): nothing was settled.

    `receipt` is the ledger row, now failed; `response` is the service's answer.
    """

    def __init__(self, message: str, *, receipt: Receipt, response: httpx.Response) -> None:
        super().__init__(message)
        self.receipt = receipt
        self.response = response


# -- pure: which methods, what is it worth -----------------------------------------------------------
def method_allowed(allowed: Sequence[str], method: str) -> bool:
    """True when a policy entry allows `method`: "x402" any x402 method, "x402:exact" that scheme on
    any network, or the method itself ("x402:exact:eip155:8453")."""
    return any(method == a or method.startswith(a + ":") for a in allowed if a.startswith("x402"))


def chain_id(network: str) -> int | None:
    """The EVM chain id of an x402 network ("eip155:8453" or a v1 name such as "base"), else None."""
    if network.startswith("eip155:"):
        tail = network[len("eip155:"):]
        return int(tail) if tail.isascii() and tail.isdigit() and len(tail) <= 18 else None
    return CHAIN_IDS.get(network)


@dataclass(frozen=True)
class Priced:
    """One x402 requirement this signer can pay, with what it is worth."""

    requirement: x402.X402Requirement
    offer: Offer
    chain_id: int
    decimals: int
    usd: Fraction
    msat: int
    eip712_name: str
    eip712_version: str

    @property
    def price(self) -> str:
        """'0.01 USDC on eip155:84532': the amount as a person reads it."""
        whole = Fraction(self.requirement.amount, 10**self.decimals)
        text = f"{float(whole):,.{min(self.decimals, 6)}f}".rstrip("0").rstrip(".")
        return f"{text} {self.requirement.currency} on {self.requirement.network}"


def _int_extra(extra: Mapping[str, Any], key: str) -> int | None:
    v = extra.get(key)
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= 3:
        return int(v)
    return None


def price_requirement(req: x402.X402Requirement, offer: Offer, *, usd_per_btc: float, signer: X402Signer) -> Priced | str:
    """Value one requirement, or say (as text) why this signer must not pay it.

    Decimals come from the known USDC deployments first (a server must not be able to understate
    a price by claiming more decimals), else from `extra.decimals` for a USD-named token; with
    neither, the value is unknowable and it is not paid.
    """
    if req.scheme != "exact":
        return f"scheme {req.scheme!r} is not one httpay signs (only 'exact')"
    cid = chain_id(req.network)
    if cid is None:
        return f"network {req.network!r} is not an EVM network httpay knows"
    if not signer.pays_on(req.network):
        return f"the signer is not set to pay on {req.network}"
    method = req.extra.get("assetTransferMethod")
    if method not in (None, "eip3009"):
        return f"asset transfer method {str(method)[:20]!r} is not supported (only EIP-3009)"
    if not _ADDRESS.match(req.pay_to) or not _ADDRESS.match(req.asset):
        return "payTo and asset must be 20-byte hex addresses"
    if int(req.pay_to, 16) == 0:
        return "payTo is the zero address"
    known = KNOWN_ASSETS.get((cid, req.asset.lower()))
    claimed = _int_extra(req.extra, "decimals")
    name, version = req.extra.get("name"), req.extra.get("version")
    if known is not None:
        if claimed is not None and claimed != known.decimals:
            return f"the service says {req.currency} has {claimed} decimals, but it has {known.decimals}"
        decimals = known.decimals
        name = name if isinstance(name, str) and name else known.eip712_name
        version = version if isinstance(version, str) and version else known.eip712_version
    else:
        label = f"{req.currency} {name if isinstance(name, str) else ''}".upper()
        if claimed is None or "USD" not in label or claimed > 36:
            return (f"asset {req.asset} on {req.network} is not a known USD stablecoin and its value "
                    "cannot be told; not paying an amount whose worth is unknown")
        decimals = claimed
    if not isinstance(name, str) or not name or not isinstance(version, str) or not version:
        return "the requirement lacks the token's EIP-712 name and version (extra.name, extra.version)"
    usd = Fraction(req.amount, 10**decimals)
    msat = math.ceil(usd * MSAT_PER_BTC / Fraction(str(usd_per_btc)))
    if msat > MAX_MSAT:
        return "the amount is too large to be a real price"
    return Priced(req, offer, cid, decimals, usd, msat, name, version)


def msat_offers(challenge: PaymentOffers, priced: Sequence[Priced]) -> PaymentOffers:
    """The payable offers re-priced in msat, so the policy's limits and strategy apply as to any offer."""
    offers = tuple(dataclasses.replace(p.offer, amount=p.msat, currency="MSAT") for p in priced)
    return dataclasses.replace(challenge, offers=offers)


# -- pure: the authorization and the header --------------------------------------------------------
def authorization(p: Priced, payer: str, *, nonce: bytes, now: int) -> dict[str, str]:
    """The EIP-3009 authorization for the chosen requirement only: its payTo, amount and timeout."""
    if len(nonce) != 32:
        raise ValueError("an EIP-3009 nonce is 32 bytes")
    timeout = p.requirement.max_timeout_seconds or DEFAULT_TIMEOUT_S
    return {
        "from": payer, "to": p.requirement.pay_to, "value": str(p.requirement.amount),
        "validAfter": "0", "validBefore": str(now + min(timeout, MAX_TIMEOUT_S)), "nonce": "0x" + nonce.hex(),
    }


def typed_data(p: Priced, auth: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, list[dict[str, str]]], str,
                                                            dict[str, Any]]:
    """(domain, types, primary type, message) of the EIP-712 message the signer signs."""
    domain = {"name": p.eip712_name, "version": p.eip712_version, "chainId": p.chain_id,
              "verifyingContract": p.requirement.asset}
    message = {"from": auth["from"], "to": auth["to"], "value": int(auth["value"]),
               "validAfter": int(auth["validAfter"]), "validBefore": int(auth["validBefore"]),
               "nonce": bytes.fromhex(auth["nonce"][2:])}
    return domain, AUTHORIZATION_TYPES, "TransferWithAuthorization", message


def payment_payload(ch: x402.X402Challenge, req: x402.X402Requirement, auth: Mapping[str, str],
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


# -- the flow -----------------------------------------------------------------------------------
def x402_flow(
    payer: Payer, request: httpx.Request, response: httpx.Response, challenge: PaymentChallenge, *, rid: str,
    met_402_at: datetime | None = None, max_price_msat: int | None = None, offer_id: str | None = None,
) -> Generator[Effect, Any, httpx.Response]:
    """Pay an x402 challenge with `payer.x402_signer` within the policy, then send the request once
    with the payment. Returns the service's answer; raises PaymentRefused (nothing signed),
    PaymentRejected (signed, refused by the service, nothing settled) or PaymentOutcomeUnknown."""
    assert challenge.x402 is not None
    signer: X402Signer = payer.x402_signer
    url, host = str(request.url), host_of(request.url)
    rate = payer.rate()
    try:
        decision = decide(payer, challenge, url=url, host=host, rate=rate, max_price_msat=max_price_msat,
                          offer_id=offer_id)
        if payer.policy.approve is not None:
            asked_at = time.monotonic()
            answer = yield Ask(decision)
            if (deadline := deadline_of(response)) is not None:
                deadline.paused(asked_at)  # a person's time to decide is not the service's delay
            decision = approved_decision(payer, challenge, decision, answer)
            emit(payer.on_event, Event("approval", url, rid, {"decision": decision, "approved": True}),
                 f"approved: {decision}")
        chosen = _priced(payer, challenge, decision)
    except PaymentRefused as exc:
        exc.response = response
        exc.offers = exc.offers if exc.offers is not None else challenge.offers
        raise refused(payer, url, rid, exc) from None
    emit(payer.on_event, Event("decision", url, rid, {"decision": decision}), f"{decision} ({chosen.price})")

    nonce = secrets.token_bytes(32)
    auth = authorization(chosen, signer.address, nonce=nonce, now=int(time.time()))
    within_deadline(payer, response, url, rid, "the signature")
    receipt = _reserve(payer, decision, chosen, nonce, url, host, response, rid, met_402_at)
    try:
        signature = signer.sign_typed_data(*typed_data(chosen, auth))
    except Exception as exc:
        payer.ledger.fail(receipt.id, f"not signed: {type(exc).__name__}")
        emit(payer.on_event, Event("payment_failed", url, rid, {"receipt": payer.ledger.get(receipt.id)}),
             "the signer did not sign; nothing was sent", logging.WARNING)
        if isinstance(exc, HttpayError):
            raise
        raise WalletError(f"the x402 signer failed ({type(exc).__name__}); nothing was sent") from None
    name, value = x402.encode_payment_header(payment_payload(challenge.x402, chosen.requirement, auth, signature),
                                             challenge.x402.version)
    request.headers[name] = value
    emit(payer.on_event, Event("retry", url, rid, {"attempt": 1}),
         f"sending the request with a signed x402 payment (nonce {auth['nonce'][:10]}…)")
    try:
        answer = yield Send(request)
    except Exception as exc:  # the payment may have reached the server
        payer.ledger.note(receipt.id, f"outcome unknown: {type(exc).__name__} while sending the x402 payment")
        raise PaymentSentUnanswered(
            f"sent a signed x402 payment of {chosen.price}, ledger #{receipt.id}; the service did not answer "
            f"({type(exc).__name__}); the row stays pending: the authorization may still be settled until it "
            "expires, and the receipt is kept", receipt=payer.ledger.get(receipt.id),
        ) from exc
    broken: Exception | None = None
    try:
        answer.read()  # a body that breaks off is seen here, while the receipt is at hand
    except Exception as exc:  # noqa: BLE001 - reported below with the receipt
        broken = exc
    return _outcome(payer, answer, receipt, chosen, url, rid, broken)


def _payable(payer: Payer, challenge: PaymentChallenge, choices: PaymentOffers, rate: float | None) -> list[Priced]:
    """The offers among `choices` the policy's methods allow and this signer can pay, each valued."""
    policy = payer.policy
    assert challenge.x402 is not None
    allowed = [o for o in choices if any(method_allowed(policy.methods, m) for m in o.payment_methods)]
    if not allowed:
        raise PaymentRefused(
            f"refused: the policy allows {', '.join(policy.methods) or 'no method'}; the service takes "
            f"{', '.join(choices.payment_methods)}",
            rule="methods", offers=challenge.offers, knob="methods", advice="allow 'x402' in {knob}",
        )
    if not rate:
        raise PaymentRefused(
            "refused: x402 prices are in USD stablecoins and the ledger counts msat, but no BTC/USD rate is "
            "known", rule="exchange_rate", offers=challenge.offers, knob="usd_per_btc", advice="set {knob}",
        )
    by_id = {o.offer_id: r for o, r in zip(challenge.offers, challenge.x402.accepts, strict=True)}
    payable: list[Priced] = []
    why: list[str] = []
    for o in allowed:
        p = price_requirement(by_id[o.offer_id], o, usd_per_btc=rate, signer=payer.x402_signer)
        if isinstance(p, str):
            why.append(f"{o.offer_id}: {p}")
        else:
            payable.append(p)
    if not payable:
        raise PaymentRefused(f"refused: no x402 offer can be paid: {'; '.join(why)}", rule="x402",
                             offers=challenge.offers)
    return payable


def payable_offers(payer: Payer, challenge: PaymentChallenge, choices: PaymentOffers,
                   rate: float | None) -> tuple[PaymentOffers, tuple[str, ...]]:
    """What `pipeline.decide` decides among for x402: the payable offers priced in msat, and their methods."""
    payable = _payable(payer, challenge, choices, rate)
    methods = tuple(dict.fromkeys(m for p in payable for m in p.offer.payment_methods))
    return msat_offers(choices, payable), methods


def _priced(payer: Payer, challenge: PaymentChallenge, decision: Decision) -> Priced:
    """The decided offer's valuation (the same one the decision saw: same offer, same rate)."""
    one = dataclasses.replace(challenge.offers, offers=(decision.offer,))
    return _payable(payer, challenge, one, decision.usd_per_btc)[0]


def _reserve(payer: Payer, decision: Decision, chosen: Priced, nonce: bytes, url: str, host: str,
             response: httpx.Response, rid: str, met_402_at: datetime | None) -> Receipt:
    """The pending row, written before anything is signed; budgets are re-checked in its transaction.

    No challenge key: an x402 payment buys one request, so two requests meeting the same 402 each
    pay (their nonces differ), while one authorization is never recorded twice."""
    req = chosen.requirement
    intent = Intent(
        host=host, url=url, protocol=x402.PROTOCOL, method=req.payment_method, amount_msat=chosen.msat,
        payment_hash=nonce.hex(), offer_id=chosen.offer.offer_id, offer_title=chosen.offer.title,
        offer_amount=req.amount, offer_currency=req.currency, wallet=payer.x402_signer.name, not_before=met_402_at,
        wallet_id=_signer_identity(payer.x402_signer),
    )
    rate = decision.usd_per_btc
    try:
        receipt = payer.ledger.reserve(intent, payer.policy.limits(host, rate, decision.offers), usd_per_btc=rate)
    except PaymentRefused as exc:
        exc.offers, exc.response = decision.offers, response
        raise refused(payer, url, rid, exc) from None
    emit(payer.on_event, Event("reserved", url, rid, {"receipt": receipt}),
         f"ledger #{receipt.id} pending for {chosen.price} ≈ {fmt_msat(receipt.amount_msat, rate)}")
    return receipt


def _signer_identity(signer: Any) -> str | None:
    """The signer's public address names it (x402 transfers are gasless for the payer: no fee is held)."""
    address = getattr(signer, "address", None)
    return f"x402:{str(address).lower()}" if address else None


def _outcome(payer: Payer, resp: httpx.Response, receipt: Receipt, chosen: Priced, url: str,
             rid: str, broken: Exception | None = None) -> httpx.Response:
    """Settle, fail or keep pending the row from what the service answered to the payment; a 5xx or
    a broken body after the payment went out raises PaidRequestFailed with the receipt."""
    ledger, hook = payer.ledger, payer.on_event
    try:
        proof = x402.decode_payment_response(resp.headers)
    except ChallengeError:
        proof = None
    if resp.status_code == 402 and proof is not None and proof.success and broken is None:
        ledger.settle(receipt.id, preimage="", fee_msat=0)
        done = ledger.note(receipt.id, f"x402 transaction {proof.transaction} settled, but the service still answers 402")
        emit(hook, Event("paid", url, rid, {"receipt": done}), f"paid {chosen.price} but still 402", logging.WARNING)
        raise PaymentNotHonored(
            f"paid {chosen.price} (ledger #{done.id}, transaction {proof.transaction}) but {host_of(url)} still answers "
            "402; keep the receipt and contact the service", receipt=done, response=resp,
        )
    if resp.status_code == 402 and broken is None:
        reason = (proof.error_reason or proof.error_message) if proof is not None else None
        if reason is None:
            try:
                again = x402.parse(resp.status_code, resp.headers, resp.content)
                reason = again.error if again is not None else None
            except ChallengeError:
                reason = None
        reason = (reason or "no reason given")[:200]
        done = ledger.fail(receipt.id, f"the service refused the x402 payment: {reason}")
        emit(hook, Event("payment_failed", url, rid, {"receipt": done, "error": reason}),
             f"{host_of(url)} refused the x402 payment ({reason}); nothing settled, not paying again", logging.WARNING)
        raise PaymentRejected(
            f"{host_of(url)} refused the signed x402 payment of {chosen.price} ({reason}); ledger #{receipt.id} is "
            "failed and nothing is paid again for this request", receipt=done, response=resp,
        )
    if proof is not None and not proof.success:
        why = (proof.error_reason or proof.error_message or "no reason given")[:200]
        done = ledger.fail(receipt.id, f"the service could not settle the x402 payment: {why}")
        emit(hook, Event("payment_failed", url, rid, {"receipt": done, "error": why}),
             f"x402 settlement failed ({why}) though the service answered {resp.status_code}", logging.WARNING)
    elif proof is not None or resp.status_code < 400:
        ledger.settle(receipt.id, preimage="", fee_msat=0)
        note = (f"x402 transaction {proof.transaction} on {proof.network or chosen.requirement.network}"
                if proof is not None and proof.transaction else "served without an x402 receipt header")
        done = ledger.note(receipt.id, note)
        emit(hook, Event("paid", url, rid, {"receipt": done}),
             f"paid {chosen.price} ≈ {fmt_msat(done.amount_msat, payer.rate())}, {note}, ledger #{done.id}")
    else:
        done = ledger.note(receipt.id, f"outcome unknown: HTTP {resp.status_code} and no x402 receipt")
        emit(hook, Event("payment_failed", url, rid, {"receipt": done, "error": f"HTTP {resp.status_code}"}),
             f"HTTP {resp.status_code} with no x402 receipt: ledger #{done.id} stays pending", logging.WARNING)
    if done.status is not Status.FAILED and (broken is not None or resp.status_code >= 500):
        what = (f"the service's answer broke off ({type(broken).__name__})" if broken is not None
                else f"the service answered HTTP {resp.status_code} to the paid request (its answer is in .response)")
        kind = PaidRequestFailed if done.status is Status.SETTLED else PaymentSentUnanswered
        paid = (f"paid {chosen.price}, ledger #{done.id}" if done.status is Status.SETTLED else
                f"sent a signed x402 payment of {chosen.price}, ledger #{done.id} (pending: the service did not say "
                "whether it settled it)")
        emit(hook, Event("payment_failed", url, rid, {"receipt": done, "error": what}), f"{paid}; {what}",
             logging.WARNING)
        raise kind(f"{paid}; {what}; the receipt is kept", receipt=done, response=resp) from broken
    if broken is not None:
        raise broken
    resp.extensions[RECEIPT_EXTENSION] = done
    emit(hook, Event("served", url, rid, {"status": resp.status_code, "receipt": done}),
         f"served with HTTP {resp.status_code} after x402 payment #{done.id}")
    return resp
