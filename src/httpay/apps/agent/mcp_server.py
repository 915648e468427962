"""The httpay tools as an MCP server (`httpay mcp`): stdio for a local agent, streamable HTTP on loopback.

The wallet, policy, ledger and the service's credentials come from the environment, never from a
tool call: HTTPAY_WALLET (+ that wallet's variables), HTTPAY_POLICY (a TOML file), HTTPAY_LEDGER,
HTTPAY_HEADERS (a JSON object of default headers, e.g. the service's bearer) and HTTPAY_BASE_URL
(the service the headers belong to; relative URLs are joined to it). With no HTTPAY_POLICY, httpay's
default limits apply (1,000 sat per payment, 10,000 sat per hour, 50,000 sat per day); a refusal names
the policy file's key the person would change, and the `budget` tool shows the limits in force. The
payment deadline (seconds from a service's 402 to paying it, default 60) is `httpay mcp
--payment-deadline SECONDS`, else `[client] payment_deadline` in the policy file.
"""

from __future__ import annotations

import json
import os
import sys
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from httpay.apps.agent.schemas import ToolSpec, tool_specs
from httpay.apps.agent.tools import Toolbox
from httpay.client import tags_from_text
from httpay.errors import ConfigError
from httpay.loopback import require_loopback

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

DEFAULT_PORT = 8403
INSTRUCTIONS = (
    "httpay pays for HTTP APIs that answer 402 Payment Required, within a budget a person set. "
    "Use `offers` to see what a URL costs, `fetch` to get it (paying within the policy), `pay` to buy a "
    "specific offer, and `budget` / `payments` to see what was spent. Credentials are already bound: "
    "never ask for or send keys or tokens."
)
_HEADERS_HELP = 'HTTPAY_HEADERS must be a JSON object of header names to string values, e.g. {"Authorization": "Bearer <token>"}'


def headers_from_env(raw: str | None) -> dict[str, str]:
    """Parse HTTPAY_HEADERS without ever echoing its (secret) values in an error."""
    if not raw or not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigError(_HEADERS_HELP) from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ConfigError(_HEADERS_HELP)
    return data


def toolbox_from_env(env: Mapping[str, str] | None = None, *, payment_deadline: float | None = None) -> Toolbox:
    """A Toolbox configured the way the `httpay` command is: wallet, policy and ledger from the environment;
    the payment deadline from `payment_deadline` (the --payment-deadline flag), else the policy file's
    `[client] payment_deadline`, else httpay's default."""
    from httpay.config import (
        POLICY_FIELDS,
        client_settings_from_toml,
        payment_deadline_ok,
        policy_from_toml,
        wallet_from_env,
    )
    from httpay.core.deadline import DEFAULT_PAYMENT_DEADLINE_S
    from httpay.policy import Policy

    if payment_deadline is not None and not payment_deadline_ok(payment_deadline):
        raise ConfigError(f"--payment-deadline must be a positive number of seconds, got {payment_deadline!r:.60}")
    env = os.environ if env is None else env
    policy_file = env.get("HTTPAY_POLICY", "").strip()
    policy = policy_from_toml(policy_file) if policy_file else Policy()  # no file: httpay's default limits
    settings = client_settings_from_toml(policy_file) if policy_file else {}
    wallet = wallet_from_env(env)
    # The person set these limits in a TOML file, so a refusal names the file's key, not Policy(...).
    where = f"in the policy file {policy_file} (HTTPAY_POLICY)" if policy_file else \
        "in a policy file named by HTTPAY_POLICY (the person running the MCP server sets it)"
    knobs = {name: f"{name} {where}" for name in POLICY_FIELDS}
    knobs["payment_deadline"] = ("the --payment-deadline of `httpay mcp`" if payment_deadline is not None else
                                 f"[client] payment_deadline {where} (or `httpay mcp --payment-deadline SECONDS`)")
    deadline = payment_deadline if payment_deadline is not None else settings.get("payment_deadline",
                                                                                   DEFAULT_PAYMENT_DEADLINE_S)
    return Toolbox(wallet=wallet, policy=policy, ledger=env.get("HTTPAY_LEDGER") or None,
                   headers=headers_from_env(env.get("HTTPAY_HEADERS")), base_url=env.get("HTTPAY_BASE_URL") or None,
                   knobs=knobs, payment_deadline=deadline, tags=tags_from_text(env.get("HTTPAY_TAGS", ""), "HTTPAY_TAGS"))



