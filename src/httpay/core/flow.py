"""The payment flow, written once for every dialect and for both drivers.

`request_flow` sends a request; on a 402 that a registered dialect reads, `pay_flow` quotes it
within the policy, has the dialect obtain what is payable, writes the payment down, pays it (a
wallet pays an invoice, or a signer signs), and sends the request again with the proof. It is a
generator that performs no I/O at all: every outside call is an effect (`httpay.core.effects`)
yielded to a driver (`httpay.core.drivers`), so the sync and async clients cannot drift apart
and the flow can be tested with scripted answers. It never asks which dialect it runs: what
differs is behind `Dialect`, and what one payment buys is the challenge's `reuse`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx

from httpay import safe
from httpay.amounts import fee_cap_text, fmt_msat
from httpay.core.deadline import Deadline
from httpay.core.dialect import (
    Credential,
    Invoiced,
    Obtaining,
    Payable,
    Proof,
    Settlement,
    SigningIn,
    SignsIn,
    ToSign,
    dialect_of,
    read_challenge,
)
from httpay.core.effects import (
    Ask,
    Beside,
    CallAnswered,
    CallKey,
    CallNow,
    DropToken,
    Effect,
    Fail,
    Find,
    GetRate,
    GetReceipt,
    Join,
    Leave,
    LedgerNow,
    Lookup,
    Note,
    NoteRefusal,
    Outcome,
    Pay,
    ReadBody,
    Reconcile,
    RecordCall,
    Resend,
    Reserve,
    SaveToken,
    Send,
    Settle,
    Sign,
    Sleep,
    Spent,
    TokenFor,
)
from httpay.core.events import (
    Approved,
    ChallengeMet,
    Event,
    InvoiceChecked,
    Paid,
    PaymentFailed,
    Quoted,
    Refused,
    Reserved,
    Retried,
    Served,
    Waited,
    emit,
    heard,
)
from httpay.core.model import Challenge, Quote
from httpay.core.payer import (
    CREDIT_OVER,
    CREDIT_PAYING,
    CREDIT_UNHONORED,
    TOKEN_SCOPES,
    Payer,
    checked_tags,
)
from httpay.core.quote import fee_cap_for, quote, requote
from httpay.core.rates import Rate
from httpay.errors import (
    CallAlreadyPaid,
    ChallengeError,
    ChallengeInFlight,
    DuplicatePayment,
    HttpayError,
    InvoiceError,
    PaidRequestFailed,
    PaymentDeadlineExceeded,
    PaymentNotHonored,
    PaymentOutcomeUnknown,
    PaymentRefused,
    PaymentRejected,
    PaymentRequestError,
    PaymentSentUnanswered,
    WalletError,
)
from httpay.hosts import url_host
from httpay.ledger.base import PREIMAGE_MARK, Call, Intent, held_key, split_key
from httpay.ledger.models import Receipt, Status
from httpay.lightning import Invoice, check_invoice
from httpay.policy import Policy
from httpay.safe import get_logger
from httpay.wallets.base import Payment, PaymentStatus

log = get_logger("httpay")

RECEIPT_EXTENSION = "httpay_receipt"
DRY_RUN_EXTENSION = "httpay_dry_run"     # request extension: hand a 402 back untouched, pay nothing
OFFER_EXTENSION = "httpay_offer_id"      # request extension: pay only this offer (still within the policy)
MAX_PRICE_EXTENSION = "httpay_max_price_msat"  # request extension: pay at most this much for this request
TAGS_EXTENSION = "httpay_tags"           # request extension: tags of this request's payment, over the client's
TOKEN_EXTENSION = "httpay_token"         # request extension: (scope, credential) this flow put in Authorization
PAID_CHAIN_EXTENSION = "httpay_paid_in_chain"  # request extension: host -> (id of the request that paid, its receipt), seen by its redirects
CALLERS_EXTENSION = "httpay_callers_authorization"  # request extension: the caller's own Authorization a held credential stands in for
DEADLINE_EXTENSION = "httpay_payment_deadline"  # response extension: the Deadline the 402 it is on must be paid by
FORWARDED_EXTENSIONS = ("timeout", "trace")  # what a request the flow makes itself inherits from the caller's
MAX_WAIT_ROUNDS = 10  # a request waits for at most this many other payments of its challenge before refusing
# The note a request of another process leaves on the row of an account's payment it was served with
# (it paid nothing): the payment's own request, meeting a 402, knows the credit it bought was used
SERVED_ANOTHER = "what it bought served a request of another process, which paid nothing for it"
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

Flow = Generator[Effect, Any, httpx.Response]


# -- pure helpers ------------------------------------------------------------------------------
def host_of(url: str | httpx.URL) -> str:
    """'host' or 'host:port' of a URL ('[::1]:9' for an IPv6 literal, so its port is never read as part
    of it), the host in its one spelling (`hosts.host_key`: no trailing dot, IDNA and IPv6 as one)."""
    u = url if isinstance(url, httpx.URL) else httpx.URL(url)
    return url_host(u.host, u.port)


def _origin(parts: SplitResult) -> str:
    """'https://host:port' of a URL, the host lower-cased."""
    return f"{parts.scheme}://{(parts.hostname or '').lower()}" + (f":{parts.port}" if parts.port else "")


def token_scope(url: str, mode: str = "host") -> str:
    """Where a paid, reusable credential is reused: the whole host (default, as Aperture issues
    them), the URL's folder and below (`prefix`), or exactly this URL (`url`, query ignored)."""
    parts = urlsplit(url)
    if mode == "host":
        return _origin(parts)
    if mode == "prefix":
        return _origin(parts) + parts.path.rsplit("/", 1)[0] + "/"
    if mode == "url":
        return _origin(parts) + (parts.path or "/")
    raise ValueError(f"token scope must be one of {', '.join(TOKEN_SCOPES)}, not {mode!r}")


def _path_key(url: str) -> str:
    return token_scope(url, "url")


@functools.lru_cache(maxsize=1024)
def scopes_for(url: str, mode: str) -> tuple[str, ...]:
    """The scopes to look a credential up under for `url`, most specific first (a `prefix` token
    bought for /api/ also serves /api/v1/x)."""
    if mode != "prefix":
        return (token_scope(url, mode),)
    parts = urlsplit(url)
    segments = parts.path.split("/")[:-1]
    out = tuple(_origin(parts) + "/".join(segments[:i]) + "/" for i in range(len(segments), 0, -1))
    return out or (_origin(parts) + "/",)


def flight_key(challenge: Challenge, url: str, scope_mode: str, account: str | None = None) -> str:
    """The single-flight key: requests meeting 402s that one payment answers share it.

    A credential reused across its whole scope is bought once per scope (Aperture mints a fresh
    macaroon and invoice for every 402), so its key is the scope's; the ledger keeps it as the row's
    challenge key, so other processes wait too. A payment that credits an account (v0.2) is keyed
    by the account as the client knows it, the credential its requests carry (`account`), when they
    carry one: a service putting a fresh context token in every 402 would otherwise be paid once per
    request. Otherwise the challenge's own key.
    """
    if challenge.reuse == "scope":
        where = held_key(token_scope(url, scope_mode), challenge.variant)
        return "scope:" + hashlib.sha256(where.encode()).hexdigest()[:32]
    if challenge.reuse == "challenge" and account:
        return "account:" + hashlib.sha256(f"{host_of(httpx.URL(url))}|{account}".encode()).hexdigest()[:32]
    return challenge.key


def call_fingerprint(request: httpx.Request) -> str | None:
    """What makes a request one call: its method, URL, body and the caller's own Idempotency-Key
    (sha256). None when the body is a stream not read yet (then every send is a call of its own)."""
    try:
        body = request.content
    except httpx.RequestNotRead:
        return None
    h = hashlib.sha256()
    for part in (request.method.encode(), str(request.url).encode(), request.headers.get("idempotency-key", "").encode()):
        h.update(len(part).to_bytes(8, "big") + part)
    h.update(body)
    return h.hexdigest()


def follow_up(origin: httpx.Request, method: str, url: httpx.URL, **kwargs: Any) -> httpx.Request:
    """A request the flow makes itself, with the caller's timeouts (and trace hook) of `origin`, and
    its TLS server name when it goes to the same host."""
    extensions = {k: origin.extensions[k] for k in FORWARDED_EXTENSIONS if k in origin.extensions}
    if "sni_hostname" in origin.extensions and url.host == origin.url.host:
        extensions["sni_hostname"] = origin.extensions["sni_hostname"]
    return httpx.Request(method, url, extensions=extensions, **kwargs)


def deadline_of(response: httpx.Response) -> Deadline | None:
    """The payment deadline the driver started when this 402 arrived (None: no deadline set)."""
    found = response.extensions.get(DEADLINE_EXTENSION)
    return found if isinstance(found, Deadline) else None


def receipt_of(response: httpx.Response) -> Receipt | None:
    """The ledger receipt of the payment that bought this response, if one was made."""
    found: Receipt | None = response.extensions.get(RECEIPT_EXTENSION)
    return found


def paid_text(receipt: Receipt, usd_per_btc: float | None = None) -> str:
    """'paid 10 sat + 1 sat fee, ledger #3': what a payment cost, for a message after money left."""
    fee = f" + {fmt_msat(receipt.fee_msat)} fee" if receipt.fee_msat else ""
    return f"paid {fmt_msat(receipt.amount_msat, usd_per_btc)}{fee}, ledger #{receipt.id}"


def _name(exc: BaseException) -> str:
    """An exception's class and its first words (never a whole server text) for a message."""
    text = safe.clean(" ".join(str(exc).split()), 80)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_WENT = ("disconnected", "closed", "terminated", "peer state is error")  # httpcore/h11: no answer came
_HEADER_LIMIT = 100 * 1024  # httpcore's own, where it does not say (HTTP11Connection.MAX_INCOMPLETE_EVENT_SIZE)


def unreadable(exc: BaseException) -> str | None:
    """What was wrong with the answer, when `exc` says the service did answer but in a form that
    cannot be read (headers larger than the HTTP client reads, lines that are not HTTP); None when
    the connection went without an answer, or for any other error. A service that answered was
    reached, may have acted, and sends the same again: neither a network fault nor one to resend."""
    if not isinstance(exc, httpx.RemoteProtocolError):
        return None
    text = str(exc)
    if any(word in text.lower() for word in _WENT):
        return None
    if "buffer too long" in text.lower():
        import httpcore

        limit = getattr(httpcore.HTTP11Connection, "MAX_INCOMPLETE_EVENT_SIZE", _HEADER_LIMIT)
        return f"its response headers are over {limit // 1024:,} KiB, more than httpay reads"
    return f"not in HTTP httpay can read ({safe.clean(text, 80) or type(exc).__name__})"


def _no_answer(exc: BaseException) -> str:
    """The service's silence in words, or, when it did answer in a form nobody can read, that."""
    why = unreadable(exc)
    return f"the service answered, but {why}" if why else f"the service did not answer ({_name(exc)})"


