"""MPP, the HTTP `Payment` scheme, as a dialect: every `Payment` challenge of a 402 is one offer.

A 402 may carry several `Payment` challenges (one per method and intent, beside L402, LSAT and
x402): they become the offers of one neutral challenge, so the one `quote()` picks among them
and, across dialects, against the others. httpay pays two methods:

- `lightning` charge: the request's invoice must be exactly what the charge states (amount,
  payment hash, network, neither expired); any httpay Lightning wallet pays it; the credential
  carries the preimage. Policy method: "lightning".
- `evm` charge with the `authorization` credential type: an EIP-3009 transfer signed by httpay's
  EVM signer, its nonce bound to the challenge (keccak256(id || realm), the spec's formula), settled
  by the service (no chain access here). Policy method: "mpp:evm:charge:eip155:<chain id>"
  (`"mpp"` allows every MPP method, `"mpp:evm"` every EVM chain).

Every other method (tempo, stripe, card, ...) is shown with its price and refused by name. A
proof is single-use, so a payment buys one request. The credential echoes the challenge verbatim,
in `Authorization` or where the server asked (`Payment-Authorization`); `Payment-Receipt` and the
scheme's problem details are read into the ledger row and the errors. Facts: PROTOCOLS-MPP.md.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from httpay.core.dialect import Credential, Invoiced, Obtaining, Payable, Proof, Settlement, ToSign
from httpay.core.effects import Effect
from httpay.core.model import Challenge, Money, Offer, Quote
from httpay.core.quote import method_allowed
from httpay.errors import ChallengeError, InvoiceError, PaymentRefused
from httpay.extras import require
from httpay.lightning import Invoice, decode_invoice
from httpay.policy import Policy
from httpay.protocols import mpp
from httpay.protocols.evm import AUTHORIZATION_TYPES, KNOWN_ASSETS, MAX_TIMEOUT_S
from httpay.protocols.mpp import LightningCharge, MppChallenge, check_charge_invoice
from httpay.safe import clean, digits

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}\Z")
PROBLEMS: dict[str, str] = {  # the scheme's problem types, in words a person acts on
    "payment-required": "the service asks for a payment",
    "payment-insufficient": "the service says the payment was less than it asks",
    "payment-expired": "the challenge expired before the payment reached the service",
    "verification-failed": "the service could not verify the payment",
    "malformed-credential": "the service could not read the credential",
    "invalid-challenge": "the service does not know the challenge (expired, or already used)",
    "method-unsupported": "the service does not take this payment method",
    "lightning/malformed-credential": "the service could not read the Lightning credential",
    "lightning/unknown-challenge": "the service does not know the challenge (expired, or already used)",
    "lightning/invalid-preimage": "the service says the preimage does not pay its invoice",
    "lightning/expired-invoice": "the invoice expired before the service saw the payment",
}


@dataclass(frozen=True)
class EvmCharge:
    """What an `evm`/`charge` request asks, checked: the amount in the token's base units, the token
    (a known USD stablecoin), the recipient and the chain."""

    amount: int
    token: str
    recipient: str
    chain_id: int
    decimals: int
    symbol: str
    eip712_name: str
    eip712_version: str

    @property
    def network(self) -> str:
        return f"eip155:{self.chain_id}"


def _evm_charge(mc: MppChallenge) -> tuple[Money, EvmCharge | str]:
    """The charge's exact price and what signing it needs, or why it must not be paid."""
    req = mc.request
    amount, token, recipient = req.get("amount"), req.get("currency"), req.get("recipient")
    raw_amount = _base_units(amount)
    unknown = Money(raw_amount, clean(str(token), 42) if token else "?")
    found = req.get("methodDetails")
    details: Mapping[str, Any] = found if isinstance(found, dict) else {}
    if not raw_amount and amount != "0":
        return unknown, "the evm charge's amount is not a whole number of base units"
    if not isinstance(token, str) or not _ADDRESS.match(token) or not isinstance(recipient, str) \
            or not _ADDRESS.match(recipient):
        return unknown, "the evm charge's currency and recipient must be 20-byte hex addresses"
    if int(recipient, 16) == 0:
        return unknown, "the evm charge's recipient is the zero address"
    cid = details.get("chainId")
    if isinstance(cid, bool) or not isinstance(cid, int) or not 0 < cid < 2**63:
        return unknown, "the evm charge names no chainId"
    known = KNOWN_ASSETS.get((cid, token.lower()))
    price = (Money(raw_amount, known.symbol, decimals=known.decimals, asset=token, usd_pegged=True)
             if known is not None else unknown)  # (a known token's price, refused or not)
    if details.get("splits"):
        return price, "the evm charge splits the payment, which needs a Permit2 credential httpay does not sign"
    types = details.get("credentialTypes")
    if not isinstance(types, list) or "authorization" not in types:
        offered = ", ".join(clean(str(t), 20) for t in types) if isinstance(types, list) else "transaction, hash"
        return price, (f"the evm charge takes {offered} credentials; httpay signs only 'authorization' (EIP-3009), "
                       "which needs no gas and no chain access")
    if known is None:
        return unknown, (f"token {token} on eip155:{cid} is not a known USD stablecoin; not paying an amount whose "
                         "worth cannot be told")
    claimed = details.get("decimals")
    if claimed is not None and claimed != known.decimals:
        return price, f"the service says the token has {clean(str(claimed), 8)} decimals, but it has {known.decimals}"
    return price, EvmCharge(raw_amount, token, recipient, cid, known.decimals, known.symbol, known.eip712_name,
                            known.eip712_version)


