"""The payment pipeline, written once for sync and async: challenge -> decision -> payment
request -> invoice check -> ledger -> wallet -> retry.

`pay_flow` is a generator: it does the pure steps itself and *yields* the I/O it needs
(`Send` an HTTP request, `Pay` an invoice, `Ask` an approver, `Sleep`, `Join`/`Leave` the
single-flight for a challenge). A sync driver and an async driver run it, so the two clients
cannot drift apart and the flow can be tested with scripted answers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from httpay import safe
from httpay.amounts import rate_ok
from httpay.challenge import (
    PaymentChallenge,
    check_token_binding,
    flight_key,
    read_challenge,
    scopes_for,
    token_scope,
)
from httpay.challenge import v02_key as challenge_key
from httpay.errors import (
    ChallengeError,
    ConfigError,
    HttpayError,
    InvoiceError,
    PaidRequestFailed,
    PaymentDeadlineExceeded,
    PaymentRefused,
    PaymentRequestError,
    WalletError,
)
from httpay.events import Event, EventHook, emit
from httpay.ledger import (
    ChallengeInFlight,
    DuplicatePayment,
    Intent,
    Ledger,
    Receipt,
    Status,
)
from httpay.lightning import Invoice, check_invoice, decode_invoice
from httpay.policy import Decision, Policy, fmt_msat
from httpay.protocols import l402_v02
from httpay.protocols.l402_v02 import Offer, PaymentOffers, PaymentRequest
from httpay.safe import get_logger
from httpay.wallets.base import Payment, PaymentStatus, Wallet, default_fee_limit_msat

log = get_logger("httpay")

RECEIPT_EXTENSION = "httpay_receipt"
DRY_RUN_EXTENSION = "httpay_dry_run"     # request extension: hand a 402 back untouched, pay nothing
OFFER_EXTENSION = "httpay_offer_id"      # request extension: pay only this offer (still within the policy)
MAX_PRICE_EXTENSION = "httpay_max_price_msat"  # request extension: pay at most this much for this request
TOKEN_EXTENSION = "httpay_l402_token"  # request extension: (scope, token) this flow put in Authorization
DEADLINE_EXTENSION = "httpay_payment_deadline"  # response extension: the Deadline the 402 it is on must be paid by
FORWARDED_EXTENSIONS = ("timeout", "trace")  # what a request the flow makes itself inherits from the caller's
DEFAULT_PAYMENT_DEADLINE_S = 60.0
MAX_WAIT_ROUNDS = 10  # a request waits for at most this many other payments of its challenge before refusing


class Deadline:
    """By when one paid request must reach the wallet (or signer): `seconds` after its 402 arrived.

    Time a person takes to approve does not count (`paused`); every other wait does, so a service
    that is silent or dribbles bytes cannot hold a payment open, nor get paid late.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def paused(self, since: float) -> None:
        """Give back the time since `since` (a `time.monotonic()` reading), spent waiting for a person."""
        self.at += max(0.0, time.monotonic() - since)

    def exceeded(self, stage: str) -> PaymentDeadlineExceeded:
        return PaymentDeadlineExceeded(
            f"not paid: the service took longer than payment_deadline={self.seconds:g} s from its 402 to the "
            f"payment (it was still at {stage}); nothing was paid. If this service is known to be slow, raise "
            "Client(payment_deadline=...) (seconds; None: no deadline)", deadline_s=self.seconds, stage=stage,
        )


def deadline_of(response: httpx.Response) -> Deadline | None:
    """The payment deadline the driver started when this 402 arrived (None: no deadline set)."""
    found = response.extensions.get(DEADLINE_EXTENSION)
    return found if isinstance(found, Deadline) else None


def within_deadline(payer: Payer, response: httpx.Response, url: str, rid: str, stage: str) -> None:
    """Raise PaymentDeadlineExceeded (before anything is reserved or paid) once the 402's deadline passed."""
    deadline = deadline_of(response)
    if deadline is None or deadline.remaining() > 0:
        return
    exc = deadline.exceeded(stage)
    emit(payer.on_event, Event("refused", url, rid, {"rule": "payment_deadline", "reason": str(exc)}),
         str(exc).removeprefix("not paid: "), logging.WARNING)
    raise exc


def follow_up(origin: httpx.Request, method: str, url: httpx.URL, **kwargs: Any) -> httpx.Request:
    """A request the flow makes itself, with the caller's timeouts (and trace hook) of `origin`, and
    its TLS server name when it goes to the same host."""
    extensions = {k: origin.extensions[k] for k in FORWARDED_EXTENSIONS if k in origin.extensions}
    if "sni_hostname" in origin.extensions and url.host == origin.url.host:
        extensions["sni_hostname"] = origin.extensions["sni_hostname"]
    return httpx.Request(method, url, extensions=extensions, **kwargs)