# -- one paid request ----------------------------------------------------------------------------
@dataclass
class _Run:
    """One request's flow: who pays, what it asked, and its correlation id for every step."""

    payer: Payer
    request: httpx.Request
    rid: str
    proofs: set[str] = field(default_factory=set)  # the headers a payment's proof was put in
    # The application's own Idempotency-Key, as it sent the request (a credential adds httpay's own later)
    callers_key: str | None = None
    # the kind of the scope's credentials this payment is for (`Challenge.variant`, "" for the scope's
    # own): what a retry looks for when another request bought it
    kinds: tuple[str, ...] = ()
    # the payments (ledger ids) this request made or used: none is taken again as one made since its 402
    tried: set[int] = field(default_factory=set)
    # payments other requests made that this one used, each meeting a fresh 402 (what it bought was used up)
    borrowed: list[int] = field(default_factory=list)
    # this request's own payments whose credit another request was served with (it met a fresh 402)
    used_up: list[Receipt] = field(default_factory=list)
    repays: bool = False  # its own payment's credit used by another, this request pays again (not a call)

    @property
    def scoped(self) -> bool:
        """The payment is for a credential reused across its scope (a classic L402 token): the
        request has met the 402 with whatever Authorization it carried, so the credential bought
        for the scope, by this request or another, goes in place of the caller's own on every send
        after it (as the look before paying does). A credential for one request, or an account
        (L402 v0.2, keyed by the caller's own Authorization), never takes the caller's place."""
        return bool(self.kinds)

    @functools.cached_property
    def url(self) -> str:
        return str(self.request.url)

    @functools.cached_property
    def shown_url(self) -> str:
        """The URL as events and logs show it: no password, no credential from its query."""
        return safe.mask_urls(self.url)

    @functools.cached_property
    def host(self) -> str:
        return host_of(self.request.url)

    @functools.cached_property
    def tags(self) -> dict[str, str]:
        """Who this payment is for: the payer's tags, and this request's own (`TAGS_EXTENSION`) over them."""
        own = self.request.extensions.get(TAGS_EXTENSION)
        if own is None:
            return dict(self.payer.tags)
        return checked_tags({**self.payer.tags, **own} if isinstance(own, Mapping) else own)  # checked as Client's

    def say(self, kind: type[Event], message: object, level: int = logging.INFO, **fields: Any) -> None:
        """One step for the watchers. `message` is the line, a function that makes it, or an object whose
        `str()` is it (a quote, an invoice): made only when someone hears the step."""
        if heard(self.payer.on_event, level):
            line = message() if callable(message) else message
            emit(self.payer.on_event, kind(self.shown_url, self.rid, **fields), str(line), level)

    def refused(self, exc: PaymentRefused, response: httpx.Response | None = None,
                challenge: Challenge | None = None) -> PaymentRefused:
        """Report a refusal as one `refused` step, then hand it back to be raised."""
        if response is not None:
            exc.response = response
        if exc.offers is None and challenge is not None:
            exc.offers = challenge.offers
        self.say(Refused, str(exc).removeprefix("refused: "), logging.WARNING, rule=exc.rule, reason=str(exc))
        return exc

    def deadline_passed(self, exc: PaymentDeadlineExceeded) -> PaymentDeadlineExceeded:
        """Report the payment deadline's refusal as one `refused` step, then hand it back to be raised."""
        self.say(Refused, str(exc).removeprefix("not paid: "), logging.WARNING, rule="payment_deadline",
                 reason=str(exc))
        return exc

    def invoice_refused(self, exc: InvoiceError) -> InvoiceError:
        """Report an invoice that failed a check as one `refused` step, then hand it back to be raised."""
        self.say(Refused, f"invoice refused: {exc}", logging.WARNING, rule=f"invoice:{exc.check}", reason=str(exc))
        return exc

    def within_deadline(self, response: httpx.Response, stage: str) -> None:
        """PaymentDeadlineExceeded (before anything is reserved or paid) once the 402's deadline passed."""
        deadline = deadline_of(response)
        if deadline is not None and deadline.remaining() <= 0:
            raise self.deadline_passed(deadline.exceeded(stage))


def first_send(payer: Payer, request: httpx.Request) -> Send | None:
    """The request's first send, decided without the flow, when there is nothing to put on it: no
    credential held for its scope (as the ledger's in-memory view of held scopes already knows), none
    of this flow's own on it, no host that asked to be told the payer's methods. A driver sends it
    and starts `request_flow(..., sent=...)` only if the answer is a 402, so the unpaid path costs
    no flow at all. None: the flow decides the first send itself. (A dry run, `DRY_RUN_EXTENSION`,
    starts no payment deadline.)"""
    held = payer.ledger.held_scopes  # what `TokenFor(scope).answer_in_memory` reads, without the effect
    ext = request.extensions
    if held is None or payer.advertise_to or TOKEN_EXTENSION in ext:
        return None
    if held:
        kinds = payer.ledger.held_variants
        for scope in scopes_for(str(request.url), payer.token_scope):
            if scope in held or (kinds and kinds.get(scope)):
                return None
    # (else no credential held at all: nothing to look up, nor a URL to write out)
    return _first(payer, request, bool(ext.get(DRY_RUN_EXTENSION)))


def _resend_for(request: httpx.Request) -> Resend:
    """A request safe to repeat goes out once more if the kept-alive connection it went out on proves
    dead before any answer (one the server closed while idle): it never reached the server, and the
    caller gets the answer instead of a ReadError (transport._resending)."""
    return "kept-alive" if request.method in IDEMPOTENT else "never"


def _first(payer: Payer, request: httpx.Request, dry_run: bool) -> Send:
    return Send(request, payment_deadline_s=None if dry_run else payer.payment_deadline,
                resend=_resend_for(request))


def request_flow(payer: Payer, request: httpx.Request, *, dry_run: bool = False,
                 max_price_msat: int | None = None, offer_id: str | None = None,
                 sent: tuple[httpx.Response, float] | None = None) -> Flow:
    """Send `request`; if the answer is a 402 some dialect reads, pay for it within the policy and
    return the response the payment bought. A held credential is presented first, and evicted
    (never retried in a loop) when the server answers 402 to it. `sent`: the answer to the
    `first_send` a driver already made, and `time.monotonic()` when it went out."""
    presented: str | None = None
    if sent is None:
        _advertise(payer, request)
        presented = yield from _present_held(payer, request)
    challenges: list[Challenge] = []
    for look in (False, True):
        response: httpx.Response
        if sent is not None and not look:
            response, mark = sent
        else:
            mark = time.monotonic()
            response = yield _first(payer, request, dry_run)
        if response.status_code != 402:
            return response
        yield ReadBody(response)  # already read within the deadline when one runs: then a no-op
        if dry_run:
            yield from _evict_if_presented(request, _quietly_read(response, request))
            return response
        challenges = read_challenge(response.status_code, response.headers, response.content, url=str(request.url))
        yield from _evict_if_presented(request, challenges)
        if presented is not None and not _asks_for(challenges, presented):
            presented = None  # the kind held was not the kind this path asks for: look for that kind
        if look or presented is not None or all(c.reuse == "request" for c in challenges):
            break  # (a payment for one request leaves no credential another process could have bought)
        # Nothing was presented: another process may have bought a credential for this scope since
        # this one last looked. Look in the ledger itself before paying; with one, send once more.
        # A credential bought for the scope stands in for the caller's own Authorization (the paid
        # retry would put a new one in its place anyway): presented once before paying again.
        presented = yield from _present_held(
            payer, request, fresh=True, over_callers=any(c.reuse == "scope" for c in challenges),
            only=[c.variant or "" for c in challenges if c.reuse == "scope"])
        if presented is None:
            break
    if not challenges:
        return response
    _once_per_request(request, response)
    _learn_advertising(payer, request, challenges)
    return (yield from pay_flow(payer, request, response, challenges, max_price_msat=max_price_msat,
                                offer_id=offer_id, _sent_at=mark))


def _once_per_request(request: httpx.Request, response: httpx.Response) -> None:
    """A redirect httpx follows after a payment is a new request sharing the paid one's extensions:
    meeting a 402 of a host this call has paid already, it is not paid again (a service redirecting
    each paid request to another 402 would otherwise be paid once per hop). Another host the call
    is sent on to is paid once, as a call of its own would be."""
    paid = request.extensions.get(PAID_CHAIN_EXTENSION, {}).get(host_of(request.url))
    if paid is not None and paid[0] != id(request):
        receipt: Receipt = paid[1]
        raise PaymentNotHonored(
            f"{paid_text(receipt)} for this request; the service then redirected it to "
            f"{safe.clean(safe.mask_urls(str(request.url)), 200)}, which asks for payment again: httpay pays once "
            "per request, redirects included (send that URL itself to pay for it)", receipt=receipt, response=response)


def pay_flow(payer: Payer, request: httpx.Request, response: httpx.Response,
             challenges: Challenge | Sequence[Challenge], *, met_402_at: datetime | None = None,
             max_price_msat: int | None = None, offer_id: str | None = None, _sent_at: float | None = None) -> Flow:
    """Pay for one challenge of a 402 within the policy, then repeat `request`; the final response.

    Of several challenges, the one whose offer `quote()` picks is paid. `offer_id` pins the offer to
    pay (an agent that chose one); the policy must still allow it. A refusal is kept in the ledger
    (nothing paid) for the people who oversee, then raised.
    """
    run = _Run(payer, request, secrets.token_hex(4), callers_key=request.headers.get("idempotency-key"))
    _ = run.tags  # a request's own tags are checked before anything is decided (a ConfigError naming the bad one)
    try:
        served = yield from _pay_402(run, response, challenges, met_402_at, max_price_msat, offer_id, _sent_at)
        _after_paying(run, served)
        return served
    except (PaymentRefused, InvoiceError) as exc:  # an invoice refused before paying is a refusal an overseer sees too
        told: PaymentRefused | InvoiceError = exc
        if isinstance(exc, PaymentRefused):
            told = _after_others(run, exc)
            rule, text = told.rule or "refused", told.recorded()
        else:
            rule, text = f"invoice:{exc.check}", f"refused: the invoice: {exc}"
        try:
            yield NoteRefusal(run.host, run.url, rule, safe.clean(text, 500), tuple(sorted(run.tags.items())))
        except Exception as note_exc:  # noqa: BLE001 - the refusal reaches the caller whatever the ledger does
            log.warning("[%s] could not keep the refusal in the ledger (%s)", run.rid, type(note_exc).__name__)
        if run.used_up:  # this request did pay, for a credit another request was served with
            own = run.used_up[-1]
            raise PaidRequestFailed(
                f"{paid_text(own)} for this request, but another request was served with what it bought (one "
                f"use of the account), so this request met a fresh 402, and paying again was not done: "
                f"{safe.clean(str(told), 300)}; the receipt is kept", receipt=own,
                response=told.response if isinstance(told, PaymentRefused) else None) from told
        if told is not exc:
            raise told from None
        raise


