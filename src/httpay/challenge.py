"""Reading a 402 in any dialect into one shape the payment pipeline works with. Pure: no I/O.

Each protocol contributes only what differs (PROTOCOLS.md): how it reads a challenge, how an
offer becomes an invoice, how proof is presented. The pipeline sees a `PaymentChallenge`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from httpay.errors import ChallengeError
from httpay.lightning import Invoice, decode_invoice
from httpay.protocols import l402_classic, l402_v02, x402
from httpay.protocols.l402_v02 import Offer, PaymentOffers

TOKEN_SCOPES = ("host", "prefix", "url")


@dataclass(frozen=True)
class PaymentChallenge:
    """A 402 as the pipeline needs it: offers to show and choose from, and the protocol's data."""

    protocol: str
    offers: PaymentOffers
    key: str  # one key per challenge: concurrent requests meeting it share one payment
    l402: l402_classic.L402Challenge | None = field(default=None, repr=False)
    invoice: Invoice | None = field(default=None, repr=False)
    x402: x402.X402Challenge | None = field(default=None, repr=False)

    @property
    def payable_with_lightning(self) -> bool:
        return self.protocol in (l402_v02.PROTOCOL, l402_classic.PROTOCOL)

    def __str__(self) -> str:
        return f"{self.protocol} challenge with {len(self.offers)} offer(s)"


def v02_key(offers: PaymentOffers, url: str) -> str:
    """One key per v0.2 challenge: who asked to be paid, for which context (account)."""
    raw = f"{offers.payment_request_url}|{offers.payment_context_token or url}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _classic(ch: l402_classic.L402Challenge) -> PaymentChallenge:
    inv = decode_invoice(ch.invoice)
    amount = inv.amount_msat or 0
    title = inv.description or "L402 access token"
    offer = Offer(
        offer_id=f"l402_{inv.payment_hash[:12]}", title=title, description=title, type="one-time", balance=None,
        amount=amount, currency="MSAT", payment_methods=("lightning",),
        extra={"macaroon_scheme": ch.scheme},
    )
    offers = PaymentOffers(version=ch.version or "0", payment_request_url="", offers=(offer,),
                           protocol=l402_classic.PROTOCOL)
    return PaymentChallenge(l402_classic.PROTOCOL, offers, inv.payment_hash[:32], l402=ch, invoice=inv)


def _x402(ch: x402.X402Challenge, url: str) -> PaymentChallenge:
    offers = PaymentOffers(version=str(ch.version), payment_request_url="", offers=tuple(ch.to_offers()),
                           protocol="x402")
    key = hashlib.sha256(f"x402|{url}|{[o.offer_id for o in offers]}".encode()).hexdigest()[:32]
    return PaymentChallenge("x402", offers, key, x402=ch)


def read_challenge(url: str, status: int, headers: Any, body: bytes | str | None) -> PaymentChallenge | None:
    """The first dialect that claims this response: L402 v0.2 offers, classic L402/LSAT, x402.

    Returns None for a response no dialect claims; raises ChallengeError (or InvoiceError for a
    classic challenge whose invoice is not one) when a dialect claims it but it is malformed.
    """
    if status != 402:
        return None
    classic = l402_classic.parse(status, headers, body)
    if classic is not None:
        return _classic(classic)
    try:
        offers = l402_v02.parse(status, headers, body)
    except ChallengeError as exc:
        if exc.field != "body":
            raise  # a v0.2 body that is JSON but malformed: its own error, named
        # A body labelled JSON that is not JSON (empty, an HTML page, garbage): the challenge may
        # still be in the headers (x402 v2 sends it in PAYMENT-REQUIRED with any body at all).
        found = x402.parse(status, headers, None)
        if found is not None:
            return _x402(found, url)
        raise
    if offers is not None:
        return PaymentChallenge(l402_v02.PROTOCOL, offers, v02_key(offers, url))
    found = x402.parse(status, headers, body)
    if found is not None:
        return _x402(found, url)
    return None


def flight_key(challenge: PaymentChallenge, url: str, scope_mode: str) -> str:
    """The single-flight key: requests meeting 402s that one payment answers share it.

    A classic L402 token is reused across its whole token scope, and Aperture mints a fresh
    macaroon and invoice for every 402, so its key is the scope (one payment per scope, not per
    invoice); the ledger keeps it as the row's challenge key, so other processes wait too. Every
    other dialect keeps its challenge's own key.
    """
    if challenge.l402 is not None:
        scope = token_scope(url, scope_mode)
        return "scope:" + hashlib.sha256(scope.encode()).hexdigest()[:32]
    return challenge.key


def check_token_binding(challenge: PaymentChallenge, invoice: Invoice) -> None:
    """A classic L402 token buys access only with the preimage of the invoice its macaroon commits
    to (the payment hash in its identifier): paying any other invoice buys a token that can never
    work, so it is refused before anything is reserved or paid.

    A token that is not a macaroon with a payment hash (token68, as getalby issues) commits to
    nothing a client can read; its invoice still passes every other check (amount present and
    within the offer and the limits, network, expiry, pinned payee), and a service that then
    refuses the paid token is reported as PaymentNotHonored with the receipt.
    """
    if challenge.l402 is None:
        return
    from httpay.errors import ChallengeError, InvoiceError
    from httpay.protocols.macaroons import decode

    try:
        committed = decode(challenge.l402.macaroon).payment_hash
    except ChallengeError:
        return  # an opaque token: nothing to compare
    if committed is not None and committed.lower() != invoice.payment_hash.lower():
        raise InvoiceError(
            f"the invoice pays hash {invoice.payment_hash[:16]}…, but the macaroon commits to {committed[:16]}…: "
            "the token it would buy can never work, so it is not paid; the service must send the invoice "
            "its macaroon names",
            check="payment_hash",
        )


def token_scope(url: str, mode: str = "host") -> str:
    """Where a paid L402 token is reused: the whole host (default, as Aperture issues them), the
    URL's folder and below (`prefix`), or exactly this URL (`url`, query ignored)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower() + (f":{parts.port}" if parts.port else "")
    if mode == "host":
        return f"{parts.scheme}://{host}"
    if mode == "prefix":
        folder = parts.path.rsplit("/", 1)[0] + "/"
        return f"{parts.scheme}://{host}{folder}"
    if mode == "url":
        return f"{parts.scheme}://{host}{parts.path or '/'}"
    raise ValueError(f"token scope must be one of {', '.join(TOKEN_SCOPES)}, not {mode!r}")


def scopes_for(url: str, mode: str) -> list[str]:
    """The scopes to look a token up under for `url`, most specific first (a `prefix` token
    bought for /api/ also serves /api/v1/x)."""
    if mode != "prefix":
        return [token_scope(url, mode)]
    parts = urlsplit(url)
    host = (parts.hostname or "").lower() + (f":{parts.port}" if parts.port else "")
    segments = parts.path.split("/")[:-1]
    out = []
    for i in range(len(segments), 0, -1):
        out.append(f"{parts.scheme}://{host}" + "/".join(segments[:i]) + "/")
    return out or [f"{parts.scheme}://{host}/"]
