"""`quote()`: the one decision every payment passes. Pure: offers, policy, rate and spent in, a
`Quote` or a `PaymentRefused` (naming the rule, the numbers and the knob to change) out.

The flow, `--dry-run`, `httpay offers`, the agent's tools, the approval queue and the dashboard
all call it; an approver's other choice is quoted again through the very same checks. The ledger
re-checks the budgets inside its own transaction, so two agents racing cannot both squeeze under
a limit; this is the first, cheap check, and the one that chooses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from httpay.amounts import FEES_ADVICE, MAX_MSAT, fee_cap_text, fmt_msat, rate_ok
from httpay.core.model import Challenge, Offer, Quote
from httpay.errors import PaymentRefused
from httpay.policy import Policy
from httpay.safe import clean
from httpay.wallets.base import default_fee_limit_msat

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
    challenges: Challenge | Sequence[Challenge],
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

    `challenges` are every challenge of one 402 (L402, LSAT, MPP, x402 side by side), ranked. For
    each, in order: the host, the offer a caller pinned, what this payer can pay at all
    (`cannot_pay`: no wallet, no signer for the network), what the dialect found unpayable, the
    policy's methods, a price every limit can compare (never pay blind), the per-payment limit and
    this request's cap, the total budget left after `spent_msat`. Then, among every offer of every
    challenge that passed, the policy's `prefer` order and its strategy pick exactly one (prices
    compared in msat at the one rate; ties go to the credential that serves the most requests).
    When none passes, the refusal is that of the first challenge this payer could pay at all.
    """
    ranked = (challenges,) if isinstance(challenges, Challenge) else tuple(challenges)
    if not ranked:
        raise PaymentRefused("refused: the 402 carries no challenge httpay can read", rule="challenge")
    rate = policy.usd_per_btc or (usd_per_btc if rate_ok(usd_per_btc) else None)  # inf/NaN: no rate
    policy.check_host(host, tuple(o for c in ranked for o in c.offers))
    if offer_id is not None:
        holding = [c for c in ranked if c.offer(offer_id) is not None]
        ranked = tuple(holding) or ranked[:1]  # none holds it: the first refuses it by name
    fits: list[_Fit] = []
    refusals: list[tuple[Challenge, PaymentRefused]] = []
    for index, challenge in enumerate(ranked):
        try:
            fits.extend(_fitting(challenge, index, policy, host=host, rate=rate, spent_msat=spent_msat,
                                 cannot_pay=cannot_pay, max_price_msat=max_price_msat, offer_id=offer_id))
        except PaymentRefused as exc:
            refusals.append((challenge, exc))
    if not fits:
        reachable = [exc for c, exc in refusals
                     if cannot_pay is None or any(cannot_pay(o) is None for o in c.offers)]
        raise (reachable or [exc for _, exc in refusals])[0]
    best = _pick(fits, policy)
    return Quote(
        challenge=best.challenge, offer=best.offer, method=best.method, price_msat=best.price, url=url, host=host,
        usd_per_btc=rate, alternatives=tuple(f.offer for f in fits if f is not best), checks=best.checks,
        spent_msat=spent_msat, max_price_msat=max_price_msat, challenges=ranked if len(ranked) > 1 else (),
        fee_cap_msat=fee_cap_of(best.offer, best.price, policy, best.cap), cap_msat=best.cap,
    )


def fee_cap_of(offer: Offer, price_msat: int | None, policy: Policy, cap_msat: int | None = None) -> int:
    """The most a payment of `offer` may add in routing fees (a Lightning payment's fee cap, held
    with its price by every budget); 0 for a payment that travels with the request. Within the
    per-payment cap (`cap_msat`): what a payment may cost is its price and its fees together."""
    if offer.rail != "lightning" or price_msat is None:
        return 0
    return fee_cap_for(policy, price_msat, cap_msat)