# -- effects: what the flow asks its driver to do ------------------------------------------------
@dataclass(frozen=True)
class Send:
    """Send `request`. With `deadline`: the whole exchange, body included, must end before it.
    With `payment_deadline_s`: the answer may be the 402 to pay, so if it is a 402 the driver starts a
    `Deadline` of that many seconds, reads the body within it and puts it in the response's extensions.
    With `stream`: an answer other than 402 goes back to the caller unread, as httpx hands it over
    (`client.stream(...)` streams, an endless event stream does not block). With `resend_if_dropped`:
    sent once more if the connection drops before any answer (a pooled keep-alive connection the
    server closed meanwhile), for a request that is safe to repeat."""

    request: httpx.Request
    deadline: Deadline | None = None
    payment_deadline_s: float | None = None
    stream: bool = False
    resend_if_dropped: bool = False


IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@dataclass(frozen=True)
class Pay:
    invoice: str
    max_fee_msat: int | None


@dataclass(frozen=True)
class Ask:
    decision: Decision


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Join:
    """Enter the single-flight for `key`. Answers False when this flow now owns it (and must
    `Leave` it), True when another flow was paying it and has finished (nothing is owned)."""

    key: str


@dataclass(frozen=True)
class Leave:
    key: str


Effect = Send | Pay | Ask | Sleep | Join | Leave


class PaymentNotHonored(HttpayError):
    """The payment went out (see `receipt`) but the service still answers 402."""

    def __init__(self, message: str, *, receipt: Receipt, response: httpx.Response) -> None:
        super().__init__(message)
        self.receipt = receipt
        self.response = response


class PaymentOutcomeUnknown(HttpayError):
    """The wallet may have paid; the ledger keeps the payment pending until it is reconciled."""

    def __init__(self, message: str, *, receipt: Receipt) -> None:
        super().__init__(message)
        self.receipt = receipt


@dataclass
class Payer:
    """What a flow needs besides the request: wallet, policy, ledger, and who is watching."""

    wallet: Wallet | None  # None: no Lightning payments (an x402-only client)
    policy: Policy
    ledger: Ledger
    on_event: EventHook | None = None
    retries_after_payment: int = 5
    retry_delay_s: float = 0.2
    token_scope: str = "host"          # where a paid L402 token is reused: host, prefix or url
    inflight_wait_s: float = 60.0      # how long to wait for another process's payment of the same challenge
    stale_pending_s: float = 120.0     # a pending payment older than this is reconciled, not waited for
    x402_signer: Any = None            # pays x402 challenges (httpay.signers.EvmSigner); None: refuse them
    payment_deadline: float | None = DEFAULT_PAYMENT_DEADLINE_S  # seconds from a 402 to paying it; None: none

    @property
    def lightning(self) -> Wallet:
        """The Lightning wallet; the flow checks there is one before any Lightning step."""
        if self.wallet is None:
            raise ConfigError("no Lightning wallet is configured: pass wallet= to the client")
        return self.wallet

    def rate(self) -> float | None:
        """BTC/USD: the policy's fixed rate, else its rate source, else the wallet's own. None if unknown
        (then a USD limit refuses to pay rather than guess)."""
        if self.policy.usd_per_btc:
            return self.policy.usd_per_btc
        for source in (self.policy.rate_source, getattr(self.wallet, "usd_per_btc", None)):
            if not callable(source):
                continue
            try:
                value = source()
            except Exception as exc:  # noqa: BLE001 - any failure of a rate source means "rate unknown"
                log.warning("the BTC/USD rate source failed (%s); USD limits will refuse until it answers",
                            type(exc).__name__)
                continue
            if rate_ok(value):  # finite and positive: an inf or NaN rate is no rate
                return float(value)
        return None


def host_of(url: str | httpx.URL) -> str:
    u = httpx.URL(str(url))
    port = u.port
    return f"{u.host}:{port}" if port else u.host


def same_site(a: str, b: str) -> bool:
    """True when two URLs share a scheme-less registrable host (exact host match, ports ignored)."""
    ha, hb = (urlsplit(a).hostname or "").lower(), (urlsplit(b).hostname or "").lower()
    return bool(ha) and ha == hb


def met_at(ledger: Ledger, mark: float) -> datetime:
    """When a 402 was met, on the ledger's clock (shared by every process): its now, less the time
    elapsed since `mark` (`time.monotonic()` taken before the request was sent). No wall clock of
    this machine enters, so a skewed one cannot make another process's payment look older."""
    return ledger.now() - timedelta(seconds=max(time.monotonic() - mark, 0.0))


def fee_cap_msat(policy: Policy, amount_msat: int) -> int:
    """The most the wallet may spend on routing fees: the policy's cap, else the wallet's default one.
    The ledger holds it with the amount until the payment settles, and the wallet is given it."""
    return policy.max_fee_msat if policy.max_fee_msat is not None else default_fee_limit_msat(amount_msat)


def refused(payer: Payer, url: str, rid: str, exc: PaymentRefused) -> PaymentRefused:
    """Log and report a refusal as one `refused` step, then hand it back to be raised."""
    emit(payer.on_event, Event("refused", url, rid, {"rule": exc.rule, "reason": str(exc)}),
         str(exc).removeprefix("refused: "), logging.WARNING)
    return exc


def _json_error(resp: httpx.Response) -> str:
    """The service's error text, made safe for a log line or a terminal (one line, bounded)."""
    try:
        data = safe.loads(resp.content)
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return safe.clean(data["error"])
    except ValueError:
        pass
    return safe.clean(resp.content[:1000].decode("utf-8", "replace"))


