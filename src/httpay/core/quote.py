"""`quote()`: the one decision every payment passes. Pure: offers, policy, rate and spent in, a
`Quote` or a `PaymentRefused` (naming the rule, the numbers and the knob to change) out.

The flow, `--dry-run`, `httpay offers`, the agent's tools, the approval queue and the dashboard
all call it; an approver's other choice is quoted again through the very same checks. The ledger
re-checks the budgets inside its own transaction, so two agents racing cannot both squeeze under
a limit; this is the first, cheap check, and the one that chooses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

from httpay.amounts import MAX_MSAT, fmt_msat, rate_ok
from httpay.core.model import Challenge, Offer, Quote
from httpay.errors import PaymentRefused
from httpay.policy import Policy, Strategy
from httpay.safe import clean

CannotPay = Callable[[Offer], "tuple[str, str] | None"]  # (rule, why) the payer has nothing that pays it


def method_allowed(allowed: Sequence[str], method: str) -> bool:
    """True when a policy entry allows `method`: the method itself, or a prefix of it up to a colon
    ("x402" allows every "x402:<scheme>:<network>", "x402:exact" that scheme on any network)."""
    return any(method == a or method.startswith(a + ":") for a in allowed)


def _pinned(challenge: Challenge, offer_id: str) -> tuple[Offer, ...]:
    chosen = tuple(o for o in challenge.offers if o.offer_id == offer_id)
    if not chosen:
        raise PaymentRefused(
            f"refused: the service did not offer {clean(offer_id, 80)!r}; it offers "
            f"{clean(', '.join(o.offer_id for o in challenge.offers), 200) or 'nothing'}",
            rule="offer_id", offers=challenge.offers,
        )
    return chosen


def _prices(offers: Sequence[Offer]) -> str:
    return clean("; ".join(f"{o.price} by {', '.join(o.payment_methods)}" for o in offers), 300)


def quote(
    challenge: Challenge,
    policy: Policy,
    *,
    url: str,
    host: str,
    usd_per_btc: float | None,
    spent_msat: int = 0,
    cannot_pay: CannotPay | None = None,
    max_price_msat: int | None = None,
    offer_id: str | None = None,
) -> Quote:
    """Choose the offer to pay, or raise PaymentRefused saying which rule stopped it.

    In order: the host, the offer a caller pinned, what this payer can pay at all (`cannot_pay`:
    no wallet, no signer for the network), what the dialect found unpayable, the policy's methods,
    a price every limit can compare (never pay blind), the per-payment limit and this request's
    cap, the total budget left after `spent_msat`; then the policy's strategy picks among the rest.
    """
    offers = challenge.offers
    rate = policy.usd_per_btc or (usd_per_btc if rate_ok(usd_per_btc) else None)  # inf/NaN: no rate
    policy.check_host(host, offers)
    checks = [f"host {clean(host, 80)} allowed"]
    choices = _pinned(challenge, offer_id) if offer_id is not None else offers

    def refuse(message: str, rule: str, **kw: Any) -> PaymentRefused:
        return PaymentRefused(message, rule=rule, offers=offers, **kw)

    reachable = [o for o in choices if cannot_pay is None or cannot_pay(o) is None]
    if not reachable:
        assert cannot_pay is not None
        rule, why = cannot_pay(choices[0]) or ("methods", "")
        if rule == "no_wallet":
            raise refuse(f"refused: {host} asks for a Lightning payment ({'; '.join(str(o.price) for o in choices)}) "
                         "and no Lightning wallet is configured; pass wallet= to the client", rule)
        raise refuse(f"refused: {host} asks for an {challenge.dialect} payment ({_prices(choices)}); {why}", rule)
    allowed = [(o, o.pay_method) for o in reachable
               if o.pay_method is not None and method_allowed(policy.methods, o.pay_method)]
    if not allowed:
        raise refuse(f"refused: no offer can be paid with {clean(', '.join(policy.methods), 120) or 'no method'}; "
                     f"the service takes {clean(', '.join(challenge.payment_methods), 200) or 'nothing'}",
                     "methods", knob="methods", advice="allow one of the service's methods in {knob}")
    checks.append(f"method allowed by the policy ({clean(', '.join(policy.methods), 80)})")
    payable = [(o, m) for o, m in allowed if o.unpayable is None]
    if not payable:
        why = "; ".join(f"{clean(o.offer_id, 40)}: {o.unpayable}" for o, _ in allowed)
        raise refuse(f"refused: no {challenge.dialect} offer can be paid: {why}", challenge.dialect)

    cap_info = policy.per_payment_cap(rate, offers)
    cap, cap_knob, cap_default = cap_info or (None, None, False)
    if max_price_msat is not None and (cap is None or max_price_msat < cap):
        cap, cap_knob, cap_default = max_price_msat, "max_price", False
    totals = [lim for lim in policy.limits(host, rate, offers) if lim.host is None and lim.window is None]
    left = min((lim.limit_msat - spent_msat for lim in totals), default=None)
    budget_knob = min(totals, key=lambda lim: lim.limit_msat).knob if totals else None

    priced: list[tuple[Offer, str, int | None]] = []
    for o, m in payable:
        p = o.price.in_msat(rate)
        # Without a price in msat, only an invoice (which states its own amount, checked later) may be
        # paid, and only when no limit needs to compare it: never pay blind.
        if p is None and (cap is not None or left is not None or o.rail != "lightning"):
            continue
        priced.append((o, m, p))
    if not priced:
        currencies = clean(", ".join(sorted({o.price.currency for o, _ in payable})), 120)
        raise refuse(f"refused: the offers are priced in {currencies} and no exchange rate converts that to sat "
                     "(no BTC/USD rate is known; the ledger counts msat)",
                     "exchange_rate", knob="usd_per_btc", advice="set {knob}")
    fitting = [(o, m, p) for o, m, p in priced
               if p is None or (p <= MAX_MSAT and (cap is None or p <= cap) and (left is None or p <= left))]
    if not fitting:
        cheapest = min((p for _, _, p in priced if p is not None), default=0)
        what = f"the offer {clean(offer_id, 80)}" if offer_id is not None else "the cheapest offer"
        if cap is None and left is None:  # the one limit nobody can lift: more than all the bitcoin there is
            raise refuse(f"refused: {what} costs {fmt_msat(cheapest, rate)}, more than all the bitcoin "
                         "there is: not a real price", "max_per_payment")
        if cap is not None and cheapest > cap:
            which = ("this request's price cap" if cap_knob == "max_price"
                     else f"the {'default ' if cap_default else ''}per-payment limit")
            raise refuse(f"refused: {what} costs {fmt_msat(cheapest, rate)}, above {which} of "
                         f"{fmt_msat(cap, rate)}", "max_per_payment", knob=cap_knob, advice="raise {knob} to pay it")
        assert left is not None
        raise refuse(f"refused: {what} costs {fmt_msat(cheapest, rate)} but only {fmt_msat(max(left, 0), rate)} "
                     f"of the total budget is left ({fmt_msat(spent_msat, rate)} spent)", "budget",
                     knob=budget_knob, advice="raise {knob}")
    if cap is not None:
        checks.append(f"at most {fmt_msat(cap, rate)} per payment ({cap_knob}{', default' if cap_default else ''})")
    if left is not None:
        checks.append(f"{fmt_msat(max(left, 0), rate)} of the total budget left")
    checks.append("hourly, daily and per-host budgets are checked by the ledger as the payment is reserved")
    o, m, p = _pick(fitting, policy.strategy, policy.calls)
    return Quote(
        challenge=challenge, offer=o, method=m, price_msat=p, url=url, host=host, usd_per_btc=rate,
        alternatives=tuple(x[0] for x in fitting if x[0] is not o), checks=tuple(checks), spent_msat=spent_msat,
        max_price_msat=max_price_msat,
    )


def requote(q: Quote, policy: Policy, answer: Any, cannot_pay: CannotPay | None = None) -> Quote:
    """What an approver's answer lets the flow pay: True keeps the offer, an offer (or its id) among
    the challenge's picks another. Either way `quote` runs again on the quote's own inputs (rate,
    spent, this request's cap), so no approval skips a limit. PaymentRefused otherwise."""
    if answer is True:
        pick = q.offer.offer_id
    elif isinstance(answer, str) or hasattr(answer, "offer_id"):
        # an id, or an offer exactly as the service made it (neutral, or the dialect's own): never a copy
        # with another price, which the service did not offer
        found = next((o for o in q.offers if _same_offer(answer, o)), None)
        if found is None:
            raise PaymentRefused("refused: the approver picked an offer the service did not make", rule="approval",
                                 offers=q.offers)
        pick = found.offer_id
    else:
        raise PaymentRefused(f"refused by the approver: {q}", rule="approval", offers=q.offers)
    return quote(q.challenge, policy, url=q.url, host=q.host, usd_per_btc=q.usd_per_btc, spent_msat=q.spent_msat,
                 cannot_pay=cannot_pay, max_price_msat=q.max_price_msat, offer_id=pick)


def _same_offer(answer: Any, o: Offer) -> bool:
    """Is an approver's answer this offer: its id, the offer itself (neutral or the dialect's own), or
    an offer-like object with the same id and amount. A copy with another price is not."""
    if isinstance(answer, str):
        return answer == o.offer_id
    if isinstance(answer, Offer):
        return answer == o
    if o.payload is not None and answer == o.payload:
        return True
    return getattr(answer, "offer_id", None) == o.offer_id and getattr(answer, "amount", None) == o.price.amount


def _pick(fitting: list[tuple[Offer, str, int | None]], strategy: Strategy,
          calls: int | None = None) -> tuple[Offer, str, int | None]:
    """Pick among offers that fit every limit. Ties go to lightning, then to the first listed."""

    def price(x: tuple[Offer, str, int | None]) -> int:
        return x[2] if x[2] is not None else x[0].price.amount  # exact integers: no float overflow at any size

    method_rank = {"lightning": 0}
    if strategy == "covers_calls":
        # the cheapest offer that buys at least `calls` credits; if none does, the most credits
        covering = [x for x in fitting if (x[0].balance or 0) >= (calls or 1)]
        if covering:
            return min(covering, key=lambda x: (price(x), method_rank.get(x[1], 1)))
        return max(fitting, key=lambda x: (x[0].balance or 0, -price(x)))
    if strategy == "largest":
        return max(fitting, key=lambda x: (price(x), -method_rank.get(x[1], 1)))
    if strategy == "cheapest_per_credit":
        return min(fitting, key=lambda x: (Fraction(price(x), max(x[0].balance or 1, 1)), price(x),
                                           method_rank.get(x[1], 1)))
    return min(fitting, key=lambda x: (price(x), method_rank.get(x[1], 1)))
