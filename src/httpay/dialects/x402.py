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

from httpay.core.dialect import Credential, Invoiced, Obtaining, Payable, Proof, Settlement, SigningIn, ToSign
from httpay.core.effects import Effect, ReadBody, Send, SignMessage
from httpay.core.events import Refused, Retried
from httpay.core.model import Challenge, Money, Offer, Quote
from httpay.errors import ChallengeError, InvoiceError, PaymentIdConflict, PaymentRefused, Permit2AllowanceRequired
from httpay.lightning import decode_invoice
from httpay.policy import Policy
from httpay.protocols import x402
from httpay.protocols.evm import AUTHORIZATION_TYPES, MAX_TIMEOUT_S
from httpay.protocols.x402 import X402Challenge, X402Requirement, chain_id
from httpay.safe import clean, digits

DEFAULT_TIMEOUT_S = 300       # validBefore when the server gives no maxTimeoutSeconds (the x402 servers' default)
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}\Z")


# upto (x402 schemes/upto): a Permit2 PermitWitnessTransferFrom for a ceiling, spent through x402's proxy.
PERMIT2_ADDRESS = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
UPTO_SPENDER = "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002"  # x402UptoPermit2Proxy
UPTO_TYPES: dict[str, list[dict[str, str]]] = {
    "PermitWitnessTransferFrom": [
        {"name": "permitted", "type": "TokenPermissions"}, {"name": "spender", "type": "address"},
        {"name": "nonce", "type": "uint256"}, {"name": "deadline", "type": "uint256"},
        {"name": "witness", "type": "Witness"},
    ],
    "TokenPermissions": [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint256"}],
    "Witness": [{"name": "to", "type": "address"}, {"name": "facilitator", "type": "address"},
                {"name": "validAfter", "type": "uint256"}],
}
SCHEMES = ("exact", "upto")


class X402Signer(Protocol):
    """What paying x402 needs from a signer (`httpay.signers.EvmSigner` is one)."""

    @property
    def address(self) -> str: ...

    @property
    def name(self) -> str: ...

    def pays_on(self, network: str) -> bool: ...

    def sign_typed_data(self, domain: Mapping[str, Any], types: Mapping[str, Sequence[Mapping[str, str]]],
                        primary_type: str, message: Mapping[str, Any]) -> bytes: ...

    def sign_message(self, message: str) -> bytes:
        """EIP-191 personal_sign of a text message (sign-in-with-x)."""
        ...


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
    return digits(v, 3)


def value(req: X402Requirement) -> tuple[Money, Valued | str]:
    """The requirement's exact price, and either what signing it needs or why it must not be paid.

    Decimals come from the known USDC deployments only: a server must not be able to understate a
    price by claiming more decimals (18 for a 6-decimal token makes $1,000 look like a nanodollar),
    so a token httpay does not know is not paid, whatever it is called.
    """
    known = req.known_asset
    price = (Money(req.amount, known.symbol, decimals=known.decimals, asset=req.asset, usd_pegged=True)
             if known is not None else Money(req.amount, req.currency))  # (a known asset's price, refused or not)
    if req.scheme not in SCHEMES:
        return price, f"scheme {clean(req.scheme, 30)!r} is not one httpay signs (only 'exact' and 'upto')"
    cid = chain_id(req.network)
    if cid is None:
        return price, f"network {clean(req.network, 60)!r} is not an EVM network httpay knows"
    method = req.extra.get("assetTransferMethod")
    upto = req.scheme == "upto"
    if method not in ((None, "permit2") if upto else (None, "eip3009")):
        return price, (f"asset transfer method {str(method)[:20]!r} is not supported (only "
                       f"{'Permit2 for upto' if upto else 'EIP-3009'})")
    facilitator = req.extra.get("facilitatorAddress")
    if upto and not (isinstance(facilitator, str) and _ADDRESS.match(facilitator) and int(facilitator, 16)):
        return price, "an upto requirement must name its facilitator (extra.facilitatorAddress, a 20-byte address)"
    if not _ADDRESS.match(req.pay_to) or not _ADDRESS.match(req.asset):
        return price, "payTo and asset must be 20-byte hex addresses"
    if int(req.pay_to, 16) == 0:
        return price, "payTo is the zero address"
    if known is None:
        return price, (f"asset {clean(req.asset, 42)} on {clean(req.network, 60)} is not a USDC deployment httpay "
                       "knows, so its decimals (and the price's worth) cannot be told; not paying it")
    claimed = _int_extra(req.extra, "decimals")
    if claimed is not None and claimed != known.decimals:
        return price, f"the service says {known.symbol} has {claimed} decimals, but it has {known.decimals}"
    name, version = req.extra.get("name"), req.extra.get("version")
    name = name if isinstance(name, str) and name else known.eip712_name
    version = version if isinstance(version, str) and version else known.eip712_version
    if upto:  # the Permit2 domain is fixed: the token's own EIP-712 name and version are not signed
        return price, Valued(req, cid, known.decimals, "Permit2", "")
    return price, Valued(req, cid, known.decimals, name, version)


@dataclass(frozen=True)
class LightningExact:
    """An x402 `exact` requirement on Lightning (the lnbtc proposal), read and checked for paying."""

    requirement: X402Requirement
    network: str                 # httpay's name of its Lightning network ("bitcoin", "testnet")
    bound: tuple[str, ...]       # the header names its request hash binds


def lightning_exact(req: X402Requirement) -> tuple[Money, LightningExact | str]:
    """The price in msat of an lnbtc requirement, and what paying it needs or why it must not be paid."""
    price, extra = Money.msat(req.amount), req.extra
    net = x402.LNBTC_NETWORKS.get(req.network)
    params = extra.get("requestBindingParams")
    bound = params.get("headers") if isinstance(params, Mapping) else None
    problem = (
        f"Lightning network {clean(req.network, 60)!r} is not mainnet or testnet" if net is None else
        "only the exact scheme is paid on Lightning" if req.scheme != "exact" else
        "its asset must be BTC" if req.asset != "BTC" else
        "its amount must be a positive number of msat" if req.amount <= 0 else
        "it needs a positive maxTimeoutSeconds" if not req.max_timeout_seconds else
        "its payTo must be a node key (66 lowercase hex)" if not re.fullmatch(r"0[23][0-9a-f]{64}", req.pay_to) else
        "its transfer method must be bolt11" if extra.get("assetTransferMethod") not in (None, "bolt11") else
        "its payment flow must be upfront" if extra.get("paymentFlow") != "upfront" else
        "it carries no invoice" if not isinstance(extra.get("invoice"), str) or not extra["invoice"] else
        "its requestHash is not 64 lowercase hex" if not isinstance(extra.get("requestHash"), str)
        or not re.fullmatch(r"[0-9a-f]{64}", extra["requestHash"]) else
        "its request binding profile is not http:1" if extra.get("requestBindingProfile") != "http:1" else
        "its requestBindingParams must be exactly {headers: [...]}" if not isinstance(params, Mapping)
        or set(params) != {"headers"} or not isinstance(bound, list) else
        "its bound headers must be sorted lowercase names, without payment-signature"
        if not all(isinstance(h, str) and x402.HEADER_NAME.match(h) for h in bound)
        or bound != sorted(set(bound)) or "payment-signature" in bound else None
    )
    if problem is not None:
        return price, problem
    assert net is not None and isinstance(bound, list)
    return price, LightningExact(req, net, tuple(bound))


def _rail(network: str) -> str:
    """What pays on `network`: a Lightning wallet (`lnbtc:`), an EVM signer (`eip155:` or a v1 name of
    an EVM chain, "base"), else the network's own namespace or name ("solana"), which nothing here
    pays: never called an EVM network."""
    if network.startswith("lnbtc:"):
        return "lightning"
    if network.startswith("eip155:") or x402.chain_id(network) is not None:
        return "evm"
    return clean(network.partition(":")[0], 40) or "other"


def to_challenge(ch: X402Challenge, url: str) -> Challenge:
    offers: list[Offer] = []
    seen: set[str] = set()
    for i, r in enumerate(ch.accepts):
        oid = r.offer_id if r.offer_id not in seen else f"{r.offer_id}_{i}"
        seen.add(oid)
        desc = r.description or ch.description or ""
        lightning = r.network.startswith("lnbtc:")
        price, valued = lightning_exact(r) if lightning else value(r)
        offers.append(Offer(
            offer_id=oid, title=desc or f"{clean(r.scheme, 40)} payment on {clean(r.network, 100)}", description=desc,
            price=price,
            payment_methods=(r.payment_method,), pay_method=r.payment_method, dialect=x402.PROTOCOL,
            rail=_rail(r.network), network=r.network, pay_to=r.pay_to or None, asset=None if lightning else r.asset,
            unpayable=valued if isinstance(valued, str) else None,
            payload=r if isinstance(valued, str) else valued,
            proposal=x402.LNBTC_PROPOSAL if lightning else None,
        ))
    key = hashlib.sha256(f"x402|{url}|{[o.offer_id for o in offers]}".encode()).hexdigest()[:32]
    return Challenge(x402.PROTOCOL, tuple(offers), key, url=url, version=str(ch.version), reuse="request", raw=ch,
                     identified=ch.payment_identifier() is not None)


def authorization(v: Valued, payer: str, *, nonce: bytes, now: int) -> dict[str, str]:
    """The EIP-3009 authorization for the chosen requirement only: its payTo, amount and timeout."""
    if len(nonce) != 32:
        raise ValueError("an EIP-3009 nonce is 32 bytes")
    timeout = v.requirement.max_timeout_seconds or DEFAULT_TIMEOUT_S
    return {
        "from": payer, "to": v.requirement.pay_to, "value": str(v.requirement.amount),
        "validAfter": "0", "validBefore": str(now + min(timeout, MAX_TIMEOUT_S)), "nonce": "0x" + nonce.hex(),
    }


def permit2_authorization(v: Valued, payer: str, *, nonce: int, now: int) -> dict[str, Any]:
    """The upto Permit2 authorization for the chosen requirement: at most its amount (the ceiling),
    to its payTo only, through x402's upto proxy and only by the facilitator it names."""
    if not 0 <= nonce < 2**256:
        raise ValueError("a Permit2 nonce is a uint256")
    req = v.requirement
    timeout = req.max_timeout_seconds or DEFAULT_TIMEOUT_S
    return {
        "from": payer, "permitted": {"token": req.asset, "amount": str(req.amount)}, "spender": UPTO_SPENDER,
        "nonce": str(nonce), "deadline": str(now + min(timeout, MAX_TIMEOUT_S)),
        "witness": {"to": req.pay_to, "facilitator": str(req.extra["facilitatorAddress"]), "validAfter": "0"},
    }


def permit2_typed_data(v: Valued, auth: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list[dict[str, str]]],
                                                                      str, dict[str, Any]]:
    """(domain, types, primary type, message) of the PermitWitnessTransferFrom the signer signs."""
    domain = {"name": "Permit2", "chainId": v.chain_id, "verifyingContract": PERMIT2_ADDRESS}
    witness = auth["witness"]
    message = {
        "permitted": {"token": auth["permitted"]["token"], "amount": int(auth["permitted"]["amount"])},
        "spender": auth["spender"], "nonce": int(auth["nonce"]), "deadline": int(auth["deadline"]),
        "witness": {"to": witness["to"], "facilitator": witness["facilitator"], "validAfter": int(witness["validAfter"])},
    }
    return domain, UPTO_TYPES, "PermitWitnessTransferFrom", message


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
                    signature: bytes, payment_id: str | None = None) -> dict[str, Any]:
    """The payload the server reads: v2 echoes the accepted requirement (and the extensions, with the
    call's payment id when the server declared payment-identifier), v1 names scheme and network."""
    inner = {"signature": "0x" + signature.hex(),
             "permit2Authorization" if req.scheme == "upto" else "authorization": dict(auth)}
    if ch.version == 1:
        return {"x402Version": 1, "scheme": req.scheme, "network": req.network, "payload": inner}
    out: dict[str, Any] = {"x402Version": 2, "payload": inner, "accepted": dict(req.raw)}
    for key in ("resource", "extensions"):
        if ch.raw.get(key) is not None:
            out[key] = ch.raw[key]
    if payment_id is not None:
        out["extensions"] = x402.with_payment_id(ch.extensions, payment_id)
    return out


