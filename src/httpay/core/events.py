"""Typed events: one frozen dataclass per step of a paid request (as h11's events), so a consumer
reads fields that are always there, whatever the dialect. Each step is also one `logging` line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from httpay.core.model import Challenge, Offer, Quote
from httpay.ledger.models import Receipt
from httpay.lightning import Invoice
from httpay.safe import MAX_LINE, clean, get_logger
from httpay.wallets.base import Payment

log = get_logger("httpay")


@dataclass(frozen=True)
class Event:
    """One step of a paid request; `request_id` is shared by every step of one request."""

    kind: ClassVar[str] = "event"
    url: str
    request_id: str

    @property
    def data(self) -> dict[str, Any]:
        """The step's own fields by name (every field of the kind, always present)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("url", "request_id")}

    def __str__(self) -> str:
        data = ", ".join(f"{k}={clean(v)}" for k, v in self.data.items())
        return clean(f"[{self.request_id}] {self.kind} {clean(self.url)}: {data}", MAX_LINE)


@dataclass(frozen=True)
class ChallengeMet(Event):
    kind: ClassVar[str] = "challenge"
    challenge: Challenge
    status: int = 402

    @property
    def offers(self) -> tuple[Offer, ...]:
        return self.challenge.offers

    @property
    def protocol(self) -> str:
        return self.challenge.dialect


@dataclass(frozen=True)
class Quoted(Event):
    kind: ClassVar[str] = "decision"
    quote: Quote


@dataclass(frozen=True)
class Approved(Event):
    kind: ClassVar[str] = "approval"
    quote: Quote


@dataclass(frozen=True)
class PaymentRequested(Event):
    """The service said what to pay for the chosen offer (L402 v0.2's payment request)."""

    kind: ClassVar[str] = "payment_request"
    payment_request: Any


@dataclass(frozen=True)
class InvoiceChecked(Event):
    kind: ClassVar[str] = "invoice"
    invoice: Invoice
    quote: Quote


@dataclass(frozen=True)
class Reserved(Event):
    kind: ClassVar[str] = "reserved"
    receipt: Receipt


@dataclass(frozen=True)
class Paid(Event):
    """Money left: `payment` is the wallet's answer (None for a signed payment the service settled).
    `receipt` is the row settled as it is being written (said the moment the wallet answers: the
    write goes on beside the retry, and a failure to make it is a PaidRequestFailed)."""

    kind: ClassVar[str] = "paid"
    receipt: Receipt
    payment: Payment | None = None


@dataclass(frozen=True)
class PaymentFailed(Event):
    kind: ClassVar[str] = "payment_failed"
    receipt: Receipt | None
    error: str = ""


@dataclass(frozen=True)
class Retried(Event):
    kind: ClassVar[str] = "retry"
    attempt: int


@dataclass(frozen=True)
class Served(Event):
    kind: ClassVar[str] = "served"
    status: int
    receipt: Receipt | None  # None: nothing paid by this request (signed in, or another request's payment used)


@dataclass(frozen=True)
class Waited(Event):
    """Another request's payment answers this one: it waits for it instead of paying."""

    kind: ClassVar[str] = "waited"
    receipt: Receipt | None = None
    key: str | None = None


@dataclass(frozen=True)
class Refused(Event):
    kind: ClassVar[str] = "refused"
    rule: str
    reason: str


EventHook = Callable[[Event], None]


def heard(hook: EventHook | None, level: int = logging.INFO) -> bool:
    """Whether a step at `level` reaches anyone (a hook, or a logger that keeps the level): when not,
    the flow builds neither the event nor its line."""
    return hook is not None or log.isEnabledFor(level)


def emit(hook: EventHook | None, event: Event, message: str, level: int = logging.INFO) -> None:
    """Log one line for the step (no secrets in `message`) and hand the event to the hook.

    The record carries structured fields for log pipelines: `httpay_step`, `httpay_request_id`
    (the correlation id shared by every step of one paid request) and `httpay_url`. Server text
    in `message` is made one bounded line here, so no step can forge a log line or fill a disk.
    """
    if not log.isEnabledFor(level):  # nobody reads the line: its cleaning is skipped, the hook still hears
        if hook is not None:
            hook(event)
        return
    log.log(level, "[%s] %s: %s", event.request_id, event.kind, clean(message, MAX_LINE),
            extra={"httpay_step": event.kind, "httpay_request_id": event.request_id, "httpay_url": clean(event.url)})
    if hook is not None:
        hook(event)
