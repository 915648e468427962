"""L402 v0.2 as a dialect: the notebook's JSON offers, paid through the payment request endpoint.

The wire types (`PaymentOffers`, `Offer`, `by_payment`, `parse`) are `httpay.protocols.l402_v02`;
this reads them into the neutral model and obtains the invoice: POST the chosen offer to
`payment_request_url` (which must belong to the service that asked), read the invoice back. The
payment credits the account named by `payment_context_token`, so the retry presents nothing new
and every request that met the same challenge shares the one payment.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from httpay import safe
from httpay.core.dialect import Credential, Invoiced, Obtaining, Payable, Proof, Settlement
from httpay.core.effects import Effect, ReadBody, Send
from httpay.core.events import PaymentRequested
from httpay.core.model import Challenge, Money, Offer
from httpay.errors import ChallengeError, PaymentDeadlineExceeded, PaymentRefused, PaymentRequestError
from httpay.lightning import decode_invoice
from httpay.policy import Policy
from httpay.protocols import l402_v02
from httpay.protocols.l402_v02 import PaymentOffers, PaymentRequest


def challenge_key(offers: PaymentOffers, url: str) -> str:
    """One key per v0.2 challenge: who asked to be paid, for which context (account)."""
    raw = f"{offers.payment_request_url}|{offers.payment_context_token or url}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def neutral_offer(o: l402_v02.Offer) -> Offer:
    """A v0.2 offer in the neutral model; httpay pays it by lightning when it takes lightning."""
    pays = "lightning" if o.supports("lightning") else None
    return Offer(
        offer_id=o.offer_id, title=o.title, description=o.description, type=o.type, balance=o.balance,
        duration=o.duration, price=Money(o.amount, o.currency), payment_methods=o.payment_methods,
        dialect=l402_v02.PROTOCOL, pay_method=pays, rail="lightning", payload=o,
    )


def to_challenge(offers: PaymentOffers, url: str) -> Challenge:
    return Challenge(l402_v02.PROTOCOL, tuple(neutral_offer(o) for o in offers.offers), challenge_key(offers, url),
                     url=url, version=offers.version, reuse="challenge", raw=offers)


def same_site(a: str, b: str) -> bool:
    """True when two URLs share a host (exact host match, ports ignored)."""
    ha, hb = (urlsplit(a).hostname or "").lower(), (urlsplit(b).hostname or "").lower()
    return bool(ha) and ha == hb


def _json_error(resp: httpx.Response) -> str:
    """The service's error text, made safe for a log line or a terminal (one line, bounded)."""
    try:
        data = safe.loads(resp.content)
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return safe.clean(data["error"])
    except ValueError:
        pass
    return safe.clean(resp.content[:1000].decode("utf-8", "replace"))


class L402V02:
    """The L402 v0.2 dialect."""

    name = l402_v02.PROTOCOL
    rank = 20

    def read(self, status: int, headers: Any, body: bytes | None, url: str) -> list[Challenge]:
        offers = l402_v02.parse(status, headers, body)
        return [] if offers is None else [to_challenge(offers, url)]

    def payment_request_url(self, ctx: Obtaining) -> httpx.URL:
        """The payment request URL, which must belong to the service that asked (or an allowed host)."""
        offers: PaymentOffers = ctx.challenge.raw
        try:
            pr_url = ctx.request.url.join(l402_v02.check_payment_request_url(offers.payment_request_url))
        except httpx.InvalidURL:
            raise ChallengeError(
                f"402 body: field 'payment_request_url' is not a URL: {offers.payment_request_url!r:.60}",
                field="payment_request_url") from None
        if not same_site(str(pr_url), str(ctx.request.url)) and not any(
            (pr_url.host or "").lower() == h.lower() for h in ctx.policy.payment_hosts
        ):
            raise PaymentRefused(
                f"refused: the payment request URL is on {safe.clean(pr_url.host, 100)}, not on "
                f"{ctx.request.url.host} that asked", rule="payment_host", offers=ctx.challenge.offers,
                response=ctx.response, knob="payment_hosts",
                advice="add " + safe.clean(repr(pr_url.host), 100).replace("{", "{{").replace("}", "}}")
                + " to {knob} if you trust it",
            )
        if ctx.request.url.scheme == "https" and pr_url.scheme != "https":
            raise PaymentRefused(
                f"refused: the payment request URL is plain {safe.clean(pr_url.scheme, 20)}:// for a service asked "
                "over https: the invoice would travel where anyone on the way could swap it",
                rule="payment_host", offers=ctx.challenge.offers, response=ctx.response)
        return pr_url

    def obtain(self, ctx: Obtaining) -> Generator[Effect, Any, Payable]:
        """POST the chosen offer to the payment request URL (with the caller's timeouts, within the
        deadline) and read the invoice back."""
        pr_url = self.payment_request_url(ctx)
        offers: PaymentOffers = ctx.challenge.raw
        offer: l402_v02.Offer = ctx.quote.offer.payload
        method = ctx.quote.method
        body = l402_v02.payment_request_body(offers, offer, method)
        req = ctx.follow_up(ctx.request, "POST", pr_url, content=json.dumps(body).encode(),
                            headers={"content-type": "application/json", "accept": "application/json"})
        try:
            resp: httpx.Response = yield Send(req, deadline=ctx.deadline, resend="always")
        except PaymentDeadlineExceeded:
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
        if ctx.deadline is None:
            yield ReadBody(resp)
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
        ctx.report(PaymentRequested, pr, payment_request=pr)  # its line is made only if someone hears it
        if pr.lightning_invoice is None:
            raise PaymentRequestError(f"the payment request for {offer.offer_id} by {method} holds no invoice")
        return Invoiced(decode_invoice(pr.lightning_invoice))

    def present(self, challenge: Challenge, payable: Payable, proof: Proof) -> Credential:
        return Credential({})  # the payment credits the account; the request goes again as it was

    def advertise(self, policy: Policy, can_sign: bool) -> Mapping[str, str]:
        return {}

    def settlement(self, response: httpx.Response) -> Settlement | None:
        return None
