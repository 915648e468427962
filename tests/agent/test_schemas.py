"""The tool schemas as each SDK types them, and the dispatcher a model's calls go through."""

from __future__ import annotations

import json
from typing import Literal

import anthropic
import httpx
import httpx2
import jsonschema
import openai
import pytest
from fastcore.funccall import get_schema
from pydantic import TypeAdapter

import httpay
from httpay.apps.agent import TOOL_NAMES, Toolbox, anthropic_tools, dispatch, json_schema, openai_tools, tool_spec
from httpay.ledger import SQLiteLedger
from tests.helpers import FakeService, FakeWallet


@pytest.fixture
def box(ledger: SQLiteLedger) -> Toolbox:
    svc = FakeService()
    client = httpay.Client(wallet=FakeWallet(svc), policy=httpay.Policy(usd_per_btc=100_000, budget_usd=1),
                           ledger=ledger, transport=httpx.MockTransport(svc))
    return Toolbox(client, headers={"Authorization": "Bearer sekrit-bearer-123"}, base_url="http://stock.test")


def test_anthropic_tools_are_valid_anthropic_tool_params(box: Toolbox) -> None:
    tools = anthropic_tools(box)
    assert [t["name"] for t in tools] == list(TOOL_NAMES)
    adapter = TypeAdapter(anthropic.types.ToolParam)
    for t in tools:
        adapter.validate_python(t, strict=True)
        jsonschema.Draft202012Validator.check_schema(t["input_schema"])
    fetch = tools[0]["input_schema"]
    assert fetch["required"] == ["url"]
    assert fetch["properties"]["headers"] == {
        "type": "object", "additionalProperties": {"type": "string"},
        "description": "Extra request headers (the service's credentials are added already)"}
    assert fetch["properties"]["max_price_usd"]["type"] == "number"
    assert tools[2]["input_schema"]["properties"]["payment_method"]["default"] == "lightning"


def test_openai_tools_are_valid_chat_completion_tool_params(box: Toolbox) -> None:
    tools = openai_tools(box)
    adapter = TypeAdapter(openai.types.chat.ChatCompletionToolParam)
    for t in tools:
        adapter.validate_python(t, strict=True)
        assert t["type"] == "function"
    assert [t["function"]["parameters"] for t in tools] == [t["input_schema"] for t in anthropic_tools(box)]


def test_descriptions_come_from_the_signature_comments_as_claudette_reads_them(box: Toolbox) -> None:
    for ours, fn in zip(anthropic_tools(box), box.tools(), strict=True):
        theirs = get_schema(fn)
        assert ours["name"] == theirs["name"]
        assert ours["description"].split("\n\nReturns:")[0] == theirs["description"].split("\n\nReturns:")[0]
        for name, prop in theirs["input_schema"]["properties"].items():
            assert ours["input_schema"]["properties"][name]["description"] == prop["description"]
    assert "Returns: The HTTP status, the body, and what was paid" in anthropic_tools(box)[0]["description"]


def test_an_openai_round_trip_runs_the_tool_the_model_picked(box: Toolbox) -> None:
    """The OpenAI SDK accepts the tools, and its JSON-string arguments go through dispatch."""
    sent: list[dict[str, object]] = []

    def fake_openai(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        return httpx2.Response(200, json={
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "gpt-test",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None,
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "fetch", "arguments": '{"url": "/ticker/MSFT"}'}}]}}],
        })

    client = openai.OpenAI(api_key="sk-test", base_url="http://openai.test/v1", max_retries=0,
                           http_client=httpx2.Client(transport=httpx2.MockTransport(fake_openai)))
    reply = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "MSFT?"}],
                                           tools=openai_tools(box))  # type: ignore[arg-type]
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    out = dispatch(box, call.function.name, call.function.arguments)  # type: ignore[union-attr]
    assert out.startswith("HTTP 200 OK\npaid 10 sat ($0.01)") and "sekrit" not in out
    assert [t["function"]["name"] for t in sent[0]["tools"]] == list(TOOL_NAMES)  # type: ignore[index]