def request_flow(
    payer: Payer, request: httpx.Request, *, dry_run: bool = False, max_price_msat: int | None = None,
    offer_id: str | None = None,
) -> Generator[Effect, Any, httpx.Response]:
    """Send `request`; if the answer is a 402 some dialect claims, pay for it within the policy and
    return the response the payment bought. A held L402 token is presented first, and evicted
    (never retried in a loop) when the server answers 402 to it."""
    url = str(request.url)
    _present_token(payer, request)
    mark = time.monotonic()
    response: httpx.Response = yield Send(request, payment_deadline_s=None if dry_run else payer.payment_deadline,
                                          stream=True)
    if response.status_code != 402:
        return response
    met_402_at = met_at(payer.ledger, mark)
    response.read()
    _evict_if_presented(payer, request)
    if dry_run:
        return response
    challenge = read_challenge(url, response.status_code, response.headers, response.content)
    if challenge is None:
        return response
    return (yield from pay_flow(payer, request, response, challenge, met_402_at=met_402_at,
                                max_price_msat=max_price_msat, offer_id=offer_id))


def pay_flow(
    payer: Payer, request: httpx.Request, response: httpx.Response, challenge: PaymentChallenge | PaymentOffers,
    *, met_402_at: datetime | None = None, max_price_msat: int | None = None, offer_id: str | None = None,
) -> Generator[Effect, Any, httpx.Response]:
    """Pay for one challenge within the policy, then repeat `request`. Returns the final response.

    `offer_id` pins the offer to pay (an agent that chose one); the policy must still allow it.
    """
    url = str(request.url)
    if isinstance(challenge, PaymentOffers):
        challenge = PaymentChallenge(l402_v02.PROTOCOL, challenge, challenge_key(challenge, url))
    met_402_at = met_402_at or payer.ledger.now()
    host = host_of(request.url)
    rid = secrets.token_hex(4)
    policy, hook = payer.policy, payer.on_event
    offers = challenge.offers
    rate = payer.rate()

    emit(hook, Event("challenge", url, rid, {"offers": offers, "status": response.status_code,
                                             "protocol": challenge.protocol}),
         f"402 ({challenge.protocol}) from {host} with {len(offers)} offer(s): {', '.join(o.offer_id for o in offers)}")
    if challenge.x402 is not None and payer.x402_signer is not None:  # x402 logic lives in httpay.x402_pay
        from httpay.x402_pay import x402_flow
        return (yield from x402_flow(payer, request, response, challenge, rid=rid, met_402_at=met_402_at,
                                     max_price_msat=max_price_msat, offer_id=offer_id))
    if not challenge.payable_with_lightning:
        prices = "; ".join(o.price + " by " + ", ".join(o.payment_methods) for o in offers)
        raise refused(payer, url, rid, PaymentRefused(
            f"refused: {host} asks for an {challenge.protocol} payment ({prices}); "
            "httpay pays it only with a signer for that network configured, and none is",
            rule=challenge.protocol, offers=offers, response=response,
        ))
    if payer.wallet is None:
        raise refused(payer, url, rid, PaymentRefused(
            f"refused: {host} asks for a Lightning payment ({'; '.join(o.price for o in offers)}) and no Lightning "
            "wallet is configured; pass wallet= to the client", rule="no_wallet", offers=offers, response=response,
        ))

    challenge = dataclasses.replace(challenge, key=flight_key(challenge, url, payer.token_scope))
    key = challenge.key
    for _ in range(MAX_WAIT_ROUNDS):
        if not (yield Join(key)):
            break  # this request owns the flight: it pays, unless someone paid meanwhile
        # Someone else just paid what this request needs: use their payment before paying again.
        emit(hook, Event("waited", url, rid, {"key": key}), "another request paid for this; retrying with its payment")
        mark = time.monotonic()
        again = yield from _send_with_token(payer, request, payment_deadline_s=payer.payment_deadline, stream=True)
        if again.status_code != 402:
            return again
        again.read()
        _evict_if_presented(payer, request)
        fresh = read_challenge(url, again.status_code, again.headers, again.content)
        if fresh is None:
            return again
        challenge = dataclasses.replace(fresh, key=flight_key(fresh, url, payer.token_scope))
        response, offers, met_402_at, key = again, fresh.offers, met_at(payer.ledger, mark), challenge.key
    else:
        raise PaymentRefused(
            f"refused: {MAX_WAIT_ROUNDS} payments by other requests for this challenge each left this one unserved; "
            "not paying in a loop", rule="in_flight", offers=offers, response=response,
        )
    def obtain() -> Generator[Effect, Any, tuple[Receipt, PaymentChallenge | None]]:
        """Pay for the flight, or find the payment another request made: the receipt and the challenge
        whose credential the retry presents (None: present nothing new)."""
        # A payment for this flight made after this request met its 402 (by a flow that left before this
        # one joined, or by another process) is used, never repeated, and never refused by a budget it spent.
        meanwhile = _paid_meanwhile(payer, key, met_402_at)
        done = (yield from _await_other(payer, meanwhile, rid, url)) if meanwhile is not None else None
        if done is not None:
            return done, None
        pr_url = _payment_request_url(policy, request, offers, response) if challenge.protocol == l402_v02.PROTOCOL else None
        decision = _decide(payer, challenge, response, url, host, rate, rid, max_price_msat, offer_id)
        if policy.approve is not None:
            asked_at = time.monotonic()
            answer = yield Ask(decision)
            if (deadline := deadline_of(response)) is not None:
                deadline.paused(asked_at)  # a person's time to decide is not the service's delay
            decision = _approved(payer, challenge, decision, answer, response, rid)
            emit(hook, Event("approval", url, rid, {"decision": decision, "approved": True}), f"approved: {decision}")

        if challenge.protocol == l402_v02.PROTOCOL:
            assert pr_url is not None
            pr = yield from _request_payment(payer, pr_url, offers, decision.offer, decision.method, rid, url,
                                             origin=request, deadline=deadline_of(response))
            assert pr.lightning_invoice is not None
            bolt11 = pr.lightning_invoice
        else:
            assert challenge.l402 is not None
            bolt11 = challenge.l402.invoice
        invoice = _check(payer, bolt11, decision, challenge, response, rid, url)
        not_before: datetime | None = met_402_at
        for _ in range(MAX_WAIT_ROUNDS):
            within_deadline(payer, response, url, rid, "the invoice" if not_before else "the wait for another payment")
            try:
                receipt = _reserve(payer, decision, invoice, challenge, url, host, rate, response, rid, not_before)
                break
            except (ChallengeInFlight, DuplicatePayment) as busy:
                # Another request paid (or is paying) this invoice or this flight: wait for it and use it.
                done = yield from _await_other(payer, busy.existing, rid, url)
                if done is not None:
                    same = challenge.l402 is not None and done.payment_hash == invoice.payment_hash and done.preimage
                    if same:
                        _keep_token(payer, challenge.l402, done.preimage or "", done.payment_hash, url)
                    return done, (challenge if same else None)
                not_before = None  # it failed: nothing was paid, so pay now (unless yet another is pending)
                within_deadline(payer, response, url, rid, "another payment of this challenge")
        else:
            raise PaymentRefused(f"refused: {MAX_WAIT_ROUNDS} other payments for this challenge failed in turn; "
                                 "not paying in a loop", rule="in_flight", offers=offers, response=response)

        payment = yield from _pay(payer, receipt, invoice, rid, url)
        return _settle(payer, receipt, payment, invoice, challenge, url, rid, rate), challenge

    # The retry is sent after this flow leaves the flight, so requests waiting on the flight never
    # also wait on this one's retry (a service that answers slowly would hold them all).
    try:
        receipt, proof = yield from obtain()
    finally:
        yield Leave(key)
    return (yield from _retry(payer, request, receipt, rid, url, challenge=proof))