def _base_units(amount: Any) -> int:
    """A request's `amount`: a whole number of base units written as digits (0 for anything else)."""
    return digits(amount, 30) or 0


def _other_price(mc: MppChallenge) -> Money:
    amount, currency = mc.request.get("amount"), mc.request.get("currency")
    return Money(_base_units(amount), clean(str(currency), 42) if isinstance(currency, str) and currency else "?")


def _offer(mc: MppChallenge, offer_id: str) -> Offer:
    """One `Payment` challenge as an offer: priced, and payable or refused by name."""
    said = mc.request.get("description")
    title = clean(mc.description or (said if isinstance(said, str) else "") or f"{mc.kind} from {mc.realm}", 200)
    common: dict[str, Any] = {"offer_id": offer_id, "title": title, "description": title, "dialect": mpp.PROTOCOL}
    if mc.method == "lightning" and mc.intent == "charge":
        try:
            charge = LightningCharge.from_challenge(mc)
            invoice = decode_invoice(charge.invoice)
        except (ChallengeError, InvoiceError) as exc:  # refused by its own words, still a lightning charge
            return Offer(price=_other_price(mc), payment_methods=("lightning",), pay_method="lightning",
                         rail="lightning", unpayable=str(exc), payload=mc, **common)
        said_msat = charge.amount_sat * 1000
        mismatch = None if invoice.amount_msat == said_msat else (
            f"its amount ({charge.amount_sat:,} sat) is not its invoice's "
            f"({'none' if invoice.amount_msat is None else f'{invoice.amount_msat / 1000:,g} sat'})")
        return Offer(price=Money.msat(said_msat), payment_methods=("lightning",), pay_method="lightning",
                     rail="lightning", network=charge.network, payload=_Lightning(mc, charge, invoice),
                     unpayable=mismatch, pay_to=invoice.payee, **common)
    if mc.method == "evm" and mc.intent == "charge":
        price, found = _evm_charge(mc)
        cid = mc.request.get("methodDetails", {}).get("chainId") if isinstance(mc.request.get("methodDetails"), dict) \
            else None
        method = f"mpp:evm:charge:eip155:{cid}" if isinstance(cid, int) and not isinstance(cid, bool) else "mpp:evm:charge"
        if isinstance(found, str):
            return Offer(price=price, payment_methods=(method,), pay_method=method, rail="evm",
                         unpayable=found, payload=mc, **common)
        return Offer(price=price, payment_methods=(method,), pay_method=method, rail="evm", network=found.network,
                     payload=_Evm(mc, found), pay_to=found.recipient, asset=found.token, **common)
    method = f"mpp:{mc.method}:{mc.intent}"
    why = (f"MPP {clean(mc.kind, 40)} is not a method httpay pays (it pays lightning/charge and evm/charge with "
           "EIP-3009 authorization)")
    price = _other_price(mc)
    if mc.kind == "lightning/session":  # its price is per request, drawn from a deposit: never one request's payment
        why = ("MPP lightning/session is paid from a deposit across requests, not per request: a program opens one "
               "with httpay.MppSession(client, url)")
        common["type"] = "session"
        price, common["title"] = _session_terms(mc, price, title)
        common["description"] = common["title"]
    return Offer(price=price, payment_methods=(method,), pay_method=method,
                 rail="lightning" if mc.method == "lightning" else "other", unpayable=why, payload=mc, **common)


