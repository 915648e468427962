"""`httpay mcp` as a real server process, over stdio and over streamable HTTP, paying the demo service."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

import httpay
from httpay.apps.agent import Toolbox
from httpay.apps.agent.mcp_server import build_server, headers_from_env, serve
from httpay.ledger import SQLiteLedger
from tests.agent.conftest import Account, assert_no_secret

ROOT = Path(__file__).resolve().parents[2]


def server_env(account: Account, tmp_path: Path) -> dict[str, str]:
    policy = tmp_path / "policy.toml"
    policy.write_text("[policy]\nbudget_usd = 0.05\nmax_per_payment_usd = 0.02\n")
    return {
        "PYTHONPATH": str(ROOT / "src"), "HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": account.url,
        "HTTPAY_DEMO_KEY": account.wallet_key, "HTTPAY_POLICY": str(policy), "HTTPAY_LEDGER": str(account.ledger_path),
        "HTTPAY_HEADERS": json.dumps({"Authorization": f"Bearer {account.bearer}"}), "HTTPAY_BASE_URL": account.url,
    }


def text_of(result: Any) -> str:
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def story(session: ClientSession, account: Account) -> list[str]:
    """List the tools, fetch a free and a paid ticker, read both resources; return every text seen."""
    await session.initialize()
    tools = await session.list_tools()
    names = [t.name for t in tools.tools]
    assert names == ["fetch", "offers", "pay", "budget", "payments"]
    fetch = tools.tools[0]
    assert fetch.input_schema["required"] == ["url"]
    assert fetch.annotations is not None and fetch.annotations.destructive_hint is True
    assert [t.annotations.read_only_hint for t in tools.tools] == [False, True, False, True, True]  # type: ignore[union-attr]
    assert f"are added only to requests to {account.url}; never to another host" in (fetch.description or "")
    assert "base URL" in fetch.input_schema["properties"]["url"]["description"]
    seen: list[str] = []
    for url in ("/ticker/AAPL", "/ticker/MSFT"):
        result = await session.call_tool("fetch", {"url": url})
        assert not result.is_error
        seen.append(text_of(result))
    assert seen[0].startswith("HTTP 200 OK\n{") and "paid" not in seen[0]
    assert seen[1].startswith("HTTP 200 OK\npaid 10 sat ($0.01) + fee 0 sat for offer_c668e0c0")
    ledger = await session.read_resource("httpay://ledger")
    data = json.loads(ledger.contents[0].text)  # type: ignore[union-attr]
    [payment] = data["payments"]
    assert payment["status"] == "settled" and payment["url"].endswith("/ticker/MSFT") and data["spent_msat"] == 10_000
    assert "preimage" not in payment
    budget = await session.read_resource("httpay://budget")
    seen += [ledger.contents[0].text, budget.contents[0].text]  # type: ignore[union-attr]
    assert budget.contents[0].text.startswith("budget left 40 sat ($0.04) of 50 sat ($0.05)")  # type: ignore[union-attr]
    bad = await session.call_tool("payments", {"limit": 500})
    seen.append(text_of(bad))
    assert text_of(bad).startswith("error: limit must be a whole number from 1 to 100")
    return seen


def check_ledger(account: Account, seen: list[str]) -> None:
    with SQLiteLedger(account.ledger_path) as led:
        [rec] = led.receipts()
        assert rec.status.value == "settled" and rec.offer_id == "offer_c668e0c0" and rec.preimage
        for text in seen:
            assert_no_secret(text, [account.bearer, account.wallet_key, rec.preimage])
    assert account.wallet.balance_msat() == 990_000


def test_stdio_server_pays_a_ticker_and_shows_it_in_the_ledger(account: Account, tmp_path: Path) -> None:
    params = StdioServerParameters(command=sys.executable, args=["-m", "httpay.apps.cli", "mcp"],
                                   env=server_env(account, tmp_path), cwd=str(ROOT))

    async def run() -> list[str]:
        with anyio.fail_after(60):
            async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
                return await story(session, account)

    check_ledger(account, anyio.run(run))


MCP_TOKEN = "test-mcp-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server(account: Account, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, **server_env(account, tmp_path), "HTTPAY_MCP_TOKEN": MCP_TOKEN}
    log = (tmp_path / "mcp-server.log").open("wb")  # a file, not a pipe: a full pipe would stall the server
    proc = subprocess.Popen([sys.executable, "-m", "httpay.apps.cli", "mcp", "--transport", "http", "--port", str(port)],
                            env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("the MCP server exited: " + (tmp_path / "mcp-server.log").read_text()[-2000:]) from None
                if time.monotonic() > deadline:
                    raise RuntimeError("the MCP server did not start listening within 30 s") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_streamable_http_server_pays_a_ticker(account: Account, http_server: str) -> None:
    async def run() -> list[str]:
        with anyio.fail_after(60):
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {MCP_TOKEN}"}) as http, \
                    streamable_http_client(http_server, http_client=http) as (read, write), \
                    ClientSession(read, write) as session:
                return await story(session, account)

    check_ledger(account, anyio.run(run))


@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", f"Basic {MCP_TOKEN}"])
def test_the_http_server_answers_only_the_holder_of_its_token(auth: str | None, account: Account,
                                                              http_server: str) -> None:
    """Any process on the machine reaches a loopback port: without the token no tool is listed or
    called, so nothing can be spent (it used to serve anyone who asked)."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               **({"Authorization": auth} if auth else {})}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "fetch", "arguments": {"url": f"{account.url}/ticker/MSFT"}}}
    r = httpx2.post(http_server, headers=headers, json=call, timeout=10)
    assert r.status_code == 401 and "Bearer" in r.headers.get("www-authenticate", "")
    assert account.wallet.balance_msat() == 1_000_000  # nothing paid