def _described(spec: ToolSpec, toolbox: Toolbox) -> Callable[..., str]:
    """The tool with each parameter's description attached (as pydantic Field metadata), so MCP clients see them."""
    import inspect

    from pydantic import Field

    fn = spec.function
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(inspect.unwrap(fn))
    params = []
    for p in sig.parameters.values():
        note = spec.parameters["properties"].get(p.name, {}).get("description")
        ann = hints[p.name]
        params.append(p.replace(annotation=Annotated[ann, Field(description=note)] if note else ann))

    def tool(**kwargs: Any) -> str:
        try:
            return str(fn(**kwargs))
        except Exception as exc:  # noqa: BLE001 - the model gets text (cleaned, bounded), not the error's raw text
            return toolbox.for_model(f"error: {spec.name} failed: {type(exc).__name__}: {exc}")

    tool.__name__ = spec.name
    tool.__doc__ = spec.description
    tool.__signature__ = sig.replace(parameters=params, return_annotation=str)  # type: ignore[attr-defined]
    return tool


RESOURCE_TEXT = 500  # characters of one string (a title, a URL, a failure's reason) in a resource


def _bounded(toolbox: Toolbox, value: Any) -> Any:
    """Every string in `value` as a log line would hold it: scrubbed, cleaned of control characters, bounded."""
    if isinstance(value, str):
        return toolbox._text(value, RESOURCE_TEXT)
    if isinstance(value, dict):
        return {k: _bounded(toolbox, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_bounded(toolbox, v) for v in value]
    return value


def ledger_json(toolbox: Toolbox, limit: int = 50) -> str:
    """The ledger as JSON for the `httpay://ledger` resource (receipts never carry preimages; what a
    server wrote in them is cleaned and bounded as in every tool result)."""
    ledger = toolbox.client.ledger
    data = {"ledger": "httpay", "spent_msat": ledger.spent_msat(),
            "payments": [_bounded(toolbox, r.to_dict()) for r in ledger.receipts(limit=limit)]}
    return toolbox.scrub(json.dumps(data, indent=2))


def build_server(toolbox: Toolbox, *, name: str = "httpay") -> MCPServer:
    """An MCP server exposing the Toolbox's tools plus the ledger and budget as resources."""
    from httpay.extras import require

    require("mcp")
    from mcp.server.mcpserver import MCPServer

    server: MCPServer = MCPServer(name=name, instructions=INSTRUCTIONS)
    for spec in tool_specs(toolbox):
        server.add_tool(_described(spec, toolbox), name=spec.name, description=spec.description, structured_output=False)

    @server.resource("httpay://ledger", name="ledger", mime_type="application/json",
                     description="Recent payments (newest first) and the total committed, in msat.")
    def ledger() -> str:
        return ledger_json(toolbox)

    @server.resource("httpay://budget", name="budget", mime_type="text/plain",
                     description="The budget left, what was spent, the limits and the wallet balance.")
    def budget() -> str:
        return toolbox.budget()

    return server


def _require_loopback(host: str) -> None:
    require_loopback(host, "the httpay MCP server (its tools spend money)")


def serve(transport: Literal["stdio", "http"] = "stdio", *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          toolbox: Toolbox | None = None, payment_deadline: float | None = None) -> int:
    """Run the server until the client leaves (stdio) or it is interrupted (http). Returns an exit code.
    `payment_deadline` (seconds; the --payment-deadline flag) applies to the Toolbox built from the environment."""
    if transport not in ("stdio", "http"):
        raise ConfigError(f"--transport must be stdio or http, not {transport!r}")
    if transport == "http":
        _require_loopback(host)
    if toolbox is not None and payment_deadline is not None:
        raise ConfigError("give serve() either toolbox= or payment_deadline=, not both: the toolbox has its own")
    box = toolbox or toolbox_from_env(payment_deadline=payment_deadline)
    try:
        server = build_server(box)
        if transport == "stdio":
            server.run("stdio")
        else:
            print(f"httpay MCP server on http://{host}:{port}/mcp (streamable HTTP, loopback only)", file=sys.stderr)
            server.run("streamable-http", host=host, port=port)
    finally:
        box.close()
    return 0
