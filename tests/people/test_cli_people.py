"""The commands a person (or a script) uses to watch and steer an agent's spending, each run as a
subprocess against the real demo service: offers, get --dry-run/--ask, ledger, budget, wallet
balance, approvals, dashboard."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import httpay
from httpay.apps.approvals import ApprovalQueue
from httpay.apps.cli import main
from httpay.demo.runner import RunningServer
from httpay.ledger import Intent, SQLiteLedger
from tests.helpers import FakeService, FakeWallet

ROOT = Path(__file__).resolve().parents[2]


def env_for(extra: dict[str, str] | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HTTPAY_WALLET", "HTTPAY_DEMO", "HTTPAY_POLICY"))}
    return {**base, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "120", "NO_COLOR": "1", **(extra or {})}


def httpay_cmd(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "httpay.apps.cli", *args], capture_output=True, text=True,
                          env=env_for(env), timeout=timeout)


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "httpay.apps.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env_for(env))


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Ran]:
    """The same command in this process (for the many variations; each command also runs as a subprocess)."""

    def run(*args: str, env: dict[str, str] | None = None) -> Ran:
        with monkeypatch.context() as m:
            for k in [k for k in os.environ if k.startswith(("HTTPAY_WALLET", "HTTPAY_DEMO", "HTTPAY_POLICY"))]:
                m.delenv(k)
            for k, v in {"COLUMNS": "120", "NO_COLOR": "1", **(env or {})}.items():
                m.setenv(k, v)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(list(args))
                except SystemExit as exc:  # argparse's usage errors
                    code = int(exc.code or 0)
        return Ran(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture
def wallet_env(demo: RunningServer) -> dict[str, str]:
    made = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 1000}).json()
    return {"HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": demo.url, "HTTPAY_DEMO_KEY": made["key"]}


def credits(demo: RunningServer, auth: dict[str, str]) -> int:
    return int(httpx.get(f"{demo.url}/info", headers=auth).json()["credits"])


@pytest.mark.parametrize("command", [
    [], ["offers"], ["budget"], ["wallet"], ["wallet", "balance"], ["approvals"], ["approvals", "list"],
    ["approvals", "approve"], ["approvals", "deny"], ["dashboard"], ["get"], ["ledger"],
])
def test_every_command_has_help(command: list[str]) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0 and "usage: httpay" in out.getvalue()


def _commands() -> list[list[str]]:
    """Every command and action of `httpay`, as its words ("approvals approve"), from its parser."""
    import argparse

    from httpay.apps.cli import _parser

    found: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append([*words, name])
                    walk(sub, [*words, name])

    walk(_parser(), [])
    return found


# the words a command needs before a flag it does not take is read as one (a URL, an approval's number)
NEEDS = {"get": ["http://x"], "post": ["http://x"], "put": ["http://x"], "patch": ["http://x"], "delete": ["http://x"],
         "head": ["http://x"], "request": ["http://x"], "offers": ["http://x"], "approve": ["1"], "deny": ["1"]}


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_a_flag_a_command_does_not_take_shows_that_commands_usage(command: list[str], cli: Callable[..., Ran]) -> None:
    """`httpay budget --since 1d` printed the top-level `usage: httpay [-h] [-v] [--version] COMMAND ...`,
    which names none of budget's flags: the command that was given the flag says so, with its usage."""
    ran = cli(*command, *NEEDS.get(command[-1], []), "--no-such-flag=1d")
    usage = f"usage: httpay {' '.join(command)} "
    assert ran.returncode == 2 and ran.stderr.startswith(usage), ran.stderr
    said = "the following arguments are required: ACTION" if command == ["wallet"] else \
        "unrecognized arguments: --no-such-flag=1d"  # (wallet needs its action first: that is said, with its usage)
    assert f"httpay {' '.join(command)}: error: {said}" in ran.stderr, ran.stderr
    if command == ["budget"]:
        since = cli("budget", "--since", "1d")
        assert since.returncode == 2 and since.stderr.startswith("usage: httpay budget [-h]"), since.stderr


def test_offers_shows_the_table_and_json_and_pays_nothing(demo: RunningServer, account: dict[str, str],
                                                           wallet_env: dict[str, str], cli: Callable[..., Ran]) -> None:
    url = f"{demo.url}/ticker/MSFT"
    auth = f"Authorization: {account['Authorization']}"
    p = httpay_cmd("offers", url, "-H", auth)  # no wallet needed just to look
    assert p.returncode == 0, p.stderr
    for want in ("offer_c668e0c0", "1 Credit Package", "$0.01", "750 Credits Package", "credit_card",
                 "/l402/payment-request", "Nothing was paid"):
        assert want in p.stdout, want
    j = httpay_cmd("offers", url, "-H", auth, "--json", env=wallet_env)
    assert j.returncode == 0, j.stderr
    data = json.loads(j.stdout)
    assert data["status"] == 402 and data["payment_required"] and data["version"] == "0.2.2"
    assert next((o["offer_id"], o["price_msat"]) for o in data["offers"]) == ("offer_c668e0c0", 10_000)
    # the flow's own quote says what the policy (httpay's defaults here) would pay, before the ledger's budgets
    assert data["policy_would"] == {"pay": True, "offer_id": "offer_c668e0c0", "method": "lightning",
                                    "price_msat": 10_000, "dialect": "l402-v0.2",
                                    "text": "your policy would pay offer_c668e0c0 (l402-v0.2) by lightning for $0.01"}
    assert "your policy would refuse: the offers are priced in USD and no exchange rate" in p.stdout  # no wallet, no rate
    assert account["Authorization"].split()[1] not in p.stdout + j.stdout  # the context token is a bearer
    assert wallet_env["HTTPAY_DEMO_KEY"] not in j.stdout + j.stderr
    assert credits(demo, account) == 0
    keyed = httpay_cmd("offers", url + "?api_key=s3cret-in-the-url", "-H", auth, "--json", env=wallet_env)
    assert keyed.returncode == 0 and "s3cret-in-the-url" not in keyed.stdout + keyed.stderr  # JSON masks it too
    dry = cli("get", url + "?api_key=s3cret-in-the-url", "-H", auth, "--dry-run", "--json", env=wallet_env)
    assert "s3cret-in-the-url" not in dry.stdout + dry.stderr and json.loads(dry.stdout)["url"].startswith(url)
    free = cli("offers", f"{demo.url}/terms")
    # a URL that answers 200 is served: its body is shown, and the note says a credit may have been used
    assert free.returncode == 0 and "no payment asked" in free.stderr and "may have used a credit" in free.stderr
    assert "<title>Terms" in free.stdout


