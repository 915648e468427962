"""The one place the BTC/USD rate is resolved: the policy's fixed rate, its source, the wallet's."""

from __future__ import annotations

from typing import Any

from httpay.amounts import rate_ok
from httpay.policy import Policy
from httpay.safe import get_logger

log = get_logger("httpay")


def resolve_rate(policy: Policy, wallet: Any = None) -> float | None:
    """BTC/USD: the policy's fixed rate, else its rate source, else the wallet's own. None if unknown
    (then a USD limit refuses to pay rather than guess). May do I/O (a rate source, a wallet):
    the flow asks for it with the `GetRate` effect, once per attempt."""
    if policy.usd_per_btc:
        return policy.usd_per_btc
    for source in (policy.rate_source, getattr(wallet, "usd_per_btc", None)):
        if not callable(source):
            continue
        try:
            value = source()
        except Exception as exc:  # noqa: BLE001 - any failure of a rate source means "rate unknown"
            log.warning("the BTC/USD rate source failed (%s); USD limits will refuse until it answers",
                        type(exc).__name__)
            continue
        if rate_ok(value):  # finite and positive: an inf or NaN rate is no rate
            return float(value)
    return None
