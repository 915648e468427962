"""Offer choice and every policy rule at its boundary (pure: no ledger, no network)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from httpay import ConfigError, PaymentOffers, PaymentRefused, Policy
from httpay.config import policy_from_toml
from httpay.core.model import Money
from httpay.core.quote import quote
from httpay.dialects.l402_v02 import to_challenge
from tests.helpers import challenge_body

OFFERS = PaymentOffers.from_dict(challenge_body())
RATE = 100_000  # USD per BTC: 1 cent = 10 sat


CHALLENGE = to_challenge(OFFERS, "http://s/x")


def decide(policy: Policy, *, url: str = "http://s/x", host: str = "s", usd_per_btc: float | None = RATE,
           **kw):  # type: ignore[no-untyped-def]
    """The flow's one quote for the notebook's offers (as the flow calls it)."""
    return quote(CHALLENGE, policy, url=url, host=host, usd_per_btc=usd_per_btc, **kw)


@pytest.mark.parametrize(
    ("strategy", "calls", "expected"),
    [
        ("cheapest", None, "offer_c668e0c0"),
        ("cheapest_per_credit", None, "offer_a896b13c"),  # 499/750 < 100/120 < 1/1
        ("largest", None, "offer_a896b13c"),
        ("covers_calls", 1, "offer_c668e0c0"),
        ("covers_calls", 2, "offer_97bf23f7"),
        ("covers_calls", 120, "offer_97bf23f7"),
        ("covers_calls", 121, "offer_a896b13c"),
        ("covers_calls", 5000, "offer_a896b13c"),  # nothing covers it: the most credits
    ],
)
def test_strategies(strategy, calls, expected) -> None:  # type: ignore[no-untyped-def]
    # no limit, so every offer is a candidate (the $4.99 one is above the default 1,000 sat per payment)
    assert decide(Policy.unlimited(strategy=strategy, calls=calls)).offer.offer_id == expected


def test_strategy_respects_limits() -> None:
    d = decide(Policy(strategy="largest", max_per_payment_usd=1))
    assert d.offer.offer_id == "offer_97bf23f7" and d.price_msat == 1_000_000


def test_per_payment_limit_boundary() -> None:
    assert decide(Policy(max_per_payment_usd=0.01)).price_msat == 10_000  # exactly at the limit passes
    with pytest.raises(PaymentRefused) as err:
        decide(Policy(max_per_payment_sat=9))
    assert err.value.rule == "max_per_payment" and "10 sat" in str(err.value) and "9 sat" in str(err.value)


def test_a_quote_says_what_routing_fees_may_add_to_its_price() -> None:
    """A Lightning payment may also spend its fee cap, which every budget holds: the quote a person
    approves says so, in its line and its view."""
    q = decide(Policy(max_per_payment_sat=20))
    assert q.price_msat == 10_000 and q.fee_cap_msat == 10_000  # the default cap: 1%, at least 10 sat
    assert "≈ 10 sat ($0.01) + up to 10 sat ($0.01) in fees)" in str(q)
    assert ("fees", "up to 10 sat ($0.01) more (routing)") in [(r.cells[0].text, r.cells[1].text) for r in q.view().rows]
    capped = decide(Policy(max_fee_msat=2_000))
    assert capped.fee_cap_msat == 2_000 and "+ up to 2 sat" in str(capped)


@pytest.mark.parametrize(("cap", "request_cap", "fee_cap"), [
    ({"max_per_payment_sat": 10}, None, 0),         # at the limit: no room left for fees
    ({"max_per_payment_sat": 14}, None, 4_000),     # the fees get what the limit leaves
    ({"max_per_payment_sat": 14, "max_fee_msat": 50_000}, None, 4_000),  # a fee cap set higher is cut too
    ({"max_per_payment_sat": 1_000}, 12_500, 2_500),  # this request's price cap is the bound
    ({"max_per_payment_sat": 1_000}, None, 10_000),   # room enough: the whole fee cap
], ids=["at-limit", "room-4-sat", "fee-cap-cut", "request-cap", "room-enough"])
def test_a_per_payment_limit_holds_the_price_and_its_fees_together(cap: dict[str, int], request_cap: int | None,
                                                                   fee_cap: int) -> None:
    """"At most 10 sat per payment" (or --max-cost-sat 10) is what the payment may cost, routing
    fees included: the fee cap the wallet gets is cut to what the limit leaves beside the price."""
    q = decide(Policy(**cap), max_price_msat=request_cap)  # type: ignore[arg-type]
    assert q.price_msat == 10_000 and q.fee_cap_msat == fee_cap
    assert q.price_msat + q.fee_cap_msat <= min(c for c in (q.cap_msat, request_cap) if c is not None)
    assert "fees included" in " ".join(q.checks)


def test_a_preview_holds_the_fee_cap_the_payment_would_hold() -> None:
    """A dry run refuses exactly where paying would: at the per-payment limit the payment holds no
    fees, so a daily budget of exactly its price fits the preview too (it held the uncut 10 sat)."""
    from httpay.core.payer import Payer
    from httpay.core.preview import preview
    from httpay.ledger import SQLiteLedger

    with SQLiteLedger(":memory:") as lg:
        payer = Payer(wallet=None, policy=Policy(max_per_payment_sat=10, per_day_sat=10), ledger=lg)
        q = preview(payer, CHALLENGE, url="http://s/x", usd_per_btc=RATE, with_budgets=True, cannot_pay=lambda o: None)
    assert q.price_msat == 10_000 and q.fee_cap_msat == 0


def test_total_budget_boundary_counts_what_was_spent() -> None:
    assert decide(Policy(budget_usd=0.02, max_fee_msat=0), spent_msat=10_000).offer.offer_id == "offer_c668e0c0"
    with pytest.raises(PaymentRefused) as err:
        decide(Policy(budget_usd=0.02, max_fee_msat=0), spent_msat=10_001)
    assert err.value.rule == "budget" and "left" in str(err.value)


def test_usd_limits_without_a_rate_refuse_rather_than_guess() -> None:
    with pytest.raises(PaymentRefused) as err:
        decide(Policy(budget_usd=1), url="u", usd_per_btc=None)
    assert err.value.rule == "exchange_rate" and "usd_per_btc" in str(err.value)


def test_hosts_allow_and_deny() -> None:
    with pytest.raises(PaymentRefused) as err:
        decide(Policy(denied_hosts=["s"]))
    assert err.value.rule == "denied_host"
    with pytest.raises(PaymentRefused) as err:
        decide(Policy(allowed_hosts=["other"]))
    assert err.value.rule == "allowed_hosts" and "allowed_hosts" in str(err.value)
    assert decide(Policy(allowed_hosts=["s"])).offer
    assert decide(Policy(allowed_hosts=["*.example.com"]), url="u", host="api.example.com").offer


def test_methods() -> None:
    assert decide(Policy(methods=["lightning"])).method == "lightning"
    with pytest.raises(PaymentRefused) as err:
        decide(Policy(methods=["x402"]))  # httpay pays these offers only by lightning
    assert err.value.rule == "methods"
    with pytest.raises(ConfigError, match="names 'credit_card', which httpay cannot pay by"):
        Policy(methods=["credit_card"])  # shown in offers, never paid by httpay: a policy naming it is a mistake


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"methods": ["lightnin"]}, "names 'lightnin', which httpay cannot pay by: use 'lightning'"),
    ({"methods": ["x402:"]}, "names 'x402:'"),
    ({"methods": [1]}, "must be a list of method names"),
    ({"payees": {"stock.example": "not-a-key"}}, "stock.example's payee must be a node pubkey"),
    ({"payees": {"stock.example": "02" + "ab" * 31}}, "must be a node pubkey (66 hex digits"),
    ({"payees": ["02" + "ab" * 32]}, "must be a mapping of host to node pubkey"),
])
def test_typos_in_methods_and_payees_are_refused_where_they_are_written(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        Policy(**kwargs)  # type: ignore[arg-type]


def test_a_payee_is_kept_in_lower_case_so_an_upper_case_pin_still_matches() -> None:
    key = "03" + "AB" * 32
    assert Policy(payees={"stock.example": key}).payee_for("stock.example") == key.lower()


@pytest.mark.parametrize(
    "kwargs",
    [{"budget_usd": -1}, {"max_per_payment_usd": "1"}, {"price_tolerance": 2}, {"strategy": "random"},
     {"strategy": "covers_calls"}, {"usd_per_btc": 0}],
)
def test_bad_settings_are_config_errors(kwargs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError):
        Policy(**kwargs)


def test_policy_from_toml(tmp_path: Path) -> None:
    f = tmp_path / "policy.toml"
    f.write_text('[policy]\nbudget_usd = 5\nper_day_usd = 1.5\nmax_per_payment_usd = 0.5\nstrategy = "covers_calls"\n'
                 'calls = 100\nallowed_hosts = ["stock.example"]\nusd_per_btc = 100000\n')
    p = policy_from_toml(f)
    assert (p.budget_usd, p.per_day_usd, p.calls, p.allowed_hosts) == (5, 1.5, 100, ["stock.example"])
    names = [(lim.name, lim.default) for lim in p.limits("stock.example", RATE)]
    assert names == [("total budget", False), ("hourly budget", True), ("daily budget", False)]  # hourly: the default
    (tmp_path / "bad.toml").write_text("budget = 5\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        policy_from_toml(tmp_path / "bad.toml")
    (tmp_path / "broken.toml").write_text("budget_usd = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        policy_from_toml(tmp_path / "broken.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        policy_from_toml(tmp_path / "missing.toml")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 10_000))
def test_decision_never_exceeds_limits(cap_sat, budget_sat, spent_sat) -> None:  # type: ignore[no-untyped-def]
    p = Policy(max_per_payment_sat=cap_sat, budget_sat=budget_sat)
    try:
        d = decide(p, spent_msat=spent_sat * 1000)
    except PaymentRefused as exc:
        assert exc.rule in ("max_per_payment", "budget")
        return
    assert d.price_msat is not None
    assert d.price_msat <= cap_sat * 1000
    assert spent_sat * 1000 + d.price_msat <= budget_sat * 1000


@pytest.mark.parametrize(("msat", "shown"), [
    (1_000, "1 sat ($0.001)"), (9_000, "9 sat ($0.009)"), (450, "0.45 sat ($0.00045)"), (1, "0.001 sat ($0.000001)"),
    (10_000, "10 sat ($0.01)"), (0, "0 sat ($0.00)"),
])
def test_an_amount_under_a_cent_shows_its_first_digit_not_zero(msat: int, shown: str) -> None:
    from httpay.amounts import fmt_msat

    assert fmt_msat(msat, 100_000) == shown  # a limit of "1 sat ($0.00)" reads as no money at all


def test_dollars_tell_apart_the_sats_they_stand_beside() -> None:
    """One rule for every amount: cents from a dollar up, three significant digits below one, so
    a sentence naming 10, 15, 20 and 25 sat never shows two of them as the same dollars."""
    from httpay.amounts import fmt_msat, usd_text

    assert [fmt_msat(s * 1000, 100_000) for s in (5, 10, 15, 20, 25, 500, 1_234)] == [
        "5 sat ($0.005)", "10 sat ($0.01)", "15 sat ($0.015)", "20 sat ($0.02)", "25 sat ($0.025)", "500 sat ($0.50)",
        "1,234 sat ($1.23)"]
    assert len({usd_text(s * 1000, 100_000) for s in range(1, 1000)}) == 999  # every whole sat under a dollar
    assert fmt_msat(15_000, 97_123.5) == "15 sat ($0.0146)" and fmt_msat(10_000, 97_123.5) == "10 sat ($0.00971)"


PIN = "02" + "ab" * 32


@pytest.mark.parametrize(("url", "pattern"), [
    ("https://api.example.com/c", "*.example.com"),
    ("https://api.example.com:8443/c", "*.example.com"),      # a port
    ("https://example.org./c", "example.org"),                # a trailing dot
    ("https://EXAMPLE.org/c", "example.org"),                 # case
    ("http://xn--exmple-4nf.com/", "xn--exmple-4nf.com"),     # httpx hands back the Unicode form
    ("http://[::1]:9/x", "::1"),                              # an IPv6 literal with a port
    ("http://[::1]:9/x", "[::1]:9"),
])
def test_host_rules_name_a_host_however_its_url_spells_it(url: str, pattern: str) -> None:
    """A payee pin or a denied host that a port, a dot or another spelling slipped past paid the wrong node."""
    from httpay.core.flow import host_of

    host = host_of(url)
    assert Policy(payees={pattern: PIN}).payee_for(host) == PIN
    with pytest.raises(PaymentRefused) as err:
        Policy(denied_hosts=[pattern]).check_host(host)
    assert err.value.rule == "denied_host"


@pytest.mark.parametrize(("url", "pattern"), [
    ("https://example.com.evil/c", "example.com"), ("https://notexample.com/c", "*.example.com"),
    ("https://api.example.com:8443/c", "api.example.com:443"), ("http://[::1]:9/x", "::1:9"),
])
def test_host_rules_name_no_other_host(url: str, pattern: str) -> None:
    from httpay.core.flow import host_of

    assert Policy(payees={pattern: PIN}).payee_for(host_of(url)) is None


def test_the_total_budget_must_fit_the_fee_cap_too() -> None:
    """The ledger holds a Lightning payment's fee cap with its price: a quote that fits only the
    price would have an approver asked about a payment the ledger then refuses."""
    assert decide(Policy(budget_usd=0.02), spent_msat=0).offer.offer_id == "offer_c668e0c0"  # 10 sat + 10 sat cap
    with pytest.raises(PaymentRefused) as err:
        decide(Policy(budget_usd=0.02), spent_msat=1)
    assert err.value.rule == "budget" and "costs 10 sat ($0.01) + up to 10 sat ($0.01) in fees" in str(err.value)


@pytest.mark.parametrize(("hosts", "says"), [
    (["*"], "leave allowed_hosts unset to pay any host"),
    (["https://stock.example/x"], "give the host alone"),
    (["a*b.example"], "only as a leading '*.'"),
    ([""], "an empty host name"),
])
def test_a_host_pattern_that_would_match_nothing_is_refused_when_made(hosts: list[str], says: str) -> None:
    """`allowed_hosts=["*"]` used to be accepted and then match no host at all."""
    with pytest.raises(ConfigError, match=re.escape(says)):
        Policy(allowed_hosts=hosts)
    assert Policy(allowed_hosts=["stock.example", "*.example.org", "api.example:8443"]).allowed_hosts


def test_a_setting_changed_later_is_checked_as_one_given() -> None:
    """`p.max_per_payment_sat = nan` used to be kept and then fail as a bare ValueError mid-payment;
    a misspelt name was kept and never read. Both are refused, and the policy keeps what it had."""
    p = Policy(max_per_payment_sat=5)
    for name, value, says in (("max_per_payment_sat", float("nan"), "non-negative finite number"),
                              ("max_per_payment_sat", "5", "non-negative finite number"),
                              ("allowed_hosts", ["*"], "is not a host"),
                              ("budget_ust", 5, "did you mean budget_usd?")):
        with pytest.raises(ConfigError, match=re.escape(says)):
            setattr(p, name, value)
    assert p.max_per_payment_sat == 5 and p.allowed_hosts is None and "at most 5 sat per payment" in str(p)
    p.budget_usd = 3
    assert p.budget_usd == 3 and "$3.00 in total" in str(p)


def test_a_policy_file_opts_in_to_sign_in_and_proposals_as_python_does(tmp_path: Path) -> None:
    """`sign_in` and `proposals` were Python-only: a CLI or MCP user (HTTPAY_POLICY) could not opt in,
    and the file's list of known keys left them out. `approve` is a function: the file says how else."""
    f = tmp_path / "policy.toml"
    f.write_text('[policy]\nsign_in = true\nproposals = ["x402-lnbtc"]\n')
    p = policy_from_toml(f)
    assert p.sign_in is True and p.proposals == ["x402-lnbtc"]
    f.write_text('[policy]\nsign_in = "yes"\n')
    with pytest.raises(ConfigError, match="sign_in must be true or false"):
        policy_from_toml(f)
    f.write_text('[policy]\napprove = "alice"\n')
    with pytest.raises(ConfigError, match=r"approve is a Python function .* `httpay get --ask`"):
        policy_from_toml(f)


def test_the_readmes_policy_file_reads_as_it_says(tmp_path: Path) -> None:
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```toml\n(# policy\.toml.*?)```", readme, re.DOTALL)
    assert block is not None
    f = tmp_path / "policy.toml"
    f.write_text(block.group(1), encoding="utf-8")
    p = policy_from_toml(f)
    assert p.budget_usd == 5 and p.sign_in is False and p.proposals == []


@pytest.mark.parametrize(("price", "worth", "shown"), [
    (Money.msat(10_000), "10 sat ($0.01)", "10 sat ($0.01)"),           # a sat price is its own worth
    ("10 sat", "10 sat ($0.01)", "10 sat ($0.01)"),                     # as an approval keeps it
    (Money(1, "USD"), "10 sat ($0.01)", "$0.01 ≈ 10 sat ($0.01)"),
    ("0.01 USDC", "10 sat ($0.01)", "0.01 USDC ≈ 10 sat ($0.01)"),
])
def test_a_price_in_sat_is_not_converted_to_sat(price: object, worth: str, shown: str) -> None:
    """Classic L402 progress read 'pay l402_… (10 sat ≈ 10 sat ($0.01) …)'."""
    from httpay.amounts import price_and_worth

    assert price_and_worth(price, worth) == shown