def _after_others(run: _Run, exc: PaymentRefused) -> PaymentRefused:
    """A refusal of a request that used other requests' payments (each met a fresh 402: what it
    bought was used up), saying so: nothing was paid by this request, whatever those payments were."""
    if not run.borrowed or type(exc) is not PaymentRefused:
        return exc
    known = [f"#{i}" for i in dict.fromkeys(run.borrowed)]
    if len(known) == 1:
        theirs = f"ledger {known[0]} was another request's payment for this challenge, and what it bought was used"
    else:
        theirs = (f"ledger {', '.join(known)} were other requests' payments for this challenge, and what each "
                  "bought was used")
    reason = f"{exc.reason}; {theirs} before this request could: nothing was paid by this request"
    return PaymentRefused(reason, rule=exc.rule, offers=exc.offers, response=exc.response, knob=exc.knob,
                          advice=exc.advice)


def _after_paying(run: _Run, served: httpx.Response) -> None:
    """The request a payment bought an answer for: its redirects know it paid (`_once_per_request`),
    and a proof good once (a signed authorization, a preimage in a header) leaves the request, so a
    redirect httpx builds from it carries no proof to another place. A reusable token stays."""
    receipt = receipt_of(served)
    if receipt is None:
        return
    request = run.request
    request.extensions.setdefault(PAID_CHAIN_EXTENSION, {})[run.host] = (id(request), receipt)
    if not served.has_redirect_location:
        return  # nothing will be built from this request: what it sent stays readable on `response.request`
    kept = request.extensions.get(TOKEN_EXTENSION)
    for name in run.proofs:
        if not (kept is not None and name.lower() == "authorization" and request.headers.get(name) == kept[1]):
            request.headers.pop(name, None)


def _pay_402(run: _Run, response: httpx.Response, challenges: Challenge | Sequence[Challenge],
             met_402_at: datetime | None, max_price_msat: int | None, offer_id: str | None,
             sent_at: float | None) -> Flow:
    challenge = yield from _choose(run, [challenges] if isinstance(challenges, Challenge) else challenges,
                                   response, max_price_msat, offer_id)
    run.kinds = (challenge.variant or "",) if challenge.reuse == "scope" else ()
    run.say(ChallengeMet, lambda: f"402 ({challenge.dialect}) from {run.host} with {len(challenge.offers)} offer(s): "
                                  f"{', '.join(o.offer_id for o in challenge.offers)}",
            challenge=challenge, status=response.status_code)
    call = yield from _call_of(run, challenge)
    if call is not None and call.paid:  # the application sent a paid call again: present that payment
        return (yield from _answered(run, call, (yield from _present_again(run, challenge, call))))
    if call is None:
        return (yield from _paying(run, response, challenge, None, met_402_at, max_price_msat, offer_id, sent_at))
    live = run.payer.live_calls
    live[call.id] += 1  # a send of this call is paying it in this process: another one waits, never sends it too
    try:
        return (yield from _paying(run, response, challenge, call, met_402_at, max_price_msat, offer_id, sent_at))
    finally:
        live[call.id] -= 1
        if live[call.id] <= 0:
            del live[call.id]
            run.payer.call_ended(call.id)


def _paying(run: _Run, response: httpx.Response, challenge: Challenge, call: Call | None, met_402_at: datetime | None,
            max_price_msat: int | None, offer_id: str | None, sent_at: float | None) -> Flow:
    """Pay the chosen challenge (signing in, where that serves it, pays nothing) and deliver the answer."""
    payer, request = run.payer, run.request
    signed_in = yield from _sign_in(run, challenge)
    if signed_in is not None:  # a returning payer, served by signing in: nothing paid
        return (yield from _answered(run, call, signed_in))
    if challenge.reuse == "request":  # a payment buys this one request: nothing to share or wait for
        for _ in range(MAX_WAIT_ROUNDS):
            attempt = _Attempt(run, response, challenge, None, met_402_at, max_price_msat, offer_id, call=call)
            try:
                receipt, credential = yield from attempt.obtain()
            except _CallPaidMeanwhile as meanwhile:  # the same call, sent at once, reserved its payment first
                call = yield from _joined(run, meanwhile.call, mine=True)
                if call.paid:
                    return (yield from _answered(run, call, (yield from _present_again(run, challenge, call))))
                continue  # its payment failed: nothing was paid for the call, so this request pays it
            return (yield from _answered(run, call, (yield from _deliver(run, challenge, attempt, receipt, credential))))
        raise PaymentRefused(f"refused: {MAX_WAIT_ROUNDS} payments of this call by other requests failed in turn; "
                             "not paying in a loop", rule="in_flight", offers=challenge.offers, response=response)

    # When the 402 was met matters only to a shared flight (a payment for it made since is used):
    # read on the ledger's clock now, less the time since the request went out.
    if met_402_at is None:
        met_402_at = yield from _met_at(sent_at if sent_at is not None else time.monotonic())
    key = flight_key(challenge, run.url, payer.token_scope, request.headers.get("authorization"))
    for _ in range(MAX_WAIT_ROUNDS):
        if (yield Join(key)):
            # Someone else just paid what this request needs: use their payment before paying again.
            run.say(Waited, "another request paid for this; retrying with its payment", key=key)
            theirs = payer.flight_payments.get(key)
            again, mark = yield from _use_theirs(run, challenge, key, theirs.id if theirs is not None else None,
                                                 None, theirs)
        else:  # this request owns the flight: it pays, unless someone paid meanwhile
            # Requests waiting on the flight never also wait on this one's retry (a service that answers
            # slowly would hold them all): the flight is left once the payment is written down, which a
            # payment just made does beside its retry (`_deliver`), and otherwise before the retry is sent.
            attempt = _Attempt(run, response, challenge, key, met_402_at, max_price_msat, offer_id, call=call)
            try:
                receipt, credential = yield from attempt.obtain()
            finally:
                if attempt.paid is None:
                    yield Leave(key)
            if attempt.borrowed:
                again, mark = yield from _use_theirs(run, challenge, key, receipt.id, credential, receipt)
            else:
                try:
                    return (yield from _answered(run, call, (yield from _deliver(run, challenge, attempt, receipt,
                                                                                  credential))))
                except _UsedUp as used:  # another request was served with the credit it bought: pay again
                    run.used_up.append(used.receipt)
                    again, mark = used.response, used.mark
        if again.status_code != 402:
            return again
        # What the payment used bought is used up: this 402 is this request's own challenge now.
        yield ReadBody(again)
        fresh = read_challenge(again.status_code, again.headers, again.content, url=run.url)
        yield from _evict_if_presented(request, fresh)
        if not fresh:
            return again
        challenge = yield from _choose(run, fresh, again, max_price_msat, offer_id)
        run.kinds = (challenge.variant or "",) if challenge.reuse == "scope" else ()
        response = again
        met_402_at = yield from _met_at(mark)
        key = flight_key(challenge, run.url, payer.token_scope, request.headers.get("authorization"))
    raise PaymentRefused(
        f"refused: {MAX_WAIT_ROUNDS} payments by other requests for this challenge each left this one unserved; "
        "not paying in a loop", rule="in_flight", offers=challenge.offers, response=response,
    )


class _UsedUp(Exception):
    """A request's own payment crediting an account was used by another request (served with it),
    and the retry met a fresh 402: this request's own new challenge (`_paying` pays it, bounded)."""

    def __init__(self, receipt: Receipt, response: httpx.Response, mark: float) -> None:
        super().__init__("the credit this payment bought was used by another request")
        self.receipt, self.response, self.mark = receipt, response, mark


def _used_up(run: _Run, receipt: Receipt, response: httpx.Response, sent: float) -> _UsedUp:
    """Say that another request was served with what this request's own payment bought, and hand
    the 402 it met back to `_paying` as this request's own challenge now."""
    run.say(Waited, f"another request was served with what payment #{receipt.id} bought, and this one met a fresh "
                    "402: its own challenge now", receipt=receipt)
    return _UsedUp(receipt, response, sent)


def _use_theirs(run: _Run, challenge: Challenge, key: str, receipt_id: int | None, credential: Credential | None = None,
                theirs: Receipt | None = None) -> Generator[Effect, Any, tuple[httpx.Response, float]]:
    """Send the request with a payment another request made for the flight `key` (`receipt_id`;
    None: not known), and the time it went out. Nothing is claimed: the answer carries no receipt,
    since this request paid nothing. A 402 means what that payment bought is used up (the caller's
    fresh challenge) once a request was served with it, or on its account since (or it was made
    elsewhere); while its own request is still being retried here with nobody served (a service may
    learn of a payment late), this one waits for that and sends once more. A payment its own request
    met 402 with to the end is not honoured: nothing is paid for the 402 it leaves. Served with an
    account's payment another process made (`theirs`), this request notes it on its row, once per
    process (`SERVED_ANOTHER`): that payment's own request then knows what it bought was used."""
    payer, request = run.payer, run.request
    _carry(run, credential)
    if receipt_id is not None:
        run.tried.add(receipt_id)
    credit = challenge.reuse == "challenge"  # a credit on an account (what a scope's token buys is not used up)
    # a credit made here: whether it may be used is known here
    mine = receipt_id if credit and receipt_id is not None and payer.credit_state(receipt_id) is not None else None
    again: httpx.Response | None = None
    mark = time.monotonic()
    for last in (False, True):
        used = mine is None or payer.credit_used(mine)
        mark = time.monotonic()
        again = yield from _send_with_held(payer, request, payment_deadline_s=payer.payment_deadline,
                                           resend=_resend_for(request), only=run.kinds, over_callers=run.scoped)
        if again.status_code != 402:
            if credit and again.status_code < 500:
                payer.credit_served(key, receipt_id)
                if mine is None and theirs is not None:
                    yield from _note_served(run, theirs)
            shown = f"payment #{receipt_id}" if receipt_id is not None else "the payment"
            run.say(Served, f"served with HTTP {again.status_code} with {shown} another request made; nothing "
                            "paid by this one", status=again.status_code, receipt=None)
            return again, mark
        if last or mine is None or used or payer.credit_state(mine) != CREDIT_PAYING:
            break
        if not payer.credit_used(mine):  # (else it was used meanwhile: once more at once)
            yield from _until_used(run, mine)
    assert again is not None
    if receipt_id is not None:
        run.borrowed.append(receipt_id)
    if mine is not None and payer.credit_state(mine) == CREDIT_UNHONORED:
        yield ReadBody(again)
        raise run.refused(PaymentRefused(
            f"refused: ledger #{receipt_id}, another request's payment for this challenge, was answered 402 to the "
            f"end too: {run.host} did not honour it, so this request does not pay it again; nothing was paid by "
            "this request", rule="in_flight", offers=challenge.offers), again, challenge)
    return again, mark


