"""The notebook's Claudette session, end to end and offline: the example's own Chat, Claudette's own
tool loop and tool calls, the Anthropic SDK's own client, and the real demo service. Only Claude is
scripted: a fake Messages API (an httpx2 mock transport under `anthropic.Anthropic`) that picks its
tool calls from the tool schemas it was sent and reads the tool results it gets back."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import jsonschema
import pytest

from httpay.ledger import Status
from tests.agent.conftest import assert_no_secret

ROOT = Path(__file__).resolve().parents[2]


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("claudette_stock", ROOT / "examples" / "claudette_stock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["claudette_stock"] = module
    spec.loader.exec_module(module)
    return module


example = load_example()

Step = Callable[[list[str]], "dict[str, Any] | str"]  # tool results so far -> a tool call or the final text


class ScriptedClaude:
    """A Messages API that follows a script. Each turn it checks its tool call against the schemas it was sent."""

    def __init__(self, script: list[Step]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.raw: list[str] = []

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/messages"
        self.raw.append(request.content.decode())
        body = json.loads(request.content)
        self.requests.append(body)
        results = [_text(block["content"]) for m in body["messages"] if m["role"] == "user" and isinstance(m["content"], list)
                   for block in m["content"] if isinstance(block, dict) and block.get("type") == "tool_result"]
        step = self.script[len(self.requests) - 1](results)
        n = len(self.requests)
        if isinstance(step, str):
            return _message(n, [{"type": "text", "text": step}], "end_turn")
        schemas = {t["name"]: t["input_schema"] for t in body["tools"]}
        jsonschema.validate(step["input"], schemas[step["name"]])  # the call fits the real schema
        content = [{"type": "text", "text": f"Let me use {step['name']}."},
                   {"type": "tool_use", "id": f"toolu_{n:02d}", "name": step["name"], "input": step["input"]}]
        return _message(n, content, "tool_use")

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key="sk-ant-test", max_retries=0, base_url="http://anthropic.test",
                                   http_client=httpx2.Client(transport=httpx2.MockTransport(self.handler)))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict))


def _message(n: int, content: list[dict[str, Any]], stop: str) -> httpx2.Response:
    return httpx2.Response(200, json={
        "id": f"msg_{n:02d}", "type": "message", "role": "assistant", "model": example.MODEL, "content": content,
        "stop_reason": stop, "stop_sequence": None, "usage": {"input_tokens": 100, "output_tokens": 20},
    })


def price(result: str) -> float:
    m = re.search(r'"current_price":([0-9.]+)', result)
    assert m, f"no price in the tool result: {result[:200]}"
    return float(m.group(1))


def call(name: str, **args: Any) -> Step:
    return lambda results: {"name": name, "input": args}


def answer(results: list[str]) -> str:
    aapl, msft = results[0], results[1]
    paid = re.search(r"paid ([0-9,.]+ sat \(\$[0-9.]+\))", msft)
    return (f"AAPL trades at ${price(aapl)} and MSFT at ${price(msft)}. AAPL used the free credit; for MSFT I bought "
            f"one credit for {paid.group(1) if paid else 'nothing'}.")


@pytest.fixture
def session() -> Iterator[Any]:
    with example.demo_session() as s:
        yield s


def test_claude_gets_aapl_free_and_msft_paid_within_budget(session: Any) -> None:
    claude = ScriptedClaude([call("fetch", url="/ticker/AAPL"), call("fetch", url="/ticker/MSFT"), answer])
    chat = example.make_chat(session, anthropic_client=claude.client())
    trace: list[Any] = []
    final = example.ask(chat, trace=trace.append)

    assert final == ("AAPL trades at $248.05 and MSFT at $436.6. AAPL used the free credit; for MSFT I bought one credit "
                     "for 10 sat ($0.01).")
    [receipt] = session.toolbox.client.ledger.receipts()
    assert receipt.status is Status.SETTLED and receipt.url.endswith("/ticker/MSFT") and receipt.amount_msat == 10_000
    assert session.wallet.balance_msat() == 990_000
    assert len(claude.requests) == 3 and [m["role"] for m in chat.h] == ["user", "assistant", "user", "assistant",
                                                                         "user", "assistant"]
    first = claude.requests[0]
    assert [t["name"] for t in first["tools"]] == ["fetch", "offers", "pay", "budget", "payments"]
    assert _text(first["messages"][0]["content"]) == example.PROMPT and session.url in first["system"]
    tool_results = [b for m in chat.h if m["role"] == "user" and isinstance(m["content"], list) for b in m["content"]]
    assert tool_results[1]["content"].startswith("HTTP 200 OK\npaid 10 sat ($0.01) + fee 0 sat for offer_c668e0c0")
    assert "budget left 40 sat ($0.04) of 50 sat ($0.05)" in tool_results[1]["content"]
    secrets = _secrets(session)
    for raw in claude.raw:  # everything the model was ever sent
        assert_no_secret(raw, secrets)


def test_claude_prices_msft_then_buys_the_cheapest_offer_by_lightning(session: Any) -> None:
    """The notebook's second half: 'Yes I would like to purchase 1 credit using the lightning network.'"""

    def buy_cheapest(results: list[str]) -> dict[str, Any]:
        offer = re.search(r"cheapest offer: (offer_\w+)", results[-1])
        assert offer, results[-1]
        return {"name": "pay", "input": {"url": "/ticker/MSFT", "offer_id": offer.group(1), "payment_method": "lightning"}}

    def report(results: list[str]) -> str:
        paid = re.search(r"paid (.+?), payment hash (\w+)", results[-2])
        assert paid
        return f"Bought 1 credit for {paid.group(1).split(' + ')[0]} (hash {paid.group(2)[:8]}); MSFT is at ${price(results[-2])}. {results[-1]}"

    claude = ScriptedClaude([call("fetch", url="/ticker/AAPL"), call("offers", url="/ticker/MSFT"), buy_cheapest,
                             call("budget"), report])
    final = example.ask(example.make_chat(session, anthropic_client=claude.client()))
    [receipt] = session.toolbox.client.ledger.receipts()
    assert receipt.offer_id == "offer_c668e0c0" and receipt.status is Status.SETTLED
    assert final.startswith(f"Bought 1 credit for 10 sat ($0.01) (hash {receipt.payment_hash[:8]}); MSFT is at $436.6. "
                            "budget left 40 sat ($0.04) of 50 sat ($0.05)")
    for raw in claude.raw:
        assert_no_secret(raw, _secrets(session))


def test_a_refused_payment_reaches_claude_as_text_with_the_offers() -> None:
    with example.demo_session(budget_usd=0.005) as session:
        claude = ScriptedClaude([call("fetch", url="/ticker/AAPL"), call("fetch", url="/ticker/MSFT"),
                                 lambda results: "I could not buy MSFT: " + results[-1].splitlines()[0]])
        final = example.ask(example.make_chat(session, anthropic_client=claude.client()))
        assert final.startswith("I could not buy MSFT: refused: the cheapest offer costs 10 sat ($0.01) + up to 10 sat ($0.01) in fees but only 5 sat")
        assert session.toolbox.client.ledger.receipts() == []


def test_the_example_without_a_key_explains_how_to_run_it(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert example.main() == 0
    assert "Set ANTHROPIC_API_KEY" in capsys.readouterr().out


def _secrets(session: Any) -> list[str]:
    key = session.wallet._DemoWallet__key
    preimages = [r.preimage for r in session.toolbox.client.ledger.receipts() if r.preimage]
    return [session.bearer, key, *preimages]