def _paid_meanwhile(payer: Payer, key: str, met_402_at: datetime) -> Receipt | None:
    """The flight's payment pending now, or settled since this request met its 402, if there is one."""
    existing = payer.ledger.find(challenge_key=key)
    if existing is None:
        return None
    if existing.status is Status.PENDING or (existing.status is Status.SETTLED and existing.updated_at >= met_402_at):
        return existing
    return None


def _settle(payer: Payer, receipt: Receipt, payment: Payment, invoice: Invoice, challenge: PaymentChallenge,
            url: str, rid: str, rate: float | None) -> Receipt:
    """Record the payment settled. A classic L402 token is stored first, so whoever sees the payment
    settled (a waiting request, another process) finds the token it bought."""
    if challenge.l402 is not None:
        try:
            _keep_token(payer, challenge.l402, payment.preimage or "", payment.payment_hash, url)
        except Exception as exc:  # noqa: BLE001 - the payment must be recorded whatever storing the token did
            log.warning("[%s] could not store the L402 token (%s); the payment is still recorded", rid,
                        type(exc).__name__)
    try:
        done = payer.ledger.settle(receipt.id, preimage=payment.preimage or "", fee_msat=payment.fee_msat,
                                   amount_msat=payment.amount_msat or invoice.amount_msat)
    except Exception as exc:
        raise _paid_failure(receipt, f"recording the payment failed ({type(exc).__name__}); ledger #{receipt.id} "
                            "stays pending until `httpay ledger reconcile` settles it") from exc
    emit(payer.on_event, Event("paid", url, rid, {"receipt": done, "payment": payment}),
         f"paid {fmt_msat(done.amount_msat, rate)} + fee {done.fee_msat} msat, hash {invoice.payment_hash[:16]}…, "
         f"ledger #{done.id}")
    return done