def _session_terms(mc: MppChallenge, price: Money, title: str) -> tuple[Money, str]:
    """A lightning session's price in the unit every Lightning offer has (msat, shown in sat), and
    a title saying it is per request and what opening the session pays first: the deposit."""
    sat = digits(mc.request.get("amount"), 18) if str(mc.request.get("currency", "sat")).lower() == "sat" else None
    if sat is not None:
        price = Money.msat(sat * 1000)
    deposit = digits(mc.request.get("depositAmount"), 18)
    if deposit is None:
        try:
            deposit_invoice = decode_invoice(str(mc.request.get("depositInvoice") or ""))
            deposit = None if deposit_invoice.amount_msat is None else deposit_invoice.amount_msat // 1000
        except InvoiceError:
            deposit = None
    opens = f"a deposit of {deposit:,} sat" if deposit is not None else "a deposit it does not state"
    return price, f"{title} (a session: {price} per request, opened with {opens})"


@dataclass(frozen=True)
class _Lightning:
    challenge: MppChallenge
    charge: LightningCharge
    invoice: Invoice


@dataclass(frozen=True)
class _Evm:
    challenge: MppChallenge
    charge: EvmCharge


def to_challenge(found: mpp.MppChallenges, url: str) -> Challenge:
    offers: list[Offer] = []
    seen: set[str] = set()
    for mc in found:
        base = f"mpp_{mc.method}_{mc.intent}"
        oid = base if base not in seen else f"{base}_{len(seen)}"
        seen.add(oid)
        offers.append(_offer(mc, oid))
    key = hashlib.sha256(("mpp|" + "|".join(mc.id for mc in found)).encode()).hexdigest()[:32]
    return Challenge(mpp.PROTOCOL, tuple(offers), key, url=url, reuse="request", raw=found)


def challenge_hash(challenge_id: str, realm: str) -> bytes:
    """keccak256(abi.encodePacked(id, realm)): the EIP-3009 nonce binding a signature to one challenge."""
    require("x402")  # the signer that pays evm needs eth-account, which brings keccak
    from eth_utils.crypto import keccak

    digest: bytes = keccak(challenge_id.encode() + realm.encode())
    return digest


def body_digest_matches(digest: str, body: bytes) -> bool:
    """Does the request body have the `digest` the challenge binds (RFC 9530 `sha-256=:b64:`, or the
    SDKs' `sha-256=b64`)? Only sha-256 and sha-512 are known; another algorithm is a mismatch."""
    algo, _, value = digest.partition("=")
    value = value.strip().strip(":")
    functions = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
    fn = functions.get(algo.strip().lower())
    if fn is None:
        return False
    return base64.b64encode(fn(body).digest()).decode() == value


def describe_problem(problem: mpp.MppProblem) -> str:
    """The problem in words, with the service's own title (cleaned: server text) after it."""
    words = PROBLEMS.get(problem.kind, f"the service reports {clean(problem.kind, 60)}")
    told = clean(problem.detail or problem.title or "", 160)
    return f"{words} ({clean(problem.kind, 60)}{': ' + told if told else ''})"


