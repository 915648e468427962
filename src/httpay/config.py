"""Wallets and policies from the environment or a TOML file, as the notebook did with `.env`.

Every missing or wrong setting raises ConfigError naming the variable and how to set it.
"""

from __future__ import annotations

import math
import os
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from httpay.errors import ConfigError, WalletError
from httpay.policy import Policy
from httpay.safe import mask_urls
from httpay.wallets.base import Wallet

DEMO_URL = "http://127.0.0.1:8402"  # where `httpay demo-server` listens, and `httpay wallet open-demo` opens a wallet
WALLET_KINDS = ("demo", "lnbits", "lnd", "lightspark", "fewsats", "nwc")

# Each wallet's variables: (required, optional). LND needs one of LND_MACAROON_HEX / LND_MACAROON_PATH.
WALLET_VARIABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "demo": (("HTTPAY_DEMO_URL", "HTTPAY_DEMO_KEY"), ()),
    "lnbits": (("LNBITS_URL", "LNBITS_ADMIN_KEY"), ("LNBITS_NETWORK",)),
    "lnd": (("LND_REST_URL",), ("LND_MACAROON_HEX", "LND_MACAROON_PATH", "LND_TLS_CERT_PATH", "LND_NETWORK")),
    "lightspark": (("LIGHTSPARK_CLIENT_ID", "LIGHTSPARK_CLIENT_SECRET", "LIGHTSPARK_NODE_ID", "LIGHTSPARK_NODE_PASSWORD"),
                   ("LIGHTSPARK_NETWORK", "LIGHTSPARK_BASE_URL")),
    "fewsats": (("FEWSATS_API_KEY",), ("FEWSATS_BASE_URL", "FEWSATS_USD_PER_BTC")),
    "nwc": (("NWC_URI",), ("NWC_NETWORK", "NWC_TIMEOUT")),
}