def _note_served(run: _Run, theirs: Receipt) -> Generator[Effect, Any, None]:
    """Note on the row of another process's payment that this request was served with it (once per
    process, and only on a settled row with no note of its own to keep)."""
    payer = run.payer
    if theirs.status is not Status.SETTLED or theirs.reason or theirs.id in payer.noted_served:
        return
    payer.noted_served[theirs.id] = None
    while len(payer.noted_served) > 4096:
        payer.noted_served.pop(next(iter(payer.noted_served)))
    try:
        yield Note(theirs.id, SERVED_ANOTHER)
    except Exception as exc:  # noqa: BLE001 - the answer reaches the caller whatever the ledger does
        log.warning("[%s] could not note on ledger #%s that it served this request (%s)", run.rid, theirs.id,
                    type(exc).__name__)


def _served_elsewhere(receipt: Receipt) -> Generator[Effect, Any, bool]:
    """Whether a request of another process noted it was served with this payment (`SERVED_ANOTHER`)."""
    try:
        now: Receipt = yield GetReceipt(receipt.id)
    except Exception:  # noqa: BLE001 - not known, as without the read
        return False
    return SERVED_ANOTHER in (now.reason or "")


def _until_used(run: _Run, receipt_id: int) -> Generator[Effect, Any, None]:
    """Wait while the request that made payment `receipt_id` (in this process) is still retrying
    with it and nobody was served with it: until someone is, or its own request ends (bounded by
    `inflight_wait_s`)."""
    payer = run.payer
    run.say(Waited, f"payment #{receipt_id} is still being retried by its own request; waiting for it")
    waited, pause = 0.0, 0.01
    while (payer.credit_state(receipt_id) == CREDIT_PAYING and not payer.credit_used(receipt_id)
           and waited < payer.inflight_wait_s):
        yield Sleep(pause)
        waited, pause = waited + pause, min(pause * 1.5, 0.1)


def _sign_in(run: _Run, challenge: Challenge) -> Generator[Effect, Any, httpx.Response | None]:
    """Where the policy allows signing in and the dialect's service offers it, the answer to the request
    sent signed in (None: paying goes on). Only for a host the policy allows, and only with a signer."""
    payer, dialect = run.payer, dialect_of(challenge)
    address = getattr(payer.signer, "address", None)
    if not payer.policy.sign_in or not isinstance(dialect, SignsIn) or not isinstance(address, str):
        return None
    try:
        payer.policy.check_host(run.host)
    except PaymentRefused:
        return None  # a host the policy does not pay learns nothing of the payer either
    ctx = SigningIn(request=run.request, challenge=challenge, payer_address=address,
                    report=lambda kind, message, **fields: run.say(kind, message, **fields))
    answer: httpx.Response | None = yield from dialect.sign_in(ctx)
    if answer is not None:
        run.say(Served, f"served with HTTP {answer.status_code} after signing in; nothing paid",
                status=answer.status_code, receipt=None)
    return answer


def _call_of(run: _Run, challenge: Challenge) -> Generator[Effect, Any, Call | None]:
    """The ledger's call for a request whose retry must not pay twice: a non-idempotent method, a
    service that asks for a call identifier, or a request the application named with its own
    `Idempotency-Key` (a GET whose answer a payment buys, sent again after a crash, presents the
    payment made for it). Its key, and the payment already made for it. Identical GETs without a
    key are separate calls: many at once each pay their own one-request challenge."""
    request = run.request
    if request.method in IDEMPOTENT and not challenge.identified and "idempotency-key" not in request.headers:
        return None
    fingerprint = call_fingerprint(request) or "unread:" + secrets.token_hex(16)
    call: Call = yield CallKey(fingerprint, run.callers_key)
    return (yield from _joined(run, call))


class _CallPaidMeanwhile(Exception):
    """The reservation found a live payment for this very call: another request of it (sent at the
    same moment) reserved first. Its payment is presented, never a second one (`_joined`)."""

    def __init__(self, call: Call) -> None:
        super().__init__("the call was paid meanwhile")
        self.call = call


def _joined(run: _Run, call: Call, *, mine: bool = False) -> Generator[Effect, Any, Call]:
    """The call as it stands once no other send of it in this process is paying it. Sent several
    times at once under the application's own Idempotency-Key, the first to reserve pays; the others
    wait for that payment's outcome (a signed payment must not reach the service twice while it is
    being settled), then present it; waiting longer than `inflight_wait_s`, they are told so and send
    nothing. Its payment failed: the call as the ledger has it now (unpaid, so this request pays).
    Without the application's key, a send while another is paying is told so (`CallAlreadyPaid`) at
    once. A pending payment whose send ended in this process (it timed out, its answer was lost) is
    presented again at once, the same payment, never a new one: how an application's retry is
    served; one another process may be sending is waited for first. `mine`: this flow is itself
    counted as a send of the call."""
    waited, pause = 0.0, 0.01
    while call.paid and call.receipt is not None and call.receipt.status is Status.PENDING:
        receipt = call.receipt
        waited_out = waited >= run.payer.inflight_wait_s
        if not run.payer.live_calls.get(call.id, 0) - (1 if mine else 0):  # no other send of it in this process
            if run.callers_key is None or call.id in run.payer.ended_calls or waited_out:
                break  # its send ended here, or another process's did (or died): present that payment again
        elif run.callers_key is None or waited_out:
            raise CallAlreadyPaid(
                f"{run.request.method} {safe.clean(run.shown_url, 200)} is being paid by another send of the same "
                f"call (ledger #{receipt.id}, still pending); nothing is paid or sent twice: send it again once "
                "`httpay ledger` shows the payment settled"
                + ("" if run.callers_key is not None else ", or give each operation its own Idempotency-Key"),
                receipt=receipt, response=None)
        if not waited:
            run.say(Waited, f"payment #{receipt.id} for this call is being made by another request; "
                            "waiting to present it, not paying twice", receipt=receipt)
        yield Sleep(pause)
        waited, pause = waited + pause, min(pause * 1.5, 0.25)  # a slow wallet is polled less often
        found: Call | None = yield CallNow(call.id)  # a read: the payer's own writes never wait on the pollers
        if found is None or not found.paid:  # gone, or its payment failed: the call as it is now (unpaid: pay)
            fresh: Call = yield CallKey(call.fingerprint, run.callers_key)
            return fresh
        call = found
    return call


def _answered(run: _Run, call: Call | None, response: httpx.Response) -> Generator[Effect, Any, httpx.Response]:
    """The call's answer reaches the application: the call is done (sent again, it is a new call).
    A call the application named with its own Idempotency-Key stays that call for the whole call
    window: sent again with that key, it presents the same payment (the key says it is the same
    operation), never a new one."""
    if call is not None and run.callers_key is None:
        try:
            yield CallAnswered(call.id)
        except Exception as exc:  # noqa: BLE001 - the answer must reach the caller whatever the ledger does
            log.warning("[%s] could not mark call #%s answered (%s)", run.rid, call.id, type(exc).__name__)
    return response


def _present_again(run: _Run, challenge: Challenge, call: Call) -> Flow:
    """Send the call again with the credential its payment presented (the same signed payload, the
    same Idempotency-Key), never a new payment; a refusal is CallAlreadyPaid."""
    receipt, request = call.receipt, run.request
    assert receipt is not None
    what = f"{request.method} {safe.clean(run.shown_url, 200)}"
    paid = f"ledger #{receipt.id}, {receipt.status.value}"
    advice = (f"keep the receipt and ask the service about call id {call.key}; to make a new call on purpose, send it "
              "with its own Idempotency-Key header")
    if not call.credential:
        raise CallAlreadyPaid(f"{what} was already paid ({paid}) and httpay holds no credential of that payment to "
                              f"present again; nothing is paid twice: {advice}", receipt=receipt, response=None)
    run.say(Retried, f"this call was already paid ({paid}): presenting that payment again, not paying twice",
            attempt=1)
    request.headers.update(call.credential)
    try:
        answer: httpx.Response = yield Send(request)
        answer.request = request
        if answer.status_code == 402 or answer.status_code >= 500:
            yield ReadBody(answer)
    except Exception as exc:
        kind = PaymentSentUnanswered if receipt.status is Status.PENDING else PaidRequestFailed
        raise kind(f"{what} was already paid ({paid}); sent again with that payment, the service did not answer "
                   f"({_name(exc)}); nothing is paid twice", receipt=receipt) from exc
    proof = dialect_of(challenge).settlement(answer)
    if answer.status_code == 402 or (proof is not None and proof.success is False):
        noted = receipt  # a settled row keeps its own note (the transaction that settled it)
        if receipt.status is Status.PENDING:
            noted = yield Note(receipt.id, "the call was sent again and the service refused the payment made for it")
        run.say(PaymentFailed, f"{run.host} refused the payment already made for this call; not paying twice",
                logging.WARNING, receipt=noted, error="refused the payment already made")
        raise CallAlreadyPaid(f"{what} was already paid ({paid}) and {run.host} refused that payment when the call was "
                              f"sent again; nothing is paid twice: {advice}", receipt=noted, response=answer)
    if receipt.status is Status.PENDING:  # a payment that travels with the request: its answer settles it
        return (yield from _outcome(run, challenge, answer, receipt, None, fmt_msat(receipt.amount_msat)))
    if answer.status_code >= 500:
        raise (yield from _unserved(run, receipt, f"the service answered HTTP {answer.status_code} to the call sent "
                                    "again with its payment (its answer is in .response)", response=answer))
    answer.extensions[RECEIPT_EXTENSION] = receipt
    run.say(Served, f"served with HTTP {answer.status_code} with payment #{receipt.id}, made for this call before",
            status=answer.status_code, receipt=receipt)
    return answer


def _advertise(payer: Payer, request: httpx.Request) -> None:
    """Put on a request to a host whose 402s named a dialect with something to advertise (MPP's
    `Accept-Payment`: the methods this payer's policy allows) those headers, unless the caller set
    them. A host never seen asking in such a dialect gets nothing: the unpaid path to everyone else
    adds not one header, and the flow ranks every offer itself whatever the server sends."""
    if not payer.advertise_to:
        return
    wanted = payer.advertise_to.get(host_of(request.url))
    if wanted:
        for name, value in wanted.items():
            if name not in request.headers:
                request.headers[name] = value


def _learn_advertising(payer: Payer, request: httpx.Request, challenges: Sequence[Challenge]) -> None:
    """A host asked in dialects that advertise: keep their headers for it (this request's paid
    retry, and every later request there, carry them)."""
    headers: dict[str, str] = {}
    can_sign = payer.signer is not None
    for dialect in {dialect_of(c) for c in challenges}:
        headers.update(dialect.advertise(payer.policy, can_sign))
    if headers:
        payer.advertise_to[host_of(request.url)] = headers
        _advertise(payer, request)


