"""The agent tools (issue 14, "Agents") against hostile services, through Toolbox (mode "sync") and
AsyncToolbox ("async"): each case asserts what the model reads (its first words and isError), the
wallet calls, the ledger rows, the spend including fees, and what the service saw."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import httpay
from httpay.apps.agent import AsyncToolbox, Toolbox, ToolText
from httpay.ledger import SQLiteLedger
from tests.hostile.harness import CountingWallet, HostileService, v02_then

RATE = 100_000  # USD per BTC: 10 sat = $0.01
FEE = 1_000     # the counting wallet's fee per payment, msat


def echo_gate(svc: HostileService, path: str) -> str:
    """A v0.2 paywall that, once paid, answers with what it was sent (method, type, body)."""
    svc.v02(path + "-gate", pr_path=path + "-pay")
    gate = svc.handlers[path + "-gate"]
    seen: list[dict[str, Any]] = []
    svc.seen = seen  # type: ignore[attr-defined]

    async def handler(request: Request) -> Response:
        body = (await request.body()).decode()
        seen.append({"method": request.method, "type": request.headers.get("content-type"), "body": body,
                     "key": request.headers.get("idempotency-key")})
        answer = await gate(request)
        if answer.status_code == 200:
            return JSONResponse({"method": request.method, "body": body})
        return answer
    return svc.route(path, handler)


def big_gate(svc: HostileService, path: str) -> str:
    return svc.v02(path, pr_path=path + "-pay", body={"data": "z" * 30_000})


@dataclass
class Case:
    name: str
    setup: Callable[[HostileService, str], str]
    calls: list[tuple[str, dict[str, Any]]]  # tool, arguments (the URL is the `url` setup returned)
    starts: list[str]                         # what each result starts with
    errors: list[bool]                        # each result's isError
    wallet_calls: int
    statuses: tuple[str, ...]
    spent_msat: int
    policy: dict[str, Any] = field(default_factory=dict)
    wallet_fail: Exception | None = None
    quiet_after_first: bool = False           # the calls after the first send nothing to the service


def v02(svc: HostileService, path: str) -> str:
    return svc.v02(path, pr_path=path + "-pay")


CASES = [
    Case("fetch pays a v0.2 paywall once", v02, [("fetch", {})], ["HTTP 200 OK\npaid 10 sat ($0.01) + fee 1 sat"],
         [False], 1, ("settled",), 10_000 + FEE),
    Case("fetch POSTs a JSON body and pays once", echo_gate,
         [("fetch", {"method": "POST", "body": '{"qty": 2}'})], ["HTTP 200 OK\npaid 10 sat"], [False], 1,
         ("settled",), 10_000 + FEE),
    Case("a refusal pays nothing and is an error", v02, [("fetch", {})], ["refused: the cheapest offer costs 10 sat"],
         [True], 0, (), 0, policy={"max_per_payment_sat": 5}),
    Case("a wallet that fails is an error, nothing paid", v02, [("fetch", {})],
         ["error: InsufficientFunds: the wallet is empty. Nothing was paid."], [True], 1, ("failed",), 0,
         wallet_fail=httpay.InsufficientFunds("the wallet is empty")),
    Case("a paid request the service fails is an error, paid once",
         lambda svc, path: v02_then(svc, path, "500"), [("fetch", {})],
         [("error: paid 10 sat ($0.01) + fee 1 sat for offer_c668e0c0 '1 Credit Package' (1 credit) by lightning, "
           "payment hash ")], [True], 1, ("settled",), 10_000 + FEE),
    Case("a cut paid body is read on without paying or asking again", big_gate,
         [("fetch", {}), ("fetch", {"offset": 4000, "max_chars": 12_000}), ("fetch", {"offset": 28_000})],
         ["HTTP 200 OK\npaid 10 sat", "HTTP 200 OK (the body kept from the earlier fetch: not requested or paid again)",
          "HTTP 200 OK (the body kept"], [False, False, False], 1, ("settled",), 10_000 + FEE, quiet_after_first=True),
    Case("pay buys the offer a model chose", v02, [("pay", {"offer_id": "offer_c668e0c0"})],
         ["paid 10 sat ($0.01) + fee 1 sat for offer_c668e0c0"], [False], 1, ("settled",), 10_000 + FEE),
    Case("offers pays nothing", v02, [("offers", {})], ["this costs $0.01 (≈ 10 sat) for 1 credit"], [False], 0, (), 0),
]


def run_tools(mode: str, calls: list[tuple[str, dict[str, Any]]], url: str, svc: HostileService,
              **box: Any) -> tuple[list[ToolText], list[int]]:
    """The results, and how many requests the service had seen before each call and after the last."""
    hits: list[int] = []
    results: list[ToolText] = []
    if mode == "sync":
        with Toolbox(**box) as tb:
            for name, args in calls:
                hits.append(sum(svc.hits.values()))
                results.append(getattr(tb, name)(url, **args))
    else:
        async def go() -> None:
            async with AsyncToolbox(**box) as tb:
                for name, args in calls:
                    hits.append(sum(svc.hits.values()))
                    results.append(await getattr(tb, name)(url, **args))
        asyncio.run(go())
    hits.append(sum(svc.hits.values()))
    return results, hits


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_agent_tools_against_hostile_services(case: Case, mode: str, svc: HostileService, ledger: Path) -> None:
    path = "/t"
    url = case.setup(svc, path)
    wallet = CountingWallet(svc.node, fail=case.wallet_fail, fee_msat=FEE)
    policy = httpay.Policy(usd_per_btc=RATE, **case.policy)
    results, hits = run_tools(mode, case.calls, url, svc, wallet=wallet, policy=policy, ledger=ledger)
    for out, starts, error in zip(results, case.starts, case.errors, strict=True):
        assert out.startswith(starts), (mode, out[:300])
        assert out.is_error is error, (mode, out[:300])
        assert "ctx-1" not in out
    assert len(wallet.calls) == case.wallet_calls
    with SQLiteLedger(ledger) as led:
        assert tuple(r.status.value for r in led.receipts()) == case.statuses
        assert led.spent_msat() == case.spent_msat
    if case.quiet_after_first:
        assert hits[1] > hits[0] and len(set(hits[1:])) == 1, f"reading on sent requests: {hits}"
    if case.setup is echo_gate:
        seen = svc.seen  # type: ignore[attr-defined]
        assert len(seen) >= 2 and all(s["method"] == "POST" and s["body"] == '{"qty": 2}' for s in seen)
        assert all(s["type"] == "application/json" for s in seen)
        assert seen[0]["key"] is None and seen[-1]["key"], "the paid POST carries its call's key"
        assert json.loads(results[0].split("\n")[2]) == {"method": "POST", "body": '{"qty": 2}'}
    if case.wallet_calls and case.statuses == ("settled",) and case.errors == [True]:  # paid, then the service failed
        assert "but then the service answered HTTP 500 Internal Server Error: {\"error\":\"boom\"}. Do not pay again" \
            in results[0]
    if case.setup is big_gate:
        first, more, end = results
        assert first.endswith("offset=4000 (max_chars up to 12,000): the body is kept, nothing is requested or paid again]")
        assert "[body cut: showing characters 4,001-16,000 of 30,011" in more, more[-400:]
        assert end.endswith("of 30,011; this is the end of the body]")


def test_a_service_echoing_the_credential_shows_the_model_none_of_it(svc: HostileService, wallet: CountingWallet,
                                                                     ledger: Path) -> None:
    """A paid service answering with the request's own Authorization: the token (macaroon and
    preimage) it carried, paid for now or held from before, never reaches the model; the scheme's
    name does, so results still read."""
    async def echo(request: Request) -> Response:
        if svc.authorized(request):
            return Response(f"you sent: {request.headers['authorization']}; Payment Required: no")
        return svc.classic_challenge()

    url = svc.route("/echo", echo)
    with Toolbox(httpay.Client(wallet=wallet, ledger=ledger)) as box:
        first, again = box.fetch(url), box.fetch(url)  # paid, then the held token presented
    with SQLiteLedger(ledger) as lg:
        [receipt] = lg.receipts()
    assert "paid" in first and "paid" not in again.splitlines()[1:2]
    for result in (first, again):
        assert "you sent: [redacted]; Payment Required: no" in result, result
        assert receipt.preimage not in result and "AgE" not in result
    assert wallet.paid == 1
