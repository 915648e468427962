"""The one interface a 402 dialect implements, what passes across it, and the registry.

A dialect reads a 402 into neutral `Challenge`s (pure), obtains what is payable for the chosen
offer (a small sub-flow of effects: L402 v0.2 POSTs its payment request, classic L402 has the
invoice in its header, x402 builds the typed data to sign), presents the proof on the retry, and
reads the service's receipt. The flow never asks which dialect it runs: it calls these.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

import httpx

from httpay.core.deadline import Deadline
from httpay.core.effects import Effect
from httpay.core.model import Challenge, Quote
from httpay.errors import ChallengeError, InvoiceError
from httpay.lightning import Invoice
from httpay.policy import Policy
from httpay.safe import get_logger

log = get_logger("httpay")


@dataclass(frozen=True)
class Invoiced:
    """Payable by a Lightning wallet: a decoded BOLT11 invoice (decoded once, used by every check)."""

    rail: ClassVar[str] = "lightning"
    invoice: Invoice

    @property
    def amount_msat(self) -> int | None:
        return self.invoice.amount_msat

    @property
    def reference(self) -> str:
        return self.invoice.payment_hash


@dataclass(frozen=True)
class ToSign:
    """Payable by a signer: EIP-712 typed data authorizing exactly the chosen offer's transfer.
    The payment settles when the service receives the signed request (it travels with the retry)."""

    rail: ClassVar[str] = "evm"
    domain: dict[str, Any]
    types: dict[str, list[dict[str, str]]]
    primary_type: str
    message: dict[str, Any] = field(repr=False)
    amount_msat: int
    reference: str           # unique per payment (the authorization's nonce): the ledger's handle
    price: str               # what is paid, as a person reads it ("0.01 USDC on eip155:8453")
    state: Any = field(default=None, repr=False)  # the dialect's own (to build the header from the signature)


Payable = Invoiced | ToSign


@dataclass(frozen=True)
class Proof:
    """What paying produced: a Lightning preimage (money has left), or a signature (it travels with
    the retry, and the service settles it)."""

    preimage: str | None = field(default=None, repr=False)
    signature: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Credential:
    """What the retry presents: headers, and (for a credential reusable across its scope) the
    Authorization value to keep, until when."""

    headers: dict[str, str] = field(repr=False)
    reusable: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None
    variant: str | None = None  # the challenge's variant (`Challenge.variant`): kept apart from others of its scope


@dataclass(frozen=True)
class Settlement:
    """A service's own word on a payment that travelled with the request (x402 PAYMENT-RESPONSE)."""

    success: bool | None          # None: no receipt, only a reason (a 402's error text)
    transaction: str | None = None
    network: str | None = None
    reason: str | None = None
    amount: int | None = None     # what it says it settled, in the offer's units, where less than authorized may be
    #                               (a ceiling): noted on the row, never taken off the budgets (only its word)
    error: Callable[..., Exception] | None = field(default=None, repr=False)  # (receipt, response) -> the typed error
    problem: str | None = None    # the scheme's problem type, where the service named one (MPP problem details)


@dataclass
class Obtaining:
    """What a dialect's `obtain` sub-flow may use: the request, its 402, the quote, the policy, the
    deadline, and `report(EventKind, message, **fields)` to tell the watchers (`message`: the line, or an
    object whose `str()` is, made only when someone hears it)."""

    request: httpx.Request
    response: httpx.Response
    challenge: Challenge
    quote: Quote
    policy: Policy
    deadline: Deadline | None
    payer_address: str | None
    report: Callable[..., None]
    follow_up: Callable[..., httpx.Request]
    call_key: str | None = None   # the ledger's key for this call (an x402 payment id), when it has one


@dataclass
class SigningIn:
    """What a dialect's `sign_in` sub-flow may use: the request, its 402's challenge, the signer's
    address, and `report(EventKind, message, **fields)`."""

    request: httpx.Request
    challenge: Challenge
    payer_address: str
    report: Callable[..., None]


@runtime_checkable
class SignsIn(Protocol):
    """A dialect whose services may let a returning payer sign in instead of paying (x402 sign-in-with-x)."""

    def sign_in(self, ctx: SigningIn) -> Generator[Effect, Any, httpx.Response | None]:
        """The service's answer to the request sent again signed in, or None: not offered, not signed
        (another domain, say), or the service still asks to be paid."""
        ...


