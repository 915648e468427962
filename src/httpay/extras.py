"""The optional parts of httpay and the extra that installs each one.

`pip install httpay` brings only what a paying client needs (httpx, invoice decoding, rich for
views). A part that needs more says so in one clear error naming the extra, instead of an
ImportError from deep inside.
"""

from __future__ import annotations

import importlib.util

from httpay.errors import ConfigError

# extra -> (the modules it provides, what it is for)
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "postgres": (("psycopg", "psycopg_pool"), "a PostgreSQL ledger"),
    "mcp": (("mcp",), "`httpay mcp`, the MCP server"),
    "dashboard": (("starlette", "uvicorn"), "`httpay dashboard`"),
    "demo": (("starlette", "uvicorn", "bolt11"), "the demo service and its Lightning network"),
    "x402": (("eth_account",), "paying x402 with httpay.signers.EvmSigner"),
    "lightspark": (("lightspark",), "the Lightspark wallet"),
    "nwc": (("nostr_sdk",), "the Nostr Wallet Connect (NIP-47) wallet"),
}


def missing(extra: str) -> list[str]:
    """The modules of `extra` that are not installed."""
    modules, _ = EXTRAS[extra]
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require(extra: str) -> None:
    """Raise ConfigError naming the extra when one of its modules is not installed."""
    absent = missing(extra)
    if absent:
        _, purpose = EXTRAS[extra]
        raise ConfigError(
            f"{purpose} needs the '{extra}' extra ({', '.join(absent)} not installed): "
            f"pip install 'httpay[{extra}]'"
        )