def fee_cap_for(policy: Policy, amount_msat: int, cap_msat: int | None = None) -> int:
    """The most a Lightning payment of `amount_msat` may spend on routing fees: the policy's cap, else
    the wallet's default one, cut to what the per-payment cap leaves beside the amount ("at most 10
    sat" is 10 sat with the fees, not 10 sat and then whatever routing costs). The ledger holds it with
    the amount until the payment settles, and the wallet is given it."""
    fees = policy.max_fee_msat if policy.max_fee_msat is not None else default_fee_limit_msat(amount_msat)
    return fees if cap_msat is None else max(0, min(fees, cap_msat - amount_msat))


@dataclass(frozen=True)
class _Fit:
    """An offer that passed every check, with the challenge it belongs to and the checks it passed."""

    challenge: Challenge
    index: int  # the challenge's rank in the 402
    offer: Offer
    method: str
    price: int | None
    checks: tuple[str, ...]
    cap: int | None  # the most it may cost, fees included


def _fitting(challenge: Challenge, index: int, policy: Policy, *, host: str, rate: float | None, spent_msat: int,
             cannot_pay: CannotPay | None, max_price_msat: int | None, offer_id: str | None) -> list[_Fit]:
    """The offers of one challenge that pass every check, or the PaymentRefused of the first that fails."""
    offers = challenge.offers
    checks = [f"host {clean(host, 80)} allowed"]
    choices = _pinned(challenge, offer_id) if offer_id is not None else offers

    def refuse(message: str, rule: str, **kw: Any) -> PaymentRefused:
        return PaymentRefused(message, rule=rule, offers=offers, **kw)

    reachable = [o for o in choices if cannot_pay is None or cannot_pay(o) is None]
    if not reachable:
        assert cannot_pay is not None
        rule, why = cannot_pay(choices[0]) or ("methods", "")
        if rule == "rail" and all(o.unpayable for o in choices):  # the dialect's own words say more
            raise refuse(f"refused: no {challenge.dialect} offer can be paid: "
                         + "; ".join(f"{clean(o.offer_id, 40)}: {o.unpayable}" for o in choices), challenge.dialect)
        if rule == "no_wallet":
            raise refuse(f"refused: {host} asks for a Lightning payment ({'; '.join(str(o.price) for o in choices)}) "
                         "and no Lightning wallet is configured; pass wallet= to the client", rule)
        raise refuse(f"refused: {host} asks for an {challenge.dialect} payment ({_prices(choices)}); {why}", rule)
    if all(o.pay_method is None for o in challenge.offers):  # no policy could allow any: say so, with no knob
        raise refuse(f"refused: {host} takes only {clean(', '.join(challenge.payment_methods), 200) or 'nothing'}, "
                     "which httpay cannot pay", "unpayable")
    # The offers' own reasons come before the policy's methods: allowing a method httpay cannot pay
    # by would only lead to this refusal, so its advice would send the reader round in a circle.
    payable_by = [o for o in reachable if o.pay_method is not None]
    open_ = [o for o in payable_by if o.unpayable is None]
    if payable_by and not open_:
        why = "; ".join(f"{clean(o.offer_id, 40)}: {o.unpayable}" for o in payable_by)
        raise refuse(f"refused: no {challenge.dialect} offer can be paid: {why}", challenge.dialect)
    payable = [(o, o.pay_method) for o in open_ if o.pay_method is not None and method_allowed(policy.methods, o.pay_method)]
    if not payable:  # (an offer pinned that httpay cannot pay by any method: the service's methods)
        takes = ", ".join(dict.fromkeys(m for o in open_ for m in o.payment_methods)) or ", ".join(challenge.payment_methods)
        raise refuse(f"refused: no offer can be paid with {clean(', '.join(policy.methods), 120) or 'no method'}; "
                     f"the service takes {clean(takes, 200) or 'nothing'}",
                     "methods", knob="methods", advice="allow one of the service's methods in {knob}")
    checks.append(f"method allowed by the policy ({clean(', '.join(policy.methods), 80)})")

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
    def held(o: Offer, p: int) -> int:
        """What the ledger will hold for the offer: its price, and a Lightning payment's fee cap (the
        budget must fit both, or an approver is asked about a payment the ledger then refuses)."""
        return p + fee_cap_of(o, p, policy, cap)

    fitting = [(o, m, p) for o, m, p in priced
               if p is None or (p <= MAX_MSAT and (cap is None or p <= cap) and (left is None or held(o, p) <= left))]
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
                         f"{fmt_msat(cap, rate)}", "max_price" if cap_knob == "max_price" else "max_per_payment",
                         knob=cap_knob, advice="raise {knob} to pay it")
        assert left is not None
        first = min(((o, p) for o, _, p in priced if p is not None), key=lambda op: held(*op), default=None)
        fees = held(*first) - first[1] if first is not None else 0
        raise refuse(f"refused: {what} costs {fmt_msat(cheapest, rate)}"
                     + fee_cap_text(fees, rate)
                     + f" but only {fmt_msat(max(left, 0), rate)} "
                     f"of the total budget is left ({fmt_msat(spent_msat, rate)} spent)", "budget",
                     knob=budget_knob, advice="raise {knob}" + (FEES_ADVICE if fees and cheapest <= left else ""))
    if cap is not None:
        checks.append(f"at most {fmt_msat(cap, rate)} per payment, fees included ({cap_knob}"
                      f"{', default' if cap_default else ''})")
    if left is not None:
        checks.append(f"{fmt_msat(max(left, 0), rate)} of the total budget left")
    checks.append("hourly, daily and per-host budgets are checked by the ledger as the payment is reserved")
    return [_Fit(challenge, index, o, m, p, tuple(checks), cap) for o, m, p in fitting]