def _choose(run: _Run, ranked: Sequence[Challenge], response: httpx.Response, max_price_msat: int | None,
            offer_id: str | None) -> Generator[Effect, Any, Challenge]:
    """Which challenge of a 402 to pay: the one whose offer `quote()` picks among every challenge's
    (L402, LSAT, MPP and x402 side by side, at the one rate). One challenge needs no choice; the
    attempt quotes the chosen one again (after any wait, on the spent total then) and asks the approver."""
    if len(ranked) == 1:
        return ranked[0]
    q = yield from _quoted(run, ranked, response, ranked[0], max_price_msat, offer_id)
    return q.challenge


def _quoted(run: _Run, challenges: Challenge | Sequence[Challenge], response: httpx.Response, named: Challenge,
            max_price_msat: int | None, offer_id: str | None) -> Generator[Effect, Any, Quote]:
    """`quote()` on the rate and the spent total read now (the total only when a total budget is
    set); a refusal is reported as one step, naming `named`'s offers."""
    payer, policy = run.payer, run.payer.policy
    rate: Rate = yield GetRate()
    spent = (yield Spent()) if policy.has_total_budget else 0
    try:
        return quote(challenges, policy, url=run.shown_url, host=run.host, usd_per_btc=rate.usd_per_btc,
                     spent_msat=spent, cannot_pay=payer.cannot_pay, max_price_msat=max_price_msat, offer_id=offer_id)
    except PaymentRefused as exc:
        raise run.refused(_with_rate_failure(exc, rate), response, named) from None


def _with_rate_failure(exc: PaymentRefused, rate: Rate) -> PaymentRefused:
    """A refusal for want of a rate, saying which source failed (an unreachable wallet is not a
    missing setting: the person should look at the wallet first)."""
    if exc.rule != "exchange_rate" or rate.why_unknown is None:
        return exc
    return PaymentRefused(f"{exc.reason} ({rate.why_unknown})", rule=exc.rule, offers=exc.offers,
                          response=exc.response, knob=exc.knob,
                          advice="check that the wallet can be reached, or set {knob}")


def check_quoted_invoice(policy: Policy, q: Quote, invoice: Invoice, *, network: str | None) -> None:
    """Every check an invoice must pass against its quote before anything is reserved or paid:
    amount present and within the quoted price and every per-payment cap, the wallet's `network`
    (None: no wallet known, as a preview may have), expiry, the pinned payee. The flow runs it, and
    so does a preview, which then refuses where paying would."""
    per_payment = policy.max_per_payment_msat(q.usd_per_btc, q.challenge.offers)
    cap = min((c for c in (per_payment, q.max_price_msat) if c is not None), default=None)
    check_invoice(invoice, network=network, expected_msat=q.price_msat, tolerance=policy.price_tolerance,
                  max_msat=cap, payee=policy.payee_for(q.host),
                  max_name="per payment" if cap == per_payment else "this request's price cap")


@dataclass
class _Attempt:
    """Paying one challenge: quote, obtain, check, write down, pay. `key` is the flight's (None: a
    payment buys one request and is shared with no one)."""

    run: _Run
    response: httpx.Response
    challenge: Challenge
    key: str | None
    met_402_at: datetime | None  # None: a payment for one request, shared with no flight
    max_price_msat: int | None
    offer_id: str | None
    shown: str = ""  # the quoted price as a person reads it ("0.01 USDC on eip155:8453"), for messages
    call: Call | None = None  # the ledger's call this request is (a non-idempotent one, or one the service identifies)
    # A Lightning payment made and not yet written down (its row pending): `_deliver` records it
    # beside the retry, and leaves the flight once it is recorded.
    paid: _Unrecorded | None = None
    borrowed: bool = False  # what `obtain` returned is another request's payment (this one paid nothing)
    credit_mark: tuple[int, int] = (0, 0)  # `Payer.credit_mark` of the flight just before paying

    def obtain(self) -> Generator[Effect, Any, tuple[Receipt, Credential | None]]:
        """The receipt of the payment this request uses, and the credential its retry presents
        (None: present nothing new). `borrowed` says when it is a payment another request made for
        this flight or this invoice."""
        run, payer = self.run, self.run.payer
        if self.key is not None:
            # A payment for this flight made after this request met its 402 (by a flow that left before
            # this one joined, or by another process) is used, never repeated, nor refused by a budget it spent.
            meanwhile = yield from self._paid_meanwhile()
            if meanwhile is not None:
                done = yield from _await_other(run, meanwhile)
                if done is not None:
                    return self._theirs(done), None
        q = yield from self.quote()
        dialect = dialect_of(self.challenge)
        ctx = Obtaining(request=run.request, response=self.response, challenge=self.challenge, quote=q,
                        policy=payer.policy, deadline=deadline_of(self.response),
                        payer_address=getattr(payer.signer, "address", None),
                        report=lambda kind, message, **fields: run.say(kind, message, **fields), follow_up=follow_up,
                        call_key=self.call.key if self.call is not None else None)
        try:
            payable = yield from dialect.obtain(ctx)
        except PaymentRefused as exc:
            raise run.refused(exc, self.response, self.challenge) from None
        except PaymentDeadlineExceeded as exc:
            raise run.deadline_passed(exc) from None
        except InvoiceError as exc:
            raise run.invoice_refused(exc) from None
        except PaymentRequestError as exc:
            run.say(PaymentFailed, f"nothing paid: {exc}", logging.WARNING, receipt=None, error=str(exc))
            raise
        if isinstance(payable, Invoiced):
            self._check_invoice(payable, q)
        receipt = yield from self._reserve(payable, q)
        if isinstance(receipt, tuple):
            return receipt  # another request paid this very invoice: its receipt and credential
        if isinstance(payable, ToSign):
            signature = yield from _sign(run, receipt, payable)
            return receipt, (yield from self._keep_call(receipt, dialect.present(self.challenge, payable,
                                                                                 Proof(signature=signature))))
        if self.key is not None:
            self.credit_mark = payer.credit_mark(self.key)  # (requests served from here on may use its credit)
        payment = yield from _pay(run, receipt, payable)
        credential = yield from self._keep_call(
            receipt, dialect.present(self.challenge, payable, Proof(preimage=payment.preimage or "")))
        settled = replace(receipt, status=Status.SETTLED, preimage=payment.preimage, fee_msat=payment.fee_msat,
                          amount_msat=payment.amount_msat or receipt.amount_msat)
        self.paid = _Unrecorded(receipt, settled, payment, credential)
        run.say(Paid, lambda: f"paid {fmt_msat(settled.amount_msat, q.usd_per_btc)} + fee {settled.fee_msat} msat, "
                              f"hash {payable.reference[:16]}…, ledger #{settled.id}", receipt=settled, payment=payment)
        return receipt, credential  # pending: written down beside the retry (`_deliver`)

    def _keep_call(self, receipt: Receipt, credential: Credential) -> Generator[Effect, Any, Credential]:
        """The credential with the call's Idempotency-Key (a non-idempotent request), kept on the call
        before it is sent, so the application's retry presents this very payment again."""
        call = self.call
        if call is None:
            return credential
        if self.run.request.method not in IDEMPOTENT and "idempotency-key" not in self.run.request.headers:
            credential = replace(credential, headers={**credential.headers, "Idempotency-Key": call.key})
        try:
            yield RecordCall(call.id, receipt.id, credential.headers)
        except Exception as exc:  # noqa: BLE001 - the payment goes on; a retry then refuses rather than pays
            log.warning("[%s] could not keep the credential on call #%s (%s)", self.run.rid, call.id,
                        type(exc).__name__)
        return credential

    def quote(self) -> Generator[Effect, Any, Quote]:
        """The one decision, on the rate resolved once for this attempt; then the approver's, if any."""
        run, policy = self.run, self.run.payer.policy
        q = yield from _quoted(run, self.challenge, self.response, self.challenge, self.max_price_msat, self.offer_id)
        run.say(Quoted, q, quote=q)
        if policy.approve is not None:
            q = yield from self._approved(q)
        self.shown = _shown(q)
        return q

    def _approved(self, q: Quote) -> Generator[Effect, Any, Quote]:
        """The approver's answer, quoted again through the very same checks."""
        run, payer, policy = self.run, self.run.payer, self.run.payer.policy
        asked_at = time.monotonic()
        try:
            answer = yield Ask(q)
        except PaymentRefused as exc:  # the approver said why itself (nobody answered in time)
            raise run.refused(exc, self.response, self.challenge) from None
        if (deadline := deadline_of(self.response)) is not None:
            deadline.paused(asked_at)  # a person's time to decide is not the service's delay
        try:
            q = requote(q, policy, answer, payer.cannot_pay)
        except PaymentRefused as exc:
            raise run.refused(exc, self.response, self.challenge) from None
        run.say(Approved, f"approved: {q}", quote=q)
        return q

    def _check_invoice(self, payable: Invoiced, q: Quote) -> None:
        """Every check the invoice must pass before anything is reserved or paid (`check_quoted_invoice`)."""
        run = self.run
        try:
            check_quoted_invoice(run.payer.policy, q, payable.invoice, network=run.payer.lightning.network)
        except InvoiceError as exc:
            raise run.invoice_refused(exc) from None
        except PaymentRefused as exc:
            raise run.refused(exc, self.response, self.challenge) from None
        run.say(InvoiceChecked, payable.invoice, invoice=payable.invoice, quote=q)

    def _token_kept(self, payable: Invoiced) -> str | None:
        """The reusable credential this payment buys, its preimage left out, for the pending row: a
        crash after the wallet paid and before the token is stored loses only the preimage, which
        reconciling the row finds (`Ledger.restore_token`). None for what buys one request."""
        if self.challenge.reuse != "scope":
            return None
        credential = dialect_of(self.challenge).present(self.challenge, payable, Proof(preimage=PREIMAGE_MARK))
        if credential.reusable is None or PREIMAGE_MARK not in credential.reusable:
            return None
        expires = credential.expires_at.isoformat() if credential.expires_at is not None else None
        return json.dumps({"scope": held_key(token_scope(self.run.url, self.run.payer.token_scope), credential.variant),
                           "value": credential.reusable, "expires_at": expires})

    def _paid_meanwhile(self) -> Generator[Effect, Any, Receipt | None]:
        """The flight's payment pending now, or settled since this request met its 402, if there is one."""
        assert self.key is not None
        existing: Receipt | None = yield Find(self.key)
        if existing is None or existing.id in self.run.tried:  # (one this request made or used already)
            return None
        if existing.status is Status.PENDING or (existing.status is Status.SETTLED and self.met_402_at is not None
                                                 and existing.updated_at >= self.met_402_at):
            return existing
        return None

    def _reserve(self, payable: Payable, q: Quote) -> Generator[
            Effect, Any, Receipt | tuple[Receipt, Credential | None]]:
        """Write the payment pending, budgets (fees included) re-checked in the ledger's transaction.
        A payment of this flight or invoice by another request is waited for and used instead."""
        run, payer = self.run, self.run.payer
        amount = payable.amount_msat
        assert amount is not None  # an invoice without an amount never passes the checks
        fee_cap = fee_cap_for(payer.policy, amount, q.cap_msat) if isinstance(payable, Invoiced) else 0
        kind, identity = payer.wallet_name(payable.rail)
        token = self._token_kept(payable) if isinstance(payable, Invoiced) else None
        not_before: datetime | None = self.met_402_at
        for round_ in range(MAX_WAIT_ROUNDS):
            run.within_deadline(self.response, "the wait for another payment" if round_ else "the payment")
            intent = Intent(
                host=run.host, url=run.url, protocol=self.challenge.dialect, method=q.method, amount_msat=amount,
                payment_hash=payable.reference, offer_id=q.offer.offer_id, offer_title=q.offer.title,
                offer_amount=q.offer.price.amount, offer_currency=q.offer.price.currency, credits=q.offer.balance,
                wallet=kind, challenge_key=self.key, not_before=not_before, max_fee_msat=fee_cap, wallet_id=identity,
                call_id=self.call.id if self.call is not None else None, tags=run.tags, token=token,
                key_window=timedelta(seconds=payer.call_window_s) if run.callers_key is not None else None,
            )
            try:
                limits = tuple(payer.policy.limits(run.host, q.usd_per_btc, self.challenge.offers, tags=run.tags))
                receipt: Receipt = yield Reserve(intent, limits, q.usd_per_btc)
            except (ChallengeInFlight, DuplicatePayment) as busy:
                if self.key is None:
                    if self.call is not None and run.callers_key is not None and isinstance(busy, DuplicatePayment):
                        now_: Call = yield CallKey(self.call.fingerprint, run.callers_key)
                        if now_.id == self.call.id and now_.paid:
                            raise _CallPaidMeanwhile(now_) from None
                    raise run.refused(busy, self.response, self.challenge) from None
                existing: Receipt = busy.existing
                if isinstance(busy, ChallengeInFlight) and existing.id in run.tried and \
                        existing.status is Status.SETTLED:  # one this request made or used: only a later one counts
                    not_before = existing.updated_at + timedelta(microseconds=1)
                    continue
                # Another request paid (or is paying) this invoice or this flight: wait for it and use it.
                done = yield from _await_other(run, existing)
                if done is not None:
                    if done.payment_hash == payable.reference and done.preimage:
                        credential = dialect_of(self.challenge).present(self.challenge, payable,
                                                                        Proof(preimage=done.preimage))
                        yield from _keep(run, credential, done.payment_hash)
                        return self._theirs(done), credential
                    return self._theirs(done), None
                not_before = None  # it failed: nothing was paid, so pay now (unless yet another is pending)
                continue
            except PaymentRefused as exc:
                raise run.refused(exc, self.response, self.challenge) from None
            run.say(Reserved, functools.partial(_reserved_line, receipt, q.usd_per_btc), receipt=receipt)
            return receipt
        raise PaymentRefused(f"refused: {MAX_WAIT_ROUNDS} other payments for this challenge failed in turn; "
                             "not paying in a loop", rule="in_flight", offers=self.challenge.offers,
                             response=self.response)

    def _theirs(self, receipt: Receipt) -> Receipt:
        """Another request's payment, used by this one: its flight's waiters use it too."""
        self.borrowed = True
        if self.key is not None:
            self.run.payer.flight_paid(self.key, receipt)
        return receipt

    def record(self) -> Generator[Effect, Any, Receipt]:
        """Record the payment settled, then leave the flight. A reusable credential is stored first,
        so whoever sees the payment settled (a waiting request, another process) finds the credential
        it bought. Runs beside the retry: it says nothing (its events would come from another thread)."""
        assert self.paid is not None
        run, receipt, settled = self.run, self.paid.receipt, self.paid.settled
        try:
            try:
                yield from _keep(run, self.paid.credential, self.paid.payment.payment_hash)
            except Exception as exc:  # noqa: BLE001 - the payment must be recorded whatever storing the token did
                log.warning("[%s] could not store the paid credential (%s); the payment is still recorded", run.rid,
                            type(exc).__name__)
            try:
                done: Receipt = yield Settle(receipt.id, settled.preimage or "", settled.fee_msat, settled.amount_msat)
            except Exception as exc:
                raise PaidRequestFailed(
                    f"{paid_text(receipt)}; recording the payment failed ({type(exc).__name__}); ledger "
                    f"#{receipt.id} stays pending until `httpay ledger reconcile` settles it", receipt=receipt) from exc
            return done
        finally:
            if self.key is not None:
                yield Leave(self.key)


