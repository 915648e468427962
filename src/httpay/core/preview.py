"""What the flow would quote now, for surfaces that show rather than pay (`--dry-run`, `httpay
offers`, the agent's tools, the dashboard): the same `quote()`, with the rate and the spent total
read here, synchronously, as a driver would."""

from __future__ import annotations

from collections.abc import Sequence

from httpay.core.flow import host_of
from httpay.core.model import Challenge, Quote
from httpay.core.payer import Payer
from httpay.core.quote import CannotPay, quote
from httpay.core.rates import resolve_rate
from httpay.ledger.base import limit_since, over_limit


def preview(payer: Payer, challenge: Challenge | Sequence[Challenge], *, url: str, usd_per_btc: float | None = None,
            max_price_msat: int | None = None, offer_id: str | None = None, with_budgets: bool = False,
            cannot_pay: CannotPay | None = None) -> Quote:
    """The quote for `challenge` (or every challenge of one 402, to choose among) on this payer's
    policy and ledger (no wallet or signer is called).

    `usd_per_btc` overrides the resolved rate; `with_budgets` also makes the check the ledger makes
    when reserving (every window and host budget, the fee cap included), so a preview refuses
    exactly where paying would; `cannot_pay` replaces the payer's own capabilities (a surface that
    previews for a wallet it does not hold). Raises PaymentRefused naming the rule."""
    policy = payer.policy
    rate = usd_per_btc if usd_per_btc is not None else resolve_rate(policy, payer.wallet)
    host = host_of(url)
    spent = payer.ledger.spent_msat() if policy.has_total_budget else 0
    q = quote(challenge, policy, url=url, host=host, usd_per_btc=rate, spent_msat=spent,
              cannot_pay=cannot_pay or payer.cannot_pay,
              max_price_msat=max_price_msat, offer_id=offer_id)
    if with_budgets and q.price_msat is not None:
        limits = policy.limits(host, q.usd_per_btc, q.challenge.offers, tags=payer.tags)
        now = payer.ledger.now()
        spent_by = {lim: payer.ledger.spent_msat(host=lim.host, since=limit_since(lim, now), tag=lim.tag)
                    for lim in limits}
        over_limit(limits, spent_by, q.price_msat, q.usd_per_btc, q.fee_cap_msat)  # the fee cap the quote holds
    return q
