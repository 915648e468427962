"""The README's Python example runs as written, and its demo output is what the demo prints."""

from __future__ import annotations

import contextlib
import io
import re
from contextlib import closing
from pathlib import Path
from typing import Any

from tests.e2e.test_cli import httpay_cmd

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.DOTALL)


def _normal(text: str) -> str:
    """Blank out what changes from run to run: ports, hashes, ids, times, temp paths."""
    text = re.sub(r"lnbcrt[0-9a-z]+…?", "<invoice>", text)
    text = re.sub(r"\b[0-9a-f]{8,}…?", "<hex>", text)
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", text)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "<time>", text)
    return "\n".join(line.rstrip() for line in text.splitlines())


def test_python_example_runs_and_prints_what_the_readme_says() -> None:
    code = _blocks("python")[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    printed = out.getvalue().splitlines()
    expected = _blocks("text")[1].splitlines()
    for want, got in zip(expected[:4], printed[:4]):
        assert got == want
    assert re.match(r"200 MSFT #1 .* settled 10 sat \+ fee 0 sat to 127\.0\.0\.1:\d+ for offer_c668e0c0 '1 Credit Package' by lightning",
                    printed[4])


def test_demo_output_in_the_readme_is_what_the_demo_prints() -> None:
    p = httpay_cmd("demo", "--non-interactive", env={"COLUMNS": "100"})
    assert p.returncode == 0, p.stderr
    actual = _normal(p.stdout)
    for line in _normal(_blocks("text")[0]).splitlines():
        if line.strip():
            assert line in actual, f"README line not in the demo's output: {line!r}"


def test_the_transport_example_pays_through_a_plain_httpx_client(tmp_path: Path) -> None:
    import httpx

    import httpay
    from httpay.demo.runner import serve_in_thread
    from httpay.ledger import SQLiteLedger

    code = next(b for b in _blocks("python") if "PaymentTransport(" in b)
    with serve_in_thread() as server, contextlib.chdir(tmp_path):
        base = server.url
        auth = {"Authorization": f"Bearer {httpx.get(f'{base}/signup').json()['id']}"}
        httpx.get(f"{base}/ticker/AAPL", headers=auth)  # the free credit
        scope = {"httpx": httpx, "httpay": httpay, "base": base, "auth": auth,
                 "wallet": httpay.DemoWallet.create(base, balance_sat=1_000),
                 "policy": httpay.Policy(max_per_payment_usd=1, budget_usd=5)}
        exec(compile(code, "README.md", "exec"), scope)
        assert scope["r"].status_code == 200 and scope["r"].json()["symbol"] == "MSFT"
        with SQLiteLedger(tmp_path / "payments.sqlite3") as lg:
            assert [(x.status.value, x.amount_msat) for x in lg.receipts()] == [("settled", 10_000)]


def _literals(code: str, lang: str) -> list[str]:
    """Every string a code block gives as a value (what a copy of it would send or set)."""
    import ast
    import json

    if lang == "json":
        found: list[str] = []

        def walk(value: object) -> None:
            if isinstance(value, str):
                found.append(value)
            elif isinstance(value, dict):
                for v in value.values():
                    walk(v)
            elif isinstance(value, list):
                for v in value:
                    walk(v)
        walk(json.loads(code))
        return found
    return [n.value for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_every_value_in_the_readmes_code_runs_as_written() -> None:
    """A placeholder a person copies is ASCII, so it is sent as it is: the "Bearer …" of the agents'
    Toolbox and MCP blocks was a ConfigError ("header 'Authorization' is not ASCII text") on copy-paste."""
    for lang in ("python", "json"):
        for code in _blocks(lang):
            bad = [v for v in _literals(code, lang) if not v.isascii()]
            assert not bad, f"README {lang} block gives non-ASCII values: {bad}"


def test_the_agents_toolbox_and_mcp_blocks_start_as_copied(tmp_path: Path, monkeypatch: Any) -> None:
    import json

    import httpay
    from httpay.apps.agent.mcp_server import toolbox_from_env
    from httpay.demo.runner import serve_in_thread

    code = next(b for b in _blocks("python") if "Toolbox(" in b)
    config = json.loads(next(b for b in _blocks("json") if "mcpServers" in b))["mcpServers"]["httpay"]["env"]
    with serve_in_thread() as server, contextlib.chdir(tmp_path):
        wallet = httpay.DemoWallet.create(server.url, balance_sat=1_000)
        demo_env = {"HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": server.url, "HTTPAY_DEMO_KEY": wallet.reveal_key()}
        for k, v in demo_env.items():
            monkeypatch.setenv(k, v)
        kept = code.replace("https://stock.example", server.url)  # the block's service: the demo's, offline
        scope: dict[str, Any] = {}
        exec(compile(kept, "README.md", "exec"), scope)
        scope["tb"].close()
        env = {k: v for k, v in config.items() if not k.startswith(("LNBITS", "HTTPAY_WALLET", "HTTPAY_POLICY"))}
        box = toolbox_from_env({**env, **demo_env, "HTTPAY_LEDGER": str(tmp_path / "mcp.sqlite3")})
        box.close()


def test_the_demo_and_its_readme_output_show_no_part_of_a_secret(tmp_path: Path) -> None:
    """The demo printed the first 8 hex of each preimage and ~56 characters of the macaroon (and the
    README copied them): it shows the payment hash (public) and names the secrets without them."""
    import sqlite3

    for protocol in ("l402-v0.2", "l402", "mpp"):
        ledger = tmp_path / f"{protocol}.sqlite3"
        p = httpay_cmd("demo", "--non-interactive", "--protocol", protocol, "--ledger", str(ledger),
                       env={"COLUMNS": "100"})
        assert p.returncode == 0, p.stderr
        out = p.stdout + p.stderr
        with closing(sqlite3.connect(ledger)) as db:
            preimages = [r[0] for r in db.execute("SELECT preimage FROM payments WHERE preimage IS NOT NULL")]
            hashes = [r[0] for r in db.execute("SELECT payment_hash FROM payments WHERE preimage IS NOT NULL")]
            tokens = [r[0] for r in db.execute("SELECT authorization_value FROM tokens")]
        assert preimages and hashes
        for secret in preimages:
            assert not any(secret[i:i + 8] in out for i in range(len(secret) - 7)), protocol
        for token in tokens:  # "L402 <macaroon>:<preimage>": no stretch of its macaroon past the public location
            macaroon = token.split(" ", 1)[-1].split(":", 1)[0]
            assert not any(macaroon[i:i + 12] in out for i in range(24, len(macaroon) - 11)), protocol
        assert re.search(r'macaroon="[A-Za-z0-9+/]{8}', out) is None
        assert any(f"proves payment hash {h[:16]}…" in out for h in hashes), protocol
    sample = _blocks("text")[0]
    assert "preimage (secret) proves payment hash" in sample and not re.search(r"preimage [0-9a-f]{4}", sample)