@pytest.mark.parametrize(("name", "args", "expected"), [
    ("nope", {}, "error: there is no tool named 'nope'; the tools are: fetch, offers, pay, budget, payments"),
    ("fetch", {}, "error: fetch needs the argument(s) url"),
    ("fetch", {"url": "/x", "token": "t"}, "error: fetch has no argument(s) token; it takes: url, method, headers, body, max_price_usd, content_type, max_chars, offset"),
    ("fetch", {"url": 5}, 'error: argument \'url\' of fetch must match {"type": "string"}, got 5'),
    ("fetch", {"url": "/x", "headers": {"a": 1}}, "error: argument 'headers' of fetch must match"),
    ("payments", {"limit": "3"}, "error: argument 'limit' of payments must match {\"type\": \"integer\"}, got \"3\""),
    ("payments", {"limit": True}, "error: argument 'limit' of payments must match"),
    ("payments", "{not json", "error: the arguments for payments are not valid JSON"),
    ("payments", [1], "error: the arguments for payments must be a JSON object, got list"),
])
def test_bad_calls_get_a_clear_error_text(box: Toolbox, name: str, args: object, expected: str) -> None:
    out = dispatch(box, name, args)  # type: ignore[arg-type]
    assert out.startswith(expected) and out.is_error  # type: ignore[attr-defined]


def test_good_calls_are_coerced_only_where_json_is_loose(box: Toolbox) -> None:
    assert dispatch(box, "payments", None) == "no payments recorded yet."
    assert dispatch(box, "payments", '{"limit": 2}') == "no payments recorded yet."
    out = dispatch(box, "fetch", {"url": "/ticker/MSFT", "max_price_usd": 1, "headers": None, "body": None})
    assert out.startswith("HTTP 200 OK\npaid 10 sat"), "an integer price is a number; null means the default"


def test_a_tool_that_raises_becomes_text_without_its_secret(box: Toolbox) -> None:
    def boom(url: str) -> str:
        """Fail loudly."""
        raise RuntimeError("leaked Bearer sekrit-bearer-123")

    box.tools = lambda: [boom]  # type: ignore[method-assign]
    assert dispatch(box, "boom", {"url": "/x"}) == "error: boom failed: RuntimeError: leaked [redacted]"


def test_any_documented_function_gets_a_schema() -> None:
    def quote(
        symbol: str,  # Ticker symbol
        venue: Literal["nasdaq", "nyse"] = "nasdaq",
        fields: list[str] | None = None,
    ) -> str:
        """Quote a stock.

        Args:
            venue: Where it trades
                   (the listing exchange)
            fields: Which fields to return
        """
        return symbol

    spec = tool_spec(quote)
    assert spec.description == "Quote a stock."
    assert spec.parameters == {"type": "object", "required": ["symbol"], "properties": {
        "symbol": {"type": "string", "description": "Ticker symbol"},
        "venue": {"enum": ["nasdaq", "nyse"], "type": "string", "description": "Where it trades (the listing exchange)",
                  "default": "nasdaq"},
        "fields": {"type": "array", "items": {"type": "string"}, "description": "Which fields to return"},
    }}
    assert dispatch([quote], "quote", {"symbol": "AAPL", "venue": "lse"}).startswith("error: argument 'venue'")
    assert dispatch([quote], "quote", {"symbol": "AAPL", "venue": "nyse"}) == "AAPL"


def test_types_a_model_cannot_send_are_refused_at_schema_time() -> None:
    with pytest.raises(TypeError, match="no JSON Schema for type"):
        json_schema(bytes)

    def untyped(x) -> str:  # type: ignore[no-untyped-def]
        """No hint."""
        return ""

    with pytest.raises(TypeError, match="has no type hint"):
        tool_spec(untyped)