def requote(q: Quote, policy: Policy, answer: Any, cannot_pay: CannotPay | None = None) -> Quote:
    """What an approver's answer lets the flow pay: True keeps the offer, an offer (or its id) among
    the challenge's picks another. Either way `quote` runs again on the quote's own inputs (rate,
    spent, this request's cap), so no approval skips a limit. PaymentRefused otherwise."""
    target = q.challenge
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
        target = next((c for c in q.challenges if any(o is found for o in c.offers)), q.challenge)
    else:
        raise PaymentRefused(f"refused by the approver: {q}", rule="approval", offers=q.offers)
    return quote(target, policy, url=q.url, host=q.host, usd_per_btc=q.usd_per_btc, spent_msat=q.spent_msat,
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


_REUSE_RANK = {"scope": 0, "challenge": 1, "request": 2}  # what one payment buys: the most first


def _preference(f: _Fit, prefer: Sequence[str]) -> int:
    """Where the offer stands in the policy's `prefer` list (its dialect, or its method or a prefix
    of it); not listed: after every listed one."""
    for i, name in enumerate(prefer):
        if name == f.challenge.dialect or method_allowed((name,), f.method):
            return i
    return len(prefer)


def _pick(fits: list[_Fit], policy: Policy) -> _Fit:
    """Pick among offers that fit every limit: the policy's `prefer` order first, then its strategy;
    ties go to the credential that serves the most requests, then lightning, then the first listed."""
    strategy, calls = policy.strategy, policy.calls

    def price(f: _Fit) -> int:
        return f.price if f.price is not None else f.offer.price.amount  # exact integers: no float overflow

    def tie(f: _Fit) -> tuple[int, int, int, int]:
        return (_preference(f, policy.prefer), _REUSE_RANK.get(f.challenge.reuse, 1),
                0 if f.method == "lightning" else 1, f.index)

    def first(f: _Fit) -> int:
        return _preference(f, policy.prefer)

    if strategy == "covers_calls":
        # the cheapest offer that buys at least `calls` credits; if none does, the most credits
        covering = [f for f in fits if (f.offer.balance or 0) >= (calls or 1)]
        if covering:
            return min(covering, key=lambda f: (first(f), price(f), tie(f)))
        return min(fits, key=lambda f: (first(f), -(f.offer.balance or 0), price(f), tie(f)))
    if strategy == "largest":
        return min(fits, key=lambda f: (first(f), -price(f), tie(f)))
    if strategy == "cheapest_per_credit":
        return min(fits, key=lambda f: (first(f), Fraction(price(f), max(f.offer.balance or 1, 1)), price(f), tie(f)))
    return min(fits, key=lambda f: (first(f), price(f), tie(f)))