def invoice_for(ln: LightningExact, request: httpx.Request) -> Invoiced:
    """The requirement's invoice, checked as the lnbtc draft has a client check it before paying: bound
    to this request (its description hash is the request hash httpay computes itself), signed by payTo,
    on the requirement's network, for exactly its amount, its expiry the requirement's timeout."""
    req = ln.requirement
    invoice = decode_invoice(str(req.extra["invoice"]))
    try:
        expected = x402.lnbtc_request_hash(request.method, str(request.url), request.content, ln.bound,
                                           request.headers)
    except (httpx.RequestNotRead, ValueError) as exc:
        raise InvoiceError(f"the request cannot be bound to the invoice ({type(exc).__name__}); not paying it",
                           check="request_binding") from None
    checks = (
        (invoice.description_hash == expected == req.extra["requestHash"], "request_binding",
         "the invoice is not bound to this request (its description hash is not this request's hash)"),
        (invoice.payee == req.pay_to, "payee", "the invoice is not signed by the requirement's payTo"),
        (invoice.network == ln.network, "network", f"the invoice is not on {ln.network}"),
        (invoice.amount_msat == req.amount, "amount_above_offer", "the invoice's amount is not the requirement's"),
        (invoice.expiry_s == req.max_timeout_seconds, "expiry", "the invoice's expiry is not maxTimeoutSeconds"),
    )
    for ok, check, why in checks:
        if not ok:
            raise InvoiceError(f"x402 Lightning exact: {why}; not paying it", check=check)
    return Invoiced(invoice)