def _payment_request_url(policy: Policy, request: httpx.Request, offers: PaymentOffers,
                         response: httpx.Response) -> httpx.URL:
    """The v0.2 payment request URL, which must belong to the service that asked (or an allowed host)."""
    try:
        raw = l402_v02.check_payment_request_url(offers.payment_request_url)
        pr_url = request.url.join(raw)
    except httpx.InvalidURL:
        raise ChallengeError(f"402 body: field 'payment_request_url' is not a URL: {offers.payment_request_url!r:.60}",
                             field="payment_request_url") from None
    if not same_site(str(pr_url), str(request.url)) and not any(
        (pr_url.host or "").lower() == h.lower() for h in policy.payment_hosts
    ):
        raise PaymentRefused(
            f"refused: the payment request URL is on {safe.clean(pr_url.host, 100)}, not on {request.url.host} that asked",
            rule="payment_host", offers=offers, response=response, knob="payment_hosts",
            advice="add " + safe.clean(repr(pr_url.host), 100).replace("{", "{{").replace("}", "}}") + " to {knob} if you trust it",
        )
    return pr_url


def decide(payer: Payer, challenge: PaymentChallenge, *, url: str, host: str, rate: float | None,
           max_price_msat: int | None = None, offer_id: str | None = None) -> Decision:
    """The one decision every payment passes, automatic or approved, Lightning or x402.

    Hosts first, then `Policy.decide` on the offers this payer can pay (x402: valued in msat at
    `rate`) with the policy's methods, its per-payment limit, this request's price cap and the total
    budget left (spent read from the ledger now). An approver's answer re-runs exactly this, on the
    same rate and cap, narrowed to the offer it picked. Raises PaymentRefused naming the rule.
    """
    offers = challenge.offers
    payer.policy.check_host(host, offers)
    choices = _pinned(offers, offer_id) if offer_id is not None else offers
    policy = payer.policy
    methods: tuple[str, ...] = ("lightning",)
    if challenge.x402 is not None:
        from httpay.x402_pay import payable_offers
        choices, methods = payable_offers(payer, challenge, choices, rate)
        policy = dataclasses.replace(policy, methods=methods, approve=None)
    d = policy.decide(choices, url=url, host=host, usd_per_btc=rate, spent_msat=payer.ledger.spent_msat(),
                      methods=methods, max_price_msat=max_price_msat)
    by_id = {o.offer_id: o for o in offers.offers}  # x402: back from the msat view to the service's offers
    return dataclasses.replace(d, offers=offers, offer=by_id[d.offer.offer_id],
                               alternatives=tuple(by_id[a.offer_id] for a in d.alternatives))


def approved_decision(payer: Payer, challenge: PaymentChallenge, decision: Decision, answer: Any) -> Decision:
    """What an approver's answer lets the flow pay: True keeps the offer, an `Offer` picks another.
    Either way `decide` runs again on the decision's own inputs, so no approval skips a limit."""
    if answer is True:
        pick = decision.offer
    elif isinstance(answer, Offer):
        if answer not in decision.offers.offers:
            raise PaymentRefused("refused: the approver picked an offer the service did not make", rule="approval",
                                 offers=decision.offers)
        pick = answer
    else:
        raise PaymentRefused(f"refused by the approver: {decision}", rule="approval", offers=decision.offers)
    return decide(payer, challenge, url=decision.url, host=decision.host, rate=decision.usd_per_btc,
                  max_price_msat=decision.max_price_msat, offer_id=pick.offer_id)


def _decide(payer: Payer, challenge: PaymentChallenge, response: httpx.Response, url: str, host: str,
            rate: float | None, rid: str, max_price_msat: int | None, offer_id: str | None) -> Decision:
    try:
        decision = decide(payer, challenge, url=url, host=host, rate=rate, max_price_msat=max_price_msat,
                          offer_id=offer_id)
    except PaymentRefused as exc:
        exc.response = response
        raise refused(payer, url, rid, exc) from None
    emit(payer.on_event, Event("decision", url, rid, {"decision": decision}), str(decision))
    return decision


def _approved(payer: Payer, challenge: PaymentChallenge, decision: Decision, answer: Any, response: httpx.Response,
              rid: str) -> Decision:
    try:
        return approved_decision(payer, challenge, decision, answer)
    except PaymentRefused as exc:
        exc.response = response
        raise refused(payer, decision.url, rid, exc) from None


def _present_token(payer: Payer, request: httpx.Request) -> str | None:
    """Put the stored L402 token of the request's scope in its Authorization header, read afresh on
    every send (another request may have bought a newer one); a caller's own Authorization is left
    alone. Returns the scope whose token is presented, if any."""
    ours = request.extensions.get(TOKEN_EXTENSION)
    current = request.headers.get("authorization")
    if current and (ours is None or current != ours[1]):
        return None  # the caller's own credential
    for scope in scopes_for(str(request.url), payer.token_scope):
        token = payer.ledger.token_for(scope)
        if token:
            request.headers["Authorization"] = token
            request.extensions[TOKEN_EXTENSION] = (scope, token)
            return scope
    if ours is not None and current == ours[1]:
        return str(ours[0])  # nothing newer stored: keep the credential this flow holds
    return None


