"""What the flow would quote now, for surfaces that show rather than pay (`--dry-run`, `httpay
offers`, the agent's tools, the dashboard): the same `quote()`, with the rate and the spent total
read here, synchronously, as a driver would."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from httpay.core.dialect import ChecksAhead, Invoiced, dialect_of
from httpay.core.flow import check_quoted_invoice, host_of
from httpay.core.model import Challenge, Quote
from httpay.core.payer import Payer
from httpay.core.quote import CannotPay, quote
from httpay.core.rates import resolve_rate
from httpay.errors import InvoiceError, PaymentRefused
from httpay.ledger.base import limit_since, over_limit


def preview(payer: Payer, challenge: Challenge | Sequence[Challenge], *, url: str, usd_per_btc: float | None = None,
            max_price_msat: int | None = None, offer_id: str | None = None, with_budgets: bool = False,
            cannot_pay: CannotPay | None = None, request: httpx.Request | None = None,
            network: str | None = None) -> Quote:
    """The quote for `challenge` (or every challenge of one 402, to choose among) on this payer's
    policy and ledger (no wallet or signer is called).

    `usd_per_btc` overrides the resolved rate; `with_budgets` also makes the check the ledger makes
    when reserving (every window and host budget, the fee cap included), so a preview refuses
    exactly where paying would; `cannot_pay` replaces the payer's own capabilities (a surface that
    previews for a wallet it does not hold). The dialect's own checks before paying run too (a
    challenge past its expiry, a digest of another body than `request`'s, the invoice a challenge
    carries, checked as the flow checks it on the wallet's network: `network`, else the payer's
    wallet's, else none is checked). Raises PaymentRefused naming the rule (`invoice:<check>` for an invoice refused)."""
    policy = payer.policy
    rate = usd_per_btc if usd_per_btc is not None else resolve_rate(policy, payer.wallet)
    host = host_of(url)
    spent = payer.ledger.spent_msat() if policy.has_total_budget else 0
    q = quote(challenge, policy, url=url, host=host, usd_per_btc=rate, spent_msat=spent,
              cannot_pay=cannot_pay or payer.cannot_pay,
              max_price_msat=max_price_msat, offer_id=offer_id)
    _check_ahead(payer, q, request, network)  # as the flow's `obtain` and invoice checks do, before the ledger's
    if with_budgets and q.price_msat is not None:
        limits = policy.limits(host, q.usd_per_btc, q.challenge.offers, tags=payer.tags)
        now = payer.ledger.now()
        spent_by = {lim: payer.ledger.spent_msat(host=lim.host, since=limit_since(lim, now), tag=lim.tag)
                    for lim in limits}
        over_limit(limits, spent_by, q.price_msat, q.usd_per_btc, q.fee_cap_msat)  # the fee cap the quote holds
    return q


def _check_ahead(payer: Payer, q: Quote, request: httpx.Request | None, network: str | None) -> None:
    """What the chosen offer's dialect refuses before paying, told without a round trip or a wallet:
    an invoice it refuses reads as the refusal the flow records for it."""
    dialect = dialect_of(q.challenge)
    if not isinstance(dialect, ChecksAhead):
        return
    network = network or (payer.wallet.network if payer.wallet is not None else None)
    try:
        payable = dialect.check_ahead(q.challenge, q, request)
        if isinstance(payable, Invoiced):
            check_quoted_invoice(payer.policy, q, payable.invoice, network=network)
    except InvoiceError as exc:
        raise PaymentRefused(f"refused: the invoice: {exc}", rule=f"invoice:{exc.check}", offers=q.challenge.offers) from None
