"""Spend attribution: every row carries the tags of the client (or request) that paid, and a budget
may be set per tag, so one agent's daily budget holds inside a fleet's shared ledger. On SQLite,
PostgreSQL and PgBouncer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import httpay
from httpay.ledger import Intent, Ledger, Status
from httpay.ledger.sqlite import SQLiteLedger
from httpay.policy import Limit


def intent(i: int, tags: dict[str, str], amount: int = 1_000) -> Intent:
    return Intent(host="api.example", url="https://api.example/x", protocol="l402-v0.2", method="lightning",
                  amount_msat=amount, payment_hash=f"{i:064x}", tags=tags)


def test_rows_carry_their_tags_and_are_found_and_summed_by_them(any_ledger: Ledger) -> None:
    research, ops = {"agent": "research", "task": "T-17"}, {"agent": "ops"}
    for i, tags in enumerate([research, research, ops, {}]):
        r = any_ledger.reserve(intent(i, tags), usd_per_btc=100_000.0)
        if i != 1:
            any_ledger.settle(r.id, preimage="00" * 32, fee_msat=10)
    first = any_ledger.receipts()[-1]
    assert first.tags == research and first.usd_per_btc == 100_000.0
    assert [r.id for r in any_ledger.receipts(tag=("agent", "research"))] == [2, 1]
    assert [r.id for r in any_ledger.receipts(tag=("task", "T-17"), status=Status.SETTLED)] == [1]
    assert any_ledger.spent_msat(tag=("agent", "research")) == 1_010 + 1_000  # settled + pending (its fee cap is 0)
    assert any_ledger.totals(tag=("agent", "ops"))["settled"] == 1
    by_tag = {(k, v): (n, spent) for k, v, n, spent in any_ledger.spent_by_tag()}
    assert by_tag[("agent", "research")] == (2, 2_010) and by_tag[("agent", "ops")] == (1, 1_010)
    assert ("task", "T-17") in by_tag
    assert first.to_dict()["tags"] == research


def test_a_tag_budget_holds_inside_a_shared_ledger(any_ledger: Ledger) -> None:
    policy = httpay.Policy(tag_limits={"agent=research": {"budget_sat": 2, "per_day_sat": 100}})
    research, ops = {"agent": "research"}, {"agent": "ops"}
    any_ledger.reserve(intent(1, research), policy.limits("api.example", None, tags=research))
    with pytest.raises(httpay.PaymentRefused) as caught:
        any_ledger.reserve(intent(2, research, 1_500), policy.limits("api.example", None, tags=research))
    assert caught.value.rule == "budget" and "agent=research" in str(caught.value)
    any_ledger.reserve(intent(3, ops, 5_000), policy.limits("api.example", None, tags=ops))  # another agent: not counted


def test_a_tags_window_is_read_by_its_index(tmp_path: Path) -> None:
    with SQLiteLedger(tmp_path / "l.db") as lg:
        lim = Limit("daily budget", 1, window=timedelta(days=1), tag=("agent", "research"))
        sql, args = lg._spent_sql([lim], datetime.now(UTC))
        shown = "\n".join(str(r["detail"]) for r in lg._query("EXPLAIN QUERY PLAN " + sql, args))
    assert "payment_tags_window" in shown and "SCAN t" not in shown and "SCAN p" not in shown, shown


@pytest.mark.parametrize("tags", [{"agent": "a b"}, {"": "x"}, {"k": "x" * 65}, {"k": 3}, "agent=research",
                                  {f"k{i}": "v" for i in range(17)}])
def test_bad_tags_are_refused_by_name(tags: object, tmp_path: Path) -> None:
    with pytest.raises(httpay.ConfigError, match="tags="):
        httpay.Client(wallet=httpay.DemoWallet("http://127.0.0.1:9", "k"), ledger=tmp_path / "l.db",
                      tags=tags)  # type: ignore[arg-type]


@pytest.mark.parametrize(("limits", "named"), [
    ({"agent": {"per_day_usd": 1}}, "key=value"), ({"agent=a": {"daily": 1}}, "not a tag limit"),
    ({"agent=a": {"per_day_usd": -1}}, "non-negative"), ({"agent=a": {}}, "at least one"),
])
def test_bad_tag_limits_are_refused_by_name(limits: object, named: str) -> None:
    with pytest.raises(httpay.ConfigError, match=named):
        httpay.Policy(tag_limits=limits)  # type: ignore[arg-type]


def test_refusals_are_kept_newest_first(any_ledger: Ledger) -> None:
    for i in range(3):
        any_ledger.note_refusal(host="api.example", url=f"https://api.example/{i}", rule="budget",
                                reason=f"refused #{i}", tags={"agent": "a"} if i else None)
    kept = any_ledger.refusals()
    assert [r.url[-1] for r in kept] == ["2", "1", "0"] and kept[0].tags == {"agent": "a"} and kept[-1].tags == {}
    assert [r.url[-1] for r in any_ledger.refusals(limit=1, before=kept[0].id)] == ["1"]
    assert kept[0].to_dict()["rule"] == "budget"