def _evict_if_presented(payer: Payer, request: httpx.Request) -> None:
    """The server answered 402 to the token this flow presented: forget it (never retried in a loop),
    unless another request has meanwhile stored a newer one for the scope."""
    ours = request.extensions.pop(TOKEN_EXTENSION, None)
    if ours is None:
        return
    scope, token = ours
    if request.headers.get("authorization") != token:
        return  # not presented on this request (httpx drops Authorization on a redirect to another host)
    request.headers.pop("Authorization", None)
    if payer.ledger.token_for(scope) == token:
        payer.ledger.drop_token(scope)
        log.info("the server answered 402 to the L402 token held for %s: evicted it", scope)


def _send_with_token(payer: Payer, request: httpx.Request, payment_deadline_s: float | None = None,
                     stream: bool = False) -> Generator[Effect, Any, httpx.Response]:
    """Repeat a request after a payment: with the L402 token stored for its scope, if any.
    `payment_deadline_s`: a 402 it meets may be paid, so start its deadline; `stream`: it follows a
    wait for another's payment, and any other answer goes to the caller unread (see `Send`)."""
    _present_token(payer, request)
    response: httpx.Response = yield Send(request, payment_deadline_s=payment_deadline_s, stream=stream,
                                          resend_if_dropped=stream and request.method in IDEMPOTENT)
    return response


def _await_other(payer: Payer, existing: Receipt, rid: str, url: str) -> Generator[Effect, Any, Receipt | None]:
    """Another process holds a payment for this challenge. Wait for it (settled -> use it), or
    reconcile it if it was left behind by a crash. None means: nothing was paid, pay now."""
    from httpay.reconcile import reconcile_one

    emit(payer.on_event, Event("waited", url, rid, {"receipt": existing}),
         f"payment #{existing.id} for this challenge is {existing.status.value}; not paying twice")
    waited = 0.0
    current = existing
    while current.status is Status.PENDING:
        age = (payer.ledger.now() - current.updated_at).total_seconds()  # one clock: the ledger's
        if age >= payer.stale_pending_s:
            outcome = reconcile_one(payer.ledger, payer.lightning, current, grace_s=payer.stale_pending_s)
            current = outcome.receipt
            if current.status is Status.PENDING:
                raise PaymentOutcomeUnknown(
                    f"payment #{current.id} for this challenge is still pending ({outcome.detail}); it is not paid "
                    "again until it is reconciled (`httpay ledger reconcile`)", receipt=current,
                )
            break
        if waited >= payer.inflight_wait_s:
            raise PaymentOutcomeUnknown(
                f"payment #{current.id} for this challenge stayed pending for {waited:.0f} s; not paying again",
                receipt=current,
            )
        yield Sleep(0.05)
        waited += 0.05
        current = payer.ledger.get(current.id)
    return current if current.status is Status.SETTLED else None


def _keep_token(payer: Payer, ch: Any, preimage: str, payment_hash: str | None, url: str) -> None:
    """Store the paid L402 credential so later requests in its scope reuse it instead of paying."""
    from httpay.protocols.macaroons import decode

    expires = None
    try:
        expires = decode(ch.macaroon).valid_until
    except HttpayError:
        pass
    payer.ledger.save_token(token_scope(url, payer.token_scope), ch.credential(preimage),
                            payment_hash=payment_hash, expires_at=expires)


def _pinned(offers: PaymentOffers, offer_id: str) -> PaymentOffers:
    """The challenge narrowed to the one offer a caller pinned; refused if the service did not make it."""
    chosen = [o for o in offers.offers if o.offer_id == offer_id]
    if not chosen:
        raise PaymentRefused(
            f"refused: the service did not offer {offer_id!r}; it offers {', '.join(o.offer_id for o in offers) or 'nothing'}",
            rule="offer_id", offers=offers,
        )
    return dataclasses.replace(offers, offers=tuple(chosen))


def _request_payment(
    payer: Payer, pr_url: httpx.URL, offers: PaymentOffers, offer: Offer, method: str, rid: str, url: str,
    *, origin: httpx.Request | None = None, deadline: Deadline | None = None,
) -> Generator[Effect, Any, PaymentRequest]:
    """POST the chosen offer to the payment request URL, with the caller's timeouts and within the deadline."""
    body = l402_v02.payment_request_body(offers, offer, method)
    kwargs: dict[str, Any] = {"content": json.dumps(body).encode(),
                              "headers": {"content-type": "application/json", "accept": "application/json"}}
    req = follow_up(origin, "POST", pr_url, **kwargs) if origin is not None else httpx.Request("POST", pr_url, **kwargs)
    try:
        resp: httpx.Response = yield Send(req, deadline=deadline, resend_if_dropped=True)  # it only asks for an invoice
    except PaymentDeadlineExceeded as exc:
        emit(payer.on_event, Event("refused", url, rid, {"rule": "payment_deadline", "reason": str(exc)}),
             str(exc).removeprefix("not paid: "), logging.WARNING)
        raise
    except httpx.TimeoutException as exc:
        raise PaymentRequestError(
            f"the payment request endpoint on {pr_url.host} did not answer within the client's timeout "
            f"({type(exc).__name__}); nothing was paid. Try again later, or raise Client(timeout=...)",
        ) from None
    except httpx.TransportError as exc:
        raise PaymentRequestError(
            f"the payment request endpoint on {pr_url.host} could not be reached ({type(exc).__name__}); "
            "nothing was paid",
        ) from None
    resp.read()
    if resp.status_code != 200:
        raise PaymentRequestError(
            f"the service refused the payment request for {offer.offer_id} by {method}: "
            f"HTTP {resp.status_code} {_json_error(resp)}", status_code=resp.status_code,
        )
    try:
        data = safe.loads(resp.content)
    except ValueError:  # not JSON, not text, nested absurdly deep, an integer of thousands of digits
        raise PaymentRequestError("the payment request answer is not JSON", status_code=resp.status_code) from None
    pr = PaymentRequest.from_dict(data, payment_method=method, offer_id=offer.offer_id)
    emit(payer.on_event, Event("payment_request", url, rid, {"payment_request": pr}), str(pr))
    return pr