@dataclass(frozen=True)
class _Unrecorded:
    """A Lightning payment made, its row still pending (`receipt`): what writing it down needs, and
    the row as it is to be written (`settled`, what `Paid` says)."""

    receipt: Receipt
    settled: Receipt
    payment: Payment
    credential: Credential


def _reserved_line(receipt: Receipt, rate: float | None) -> str:
    fees = fee_cap_text(receipt.fee_msat, rate)
    return f"ledger #{receipt.id} pending for {fmt_msat(receipt.amount_msat, rate)}{fees}"


def _shown(q: Quote) -> str:
    """The quoted price as a person reads it, in the offer's own unit ("0.01 USDC on eip155:8453")."""
    return f"{q.offer.price}" + (f" on {q.offer.network}" if q.offer.network else "")


def _keep(run: _Run, credential: Credential, payment_hash: str | None) -> Generator[Effect, Any, None]:
    """Store a reusable credential so later requests in its scope present it instead of paying."""
    if credential.reusable is None:
        return
    scope = token_scope(run.url, run.payer.token_scope)
    if credential.variant or run.payer.token_variants:  # a host of several kinds: this path presents it first
        run.payer.remember_variant((_path_key(run.url), scope), credential.variant or "")
    yield SaveToken(held_key(scope, credential.variant), credential.reusable, payment_hash, credential.expires_at)


def _met_at(mark: float) -> Generator[Effect, Any, datetime]:
    """When a 402 was met, on the ledger's clock (shared by every process): its now, less the time
    elapsed since `mark` (`time.monotonic()` taken before the request was sent). No wall clock of
    this machine enters, so a skewed one cannot make another process's payment look older."""
    now: datetime = yield LedgerNow()
    return now - timedelta(seconds=max(time.monotonic() - mark, 0.0))


def _await_other(run: _Run, existing: Receipt) -> Generator[Effect, Any, Receipt | None]:
    """Another request or process holds a payment for this challenge. Wait for it (settled: use it),
    or reconcile it if a crash left it behind. None means: nothing was paid, pay now."""
    payer = run.payer
    run.say(Waited, f"payment #{existing.id} for this challenge is {existing.status.value}; not paying twice",
            receipt=existing)
    waited = 0.0
    current = existing
    while current.status is Status.PENDING:
        now: datetime = yield LedgerNow()
        if (now - current.updated_at).total_seconds() >= payer.stale_pending_s:  # one clock: the ledger's
            outcome = yield Reconcile(current, payer.stale_pending_s)
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
        current = yield GetReceipt(current.id)
    return current if current.status is Status.SETTLED else None


def _pay(run: _Run, receipt: Receipt, payable: Invoiced) -> Generator[Effect, Any, Payment]:
    """Have the wallet pay the invoice within the fee cap the ledger holds; a preimage that proves
    the invoice is the only proof taken. An unknown outcome leaves the row pending."""
    invoice = payable.invoice
    try:
        payment: Payment = yield Pay(invoice.bolt11, receipt.fee_msat)
    except Exception as exc:  # any failure of a wallet (its own, or a bug) leaves the outcome unknown
        if isinstance(exc, WalletError) and exc.outcome_known:
            failed = yield Fail(receipt.id, f"{type(exc).__name__}: {exc}")
            run.say(PaymentFailed, f"wallet did not pay: {exc}", logging.WARNING, receipt=failed, error=str(exc))
            raise
        found: Payment | None = yield Lookup(invoice.payment_hash)
        if found is not None and found.settled and found.proves(invoice.payment_hash):
            payment = found
        else:
            noted = yield Note(receipt.id, f"outcome unknown: {type(exc).__name__}")
            run.say(PaymentFailed, f"the wallet did not say whether it paid; ledger #{receipt.id} stays pending",
                    logging.WARNING, receipt=noted, error=f"outcome unknown: {type(exc).__name__}")
            said = str(exc) if isinstance(exc, HttpayError) else f"{type(exc).__name__} from the wallet"
            raise PaymentOutcomeUnknown(
                f"the wallet did not say whether it paid (ledger #{receipt.id} stays pending; run "
                "`httpay ledger reconcile` later): " + said, receipt=noted,
            ) from None
    if not payment.settled:
        if payment.status is PaymentStatus.FAILED:
            why = safe.clean(payment.failure_reason or "wallet reported failure", 200)
            failed = yield Fail(receipt.id, why)
            run.say(PaymentFailed, f"wallet did not pay: {why}", logging.WARNING, receipt=failed, error=why)
            raise WalletError(f"the wallet reported the payment failed: {why}")
        pending = yield Note(receipt.id, "outcome unknown: the payment is still in flight at the wallet")
        run.say(PaymentFailed, f"the payment is still in flight at the wallet; ledger #{receipt.id} stays pending",
                logging.WARNING, receipt=pending, error="in flight at the wallet")
        raise PaymentOutcomeUnknown(
            f"the payment is still in flight at the wallet (ledger #{receipt.id} stays pending)", receipt=pending)
    if not payment.proves(invoice.payment_hash):
        noted = yield Note(receipt.id, "wallet returned a preimage that does not match the invoice")
        run.say(PaymentFailed, f"the wallet's preimage does not prove the invoice; ledger #{receipt.id} stays pending",
                logging.WARNING, receipt=noted, error="preimage does not prove the invoice")
        raise PaymentOutcomeUnknown(
            f"the wallet said paid but its preimage does not prove the invoice (ledger #{receipt.id} stays pending)",
            receipt=noted,
        )
    if payment.fee_msat > receipt.fee_msat:  # a wallet that cannot enforce the cap (LNbits) went over it
        log.warning("[%s] the wallet spent %d msat on fees, above the %d msat cap it was given and the ledger held; "
                    "the ledger records what it spent", run.rid, payment.fee_msat, receipt.fee_msat)
    return payment


def _sign(run: _Run, receipt: Receipt, payable: ToSign) -> Generator[Effect, Any, bytes]:
    """Have the signer sign the payment; if it does not, the row is failed (nothing was sent)."""
    try:
        signature: bytes = yield Sign(payable.domain, payable.types, payable.primary_type, payable.message)
    except Exception as exc:
        failed = yield Fail(receipt.id, f"not signed: {type(exc).__name__}")
        run.say(PaymentFailed, "the signer did not sign; nothing was sent", logging.WARNING, receipt=failed,
                error=type(exc).__name__)
        if isinstance(exc, HttpayError):
            raise
        raise WalletError(f"the signer failed ({type(exc).__name__}); nothing was sent") from None
    except GeneratorExit:  # the flow closed by its driver: no step may follow
        raise
    except BaseException:  # cancelled while signing: the signature is dropped unsent, so nothing is counted
        try:
            yield Fail(receipt.id, "not signed: the request was cancelled while it was being signed; nothing was sent")
        except Exception:  # noqa: BLE001 - the cancellation reaches the caller whatever the ledger does
            log.warning("[%s] could not release ledger #%s after the cancellation", run.rid, receipt.id)
        raise
    return signature