class Mpp:
    """The MPP (`Payment` scheme) dialect: lightning charge and evm authorization charge."""

    name = mpp.PROTOCOL
    rank = 20

    def read(self, status: int, headers: Any, body: bytes | None, url: str) -> list[Challenge]:
        found = mpp.parse(status, headers, body)
        return [] if found is None else [to_challenge(found, url)]

    def check_ahead(self, challenge: Challenge, quote: Quote, request: httpx.Request | None) -> Invoiced | None:
        """A challenge past its `expires`, or binding another body (`digest`), is never paid; a lightning
        charge's invoice must be exactly the charge. That invoice, or None for an evm charge (signed later)."""
        chosen = quote.offer.payload
        mc: MppChallenge = chosen.challenge
        now = datetime.now(UTC)
        if mc.expired(now):
            raise InvoiceError(f"the MPP challenge expired at {mc.expires:%Y-%m-%d %H:%M:%S} UTC; not paying it",
                               check="expiry")
        if mc.digest is not None and request is not None and not body_digest_matches(mc.digest, _content(request)):
            raise PaymentRefused(
                "refused: the MPP challenge binds a request body other than this request's (its digest does not match); "
                "paying would buy nothing", rule="digest", offers=challenge.offers)
        if isinstance(chosen, _Lightning):
            check_charge_invoice(chosen.charge, chosen.invoice, expires=mc.expires, now=now)
            return Invoiced(chosen.invoice)
        return None

    def obtain(self, ctx: Obtaining) -> Generator[Effect, Any, Payable]:
        """The invoice (checked against the charge) or the EIP-3009 typed data for the chosen challenge."""
        invoiced = self.check_ahead(ctx.challenge, ctx.quote, ctx.request)
        if invoiced is not None:
            return invoiced
        chosen = ctx.quote.offer.payload
        mc: MppChallenge = chosen.challenge
        assert isinstance(chosen, _Evm) and ctx.payer_address is not None and ctx.quote.price_msat is not None
        charge = chosen.charge
        nonce = challenge_hash(mc.id, mc.realm)
        until = int(time.time()) + MAX_TIMEOUT_S
        if mc.expires is not None:
            until = min(until, int(mc.expires.timestamp()))
        auth = {"from": ctx.payer_address, "to": charge.recipient, "value": str(charge.amount), "validAfter": "0",
                "validBefore": str(until), "nonce": "0x" + nonce.hex()}
        domain = {"name": charge.eip712_name, "version": charge.eip712_version, "chainId": charge.chain_id,
                  "verifyingContract": charge.token}
        message = {"from": auth["from"], "to": auth["to"], "value": charge.amount, "validAfter": 0,
                   "validBefore": until, "nonce": nonce}
        return ToSign(domain, AUTHORIZATION_TYPES, "TransferWithAuthorization", message,
                      amount_msat=ctx.quote.price_msat, reference=nonce.hex(),
                      price=f"{ctx.quote.offer.price} on {charge.network}", state=(mc, charge, auth))
        yield  # nothing to fetch: the challenge carries everything

    def present(self, challenge: Challenge, payable: Payable, proof: Proof) -> Credential:
        if isinstance(payable, Invoiced):
            mc = _lightning_challenge(challenge, payable)
            return Credential({mc.credential_header: mc.credential(LightningCharge.payload(proof.preimage or ""))})
        assert isinstance(payable, ToSign) and proof.signature is not None
        mc, charge, auth = payable.state
        payload = {"type": "authorization", **auth, "signature": "0x" + proof.signature.hex()}
        source = f"did:pkh:eip155:{charge.chain_id}:{auth['from']}"
        return Credential({mc.credential_header: mc.credential(payload, source=source)})

    def settlement(self, response: httpx.Response) -> Settlement | None:
        """The `Payment-Receipt` of a 2xx, or the problem a refusal names."""
        if response.status_code < 300:
            try:
                receipt = mpp.read_receipt(response.headers)
            except ChallengeError:
                return None
            if receipt is None:
                return None
            return Settlement(receipt.success, transaction=clean(receipt.reference, 120), network=receipt.method,
                              reason=None if receipt.success else f"receipt status {clean(receipt.status, 40)}")
        try:
            problem = mpp.read_problem(response.content)
        except httpx.ResponseNotRead:
            return None
        if problem is None:
            return None
        return Settlement(None, reason=describe_problem(problem), problem=problem.kind)

    def advertise(self, policy: Policy, can_sign: bool) -> Mapping[str, str]:
        """`Accept-Payment`: the method/intent pairs this policy lets httpay pay, so a server can rank."""
        kinds = []
        if method_allowed(policy.methods, "lightning"):
            kinds.append("lightning/charge")
        if can_sign and any(m in ("mpp", "mpp:evm", "mpp:evm:charge") or m.startswith("mpp:evm:charge:")
                            for m in policy.methods):
            kinds.append("evm/charge")
        return {"Accept-Payment": ", ".join(kinds)} if kinds else {}


def _lightning_challenge(challenge: Challenge, payable: Invoiced) -> MppChallenge:
    for o in challenge.offers:
        if isinstance(o.payload, _Lightning) and o.payload.invoice.payment_hash == payable.invoice.payment_hash:
            return o.payload.challenge
    raise ChallengeError("the paid invoice belongs to no lightning charge of this challenge", field="invoice")


def _content(request: httpx.Request) -> bytes:
    try:
        return request.content
    except httpx.RequestNotRead:
        return b""