def _check(payer: Payer, bolt11: str, decision: Decision, challenge: PaymentChallenge, response: httpx.Response,
           rid: str, url: str) -> Invoice:
    """Every check the invoice must pass before anything is reserved or paid: the invoice checks, the
    limits the decision applied (per payment and this request's cap), and the hash a token commits to."""
    policy = payer.policy
    try:
        invoice = decode_invoice(bolt11)
        caps = [c for c in (policy.max_per_payment_msat(decision.usd_per_btc, challenge.offers),
                            decision.max_price_msat) if c is not None]
        check_invoice(
            invoice,
            network=payer.lightning.network,
            expected_msat=decision.price_msat,
            tolerance=policy.price_tolerance,
            max_msat=min(caps) if caps else None,
            payee=policy.payee_for(decision.host),
        )
        check_token_binding(challenge, invoice)
    except InvoiceError as exc:
        emit(payer.on_event, Event("refused", url, rid, {"rule": f"invoice:{exc.check}", "reason": str(exc)}),
             f"invoice refused: {exc}", logging.WARNING)
        raise
    emit(payer.on_event, Event("invoice", url, rid, {"invoice": invoice, "decision": decision}), str(invoice))
    return invoice


def _reserve(payer: Payer, decision: Decision, invoice: Invoice, challenge: PaymentChallenge, url: str, host: str,
             rate: float | None, response: httpx.Response, rid: str, met_402_at: datetime | None) -> Receipt:
    assert invoice.amount_msat is not None
    offers = challenge.offers
    intent = Intent(
        host=host, url=url, protocol=challenge.protocol, method=decision.method, amount_msat=invoice.amount_msat,
        payment_hash=invoice.payment_hash, offer_id=decision.offer.offer_id, offer_title=decision.offer.title,
        offer_amount=decision.offer.amount, offer_currency=decision.offer.currency, credits=decision.offer.balance,
        wallet=payer.lightning.name, challenge_key=challenge.key, not_before=met_402_at,
        max_fee_msat=fee_cap_msat(payer.policy, invoice.amount_msat), wallet_id=payer.lightning.identity,
    )
    try:
        receipt = payer.ledger.reserve(intent, payer.policy.limits(host, rate, offers), usd_per_btc=rate)
    except PaymentRefused as exc:
        exc.offers, exc.response = offers, response
        if not isinstance(exc, DuplicatePayment | ChallengeInFlight):
            refused(payer, url, rid, exc)
        raise
    emit(payer.on_event, Event("reserved", url, rid, {"receipt": receipt}),
         f"ledger #{receipt.id} pending for {fmt_msat(receipt.amount_msat, rate)} + up to "
         f"{fmt_msat(receipt.fee_msat, rate)} in fees")
    return receipt


def _pay(payer: Payer, receipt: Receipt, invoice: Invoice, rid: str, url: str) -> Generator[Effect, Any, Payment]:
    ledger = payer.ledger
    try:
        # the very fee cap the ledger holds for this payment (a pending row's fee_msat)
        payment: Payment = yield Pay(invoice.bolt11, receipt.fee_msat)
    except WalletError as exc:
        if exc.outcome_known:
            ledger.fail(receipt.id, f"{type(exc).__name__}: {exc}")
            emit(payer.on_event, Event("payment_failed", url, rid, {"receipt": ledger.get(receipt.id), "error": str(exc)}),
                 f"wallet did not pay: {exc}", logging.WARNING)
            raise
        found = _lookup(payer.lightning, invoice.payment_hash)
        if found is not None and found.settled and found.proves(invoice.payment_hash):
            payment = found
        else:
            ledger.note(receipt.id, f"outcome unknown: {type(exc).__name__}")
            raise PaymentOutcomeUnknown(
                f"the wallet did not say whether it paid (ledger #{receipt.id} stays pending; run "
                "`httpay ledger reconcile` later): " + str(exc), receipt=ledger.get(receipt.id),
            ) from None
    if not payment.settled:
        if payment.status is PaymentStatus.FAILED:
            ledger.fail(receipt.id, payment.failure_reason or "wallet reported failure")
            raise WalletError(f"the wallet reported the payment failed: {payment.failure_reason or 'no reason given'}")
        raise PaymentOutcomeUnknown(
            f"the payment is still in flight at the wallet (ledger #{receipt.id} stays pending)",
            receipt=ledger.get(receipt.id),
        )
    if not payment.proves(invoice.payment_hash):
        ledger.note(receipt.id, "wallet returned a preimage that does not match the invoice")
        raise PaymentOutcomeUnknown(
            f"the wallet said paid but its preimage does not prove the invoice (ledger #{receipt.id} stays pending)",
            receipt=ledger.get(receipt.id),
        )
    if payment.fee_msat > receipt.fee_msat:  # a wallet that cannot enforce the cap (LNbits) went over it
        log.warning("[%s] the wallet spent %d msat on fees, above the %d msat cap it was given and the ledger held; "
                    "the ledger records what it spent", rid, payment.fee_msat, receipt.fee_msat)
    return payment


