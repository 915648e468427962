"""Tags through the client, sync and async: every row carries the client's tags (a request's own
over them), and a tag's budget refuses before the wallet is called while another tag pays on."""

from __future__ import annotations

from pathlib import Path

import httpay
from httpay.core.flow import TAGS_EXTENSION
from httpay.ledger import SQLiteLedger
from tests.hostile.harness import CountingWallet, HostileService, run


def test_the_clients_tags_are_on_every_row(svc: HostileService, wallet: CountingWallet, ledger: Path,
                                           mode: str) -> None:
    out = run(mode, svc.classic(), wallet=wallet, ledger=ledger, tags={"agent": "research", "task": "T-17"})
    assert out.error is None and out.settled[0].tags == {"agent": "research", "task": "T-17"}
    out = run(mode, svc.classic("/other"), wallet=wallet, ledger=ledger, tags={"agent": "research"},
              token_scope="url", request={"extensions": {TAGS_EXTENSION: {"task": "T-18"}}})
    assert out.error is None
    assert out.settled[0].tags == {"agent": "research", "task": "T-18"}


def test_a_tag_budget_refuses_before_the_wallet_and_another_tag_pays(svc: HostileService, wallet: CountingWallet,
                                                                     ledger: Path, mode: str) -> None:
    policy = httpay.Policy(tag_limits={"agent=research": {"budget_sat": 15}}, max_fee_msat=1_000)
    first = run(mode, svc.classic("/a"), wallet=wallet, ledger=ledger, policy=policy, tags={"agent": "research"})
    assert first.error is None and first.wallet_calls == 1
    second = run(mode, svc.classic("/b"), wallet=wallet, ledger=ledger, policy=policy, tags={"agent": "research"},
                 token_scope="url")
    assert isinstance(second.error, httpay.PaymentRefused) and second.error.rule == "budget"
    assert "agent=research" in str(second.error) and "tag_limits" in str(second.error)
    # the knob as Python writes it, and as a policy file does
    assert "Policy(tag_limits={'agent=research': {'budget_sat': ...}})" in str(second.error)
    assert ('budget_sat under [tag_limits."agent=research"] in p.toml'
            in second.error.render({"tag_limits": "tag_limits in p.toml"}))
    assert second.wallet_calls == 1  # nothing more was paid
    other = run(mode, svc.classic("/c"), wallet=wallet, ledger=ledger, policy=policy, tags={"agent": "ops"},
                token_scope="url")
    assert other.error is None and other.wallet_calls == 2
    with SQLiteLedger(ledger) as lg:
        assert lg.spent_msat(tag=("agent", "research")) == 11_000


def test_every_refusal_is_kept_for_the_people_who_oversee(svc: HostileService, wallet: CountingWallet, ledger: Path,
                                                         mode: str) -> None:
    policy = httpay.Policy(max_per_payment_sat=5)
    out = run(mode, svc.classic(), wallet=wallet, ledger=ledger, policy=policy, tags={"agent": "research"})
    assert isinstance(out.error, httpay.PaymentRefused) and out.wallet_calls == 0
    with SQLiteLedger(ledger) as lg:
        (kept,) = lg.refusals()
        assert lg.receipts() == []
    assert kept.rule == "max_per_payment" and kept.host == svc.url.removeprefix("http://")
    assert "per-payment limit" in kept.reason and kept.tags == {"agent": "research"}
    assert kept.url.endswith("/classic")


def test_a_requests_own_tags_are_checked_as_the_clients_are(svc: HostileService, wallet: CountingWallet,
                                                           ledger: Path, mode: str) -> None:
    """Tags given per request (`extensions={"httpay_tags": ...}`) used to be stored as given: escape
    codes, 500 of them, numbers. They are a ConfigError before anything is decided or paid."""
    for bad in ({"agent": "a b\x1b[31mRED"}, {f"k{i}": "v" for i in range(500)}, {"agent": 5}, ["agent=x"]):
        out = run(mode, svc.classic(), wallet=wallet, ledger=ledger, token_scope="url",
                  request={"extensions": {TAGS_EXTENSION: bad}})
        assert isinstance(out.error, httpay.ConfigError), (bad, out.error)
    assert wallet.calls == []
    with SQLiteLedger(ledger) as lg:
        assert lg.receipts() == [] and lg.refusals() == []


def test_a_tag_limit_that_could_never_apply_is_refused_when_made() -> None:
    """`"agent = research"` (spaces) loaded and then matched no tag: the limit was never enforced."""
    import pytest

    for spec in ("agent = research", "agent=re search", "a=b=c\x1b"):
        with pytest.raises(httpay.ConfigError, match="no spaces"):
            httpay.Policy(tag_limits={spec: {"budget_sat": 15}})
    assert httpay.Policy(tag_limits={"agent=research": {"budget_sat": 15}}).tag_limits
