"""Issue 10, the CLI and agent surfaces, a follow-up round, against hostile loopback services, sync and async:

- a person approves another offer from the command line (`httpay approvals approve ID --offer OFFER_ID`):
  the paying request decides again with every limit, so an offer over a limit is refused (said once),
  and an offer the service did not make is refused by the command;
- the payment deadline is a knob on every surface: `--payment-deadline`, `payment_deadline` in the
  policy file, `Toolbox(payment_deadline=...)` and `httpay mcp`, each validated where it enters.

Each case asserts what a person would check: wallet calls, ledger rows, spend with fees, the error's
type and text.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import httpay
from httpay.apps import display
from httpay.apps.approvals import Approval, ApprovalQueue, Choice
from httpay.core.flow import MAX_PRICE_EXTENSION
from httpay.errors import PaymentRefused
from httpay.ledger import SQLiteLedger, Status
from tests.helpers import NOTEBOOK_OFFERS
from tests.hostile.conftest import Ran
from tests.hostile.harness import CountingWallet, HostileService, _hang, release, run

ROOT = Path(__file__).resolve().parents[2]
RATE = 100_000.0  # USD per BTC: $0.01 = 10 sat
CHEAP, MID, BIG = "offer_c668e0c0", "offer_97bf23f7", "offer_a896b13c"  # $0.01, $1.00, $4.99


def httpay_cmd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`httpay ...` as a person types it in another terminal (a separate process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HTTPAY_", "LNBITS_", "LND_"))}
    env |= {"PYTHONPATH": str(ROOT / "src"), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "httpay.apps.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


class CliPerson:
    """Answers the first waiting approval with `httpay approvals approve ID --offer PICK` (then, when the
    command refuses, denies it so the paying request is not left waiting)."""

    def __init__(self, queue_path: Path, pick: str) -> None:
        self.queue_path, self.pick = queue_path, pick
        self.ran: list[subprocess.CompletedProcess[str]] = []
        self.error: Exception | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._answer()
        except Exception as exc:  # noqa: BLE001 - the test reports it (a thread's error is otherwise lost)
            self.error = exc

    def _answer(self) -> None:
        with ApprovalQueue(self.queue_path) as q:
            while not self.stop.wait(0.01):
                waiting = q.pending()
                if not waiting:
                    continue
                a = waiting[0]
                self.ran.append(httpay_cmd("approvals", "approve", str(a.id), "--offer", self.pick,
                                           "--approvals", str(self.queue_path), "--by", "alice"))
                if self.ran[-1].returncode != 0:
                    self.ran.append(httpay_cmd("approvals", "deny", str(a.id), "--approvals", str(self.queue_path)))
                return

    def done(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


@dataclass(frozen=True)
class Pick:
    name: str
    policy: dict[str, Any]
    pick: str
    rule: str | None              # None: the pick is paid
    text: str = ""                # in the paying side's refusal
    says: tuple[str, ...] = ()    # in the approve command's output
    code: int = 0                 # the approve command's exit code
    max_price_msat: int | None = None
    status: str = "approved"      # what the queue records
    chosen: str | None = field(default=None)


PICKS = [
    Pick("within every limit: the other offer is paid", {"budget_sat": 10_000}, MID, None,
         # what is approved is the offer chosen, at its own price (it read the one asked: '1 Credit Package' ($0.01))
         says=(f"approval #1 approved by alice: pay {MID} '120 Credits Package' ($1.00) for ",
               f"instead of {CHEAP} '1 Credit Package' ($0.01"), chosen=MID),
    Pick("over this request's price cap (max_price)", {"budget_sat": 10_000}, BIG, "max_price",
         "above this request's price cap of 50 sat ($0.05)", says=(f"{BIG} was over a limit of the policy",),
         max_price_msat=50_000, chosen=BIG),
    Pick("over the per-payment limit", {"max_per_payment_sat": 100}, MID, "max_per_payment",
         "per-payment limit of 100 sat ($0.10)", says=(f"{MID} was over a limit of the policy",), chosen=MID),
    Pick("an offer the service did not make", {"budget_sat": 10_000}, "offer_made_up", "approval",
         "refused by the approver", says=("ApprovalError", "approval #1 has no offer 'offer_made_up'", f"the service offered {CHEAP}"),
         code=1, status="denied"),
]


@pytest.mark.parametrize("case", PICKS, ids=lambda c: c.name)
def test_a_person_approves_another_offer_with_the_cli(case: Pick, svc: HostileService, wallet: CountingWallet,
                                                       ledger: Path, tmp_path: Path, mode: str) -> None:
    url = svc.v02("/v02", offers=NOTEBOOK_OFFERS)
    queue_path = tmp_path / "approvals.db"
    queue = ApprovalQueue(queue_path, timeout_s=60)
    person = CliPerson(queue_path, case.pick)
    policy = httpay.Policy(usd_per_btc=RATE, approve=queue if mode == "sync" else queue.aapprove, **case.policy)
    request = {"extensions": {MAX_PRICE_EXTENSION: case.max_price_msat}} if case.max_price_msat else None
    try:
        out = run(mode, url, wallet=wallet, ledger=ledger, policy=policy, request=request)
    finally:
        person.done()
    [a] = queue.recent()
    queue.close()
    assert person.ran, f"the person never answered: {person.error!r}"
    approve = person.ran[0]
    assert approve.returncode == case.code, approve.stderr
    assert "Traceback" not in approve.stdout + approve.stderr
    for want in case.says:
        assert want in approve.stdout + approve.stderr, (want, approve.stdout, approve.stderr)
    assert (a.status, a.chosen_offer_id) == (case.status, case.chosen)
    if case.rule is None:
        assert out.error is None and out.status == 200
        assert out.wallet_calls == 1 and [(r.status, r.offer_id) for r in out.receipts] == [(Status.SETTLED, case.pick)]
        assert out.spent_msat == 11_000  # the service's 10 sat invoice for it, and the 1 sat fee
        return
    assert isinstance(out.error, PaymentRefused), out.error
    assert out.error.rule == case.rule and case.text in str(out.error), str(out.error)
    assert out.wallet_calls == 0 and out.receipts == [] and out.spent_msat == 0
    assert svc.hits.get("/pay", 0) == 0  # not even an invoice was asked for


# -- the same, with the paying side the CLI too (`httpay get --ask`) ------------------------------------------


@pytest.mark.parametrize("case", PICKS, ids=lambda c: c.name)
def test_get_ask_then_approve_another_offer(case: Pick, cli: Callable[..., Ran], svc: HostileService,
                                            wallet: CountingWallet, ledger: Path, tmp_path: Path) -> None:
    url = svc.v02("/v02", offers=NOTEBOOK_OFFERS)
    queue_path = tmp_path / "approvals.db"
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text("\n".join(f"{k} = {v}" for k, v in case.policy.items()) + "\n")
    person = CliPerson(queue_path, case.pick)
    cap = ["--max-price-sat", str(case.max_price_msat // 1000)] if case.max_price_msat else []
    try:
        ran = cli("get", url, "--ask", "--approvals", str(queue_path), "--ledger", str(ledger), "--policy",
                  str(policy_file), "--usd-per-btc", str(RATE), *cap)
    finally:
        person.done()
    assert "Traceback" not in ran.out + ran.err
    assert person.ran, f"the person never answered: {person.error!r}; the command said {ran.err!r}"
    assert person.ran[0].returncode == case.code, person.ran[0].stderr
    with SQLiteLedger(ledger) as lg:
        receipts, spent = lg.receipts(), lg.spent_msat()
    if case.rule is None:
        assert ran.code == 0, ran.err
        assert wallet.paid == 1 and [(r.status, r.offer_id) for r in receipts] == [(Status.SETTLED, MID)]
        assert spent == 11_000 and "paid" in ran.err
        return
    assert ran.code == 3, ran.err
    assert ran.err.count("httpay: refused") == 1 and "Nothing was paid." in ran.err, ran.err
    assert ran.err.count(case.text) == 1, ran.err  # the refusal is printed once, not once more by a log line
    assert "WARNING" not in ran.err
    assert wallet.calls == [] and receipts == [] and spent == 0


def test_get_ask_with_nobody_answering_says_so_and_names_the_flag(svc: HostileService, wallet: CountingWallet,
                                                                   ledger: Path, tmp_path: Path,
                                                                   cli: Callable[..., Ran]) -> None:
    """No answer within --approval-timeout is a refusal saying nobody answered (not "refused by the
    approver": nobody refused), naming the flag that sets the wait; the approval is recorded denied."""
    url = svc.v02("/v02", offers=NOTEBOOK_OFFERS)
    queue_path = tmp_path / "approvals.db"
    ran = cli("get", url, "--ask", "--approvals", str(queue_path), "--ledger", str(ledger), "--approval-timeout",
              "0.2", "--usd-per-btc", str(RATE))
    assert ran.code == 3, ran.err
    assert "nobody answered approval #1 within 0.2 s" in ran.err and "raise --approval-timeout" in ran.err
    assert "refused by the approver" not in ran.err and ran.err.count("httpay: refused") == 1, ran.err
    with ApprovalQueue(queue_path) as q:
        assert (q.get(1).status, q.get(1).decided_by) == ("denied", "timeout")
    assert wallet.calls == []


def test_the_approvals_list_shows_the_offers_one_may_approve_instead(svc: HostileService, wallet: CountingWallet,
                                                                      ledger: Path, tmp_path: Path,
                                                                      cli: Callable[..., Ran]) -> None:
    url = svc.v02("/v02", offers=NOTEBOOK_OFFERS)
    queue_path = tmp_path / "approvals.db"
    queue = ApprovalQueue(queue_path, timeout_s=60)
    seen: list[Ran] = []

    def person() -> None:
        with ApprovalQueue(queue_path) as q:
            while not q.pending():
                threading.Event().wait(0.01)
            seen.append(cli("approvals", "--approvals", str(queue_path)))
            seen.append(cli("approvals", "--approvals", str(queue_path), "--json"))
            q.decide(q.pending()[0].id, False, "alice")

    t = threading.Thread(target=person, daemon=True)
    t.start()
    out = run("sync", url, wallet=wallet, ledger=ledger, policy=httpay.Policy(usd_per_btc=RATE, approve=queue,
                                                                              max_per_payment_sat=100))
    t.join(30)
    queue.close()
    assert isinstance(out.error, PaymentRefused) and out.wallet_calls == 0
    shown, as_json = seen
    assert shown.code == 0
    assert re.search(rf"or --offer {MID}: '120 Credits Package' +\$1\.00 \(over a limit\)", shown.out), shown.out
    assert re.search(rf"or --offer {BIG}: '750 Credits Package' +\$4\.99 \(over a limit\)", shown.out), shown.out
    assert f"or --offer {CHEAP}" not in shown.out  # the offer asked for is the approval's own row
    assert f"httpay approvals approve 1 --offer {MID}` approves another offer" in shown.out
    [a] = json.loads(as_json.out)["approvals"]
    assert [(c["offer_id"], c["fits"]) for c in a["choices"]] == [(CHEAP, True), (MID, False), (BIG, False)]


HOSTILE_TITLES = ["Premium [/x] plan", "[bold red]x", "ten sat\nFORGED second line", "ten \x1b[2J\x1b[31mred\x07",
                  "abc\u202egnp.exe", "A" * 2_000_000]


@pytest.mark.parametrize("title", HOSTILE_TITLES, ids=["closing tag", "style tag", "newline", "escapes", "bidi", "huge"])
def test_the_choices_in_approval_views_are_server_text_shown_harmless(title: str) -> None:
    from datetime import UTC, datetime

    choices = (Choice("o1", "asked", "$0.01", True), Choice(title, title, title, False), Choice("o3", title, "$1", True))
    a = Approval(id=1, status="waiting", created_at=datetime.now(UTC), decided_at=None, host="svc.example",
                 url="https://svc.example/x", offer_id="o1", offer_title="asked", offer_price="$0.01",
                 price_msat=10_000, method="lightning", usd_per_btc=None, decided_by=None, reason=None,
                 choices=choices, chosen_offer_id="o3")
    buf = io.StringIO()
    Console(file=buf, width=250, force_terminal=True, color_system="standard").print(display.approvals_table([a]))
    shown = buf.getvalue()
    assert "\x1b[2J" not in shown and "\x07" not in shown and "\u202e" not in shown and len(shown) < 20_000
    assert "\x1b[1;31mx" not in shown and "FORGED" not in shown.replace("\\nFORGED", "")
    plain_text = Console(record=True, width=250, file=io.StringIO())
    plain_text.print(display.approvals_table([a]))
    text = plain_text.export_text()
    assert "(chosen)" in text and "(over a limit)" in text
    assert clean_head(title) in text.replace("\n", "") or clean_head(title) in text
    html = display.html_approvals([a])
    assert "\x1b" not in html and "\u202e" not in html and len(html) < 20_000 and "(chosen)" in html
    assert html.count("httpay-choice") == 2  # one row per other offer, as in the terminal


def clean_head(title: str) -> str:
    from httpay.safe import clean

    return clean(title, 30)[:20]


def test_many_choices_are_counted_not_all_listed() -> None:
    from datetime import UTC, datetime

    choices = tuple(Choice(f"o{i}", f"t{i}", "$1", True) for i in range(200))
    a = Approval(id=1, status="waiting", created_at=datetime.now(UTC), decided_at=None, host="h",
                 url="https://h/x", offer_id="o0", offer_title="t0", offer_price="$1", price_msat=1, method="lightning",
                 usd_per_btc=None, decided_by=None, reason=None, choices=choices)
    c = Console(record=True, width=250, file=io.StringIO())
    c.print(display.approvals_table([a]))
    text = c.export_text()
    assert "or --offer o8: 't8'" in text and "o9" not in text
    assert f"… and {199 - display.MAX_CHOICES_SHOWN} more offers" in text
    html = display.html_approvals([a])
    assert "or --offer o8: &#x27;t8&#x27;" in html and "o9" not in html and f"… and {199 - display.MAX_CHOICES_SHOWN} more" in html


# -- the payment deadline, a knob on every surface ----------------------------------------------------------
def slow_pay(svc: HostileService) -> str:
    """A v0.2 service whose payment request endpoint says nothing (until `release(svc)`): only the payment
    deadline (the CLI's HTTP timeout is 30 s) ends the wait."""
    async def pay(request: Request) -> Response:
        await _hang(svc)
        return JSONResponse({"error": "too late"}, status_code=503)
    sat_offer = dict(NOTEBOOK_OFFERS[0], amount=10, currency="SAT")  # priced in sat: no rate needed
    return svc.v02("/slow", offers=[sat_offer], pr_path="/pay-slow", pr_handler=pay)


@dataclass(frozen=True)
class Deadline:
    name: str
    flag: tuple[str, ...]            # added to `httpay get`
    toml: str | None                 # the policy file, if any
    says: tuple[str, ...]


DEADLINES = [
    Deadline("--payment-deadline", ("--payment-deadline", "0.5"), None,
             ("payment deadline of 0.5 s", "raise --payment-deadline")),
    Deadline("[client] payment_deadline", (), "budget_sat = 1000\n[client]\npayment_deadline = 0.5\n",
             ("payment deadline of 0.5 s", "raise --payment-deadline SECONDS (or [client] payment_deadline in ")),
    Deadline("top-level payment_deadline", (), "payment_deadline = 0.5\nbudget_sat = 1000\n",
             ("payment deadline of 0.5 s",)),
    Deadline("top-level payment_deadline beside a [policy] table", (), "payment_deadline = 0.5\n[policy]\nbudget_sat = 1000\n",
             ("payment deadline of 0.5 s",)),
    Deadline("the flag beats the file", ("--payment-deadline", "0.5"), "[client]\npayment_deadline = 3600\n",
             ("payment deadline of 0.5 s", "raise --payment-deadline")),
]


@pytest.mark.parametrize("case", DEADLINES, ids=lambda c: c.name)
def test_the_cli_takes_the_payment_deadline_from_its_flag_or_the_policy_file(
        case: Deadline, cli: Callable[..., Ran], svc: HostileService, wallet: CountingWallet, ledger: Path,
        tmp_path: Path) -> None:
    url = slow_pay(svc)
    policy = []
    if case.toml is not None:
        (tmp_path / "policy.toml").write_text(case.toml)
        policy = ["--policy", str(tmp_path / "policy.toml")]
    try:
        ran = cli("get", url, "--ledger", str(ledger), *policy, *case.flag)
    finally:
        release(svc)
    assert ran.code == 5, ran.err  # timed out: the documented network code
    for want in case.says:
        assert want in ran.err, (want, ran.err)
    assert "nothing was paid" in ran.err and ran.err.count("httpay:") == 1 and "Traceback" not in ran.err
    assert wallet.calls == []
    with SQLiteLedger(ledger) as lg:
        assert lg.receipts() == [] and lg.spent_msat() == 0


@pytest.mark.parametrize("toml", ["[client]\npayment_deadline = 0.5\n", "payment_deadline = 0.5\nbudget_sat = 1000\n"])
def test_a_policy_files_deadline_drives_both_clients(toml: str, svc: HostileService, wallet: CountingWallet,
                                                      ledger: Path, tmp_path: Path, mode: str) -> None:
    from httpay.config import client_settings_from_toml, policy_from_toml

    f = tmp_path / "policy.toml"
    f.write_text(toml)
    url = slow_pay(svc)
    try:
        out = run(mode, url, wallet=wallet, ledger=ledger, policy=policy_from_toml(f), **client_settings_from_toml(f))
    finally:
        release(svc)
    assert isinstance(out.error, httpay.PaymentDeadlineExceeded) and out.error.deadline_s == 0.5, repr(out.error)
    assert "nothing was paid" in str(out.error)
    assert out.wallet_calls == 0 and out.receipts == [] and out.spent_msat == 0


@pytest.mark.parametrize("how", ["Toolbox(payment_deadline=...)", "httpay mcp --payment-deadline",
                                 "the MCP server's policy file"])
def test_the_agent_tools_take_the_payment_deadline(how: str, svc: HostileService, wallet: CountingWallet, ledger: Path,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from httpay.apps.agent import Toolbox
    from httpay.apps.agent.mcp_server import toolbox_from_env

    url = slow_pay(svc)
    monkeypatch.setattr("httpay.config.wallet_from_env", lambda env=None: wallet)
    env = {"HTTPAY_WALLET": "counting", "HTTPAY_LEDGER": str(ledger)}
    if how == "Toolbox(payment_deadline=...)":
        box = Toolbox(wallet=wallet, ledger=ledger, payment_deadline=0.5)
        knob = "Toolbox(payment_deadline=...)"
    elif how == "httpay mcp --payment-deadline":
        box = toolbox_from_env(env, payment_deadline=0.5)
        knob = "the --payment-deadline of `httpay mcp`"
    else:
        (tmp_path / "policy.toml").write_text("[policy]\nbudget_sat = 1000\n[client]\npayment_deadline = 0.5\n")
        box = toolbox_from_env(env | {"HTTPAY_POLICY": str(tmp_path / "policy.toml")})
        knob = "[client] payment_deadline in the policy file"
    try:
        assert box.client.payer.payment_deadline == 0.5
        out = box.fetch(url)
    finally:
        release(svc)
        box.close()
    assert out.startswith("error: not paid: the service took longer than the payment deadline of 0.5 s"), out
    assert "Nothing was paid" in out and knob in out, out
    assert wallet.calls == []
    with SQLiteLedger(ledger) as lg:
        assert lg.receipts() == [] and lg.spent_msat() == 0


def test_httpay_mcp_passes_its_flag_to_the_toolbox(cli: Callable[..., Ran], wallet: CountingWallet, ledger: Path,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    class NoServer:
        def run(self, *args: Any, **kwargs: Any) -> None:
            pass

    def build(box: Any, **kwargs: Any) -> NoServer:
        seen.append((box.client.payer.payment_deadline, box.knobs["payment_deadline"]))
        return NoServer()

    monkeypatch.setattr("httpay.config.wallet_from_env", lambda env=None: wallet)
    monkeypatch.setattr("httpay.apps.agent.mcp_server.build_server", build)
    (tmp_path / "p.toml").write_text("[client]\npayment_deadline = 7\n")
    env = {"HTTPAY_WALLET": "counting", "HTTPAY_LEDGER": str(ledger)}
    assert cli("mcp", "--payment-deadline", "2.5", env=env).code == 0
    assert cli("mcp", env=env | {"HTTPAY_POLICY": str(tmp_path / "p.toml")}).code == 0
    assert cli("mcp", env=env).code == 0
    assert seen[0] == (2.5, "the --payment-deadline of `httpay mcp`")
    assert seen[1][0] == 7.0 and seen[1][1].startswith("[client] payment_deadline in the policy file")
    assert seen[2][0] == 60.0


BAD_FLAG_VALUES = ["0", "-1", "nan", "inf", "-inf", "soon", "1e999"]


@pytest.mark.parametrize("command", ["get", "mcp"])
@pytest.mark.parametrize("value", BAD_FLAG_VALUES)
def test_the_flag_refuses_a_deadline_that_is_not_a_positive_finite_number(value: str, command: str,
                                                                         cli: Callable[..., Ran],
                                                                         svc: HostileService,
                                                                         wallet: CountingWallet) -> None:
    args = ["get", svc.free()] if command == "get" else ["mcp"]
    ran = cli(*args, f"--payment-deadline={value}")
    assert ran.code == 2 and "argument --payment-deadline: must be a" in ran.err, ran.err
    assert "Traceback" not in ran.err and wallet.calls == []


BAD_TOML = [
    ("payment_deadline = 0\n", "payment_deadline must be a positive number of seconds, got 0"),
    ("payment_deadline = -5\n", "payment_deadline must be a positive number of seconds, got -5"),
    ("payment_deadline = nan\n", "payment_deadline must be a positive number of seconds, got nan"),
    ("payment_deadline = inf\n", "payment_deadline must be a positive number of seconds, got inf"),
    ('payment_deadline = "30"\n', "payment_deadline must be a positive number of seconds, got '30'"),
    ("payment_deadline = true\n", "payment_deadline must be a positive number of seconds, got True"),
    ("[client]\npayment_deadline = 0\n", "[client] payment_deadline must be a positive number of seconds"),
    ("[client]\ndeadline = 5\n", "unknown setting(s) in [client]: deadline; known: payment_deadline"),
    ("client = 5\n", "[client] must be a table of settings"),
    ("payment_deadline = 5\n[client]\npayment_deadline = 6\n", "payment_deadline is set both at the top level and in [client]"),
    ("[policy]\npayment_deadline = 5\n", "payment_deadline is a client setting, not a limit: put it in a [client] table"),
]


@pytest.mark.parametrize(("toml", "says"), BAD_TOML, ids=[t for t, _ in BAD_TOML])
def test_the_policy_file_refuses_a_bad_deadline_naming_the_key(toml: str, says: str, cli: Callable[..., Ran],
                                                                svc: HostileService, wallet: CountingWallet,
                                                                ledger: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from httpay.apps.agent.mcp_server import toolbox_from_env

    f = tmp_path / "policy.toml"
    f.write_text(toml)
    ran = cli("get", svc.v02(), "--policy", str(f), "--ledger", str(ledger))
    assert ran.code == 1 and says in ran.err and str(f) in ran.err and "Traceback" not in ran.err, ran.err
    monkeypatch.setattr("httpay.config.wallet_from_env", lambda env=None: wallet)
    with pytest.raises(httpay.ConfigError) as caught:
        toolbox_from_env({"HTTPAY_POLICY": str(f), "HTTPAY_LEDGER": str(ledger)})
    assert says in str(caught.value)
    assert wallet.calls == [] and not ledger.exists()


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), True, "30"])
def test_toolbox_refuses_a_bad_deadline_by_name(value: Any, wallet: CountingWallet, ledger: Path) -> None:
    from httpay.apps.agent import Toolbox
    from httpay.apps.agent.mcp_server import toolbox_from_env

    with pytest.raises(httpay.ConfigError, match=r"Toolbox\(payment_deadline=\.\.\.\) must be a positive number"):
        Toolbox(wallet=wallet, ledger=ledger, payment_deadline=value)
    if not isinstance(value, str | bool):
        with pytest.raises(httpay.ConfigError, match="--payment-deadline must be a positive number of seconds"):
            toolbox_from_env({}, payment_deadline=value)
    assert not ledger.exists()


def test_toolbox_deadline_defaults_and_none_and_a_given_client(wallet: CountingWallet, ledger: Path) -> None:
    from httpay.apps.agent import Toolbox

    with Toolbox(wallet=wallet, ledger=ledger) as box:
        assert box.client.payer.payment_deadline == 60.0
    with Toolbox(wallet=wallet, ledger=ledger, payment_deadline=None) as box:
        assert box.client.payer.payment_deadline is None  # as httpay.Client(payment_deadline=None): no deadline
    with httpay.Client(wallet=wallet, ledger=ledger, payment_deadline=5) as c:
        with pytest.raises(httpay.ConfigError, match="either client= or payment_deadline="):
            Toolbox(c, payment_deadline=9)
        assert Toolbox(c).knobs["payment_deadline"] == "httpay.Client(payment_deadline=...)"


def test_the_readmes_policy_file_sets_the_deadline_beside_the_policy(tmp_path: Path) -> None:
    from httpay.config import client_settings_from_toml, policy_from_toml

    [block] = [b for b in re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL) if "[client]" in b]
    f = tmp_path / "policy.toml"
    f.write_text(block)
    assert client_settings_from_toml(f) == {"payment_deadline": 30.0}
    policy = policy_from_toml(f)
    assert policy.budget_usd == 5 and policy.max_per_payment_usd == 0.5