def _lookup(wallet: Wallet, payment_hash: str) -> Payment | None:
    try:
        return wallet.lookup(payment_hash)
    except (NotImplementedError, WalletError):
        return None


def _retry(payer: Payer, request: httpx.Request, receipt: Receipt, rid: str, url: str,
           challenge: PaymentChallenge | None) -> Generator[Effect, Any, httpx.Response]:
    """Repeat the request now that it is paid for: as is (v0.2: the service credits the account)
    or with the L402 credential. A v0.2 service may learn of the payment a moment late, so a
    402 is retried a few times with backoff before it is called not honored. Money has left by
    now, so any failure (no answer, a reset, a 5xx, a broken body) is a PaidRequestFailed that
    carries the receipt; the ledger row stays settled."""
    if challenge is not None and challenge.l402 is not None and receipt.preimage:
        credential = challenge.l402.credential(receipt.preimage)
        request.headers["Authorization"] = credential
        request.extensions[TOKEN_EXTENSION] = (token_scope(url, payer.token_scope), credential)
    delay = payer.retry_delay_s
    resp: httpx.Response | None = None
    for attempt in range(1, payer.retries_after_payment + 1):
        emit(payer.on_event, Event("retry", url, rid, {"attempt": attempt}), f"retrying the request (attempt {attempt})")
        try:
            resp = yield from _send_with_token(payer, request)
            resp.read()  # a body that breaks off is a failure of the paid request, seen here, not by the caller
        except Exception as exc:
            if isinstance(exc, PaidRequestFailed | PaymentNotHonored):
                raise
            raise _unserved(payer, receipt, url, rid, f"the service did not answer ({_name(exc)})") from exc
        if resp.status_code >= 500:
            raise _unserved(payer, receipt, url, rid, f"the service answered HTTP {resp.status_code} to the paid "
                            "request (its answer is in .response)", response=resp)
        if resp.status_code != 402:
            resp.extensions[RECEIPT_EXTENSION] = receipt
            emit(payer.on_event, Event("served", url, rid, {"status": resp.status_code, "receipt": receipt}),
                 f"served with HTTP {resp.status_code} after payment #{receipt.id}")
            return resp
        if attempt < payer.retries_after_payment:
            yield Sleep(delay)
            delay = min(delay * 2, 5.0)
    assert resp is not None
    raise PaymentNotHonored(
        f"paid (ledger #{receipt.id}, hash {(receipt.payment_hash or '')[:16]}…) but {host_of(request.url)} still "
        f"answers 402 after {payer.retries_after_payment} tries; keep the receipt and contact the service",
        receipt=receipt, response=resp,
    )


def _name(exc: BaseException) -> str:
    """An exception's class and its first words (never a whole server text) for a message."""
    text = safe.clean(" ".join(str(exc).split()), 80)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def paid_text(receipt: Receipt, usd_per_btc: float | None = None) -> str:
    """'paid 10 sat + 1 sat fee, ledger #3': what a payment cost, for a message after money left."""
    fee = f" + {fmt_msat(receipt.fee_msat)} fee" if receipt.fee_msat else ""
    return f"paid {fmt_msat(receipt.amount_msat, usd_per_btc)}{fee}, ledger #{receipt.id}"


def _unserved(payer: Payer, receipt: Receipt, url: str, rid: str, what: str,
              response: httpx.Response | None = None) -> PaidRequestFailed:
    """The paid request failed after the money left: say so, note it on the (still settled) row."""
    try:
        receipt = payer.ledger.note(receipt.id, f"paid, then {what}"[:300])
    except Exception:  # noqa: BLE001 - the error below must reach the caller whatever the ledger does
        log.warning("[%s] could not note the failure on ledger #%s", rid, receipt.id)
    exc = PaidRequestFailed(f"{paid_text(receipt)}; {what}; the receipt is kept and retrying reuses "
                            "the payment where the service honours it", receipt=receipt, response=response)
    emit(payer.on_event, Event("payment_failed", url, rid, {"receipt": receipt, "error": what}),
         f"{paid_text(receipt)}; {what}", logging.WARNING)
    return exc


def _paid_failure(receipt: Receipt, what: str) -> PaidRequestFailed:
    return PaidRequestFailed(f"{paid_text(receipt)}; {what}", receipt=receipt)


def receipt_of(response: httpx.Response) -> Receipt | None:
    """The ledger receipt of the payment that bought this response, if one was made."""
    found: Receipt | None = response.extensions.get(RECEIPT_EXTENSION)
    return found
