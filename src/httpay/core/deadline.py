"""The payment deadline: by when one paid request must reach the wallet or signer."""

from __future__ import annotations

import time

from httpay.errors import PaymentDeadlineExceeded

DEFAULT_PAYMENT_DEADLINE_S = 60.0


class Deadline:
    """`seconds` after a 402 arrived, the payment must have been handed to the wallet (or signer).

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