def test_the_http_server_refuses_to_listen_beyond_loopback(account: Account) -> None:
    box = Toolbox(wallet=account.wallet, ledger=":memory:")
    with pytest.raises(httpay.ConfigError, match="loopback only"):
        serve("http", host="0.0.0.0", toolbox=box)


def test_bad_headers_config_is_explained_without_echoing_the_secret() -> None:
    assert headers_from_env('{"Authorization": "Bearer abc"}') == {"Authorization": "Bearer abc"}
    assert headers_from_env(None) == {}
    for raw in ("Bearer topsecret-123", '{"Authorization": 5, "x": "topsecret-123"}', '["topsecret-123"]'):
        with pytest.raises(httpay.ConfigError) as err:
            headers_from_env(raw)
        assert "JSON object" in str(err.value) and "topsecret" not in str(err.value)


def test_a_server_without_a_wallet_says_which_variable_to_set(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT / "src"), "HTTPAY_LEDGER": str(tmp_path / "l.db")}
    proc = subprocess.run([sys.executable, "-m", "httpay.apps.cli", "mcp"], env=env, cwd=str(ROOT), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 1 and "no wallet configured: set HTTPAY_WALLET" in proc.stderr


def test_mcp_tools_carry_the_same_descriptions_as_the_sdk_schemas(account: Account) -> None:
    from httpay.apps.agent import anthropic_tools

    box = Toolbox(wallet=account.wallet, ledger=":memory:")
    server = build_server(box)

    async def listed() -> list[Any]:
        return await server.list_tools()

    tools = anyio.run(listed)
    for tool, ours in zip(tools, anthropic_tools(box), strict=True):
        assert tool.name == ours["name"] and tool.description == ours["description"]
        for name, prop in ours["input_schema"]["properties"].items():
            assert tool.input_schema["properties"][name]["description"] == prop["description"]
    box.close()


def test_httpay_mcp_ask_asks_the_person_through_the_host_over_stdio(account: Account, tmp_path: Path) -> None:
    """`httpay mcp --ask` as a real process: the host's elicitation answers yes, then no."""
    from mcp import types

    answers = [True, False]
    asked: list[str] = []

    async def elicit(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"pay": answers[len(asked) - 1]})

    params = StdioServerParameters(command=sys.executable, args=["-m", "httpay.apps.cli", "mcp", "--ask"],
                                   env=server_env(account, tmp_path), cwd=str(ROOT))

    async def run() -> list[Any]:
        with anyio.fail_after(60):
            async with stdio_client(params) as (read, write), \
                    ClientSession(read, write, elicitation_callback=elicit) as session:  # type: ignore[arg-type]
                await session.initialize()
                tools = await session.list_tools()
                assert "a person approves each payment" in (tools.tools[0].description or "")
                return [await session.call_tool("fetch", {"url": "/ticker/AAPL"}),  # the free credit: nothing asked
                        await session.call_tool("fetch", {"url": "/ticker/MSFT"}),
                        await session.call_tool("fetch", {"url": "/ticker/GOOGL"})]

    free, yes, no = anyio.run(run)
    assert not free.is_error and not yes.is_error and no.is_error
    assert text_of(yes).startswith("HTTP 200 OK\npaid 10 sat ($0.01)")
    assert text_of(no).startswith("refused by the approver: pay offer_c668e0c0") and "Nothing was paid." in text_of(no)
    assert len(asked) == 2 and asked[0].startswith("Pay 10 sat ($0.01) + up to 10 sat ($0.01) in fees for offer_c668e0c0 '1 Credit Package' by "
                                                   f"lightning at {account.url}/ticker/MSFT?")
    with SQLiteLedger(account.ledger_path) as led:
        assert [r.status.value for r in led.receipts()] == ["settled"]
    assert account.wallet.balance_msat() == 990_000


