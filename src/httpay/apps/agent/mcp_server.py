"""The httpay tools as an MCP server (`httpay mcp`): stdio for a local agent, streamable HTTP on loopback.

The wallet, policy, ledger and the service's credentials come from the environment, never from a
tool call: HTTPAY_WALLET (+ that wallet's variables), HTTPAY_POLICY (a TOML file), HTTPAY_LEDGER,
HTTPAY_HEADERS (a JSON object of default headers, e.g. the service's bearer) and HTTPAY_BASE_URL
(the service the headers belong to, required with HTTPAY_HEADERS: the headers go to that origin only;
relative URLs are joined to it). With no HTTPAY_POLICY, httpay's
default limits apply (1,000 sat per payment, 10,000 sat per hour, 50,000 sat per day); a refusal names
the policy file's key the person would change, and the `budget` tool shows the limits in force. The
payment deadline (seconds from a service's 402 to paying it, default 60) is `httpay mcp
--payment-deadline SECONDS`, else `[client] payment_deadline` in the policy file.

Each tool carries MCP's annotations (`TOOL_HINTS`: the read-only tools, and the spending ones as
destructive and not idempotent), a failure comes back as a result with isError set, and the
descriptions of fetch and pay state what they may spend. A payment that needs a person's approval
(`httpay mcp --ask`, or a Toolbox whose policy has an approver) is asked of the person through the
host's elicitation where the host supports it; a host without it keeps the policy's own approver
(`--ask`: the approval queue of `httpay approvals` and the dashboard).

Over HTTP every request must carry `Authorization: Bearer <token>`: HTTPAY_MCP_TOKEN when set (for a
host's configuration), else a random token printed at start. Any process on the machine can reach a
loopback port; only one holding the token can make the tools spend.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import typing
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated, Any, Literal

from httpay.amounts import fee_cap_text, fmt_msat
from httpay.apps.agent.schemas import ToolSpec, tool_specs
from httpay.apps.agent.tools import TOOL_HINTS, Toolbox
from httpay.core.model import Quote
from httpay.core.payer import tags_from_text
from httpay.errors import ConfigError
from httpay.loopback import require_loopback
from httpay.policy import CANCELLED, Approver
from httpay.safe import MAX_TEXT, clean, get_logger, header_problem

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context, MCPServer

log = get_logger("httpay.apps.agent.mcp")

DEFAULT_PORT = 8403
INSTRUCTIONS = (
    "httpay pays for HTTP APIs that answer 402 Payment Required, within a budget a person set. "
    "Use `offers` to see what a URL costs, `fetch` to get it (paying within the policy; it can POST a body, "
    "and a cut body is read on with its `offset`, without paying again), `pay` to buy a specific offer, and "
    "`budget` / `payments` to see what was spent. Credentials are already bound: never ask for or send keys "
    "or tokens."
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
    for name, value in data.items():  # said in the words of the variable the person set, not of Toolbox(...)
        if (problem := header_problem(name, value)) is not None:
            raise ConfigError(f"HTTPAY_HEADERS: {problem}; fix it in the environment of `httpay mcp` "
                              "(the MCP host's configuration)")
    return data


def toolbox_from_env(env: Mapping[str, str] | None = None, *, payment_deadline: float | None = None,
                     ask: bool = False, approval_timeout: float = 300.0) -> Toolbox:
    """A Toolbox configured the way the `httpay` command is: wallet, policy and ledger from the environment;
    the payment deadline from `payment_deadline` (the --payment-deadline flag), else the policy file's
    `[client] payment_deadline`, else httpay's default. `ask` (--ask): every payment waits for a person,
    in the approval queue (HTTPAY_APPROVALS, else the ledger's file; `httpay approvals`, the dashboard) unless the MCP host
    asks them itself (elicitation)."""
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
    headers = headers_from_env(env.get("HTTPAY_HEADERS"))
    base_url = env.get("HTTPAY_BASE_URL", "").strip() or None
    if headers and not base_url:
        raise ConfigError("HTTPAY_HEADERS needs HTTPAY_BASE_URL, the service those headers belong to (e.g. "
                          "https://api.example.com): they are sent to that origin only, never to another host")
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
    ledger = env.get("HTTPAY_LEDGER") or None
    if ask:
        from httpay.apps.approvals import ApprovalQueue, named_queue

        # HTTPAY_APPROVALS, as `httpay approvals` and the dashboard read it; none named: the ledger's
        # file (its default one made as the ledger's is)
        named = named_queue(env=env)
        policy.approve = ApprovalQueue(named[0] if named else ledger, timeout_s=approval_timeout)
    return Toolbox(wallet=wallet, policy=policy, ledger=ledger, headers=headers, base_url=base_url,
                   knobs=knobs, payment_deadline=deadline, tags=tags_from_text(env.get("HTTPAY_TAGS", ""), "HTTPAY_TAGS"))



_CONTEXT: ContextVar[Any] = ContextVar("httpay_mcp_context", default=None)  # the MCP call being run
ELICIT_TEXT = 300  # characters of the offer's title and the URL in the question a person is asked


def _described(spec: ToolSpec, toolbox: Toolbox) -> Callable[..., Any]:
    """The tool with each parameter's description attached (as pydantic Field metadata), so MCP clients
    see them; its result a CallToolResult whose isError says whether it reports a failure; the call's
    MCP context kept for the approver (which runs in this call's thread)."""
    import inspect

    from mcp.server.mcpserver import Context
    from mcp.types import CallToolResult, TextContent
    from pydantic import Field, WrapValidator

    fn = spec.function
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(inspect.unwrap(fn))
    params = []
    for p in sig.parameters.values():
        note = spec.parameters["properties"].get(p.name, {}).get("description")
        ann = hints[p.name]
        if ann == (str | None):
            # Typed as str, so the SDK passes a JSON body through as the text it is (it parses a JSON string
            # given for any other type, and '{"a": 1}' would then be refused as not a string); null still means none.
            ann = Annotated[str, WrapValidator(_none_or_text)]
        params.append(p.replace(annotation=Annotated[ann, Field(description=note)] if note else ann))
    params.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context))

    def call(ctx: Any, cancelled: threading.Event, kwargs: dict[str, Any]) -> CallToolResult:
        token, stop = _CONTEXT.set(ctx), CANCELLED.set(cancelled.is_set)
        try:
            out = fn(**kwargs)
            text, failed = str(out), bool(getattr(out, "is_error", False))
        except Exception as exc:  # noqa: BLE001 - the model gets text (cleaned, bounded), not the error's raw text
            text, failed = toolbox.for_model(f"error: {spec.name} failed: {type(exc).__name__}: {exc}"), True
        finally:
            CANCELLED.reset(stop)
            _CONTEXT.reset(token)
        return CallToolResult(content=[TextContent(type="text", text=text)], is_error=failed)

    async def tool(ctx: Any = None, **kwargs: Any) -> CallToolResult:
        """The tool in a worker thread; cancelled by the host (the person gave up on it), its wait
        for an approval ends as a denial there and nothing is paid for a call nobody awaits."""
        import anyio

        cancelled = threading.Event()
        try:
            result: CallToolResult = await anyio.to_thread.run_sync(call, ctx, cancelled, kwargs,
                                                                    abandon_on_cancel=True)
            return result
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    tool.__name__ = spec.name
    tool.__doc__ = spec.description
    tool.__annotations__ = {"ctx": Context, "return": CallToolResult}
    tool.__signature__ = sig.replace(parameters=params, return_annotation=CallToolResult)  # type: ignore[attr-defined]
    return tool


