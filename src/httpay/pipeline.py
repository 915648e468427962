"""The payment pipeline, written once for sync and async: challenge -> decision -> payment
request -> invoice check -> ledger -> wallet -> retry.

`pay_flow` is a generator: it does the pure steps itself and *yields* the I/O it needs
(`Send` an HTTP request, `Pay` an invoice, `Ask` an approver, `Sleep`, `Join`/`Leave` the
single-flight for a challenge). A sync driver and an async driver run it, so the two clients
cannot drift apart and the flow can be tested with scripted answers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import secrets
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from httpay.errors import (
    HttpayError, InvoiceError, PaymentRefused, PaymentRequestError, WalletError,
)
from httpay.events import Event, EventHook, emit
from httpay.ledger import DuplicatePayment, Intent, Ledger, Receipt
from httpay.lightning import Invoice, check_invoice, decode_invoice
from httpay.policy import Decision, Policy, fmt_msat
from httpay.protocols import l402_v02
from httpay.protocols.l402_v02 import Offer, PaymentOffers, PaymentRequest
from httpay.wallets.base import Payment, PaymentStatus, Wallet

log = logging.getLogger("httpay")

RECEIPT_EXTENSION = "httpay_receipt"
DRY_RUN_EXTENSION = "httpay_dry_run"     # request extension: hand a 402 back untouched, pay nothing
OFFER_EXTENSION = "httpay_offer_id"      # request extension: pay only this offer (still within the policy)


# -- effects: what the flow asks its driver to do ------------------------------------------------
@dataclass(frozen=True)
class Send:
    request: httpx.Request


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
    """Enter the single-flight for `key`: answers True if another flow was paying it and is done."""

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

    wallet: Wallet
    policy: Policy
    ledger: Ledger
    on_event: EventHook | None = None
    retries_after_payment: int = 5
    retry_delay_s: float = 0.2

    def rate(self) -> float | None:
        if self.policy.usd_per_btc:
            return self.policy.usd_per_btc
        getter = getattr(self.wallet, "usd_per_btc", None)
        return getter() if callable(getter) else None


def host_of(url: str | httpx.URL) -> str:
    u = httpx.URL(str(url))
    port = u.port
    return f"{u.host}:{port}" if port else u.host


def challenge_key(offers: PaymentOffers, url: str) -> str:
    """One key per challenge: who asked to be paid, for which context. Concurrent 402s share it."""
    raw = f"{offers.payment_request_url}|{offers.payment_context_token or url}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def same_site(a: str, b: str) -> bool:
    """True when two URLs share a scheme-less registrable host (exact host match, ports ignored)."""
    ha, hb = (urlsplit(a).hostname or "").lower(), (urlsplit(b).hostname or "").lower()
    return bool(ha) and ha == hb


def _json_error(resp: httpx.Response) -> str:
    try:
        data = resp.json()
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return data["error"][:200]
    except (ValueError, UnicodeDecodeError):
        pass
    return (resp.text or "")[:200]


def pay_flow(
    payer: Payer, request: httpx.Request, response: httpx.Response, offers: PaymentOffers,
    *, max_price_msat: int | None = None, offer_id: str | None = None,
) -> Generator[Effect, Any, httpx.Response]:
    """Pay for a v0.2 challenge within the policy, then repeat `request`. Returns the final response.

    `offer_id` pins the offer to pay (an agent that chose one); the policy must still allow it.
    """
    url = str(request.url)
    host = host_of(request.url)
    rid = secrets.token_hex(4)
    policy, ledger, wallet, hook = payer.policy, payer.ledger, payer.wallet, payer.on_event
    rate = payer.rate()

    emit(hook, Event("challenge", url, rid, {"offers": offers, "status": response.status_code}),
         f"402 from {host} with {len(offers)} offer(s): {', '.join(o.offer_id for o in offers)}")

    # The payment request URL must belong to the service that asked.
    pr_url = httpx.URL(offers.payment_request_url) if offers.payment_request_url.startswith(("http://", "https://")) \
        else request.url.join(offers.payment_request_url)
    if not same_site(str(pr_url), url) and not any(
        (pr_url.host or "").lower() == h.lower() for h in policy.payment_hosts
    ):
        raise PaymentRefused(
            f"refused: the payment request URL is on {pr_url.host}, not on {request.url.host} that asked; "
            f"allow it with Policy(payment_hosts=[{pr_url.host!r}]) if you trust it",
            rule="payment_host", offers=offers, response=response,
        )

    key = challenge_key(offers, url)
    waited = yield Join(key)
    try:
        if waited:
            # Someone else just paid this very challenge: try their payment before paying again.
            emit(hook, Event("waited", url, rid, {"key": key}), "another request paid this challenge; retrying")
            again: httpx.Response = yield Send(request)
            if again.status_code != 402:
                return again
            again.read()
            fresh = l402_v02.parse(again.status_code, again.headers, again.content)
            if fresh is None:
                return again
            offers, response = fresh, again

        try:
            choices = _pinned(offers, offer_id) if offer_id is not None else offers
            decision = policy.decide(
                choices, url=url, host=host, usd_per_btc=rate, spent_msat=ledger.spent_msat(),
                methods=("lightning",), max_price_msat=max_price_msat,
            )
            if choices is not offers:
                decision = dataclasses.replace(decision, offers=offers)
        except PaymentRefused as exc:
            exc.response = response
            emit(hook, Event("refused", url, rid, {"rule": exc.rule, "reason": str(exc)}), str(exc).removeprefix("refused: "), logging.WARNING)
            raise
        emit(hook, Event("decision", url, rid, {"decision": decision}), str(decision))

        if policy.approve is not None:
            answer = yield Ask(decision)
            decision = _approved(policy, decision, answer, response)
            emit(hook, Event("approval", url, rid, {"decision": decision, "approved": True}), f"approved: {decision}")

        pr = yield from _request_payment(payer, pr_url, offers, decision.offer, decision.method, rid, url)
        assert pr.lightning_invoice is not None
        invoice = _check(payer, pr.lightning_invoice, decision, offers, response, rid, url)
        receipt = _reserve(payer, decision, invoice, key, url, host, rate, offers, response, rid)

        payment = yield from _pay(payer, receipt, invoice, rid, url)
        receipt = ledger.settle(receipt.id, preimage=payment.preimage or "", fee_msat=payment.fee_msat,
                                amount_msat=payment.amount_msat or invoice.amount_msat)
        emit(hook, Event("paid", url, rid, {"receipt": receipt, "payment": payment}),
             f"paid {fmt_msat(receipt.amount_msat, rate)} + fee {receipt.fee_msat} msat, hash {invoice.payment_hash[:16]}…, "
             f"ledger #{receipt.id}")
    finally:
        yield Leave(key)

    return (yield from _retry(payer, request, receipt, rid, url))


def _pinned(offers: PaymentOffers, offer_id: str) -> PaymentOffers:
    """The challenge narrowed to the one offer a caller pinned; refused if the service did not make it."""
    chosen = [o for o in offers.offers if o.offer_id == offer_id]
    if not chosen:
        raise PaymentRefused(
            f"refused: the service did not offer {offer_id!r}; it offers {', '.join(o.offer_id for o in offers) or 'nothing'}",
            rule="offer_id", offers=offers,
        )
    return dataclasses.replace(offers, offers=tuple(chosen))


def _approved(policy: Policy, decision: Decision, answer: Any, response: httpx.Response) -> Decision:
    if isinstance(answer, Offer):
        if answer not in decision.offers.offers:
            raise PaymentRefused("refused: the approver picked an offer the service did not make", rule="approval",
                                 offers=decision.offers, response=response)
        return policy.with_offer(decision, answer)
    if answer is True:
        return decision
    raise PaymentRefused(f"refused by the approver: {decision}", rule="approval", offers=decision.offers, response=response)


def _request_payment(
    payer: Payer, pr_url: httpx.URL, offers: PaymentOffers, offer: Offer, method: str, rid: str, url: str,
) -> Generator[Effect, Any, PaymentRequest]:
    body = l402_v02.payment_request_body(offers, offer, method)
    req = httpx.Request("POST", pr_url, content=json.dumps(body).encode(),
                        headers={"content-type": "application/json", "accept": "application/json"})
    resp: httpx.Response = yield Send(req)
    resp.read()
    if resp.status_code != 200:
        raise PaymentRequestError(
            f"the service refused the payment request for {offer.offer_id} by {method}: "
            f"HTTP {resp.status_code} {_json_error(resp)}", status_code=resp.status_code,
        )
    try:
        data = resp.json()
    except (ValueError, UnicodeDecodeError):
        raise PaymentRequestError("the payment request answer is not JSON", status_code=resp.status_code) from None
    pr = PaymentRequest.from_dict(data, payment_method=method, offer_id=offer.offer_id)
    emit(payer.on_event, Event("payment_request", url, rid, {"payment_request": pr}), str(pr))
    return pr


def _check(payer: Payer, bolt11: str, decision: Decision, offers: PaymentOffers, response: httpx.Response,
           rid: str, url: str) -> Invoice:
    policy = payer.policy
    try:
        invoice = decode_invoice(bolt11)
        check_invoice(
            invoice,
            network=payer.wallet.network,
            expected_msat=decision.price_msat,
            tolerance=policy.price_tolerance,
            max_msat=policy.max_per_payment_msat(decision.usd_per_btc, offers),
        )
    except InvoiceError as exc:
        emit(payer.on_event, Event("refused", url, rid, {"rule": f"invoice:{exc.check}", "reason": str(exc)}),
             f"invoice refused: {exc}", logging.WARNING)
        raise
    emit(payer.on_event, Event("invoice", url, rid, {"invoice": invoice, "decision": decision}), str(invoice))
    return invoice


def _reserve(payer: Payer, decision: Decision, invoice: Invoice, key: str, url: str, host: str,
             rate: float | None, offers: PaymentOffers, response: httpx.Response, rid: str) -> Receipt:
    assert invoice.amount_msat is not None
    intent = Intent(
        host=host, url=url, protocol=l402_v02.PROTOCOL, method=decision.method, amount_msat=invoice.amount_msat,
        payment_hash=invoice.payment_hash, offer_id=decision.offer.offer_id, offer_title=decision.offer.title,
        offer_amount=decision.offer.amount, offer_currency=decision.offer.currency, credits=decision.offer.balance,
        wallet=payer.wallet.name, challenge_key=key,
    )
    try:
        receipt = payer.ledger.reserve(intent, payer.policy.limits(host, rate, offers), usd_per_btc=rate)
    except PaymentRefused as exc:
        exc.offers, exc.response = offers, response
        if not isinstance(exc, DuplicatePayment):
            emit(payer.on_event, Event("refused", url, rid, {"rule": exc.rule, "reason": str(exc)}), str(exc).removeprefix("refused: "),
                 logging.WARNING)
        raise
    emit(payer.on_event, Event("reserved", url, rid, {"receipt": receipt}),
         f"ledger #{receipt.id} pending for {fmt_msat(receipt.amount_msat, rate)}")
    return receipt


def _pay(payer: Payer, receipt: Receipt, invoice: Invoice, rid: str, url: str) -> Generator[Effect, Any, Payment]:
    ledger = payer.ledger
    try:
        payment: Payment = yield Pay(invoice.bolt11, payer.policy.max_fee_msat)
    except WalletError as exc:
        if exc.outcome_known:
            ledger.fail(receipt.id, f"{type(exc).__name__}: {exc}")
            emit(payer.on_event, Event("payment_failed", url, rid, {"receipt": ledger.get(receipt.id), "error": str(exc)}),
                 f"wallet did not pay: {exc}", logging.WARNING)
            raise
        found = _lookup(payer.wallet, invoice.payment_hash)
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
    return payment


def _lookup(wallet: Wallet, payment_hash: str) -> Payment | None:
    try:
        return wallet.lookup(payment_hash)
    except (NotImplementedError, WalletError):
        return None


def _retry(payer: Payer, request: httpx.Request, receipt: Receipt, rid: str, url: str) -> Generator[Effect, Any, httpx.Response]:
    delay = payer.retry_delay_s
    for attempt in range(1, payer.retries_after_payment + 1):
        emit(payer.on_event, Event("retry", url, rid, {"attempt": attempt}), f"retrying the request (attempt {attempt})")
        resp: httpx.Response = yield Send(request)
        if resp.status_code != 402:
            resp.extensions[RECEIPT_EXTENSION] = receipt  # type: ignore[index]
            emit(payer.on_event, Event("served", url, rid, {"status": resp.status_code, "receipt": receipt}),
                 f"served with HTTP {resp.status_code} after payment #{receipt.id}")
            return resp
        resp.read()
        if attempt < payer.retries_after_payment:
            yield Sleep(delay)
            delay = min(delay * 2, 5.0)
    raise PaymentNotHonored(
        f"paid (ledger #{receipt.id}, hash {(receipt.payment_hash or '')[:16]}…) but {host_of(request.url)} still "
        f"answers 402 after {payer.retries_after_payment} tries; keep the receipt and contact the service",
        receipt=receipt, response=resp,
    )


def receipt_of(response: httpx.Response) -> Receipt | None:
    """The ledger receipt of the payment that bought this response, if one was made."""
    return response.extensions.get(RECEIPT_EXTENSION)  # type: ignore[no-any-return]