def _get(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _needs(env: Mapping[str, str], kind: str, *names: str) -> list[str]:
    """The values of `names`, or one ConfigError naming every one that is missing."""
    missing = [n for n in names if not _get(env, n)]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise ConfigError(
            f"HTTPAY_WALLET={kind} needs the environment variable{plural} {', '.join(missing)}; "
            f"set {'them' if plural else 'it'} (e.g. in your .env)"
        )
    return [_get(env, n) for n in names]


def wallet_from_env(env: Mapping[str, str] | None = None) -> Wallet:
    """Build the wallet named by `HTTPAY_WALLET` (demo, lnbits, lnd, lightspark, fewsats, nwc) from its variables.

    Secrets are read from the environment and handed to the wallet only; no error repeats them.
    """
    env = os.environ if env is None else env
    kind = _get(env, "HTTPAY_WALLET").lower()
    if not kind:
        raise ConfigError(
            "no wallet configured: set HTTPAY_WALLET to one of " + ", ".join(WALLET_KINDS)
            + " and that wallet's variables (e.g. HTTPAY_DEMO_URL and HTTPAY_DEMO_KEY)"
        )
    if kind not in WALLET_KINDS:
        raise ConfigError(f"HTTPAY_WALLET={kind!r} is not a wallet httpay knows; use one of {', '.join(WALLET_KINDS)}")
    try:
        return _build(kind, env)
    except WalletError as exc:  # a value is there but unusable (bad hex, unreadable file, ...)
        raise ConfigError(f"HTTPAY_WALLET={kind}: {exc}") from None


def _build(kind: str, env: Mapping[str, str]) -> Wallet:
    required = WALLET_VARIABLES[kind][0]
    if kind == "demo":
        from httpay.wallets.demo import DemoWallet

        url, key = _needs(env, kind, *required)
        where = "" if url.rstrip("/") == DEMO_URL else f" {shlex.quote(mask_urls(url))}"  # (open-demo's own default)
        return DemoWallet(url, key, key_advice=f"HTTPAY_DEMO_KEY is no wallet's key on {mask_urls(url)}: open a wallet there "
                                               f"with eval \"$(httpay wallet open-demo{where})\"")
    if kind == "lnbits":
        from httpay.wallets.lnbits import LNbitsWallet

        url, key = _needs(env, kind, *required)
        return LNbitsWallet(url, key, network=_get(env, "LNBITS_NETWORK") or "bitcoin")
    if kind == "lnd":
        from httpay.wallets.lnd import LNDWallet

        macaroon_hex, macaroon_path = _get(env, "LND_MACAROON_HEX"), _get(env, "LND_MACAROON_PATH")
        missing = [] if _get(env, "LND_REST_URL") else ["LND_REST_URL"]
        if not (macaroon_hex or macaroon_path):
            missing.append("LND_MACAROON_HEX (or LND_MACAROON_PATH)")
        if missing:
            _needs(env, kind, *missing)
        if macaroon_hex and macaroon_path:
            raise ConfigError("HTTPAY_WALLET=lnd: set LND_MACAROON_HEX or LND_MACAROON_PATH, not both")
        return LNDWallet(
            _get(env, "LND_REST_URL"), macaroon_hex or None, macaroon_path=macaroon_path or None,
            tls_cert_path=_get(env, "LND_TLS_CERT_PATH") or None, network=_get(env, "LND_NETWORK") or "bitcoin",
        )
    if kind == "lightspark":
        from httpay.wallets.lightspark import LightsparkWallet

        client_id, secret, node_id, password = _needs(env, kind, *required)
        return LightsparkWallet(client_id, secret, node_id, password, network=_get(env, "LIGHTSPARK_NETWORK") or "bitcoin",
                                base_url=_get(env, "LIGHTSPARK_BASE_URL") or None)
    if kind == "nwc":
        from httpay.extras import require
        from httpay.wallets.nwc import NWCWallet

        require("nwc")
        (uri,) = _needs(env, kind, *required)
        timeout_text = _get(env, "NWC_TIMEOUT")
        try:
            timeout = float(timeout_text) if timeout_text else 60.0
        except ValueError:
            timeout = math.nan
        if not math.isfinite(timeout) or timeout <= 0:
            raise ConfigError(f"NWC_TIMEOUT must be a positive number of seconds, got {timeout_text!r}")
        try:
            return NWCWallet(uri, network=_get(env, "NWC_NETWORK") or "bitcoin", timeout=timeout)
        except ConfigError as exc:  # the URI's own checks; they never repeat its secret
            raise ConfigError(f"NWC_URI: {exc}") from None
    from httpay.wallets.fewsats import FewsatsWallet

    (api_key,) = _needs(env, kind, *required)
    rate_text = _get(env, "FEWSATS_USD_PER_BTC")
    try:
        rate = float(rate_text) if rate_text else None
    except ValueError:
        rate = math.nan
    if rate is not None and (not math.isfinite(rate) or rate <= 0):
        raise ConfigError(f"FEWSATS_USD_PER_BTC must be a positive number (USD per bitcoin), got {rate_text!r}")
    return FewsatsWallet(api_key, base_url=_get(env, "FEWSATS_BASE_URL") or "https://api.fewsats.com", usd_per_btc=rate)


POLICY_FIELDS = {
    "max_per_payment_usd", "budget_usd", "max_per_payment_sat", "budget_sat", "per_host_usd", "per_hour_usd",
    "per_day_usd", "per_hour_sat", "per_day_sat", "methods", "strategy", "calls", "usd_per_btc", "price_tolerance",
    "allowed_hosts", "denied_hosts", "payment_hosts", "payees", "max_fee_msat", "default_limits", "prefer",
    "tag_limits", "sign_in", "proposals",
}
_AMOUNT_KEYS = ("max_per_payment_usd", "budget_usd", "max_per_payment_sat", "budget_sat", "per_host_usd",
                "per_hour_usd", "per_day_usd", "per_hour_sat", "per_day_sat", "usd_per_btc", "max_fee_msat")
_LIST_KEYS = ("methods", "allowed_hosts", "denied_hosts", "payment_hosts", "prefer", "proposals")


def _checked(key: str, value: Any, source: str) -> Any:
    """One TOML setting, checked where it enters: the error names the key and the file."""
    def bad(what: str) -> ConfigError:
        return ConfigError(f"{source}: {key} must be {what}, got {value!r}")

    if key in _AMOUNT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (
                isinstance(value, float) and not math.isfinite(value)):
            raise bad("a non-negative number")
        if key == "usd_per_btc" and value == 0:
            raise bad("a positive number (USD per bitcoin)")
    elif key in _LIST_KEYS:
        if isinstance(value, str):
            return [value]  # `allowed_hosts = "stock.example"` is that one host, not its letters
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
    elif key == "calls":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad("a whole number of at least 1")
    elif key == "price_tolerance":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise bad("a number between 0 and 1")
    elif key == "strategy" and not isinstance(value, str):
        raise bad("a string")
    elif key in ("default_limits", "sign_in") and not isinstance(value, bool):
        raise bad("true or false")
    elif key == "tag_limits" and (not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values())):
        raise bad('a table of "key=value" = {{ per_day_usd = 2, ... }}')
    elif key == "payees" and not isinstance(value, dict):
        raise bad("a table of host = node pubkey")
    return value