def _none_or_text(value: Any, handler: Callable[[Any], Any]) -> Any:
    return None if value is None else handler(value)


class ElicitingApprover:
    """The approver of an MCP server's policy: it asks the person through the MCP host ("pay X for Y?
    yes/no", elicitation) when the host supports it; with a host that does not, the policy's own
    approver decides as before. A person who says no, declines, cancels, cannot be asked (an error
    once asked) or does not answer within `timeout_s` (the approval queue's, else 300 s) is a no:
    nothing is paid."""

    __name__ = "ask the person through the MCP host"

    def __init__(self, toolbox: Toolbox, fallback: Approver, *, timeout_s: float | None = None) -> None:
        self.toolbox = toolbox
        self.fallback = fallback
        self.timeout_s = timeout_s if timeout_s is not None else float(getattr(fallback, "timeout_s", 300.0))

    def __call__(self, quote: Quote) -> Any:
        ctx = _CONTEXT.get()
        if ctx is None or not _can_elicit(ctx):
            return self.fallback(quote)
        import anyio

        return anyio.from_thread.run(self.ask, ctx, quote)

    def question(self, quote: Quote) -> str:
        """What the person is asked: the price and the fees it may add, the offer, the URL, the budget
        left (server text cleaned)."""
        price = fmt_msat(quote.price_msat, quote.usd_per_btc) if quote.price_msat is not None else \
            clean(str(quote.offer.price), 60)
        price += fee_cap_text(quote.fee_cap_msat, quote.usd_per_btc)
        text = (f"Pay {price} for {clean(quote.offer.offer_id, 80)} '{clean(quote.offer.title, ELICIT_TEXT)}' "
                f"by {clean(quote.method, 40)} at {clean(quote.url, ELICIT_TEXT)}? "
                f"({clean(self.toolbox._budget_left(), MAX_TEXT)})")
        return self.toolbox.scrub(text)

    async def ask(self, ctx: Context[Any, Any], quote: Quote) -> bool:
        from mcp.shared.exceptions import NoBackChannelError
        from pydantic import BaseModel, Field

        class PaymentApproval(BaseModel):
            pay: bool = Field(description="Yes: pay it. No: nothing is paid.")

        import anyio

        try:
            with anyio.fail_after(self.timeout_s):
                answer = await ctx.elicit(self.question(quote), PaymentApproval)
        except TimeoutError:
            log.warning("no answer to the approval question within %g s: not paid", self.timeout_s)
            return False
        except NoBackChannelError:  # the host said it elicits, but this connection cannot ask
            return bool(await anyio.to_thread.run_sync(_call, self.fallback, quote))
        except Exception as exc:  # noqa: BLE001 - a question that failed is not a yes
            log.warning("the approval question failed (%s: %s): not paid", type(exc).__name__, clean(exc, MAX_TEXT))
            return False
        return answer.action == "accept" and bool(answer.data.pay)


