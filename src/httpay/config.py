"""Wallets and policies from the environment or a TOML file, as the notebook did with `.env`.

Every missing or wrong setting raises ConfigError naming the variable and how to set it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from httpay.errors import ConfigError
from httpay.policy import Policy
from httpay.wallets.base import Wallet

WALLET_KINDS = ("demo", "lnbits")


def _need(env: Mapping[str, str], name: str, kind: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"HTTPAY_WALLET={kind} needs the environment variable {name}; set it (e.g. in your .env)")
    return value


def wallet_from_env(env: Mapping[str, str] | None = None) -> Wallet:
    """Build the wallet named by `HTTPAY_WALLET` (demo, lnbits) from its variables."""
    env = os.environ if env is None else env
    kind = env.get("HTTPAY_WALLET", "").strip().lower()
    if not kind:
        raise ConfigError(
            "no wallet configured: set HTTPAY_WALLET to one of " + ", ".join(WALLET_KINDS)
            + " and that wallet's variables (e.g. HTTPAY_DEMO_URL and HTTPAY_DEMO_KEY)"
        )
    if kind == "demo":
        from httpay.wallets.demo import DemoWallet

        return DemoWallet(_need(env, "HTTPAY_DEMO_URL", kind), _need(env, "HTTPAY_DEMO_KEY", kind))
    if kind == "lnbits":
        from httpay.wallets.lnbits import LNbitsWallet  # type: ignore[import-not-found]

        return LNbitsWallet(_need(env, "LNBITS_URL", kind), _need(env, "LNBITS_ADMIN_KEY", kind),
                            network=env.get("LNBITS_NETWORK", "bitcoin"))
    raise ConfigError(f"HTTPAY_WALLET={kind!r} is not a wallet httpay knows; use one of {', '.join(WALLET_KINDS)}")


POLICY_FIELDS = {
    "max_per_payment_usd", "budget_usd", "max_per_payment_sat", "budget_sat", "per_host_usd", "per_hour_usd",
    "per_day_usd", "methods", "strategy", "calls", "usd_per_btc", "price_tolerance", "allowed_hosts", "denied_hosts",
    "payment_hosts", "max_fee_msat",
}


def policy_from_dict(data: Mapping[str, Any], *, source: str = "policy") -> Policy:
    unknown = set(data) - POLICY_FIELDS
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(POLICY_FIELDS))}")
    return Policy(**dict(data))


def policy_from_toml(path: str | os.PathLike[str]) -> Policy:
    """Read a policy from TOML: top-level keys, or a `[policy]` table."""
    p = Path(path).expanduser()
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"policy file {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"policy file {p} is not valid TOML: {exc}") from None
    return policy_from_dict(data.get("policy", data), source=str(p))