def test_get_dry_run_says_what_it_would_pay_and_pays_nothing(demo: RunningServer, account: dict[str, str],
                                                               wallet_env: dict[str, str], tmp_path: Path,
                                                               cli: Callable[..., Ran]) -> None:
    url = f"{demo.url}/ticker/MSFT"
    auth = f"Authorization: {account['Authorization']}"
    ledger = str(tmp_path / "l.sqlite3")
    p = httpay_cmd("get", url, "-H", auth, "--dry-run", "--budget-usd", "1", "--ledger", ledger, env=wallet_env)
    assert p.returncode == 0, p.stderr
    assert "offer_c668e0c0 ✔" in p.stdout
    assert ("would pay offer_c668e0c0 '1 Credit Package': $0.01 ≈ 10 sat ($0.01) + up to 10 sat ($0.01) in fees "
            "by lightning") in p.stdout  # what routing may add, as the quote and the approval say it
    assert "nothing was paid" in p.stdout
    j = cli("get", url, "-H", auth, "--dry-run", "--json", "--max-price-sat", "5", "--ledger", ledger, env=wallet_env)
    assert j.returncode == 3, j.stderr
    data = json.loads(j.stdout)
    assert data["would_pay"] is False and data["rule"] == "max_price" and "5 sat" in data["reason"]
    # the ledger's own windows are checked too: a daily budget already used up refuses
    with SQLiteLedger(ledger) as lg:
        lg.reserve(Intent(host="other.example", url="http://other.example/x", protocol="l402-v0.2", method="lightning",
                          amount_msat=20_000, payment_hash="ab" * 32))
    pol = tmp_path / "policy.toml"
    pol.write_text("per_day_usd = 0.025\nusd_per_btc = 100000\n")
    day = cli("get", url, "-H", auth, "--dry-run", "--json", "--policy", str(pol), "--ledger", ledger, env=wallet_env)
    assert json.loads(day.stdout)["rule"] == "per_day", day.stdout
    assert credits(demo, account) == 0
    bal = json.loads(cli("wallet", "balance", "--json", env=wallet_env).stdout)
    assert bal == {"wallet": "demo", "network": "regtest", "balance_msat": 1_000_000, "usd_per_btc": 100_000.0}
    with SQLiteLedger(ledger) as lg:
        assert len(lg.receipts()) == 1  # only the one written by this test


def test_a_dry_run_on_an_http_error_exits_as_the_request_would(demo: RunningServer, wallet_env: dict[str, str],
                                                                tmp_path: Path, cli: Callable[..., Ran]) -> None:
    """`get --dry-run` on a 404 or a 401 said "the service served the request and may have used a
    credit" and exited 0; `get` and `offers` exit 6 for the same URL, and so does the dry run now."""
    for url, said in ((f"{demo.url}/no/such/page", "HTTP 404 Not Found"), (f"{demo.url}/ticker/MSFT", "HTTP 401")):
        for env in ({}, wallet_env):
            dry = cli("get", url, "--dry-run", env=env)
            real = cli("get", url, "-q", "--ledger", str(tmp_path / "l.sqlite3"), env=env)
            assert dry.returncode == real.returncode == 6, (dry.stderr, real.stderr)
            assert f"the service answered {said}" in dry.stderr and "nothing would be paid" in dry.stderr
            assert "served the request" not in dry.stderr and "may have used a credit" not in dry.stderr
        j = cli("get", url, "--dry-run", "--json")
        assert j.returncode == 6 and json.loads(j.stdout)["ok"] is False
    served = cli("get", f"{demo.url}/terms", "--dry-run")
    assert served.returncode == 0 and "may have used a credit" in served.stderr


def test_wallet_balance_reads_the_wallet_from_the_environment(wallet_env: dict[str, str], cli: Callable[..., Ran]) -> None:
    p = httpay_cmd("wallet", "balance", env=wallet_env)
    assert p.returncode == 0 and "demo wallet on regtest: 1,000 sat ($1.00)" in p.stdout
    assert wallet_env["HTTPAY_DEMO_KEY"] not in p.stdout + p.stderr
    missing = cli("wallet", "balance")
    assert missing.returncode == 1 and "HTTPAY_WALLET" in missing.stderr and "Traceback" not in missing.stderr


def test_an_unreachable_wallet_is_a_network_failure_and_a_refusal_says_why_no_rate(
        demo: RunningServer, account: dict[str, str], tmp_path: Path, cli: Callable[..., Ran]) -> None:
    """A wallet nobody answers at is exit 5 (network), not 1 (a setting); and a USD budget that
    cannot be checked for want of the wallet's rate says the wallet could not be reached, not only
    that no rate is set."""
    gone = {"HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": "http://127.0.0.1:9", "HTTPAY_DEMO_KEY": "k" * 32}
    p = cli("wallet", "balance", env=gone)
    assert p.returncode == 5, p.stderr
    assert "cannot be reached" in p.stderr and "127.0.0.1:9" in p.stderr and "k" * 32 not in p.stderr
    got = cli("get", f"{demo.url}/ticker/MSFT", "-H", f"Authorization: {account['Authorization']}",
              "--budget-usd", "5", "--ledger", str(tmp_path / "l.sqlite3"), env=gone)
    assert got.returncode == 3, got.stderr
    assert "no BTC/USD rate is known (the wallet's rate could not be read: could not reach the demo wallet" in got.stderr
    assert "check that the wallet can be reached, or set --usd-per-btc" in got.stderr
    assert "k" * 32 not in got.stderr + got.stdout and credits(demo, account) == 0


def test_python_dash_m_httpay_is_the_command() -> None:
    p = subprocess.run([sys.executable, "-m", "httpay", "--version"], capture_output=True, text=True, env=env_for())
    assert p.returncode == 0 and p.stdout.startswith("httpay "), p.stderr


@pytest.fixture
def history(tmp_path: Path) -> str:
    """A ledger with payments at known times: two days ago (settled), an hour ago (failed), now (settled, pending)."""
    path = str(tmp_path / "history.sqlite3")
    now = datetime.now(UTC)
    with SQLiteLedger(path) as lg:
        def pay(host: str, msat: int, when: datetime, h: str) -> int:
            return lg.reserve(Intent(host=host, url=f"http://{host}/x", protocol="l402-v0.2", method="lightning",
                                     amount_msat=msat, payment_hash=h * 32, offer_id="offer_1", offer_title="1 Credit Package",
                                     offer_amount=1, offer_currency="USD"), now=when).id
        lg.settle(pay("a.example", 30_000, now - timedelta(days=2), "01"), preimage="ff" * 32, fee_msat=1_000)
        lg.fail(pay("b.example", 50_000, now - timedelta(hours=1), "02"), "InsufficientFunds: empty")
        lg.settle(pay("a.example", 10_000, now, "03"), preimage="ee" * 32)
        pay("b.example", 20_000, now, "04")
    return path