_ANY_CALL_KEY = "pay_" + "0" * 32  # a call key of the payment id's form: a preview checks the declaration alone


def payment_id_for(ch: X402Challenge, call_key: str | None, host: str) -> str | None:
    """The id to send under the server's payment-identifier (the ledger's call key), or None when it
    declared none. PaymentRefused, before anything is signed, when it requires one httpay cannot send."""
    declared = ch.payment_identifier()
    if declared is None:
        return None
    if declared.problem is not None:
        raise PaymentRefused(f"refused: {clean(host, 80)} declares the x402 payment-identifier extension in a form "
                             f"httpay cannot follow ({declared.problem}); not signing a payment it may refuse",
                             rule="x402")
    if call_key is None:
        if declared.required:  # (a call the ledger keys always has one: this is only a flow without a call)
            raise PaymentRefused(f"refused: {clean(host, 80)} requires an x402 payment id and this request "
                                 "has no call key to send as one", rule="x402")
        return None
    if x402.PAYMENT_ID.match(call_key):
        return call_key
    # The caller's own Idempotency-Key, not of the id's form (16-128 of A-Z a-z 0-9 _ -): an id made
    # from it, the same for every send of the key, so the service still tells the operation's resends
    return "pay_" + hashlib.sha256(call_key.encode()).hexdigest()[:40]


