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

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import httpay
from httpay import display
from httpay.approvals import Approval, ApprovalQueue, Choice
from httpay.cli import main
from httpay.errors import PaymentRefused
from httpay.ledger import SQLiteLedger, Status
from httpay.pipeline import MAX_PRICE_EXTENSION
from tests.helpers import NOTEBOOK_OFFERS
from tests.hostile.harness import CountingWallet, HostileService, run

ROOT = Path(__file__).resolve().parents[2]
RATE = 100_000.0  # USD per BTC: $0.01 = 10 sat
CHEAP, MID, BIG = "offer_c668e0c0", "offer_97bf23f7", "offer_a896b13c"  # $0.01, $1.00, $4.99


def httpay_cmd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`httpay ...` as a person types it in another terminal (a separate process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HTTPAY_", "LNBITS_", "LND_"))}
    env |= {"PYTHONPATH": str(ROOT / "src"), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "httpay.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


class CliPerson:
    """Answers the first waiting approval with `httpay approvals approve ID --offer PICK` (then, when the
    command refuses, denies it so the paying request is not left waiting)."""

    def __init__(self, queue_path: Path, pick: str) -> None:
        self.queue_path, self.pick = queue_path, pick
        self.ran: list[subprocess.CompletedProcess[str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
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
         says=("approval #1 approved by alice", f"chosen instead: {MID}"), chosen=MID),
    Pick("over this request's price cap (max_price)", {"budget_sat": 10_000}, BIG, "max_per_payment",
         "above this request's price cap of 50 sat ($0.05)", says=(f"{BIG} did not fit the policy",),
         max_price_msat=50_000, chosen=BIG),
    Pick("over the per-payment limit", {"max_per_payment_sat": 100}, MID, "max_per_payment",
         "per-payment limit of 100 sat ($0.10)", says=(f"{MID} did not fit the policy",), chosen=MID),
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
@dataclass
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, wallet: CountingWallet) -> Iterator[Callable[..., Ran]]:
    """`httpay ...` run by main() in this process, paying with the counting wallet."""
    def go(*args: str, env: dict[str, str] | None = None) -> Ran:
        with monkeypatch.context() as m:
            for k in [k for k in os.environ if k.startswith(("HTTPAY_", "LNBITS_", "LND_"))]:
                m.delenv(k)
            for k, v in {"COLUMNS": "200", "NO_COLOR": "1", **(env or {})}.items():
                m.setenv(k, v)
            m.setattr("httpay.cli._wallet_or_none", lambda: wallet)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(list(args))
                except SystemExit as exc:  # argparse's usage errors
                    code = int(exc.code or 0)
        return Ran(code, out.getvalue(), err.getvalue())
    yield go


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
    assert shown.code == 0 and "or approve with --offer" in shown.out
    assert f"{MID} '120 Credits Package' $1.00 (over a limit)" in shown.out, shown.out
    assert f"{BIG} '750 Credits Package' $4.99 (over a limit)" in shown.out
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
    assert "<br>" in html


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
    assert "o8 't8'" in text and "o9 't9'" not in text and f"and {199 - display.MAX_CHOICES_SHOWN} more" in text
    assert "o9 " not in display.html_approvals([a])


_ = asyncio  # the async mode runs through the harness