def _call(approver: Approver, quote: Quote) -> Any:
    return approver(quote)


def _can_elicit(ctx: Any) -> bool:
    try:
        caps = ctx.client_capabilities
    except Exception:  # noqa: BLE001 - no request context: no host to ask
        return False
    return caps is not None and getattr(caps, "elicitation", None) is not None


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


def build_server(toolbox: Toolbox, *, name: str = "httpay", elicit: bool = True) -> MCPServer:
    """An MCP server exposing the Toolbox's tools (with their annotations) plus the ledger and budget
    as resources. With `elicit` (default) and a policy that has an approver, the policy's approver
    becomes an `ElicitingApprover` over it: the person is asked through the host where it can."""
    from httpay.extras import require

    require("mcp")
    from mcp.server.mcpserver import MCPServer
    from mcp.types import ToolAnnotations

    policy = toolbox.client.policy
    if elicit and policy.approve is not None and not isinstance(policy.approve, ElicitingApprover):
        policy.approve = ElicitingApprover(toolbox, policy.approve)
    server: MCPServer = MCPServer(name=name, instructions=INSTRUCTIONS)
    for spec in tool_specs(toolbox):
        hint = TOOL_HINTS[spec.name]
        annotations = ToolAnnotations(title=hint.title, read_only_hint=hint.read_only, destructive_hint=hint.destructive,
                                      idempotent_hint=hint.idempotent, open_world_hint=hint.open_world)
        server.add_tool(_described(spec, toolbox), name=spec.name, title=hint.title, description=spec.description,
                        annotations=annotations, structured_output=False)

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


class _BearerOnly:
    """ASGI: every HTTP request carries `Authorization: Bearer <token>` (compared in constant time),
    else 401; lifespan and the rest pass through."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self._token = app, token.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            import hmac

            given = dict(scope.get("headers") or ()).get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + self._token):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b'Bearer realm="httpay"')]})
                await send({"type": "http.response.body", "body": b"httpay MCP: send Authorization: Bearer <token> "
                                                                  b"(printed at start, or HTTPAY_MCP_TOKEN)"})
                return
        await self.app(scope, receive, send)


def serve_http(server: Any, host: str, port: int, token: str | None = None) -> None:
    """Streamable HTTP on loopback behind a bearer token, until interrupted: the port is held before
    anything is printed (a taken port says so)."""
    import secrets

    import uvicorn

    from httpay.loopback import listen, url_of

    given = token or os.environ.get("HTTPAY_MCP_TOKEN") or None
    if given is not None and (len(given) < 16 or not given.isascii() or not given.isprintable() or " " in given):
        raise ConfigError("HTTPAY_MCP_TOKEN must be at least 16 printable characters without spaces (any process "
                          "on the machine may guess a short one and spend): e.g. the output of "
                          "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`")
    secret = given or secrets.token_urlsafe(24)
    sock = listen(host, port, "the httpay MCP server (its tools spend money)")
    said = "the token in HTTPAY_MCP_TOKEN" if given else secret
    print(f"httpay MCP server on {url_of(sock, host)}/mcp (streamable HTTP, loopback only); every request sends "
          f"Authorization: Bearer {said}", file=sys.stderr)
    app = _BearerOnly(server.streamable_http_app(host=host), secret)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on")).run(sockets=[sock])
    finally:
        sock.close()


def serve(transport: Literal["stdio", "http"] = "stdio", *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          toolbox: Toolbox | None = None, payment_deadline: float | None = None, ask: bool = False,
          approval_timeout: float = 300.0) -> int:
    """Run the server until the client leaves (stdio) or it is interrupted (http). Returns an exit code.
    `payment_deadline` (seconds; the --payment-deadline flag) and `ask` (--ask, with --approval-timeout)
    apply to the Toolbox built from the environment."""
    if transport not in ("stdio", "http"):
        raise ConfigError(f"--transport must be stdio or http, not {transport!r}")
    if transport == "http":
        _require_loopback(host)
    if toolbox is not None and (payment_deadline is not None or ask):
        raise ConfigError("give serve() either toolbox= or payment_deadline=/ask=, not both: the toolbox has its own")
    box = toolbox or toolbox_from_env(payment_deadline=payment_deadline, ask=ask, approval_timeout=approval_timeout)
    try:
        server = build_server(box)
        if transport == "stdio":
            server.run("stdio")
        else:
            serve_http(server, host, port)
    finally:
        box.close()
    return 0
