"""The refusals of one tag: what the dashboard's tag filter shows, on every backend, exact whatever
the tag's text (LIKE's wildcards, quotes, JSON's own characters)."""

from __future__ import annotations

import pytest

from httpay.ledger import Ledger

AWKWARD = ['100%', 'a_b', 'back\\slash', 'quo"te', 'x}, {"agent": "y', 'comma, space', 'Research', 'ünï']


@pytest.mark.parametrize("value", ["research", *AWKWARD])
def test_refusals_filtered_by_a_tag_are_exactly_that_tags(any_ledger: Ledger, value: str) -> None:
    everyone = ["research", *AWKWARD, "research-2", "re", "%", "_"]
    for i, v in enumerate(everyone):
        any_ledger.note_refusal(host="h.example", url=f"https://h.example/{i}", rule="budget", reason=f"#{i}",
                                tags={"agent": v, "task": "T-1"})
        any_ledger.note_refusal(host="h.example", url=f"https://h.example/{i}/other-key", rule="budget",
                                reason=f"#{i} as task", tags={"task": v})
    got = any_ledger.refusals(tag=("agent", value))
    assert [r.tags["agent"] for r in got] == [value] and got[0].reason == f"#{everyone.index(value)}"
    assert [r.tags for r in any_ledger.refusals(tag=("task", value))] == [{"task": value}]


def test_refusals_by_tag_page_by_id(any_ledger: Ledger) -> None:
    for i in range(6):
        any_ledger.note_refusal(host="h", url=f"https://h/{i}", rule="r", reason=str(i),
                                tags={"agent": "a" if i % 2 else "b"})
    first = any_ledger.refusals(tag=("agent", "a"), limit=2)
    assert [r.reason for r in first] == ["5", "3"]
    assert [r.reason for r in any_ledger.refusals(tag=("agent", "a"), limit=2, before=first[-1].id)] == ["1"]
    assert any_ledger.refusals(tag=("nobody", "a")) == []
