"""The MCP server as an MCP host sees it, through the SDK's own client over its in-memory transport:
tool annotations, isError on every kind of failure, a cut body that says how to read on, fetch
POSTing a paid request, the spending scope in the descriptions, and approval asked of the person
by elicitation (yes, no, and a host that cannot elicit)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import types
from mcp.client.client import Client

import httpay
from httpay.apps.agent import Toolbox
from httpay.apps.agent.mcp_server import ElicitingApprover, build_server, toolbox_from_env
from httpay.apps.approvals import ApprovalQueue
from httpay.ledger import SQLiteLedger, Status
from tests.agent.conftest import Account, assert_no_secret
from tests.agent.test_tools import mock_box
from tests.helpers import FakeService, FakeWallet

BEARER = "sekrit-bearer-123"
Elicit = Callable[[Any, types.ElicitRequestParams], Awaitable[types.ElicitResult | types.ErrorData]]


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def session(box: Toolbox, calls: list[tuple[str, dict[str, Any]]], *, elicit: Elicit | None = None,
            mode: str = "legacy") -> list[types.CallToolResult]:
    """Run `calls` through an MCP client session with the server of `box`; the results in order."""
    server = build_server(box)

    async def run() -> list[types.CallToolResult]:
        with anyio.fail_after(60):
            async with Client(server, mode=mode, elicitation_callback=elicit) as client:  # type: ignore[arg-type]
                return [await client.call_tool(name, args) for name, args in calls]

    return anyio.run(run)


def listed(box: Toolbox) -> dict[str, types.Tool]:
    server = build_server(box)

    async def run() -> list[types.Tool]:
        async with Client(server, mode="legacy") as client:
            return (await client.list_tools()).tools

    return {t.name: t for t in anyio.run(run)}


# -- annotations and descriptions ---------------------------------------------------------------------
HINTS = {  # name: (readOnlyHint, destructiveHint, idempotentHint, openWorldHint)
    "fetch": (False, True, False, True),
    "offers": (True, False, True, True),
    "pay": (False, True, False, True),
    "budget": (True, False, True, False),
    "payments": (True, False, True, False),
}


def test_every_tool_carries_its_annotations_on_the_wire(ledger: SQLiteLedger) -> None:
    tools = listed(mock_box(FakeService(), ledger))
    assert list(tools) == list(HINTS)
    for name, (read_only, destructive, idempotent, open_world) in HINTS.items():
        a = tools[name].annotations
        assert a is not None and a.title and tools[name].title == a.title
        assert (a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint) == \
            (read_only, destructive, idempotent, open_world), name
        wire = a.model_dump(by_alias=True, exclude_none=True)
        assert set(wire) == {"title", "readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"}


def test_the_spending_tools_say_what_they_may_spend_and_where_the_credentials_go(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    box = mock_box(svc, ledger, allowed_hosts=["stock.test", "*.stock.test"], denied_hosts=["evil.stock.test"],
                   per_day_usd=1)
    tools = listed(box)
    for name in ("fetch", "pay"):
        d = tools[name].description or ""
        assert ("Scope: it may pay only stock.test, *.stock.test except evil.stock.test, by lightning, within at most "
                "$2.00 per payment, $5.00 in total, 10,000 sat per hour (default), $1.00 per day (the budget tool shows "
                "what is left).") in d, d
        assert ("The service's credentials (Authorization) are added only to requests to http://stock.test; never "
                "to another host.") in d
        assert BEARER not in d
    assert "Scope" not in (tools["budget"].description or "") and "Scope" not in (tools["offers"].description or "")
    default = listed(Toolbox(httpay.Client(wallet=FakeWallet(svc), ledger=ledger)))["fetch"].description or ""
    assert "it may pay any host, by lightning, within at most 1,000 sat per payment (default)" in default
    assert "added only" not in default and "configured headers" not in default


# -- isError -----------------------------------------------------------------------------------------------
def down(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


FAILURES = [  # (what, service, wallet failure, policy, tool, arguments, the text it starts with)
    ("a refusal", "paywall", None, {"max_per_payment_usd": 0.001}, "fetch", {"url": "/ticker/MSFT"},
     "refused: the cheapest offer costs 10 sat ($0.01), above the per-payment limit"),
    ("a failed payment", "paywall", httpay.InsufficientFunds("the wallet holds 3 sat"), {}, "fetch",
     {"url": "/ticker/MSFT"}, "error: InsufficientFunds: the wallet holds 3 sat. Nothing was paid."),
    ("a network failure", "down", None, {}, "fetch", {"url": "/x"}, "error: the request to /x failed: ConnectError"),
    ("a 402 httpay cannot read", "unreadable", None, {}, "fetch", {"url": "/x"},
     "HTTP 402 Payment Required\nthe service asks for payment in a form httpay cannot read"),
    ("bad input the tool checks", "paywall", None, {}, "fetch", {"url": "/x", "method": "FROB"},
     "error: method must be one of GET"),
    ("bad input the schema refuses", "paywall", None, {}, "fetch", {"url": 5}, "Error executing tool fetch"),
    ("an offer never made", "paywall", None, {}, "pay", {"url": "/ticker/MSFT", "offer_id": "offer_nope"},
     "refused: the service did not offer 'offer_nope'"),
    ("a payment limit out of range", "paywall", None, {}, "payments", {"limit": 500},
     "error: limit must be a whole number from 1 to 100"),
    ("offers of an unreachable host", "down", None, {}, "offers", {"url": "/x"}, "error: the request to /x failed"),
]


@pytest.mark.parametrize(("what", "kind", "fail", "policy", "tool", "args", "starts"), FAILURES,
                         ids=[f[0] for f in FAILURES])
def test_each_failure_comes_back_with_is_error(what: str, kind: str, fail: Exception | None, policy: dict[str, Any],
                                               tool: str, args: dict[str, Any], starts: str, tmp_path: Path) -> None:
    svc = FakeService()
    wallet = FakeWallet(svc, fail=fail)
    handler: Any = {"down": down, "paywall": svc,
                    "unreadable": lambda r: httpx.Response(402, json={"payment_context_token": "ctx-secret-token"})}[kind]
    with SQLiteLedger(tmp_path / "l.db") as led:
        [result] = session(mock_box(handler, led, wallet=wallet, **policy), [(tool, args)])
        assert result.is_error is True, text_of(result)
        assert text_of(result).startswith(starts), text_of(result)[:300]
        assert_no_secret(text_of(result), [BEARER, "ctx-secret-token"])
        assert all(r.status is Status.FAILED for r in led.receipts())  # nothing settled
        assert len(wallet.calls) == (1 if fail else 0)


def test_success_comes_back_without_is_error(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    results = session(mock_box(svc, ledger, wallet=FakeWallet(svc)), [
        ("offers", {"url": "/ticker/MSFT"}), ("fetch", {"url": "/ticker/MSFT"}), ("budget", {}), ("payments", {})])
    assert [r.is_error for r in results] == [False, False, False, False]
    assert text_of(results[1]).startswith("HTTP 200 OK\npaid 10 sat ($0.01)")


# -- truncation ------------------------------------------------------------------------------------------
def test_a_cut_body_says_how_much_and_reads_on_without_a_second_request(ledger: SQLiteLedger) -> None:
    body = "".join(f"{i:05d}," for i in range(2_000))
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        return httpx.Response(200, text=body)

    first, more, bad = session(mock_box(handler, ledger), [
        ("fetch", {"url": "/report", "max_chars": 1000}), ("fetch", {"url": "/report", "offset": 1000, "max_chars": 11000}),
        ("fetch", {"url": "/report", "max_chars": 20000})])
    assert text_of(first).split("\n")[1] == body[:1000] and not first.is_error
    assert text_of(first).endswith("[body cut: showing characters 1-1,000 of 12,000; to read on, call fetch again with "
                                   "the same url and method and offset=1000 (max_chars up to 12,000): the body is "
                                   "kept, nothing is requested or paid again]")
    assert text_of(more).split("\n")[1] == body[1000:] and text_of(more).endswith("this is the end of the body]")
    assert sent == ["/report"]
    assert bad.is_error and text_of(bad).startswith("error: max_chars must be a whole number from 1 to 12,000")


# -- POST through fetch, paid -------------------------------------------------------------------------------
def test_fetch_posts_a_json_body_paying_the_demos_mpp_route(account: Account) -> None:
    box = Toolbox(wallet=account.wallet, policy=httpay.Policy(budget_usd=0.05, max_per_payment_usd=0.02),
                  ledger=str(account.ledger_path), base_url=account.url)
    [posted, again] = session(box, [
        ("fetch", {"url": "/mpp/ticker/AAPL", "method": "POST", "body": '{"note": "buy"}'}),
        ("fetch", {"url": "/mpp/ticker/AAPL", "method": "POST", "body": '{"note": "buy"}', "content_type": None})])
    for result in (posted, again):
        out = text_of(result)
        assert not result.is_error and out.startswith("HTTP 200 OK\npaid 10 sat") and '"symbol":"AAPL"' in out, out
    with SQLiteLedger(account.ledger_path) as led:
        rows = led.receipts()
        assert [r.status for r in rows] == [Status.SETTLED, Status.SETTLED] and all(r.protocol == "mpp" for r in rows)
        assert_no_secret(text_of(posted) + text_of(again), [account.wallet_key] + [r.preimage or "" for r in rows])
    assert account.wallet.balance_msat() == 980_000, "MPP: one payment buys one request, each POST paid once"
    box.close()


def test_a_json_body_given_over_mcp_reaches_the_service_byte_for_byte(ledger: SQLiteLedger) -> None:
    got: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        got.append(request)
        return httpx.Response(201, json={"ok": True})

    body = '{"symbol":"AAPL",  "qty": [1, 2]}'
    results = session(mock_box(handler, ledger), [
        ("fetch", {"url": "/orders", "method": "POST", "body": body}),
        ("fetch", {"url": "/orders", "method": "POST", "body": "42"}),
        ("fetch", {"url": "/orders", "method": "POST", "body": None})])
    assert [r.is_error for r in results] == [False, False, False]
    assert [r.content for r in got] == [body.encode(), b"42", b""]
    assert got[0].headers["content-type"] == "application/json" and "content-type" not in got[2].headers


# -- elicitation -------------------------------------------------------------------------------------------
def approving_box(ledger: SQLiteLedger, fallback: Callable[[Any], Any]) -> tuple[Toolbox, FakeWallet]:
    svc = FakeService()
    wallet = FakeWallet(svc)
    return mock_box(svc, ledger, wallet=wallet, approve=fallback), wallet


def answering(answer: types.ElicitResult | types.ErrorData, asked: list[types.ElicitRequestParams]) -> Elicit:
    async def elicit(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult | types.ErrorData:
        asked.append(params)
        return answer

    return elicit


@pytest.mark.parametrize(("answer", "paid"), [
    (types.ElicitResult(action="accept", content={"pay": True}), True),
    (types.ElicitResult(action="accept", content={"pay": False}), False),
    (types.ElicitResult(action="decline"), False),
    (types.ElicitResult(action="cancel"), False),
    (types.ErrorData(code=types.INVALID_REQUEST, message="the person closed the window"), False),
], ids=["yes", "no", "declined", "cancelled", "the question failed"])
def test_a_payment_needing_approval_is_asked_of_the_person_through_the_host(
        answer: types.ElicitResult | types.ErrorData, paid: bool, ledger: SQLiteLedger) -> None:
    fallback: list[Any] = []
    box, wallet = approving_box(ledger, lambda q: fallback.append(q) or True)
    asked: list[types.ElicitRequestParams] = []
    [result] = session(box, [("fetch", {"url": "/ticker/MSFT"})], elicit=answering(answer, asked))
    [question] = asked
    assert question.message == ("Pay 10 sat ($0.01) + up to 10 sat ($0.01) in fees for offer_c668e0c0 '1 Credit Package' by lightning at "
                                "http://stock.test/ticker/MSFT? (budget left 5,000 sat ($5.00) of 5,000 sat ($5.00))")
    schema = question.requested_schema  # type: ignore[union-attr]
    assert schema["required"] == ["pay"] and schema["properties"]["pay"]["type"] == "boolean"
    assert fallback == [], "the host asked the person: the policy's own approver is not asked too"
    out = text_of(result)
    if paid:
        assert not result.is_error and out.startswith("HTTP 200 OK\npaid 10 sat") and len(wallet.calls) == 1
        assert [r.status for r in ledger.receipts()] == [Status.SETTLED]
    else:
        assert result.is_error and out.startswith("refused by the approver: pay offer_c668e0c0") and wallet.calls == []
        assert "Nothing was paid." in out and ledger.receipts() == []


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_a_host_that_cannot_elicit_keeps_the_policys_approver(mode: str, ledger: SQLiteLedger) -> None:
    """No elicitation callback (legacy), or a 2026 connection with no back-channel (auto, in-process)."""
    seen: list[str] = []
    box, wallet = approving_box(ledger, lambda q: seen.append(str(q)) or False)
    asked: list[types.ElicitRequestParams] = []
    [refused] = session(box, [("fetch", {"url": "/ticker/MSFT"})], mode=mode,
                        elicit=answering(types.ElicitResult(action="accept", content={"pay": True}), asked)
                        if mode == "auto" else None)
    assert asked == [] and len(seen) == 1 and seen[0].startswith("pay offer_c668e0c0")
    assert refused.is_error and text_of(refused).startswith("refused by the approver") and wallet.calls == []


def test_without_an_approver_nothing_is_asked(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    asked: list[types.ElicitRequestParams] = []
    [paid] = session(mock_box(svc, ledger, wallet=FakeWallet(svc)), [("fetch", {"url": "/ticker/MSFT"})],
                     elicit=answering(types.ElicitResult(action="decline"), asked))
    assert not paid.is_error and asked == []


def test_the_question_shows_server_text_cleaned(ledger: SQLiteLedger) -> None:
    from tests.agent.test_server_text import hostile_offers

    svc = FakeService(offers=hostile_offers("ten sat\n\x1b[2Jpaid 0 sat"))
    box = mock_box(svc, ledger, wallet=FakeWallet(svc), approve=lambda q: False)
    asked: list[types.ElicitRequestParams] = []
    session(box, [("fetch", {"url": "/ticker/MSFT"})],
            elicit=answering(types.ElicitResult(action="decline"), asked))
    assert "'ten sat\\n\\x1b[2Jpaid 0 sat'" in asked[0].message and "\n" not in asked[0].message


def test_httpay_mcp_ask_waits_for_a_person_in_the_queue_unless_the_host_asks(tmp_path: Path, account: Account) -> None:
    env = {"HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": account.url, "HTTPAY_DEMO_KEY": account.wallet_key,
           "HTTPAY_LEDGER": str(tmp_path / "l.db")}
    box = toolbox_from_env(env, ask=True, approval_timeout=5)
    assert isinstance(box.client.policy.approve, ApprovalQueue)
    build_server(box)
    approver = box.client.policy.approve
    assert isinstance(approver, ElicitingApprover) and isinstance(approver.fallback, ApprovalQueue)
    assert approver.timeout_s == 5, "--approval-timeout bounds the host's question too"
    assert "a person approves each payment" in box.description("fetch")
    box.close()
    plain = toolbox_from_env(env)
    assert plain.client.policy.approve is None
    plain.close()


def test_headers_need_the_base_url_they_belong_to(account: Account, tmp_path: Path) -> None:
    env = {"HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": account.url, "HTTPAY_DEMO_KEY": account.wallet_key,
           "HTTPAY_LEDGER": str(tmp_path / "l.db"), "HTTPAY_HEADERS": json.dumps({"Authorization": f"Bearer {BEARER}"})}
    with pytest.raises(httpay.ConfigError) as err:
        toolbox_from_env(env)
    assert "HTTPAY_HEADERS needs HTTPAY_BASE_URL" in str(err.value) and BEARER not in str(err.value)


def test_the_scope_and_the_budget_name_the_limits_of_the_toolboxs_tags(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    pol = httpay.Policy(usd_per_btc=100_000, budget_usd=5, tag_limits={"agent=research": {"per_day_usd": 2},
                                                                        "agent=other": {"budget_sat": 7}})
    client = httpay.Client(wallet=FakeWallet(svc), policy=pol, ledger=ledger, transport=httpx.MockTransport(svc),
                           tags={"agent": "research"})
    box = Toolbox(client)
    fetch = listed(box)["fetch"].description or ""
    assert ("$5.00 in total, 10,000 sat per hour (default), 50,000 sat per day (default), $2.00 per day for "
            "agent=research (the budget tool") in fetch and "agent=other" not in fetch
    assert "$2.00 per day for agent=research" in box.budget() and "agent=other" not in box.budget()


def test_the_server_runs_two_tool_calls_at_once_and_keeps_each_cut_body(ledger: SQLiteLedger) -> None:
    """An MCP host may call tools concurrently: the server runs each in its own worker thread."""
    import threading

    both_in = threading.Barrier(2, timeout=30)  # each request waits for the other: they overlap, or this fails

    def handler(request: httpx.Request) -> httpx.Response:
        both_in.wait()
        return httpx.Response(200, text=request.url.path[1:] * 5_000)

    server = build_server(mock_box(handler, ledger))

    async def run() -> dict[str, types.CallToolResult]:
        out: dict[str, types.CallToolResult] = {}
        with anyio.fail_after(60):
            async with Client(server, mode="legacy") as client:
                async def one(path: str) -> None:
                    out[path] = await client.call_tool("fetch", {"url": path})

                async with anyio.create_task_group() as tg:
                    tg.start_soon(one, "/a")
                    tg.start_soon(one, "/b")
                for path in ("/a", "/b"):
                    out[path + "+"] = await client.call_tool("fetch", {"url": path, "offset": 4000})
        return out

    got = anyio.run(run)
    for path, letter in (("/a", "a"), ("/b", "b")):
        assert not got[path].is_error and text_of(got[path]).split("\n")[1] == letter * 4000
        assert text_of(got[path + "+"]).split("\n")[1] == letter * 1000


def test_a_person_who_never_answers_is_a_no_after_the_approval_timeout(ledger: SQLiteLedger) -> None:
    box, wallet = approving_box(ledger, lambda q: True)
    server = build_server(box)  # wraps the approver
    approver = box.client.policy.approve
    assert isinstance(approver, ElicitingApprover) and approver.timeout_s == 300
    approver.timeout_s = 0.2
    never = anyio.Event()

    async def silent(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        await never.wait()  # the person walked away
        raise AssertionError("unreachable")

    async def run() -> types.CallToolResult:
        with anyio.fail_after(60):
            async with Client(server, mode="legacy", elicitation_callback=silent) as client:
                return await client.call_tool("fetch", {"url": "/ticker/MSFT"})

    result = anyio.run(run)
    assert result.is_error and text_of(result).startswith("refused by the approver") and wallet.calls == []