def test_ledger_filters_by_time_and_host_with_totals(history: str, cli: Callable[..., Ran]) -> None:
    everything = json.loads(httpay_cmd("ledger", "--ledger", history, "--json").stdout)
    assert len(everything["payments"]) == 4
    assert everything["totals"] == {"count": 4, "settled": 2, "pending": 1, "failed": 1, "settled_msat": 40_000,
                                    "pending_msat": 20_000, "fee_msat": 1_000, "committed_msat": 61_000}
    today = json.loads(cli("ledger", "--ledger", history, "--since", "1d", "--json").stdout)
    assert [p["id"] for p in today["payments"]] == [4, 3, 2] and today["spent_msat"] == 30_000
    recent_a = json.loads(cli("ledger", "--ledger", history, "--since", "30m", "--host", "a.example", "--json").stdout)
    assert [p["id"] for p in recent_a["payments"]] == [3] and recent_a["totals"]["settled_msat"] == 10_000
    iso = (datetime.now(UTC) - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
    assert len(json.loads(cli("ledger", "--ledger", history, "--since", iso, "--json").stdout)["payments"]) == 3
    text = httpay_cmd("ledger", "--ledger", history, "--since", "1d")
    assert text.returncode == 0
    assert "3 of 3 payment(s) shown" in text.stdout and "Settled 1 (10 sat" in text.stdout and "pending 1 (20 sat)" in text.stdout
    assert "#2: InsufficientFunds: empty" in text.stdout or "InsufficientFunds: empty" in text.stdout
    assert "ff" * 32 not in text.stdout + everything.__repr__()
    bad = cli("ledger", "--ledger", history, "--since", "yesterday-ish")
    assert bad.returncode == 2 and "argument --since" in bad.stderr and "Traceback" not in bad.stderr  # usage


def test_budget_shows_spent_against_each_limit(history: str, tmp_path: Path, cli: Callable[..., Ran]) -> None:
    pol = tmp_path / "policy.toml"
    pol.write_text("[policy]\nbudget_usd = 1\nper_day_usd = 0.05\nmax_per_payment_usd = 0.1\nusd_per_btc = 100000\n")
    p = httpay_cmd("budget", "--ledger", history, "--policy", str(pol))
    assert p.returncode == 0, p.stderr
    for want in ("total budget", "daily budget", "per payment", "61 sat ($0.061)", "1,000 sat ($1.00)", "30 sat ($0.03)",
                 "50 sat ($0.05)", "60%"):
        assert want in p.stdout, want
    data = json.loads(cli("budget", "--ledger", history, "--json", env={"HTTPAY_POLICY": str(pol)}).stdout)
    by = {b["name"]: b for b in data["limits"]}
    assert by["total budget"] == {"name": "total budget", "scope": "all hosts", "window": "all time",
                                  "limit_msat": 1_000_000, "spent_msat": 61_000, "left_msat": 939_000}
    assert by["daily budget"]["spent_msat"] == 30_000 and by["per payment"]["spent_msat"] is None
    none = cli("budget", "--ledger", history)  # no policy file: httpay's default limits, shown as such
    assert none.returncode == 0 and "default limits apply" in none.stdout
    for want in ("default per payment", "default hourly", "default daily", "1,000 sat", "10,000 sat", "50,000 sat"):
        assert want in none.stdout, want
    unlimited = tmp_path / "unlimited.toml"
    unlimited.write_text("default_limits = false\n")
    shown = cli("budget", "--ledger", history, "--policy", str(unlimited))
    assert shown.returncode == 0 and "unlimited" in shown.stdout
    usd_only = tmp_path / "usd.toml"
    usd_only.write_text("budget_usd = 1\n")
    norate = cli("budget", "--ledger", history, "--policy", str(usd_only))
    assert norate.returncode == 1 and "--usd-per-btc" in norate.stderr
    assert "1,000 sat ($1.00)" in cli("budget", "--ledger", history, "--policy", str(usd_only),
                                      "--usd-per-btc", "100000").stdout


def _wait_for_approval(ledger: str, proc: subprocess.Popen[str]) -> dict[str, object]:
    with ApprovalQueue(ledger) as q:
        for _ in range(600):
            waiting = q.pending()
            if waiting:
                return waiting[0].to_dict()
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
    raise AssertionError("no approval appeared")


def test_get_ask_waits_for_a_person_in_another_process(demo: RunningServer, account: dict[str, str],
                                                        wallet_env: dict[str, str], tmp_path: Path,
                                                        cli: Callable[..., Ran]) -> None:
    ledger = str(tmp_path / "ask.sqlite3")
    url = f"{demo.url}/ticker/MSFT"
    agent = spawn("get", url, "-H", f"Authorization: {account['Authorization']}", "--ask", "--budget-usd", "1",
                  "--ledger", ledger, env=wallet_env)
    try:
        waiting = _wait_for_approval(ledger, agent)
        assert waiting["offer_id"] == "offer_c668e0c0" and waiting["status"] == "waiting" and waiting["price_msat"] == 10_000
        listed = json.loads(httpay_cmd("approvals", "list", "--ledger", ledger, "--json").stdout)["approvals"]
        assert [a["id"] for a in listed] == [waiting["id"]]
        shown = cli("approvals", "--ledger", ledger)
        assert "1 Credit Package" in shown.stdout and f"httpay approvals approve {waiting['id']}" in shown.stdout
        yes = httpay_cmd("approvals", "approve", str(waiting["id"]), "--by", "alice", "--ledger", ledger)
        assert yes.returncode == 0 and "approved by alice" in yes.stdout
        out, err = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, err
    assert json.loads(out)["symbol"] == "MSFT" and "paid" in err
    again = cli("approvals", "approve", str(waiting["id"]), "--ledger", ledger)
    assert again.returncode == 1 and "already approved by alice" in again.stderr
    answered = json.loads(cli("approvals", "list", "--all", "--json", "--ledger", ledger).stdout)["approvals"]
    assert [(a["status"], a["decided_by"]) for a in answered] == [("approved", "alice")]


@pytest.mark.parametrize(("sig", "code", "says"), [(signal.SIGINT, None, "interrupted"),
                                                   (signal.SIGTERM, 143, "httpay: stopped by SIGTERM")],
                         ids=["ctrl-c", "sigterm"])
def test_stopping_get_ask_while_it_waits_denies_the_approval(demo: RunningServer, account: dict[str, str],
                                                           wallet_env: dict[str, str], tmp_path: Path,
                                                           cli: Callable[..., Ran], sig: signal.Signals,
                                                           code: int | None, says: str) -> None:
    """A person who stops the waiting command (Ctrl-C), or `timeout`, systemd or a host stopping it
    (SIGTERM), leaves no approval waiting: it is denied at once, since approving it later would
    answer a request that no longer exists (it used to say "pay ..." for nothing)."""
    ledger = str(tmp_path / "stopped.sqlite3")
    agent = spawn("get", f"{demo.url}/ticker/MSFT", "-H", f"Authorization: {account['Authorization']}", "--ask",
                  "--budget-usd", "1", "--ledger", ledger, env=wallet_env)
    try:
        waiting = _wait_for_approval(ledger, agent)
        agent.send_signal(sig)
        _, err = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode != 0 and (code is None or agent.returncode == code), err
    assert "Traceback" not in err and says in err, err
    with ApprovalQueue(ledger) as q:
        a = q.get(waiting["id"])
        assert (a.status, a.decided_by) == ("denied", "abandoned") and q.pending() == [] and q.unanswerable() == []
    late = cli("approvals", "approve", str(waiting["id"]), "--ledger", ledger)
    assert late.returncode == 3 and "is closed" in late.stderr and "nothing will be paid" in late.stderr
    assert "pay offer" not in late.stdout
    assert json.loads(cli("ledger", "--ledger", ledger, "--json").stdout)["payments"] == []
    assert credits(demo, account) == 0


def test_get_ask_killed_leaves_an_abandoned_approval_that_cannot_be_approved(demo: RunningServer, account: dict[str, str],
                                                                             wallet_env: dict[str, str], tmp_path: Path,
                                                                             cli: Callable[..., Ran]) -> None:
    """kill -9 runs no code of the command's: its approval stops beating, and a few seconds later the
    list says abandoned and approving it is refused (exit 3, nothing will be paid), where it used to
    print "approved by ...: pay offer_..." and exit 0 for a request that no longer existed."""
    ledger = str(tmp_path / "killed.sqlite3")
    agent = spawn("get", f"{demo.url}/ticker/MSFT", "-H", f"Authorization: {account['Authorization']}", "--ask",
                  "--budget-usd", "1", "--ledger", ledger, env=wallet_env)
    try:
        waiting = _wait_for_approval(ledger, agent)
        agent.kill()
        agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
    with ApprovalQueue(ledger) as q:
        deadline = time.monotonic() + 30
        while q.pending() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert q.pending() == [] and [a.state for a in q.unanswerable()] == ["abandoned"]
    shown = cli("approvals", "--ledger", ledger)
    flat = " ".join(shown.stdout.split())
    assert shown.returncode == 0 and "abandoned" in flat and "nobody waits" in flat, shown.stdout
    assert f"no request waits for #{waiting['id']} (abandoned) any more: nothing will be paid" in flat
    assert "answer with" not in flat
    [listed] = json.loads(cli("approvals", "--json", "--ledger", ledger).stdout)["approvals"]
    assert (listed["state"], listed["answerable"]) == ("abandoned", False) and listed["deadline_at"] and listed["heartbeat_at"]
    yes = httpay_cmd("approvals", "approve", str(waiting["id"]), "--ledger", ledger)
    assert yes.returncode == 3 and "pay offer" not in yes.stdout, yes
    assert f"approval #{waiting['id']} is abandoned" in yes.stderr and "nothing will be paid" in yes.stderr, yes.stderr
    as_json = json.loads(cli("approvals", "--json", "approve", str(waiting["id"]), "--ledger", ledger).stdout)
    assert as_json["ok"] is False and "is closed" in as_json["message"] and as_json["exit_code"] == 3
    assert cli("approvals", "--ledger", ledger).stdout.count("abandoned") == 0  # closed: no longer listed
    assert json.loads(cli("ledger", "--ledger", ledger, "--json").stdout)["payments"] == []
    assert credits(demo, account) == 0


def test_ctrl_c_while_the_wallet_pays_says_what_to_look_up(demo: RunningServer, account: dict[str, str],
                                                          tmp_path: Path) -> None:
    """Interrupted while the wallet is being called: the payment is written pending and may have gone
    out, so the command says which row and what to run (it used to end with no word at all)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse as Json
    from starlette.routing import Route

    from httpay.demo.runner import serve_in_thread

    node = httpx.get(f"{demo.url}/ln/node").json()

    async def info(request: Any) -> Any:
        return Json(node)

    async def hang(request: Any) -> Any:
        import asyncio

        await asyncio.sleep(2)  # long past the interrupt; short, so the server stops soon after
        return Json({})

    slow = Starlette(routes=[Route("/ln/node", info), Route("/ln/pay", hang, methods=["POST"])])
    ledger = str(tmp_path / "interrupted-pay.sqlite3")
    with serve_in_thread(slow) as wallet_url:
        agent = spawn("get", f"{demo.url}/ticker/MSFT", "-H", f"Authorization: {account['Authorization']}",
                      "--ledger", ledger, env={"HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": wallet_url.url,
                                               "HTTPAY_DEMO_KEY": "k" * 32})
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if os.path.exists(ledger) and SQLiteLedger(ledger).pending():
                    break
                time.sleep(0.05)
            time.sleep(0.2)  # the wallet call is under way
            agent.send_signal(signal.SIGINT)
            _, err = agent.communicate(timeout=30)
        finally:
            if agent.poll() is None:
                agent.kill()
    assert agent.returncode == 130 and "Traceback" not in err, err
    assert "interrupted while paying: ledger #1 is pending" in err and "httpay ledger reconcile" in err, err


def test_get_ask_denied_pays_nothing(demo: RunningServer, account: dict[str, str], wallet_env: dict[str, str],
                                     tmp_path: Path, cli: Callable[..., Ran]) -> None:
    ledger = str(tmp_path / "deny.sqlite3")
    agent = spawn("get", f"{demo.url}/ticker/MSFT", "-H", f"Authorization: {account['Authorization']}", "--ask",
                  "--budget-usd", "1", "--ledger", ledger, env=wallet_env)
    try:
        waiting = _wait_for_approval(ledger, agent)
        no = httpay_cmd("approvals", "--json", "deny", str(waiting["id"]), "--reason", "too pricey", "--ledger", ledger)
        assert no.returncode == 0 and json.loads(no.stdout)["status"] == "denied"
        _, err = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 3 and "refused by the approver" in err
    assert json.loads(cli("ledger", "--ledger", ledger, "--json").stdout)["payments"] == []
    assert credits(demo, account) == 0
    unknown = cli("approvals", "deny", "99", "--ledger", ledger)
    assert unknown.returncode == 1 and "no approval #99" in unknown.stderr


def test_dashboard_command_prints_a_token_url(history: str, cli: Callable[..., Ran]) -> None:
    proc = spawn("dashboard", "--ledger", history, "--port", "0")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        died = proc.stderr.read() if proc.stderr is not None and proc.poll() is not None else ""
        assert line.startswith("httpay dashboard: http://127.0.0.1:"), line + died
        page_url = line.split(": ", 1)[1].strip()
        base = page_url.split("/?")[0]
        for _ in range(100):
            try:
                r = httpx.get(page_url)
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        assert r.status_code == 200 and "b.example" in r.text and "ee" * 32 not in r.text
        assert httpx.get(base + "/").status_code == 403
        assert httpx.get(base + "/?token=nope").status_code == 403
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    refused = cli("dashboard", "--ledger", history, "--host", "0.0.0.0")
    assert refused.returncode == 2 and "loopback" in refused.stderr


def test_version_prints_the_version_and_exits_0() -> None:
    import httpay
    from httpay.apps.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and out.getvalue().strip() == f"httpay {httpay.__version__}"



def test_ledger_pages_back_by_id_and_names_the_next_page(history: str, cli: Callable[..., Ran]) -> None:
    first = json.loads(cli("ledger", "--ledger", history, "--limit", "2", "--json").stdout)
    assert [p["id"] for p in first["payments"]] == [4, 3] and first["next_before"] == 3
    assert first["totals"]["count"] == 4  # totals are of everything, not of the page
    second = json.loads(cli("ledger", "--ledger", history, "--limit", "2", "--before", "3", "--json").stdout)
    assert [p["id"] for p in second["payments"]] == [2, 1] and second["next_before"] is None
    text = cli("ledger", "--ledger", history, "--limit", "2")
    assert "older payments: httpay ledger --before 3 --limit 2" in text.stdout
    bad = httpay_cmd("ledger", "--ledger", history, "--before", "x")
    assert bad.returncode == 2 and "--before: must be a whole number" in bad.stderr and "Traceback" not in bad.stderr


def test_the_dashboard_pages_its_ledger_and_counts_every_payment(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from httpay.apps.dashboard import PAGE, create_app

    path = tmp_path / "many.sqlite3"
    with SQLiteLedger(path) as lg:
        for i in range(PAGE + 5):
            r = lg.reserve(Intent(host="a.example", url=f"http://a.example/{i}", protocol="l402-v0.2",
                                  method="lightning", amount_msat=1_000, payment_hash=f"{i:064x}"))
            lg.settle(r.id, preimage="00" * 32)
    app = create_app(ledger=str(path), token="t0ken")
    with TestClient(app) as web:
        home = web.get("/?token=t0ken").text
        assert f"<b>{PAGE + 5}</b><span>settled</span>" in home  # counted in SQL, all of them
        assert "id='older'" in home and f"before={6}" in home
        older = web.get("/?token=t0ken&before=6").text
        assert "Payments before #6" in older and "id='newest'" in older and "id='older'" not in older
        state = web.get("/api/state?token=t0ken&before=6").json()
        assert "Payments before #6" in state["sections"]["ledger"]["html"]
        assert "Recent payments" in web.get("/?token=t0ken&before=nonsense").text


def test_a_fresh_machine_shows_its_budget_and_an_empty_ledger(tmp_path: Path, cli: Callable[..., Ran]) -> None:
    """Before anything paid, `httpay budget` and `httpay ledger` show the default limits and no
    payments (they failed: 'no ledger at ... (from the default path)'), and create no ledger; a
    path a person names must still exist, and a folder is said to be one."""
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"), "HTTPAY_LEDGER": ""}
    budget = cli("budget", env=env)
    assert budget.returncode == 0, budget.stderr
    flat = " ".join(budget.stdout.split())
    assert "not made yet: nothing has paid on this machine" in flat and "default hourly" in flat
    ledger = cli("ledger", env=env)
    assert ledger.returncode == 0 and "no payments recorded" in ledger.stdout, ledger.stderr
    assert not (tmp_path / "data").exists()
    named = cli("ledger", "--ledger", str(tmp_path / "typo.sqlite3"), env=env)
    assert named.returncode == 1 and "does not exist" in named.stderr
    folder = cli("budget", "--ledger", str(tmp_path), env=env)
    assert folder.returncode == 1 and "is a folder, not a ledger file" in folder.stderr


def test_a_fresh_machine_asks_a_person_and_every_overseer_command_starts(
        demo: RunningServer, account: dict[str, str], wallet_env: dict[str, str], tmp_path: Path,
        cli: Callable[..., Ran], monkeypatch: pytest.MonkeyPatch) -> None:
    """Before anything paid (no data folder yet), the first `get --ask` asks (it failed: "cannot open
    the approval queue ... the folder does not exist"), and so does `httpay mcp --ask`; `approvals`,
    `tokens list` and `ledger export` show nothing (they failed: "no ledger"), made nowhere."""
    from httpay.apps.agent.mcp_server import toolbox_from_env

    data = tmp_path / "data"
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(data), "HTTPAY_LEDGER": ""}
    for command in (["approvals"], ["approvals", "--json"], ["tokens", "list"], ["ledger", "export"]):
        ran = cli(*command, env=env)
        assert ran.returncode == 0, (command, ran.stderr)
        assert "no ledger" not in ran.stderr and not data.exists(), command
    flat = " ".join(cli("approvals", env=env).stdout.split())
    assert "not made yet: nothing has paid on this machine" in flat and "nothing waiting for approval" in flat
    asked = cli("get", f"{demo.url}/ticker/MSFT", "-H", f"Authorization: {account['Authorization']}", "--ask",
                "--approval-timeout", "0.5", "-q", env={**env, **wallet_env})
    assert asked.returncode == 3 and "nobody answered approval #1" in asked.stderr, asked.stderr
    assert (data / "httpay" / "ledger.sqlite3").is_file() and credits(demo, account) == 0
    mcp_data = tmp_path / "mcp-data"
    monkeypatch.delenv("HTTPAY_LEDGER", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(mcp_data))
    box = toolbox_from_env({**wallet_env}, ask=True, approval_timeout=5)
    try:
        assert (mcp_data / "httpay" / "ledger.sqlite3").is_file()
    finally:
        box.close()
    named = cli("get", f"{demo.url}/ticker/MSFT", "--ask", "--approvals", str(tmp_path / "no" / "q.sqlite3"),
                env={**env, **wallet_env})
    assert named.returncode == 1 and "does not exist" in named.stderr  # a place a person names is never made


def test_the_dashboard_on_a_fresh_machine_makes_the_default_ledger(tmp_path: Path) -> None:
    """`httpay dashboard` before anything paid starts (it exited 1: "no ledger"), on the default
    ledger it makes, so the first approval an agent asks for shows on it."""
    data = tmp_path / "data"
    proc = spawn("dashboard", "--port", "0", env={"HOME": str(tmp_path), "XDG_DATA_HOME": str(data), "HTTPAY_LEDGER": ""})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("httpay dashboard: http://127.0.0.1:"), proc.stderr.read() if proc.stderr else line
        assert (data / "httpay" / "ledger.sqlite3").is_file()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert "no ledger yet at" in err and "made it empty" in err


def test_a_person_writes_off_a_pending_payment_they_checked(history: str, cli: Callable[..., Ran]) -> None:
    """A pending row (an x402 signature the service answered with 402, say) counts in every budget
    until someone knows better: `ledger write-off` fails it with the person's words; a settled one
    is never written off, and the command needs both the row and the reason."""
    with SQLiteLedger(history) as lg:
        [pending] = lg.pending()
        before = lg.spent_msat()
    young = cli("ledger", "write-off", "--id", str(pending.id), "--reason", "no transfer on chain by its expiry",
                "--ledger", history, "--wallet-checked")  # made just now: a live process may still be paying it
    assert young.returncode == 4 and "is not written off" in young.stderr and "--grace" in young.stderr
    unasked = cli("ledger", "write-off", "--id", str(pending.id), "--reason", "no transfer on chain by its expiry",
                  "--ledger", history, "--grace", "0")  # a Lightning row, and no wallet configured to ask
    assert unasked.returncode == 3 and "only the wallet that made it (not recorded) can say" in unasked.stderr
    assert "can say whether it went out" in unasked.stderr and "--wallet-checked" in unasked.stderr, unasked.stderr
    done = cli("ledger", "write-off", "--id", str(pending.id), "--reason", "no transfer on chain by its expiry",
               "--ledger", history, "--grace", "0", "--wallet-checked")
    assert done.returncode == 0 and f"ledger #{pending.id} written off (failed)" in done.stdout, done.stderr
    with SQLiteLedger(history) as lg:
        row = lg.get(pending.id)
        assert row.status.value == "failed" and "written off by a person: no transfer on chain" in (row.reason or "")
        assert lg.spent_msat() == before - pending.amount_msat
        settled = next(r for r in lg.receipts() if r.status.value == "settled")
    again = cli("ledger", "write-off", "--id", str(settled.id), "--reason", "x", "--ledger", history)
    assert again.returncode == 2 and "is settled, not pending" in again.stderr
    bare = cli("ledger", "write-off", "--ledger", history)
    assert bare.returncode == 2 and "needs --id ID and --reason TEXT" in bare.stderr


def test_an_id_or_a_count_too_large_is_called_one_and_a_missing_row_is_a_usage_error(
        history: str, cli: Callable[..., Ran]) -> None:
    """`ledger write-off --id`, `ledger --limit` and `--before` past any number said "is larger than
    any real amount", and a write-off of a row that does not exist exited 1 where one not pending
    exits 2: the same mistake (a flag naming no row it can write off), the same code, 2 (usage)."""
    huge = "9" * 23
    for args, says in ((["ledger", "write-off", "--id", huge, "--reason", "x"], "argument --id: is larger than any ledger ID"),
                       (["ledger", "--limit", huge], "argument --limit: is larger than any count of payments"),
                       (["ledger", "--before", huge], "argument --before: is larger than any ledger ID"),
                       (["approvals", "approve", huge], "argument id: is larger than any approval number"),
                       (["ledger", "--grace", "1e300"], "argument --grace: is larger than any sensible number of seconds"),
                       (["demo-server", "--port", "70000"], "argument --port: is larger than any port (at most 65535)")):
        ran = cli(*args, "--ledger", history) if args[0] == "ledger" else cli(*args)
        assert ran.returncode == 2 and says in ran.stderr and "amount" not in ran.stderr, (args, ran.stderr)
    with SQLiteLedger(history) as lg:
        missing = max(r.id for r in lg.receipts()) + 1
    for row in (missing, 2**63 - 1):
        gone = cli("ledger", "write-off", "--id", str(row), "--reason", "x", "--ledger", history)
        assert gone.returncode == 2 and f"ledger #{row} does not exist" in gone.stderr, gone.stderr
        assert "`httpay ledger` shows the payments" in gone.stderr


MONEY_LEFT = [
    ("paid, then the retry failed", lambda: httpay.PaidRequestFailed("paid 10 sat, ledger #1; the service did not answer",
                                                                       receipt=None)),
    ("paid, still a 402", lambda: httpay.PaymentNotHonored("paid 10 sat but the service still answers 402", receipt=None,
                                                           response=None)),
    ("outcome unknown", lambda: httpay.PaymentOutcomeUnknown("the wallet did not say", receipt=None)),
    ("the call was paid already", lambda: httpay.CallAlreadyPaid("already paid", receipt=None, response=None)),
]


@pytest.mark.parametrize("make", [m for _, m in MONEY_LEFT], ids=[n for n, _ in MONEY_LEFT])
def test_every_failure_after_money_may_have_left_exits_4_not_as_a_setting_error(make: Callable[[], Exception]) -> None:
    """A script reading the exit code must never take money that left for a configuration error (1)."""
    from httpay.apps.cli import failure
    from httpay.apps.exit_codes import EXIT_PAYMENT

    code, line = failure(make())
    assert code == EXIT_PAYMENT and "httpay ledger" in line, (code, line)


def test_httpay_mcp_names_httpay_headers_when_a_header_in_it_cannot_be_sent(tmp_path: Path,
                                                                            cli: Callable[..., Ran]) -> None:
    """A header value httpay cannot send, set in HTTPAY_HEADERS, is named as that variable's (it read
    "Toolbox(headers=...)", a Python argument the person running `httpay mcp` never wrote); the value is never shown."""
    env = {"HTTPAY_BASE_URL": "https://stock.example", "HTTPAY_LEDGER": str(tmp_path / "l.sqlite3"),
           "HTTPAY_HEADERS": '{"Authorization": "Bearer s3cr\u00e9t-token"}'}
    ran = cli("mcp", env=env)
    assert ran.returncode == 1 and "HTTPAY_HEADERS: header 'Authorization' is not ASCII text" in ran.stderr, ran.stderr
    assert "Toolbox(" not in ran.stderr and "s3cr" not in ran.stderr + ran.stdout


def test_every_command_reading_the_policy_file_refuses_a_typo_in_its_client_table(
        demo: RunningServer, account: dict[str, str], wallet_env: dict[str, str], tmp_path: Path,
        cli: Callable[..., Ran]) -> None:
    """`[client] payment_dedline = 5` was accepted by `get --dry-run`, `budget`, `offers` and the
    dashboard, then refused by the real `get`: a dry run said all was well. Every command says it now."""
    policy = tmp_path / "policy.toml"
    policy.write_text("[policy]\nbudget_usd = 1\n[client]\npayment_dedline = 5\n")
    ledger = str(tmp_path / "l.sqlite3")
    SQLiteLedger(ledger).close()
    url, auth = f"{demo.url}/ticker/MSFT", f"Authorization: {account['Authorization']}"
    commands = (["get", url, "-H", auth, "--policy", str(policy), "--ledger", ledger],
                ["get", url, "-H", auth, "--dry-run", "--policy", str(policy), "--ledger", ledger],
                ["offers", url, "-H", auth, "--policy", str(policy)],
                ["budget", "--policy", str(policy), "--ledger", ledger],
                ["dashboard", "--port", "0", "--policy", str(policy), "--ledger", ledger])
    for command in commands:
        ran = cli(*command, env=wallet_env)
        assert ran.returncode == 1, (command, ran.stdout, ran.stderr)
        assert "unknown setting(s) in [client]: payment_dedline; known: payment_deadline" in ran.stderr, command
    ran = cli("mcp", env={**wallet_env, "HTTPAY_POLICY": str(policy), "HTTPAY_LEDGER": ledger})
    assert ran.returncode == 1 and "payment_dedline" in ran.stderr, ran.stderr
    assert credits(demo, account) == 0


def test_ledger_host_takes_a_host_with_or_without_its_port_or_a_url(tmp_path: Path, cli: Callable[..., Ran]) -> None:
    """`httpay ledger --host 127.0.0.1` (the rows say 127.0.0.1:8402) or a full URL showed nothing and
    "committed: 0 sat"; a host now stands for its every port, a URL for its host and port, `export` alike."""
    path = str(tmp_path / "l.sqlite3")
    with SQLiteLedger(path) as lg:
        for n, host in enumerate(("127.0.0.1:8402", "127.0.0.1:9000", "api.example.com", "api.example.com:8443")):
            lg.reserve(Intent(host=host, url=f"http://{host}/x", protocol="l402-v0.2", method="lightning",
                              amount_msat=1000 * (n + 1), payment_hash=f"{n:064x}"))
    def shown(*given: str) -> tuple[list[str], int]:
        ran = cli("ledger", "--json", "--ledger", path, *given)
        assert ran.returncode == 0, ran.stderr
        data = json.loads(ran.stdout)
        return sorted(p["host"] for p in data["payments"]), data["spent_msat"]
    assert shown("--host", "127.0.0.1") == (["127.0.0.1:8402", "127.0.0.1:9000"], 3000)
    assert shown("--host", "127.0.0.1:9000") == (["127.0.0.1:9000"], 2000)
    assert shown("--host", "http://127.0.0.1:8402/ticker/MSFT?x=1") == (["127.0.0.1:8402"], 1000)
    assert shown("--host", "https://API.example.com/v1") == (["api.example.com"], 3000)  # its scheme's port only
    assert shown("--host", "api.example.com") == (["api.example.com", "api.example.com:8443"], 7000)
    table = cli("ledger", "--ledger", path, "--host", "127.0.0.1")
    assert "2 of 2 payment(s) shown to 127.0.0.1 (every port)" in " ".join(table.stdout.split())
    none = cli("ledger", "--ledger", path, "--host", "localhost")
    assert none.returncode == 0 and "no payment to localhost (every port) is recorded" in none.stderr
    export = cli("ledger", "export", "--ledger", path, "--host", "127.0.0.1")
    assert [json.loads(line)["host"] for line in export.stdout.splitlines()] == ["127.0.0.1:8402", "127.0.0.1:9000"]
    bad = cli("ledger", "--ledger", path, "--host", "not a host")
    assert bad.returncode == 2 and "is not a host: give api.example.com, 127.0.0.1:8402 or a URL" in bad.stderr


@pytest.mark.parametrize("columns", [80, 99, 100, 140])
def test_tokens_list_reads_whole_in_a_standard_terminal(tmp_path: Path, cli: Callable[..., Ran], columns: int) -> None:
    """At 80 columns `tokens list` cropped its "expires (UTC)" column mid-word and lost its right
    border: now the hash and times are shorter there, the scope folds, and every cell is whole."""
    path = str(tmp_path / "l.sqlite3")
    expires = datetime(2027, 3, 9, 17, 45, 30, tzinfo=UTC)
    long_scope = "https://api.a-rather-long-service-name.example.com:8443#premium-market-data"
    with SQLiteLedger(path) as lg:
        lg.save_token("http://127.0.0.1:8402#stock", "L402 mac:pre", payment_hash="ab" * 32, expires_at=expires)
        lg.save_token(long_scope, "L402 mac2:pre2", payment_hash="cd" * 32)
    ran = cli("tokens", "list", "--ledger", path, env={"COLUMNS": str(columns)})
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    table = [line.rstrip() for line in lines if line[:1] in "┏┃┡│└"]
    assert table and all(len(line) <= columns and line[-1] in "┓┃┩│┘" for line in table), ran.stdout
    assert "expires (UTC)" in ran.stdout and "2027-03-09 17:45" in ran.stdout and "never said" in ran.stdout
    assert "abababab" in ran.stdout and "L402" not in ran.stdout and "pre" not in ran.stdout.replace("premium", "")
    folded = "".join(line.split("│")[1].strip() for line in table if line.startswith("│"))
    assert long_scope in folded  # the whole scope, as `tokens drop SCOPE` takes it


def test_the_words_match_what_the_person_typed_and_what_happens(
        demo: RunningServer, account: dict[str, str], wallet_env: dict[str, str], tmp_path: Path,
        cli: Callable[..., Ran]) -> None:
    """Each word a newcomer met that said something else: the flag they typed, the exit code's word,
    a payment only asked for, a ':' eaten by masking, one name per dialect, and grammar."""
    url, auth = f"{demo.url}/ticker/MSFT", f"Authorization: {account['Authorization']}"
    ledger = ["--ledger", str(tmp_path / "l.sqlite3")]
    for flag in ("--max-cost-sat", "--max-price-sat"):  # the refusal names the flag typed, not its alias
        capped = cli("get", url, "-H", auth, flag, "5", "-q", *ledger, env=wallet_env)
        assert capped.returncode == 3 and f"raise {flag} to pay it" in capped.stderr, capped.stderr
    nothing = cli("get", url, "-H", auth, "-q", *ledger)  # no wallet: exit 6, which --help's table calls no refusal
    assert nothing.returncode == 6 and "httpay: cannot pay: " in nothing.stderr and "refused" not in nothing.stderr
    asked = cli("get", url, "-H", auth, "--ask", "--approval-timeout", "0.5", *ledger, env=wallet_env)
    assert asked.returncode == 3 and "· asking a person to approve: pay offer_c668e0c0" in asked.stderr
    assert "· paying:" not in asked.stderr, asked.stderr  # nobody approved: nothing is being paid
    masked = cli("get", f"{url}?api_key=SECRET", "-H", auth, "--max-cost-sat", "5", *ledger, env=wallet_env)
    assert f"· 402 from {url}?api_key=***: 3 offer(s) (l402-v0.2)" in masked.stderr and "SECRET" not in masked.stderr
    for command in (["offers", url, "-H", auth], ["get", url, "-H", auth, "--dry-run", *ledger]):
        shown = " ".join(cli(*command, env=wallet_env).stdout.split())
        assert f"{url} asks for payment (l402-v0.2)" in shown, (command, shown)
        assert "L402 v0.2.2" not in shown
    assert credits(demo, account) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["wallet", "open-demo", "--help"])
    assert "the the" not in " ".join(out.getvalue().split())
    one = cli("wallet", "balance", env={"HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": demo.url})
    assert "needs the environment variable HTTPAY_DEMO_KEY; set it (e.g. in your .env)" in one.stderr, one.stderr


def test_ledger_json_says_the_unit_of_the_offers_amount(history: str, cli: Callable[..., Ran]) -> None:
    """`ledger --json` gave offer_amount 1 and offer_currency USD for a $0.01 offer, the unit (cents) unsaid."""
    [payment, *_] = json.loads(cli("ledger", "--json", "--ledger", history).stdout)["payments"]
    assert (payment["offer_amount"], payment["offer_currency"]) == (1, "USD")
    assert (payment["offer_amount_unit"], payment["offer_price"]) == ("1/100 USD", "$0.01")


def test_approving_an_offer_over_a_limit_in_the_dashboard_says_it_will_be_refused(tmp_path: Path) -> None:
    """The dashboard answered "approved" for an offer its list marks "over a limit", and then the
    request refused it: the answer says so, in the command's words."""
    from starlette.testclient import TestClient

    from httpay.apps.approvals import Choice
    from httpay.apps.dashboard import create_app
    from tests.helpers import challenge_body, quote_of

    path = tmp_path / "l.sqlite3"
    SQLiteLedger(path).close()
    decision = quote_of(httpay_offers(challenge_body()), "https://stock.test/x", "stock.test", usd_per_btc=100_000)
    app = create_app(ledger=str(path), approvals=str(path), token="t0ken")
    with ApprovalQueue(path, timeout_s=60) as q, TestClient(app) as web:
        choices = [Choice("offer_c668e0c0", "1 Credit Package", "$0.01", True),
                   Choice("offer_97bf23f7", "120 Credits Package", "$1.00", False)]
        for _ in range(2):
            a = q.add(decision)
            q._run("UPDATE approvals SET choices = ? WHERE id = ?", (json.dumps([c.to_dict() for c in choices]), a.id))
        answer = web.post("/approvals/1/approve", data={"token": "t0ken", "offer_id": "offer_97bf23f7"},
                          headers={"accept": "application/json"}).json()
        assert answer["done"] == "approved-over-a-limit" and "was over a limit of the policy" in answer["note"]
        assert "refuses it if it still does not fit (nothing is paid then)" in answer["note"]
        page = web.post("/approvals/2/approve", data={"token": "t0ken", "offer_id": "offer_97bf23f7"}).text
        assert "Approved, but that offer was over a limit of the policy" in page


def httpay_offers(body: dict[str, Any]) -> Any:
    import httpay

    return httpay.PaymentOffers.from_dict(body)


# -- one approval queue for every command: --approvals, else HTTPAY_APPROVALS, else the ledger's file ------
# `httpay mcp --ask` asked in HTTPAY_APPROVALS's queue while `httpay approvals` and `httpay dashboard`
# read the ledger's: "nothing waiting for approval", and the agent's payment timed out.
def _waiting(queue: Path, timeout: float = 10.0) -> None:
    give_up = time.monotonic() + timeout
    while not ApprovalQueue(str(queue)).pending():
        assert time.monotonic() < give_up, "no approval was asked for"
        time.sleep(0.05)


def test_approvals_answers_the_queue_mcp_ask_waits_in(tmp_path: Path, cli: Callable[..., Ran]) -> None:
    from httpay.apps.agent.mcp_server import toolbox_from_env

    ledger, queue = tmp_path / "l.db", tmp_path / "queue.db"
    env = {"HTTPAY_LEDGER": str(ledger), "HTTPAY_APPROVALS": str(queue)}
    demo = {"HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": "http://127.0.0.1:9", "HTTPAY_DEMO_KEY": "k" * 32}
    box = toolbox_from_env({**env, **demo}, ask=True, approval_timeout=20)  # as `httpay mcp --ask` builds its queue
    approve = box.client.policy.approve
    box.close()
    assert isinstance(approve, ApprovalQueue) and approve.path == str(queue)
    svc = FakeService()
    paid: list[int] = []

    def agent() -> None:
        policy = httpay.Policy(usd_per_btc=100_000, approve=approve)
        with httpay.Client(wallet=FakeWallet(svc), ledger=ledger, policy=policy, transport=httpx.MockTransport(svc)) as c:
            paid.append(c.get("http://stock.example/ticker/MSFT").status_code)

    t = threading.Thread(target=agent)
    t.start()
    try:
        _waiting(queue)
        listed = cli("approvals", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        data = json.loads(listed.stdout)
        assert data["queue"] == str(queue) and [a["status"] for a in data["approvals"]] == ["waiting"]
        answered = cli("approvals", "approve", str(data["approvals"][0]["id"]), env=env)
        assert answered.returncode == 0, answered.stderr
    finally:
        t.join(30)
    assert paid == [200]
    flag = cli("approvals", "--json", "--approvals", str(tmp_path / "other.db"), env=env)  # the flag first
    assert flag.returncode == 1 and "no approval queue at" in flag.stderr and "(from --approvals)" in flag.stderr
    missing = cli("approvals", env={**env, "HTTPAY_APPROVALS": str(tmp_path / "typo.db")})
    assert missing.returncode == 1 and "(from HTTPAY_APPROVALS)" in missing.stderr


def test_get_ask_waits_in_httpay_approvals_queue(tmp_path: Path, demo: RunningServer, account: dict[str, str],
                                                 cli: Callable[..., Ran]) -> None:
    made = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 1000}).json()
    ledger, queue = tmp_path / "l.db", tmp_path / "queue.db"
    ApprovalQueue(str(queue)).close()
    env = {"HTTPAY_LEDGER": str(ledger), "HTTPAY_APPROVALS": str(queue), "HTTPAY_WALLET": "demo",
           "HTTPAY_DEMO_URL": demo.url, "HTTPAY_DEMO_KEY": made["key"]}
    asked = cli("get", f"{demo.url}/ticker/MSFT", "-H", f"Authorization: {account['Authorization']}", "--ask",
                "--approval-timeout", "0.5", "-q", env=env)
    assert asked.returncode == 3 and "nobody answered approval #1" in asked.stderr, asked.stderr
    assert [a.id for a in ApprovalQueue(str(queue)).recent(5)] == [1]


