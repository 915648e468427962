"""Events: what the payment pipeline tells the people (and logs) watching it, step by step."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from httpay.safe import MAX_LINE, clean, get_logger

log = get_logger("httpay")


@dataclass(frozen=True)
class Event:
    """One step of a paid request. `kind` is one of: challenge, decision, approval, payment_request,
    invoice, reserved, paid, payment_failed, retry, served, waited."""

    kind: str
    url: str
    request_id: str
    data: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        data = ", ".join(f"{k}={clean(v)}" for k, v in self.data.items())
        return clean(f"[{self.request_id}] {self.kind} {clean(self.url)}: {data}", MAX_LINE)


EventHook = Callable[[Event], None]


def emit(hook: EventHook | None, event: Event, message: str, level: int = logging.INFO) -> None:
    """Log one line for the step (no secrets in `message`) and hand the event to the hook.

    The record carries structured fields for log pipelines: `httpay_step`, `httpay_request_id`
    (the correlation id shared by every step of one paid request) and `httpay_url`. Server text
    in `message` is made one bounded line here, so no step can forge a log line or fill a disk.
    """
    log.log(level, "[%s] %s: %s", event.request_id, event.kind, clean(message, MAX_LINE),
            extra={"httpay_step": event.kind, "httpay_request_id": event.request_id, "httpay_url": clean(event.url)})
    if hook is not None:
        hook(event)