# -- after paying: the request again, with the proof --------------------------------------------
def _deliver(run: _Run, challenge: Challenge, attempt: _Attempt, receipt: Receipt,
             credential: Credential | None) -> Flow:
    """Send the request this request's payment bought: after a Lightning payment, retried until
    served (one just made is written down beside its first retry); with a payment that travels with
    the request (its row still pending), once, and its outcome read from the service's answer.
    (Another request's payment is used by `_use_theirs`, never here: it is not this request's.)"""
    if attempt.paid is not None:
        return (yield from _retry_beside(run, challenge, attempt))
    assert receipt.status is Status.PENDING and credential is not None and not attempt.borrowed
    return (yield from _send_payment(run, challenge, receipt, credential,
                                     attempt.shown or fmt_msat(receipt.amount_msat)))


def _retry_beside(run: _Run, challenge: Challenge, attempt: _Attempt) -> Flow:
    """The first retry goes out while the payment is written down (the network's wait hides the
    ledger's write). Should the write fail, the error says so, carrying the answer the payment bought."""
    assert attempt.paid is not None
    payer, receipt = run.payer, attempt.paid.receipt
    run.tried.add(receipt.id)
    if challenge.reuse == "challenge" and attempt.key is not None:  # a credit on an account: others may use it
        payer.credit_made(receipt.id, attempt.key, attempt.credit_mark, receipt.credits)
        payer.flight_paid(attempt.key, receipt)  # (before the flight is left: its waiters know the payment)
        run.repays = attempt.call is None
    try:
        _carry(run, attempt.paid.credential)
        sent = time.monotonic()
        first, recorded = yield Beside(_retry_once(run, 1), attempt.record())
        if recorded.error is not None:
            error = recorded.error
            if isinstance(error, PaidRequestFailed) and isinstance(first.value, httpx.Response):
                error.response = first.value
                try:
                    yield ReadBody(first.value)  # whole, for the caller to use; its connection goes back
                except Exception:  # noqa: BLE001 - the recording's failure is what the caller must learn
                    first.value.close()
            raise error
        return (yield from _retry(run, challenge, recorded.value, first, sent))
    finally:
        payer.credit_ended(receipt.id, CREDIT_OVER)  # (a payment served or not honoured stays so)


def _carry(run: _Run, credential: Credential | None) -> None:
    """Put the credential a payment bought on the request (an account credited needs none)."""
    if credential is not None and credential.headers:
        run.request.headers.update(credential.headers)
        run.proofs.update(credential.headers)
        if credential.reusable is not None:
            run.request.extensions[TOKEN_EXTENSION] = (
                held_key(token_scope(run.url, run.payer.token_scope), credential.variant), credential.reusable)


def _retry_once(run: _Run, attempt: int) -> Flow:
    """One retry of the paid request: the first presents the credential just bought (none newer can
    be stored yet); a later one asks the ledger, where another request may have stored a newer one."""
    run.say(Retried, f"retrying the request (attempt {attempt})", attempt=attempt)
    resp = yield from _send_with_held(run.payer, run.request, look=attempt > 1, only=run.kinds,
                                      over_callers=run.scoped)
    if resp.status_code == 402 or resp.status_code >= 500:
        yield ReadBody(resp)  # what the flow reads itself; the answer the payment bought streams
    return resp


def _retry(run: _Run, challenge: Challenge, receipt: Receipt, first: Outcome | None = None,
           sent: float | None = None) -> Flow:
    """Repeat the request now that it is paid for (`first`: the first retry's outcome, already sent
    at `sent`). A service may learn of the payment a moment late, so a 402 is retried a few times
    with backoff before it is called not honored. Money has left by now, so any failure (no answer,
    a reset, a 5xx, a broken body) is a PaidRequestFailed that carries the receipt; the ledger row
    stays settled. A credit on an account another request was served with meanwhile (`credit_uses`)
    is used up: a 402 after that is this request's fresh challenge (`_UsedUp`), not a payment the
    service failed to honour."""
    payer = run.payer
    delay = payer.retry_delay_s
    tries = max(1, payer.retries_after_payment)  # the request a payment bought is sent at least once
    resp: httpx.Response | None = None
    shared = payer.credit_state(receipt.id) is not None  # a credit on an account, made here: others may use it
    elsewhere = False  # a request of another process was served with it (it noted so on the row)
    for attempt in range(1, tries + 1):
        if shared and attempt > 1 and not elsewhere and not payer.credit_used(receipt.id):
            elsewhere = yield from _served_elsewhere(receipt)  # (read only after a 402 to this payment)
        known = shared and (elsewhere or payer.credit_used(receipt.id))  # before this send
        if known and run.repays and receipt.credits == 1 and resp is not None and sent is not None:
            raise _used_up(run, receipt, resp, sent)  # its one credit went to another: nothing left to send for
        if attempt > 1 or sent is None:
            sent = time.monotonic()
        try:
            resp = first.get() if attempt == 1 and first is not None else (yield from _retry_once(run, attempt))
        except Exception as exc:
            if isinstance(exc, PaidRequestFailed | PaymentNotHonored):
                raise
            raise (yield from _unserved(run, receipt, _no_answer(exc))) from exc
        if resp.status_code >= 500:
            raise (yield from _unserved(run, receipt, f"the service answered HTTP {resp.status_code} to the paid "
                                        "request (its answer is in .response)", response=resp))
        if resp.status_code != 402:
            told = dialect_of(challenge).settlement(resp)
            if told is not None and told.transaction:  # the service's own receipt (MPP Payment-Receipt)
                receipt = yield Note(receipt.id, f"service receipt {safe.clean(told.transaction, 120)}"
                                                 f"{' (' + safe.clean(told.network, 40) + ')' if told.network else ''}")
            resp.extensions[RECEIPT_EXTENSION] = receipt
            if shared:
                payer.credit_served(None, receipt.id)
            run.say(Served, f"served with HTTP {resp.status_code} after payment #{receipt.id}",
                    status=resp.status_code, receipt=receipt)
            return resp
        if known or (shared and payer.credit_used(receipt.id)):  # another request was served with it (or since)
            if run.repays and (known or attempt == tries or receipt.credits == 1):  # (served before this send)
                raise _used_up(run, receipt, resp, sent)
            if not known:
                continue  # the service had taken the payment in by then: once more at once
        if attempt < tries:
            yield Sleep(delay)
            delay = min(delay * 2, 5.0)
    assert resp is not None
    if shared:
        payer.credit_ended(receipt.id, CREDIT_OVER if elsewhere else CREDIT_UNHONORED)
    told = dialect_of(challenge).settlement(resp)
    why = f": {told.reason}" if told is not None and told.reason else ""
    what = f"the service still answers 402 after {tries} tries{why}"
    try:
        receipt = yield Note(receipt.id, f"paid, then {what}")
    except Exception:  # noqa: BLE001 - the error below must reach the caller whatever the ledger does
        log.warning("[%s] could not note the failure on ledger #%s", run.rid, receipt.id)
    run.say(PaymentFailed, f"{paid_text(receipt)}; {what}", logging.WARNING, receipt=receipt, error=what)
    raise PaymentNotHonored(
        f"paid (ledger #{receipt.id}, hash {(receipt.payment_hash or '')[:16]}…) but {run.host} still "
        f"answers 402 after {tries} tries{why}; keep the receipt and contact the service",
        receipt=receipt, response=resp, problem=told.problem if told is not None else None,
    )


def broken_off(receipt: Receipt, exc: BaseException) -> tuple[str, PaidRequestFailed]:
    """The answer a payment bought broke off while the caller read it: the ledger note, and the
    error the caller gets (with the receipt; still pending when the service never said it settled)."""
    what = f"the service did not answer ({_name(exc)}) in full after its headers"
    if receipt.status is Status.PENDING:
        return f"paid, then {what}"[:300], PaymentSentUnanswered(
            f"sent a signed payment, ledger #{receipt.id} (pending: the service did not say whether it settled it); "
            f"{what}; the receipt is kept", receipt=receipt)
    return f"paid, then {what}"[:300], PaidRequestFailed(
        f"{paid_text(receipt)}; {what}; the receipt is kept and retrying reuses the payment where the service "
        "honours it", receipt=receipt)


def _unserved(run: _Run, receipt: Receipt, what: str,
              response: httpx.Response | None = None) -> Generator[Effect, Any, PaidRequestFailed]:
    """The paid request failed after the money left: say so, note it on the (still settled) row."""
    try:
        receipt = yield Note(receipt.id, f"paid, then {what}"[:300])
    except Exception:  # noqa: BLE001 - the error below must reach the caller whatever the ledger does
        log.warning("[%s] could not note the failure on ledger #%s", run.rid, receipt.id)
    run.say(PaymentFailed, f"{paid_text(receipt)}; {what}", logging.WARNING, receipt=receipt, error=what)
    return PaidRequestFailed(f"{paid_text(receipt)}; {what}; the receipt is kept and retrying reuses "
                             "the payment where the service honours it", receipt=receipt, response=response)


def _send_payment(run: _Run, challenge: Challenge, receipt: Receipt, credential: Credential, shown: str) -> Flow:
    """Send the request once with a payment that travels with it (a signed authorization), and
    settle, fail or keep the row pending from what the service says. A second 402 is never paid."""
    request = run.request
    request.headers.update(credential.headers)
    run.proofs.update(credential.headers)
    run.say(Retried, "sending the request with the signed payment", attempt=1)
    try:
        answer: httpx.Response = yield Send(request)
        answer.request = request  # what was sent, for the dialect reading the answer (a transport leaves it unset)
    except Exception as exc:  # the payment may have reached the server
        noted = yield Note(receipt.id, f"outcome unknown: {type(exc).__name__} while sending the signed payment")
        run.say(PaymentFailed, f"sent a signed payment of {shown} and the service did not answer ({type(exc).__name__}); "
                f"ledger #{receipt.id} stays pending", logging.WARNING, receipt=noted, error=type(exc).__name__)
        raise PaymentSentUnanswered(
            f"sent a signed payment of {shown}, ledger #{receipt.id}; the service did not "
            f"answer ({type(exc).__name__}); the row stays pending: the authorization may still be settled until it "
            "expires, and the receipt is kept", receipt=noted,
        ) from exc
    except GeneratorExit:  # the flow closed by its driver: no step may follow
        raise
    except BaseException:  # cancelled (or interrupted) with the payment out: the row says so, pending and counted
        try:
            yield Note(receipt.id, "outcome unknown: the request was cancelled while sending the signed payment")
        except Exception:  # noqa: BLE001 - the cancellation reaches the caller whatever the ledger does
            log.warning("[%s] could not note the cancellation on ledger #%s", run.rid, receipt.id)
        raise
    broken: Exception | None = None
    if answer.status_code == 402 or answer.status_code >= 500:  # the flow reads these; a bought answer streams
        try:
            yield ReadBody(answer)
        except Exception as exc:  # noqa: BLE001 - reported below with the receipt
            broken = exc
    return (yield from _outcome(run, challenge, answer, receipt, broken, shown))