def test_the_dashboard_shows_the_queue_httpay_approvals_names(tmp_path: Path) -> None:
    ledger, queue = tmp_path / "l.db", tmp_path / "queue.db"
    svc = FakeService()
    approve = ApprovalQueue(str(queue), timeout_s=20)

    def agent() -> None:
        policy = httpay.Policy(usd_per_btc=100_000, approve=approve)
        with httpay.Client(wallet=FakeWallet(svc), ledger=ledger, policy=policy, transport=httpx.MockTransport(svc)) as c:
            with contextlib.suppress(httpay.PaymentRefused):  # denied once the page was read
                c.get("http://stock.example/ticker/MSFT")

    t = threading.Thread(target=agent)
    t.start()
    proc = spawn("dashboard", "--port", "0", env={"HTTPAY_LEDGER": str(ledger), "HTTPAY_APPROVALS": str(queue)})
    try:
        _waiting(queue)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("httpay dashboard: http://127.0.0.1:"), proc.stderr.read() if proc.stderr else line
        page = line.split(": ", 1)[1].strip()
        base, token = page.split("/?token=")
        state = httpx.get(f"{base}/api/state?token={token}").json()
        assert state["waiting"] == 1 and state["pending"][0]["offer_title"] == "1 Credit Package", state["pending"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
        ApprovalQueue(str(queue)).decide(1, False, "test")
        t.join(30)


# -- a demo wallet on the command line is told in the command line's words --------------------------

def test_a_wrong_demo_key_on_the_command_line_says_to_open_a_wallet_with_httpay(
        demo: RunningServer, account: dict[str, str], tmp_path: Path, cli: Callable[..., Ran]) -> None:
    """`HTTPAY_DEMO_KEY=wrongkey httpay get URL` said "create a new wallet with DemoWallet.create",
    Python advice to a person at a shell: now the command that opens one, on that service."""
    from httpay.config import DEMO_URL, wallet_from_env
    from httpay.wallets.demo import DemoWallet

    env = {"HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": demo.url, "HTTPAY_DEMO_KEY": "wrongkey",
           "HTTPAY_LEDGER": str(tmp_path / "l.db")}
    advice = f'open a wallet there with eval "$(httpay wallet open-demo {demo.url})"'
    paid = cli("get", f"{demo.url}/ticker/MSFT", "-H", f"Authorization: {account['Authorization']}", "-q", env=env)
    assert paid.returncode == 4 and "demo wallet key was rejected (401)" in paid.stderr, paid.stderr
    assert advice in paid.stderr and "DemoWallet.create" not in paid.stderr
    balance = cli("wallet", "balance", env=env)
    assert balance.returncode == 1 and advice in balance.stderr and "DemoWallet.create" not in balance.stderr
    with SQLiteLedger(tmp_path / "l.db") as lg:
        assert [r.status.value for r in lg.receipts()] == ["failed"]  # the wallet refused the key: nothing paid
    default = wallet_from_env({**env, "HTTPAY_DEMO_URL": DEMO_URL})  # the README's own: no URL to repeat
    assert isinstance(default, DemoWallet) and default.key_advice.endswith('with eval "$(httpay wallet open-demo)"')
    default.close()
    with DemoWallet(demo.url, "wrongkey") as w, pytest.raises(httpay.WalletError) as err:
        w.balance_msat()  # in Python, Python's advice
    assert "create a new wallet with DemoWallet.create" in str(err.value)


def test_open_demo_says_how_to_pay_with_it_only_when_its_settings_are_shown(demo: RunningServer) -> None:
    """`eval "$(httpay wallet open-demo)"`, as the README says, still printed `to pay with it: eval
    "$(httpay wallet open-demo URL)"`, telling the person to run again what they just ran (and open
    another wallet): the hint is for a terminal, where the settings are shown, not taken."""
    import pty

    taken = httpay_cmd("wallet", "open-demo", demo.url)  # stdout captured, as `eval "$(...)"` captures it
    assert taken.returncode == 0 and taken.stdout.startswith("export HTTPAY_WALLET=demo "), taken.stderr
    assert "opened demo wallet" in taken.stderr and "to pay with it" not in taken.stderr, taken.stderr
    screen, tty = pty.openpty()
    try:
        shown = subprocess.run([sys.executable, "-m", "httpay", "wallet", "open-demo", demo.url], stdout=tty,
                               stderr=subprocess.PIPE, text=True, env=env_for(), timeout=60, check=False)
    finally:
        os.close(tty)
        os.close(screen)
    assert shown.returncode == 0 and f'to pay with it: eval "$(httpay wallet open-demo {demo.url})"' in shown.stderr
