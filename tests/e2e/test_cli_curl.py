"""The request commands a curl or lnget user guesses, run as subprocesses against the demo service:
get/post/put/patch/delete/head and `request -X`, -d/--data, --json BODY, -H, -o FILE (bytes as
sent), -q, --max-cost, --no-pay, --json output with the receipt, `tokens list|drop`, the progress
lines, and the documented exit codes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from httpay.demo.runner import RunningServer
from tests.e2e.test_cli import httpay_cmd


@pytest.fixture
def env(demo: RunningServer, tmp_path: Path) -> dict[str, str]:
    key = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 10_000}).json()["key"]
    return {"HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": demo.url, "HTTPAY_DEMO_KEY": key,
            "HTTPAY_LEDGER": str(tmp_path / "cli.sqlite3")}


@dataclass(frozen=True)
class Form:
    name: str
    args: tuple[str, ...]         # {url} is the demo's base URL
    code: int
    stdout: tuple[str, ...] = ()  # in stdout
    stderr: tuple[str, ...] = ()  # in stderr
    quiet_stderr: bool = False    # stderr is empty
    paid: int = 0                 # settled ledger rows afterwards
    stdin: str = ""


FORMS = [
    Form("get pays an MPP charge, progress on stderr", ("get", "{url}/mpp/ticker/MSFT"), 0, ('"symbol":"MSFT"',),
         ("402 from", "(mpp)", "written pending", "paid #1"), paid=1),
    Form("-q keeps stderr silent", ("get", "{url}/mpp/ticker/MSFT", "-q"), 0, ('"symbol":"MSFT"',), quiet_stderr=True,
         paid=1),
    Form("post with --json BODY", ("post", "{url}/mpp/ticker/AAPL", "--json", '{"note": 1}', "-q"), 0,
         ('"symbol":"AAPL"',), paid=1),
    Form("post with -d @-", ("post", "{url}/mpp/ticker/AAPL", "-d", "@-", "-q"), 0, ('"symbol":"AAPL"',), paid=1,
         stdin="a=1"),
    Form("request -X POST", ("request", "-X", "POST", "{url}/mpp/ticker/NVDA", "-q"), 0, ('"symbol":"NVDA"',), paid=1),
    Form("--json output carries the receipt", ("get", "{url}/aperture/ticker/NVDA", "--json"), 0,
         ('"paid": true', '"proof_verified": true', '"dialect": "l402-classic"', '"ledger_id": 1'), paid=1),
    Form("--no-pay pays nothing and says what it would", ("get", "{url}/mpp/ticker/MSFT", "--no-pay"), 0,
         ("would pay",), paid=0),
    Form("post --no-pay previews the POST itself: its 402, not a GET's (the route takes only POST)",
         ("post", "{url}/x402/summarize", "--json", '{"text": "hi"}', "--no-pay"), 6,
         ("/x402/summarize asks for payment", "x402:upto", "would not pay (no_signer)", "nothing was paid"), paid=0),
    Form("--max-cost below the price refuses (exit 3)", ("get", "{url}/mpp/ticker/MSFT", "--max-cost-sat", "5"), 3,
         stderr=("refused", "raise --max-cost-sat"), paid=0),  # the flag typed, not its alias --max-price-sat
    Form("--max-cost in USD", ("get", "{url}/mpp/ticker/MSFT", "--max-cost", "0.001", "--usd-per-btc", "100000"), 3,
         stderr=("refused", "--max-cost"), paid=0),
    Form("-d and --json together is a usage error (exit 2)", ("post", "{url}/x", "-d", "a", "--json", "{}"), 2,
         stderr=("use one",)),
    Form("--json before the URL is read as a body and refused (exit 2)", ("get", "--json", "{url}/x"), 2,
         stderr=("put --json after the URL",)),
    Form("a bad -X (exit 2)", ("request", "-X", "G E T", "{url}/x"), 2, stderr=("not an HTTP method",)),
    Form("not a URL (exit 2)", ("get", "example.com"), 2, stderr=("no scheme",)),
    Form("an HTTP error (exit 6)", ("get", "{url}/mpp/ticker/NOPE", "-q"), 6, stderr=("HTTP 404",)),
    Form("head is there, and prints no body", ("head", "{url}/terms", "-q"), 0, quiet_stderr=True),
    Form("head says there is no body (not 'saved in None')", ("head", "{url}/terms"), 0,
         stderr=("HTTP 200 OK: no body",)),
    Form("-d @FILE that is missing (exit 2)", ("post", "{url}/x", "-d", "@/no/such/file"), 2,
         stderr=("cannot read the file",)),
]


@pytest.mark.parametrize("form", FORMS, ids=[f.name for f in FORMS])
def test_cli_form(form: Form, demo: RunningServer, env: dict[str, str]) -> None:
    args = [a.replace("{url}", demo.url) for a in form.args]
    p = httpay_cmd(*args, env=env, stdin=form.stdin)
    assert p.returncode == form.code, p.stdout + p.stderr
    for want in form.stdout:
        assert want in p.stdout, p.stdout
    for want in form.stderr:
        assert want in p.stderr, p.stderr
    if form.quiet_stderr:
        assert p.stderr == "", p.stderr
    assert "Traceback" not in p.stderr
    ledger = json.loads(httpay_cmd("ledger", "--json", env=env).stdout or '{"payments": []}')
    assert sum(x["status"] == "settled" for x in ledger.get("payments", [])) == form.paid


def test_output_file_is_the_bytes_as_sent(demo: RunningServer, env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "body.json"
    p = httpay_cmd("get", f"{demo.url}/mpp/ticker/MSFT", "-o", str(out), env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "" and f"is saved in {out}" in p.stderr
    assert json.loads(out.read_bytes())["symbol"] == "MSFT"
    j = json.loads(httpay_cmd("get", f"{demo.url}/mpp/ticker/AAPL", "-o", str(out), "--json", env=env).stdout)
    assert j["saved_to"] == str(out) and j["body"] is None and j["body_bytes"] == out.stat().st_size


def test_a_failed_command_with_json_output_is_json_too(demo: RunningServer, env: dict[str, str]) -> None:
    p = httpay_cmd("get", f"{demo.url}/mpp/ticker/MSFT", "--max-cost-sat", "5", "--json", env=env)
    assert p.returncode == 3
    doc = json.loads(p.stdout)
    assert doc["ok"] is False and doc["exit_code"] == 3 and doc["error"] == "PaymentRefused"


def test_tokens_list_and_drop(demo: RunningServer, env: dict[str, str]) -> None:
    assert httpay_cmd("get", f"{demo.url}/aperture/ticker/MSFT", "-q", env=env).returncode == 0
    listed = json.loads(httpay_cmd("tokens", "list", "--json", env=env).stdout)["tokens"]
    assert [t["scope"] for t in listed] == [demo.url + "#stock"] and listed[0]["payment_hash"]  # its service
    text = httpay_cmd("tokens", env=env)
    assert "Held credentials (1)" in text.stdout and "L402" not in text.stdout  # never the token itself
    with_token = httpay_cmd("tokens", "list", "--json", env=env).stdout
    assert "macaroon" not in with_token.lower() and ":" in with_token
    bad = httpay_cmd("tokens", "drop", env=env)
    assert bad.returncode == 2 and "SCOPE" in bad.stderr
    dropped = httpay_cmd("tokens", "drop", demo.url, env=env)
    assert dropped.returncode == 0 and "dropped 1 credential" in dropped.stdout
    assert json.loads(httpay_cmd("tokens", "list", "--json", env=env).stdout)["tokens"] == []
    again = httpay_cmd("get", f"{demo.url}/aperture/ticker/MSFT", "--json", env=env)
    assert json.loads(again.stdout)["paid"] is True  # forgotten: the next request pays again


def test_tags_group_the_ledger_and_the_export_hands_it_to_accounting(demo: RunningServer, env: dict[str, str],
                                                                      tmp_path: Path) -> None:
    import csv
    import io

    assert httpay_cmd("get", f"{demo.url}/mpp/ticker/MSFT", "-q", "--tag", "agent=research", "--tag", "task=T-17",
                      env=env).returncode == 0
    assert httpay_cmd("get", f"{demo.url}/mpp/ticker/AAPL", "-q", env={**env, "HTTPAY_TAGS": "agent=ops"}).returncode == 0
    research = json.loads(httpay_cmd("ledger", "--tag", "agent=research", "--json", env=env).stdout)
    assert [p["tags"] for p in research["payments"]] == [{"agent": "research", "task": "T-17"}]
    assert research["totals"]["count"] == 1
    lines = [json.loads(x) for x in httpay_cmd("ledger", "export", env=env).stdout.splitlines()]
    assert [x["id"] for x in lines] == [1, 2]  # oldest first
    first = lines[0]
    assert first["proof"] == "preimage verified" and first["dialect"] == "mpp" and first["usd"] is not None
    assert first["tags"] == {"agent": "research", "task": "T-17"} and first["amount_msat"] == 10_000
    assert all("preimage" not in k for k in first)  # the proof is said, never the preimage
    rows = list(csv.DictReader(io.StringIO(httpay_cmd("ledger", "export", "--format", "csv", "--tag", "agent=ops",
                                                      env=env).stdout)))
    assert [r["tags"] for r in rows] == ["agent=ops"] and rows[0]["status"] == "settled"
    bad = httpay_cmd("get", f"{demo.url}/mpp/ticker/MSFT", "--tag", "agent", env=env)
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr
    policy = tmp_path / "policy.toml"
    policy.write_text('[policy]\nusd_per_btc = 100000\n[policy.tag_limits."agent=research"]\nper_day_sat = 15\n')
    refused = httpay_cmd("get", f"{demo.url}/mpp/ticker/NVDA", "--policy", str(policy), "--tag", "agent=research",
                         env=env)
    assert refused.returncode == 3 and "agent=research" in refused.stderr, refused.stderr
    budget = httpay_cmd("budget", "--policy", str(policy), env=env)
    assert "tag agent=resear" in budget.stdout and "daily budget" in budget.stdout, budget.stdout


def test_without_a_wallet_a_body_from_stdin_is_sent(demo: RunningServer, tmp_path: Path) -> None:
    """No wallet configured: the request still goes out as given; `-d @-` read stdin once and the
    plain request used to read it again, empty (the server saw no body; --json @- said "not JSON")."""
    bare = {"HTTPAY_WALLET": "", "HTTPAY_LEDGER": str(tmp_path / "none.sqlite3")}
    p = httpay_cmd("post", f"{demo.url}/ln/wallets", "--json", "@-", env=bare, stdin='{"balance_sat": 3}')
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["balance_msat"] == 3_000
    q = httpay_cmd("post", f"{demo.url}/ln/wallets", "-d", "@-", "-H", "Content-Type: application/json", env=bare,
                   stdin='{"balance_sat": 4}')
    assert q.returncode == 0 and json.loads(q.stdout)["balance_msat"] == 4_000, q.stderr