def policy_from_dict(data: Mapping[str, Any], *, source: str = "policy") -> Policy:
    """A Policy from settings (as read from TOML), each checked and named by its key on error.

    `default_limits = false` is the TOML spelling of `Policy.unlimited(...)`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: [policy] must be a table of settings")
    unknown = set(data) - POLICY_FIELDS
    if "approve" in unknown:  # a function, which no file can hold: the person's way is a flag
        raise ConfigError(f"{source}: approve is a Python function (Policy(approve=...)) and cannot be set in a file; "
                          "to have a person approve each payment, run `httpay get --ask` or `httpay mcp --ask`")
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(POLICY_FIELDS))}")
    settings = {k: _checked(k, v, source) for k, v in data.items()}
    try:
        return Policy(**settings)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {str(exc).replace('Policy(', '').replace('=...)', '')}") from None


CLIENT_FIELDS = {"payment_deadline"}  # how the client pays, not what it may spend: `[client]` (or top level)


def _read_toml(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    if not isinstance(path, str | os.PathLike):
        raise ConfigError(f"a policy file is named by a path, got {type(path).__name__}")
    p = Path(path).expanduser()
    try:
        return p, tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"policy file {p} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"policy file {p} is a folder: name the .toml file in it") from None
    except UnicodeDecodeError:
        raise ConfigError(f"policy file {p} is not UTF-8 text, as TOML must be") from None
    except OSError as exc:
        raise ConfigError(f"policy file {p} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"policy file {p} is not valid TOML: {exc}") from None


def _policy_table(data: Mapping[str, Any], source: str) -> Any:
    """The policy's settings in a file: the `[policy]` table, or the top-level keys (less the client's)."""
    if "policy" in data:
        table = data["policy"]
        stray = sorted(set(data) - {"policy", "client"} - CLIENT_FIELDS)
        if stray:  # a misspelt table ([clinet]) or a limit outside [policy] would be ignored: a limit lost
            raise ConfigError(f"{source}: unknown table or setting(s) {', '.join(stray)} beside [policy]; a file holds "
                              "[policy] (the limits) and [client] (payment_deadline), or the limits at the top level")
        if isinstance(table, Mapping):
            misplaced = sorted(set(table) & CLIENT_FIELDS)
            if misplaced:
                raise ConfigError(f"{source}: {', '.join(misplaced)} is a client setting, not a limit: put it in a "
                                  "[client] table (or at the top level of the file), not in [policy]")
        return table
    return {k: v for k, v in data.items() if k != "client" and k not in CLIENT_FIELDS}


def policy_from_toml(path: str | os.PathLike[str]) -> Policy:
    """Read a policy from TOML: top-level keys, or a `[policy]` table. The client's own settings
    (`[client]`, or `payment_deadline` at the top level) are read by `client_settings_from_toml`, and
    checked here too: every command reading the file refuses a typo in them (`payment_dedline`), not
    only the one that pays (a dry run that passed, then the real request refused)."""
    p, data = _read_toml(path)
    client_settings_from_dict(data, source=str(p))
    return policy_from_dict(_policy_table(data, str(p)), source=str(p))


def payment_deadline_ok(value: Any) -> bool:
    """A payment deadline a person can mean: a positive, finite number of seconds (not a bool)."""
    return (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0)


def client_settings_from_dict(data: Mapping[str, Any], *, source: str = "policy") -> dict[str, Any]:
    """The keyword arguments for `httpay.Client` a file sets (today `payment_deadline`, seconds from a 402
    to paying it), each checked where it enters and named by its key on error."""
    client = data.get("client", {})
    if not isinstance(client, Mapping):
        raise ConfigError(f"{source}: [client] must be a table of settings, e.g. [client] payment_deadline = 30")
    unknown = set(client) - CLIENT_FIELDS
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) in [client]: {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(CLIENT_FIELDS))}")
    top = {k: data[k] for k in CLIENT_FIELDS if k in data}
    both = sorted(set(top) & set(client))
    if both:
        raise ConfigError(f"{source}: {', '.join(both)} is set both at the top level and in [client]; set it once")
    settings = {**top, **client}
    out: dict[str, Any] = {}
    if "payment_deadline" in settings:
        value = settings["payment_deadline"]
        where = "[client] payment_deadline" if "payment_deadline" in client else "payment_deadline"
        if not payment_deadline_ok(value):
            raise ConfigError(f"{source}: {where} must be a positive number of seconds, got {value!r}")
        out["payment_deadline"] = float(value)
    return out


def client_settings_from_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """`client_settings_from_dict` of a policy file: `[client] payment_deadline = 30` (or the key at top level)."""
    p, data = _read_toml(path)
    return client_settings_from_dict(data, source=str(p))