@runtime_checkable
class ChecksAhead(Protocol):
    """A dialect that can tell from the challenge and the request alone (no round trip, no wallet,
    no signer) what its `obtain` would refuse: `obtain` starts with it, and a preview (`--dry-run`,
    `httpay offers`, the agent's tools) runs it too, so nothing shows "would pay" for a challenge
    that paying then refuses (one past its `expires`, a digest of another body, an expired invoice)."""

    def check_ahead(self, challenge: Challenge, quote: Quote, request: httpx.Request | None) -> Invoiced | None:
        """The invoice the quoted offer pays when the challenge carries it (the caller checks it as
        every invoice is checked: `flow.check_quoted_invoice`), else None; InvoiceError or
        PaymentRefused as `obtain` raises them. `request` None: checks of the request's body are left out."""
        ...


class Dialect(Protocol):
    """A 402 dialect. Register one with `register(dialect)`; `read_challenge` asks them all."""

    name: str
    rank: int  # lower first, when several dialects claim one 402

    def read(self, status: int, headers: Any, body: bytes | None, url: str) -> list[Challenge]:
        """The challenges of this dialect in a 402 ([] when none). Pure; ChallengeError (or
        InvoiceError) when the dialect's challenge is there but malformed."""
        ...

    def obtain(self, ctx: Obtaining) -> Generator[Effect, Any, Payable]:
        """What to pay for `ctx.quote`'s offer, checked against it where the dialect can."""
        ...

    def present(self, challenge: Challenge, payable: Payable, proof: Proof) -> Credential:
        """The retry's credential for a paid challenge."""
        ...

    def settlement(self, response: httpx.Response) -> Settlement | None:
        """The service's receipt (or refusal reason) for a payment: one that travelled with the
        request, or one paid before it whose receipt the service returns (MPP `Payment-Receipt`)."""
        ...

    def advertise(self, policy: Policy, can_sign: bool) -> Mapping[str, str]:
        """Headers every request carries so a server can offer what this payer takes (MPP's
        `Accept-Payment`); {} for a dialect that has none. `can_sign`: an EVM signer is set."""
        ...


_DIALECTS: dict[str, Dialect] = {}


def register(dialect: Dialect) -> Dialect:
    _DIALECTS[dialect.name] = dialect
    return dialect


def dialect_of(challenge: Challenge) -> Dialect:
    found = _DIALECTS.get(challenge.dialect)
    if found is None:
        raise ChallengeError(f"no dialect {challenge.dialect!r} is registered", field="dialect")
    return found


def dialects() -> list[Dialect]:
    """Every registered dialect, in rank order (`httpay.dialects` registers the built-in ones when
    `httpay` is imported)."""
    return sorted(_DIALECTS.values(), key=lambda d: d.rank)


def read_challenge(status: int, headers: Any, body: bytes | str | None, *, url: str = "") -> list[Challenge]:
    """Every challenge any registered dialect finds in a response, ranked (the first is preferred).

    [] for a response that is not a 402 or that no dialect claims. When a dialect claims it but its
    challenge is malformed, the other dialects still answer; if none finds a good challenge, that
    dialect's ChallengeError (or InvoiceError) is raised, naming what was wrong. A dialect that
    fails on a 402 in a way it did not foresee (a ValueError from deep inside) reads as that
    dialect's malformed challenge, never as the bare error: server input never reaches a caller raw.
    """
    if status != 402:
        return []
    raw = body.encode() if isinstance(body, str) else body
    found: list[Challenge] = []
    first_error: Exception | None = None
    for dialect in dialects():
        try:
            found.extend(dialect.read(status, headers, raw, url))
        except (ChallengeError, InvoiceError) as exc:
            first_error = first_error or exc
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, RecursionError) as exc:
            log.warning("the %s dialect could not read a 402 (%s): a defect in httpay to report", dialect.name,
                        type(exc).__name__)
            first_error = first_error or ChallengeError(
                f"the {dialect.name} challenge cannot be read ({type(exc).__name__})", field="challenge")
    if not found and first_error is not None:
        raise first_error
    return found


def dialects_read() -> str:
    """The dialects httpay reads, by the names every view gives them, for a 402 none of them read
    ("l402-classic (L402 and LSAT), l402-v0.2, mpp or x402"): a registered dialect is named too."""
    names = [f"{d.name} (L402 and LSAT)" if d.name == "l402-classic" else d.name for d in dialects()]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)