@pytest.mark.parametrize("weak", ["1", "short-token", "has spaces in it but long"])
def test_a_guessable_mcp_token_is_refused(weak: str, account: Account, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPAY_MCP_TOKEN", weak)
    box = Toolbox(wallet=account.wallet, ledger=":memory:")
    with pytest.raises(httpay.ConfigError, match="at least 16 printable characters"):
        serve("http", port=free_port(), toolbox=box)



def test_an_mcp_tool_call_cancelled_while_its_approval_waits_pays_nothing(account: Account) -> None:
    """The host cancels a `fetch` whose payment waits for a person (the approval queue): the
    approval is closed as denied at once, so a person approving it later pays nothing for a call
    nobody awaits, and the wallet is never called."""
    import threading
    import time

    import anyio

    from httpay.apps.agent.mcp_server import _described
    from httpay.apps.agent.schemas import tool_specs
    from httpay.apps.approvals import ApprovalQueue
    from httpay.errors import ApprovalExpired

    ledger = str(account.ledger_path)
    queue = ApprovalQueue(ledger, timeout_s=60, poll_s=0.02)
    box = Toolbox(wallet=account.wallet, ledger=ledger, base_url=account.url,
                  headers={"Authorization": f"Bearer {account.bearer}"},
                  policy=httpay.Policy(budget_usd=0.05, approve=queue))
    fetch = _described(next(s for s in tool_specs(box) if s.name == "fetch"), box)
    seen: list[int] = []

    async def cancel_once_asked() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: fetch(ctx=None, url="/l402/ticker/MSFT"))  # a 402 each time
            for _ in range(500):
                if (waiting := queue.pending()):
                    seen.append(waiting[0].id)
                    break
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    anyio.run(cancel_once_asked)
    assert seen, "the call never asked for approval"
    deadline = time.monotonic() + 10
    while queue.get(seen[0]).status == "waiting" and time.monotonic() < deadline:
        time.sleep(0.02)
    closed = queue.get(seen[0])
    assert (closed.status, closed.decided_by) == ("denied", "abandoned"), closed
    with pytest.raises(ApprovalExpired, match="nothing will be paid"):
        queue.decide(seen[0], True, "alice")
    time.sleep(0.2)
    assert box.client.ledger.receipts() == [] and not [t for t in threading.enumerate() if "fetch" in t.name]
    queue.close()
    box.close()


def test_an_mcp_tool_call_cancelled_before_its_own_approver_says_yes_pays_nothing(account: Account) -> None:
    """The policy's approver is a plain function (no queue, no elicitation) that says yes a moment
    after the host cancelled the call: that yes pays nothing, and the wallet is never called."""
    import time

    import anyio

    from httpay.apps.agent.mcp_server import _described
    from httpay.apps.agent.schemas import tool_specs

    asked: list[float] = []

    def slow_yes(quote: object) -> bool:
        asked.append(time.monotonic())
        time.sleep(0.5)
        return True

    box = Toolbox(wallet=account.wallet, ledger=str(account.ledger_path), base_url=account.url,
                  policy=httpay.Policy(budget_usd=0.05, approve=slow_yes))
    fetch = _described(next(s for s in tool_specs(box) if s.name == "fetch"), box)
    before = account.wallet.balance_msat()

    async def cancel_once_asked() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: fetch(ctx=None, url="/l402/ticker/MSFT"))
            while not asked:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    anyio.run(cancel_once_asked)
    time.sleep(1.0)  # the abandoned thread's approver has answered yes by now
    assert box.client.ledger.receipts() == [] and account.wallet.balance_msat() == before
    refusals = box.client.ledger.refusals()
    assert refusals and "cancelled while it waited for approval" in refusals[0].reason
    box.close()
