"""wallet_from_env: each wallet kind from its variables, and a ConfigError naming every missing one."""

from __future__ import annotations

from pathlib import Path

import pytest

import httpay
from httpay.config import wallet_from_env
from httpay.errors import ConfigError
from httpay.wallets.demo import DemoWallet
from httpay.wallets.fewsats import FewsatsWallet
from httpay.wallets.lightspark import LightsparkWallet
from httpay.wallets.lnbits import LNbitsWallet
from httpay.wallets.lnd import LNDWallet

LIGHTSPARK = {
    "LIGHTSPARK_CLIENT_ID": "cid", "LIGHTSPARK_CLIENT_SECRET": "s3cret-client-value",
    "LIGHTSPARK_NODE_ID": "LightsparkNodeWithOSK:1", "LIGHTSPARK_NODE_PASSWORD": "node-pass-value",
}


def test_no_wallet_names_the_choices() -> None:
    with pytest.raises(ConfigError) as exc:
        wallet_from_env({})
    for kind in ("demo", "lnbits", "lnd", "lightspark", "fewsats"):
        assert kind in str(exc.value)


def test_unknown_kind() -> None:
    with pytest.raises(ConfigError, match="not a wallet httpay knows"):
        wallet_from_env({"HTTPAY_WALLET": "paypal"})


def test_demo_and_lnbits_still_work() -> None:
    demo = wallet_from_env({"HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": "http://127.0.0.1:8402", "HTTPAY_DEMO_KEY": "k" * 32})
    assert isinstance(demo, DemoWallet)
    lnbits = wallet_from_env({"HTTPAY_WALLET": "LNbits", "LNBITS_URL": "https://lnbits.example", "LNBITS_ADMIN_KEY": "a" * 32,
                              "LNBITS_NETWORK": "signet"})
    assert isinstance(lnbits, LNbitsWallet) and lnbits.network == "signet"


def test_lnd_from_hex_or_file(tmp_path: Path) -> None:
    wallet = wallet_from_env({"HTTPAY_WALLET": "lnd", "LND_REST_URL": "https://127.0.0.1:8080", "LND_MACAROON_HEX": "0201" * 20,
                              "LND_NETWORK": "regtest"})
    assert isinstance(wallet, LNDWallet) and wallet.network == "regtest" and "0201" not in repr(wallet)
    mac = tmp_path / "admin.macaroon"
    mac.write_bytes(b"\x02\x01macaroon")
    assert isinstance(wallet_from_env({"HTTPAY_WALLET": "lnd", "LND_REST_URL": "https://127.0.0.1:8080",
                                       "LND_MACAROON_PATH": str(mac)}), LNDWallet)


def test_lnd_names_both_missing_variables() -> None:
    with pytest.raises(ConfigError) as exc:
        wallet_from_env({"HTTPAY_WALLET": "lnd"})
    assert "LND_REST_URL" in str(exc.value) and "LND_MACAROON_HEX (or LND_MACAROON_PATH)" in str(exc.value)


def test_lnd_bad_values_are_config_errors(tmp_path: Path) -> None:
    base = {"HTTPAY_WALLET": "lnd", "LND_REST_URL": "https://127.0.0.1:8080"}
    with pytest.raises(ConfigError, match="hex"):
        wallet_from_env({**base, "LND_MACAROON_HEX": "not-hex"})
    with pytest.raises(ConfigError, match="macaroon file"):
        wallet_from_env({**base, "LND_MACAROON_PATH": str(tmp_path / "missing.macaroon")})
    with pytest.raises(ConfigError, match="not both"):
        wallet_from_env({**base, "LND_MACAROON_HEX": "00", "LND_MACAROON_PATH": "x"})


def test_lightspark_from_env() -> None:
    wallet = wallet_from_env({"HTTPAY_WALLET": "lightspark", **LIGHTSPARK})
    assert isinstance(wallet, LightsparkWallet) and wallet.node_id == "LightsparkNodeWithOSK:1"
    assert "s3cret-client-value" not in repr(wallet) and "node-pass-value" not in repr(wallet)


def test_lightspark_names_every_missing_variable_and_no_secret() -> None:
    env = {"HTTPAY_WALLET": "lightspark", "LIGHTSPARK_CLIENT_ID": "cid", "LIGHTSPARK_NODE_ID": "n",
           "LIGHTSPARK_CLIENT_SECRET": "   "}
    with pytest.raises(ConfigError) as exc:
        wallet_from_env(env)
    assert "LIGHTSPARK_CLIENT_SECRET, LIGHTSPARK_NODE_PASSWORD" in str(exc.value)
    assert "LIGHTSPARK_CLIENT_ID" not in str(exc.value)


def test_fewsats_from_env() -> None:
    wallet = wallet_from_env({"HTTPAY_WALLET": "fewsats", "FEWSATS_API_KEY": "fs-key-value-123",
                              "FEWSATS_USD_PER_BTC": "95000"})
    assert isinstance(wallet, FewsatsWallet) and wallet.usd_per_btc() == 95_000
    assert "fs-key-value-123" not in repr(wallet)
    with pytest.raises(ConfigError, match="FEWSATS_API_KEY"):
        wallet_from_env({"HTTPAY_WALLET": "fewsats"})
    with pytest.raises(ConfigError, match="FEWSATS_USD_PER_BTC"):
        wallet_from_env({"HTTPAY_WALLET": "fewsats", "FEWSATS_API_KEY": "k", "FEWSATS_USD_PER_BTC": "lots"})


def test_wallets_and_wallet_from_env_are_exported() -> None:
    assert httpay.LNDWallet is LNDWallet
    assert httpay.LightsparkWallet is LightsparkWallet
    assert httpay.FewsatsWallet is FewsatsWallet
    assert httpay.wallet_from_env is wallet_from_env
