"""The `httpay` command as a person or an agent runs it: a subprocess against real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from httpay.demo.runner import RunningServer

ROOT = Path(__file__).resolve().parents[2]


def httpay_cmd(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "120", "NO_COLOR": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "httpay.apps.cli", *args], input=stdin if stdin is not None else "",
                          capture_output=True, text=True, env=full_env, timeout=timeout)


def test_demo_non_interactive_tells_the_whole_story(tmp_path: Path) -> None:
    ledger = tmp_path / "demo.sqlite3"
    p = httpay_cmd("demo", "--non-interactive", "--ledger", str(ledger))
    assert p.returncode == 0, p.stderr + p.stdout
    out = p.stdout
    steps = [
        "DEMO", "Local stock service started", "Sign up", "Query AAPL", "AAPL: price 248.05",
        "402 Payment Required", "offer_c668e0c0", "offer_97bf23f7", "offer_a896b13c",
        "The policy picks the cheapest lightning offer", "Payment details requested",
        "Invoice decoded and checked", "10 sat ≈ $0.0100", "regtest", "payee",
        "Paid with the demo wallet", "retrying the original request", "Served after payment: HTTP 200", "MSFT: price",
        "Ledger and budget", "settled", "budget left 4,990 sat ($4.99) of 5,000 sat ($5.00)",
    ]
    pos = 0
    for step in steps:
        found = out.find(step, pos)
        assert found >= 0, f"missing or out of order: {step!r}\n{out}"
        pos = found
    # the account id is a bearer token: never printed whole
    assert "Bearer" not in out
    listed = httpay_cmd("ledger", "--ledger", str(ledger), "--json")
    data = json.loads(listed.stdout)
    assert [p["status"] for p in data["payments"]] == ["settled"] and data["spent_msat"] == 10_000
    assert "preimage" not in listed.stdout


def test_demo_approve_yes_pays_and_no_pays_nothing(tmp_path: Path) -> None:
    yes = httpay_cmd("demo", "--approve", "--ledger", str(tmp_path / "yes.sqlite3"), stdin="y\n")
    assert yes.returncode == 0, yes.stderr
    assert "Pay $0.01 (10 sat ($0.01)) for '1 Credit Package'?" in yes.stdout
    assert "Served after payment: HTTP 200" in yes.stdout
    no = httpay_cmd("demo", "--approve", "--ledger", str(tmp_path / "no.sqlite3"), stdin="n\n")
    assert no.returncode == 3, no.stderr  # refused by a person: the documented refusal code, as `get --ask` says it
    assert "refused by the approver" in no.stdout and "Served after payment" not in no.stdout
    data = json.loads(httpay_cmd("ledger", "--ledger", str(tmp_path / "no.sqlite3"), "--json").stdout)
    assert data["payments"] == [] and data["spent_msat"] == 0


def test_a_demo_refusal_exits_3_and_names_the_demo_flag(tmp_path: Path) -> None:
    """The demo says a refusal once, with the flag that set the limit (not the library's knob), and
    ends with the refusal code every command uses."""
    p = httpay_cmd("demo", "--non-interactive", "--max-per-payment-usd", "0.001", "--ledger", str(tmp_path / "l.db"))
    assert p.returncode == 3, p.stderr + p.stdout
    said = " ".join(p.stdout.split())
    assert said.count("refused: the cheapest offer costs 10 sat") == 1, p.stdout
    assert "raise --max-per-payment-usd to pay it" in said and "raise Policy(" not in said


def test_approve_and_non_interactive_conflict() -> None:
    p = httpay_cmd("demo", "--approve", "--non-interactive")
    assert p.returncode == 2 and "not allowed with" in p.stderr


def test_get_pays_with_a_wallet_from_the_environment(demo: RunningServer, account: dict[str, str], tmp_path: Path) -> None:
    made = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 1000}).json()
    env = {"HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": demo.url, "HTTPAY_DEMO_KEY": made["key"]}
    ledger = str(tmp_path / "get.sqlite3")
    p = httpay_cmd("get", f"{demo.url}/ticker/MSFT", "-H", f"Authorization: {account['Authorization']}",
                   "--budget-usd", "1", "--ledger", ledger, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["symbol"] == "MSFT"
    assert "paid" in p.stderr and made["key"] not in p.stderr + p.stdout
    refused = httpay_cmd("get", f"{demo.url}/ticker/MSFT", "-H", f"Authorization: {account['Authorization']}",
                         "--budget-usd", "0.001", "--ledger", str(tmp_path / "other.sqlite3"), env=env)
    assert refused.returncode == 3 and "budget" in refused.stderr


def test_get_without_a_wallet_fetches_free_urls_and_names_the_variable_to_pay(demo: RunningServer,
                                                                             account: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HTTPAY_WALLET")}
    base = {**env, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "120"}
    free = subprocess.run([sys.executable, "-m", "httpay.apps.cli", "get", f"{demo.url}/terms"], capture_output=True,
                          text=True, env=base, timeout=60)
    assert free.returncode == 0 and "<title>Terms" in free.stdout and free.stderr == ""
    paywalled = [sys.executable, "-m", "httpay.apps.cli", "get", f"{demo.url}/ticker/MSFT", "-H",
                 f"Authorization: {account['Authorization']}"]
    p = subprocess.run(paywalled, capture_output=True, text=True, env=base, timeout=60)
    assert p.returncode == 6 and "HTTPAY_WALLET" in p.stderr and "Traceback" not in p.stderr  # nothing here pays it
    assert p.stderr.count("no wallet is configured") == 1
    p = httpay_cmd("get", "http://127.0.0.1:9/x", env={"HTTPAY_WALLET": "demo"})
    assert p.returncode == 1 and "HTTPAY_DEMO_URL" in p.stderr


def test_demo_over_classic_l402(tmp_path: Path) -> None:
    p = httpay_cmd("demo", "--protocol", "l402", "--non-interactive", "--ledger", str(tmp_path / "l402.sqlite3"))
    assert p.returncode == 0, p.stderr + p.stdout
    for step in ("classic L402 route", "LSAT, then L402", "payment hash", "services stock:0",
                 "classic L402, one invoice to pay for the macaroon", "Paid with the demo wallet",
                 "Served with `Authorization: L402 <macaroon>:<preimage>`: HTTP 200",
                 "AAPL with the same token: HTTP 200, no new payment", "tokens held"):
        assert step in p.stdout, step
    data = json.loads(httpay_cmd("ledger", "--ledger", str(tmp_path / "l402.sqlite3"), "--json").stdout)
    assert [(x["status"], x["protocol"]) for x in data["payments"]] == [("settled", "l402-classic")]


def test_demo_over_mpp(tmp_path: Path) -> None:
    """`httpay demo --protocol mpp`: a lightning charge, Aperture's three dialects in one 402 (one
    token bought, then reused), and a session whose unspent deposit comes back."""
    p = httpay_cmd("demo", "--protocol", "mpp", "--non-interactive", "--ledger", str(tmp_path / "mpp.sqlite3"),
                   env={"COLUMNS": "160"})
    assert p.returncode == 0, p.stderr + p.stdout
    for step in ("`WWW-Authenticate: Payment` challenge", "method=lightning, intent=charge",
                 "Served with `Authorization: Payment <challenge echo + preimage>`: HTTP 200",
                 "the service's Payment-Receipt is on ledger #1", "l402-classic, mpp",
                 "The quote picks l402-classic at the same price", "NVDA with the same token: HTTP 200, no new payment",
                 "session request for GOOGL: HTTP 200", "refund_status='succeeded'"):
        assert step in p.stdout, step
    data = json.loads(httpay_cmd("ledger", "--ledger", str(tmp_path / "mpp.sqlite3"), "--json").stdout)
    assert [(x["status"], x["protocol"]) for x in data["payments"]][::-1] == [
        ("settled", "mpp"), ("settled", "l402-classic"), ("settled", "mpp")]
    assert "service receipt" in data["payments"][-1]["reason"]


def crashed_twice(demo: RunningServer, ledger: Path) -> tuple[dict[str, Any], Any, Any]:
    """A crash left two payments of one demo wallet pending: 5 sat it paid, 7 sat it never saw.
    The wallet (its key in the dict), and the two rows."""
    import httpay
    from httpay.ledger import Intent, SQLiteLedger

    made = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 1000}).json()
    invoice = httpx.post(f"{demo.url}/ln/invoices", json={"amount_msat": 5000, "description": "x"}).json()
    me = httpay.DemoWallet(demo.url, made["key"]).identity
    with SQLiteLedger(ledger) as lg:
        paid = lg.reserve(Intent(host="h", url="u", protocol="l402-v0.2", method="lightning", amount_msat=5000,
                                 payment_hash=invoice["payment_hash"], wallet="demo", wallet_id=me))
        lost = lg.reserve(Intent(host="h", url="u", protocol="l402-v0.2", method="lightning", amount_msat=7000,
                                 payment_hash="ab" * 32, wallet="demo", wallet_id=me))
    httpay.DemoWallet(demo.url, made["key"]).pay_invoice(invoice["payment_request"])
    return made, paid, lost


def test_ledger_reconcile_settles_what_the_wallet_paid(demo: RunningServer, account: dict[str, str],
                                                       tmp_path: Path) -> None:

    ledger = tmp_path / "rec.sqlite3"
    made, paid, lost = crashed_twice(demo, ledger)
    env = {"HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": demo.url, "HTTPAY_DEMO_KEY": made["key"]}
    p = httpay_cmd("ledger", "reconcile", "--ledger", str(ledger), "--grace", "0", "--json", env=env)
    assert p.returncode == 0, p.stderr
    outcomes = {o["id"]: o["outcome"] for o in json.loads(p.stdout)}
    assert outcomes == {paid.id: "settled", lost.id: "failed"}
    assert made["key"] not in p.stdout + p.stderr
    again = httpay_cmd("ledger", "reconcile", "--ledger", str(ledger), env=env)
    assert again.returncode == 0 and "nothing to reconcile" in again.stdout


def test_ledger_reconcile_leaves_another_wallets_payment_pending_and_names_it(demo: RunningServer,
                                                                              tmp_path: Path) -> None:
    """Agent A paid with its wallet and crashed; agent B's wallet (same kind) never saw the payment.
    B's `httpay ledger reconcile` must not write it off: it stays pending, counted, and the command
    says which wallet can settle it (exit 5: something is still pending)."""
    import httpay
    from httpay.ledger import Intent, SQLiteLedger, Status

    a = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 1000}).json()
    b = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 1000}).json()
    invoice = httpx.post(f"{demo.url}/ln/invoices", json={"amount_msat": 5000, "description": "x"}).json()
    wallet_a = httpay.DemoWallet(demo.url, a["key"])
    ledger = tmp_path / "fleet.sqlite3"
    with SQLiteLedger(ledger) as lg:
        row = lg.reserve(Intent(host="h", url="u", protocol="l402-v0.2", method="lightning", amount_msat=5000,
                                payment_hash=invoice["payment_hash"], wallet="demo", wallet_id=wallet_a.identity,
                                max_fee_msat=1000))
    wallet_a.pay_invoice(invoice["payment_request"])  # ... and A is killed before it records the settle
    env_b = {"HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": demo.url, "HTTPAY_DEMO_KEY": b["key"]}
    p = httpay_cmd("ledger", "reconcile", "--ledger", str(ledger), "--grace", "0", env=env_b)
    assert p.returncode == 4, p.stderr  # a payment's outcome is not settled (exit 5 is the network)
    assert f"#{row.id} other_wallet" in p.stdout and wallet_a.identity in p.stdout
    assert "HTTPAY_WALLET" in p.stdout and "stays pending and counted" in p.stdout
    assert a["key"] not in p.stdout + p.stderr and b["key"] not in p.stdout + p.stderr
    with SQLiteLedger(ledger) as lg:
        assert lg.get(row.id).status is Status.PENDING and lg.spent_msat() == 6000
    env_a = {**env_b, "HTTPAY_DEMO_KEY": a["key"]}
    p = httpay_cmd("ledger", "reconcile", "--ledger", str(ledger), "--grace", "0", "--json", env=env_a)
    assert p.returncode == 0 and json.loads(p.stdout)[0]["outcome"] == "settled", p.stderr


def test_a_write_off_asks_the_wallet_first_and_never_fails_what_it_paid(demo: RunningServer,
                                                                         tmp_path: Path) -> None:
    """A person's word never overrules the wallet that made a payment: a pending row the wallet paid
    (a client killed between paying and writing it down) is settled and still counted, not written
    off, even when the wallet is reached at another address; one it never saw is failed on its word;
    another wallet's silence proves nothing, so the person must say they looked it up themselves."""
    from httpay.ledger import Intent, SQLiteLedger, Status

    ledger = tmp_path / "off.sqlite3"
    made, paid, lost = crashed_twice(demo, ledger)
    other = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 1000}).json()
    env = {"HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": demo.url, "HTTPAY_DEMO_KEY": made["key"]}

    def write_off(row: int, *extra: str, keys: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
        return httpay_cmd("ledger", "write-off", "--id", str(row), "--reason", "looked stuck", "--ledger",
                          str(ledger), *extra, env=keys)
    # the wallet that made it, reached at another address (another identity): its proof is proof all the same
    elsewhere = {**env, "HTTPAY_DEMO_URL": demo.url.replace("127.0.0.1", "localhost")}
    refused = write_off(paid.id, "--grace", "0", keys=elsewhere)
    assert refused.returncode == 4 and "was paid" in refused.stderr and "not written off" in refused.stderr
    young = write_off(lost.id)  # unknown to the wallet, but a live process may still be sending it
    assert young.returncode == 4 and "another process may still be sending it" in young.stderr
    unknown = write_off(lost.id, "--grace", "0")
    assert unknown.returncode == 0 and "on the wallet's word" in unknown.stdout
    with SQLiteLedger(ledger) as lg:
        third = lg.reserve(Intent(host="h", url="u", protocol="l402-v0.2", method="lightning", amount_msat=3000,
                                  payment_hash="cd" * 32, wallet="demo", wallet_id=paid.wallet_id))
    foreign = write_off(third.id, "--grace", "0", keys={**env, "HTTPAY_DEMO_KEY": other["key"]})
    assert foreign.returncode == 3 and "which holds no proof of it" in foreign.stderr  # its silence proves nothing
    assert "--wallet-checked" in foreign.stderr
    foreign = write_off(third.id, "--grace", "0", "--wallet-checked", keys={**env, "HTTPAY_DEMO_KEY": other["key"]})
    assert foreign.returncode == 0 and "written off (failed)" in foreign.stdout  # the person's word, asked for
    assert made["key"] not in refused.stdout + refused.stderr + foreign.stdout
    with SQLiteLedger(ledger) as lg:
        assert lg.get(paid.id).status is Status.SETTLED and lg.spent_msat() == 5000
        gone, theirs = lg.get(lost.id), lg.get(third.id)
        assert gone.status is theirs.status is Status.FAILED
        assert "the wallet has no record" in (gone.reason or "") and "written off by a person: looked stuck" in (
            gone.reason or ""), gone.reason  # the wallet's word and the person's, both kept
        assert "written off by a person: looked stuck" in (theirs.reason or "")


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    from httpay.ledger import Intent, SQLiteLedger

    ledger = tmp_path / "pipe.sqlite3"
    with SQLiteLedger(ledger) as lg:  # far more output than a pipe buffers
        for i in range(600):
            lg.reserve(Intent(host="h", url="u", protocol="l402-v0.2", method="lightning", amount_msat=1,
                              payment_hash=f"{i:064x}"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.run(f"'{sys.executable}' -m httpay.apps.cli ledger --json --limit 1000 --ledger '{ledger}' | head -c 1",
                       shell=True, capture_output=True, text=True, env=env, timeout=60)
    assert p.stdout == "{" and "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr
