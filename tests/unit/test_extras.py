"""`pip install httpay` is the paying client alone; each optional part names its extra when missing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.helpers import make_invoice

HEAVY = ("starlette", "uvicorn", "psycopg", "psycopg_pool", "mcp", "pydantic", "bolt11", "bitstring", "eth_account")


def _python(code: str, *blocked: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter where the `blocked` top-level packages look uninstalled."""
    prelude = textwrap.dedent(f"""
        import importlib.util, sys
        BLOCKED = {blocked!r}
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(name)
                return None
        _real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in BLOCKED else _real(name, *a)
        sys.meta_path.insert(0, _Block())
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, check=False)


def test_paying_client_imports_nothing_heavy() -> None:
    bolt11, _ = make_invoice(10_000)
    run = _python(f"""
        import sys, httpay
        inv = httpay.decode_invoice({bolt11!r})
        with httpay.Client(wallet=httpay.DemoWallet("http://127.0.0.1:9", "k"), ledger=":memory:") as c:
            pass
        heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
        print("heavy:", heavy, inv.amount_msat)
    """, *HEAVY)
    assert run.returncode == 0, run.stderr
    assert "heavy: [] 10000" in run.stdout


@pytest.mark.parametrize(("code", "extra"), [
    ("import httpay; httpay.open_ledger('postgresql://u:p@127.0.0.1:9/x')", "postgres"),
    ("import httpay.demo", "demo"),
    ("import httpay.apps.dashboard", "dashboard"),
    ("from httpay.apps.agent.mcp_server import build_server; build_server(None)", "mcp"),
    ("httpay.wallet_from_env({'HTTPAY_WALLET': 'nwc', 'NWC_URI': 'nostr+walletconnect://x'})", "nwc"),
    ("from httpay.wallets.nwc import NWCWallet; NWCWallet('nostr+walletconnect://x')", "nwc"),
])
def test_a_missing_extra_is_one_clear_error_naming_it(code: str, extra: str) -> None:
    from httpay.extras import EXTRAS

    run = _python(f"""
        import httpay
        try:
            {code}
        except httpay.ConfigError as exc:
            print("ConfigError:", exc)
    """, *EXTRAS[extra][0])
    assert run.returncode == 0, run.stderr
    assert f"pip install 'httpay[{extra}]'" in run.stdout, run.stdout
    assert "Traceback" not in run.stderr


def test_pip_install_httpay_brings_only_the_core() -> None:
    """What `pip install httpay` installs, read from the package's own metadata (what pip reads):
    the paying client's few dependencies; everything else only behind a named extra."""
    from importlib.metadata import requires

    core = sorted(r.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
                  for r in requires("httpay") or [] if "extra ==" not in r)
    assert core == ["bech32", "coincurve", "httpx", "platformdirs", "pymacaroons", "rich"], core
    extras = {r.split("extra ==")[1].strip().strip('"\'') for r in requires("httpay") or [] if "extra ==" in r}
    assert {"postgres", "mcp", "dashboard", "demo", "x402", "lightspark", "all"} <= extras
