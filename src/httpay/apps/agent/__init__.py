"""httpay for LLM agents: tools bound to one paying client (`Toolbox`, and `AsyncToolbox` over
`httpay.AsyncClient`), their schemas for the Anthropic and OpenAI APIs, a dispatcher, and an MCP
server (`httpay mcp`).

    tb = httpay.apps.agent.Toolbox(wallet=wallet, policy=policy, headers={"Authorization": "Bearer ..."},
                                   base_url="https://stock.example")
    chat = claudette.Chat(model, tools=tb.tools())                  # Claudette
    client.messages.create(..., tools=httpay.apps.agent.anthropic_tools(tb))
    httpay.apps.agent.dispatch(tb, block.name, block.input)         # run a model's tool call

    async with httpay.apps.agent.AsyncToolbox(wallet=wallet, policy=policy) as atb:
        text = await httpay.apps.agent.adispatch(atb, "fetch", {"url": "https://stock.example/ticker/MSFT"})
"""

from __future__ import annotations

from httpay.apps.agent.schemas import (
    ToolSpec,
    adispatch,
    anthropic_tools,
    dispatch,
    json_schema,
    openai_tools,
    tool_spec,
    tool_specs,
)
from httpay.apps.agent.tools import (
    MAX_BODY_CHARS,
    MAX_BODY_LIMIT,
    TOOL_HINTS,
    TOOL_NAMES,
    AsyncToolbox,
    Toolbox,
    ToolHints,
    ToolText,
)

__all__ = [
    "MAX_BODY_CHARS", "MAX_BODY_LIMIT", "TOOL_HINTS", "TOOL_NAMES", "AsyncToolbox", "ToolHints", "ToolSpec", "ToolText",
    "Toolbox", "adispatch", "anthropic_tools", "dispatch", "json_schema", "openai_tools", "tool_spec", "tool_specs",
]
