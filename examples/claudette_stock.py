"""The notebook's Claudette session, with httpay doing the paying.

The notebook gave Claude four hand-written tools (signup, get_info, query, pay) and had to pass
the bearer token and the payment context token through the model. Here Claude gets httpay's
tools: the bearer, the wallet and the budget are bound inside a Toolbox, so the model only says
which URL it wants, and a 402 is paid within the person's policy.

    ANTHROPIC_API_KEY=... python examples/claudette_stock.py

It runs against the local demo service (a copy of stock.l402.org on a regtest demo Lightning
network: no real money moves). Without ANTHROPIC_API_KEY it says how to run it and exits 0.
"""

from __future__ import annotations

import inspect
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import httpay
from httpay.apps.agent import Toolbox
from httpay.demo.runner import serve_in_thread
from httpay.wallets.demo import DemoWallet

MODEL = os.environ.get("HTTPAY_CLAUDE_MODEL", "claude-sonnet-4-6")
PROMPT = "Can you help me get information about AAPL and MSFT stock?"


def system_prompt(base_url: str) -> str:
    """The notebook's system prompt, told that httpay's tools carry the credentials and the wallet."""
    return f"""You are a helpful assistant that interacts with a stock API at {base_url} (a demo copy of stock.l402.org).
It provides financial market data: GET /ticker/{{symbol}} returns the data for one ticker, GET /info the account's credits.
Each API call costs 1 credit. The account starts with 1 free credit.
When credits run out the API answers 402 Payment Required; the fetch tool then pays within the user's budget and retries.
The account's credentials and the wallet are already bound to the tools: never ask for keys or tokens.
When using the API:
- Use paths such as /ticker/AAPL with the fetch tool.
- If you need to buy credits always buy the cheapest offer.
- Say what you paid, if anything.
"""


@dataclass
class DemoSession:
    """The demo service, a signed-up account and a Toolbox bound to it (the bearer stays inside)."""

    url: str
    toolbox: Toolbox
    wallet: DemoWallet
    bearer: str


@contextmanager
def demo_session(*, budget_usd: float = 0.05, max_per_payment_usd: float = 0.02,
                 ledger: str | Path | None = None) -> Iterator[DemoSession]:
    """Start the demo service, sign up (1 free credit), fund a demo wallet and bind the tools."""
    with serve_in_thread() as server, tempfile.TemporaryDirectory(prefix="httpay-claudette-") as tmp:
        bearer = httpx.get(f"{server.url}/signup", timeout=10).json()["id"]
        wallet = DemoWallet.create(server.url, balance_sat=1_000)
        policy = httpay.Policy(budget_usd=budget_usd, max_per_payment_usd=max_per_payment_usd)
        box = Toolbox(wallet=wallet, policy=policy, ledger=str(ledger or Path(tmp) / "ledger.sqlite3"),
                      headers={"Authorization": f"Bearer {bearer}"}, base_url=server.url)
        try:
            yield DemoSession(url=server.url, toolbox=box, wallet=wallet, bearer=bearer)
        finally:
            box.close()
            wallet.close()


class SdkCompat:
    """Claudette (0.3.15) always sends `temperature=`, which the Anthropic SDK dropped from
    `messages.create` in 1.0. This passes everything through and leaves `temperature` out when the
    installed SDK does not take it."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    @property
    def messages(self) -> Any:
        return _Messages(self._client.messages)


class _Messages:
    def __init__(self, messages: Any) -> None:
        self._messages = messages
        self._takes_temperature = "temperature" in inspect.signature(messages.create).parameters

    def __getattr__(self, name: str) -> Any:
        return getattr(self._messages, name)

    def _fit(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if not self._takes_temperature:
            kwargs.pop("temperature", None)
        return kwargs

    def create(self, **kwargs: Any) -> Any:
        return self._messages.create(**self._fit(kwargs))

    def stream(self, **kwargs: Any) -> Any:
        return self._messages.stream(**self._fit(kwargs))


def make_chat(session: DemoSession, model: str = MODEL, anthropic_client: Any = None) -> Any:
    """A Claudette Chat with httpay's tools; `anthropic_client` lets a test script the model."""
    from anthropic import Anthropic
    from claudette import Chat, Client

    cli = Client(model, cli=SdkCompat(anthropic_client if anthropic_client is not None else Anthropic()))
    return Chat(model, cli=cli, sp=system_prompt(session.url), tools=session.toolbox.tools())


def ask(chat: Any, prompt: str = PROMPT, *, trace: Callable[[Any], None] | None = None, max_steps: int = 10) -> str:
    """Run Claudette's tool loop until Claude stops calling tools; return its last text."""
    last: Any = None
    for step in chat.toolloop(prompt, max_steps=max_steps):
        if trace is not None:
            trace(step)
        last = step
    from claudette import contents

    return contents(last) if last is not None and hasattr(last, "content") else str(last)


def main() -> int:
    if not os.environ.get("ANTHROPIC_API_KEY"):
        print("This example talks to Claude. Set ANTHROPIC_API_KEY and run:\n"
              "    ANTHROPIC_API_KEY=... python examples/claudette_stock.py\n"
              "(optionally HTTPAY_CLAUDE_MODEL=<model>; it uses the local demo service, no real money moves).\n"
              "The same conversation runs offline with a scripted model in tests/agent/test_claudette_scripted.py.")
        return 0
    import importlib.util

    missing = [m for m in ("anthropic", "claudette") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"This example needs {' and '.join(missing)}: pip install anthropic claudette "
              "(the test venv, `bash run.sh test`, has them)", file=sys.stderr)
        return 1
    with demo_session() as session:
        print(f"demo service on {session.url} (DEMO: regtest, no real money)")
        chat = make_chat(session)
        answer = ask(chat, trace=lambda step: print(f"· {str(step)[:300]}"))
        print("\nClaude:", answer)
        print("\n" + session.toolbox.payments())
        print(session.toolbox.budget())
    return 0


if __name__ == "__main__":
    sys.exit(main())
