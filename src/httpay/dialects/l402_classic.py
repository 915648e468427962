"""Classic L402 / LSAT as a dialect: `WWW-Authenticate: L402 macaroon="…", invoice="…"`.

The invoice is in the header, so obtaining it costs no round trip; it must pay the hash the
macaroon commits to. The paid credential (`L402 <macaroon>:<preimage>`) serves its whole token
scope, so one payment answers every request in the scope and later requests present it first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Mapping
from typing import Any

import httpx

from httpay.core.dialect import Credential, Invoiced, Obtaining, Payable, Proof, Settlement
from httpay.core.effects import Effect
from httpay.core.model import Challenge, Money, Offer, Quote
from httpay.errors import ChallengeError, InvoiceError
from httpay.lightning import Invoice, decode_invoice
from httpay.policy import Policy
from httpay.protocols import l402_classic, macaroons
from httpay.protocols.l402_classic import L402Challenge
from httpay.protocols.www_authenticate import header_values, may_name, parse_challenges
from httpay.safe import clean


def to_challenge(ch: L402Challenge, url: str) -> Challenge:
    inv = decode_invoice(ch.invoice)
    title = inv.description or "L402 access token"
    offer = Offer(
        offer_id=f"l402_{inv.payment_hash[:12]}", title=title, description=title,
        price=Money.msat(inv.amount_msat or 0), payment_methods=("lightning",), pay_method="lightning",
        dialect=l402_classic.PROTOCOL, rail="lightning", payload=inv, pay_to=inv.payee,
        # no amount: no price to compare or to check the invoice against (never the cheapest offer, at 0)
        unpayable=None if inv.amount_msat else "its invoice names no amount, so there is no price to check",
    )
    return Challenge(l402_classic.PROTOCOL, (offer,), inv.payment_hash[:32], url=url, version=ch.version or "",
                     reuse="scope", raw=ch, variant=_services_of(ch.macaroon))


def _services_of(macaroon: str) -> str | None:
    """The services a token grants ("a,b"), which tell apart the tokens of one host when Aperture
    fronts several services there; None for a token that names none, or an opaque one. Each name
    is server text: a plain one is kept as it is; one that is long or holds characters a view must
    escape is kept as a readable head and a digest of the whole name, so two names never share a
    token (a cut or an escape alone would merge names alike in their first 200 characters, or a
    control character with its escape typed out), and any store holds it. Filed as none, it would
    mix with the host's other services' tokens."""
    try:
        services = macaroons.peek(macaroon).services
    except ChallengeError:
        return None
    return ",".join(sorted({_service_key(name) for name, _ in services})) or None


def _service_key(name: str) -> str:
    if len(name) <= 64 and clean(name) == name and "~" not in name and "," not in name:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{clean(name, 40)}~{digest}"


def check_token_binding(ch: L402Challenge, invoice: Invoice) -> None:
    """A classic L402 token buys access only with the preimage of the invoice its macaroon commits
    to (the payment hash in its identifier): paying any other invoice buys a token that can never
    work, so it is refused before anything is reserved or paid.

    A token that is not a macaroon with a payment hash (token68, as getalby issues) commits to
    nothing a client can read; its invoice still passes every other check (amount present and
    within the offer and the limits, network, expiry, pinned payee), and a service that then
    refuses the paid token is reported as PaymentNotHonored with the receipt.
    """
    try:
        committed = macaroons.peek(ch.macaroon).payment_hash
    except ChallengeError:
        return  # an opaque token: nothing to compare
    if committed is not None and committed.lower() != invoice.payment_hash.lower():
        raise InvoiceError(
            f"the invoice pays hash {invoice.payment_hash[:16]}…, but the macaroon commits to {committed[:16]}…: "
            "the token it would buy can never work, so it is not paid; the service must send the invoice "
            "its macaroon names",
            check="payment_hash",
        )


class L402Classic:
    """The classic L402 (and legacy LSAT) dialect."""

    name = l402_classic.PROTOCOL
    rank = 10

    def read(self, status: int, headers: Any, body: bytes | None, url: str) -> list[Challenge]:
        """Every usable L402/LSAT challenge of the 402, L402 before LSAT (Aperture sends both)."""
        values = header_values(headers, "www-authenticate")
        if not may_name(values, l402_classic.SCHEMES):
            return []
        ours = [c for c in parse_challenges(values) if c.is_scheme(*l402_classic.SCHEMES)]
        ours.sort(key=lambda c: 0 if c.is_scheme("L402") else 1)  # stable: server order kept within a scheme
        found: list[Challenge] = []
        seen: set[tuple[str, str]] = set()
        first_error: ChallengeError | InvoiceError | None = None
        for one in ours:
            try:
                ch = l402_classic.from_challenges([one]) or _never()
                if (ch.macaroon, ch.invoice) in seen:
                    continue  # the same token and invoice under both names: one challenge
                seen.add((ch.macaroon, ch.invoice))
                found.append(to_challenge(ch, url))
            except (ChallengeError, InvoiceError) as exc:
                first_error = first_error or exc
        if not found and first_error is not None:
            raise first_error
        return found

    def check_ahead(self, challenge: Challenge, quote: Quote, request: httpx.Request | None) -> Invoiced:
        """The header's invoice (decoded when read); it must be the one the macaroon names."""
        invoice: Invoice = quote.offer.payload
        check_token_binding(challenge.raw, invoice)
        return Invoiced(invoice)

    def obtain(self, ctx: Obtaining) -> Generator[Effect, Any, Payable]:
        return self.check_ahead(ctx.challenge, ctx.quote, ctx.request)
        yield  # a generator with no effects: nothing to fetch

    def present(self, challenge: Challenge, payable: Payable, proof: Proof) -> Credential:
        ch: L402Challenge = challenge.raw
        value = ch.credential(proof.preimage or "")
        try:
            expires = macaroons.peek(ch.macaroon).valid_until
        except ChallengeError:
            expires = None
        return Credential({"Authorization": value}, reusable=value, expires_at=expires, variant=challenge.variant)

    def advertise(self, policy: Policy, can_sign: bool) -> Mapping[str, str]:
        return {}

    def settlement(self, response: httpx.Response) -> Settlement | None:
        return None


def _never() -> L402Challenge:
    raise ChallengeError("not an L402 challenge", field="scheme")
