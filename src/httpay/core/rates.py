"""The one place the BTC/USD rate is resolved: the policy's fixed rate, its source, the wallet's."""

from __future__ import annotations

from typing import Any, NamedTuple

from httpay.amounts import rate_ok
from httpay.errors import HttpayError
from httpay.policy import Policy
from httpay.safe import clean, get_logger

log = get_logger("httpay")


class Rate(NamedTuple):
    """A BTC/USD reading: the rate, or None and why none is known (a source that failed, said as a
    person may read it), so a refusal for want of a rate names the wallet that could not be reached."""

    usd_per_btc: float | None
    why_unknown: str | None = None


def _failure(source: str, exc: Exception) -> str:
    """What went wrong, without trusting it: httpay's own errors are already masked; any other
    exception's text may carry a URL's secret or a server's words, so only its type is said."""
    said = clean(str(exc), 300) if isinstance(exc, HttpayError) else type(exc).__name__
    return f"{source} could not be read: {said}"


def read_rate(policy: Policy, wallet: Any = None) -> Rate:
    """BTC/USD: the policy's fixed rate, else its rate source, else the wallet's own. None if unknown
    (then a USD limit refuses to pay rather than guess), with the failure that left it unknown. May
    do I/O (a rate source, a wallet): the flow asks for it with the `GetRate` effect, once per attempt."""
    if policy.usd_per_btc:
        return Rate(policy.usd_per_btc)
    why: str | None = None
    for name, source in (("the policy's rate_source", policy.rate_source),
                         ("the wallet's rate", getattr(wallet, "usd_per_btc", None))):
        if not callable(source):
            continue
        try:
            value = source()
        except Exception as exc:  # noqa: BLE001 - any failure of a rate source means "rate unknown"
            log.warning("the BTC/USD rate source failed (%s); USD limits will refuse until it answers",
                        type(exc).__name__)
            why = why or _failure(name, exc)
            continue
        if rate_ok(value):  # finite and positive: an inf or NaN rate is no rate
            return Rate(float(value))
    return Rate(None, why)


def resolve_rate(policy: Policy, wallet: Any = None) -> float | None:
    """The rate `read_rate` finds (None if unknown)."""
    return read_rate(policy, wallet).usd_per_btc
