"""The lightning session's wire parts: the request read from a challenge (malformed ones name the field)
and the SSE reader the session client streams with."""

from __future__ import annotations

import json
from typing import Any

import pytest

from httpay.dialects.mpp_session import SseEvent, SseParser
from httpay.errors import ChallengeError
from httpay.protocols import mpp as wire
from tests.helpers import make_invoice

HASH = "ab" * 32


def challenge(req: dict[str, Any], intent: str = "session") -> wire.MppChallenge:
    params = wire.make_challenge(b"k", realm="r", method="lightning", intent=intent, request=req)
    found = wire.parse(402, {"www-authenticate": wire.challenge_header(params)})
    assert found is not None
    return found.challenges[0]


def test_a_session_request_reads_whole() -> None:
    bolt11, _ = make_invoice(20_000)
    s = wire.LightningSession.from_challenge(challenge({
        "amount": "2", "currency": "sat", "unitType": "chunk", "depositInvoice": bolt11, "paymentHash": HASH.upper(),
        "depositAmount": "20", "idleTimeout": "300"}))
    assert (s.unit_sat, s.deposit_sat, s.payment_hash, s.unit_type, s.idle_timeout_s) == (2, 20, HASH, "chunk", 300)
    assert s.as_charge().amount_sat == 20
    default = wire.LightningSession.from_challenge(challenge({"amount": "3", "depositInvoice": bolt11, "paymentHash": HASH}))
    assert default.deposit_sat == 60  # [lns]: depositAmount defaults to twenty units
    assert wire.LightningSession.open_payload("AA" * 32, "lnbcrt1")["preimage"] == "aa" * 32


@pytest.mark.parametrize(("req", "field"), [
    ({"amount": "1.5", "depositInvoice": "x", "paymentHash": HASH}, "amount"),
    ({"amount": "2", "currency": "usd", "depositInvoice": "x", "paymentHash": HASH}, "currency"),
    ({"amount": "2", "paymentHash": HASH}, "depositInvoice"),
    ({"amount": "2", "depositInvoice": "x", "paymentHash": "abc"}, "paymentHash"),
    ({"amount": "2", "depositInvoice": "x", "paymentHash": HASH, "depositAmount": "-1"}, "depositAmount"),
])
def test_malformed_session_requests_name_the_field(req: dict[str, Any], field: str) -> None:
    with pytest.raises(ChallengeError) as err:
        wire.LightningSession.from_challenge(challenge(req))
    assert err.value.field == field


def test_a_charge_is_not_a_session() -> None:
    with pytest.raises(ChallengeError, match="not a lightning session"):
        wire.LightningSession.from_challenge(challenge({"amount": "2"}, intent="charge"))


@pytest.mark.parametrize(("lines", "events"), [
    (["data: a", ""], [SseEvent(None, "a")]),
    (["event: payment-need-topup", 'data: {"x":1}', ""], [SseEvent("payment-need-topup", '{"x":1}')]),
    (["data: one", "data: two", ""], [SseEvent(None, "one\ntwo")]),
    ([": a comment", "", "data:no-space", ""], [SseEvent(None, "no-space")]),
    (["", "", "event: e", ""], [SseEvent("e", "")]),
    (["data: unterminated"], []),
])
def test_sse_parser(lines: list[str], events: list[SseEvent]) -> None:
    parser = SseParser()
    assert [e for e in map(parser.feed, lines) if e is not None] == events


def test_sse_event_json() -> None:
    assert SseEvent("payment-receipt", json.dumps({"spent": 4})).json() == {"spent": 4}