def _metered(receipt: Receipt, proof: Settlement | None) -> str:
    """The note on what a payment signed for a ceiling (x402 upto) settled, as the service reports it.
    The row goes on counting the ceiling in every budget: the signature lets the service take all of
    it, and its report is only its word (httpay does not watch the chain), so a service reporting
    less than it takes is never paid past the budget. The note shows both amounts."""
    if proof is None or proof.amount is None or not receipt.offer_amount:
        return ""
    ceiling = receipt.offer_amount
    if proof.amount > ceiling:
        return (f"; service defect: it reported settling {proof.amount}, above the {ceiling} signed for; "
                "counted as the ceiling")
    if proof.amount == ceiling:
        return f"; the service reports it settled {proof.amount} of the {ceiling} signed for"
    return (f"; the service reports it settled {proof.amount} of the {ceiling} signed for; the {ceiling} stays "
            "counted, since the signature lets it take that much and its report is only its word")


def _outcome(run: _Run, challenge: Challenge, resp: httpx.Response, receipt: Receipt,
             broken: Exception | None, shown: str) -> Flow:
    """Settle, fail or keep pending the row from the service's answer to a payment sent with the
    request; a 5xx or a broken body after it went out raises PaidRequestFailed with the receipt."""
    proof = dialect_of(challenge).settlement(resp)
    done: Receipt
    if resp.status_code == 402 and broken is None:
        if proof is not None and proof.success:
            transaction = safe.clean(proof.transaction or "", 120)
            done = yield Settle(receipt.id, "", 0, note=f"transaction {transaction} settled, but the service still "
                                                        "answers 402")
            run.say(Paid, f"paid {shown} but still 402", logging.WARNING, receipt=done)
            raise PaymentNotHonored(
                f"paid {shown} (ledger #{done.id}, transaction {transaction}) but {run.host} still answers "
                "402; keep the receipt and contact the service", receipt=done, response=resp,
            )
        # A 402 is only the service's word: it holds a signed authorization it can still settle until
        # the authorization expires, so the row stays pending (counted in every budget), never failed
        # on its say-so. A service that takes signatures and answers 402 runs into the budget.
        reason = safe.clean((proof.reason if proof is not None else None) or "no reason given", 200)
        done = yield Note(receipt.id, f"the service answered 402 to the signed payment ({reason}); it holds the "
                                      "signature and could still settle it until it expires, so it stays counted")
        run.say(PaymentFailed, f"{run.host} refused the signed payment ({reason}); ledger #{done.id} stays pending "
                "(the service holds the signature), not paying again", logging.WARNING, receipt=done, error=reason)
        if proof is not None and proof.error is not None:  # the dialect names what the refusal means
            raise proof.error(done, resp)
        raise PaymentRejected(
            f"{run.host} refused the signed payment of {shown} ({reason}); ledger #{receipt.id} stays pending and "
            "counted, since the service holds a signature it could still settle until it expires; nothing is paid "
            "again for this request", receipt=done, response=resp,
            problem=proof.problem if proof is not None else None,
        )
    if proof is not None and proof.success is False:  # its word again: it holds the signature, so still counted
        why = safe.clean(proof.reason or "no reason given", 200)
        done = yield Note(receipt.id, f"the service says it could not settle the payment ({why}); it holds the "
                                      "signature and could still settle it until it expires, so it stays counted")
        run.say(PaymentFailed, f"settlement failed ({why}) though the service answered {resp.status_code}",
                logging.WARNING, receipt=done, error=why)
        if proof.error is not None:
            raise proof.error(done, resp)
    elif (proof is not None and proof.success) or resp.status_code < 400:
        note = (f"transaction {safe.clean(proof.transaction, 120)} on {safe.clean(proof.network or '', 60)}"
                if proof is not None and proof.transaction else "served without a settlement receipt")
        note += _metered(receipt, proof)
        # settled and noted in one write, at the amount reserved (an upto ceiling stays whole: `_metered`)
        done = yield Settle(receipt.id, "", 0, note=note)
        run.say(Paid, f"paid {shown}, {note}, ledger #{done.id}", receipt=done)
    else:
        done = yield Note(receipt.id, f"outcome unknown: HTTP {resp.status_code} and no settlement receipt")
        run.say(PaymentFailed, f"HTTP {resp.status_code} with no settlement receipt: ledger #{done.id} stays pending",
                logging.WARNING, receipt=done, error=f"HTTP {resp.status_code}")
    if done.status is not Status.FAILED and (broken is not None or resp.status_code >= 500):
        what = (f"the service's answer broke off ({type(broken).__name__})" if broken is not None
                else f"the service answered HTTP {resp.status_code} to the paid request (its answer is in .response)")
        kind = PaidRequestFailed if done.status is Status.SETTLED else PaymentSentUnanswered
        paid = (f"paid {shown}, ledger #{done.id}" if done.status is Status.SETTLED else
                f"sent a signed payment of {shown}, ledger #{done.id} (pending: the service did not say "
                "whether it settled it)")
        run.say(PaymentFailed, f"{paid}; {what}", logging.WARNING, receipt=done, error=what)
        raise kind(f"{paid}; {what}; the receipt is kept", receipt=done, response=resp) from broken
    if broken is not None:
        raise broken
    resp.extensions[RECEIPT_EXTENSION] = done
    run.say(Served, f"served with HTTP {resp.status_code} after payment #{done.id}", status=resp.status_code,
            receipt=done)
    return resp


# -- held credentials ----------------------------------------------------------------------------
def _present_held(payer: Payer, request: httpx.Request, *, fresh: bool = False,
                  over_callers: bool = False, only: Sequence[str] = ()) -> Generator[Effect, Any, str | None]:
    """Put the stored credential of the request's scope in its Authorization header, read afresh on
    every send (another request may have bought a newer one); a caller's own Authorization is left
    alone unless `over_callers` (kept, and put back if the credential is refused). Of a scope's
    several kinds (`Challenge.variant`), the one this path took last comes first; `only`: just
    these kinds (the ones a 402 asked for). Returns where the presented credential is stored
    (`held_key`), if any."""
    ours = request.extensions.get(TOKEN_EXTENSION)
    current = _authorization(request)
    callers = bool(current) and (ours is None or current != ours[1])
    if callers and not over_callers:
        return None  # the caller's own credential
    url = str(request.url)
    known = payer.token_variants
    for scope in scopes_for(url, payer.token_scope):
        learned = (known.get(_path_key(url)), known.get(scope)) if known else ()
        prefer = tuple(only) or tuple(v for v in learned if v is not None)
        found: tuple[str, str] | None = yield TokenFor(scope, fresh, prefer=prefer, only=bool(only))
        if found:
            key, token = found
            if known or split_key(key)[1] is not None:  # this path takes this kind: present it first here
                payer.remember_variant((_path_key(url), scope), split_key(key)[1] or "")
            if callers:
                request.extensions[CALLERS_EXTENSION] = current
            request.headers["Authorization"] = token
            request.extensions[TOKEN_EXTENSION] = (key, token)
            return key
    if ours is not None and current == ours[1]:
        return str(ours[0])  # nothing newer stored: keep the credential this flow holds
    return None


def _authorization(request: httpx.Request) -> str | None:
    """The request's Authorization header, if any: its raw names are looked at first, since httpx's
    `Headers.get` decodes every header to find one (a cost on every request, paid or not)."""
    for name, _ in request.headers.raw:
        if len(name) == 13 and name.lower() == b"authorization":
            value: str | None = request.headers.get("authorization")
            return value
    return None


def _quietly_read(response: httpx.Response, request: httpx.Request) -> list[Challenge]:
    """The 402's challenges, [] when none can be read (a dry run only looks)."""
    try:
        return read_challenge(response.status_code, response.headers, response.content, url=str(request.url))
    except (ChallengeError, InvoiceError):
        return []


def _evict_if_presented(request: httpx.Request, challenges: Sequence[Challenge]) -> Generator[Effect, Any, None]:
    """The server answered 402 to the credential this flow presented: forget it (never retried in a
    loop), unless another request has meanwhile stored a newer one for the scope. Only a 402 asking
    for such a credential again refuses it: another route of the host asking for x402 or MPP (the
    scope is the host) never saw a credential it does not take, so the one held is kept."""
    ours = request.extensions.pop(TOKEN_EXTENSION, None)
    if ours is None:
        return
    scope, token = ours
    callers = request.extensions.pop(CALLERS_EXTENSION, None)
    if request.headers.get("authorization") != token:
        return  # not presented on this request (httpx drops Authorization on a redirect to another host)
    if callers is not None:
        request.headers["Authorization"] = callers  # the caller's own, which the credential stood in for
    else:
        request.headers.pop("Authorization", None)
    if not any(c.reuse == "scope" for c in challenges):
        log.debug("a 402 asking for no credential like the one held for %s: kept it", scope)
    elif not _asks_for(challenges, scope):
        log.debug("a 402 asking for another kind of credential than the one held for %s: kept it", scope)
    elif (yield DropToken(scope, token)):
        log.info("the server answered 402 to the credential held for %s: evicted it", scope)


def _asks_for(challenges: Sequence[Challenge], key: str) -> bool:
    """Whether a 402 asks for the kind of credential stored at `key`: one of its scope challenges
    names that variant (or none names any). Another service of the host never refused it."""
    variant = split_key(key)[1]
    return any(c.reuse == "scope" and c.variant == variant for c in challenges)


def _send_with_held(payer: Payer, request: httpx.Request, payment_deadline_s: float | None = None,
                    resend: Resend = "never", look: bool = True, only: Sequence[str] = (),
                    over_callers: bool = False) -> Flow:
    """Send a request again, with the credential stored for its scope, if any. `payment_deadline_s`:
    a 402 it meets may be paid, so start its deadline; `resend`: as on `Send`; `look`: ask the ledger
    for the scope's credential first; `only`: of the scope's kinds, the ones the payment was for;
    `over_callers`: the credential stands in for the caller's own Authorization (as on `_present_held`)."""
    if look:  # after a payment or a wait: ask the ledger itself
        yield from _present_held(payer, request, fresh=True, over_callers=over_callers, only=only)
    response: httpx.Response = yield Send(request, payment_deadline_s=payment_deadline_s, resend=resend)
    return response


__all__ = [
    "DEADLINE_EXTENSION", "DRY_RUN_EXTENSION", "MAX_PRICE_EXTENSION", "OFFER_EXTENSION", "RECEIPT_EXTENSION",
    "TOKEN_SCOPES", "first_send", "flight_key", "host_of", "pay_flow", "receipt_of", "request_flow", "scopes_for",
    "token_scope", "unreadable",
]