def sent_payload(response: httpx.Response) -> Mapping[str, Any] | None:
    """The payment payload the request that got `response` carried (None: none, or unreadable)."""
    try:
        headers = response.request.headers
    except RuntimeError:
        return None
    value = headers.get(x402.PAYMENT_SIGNATURE) or headers.get(x402.X_PAYMENT)
    if not value:
        return None
    try:
        payload = x402.decode_payment_header(value)
    except ChallengeError:
        return None
    return payload if isinstance(payload, Mapping) else None


def _sent_payment_id(payload: Mapping[str, Any] | None) -> str | None:
    ext = payload.get("extensions") if payload is not None else None
    pid = ext.get(x402.PAYMENT_IDENTIFIER) if isinstance(ext, Mapping) else None
    info = pid.get("info") if isinstance(pid, Mapping) else None
    found = info.get("id") if isinstance(info, Mapping) else None
    return found if isinstance(found, str) else None


def _scheme_of(payload: Mapping[str, Any] | None) -> str | None:
    accepted = payload.get("accepted") if payload is not None else None
    scheme = accepted.get("scheme") if isinstance(accepted, Mapping) else (payload or {}).get("scheme")
    return scheme if isinstance(scheme, str) else None


def _needs_allowance(reason: str | None) -> bool:
    return reason is not None and "permit2_allowance_required" in reason.lower()


