"""`quote()` across every challenge of one 402: one decision for L402, LSAT, MPP and x402 together.

Pure: challenges and a policy in, one quote (or the refusal a person can act on) out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

import httpay
from httpay.core.model import Challenge, Money, Offer
from httpay.core.quote import quote, requote

URL, HOST = "https://api.example/x", "api.example"


def offer(oid: str, price: Money, dialect: str, method: str = "lightning", rail: str = "lightning",
          unpayable: str | None = None) -> Offer:
    return Offer(oid, oid, price, (method,), dialect=dialect, pay_method=method, rail=rail, unpayable=unpayable,
                 network="eip155:8453" if rail == "evm" else None)


def usdc(cents_1e4: int) -> Money:
    return Money(cents_1e4, "USDC", decimals=6, usd_pegged=True)


L402 = Challenge("l402-classic", (offer("l402", Money.msat(10_000), "l402-classic"),), "k1", reuse="scope")
MPP_LN = Challenge("mpp", (offer("mpp_ln", Money.msat(5_000), "mpp"),), "k2", reuse="request")
MPP_SAME = Challenge("mpp", (offer("mpp_ln", Money.msat(10_000), "mpp"),), "k3", reuse="request")
X402 = Challenge("x402", (offer("x402", usdc(3_000), "x402", "x402:exact:eip155:8453", "evm"),), "k4",
                 reuse="request")  # 0.003 USD = 3,000 msat at 100,000 USD/BTC
TEMPO = Challenge("mpp", (offer("tempo", Money(1, "0x20c0"), "mpp", "mpp:tempo:charge", "other",
                                unpayable="MPP tempo/charge is not a method httpay pays"),), "k5", reuse="request")


def anyone(o: Offer) -> tuple[str, str] | None:
    return None if o.rail in ("lightning", "evm") else ("rail", "no way to pay")


def no_signer(o: Offer) -> tuple[str, str] | None:
    return None if o.rail == "lightning" else ("no_signer", "no signer is configured")


@dataclass(frozen=True)
class Row:
    name: str
    challenges: tuple[Challenge, ...]
    offer: str | None               # the offer paid (None: refused)
    dialect: str = ""
    policy: dict[str, Any] = field(default_factory=dict)
    cannot_pay: Any = anyone
    rule: str = ""                  # the refusal's rule


ROWS = [
    Row("cheapest in msat at the one rate", (L402, MPP_LN), "mpp_ln", "mpp"),
    Row("a stablecoin priced against sat", (L402, MPP_LN, X402), "x402", "x402",
        policy={"methods": ["lightning", "x402"]}),
    Row("methods the policy does not allow are not compared", (L402, MPP_LN, X402), "mpp_ln", "mpp"),
    Row("preferred dialect first", (L402, MPP_LN), "l402", "l402-classic", policy={"prefer": ["l402-classic"]}),
    Row("preferred method prefix", (L402, MPP_LN, X402), "x402", "x402",
        policy={"prefer": ["x402"], "methods": ["lightning", "x402"]}),
    Row("same price: the credential that serves the scope", (MPP_SAME, L402), "l402", "l402-classic"),
    Row("largest strategy across dialects", (L402, MPP_LN), "l402", "l402-classic", policy={"strategy": "largest"}),
    Row("an unpayable method never wins", (TEMPO, MPP_LN), "mpp_ln", "mpp"),
    Row("no signer: the lightning offer", (X402, L402), "l402", "l402-classic",
        policy={"methods": ["lightning", "x402"]}, cannot_pay=no_signer),
    Row("the refusal of the challenge the payer could pay", (X402, L402), None,
        policy={"max_per_payment_sat": 1}, cannot_pay=no_signer, rule="max_per_payment"),
    Row("only unpayable methods: refused by the dialect's words", (TEMPO,), None, rule="mpp"),
    Row("above every cap", (L402, MPP_LN), None, policy={"max_per_payment_sat": 4}, rule="max_per_payment"),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_quote_across(row: Row) -> None:
    policy = httpay.Policy(usd_per_btc=100_000, **row.policy)
    if row.offer is None:
        with pytest.raises(httpay.PaymentRefused) as caught:
            quote(row.challenges, policy, url=URL, host=HOST, usd_per_btc=None, cannot_pay=row.cannot_pay)
        assert caught.value.rule == row.rule, str(caught.value)
        return
    q = quote(row.challenges, policy, url=URL, host=HOST, usd_per_btc=None, cannot_pay=row.cannot_pay)
    assert (q.offer.offer_id, q.challenge.dialect) == (row.offer, row.dialect)
    assert {o.offer_id for o in q.offers} == {o.offer_id for c in row.challenges for o in c.offers}


def test_an_approver_may_pick_another_dialects_offer() -> None:
    policy = httpay.Policy(usd_per_btc=100_000)
    q = quote((L402, MPP_LN), policy, url=URL, host=HOST, usd_per_btc=None, cannot_pay=anyone)
    assert q.offer.offer_id == "mpp_ln"
    again = requote(q, policy, L402.offers[0], anyone)
    assert (again.offer.offer_id, again.challenge.dialect) == ("l402", "l402-classic")
    with pytest.raises(httpay.PaymentRefused):  # a copy at another price was not offered
        requote(q, policy, offer("l402", Money.msat(1), "l402-classic"), anyone)


def test_a_pinned_offer_is_found_in_any_challenge() -> None:
    q = quote((L402, MPP_LN), httpay.Policy(usd_per_btc=100_000), url=URL, host=HOST, usd_per_btc=None,
              cannot_pay=anyone, offer_id="l402")
    assert q.challenge.dialect == "l402-classic"
    with pytest.raises(httpay.PaymentRefused) as caught:
        quote((L402, MPP_LN), httpay.Policy(usd_per_btc=100_000), url=URL, host=HOST, usd_per_btc=None,
              cannot_pay=anyone, offer_id="nope")
    assert caught.value.rule == "offer_id"


def test_prefer_is_checked() -> None:
    with pytest.raises(httpay.ConfigError, match="prefer"):
        httpay.Policy(prefer=[3])  # type: ignore[list-item]
    assert httpay.Policy(prefer="mpp").prefer == ("mpp",)