def _allowance(host: str, payload: Mapping[str, Any] | None) -> Any:
    """The Permit2AllowanceRequired of a 412 (or its error code), once the flow has failed its row."""
    accepted = payload.get("accepted") if payload is not None else None
    accepted = accepted if isinstance(accepted, Mapping) else {}
    token = accepted.get("asset") if isinstance(accepted.get("asset"), str) else None
    network = accepted.get("network") if isinstance(accepted.get("network"), str) else None
    inner = payload.get("payload") if payload is not None else None
    auth = inner.get("permit2Authorization") if isinstance(inner, Mapping) else None
    owner = auth.get("from") if isinstance(auth, Mapping) and isinstance(auth.get("from"), str) else "your address"

    def build(receipt: Any, response: Any) -> Exception:
        return Permit2AllowanceRequired(
            f"{clean(host, 80)} needs a Permit2 allowance before it can take this upto payment "
            "(412 PERMIT2_ALLOWANCE_REQUIRED): approve the Permit2 contract "
            f"{PERMIT2_ADDRESS} to spend token {clean(token or '(unknown)', 60)} on {clean(network or '?', 60)} "
            f"from {clean(owner, 60)} (a one-time on-chain approve transaction, in your wallet), then retry; "
            f"nothing was spent (ledger #{receipt.id} is failed)", receipt=receipt, response=response,
            token=token, network=network)
    return build


def _conflict(host: str, payment_id: str | None) -> Any:
    """The PaymentIdConflict of a 409, once the flow has failed its row."""
    shown = clean(payment_id or "(none)", 140)

    def build(receipt: Any, response: Any) -> Exception:
        return PaymentIdConflict(
            f"{clean(host, 80)} answered 409 Conflict: it already holds payment id {shown} for another payment; "
            f"this one was not taken (ledger #{receipt.id} is failed) and nothing is paid again. If the earlier "
            "payment under that id was served, its answer is with the service; sending the request again starts "
            "a new call with a new id", receipt=receipt, response=response)
    return build


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

    def check_ahead(self, challenge: Challenge, quote: Quote, request: httpx.Request | None) -> Invoiced | None:
        """Lightning `exact` (opted in to): its invoice, once it is bound to this very request (None
        without one to bind to); an EVM payment: a payment-identifier the service declares in a form
        httpay cannot follow is refused before anything is signed."""
        if isinstance(quote.offer.payload, LightningExact):
            return invoice_for(quote.offer.payload, request) if request is not None else None
        host = request.url.host if request is not None else httpx.URL(challenge.url).host
        payment_id_for(challenge.raw, _ANY_CALL_KEY, host)  # (the flow always has a call's key here)
        return None

    def obtain(self, ctx: Obtaining) -> Generator[Effect, Any, Payable]:
        """The typed data authorizing the chosen requirement, for the signer's address (for Lightning
        `exact`, opted in to: its invoice, once it is bound to this very request)."""
        if isinstance(ctx.quote.offer.payload, LightningExact):
            return invoice_for(ctx.quote.offer.payload, ctx.request)
        v: Valued = ctx.quote.offer.payload
        assert ctx.payer_address is not None and ctx.quote.price_msat is not None
        payment_id = payment_id_for(ctx.challenge.raw, ctx.call_key, ctx.request.url.host)
        nonce = secrets.token_bytes(32)
        auth: dict[str, Any]
        if v.requirement.scheme == "upto":  # the ceiling is signed, quoted, reserved and kept counted
            auth = permit2_authorization(v, ctx.payer_address, nonce=int.from_bytes(nonce, "big"), now=int(time.time()))
            domain, types, primary, message = permit2_typed_data(v, auth)
        else:
            auth = authorization(v, ctx.payer_address, nonce=nonce, now=int(time.time()))
            domain, types, primary, message = typed_data(v, auth)
        return ToSign(domain, types, primary, message, amount_msat=ctx.quote.price_msat, reference=nonce.hex(),
                      price=f"{ctx.quote.offer.price} on {v.requirement.network}", state=(v, auth, payment_id))
        yield  # nothing to fetch

    def sign_in(self, ctx: SigningIn) -> Generator[Effect, Any, httpx.Response | None]:
        """Sign the server's CAIP-122 (SIWE) message with the EVM signer and send the request again with
        SIGN-IN-WITH-X, so a payer who already paid is served without paying again. Never for another
        domain or origin than the request's; None when not offered, not signed, or still asked to pay."""
        offer = ctx.challenge.raw.sign_in() if isinstance(ctx.challenge.raw, X402Challenge) else None
        if offer is None:
            return None
        problem = offer.problem(str(ctx.request.url), time.time())
        if problem is not None:
            ctx.report(Refused, f"not signing in: {problem}", rule="sign_in", reason=problem)
            return None
        chain = offer.evm_chain()
        assert chain is not None
        try:
            signature: bytes = yield SignMessage(offer.message(ctx.payer_address, chain))
        except Exception as exc:  # noqa: BLE001 - signing in is optional: paying goes on as usual
            ctx.report(Refused, f"not signing in: the signer did not sign ({type(exc).__name__})", rule="sign_in",
                       reason=type(exc).__name__)
            return None
        request = ctx.request
        request.headers[x402.SIGN_IN_HEADER] = offer.header(ctx.payer_address, chain, signature)
        ctx.report(Retried, f"signing in as {ctx.payer_address} ({chain}) before paying", attempt=1)
        try:
            answer: httpx.Response = yield Send(request)
            if answer.status_code == 402:
                yield ReadBody(answer)
        finally:
            del request.headers[x402.SIGN_IN_HEADER]  # the paid request, if any, goes without it
        if answer.status_code == 402:
            ctx.report(Refused, "signed in, and the service still asks to be paid", rule="sign_in",
                       reason="still 402")
            return None
        return answer

    def present(self, challenge: Challenge, payable: Payable, proof: Proof) -> Credential:
        ch: X402Challenge = challenge.raw
        if isinstance(payable, Invoiced):  # Lightning exact: the preimage, the accepted requirement echoed
            req = next(r for r in ch.accepts if r.extra.get("invoice") == payable.invoice.bolt11)
            body: dict[str, Any] = {"x402Version": 2, "accepted": dict(req.raw), "payload": {"preimage": proof.preimage}}
            body.update({k: ch.raw[k] for k in ("resource", "extensions") if ch.raw.get(k) is not None})
            name, header = x402.encode_payment_header(body, 2)
            return Credential({name: header})
        assert isinstance(payable, ToSign) and proof.signature is not None
        v, auth, payment_id = payable.state
        name, header = x402.encode_payment_header(payment_payload(ch, v.requirement, auth, proof.signature, payment_id),
                                                  ch.version)
        return Credential({name: header})

    def advertise(self, policy: Policy, can_sign: bool) -> Mapping[str, str]:
        return {}

    def settlement(self, response: httpx.Response) -> Settlement | None:
        """The service's receipt. The payload the request carried (httpay's own, so decoding it tells
        nothing new on a plain settlement) is read back only where an answer needs it."""
        read: list[Mapping[str, Any] | None] = []

        def sent() -> Mapping[str, Any] | None:
            if not read:
                read.append(sent_payload(response))
            return read[0]

        try:
            host = response.request.url.host
        except RuntimeError:
            host = "the service"
        if response.status_code == 409:  # payment-identifier: this id is held for another payload
            return Settlement(False, reason="409 Conflict: the payment id is held for another payment",
                              error=_conflict(host, _sent_payment_id(sent())))
        try:
            proof = x402.decode_payment_response(response.headers)
        except ChallengeError:
            proof = None
        if response.status_code == 412:  # upto: the payer has not approved Permit2 for the token
            return Settlement(False, reason="412 PERMIT2_ALLOWANCE_REQUIRED", error=_allowance(host, sent()))
        if proof is not None:
            reason = proof.error_reason or proof.error_message
            # only upto may settle less than was signed (noted; the ceiling stays counted); an exact payment
            # is its full amount, whatever is said
            amount = proof.amount if proof.amount is not None and _scheme_of(sent()) == "upto" else None
            return Settlement(proof.success, proof.transaction, proof.network, reason, amount=amount,
                              error=_allowance(host, sent()) if _needs_allowance(reason) else None)
        if response.status_code == 402:
            try:
                again = x402.parse(response.status_code, response.headers, response.content)
            except ChallengeError:
                again = None
            if again is not None and again.error:
                return Settlement(None, reason=again.error,
                                  error=_allowance(host, sent()) if _needs_allowance(again.error) else None)
        return None
