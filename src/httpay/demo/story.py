"""`httpay demo`: the notebook's story, told offline against the local demo service.

Sign up (1 free credit), read AAPL, meet the 402 on MSFT, see the offers, let the policy pick,
check the invoice, pay with a demo wallet, retry, and end with the ledger and the budget.
Every step is the real client at work: the story only listens to its events.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import httpx
from rich.console import Console, Group
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.prompt import Confirm
from rich.table import Table
from rich.text import Text

import httpay
from httpay import safe
from httpay.amounts import fmt_msat
from httpay.apps.display import (
    invoice_table,
    offers_table,
    payment_request_table,
    receipts_table,
)
from httpay.apps.exit_codes import EXIT_ERROR, EXIT_REFUSED, EXIT_USAGE
from httpay.core import events as ev
from httpay.core.model import Quote
from httpay.demo.runner import serve_in_thread
from httpay.errors import HttpayError, redact
from httpay.wallets.demo import DemoWallet

DEMO_LABEL = "DEMO: a local copy of stock.l402.org on a regtest demo Lightning network. No real money moves."


def ticker_table(symbol: str, data: dict[str, Any]) -> Table:
    extra = data.get("additional_data", {})
    t = Table(title=safe.plain(f"{symbol}: price {extra.get('current_price')}, EPS {extra.get('eps')}, "
                               f"P/E {extra.get('pe_ratio')}", 300), title_justify="left")
    for col in ("fiscal year end", "revenue", "gross profit", "net income"):
        t.add_column(col, justify="right")
    for row in data.get("financial_data", []):
        t.add_row(safe.plain(row.get("fiscalDateEnding", ""), 40), _bn(row.get("totalRevenue")),
                  _bn(row.get("grossProfit")), _bn(row.get("netIncome")))
    return t


def _bn(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float) or not -1e18 < v < 1e18:
        return "—"  # not a number, or not a real company's (1e308, inf, NaN, 4,000 digits)
    return f"${v / 1e9:,.1f} bn"


class Story:
    """Renders the client's events as the notebook's steps."""

    def __init__(self, console: Console, rate: float | None) -> None:
        self.console = console
        self.rate = rate
        self.step = 0
        self.decision: Quote | None = None
        self._waiting: Progress | None = None  # a spinner with elapsed time while the wallet pays
        self._refused: str | None = None  # a Refused event's reason, said once: by the refusal it ends with

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        self._stop_waiting()  # never leave a spinner running after an error
        if self._refused is not None and kind is None:  # refused, and nothing came to say it: the event's reason
            self._print_refusal(self._refused)

    def _stop_waiting(self) -> None:
        if self._waiting is not None:
            self._waiting.stop()
            self._waiting = None

    def say(self, title: str, body: Any = None) -> None:
        self.step += 1
        self.console.rule(f"[bold]{self.step}. {title}", align="left")
        if body is not None:
            self.console.print(body)

    def on_event(self, e: ev.Event) -> None:
        if isinstance(e, ev.ChallengeMet):
            ch = e.challenge
            if ch.reuse == "scope":
                self.say("402 Payment Required: classic L402, one invoice to pay for the macaroon",
                         offers_table(ch.offers, title="L402 challenge", usd_per_btc=self.rate))
            elif ch.dialect != "l402-v0.2":
                self.say(f"402 Payment Required: {safe.clean(ch.dialect, 40)}, {len(ch.offers)} way(s) to pay",
                         offers_table(ch.offers, title=f"{safe.clean(ch.dialect, 40)} challenge", usd_per_btc=self.rate))
            else:
                self.say(f"402 Payment Required: the service offers {len(ch.offers)} ways to buy credits",
                         offers_table(ch.offers, title=f"L402 offers (v{ch.version})", usd_per_btc=self.rate))
        elif isinstance(e, ev.Quoted):
            self.decision = e.quote
            self.say("The policy picks the cheapest lightning offer it allows",
                     f"[green]{safe.markup(e.quote, safe.MAX_LINE)}[/]")
        elif isinstance(e, ev.Approved):
            self.console.print("[green]approved[/]")
        elif isinstance(e, ev.PaymentRequested):
            self.say("Payment details requested from payment_request_url", payment_request_table(e.payment_request))
        elif isinstance(e, ev.InvoiceChecked):
            self.say("Invoice decoded and checked: signature, amount vs offer, network, expiry",
                     invoice_table(e.invoice, usd_per_btc=self.rate))
        elif isinstance(e, ev.Reserved):
            self.console.print(f"ledger #{e.receipt.id} written [yellow]pending[/] before the wallet is called")
            self._waiting = Progress(SpinnerColumn(), TextColumn("waiting for the payment to settle"),
                                     TimeElapsedColumn(), console=self.console, transient=True)
            self._waiting.start()
            self._waiting.add_task("settle", total=None)
        elif isinstance(e, ev.Paid):
            self._stop_waiting()
            r, p = e.receipt, e.payment
            # the preimage is the secret half of the credential: named, never shown, not even a part of it
            proof = (f"; the preimage (secret) proves payment hash {(r.payment_hash or '')[:16]}…"
                     if p is not None else "")
            self.say("Paid with the demo wallet",
                     f"[green]settled[/] {fmt_msat(r.amount_msat, self.rate)}, fee {r.fee_msat} msat{proof}")
        elif isinstance(e, ev.Retried):
            self.console.print(f"retrying the original request (attempt {e.attempt})")
        elif isinstance(e, ev.PaymentFailed):
            self._stop_waiting()
            self.console.print(f"[red]payment failed[/]: {safe.markup(e.error, safe.MAX_LINE)}")
        elif isinstance(e, ev.Refused):
            self._stop_waiting()
            self._refused = e.reason

    def _print_refusal(self, text: str) -> None:
        self._refused = None
        if text.startswith("refused by"):  # "refused by the approver: ...": said once, not "refused: refused by"
            self.console.print(f"[red]refused[/]{safe.markup(text.removeprefix('refused'), safe.MAX_LINE)}")
            return
        self.console.print(f"[red]refused[/]: {safe.markup(text.removeprefix('refused: '), safe.MAX_LINE)}")

    def show_refusal(self, exc: HttpayError) -> None:
        """The refusal a request ended with, once, its advice naming the demo's own flags."""
        self._stop_waiting()
        self._print_refusal(exc.render(DEMO_KNOBS) if isinstance(exc, httpay.PaymentRefused) else str(exc))


DEMO_KNOBS = {"max_per_payment_usd": "--max-per-payment-usd", "budget_usd": "--budget-usd"}  # `httpay demo`'s own


def _ask_person(question: str, console: Console, confirm: Callable[[str], bool] | None) -> bool:
    """y/n from the person at the terminal (or `confirm`); the end of input is a no: nothing is paid."""
    if confirm is not None:
        return confirm(question)
    try:
        return bool(Confirm.ask(safe.markup(question, 500), console=console, default=False))
    except EOFError:
        console.print("no answer (the input ended): not paying")
        return False


def run_story(*, approve: bool = False, non_interactive: bool = False, ledger: str | None = None,
              budget_usd: float = 5.0, max_per_payment_usd: float = 1.0, console: Console | None = None,
              confirm: Callable[[str], bool] | None = None, protocol: str = "l402-v0.2") -> int:
    """Tell the story; return the exit code."""
    console = console or Console()
    if approve and non_interactive:
        console.print("[red]--approve asks a person; it cannot be combined with --non-interactive[/]")
        return EXIT_USAGE
    console.print(Panel(DEMO_LABEL, title="httpay demo", border_style="magenta"))
    tmp = None
    if ledger is None:
        tmp = tempfile.TemporaryDirectory(prefix="httpay-demo-")
        ledger = str(Path(tmp.name) / "demo-ledger.sqlite3")
    try:
        with serve_in_thread() as server:
            tell = {"l402": _tell_classic, "mpp": _tell_mpp}.get(protocol, _tell)
            return tell(server.url, console, approve=approve, non_interactive=non_interactive, ledger=ledger,
                        budget_usd=budget_usd, max_per_payment_usd=max_per_payment_usd, confirm=confirm)
    except HttpayError as exc:
        console.print(f"[red]httpay: {type(exc).__name__}: {safe.markup(exc, safe.MAX_LINE)}[/]")
        return EXIT_ERROR
    finally:
        if tmp is not None:
            tmp.cleanup()


def _tell(base: str, console: Console, *, approve: bool, non_interactive: bool, ledger: str, budget_usd: float,
          max_per_payment_usd: float, confirm: Callable[[str], bool] | None) -> int:
    story = Story(console, None)
    story.say("Local stock service started (the project's own stock.l402.org)", f"listening on {base} (loopback only)")
    plain = httpx.Client(base_url=base, timeout=10)

    signup = plain.get("/signup").json()
    token = signup["id"]
    auth = {"Authorization": f"Bearer {token}"}
    story.say("Sign up: a new account with 1 free credit",
              f"account {redact(token)} (the id is a bearer token, so it is shown redacted), credits: {signup['credits']}")
    info = plain.get("/info", headers=auth).json()
    console.print(f"/info says credits: {info['credits']}")

    aapl = plain.get("/ticker/AAPL", headers=auth)
    story.say(f"Query AAPL with the free credit: HTTP {aapl.status_code}", ticker_table("AAPL", aapl.json()))

    wallet = DemoWallet.create(base, balance_sat=1_000)
    rate = wallet.usd_per_btc()
    story.rate = rate
    story.say("A demo wallet funded with 1,000 sat on the demo Lightning network",
              f"{wallet!r}, balance {fmt_msat(wallet.balance_msat(), rate)}; BTC/USD rate of the demo: {rate:,.0f}")

    def ask(decision: Quote) -> bool:
        question = f"Pay {decision.offer.price} ({fmt_msat(decision.price_msat or 0, rate)}) for '{safe.clean(decision.offer.title)}'?"
        return _ask_person(question, console, confirm)

    policy = httpay.Policy(max_per_payment_usd=max_per_payment_usd, budget_usd=budget_usd, usd_per_btc=rate,
                           approve=ask if approve else None)
    story.say("Client and policy", f"httpay.Client(wallet=DemoWallet, policy={_policy_text(policy)}), ledger {ledger}")

    with story, httpay.Client(wallet=wallet, policy=policy, ledger=ledger, base_url=base, timeout=10,
                              on_event=story.on_event) as client:
        console.rule("[bold]Query MSFT: the free credit is spent", align="left")
        try:
            msft = client.get("/ticker/MSFT", headers=auth)
        except httpay.PaymentRefused as exc:
            story.show_refusal(exc)
            _summary(story, client, wallet, policy, rate)
            return EXIT_REFUSED
        story.say(f"Served after payment: HTTP {msft.status_code}", ticker_table("MSFT", msft.json()))
        _summary(story, client, wallet, policy, rate)
    info = plain.get("/info", headers=auth).json()
    console.print(f"/info now says credits: {info['credits']} (the purchased credit was spent on MSFT)")
    console.print(Panel("Done. " + DEMO_LABEL, border_style="magenta"))
    plain.close()
    wallet.close()
    return 0


def _unsecret(header: str) -> str:
    """A challenge header as the story shows it: the macaroon (a credential once paid) not shown at all."""
    return re.sub(r'\b(macaroon|token)="[^"]*"', r'\1="<not shown>"', header)


def _tell_classic(base: str, console: Console, *, approve: bool, non_interactive: bool, ledger: str, budget_usd: float,
                  max_per_payment_usd: float, confirm: Callable[[str], bool] | None) -> int:
    """The same story over classic L402 (macaroon + invoice, as Aperture serves): pay once, reuse the token."""
    from httpay.protocols import l402_classic

    story = Story(console, None)
    story.say("Local stock service started, with a classic L402 route (as Aperture guards a service)",
              f"listening on {base} (loopback only); no account needed: the paid macaroon is the credential")
    plain = httpx.Client(base_url=base, timeout=10)
    first = plain.get("/l402/ticker/MSFT")
    challenge = l402_classic.parse(first.status_code, first.headers, first.content)
    assert challenge is not None
    headers = Text("\n").join(safe.plain(f"WWW-Authenticate: {_unsecret(h)[:72]}…", 100)
                              for h in first.headers.get_list("www-authenticate"))
    story.say(f"A plain request meets HTTP {first.status_code} with two challenges (LSAT, then L402)", headers)
    info = challenge.macaroon_info()
    story.say("The macaroon, decoded (it becomes a bearer credential once paid, so no part of it is shown)",
              safe.plain(info, 300) + Text("\ncaveats: ") + safe.plain(", ".join(info.caveats), 300))

    wallet, rate, policy = _wallet_and_policy(story, base, console, 1_000, approve=approve, confirm=confirm,
                                              budget_usd=budget_usd, max_per_payment_usd=max_per_payment_usd)
    with story, httpay.Client(wallet=wallet, policy=policy, ledger=ledger, base_url=base, timeout=10,
                              on_event=story.on_event) as client:
        console.rule("[bold]httpay asks for MSFT", align="left")
        try:
            msft = client.get("/l402/ticker/MSFT")
        except httpay.PaymentRefused as exc:
            story.show_refusal(exc)
            _summary(story, client, wallet, policy, rate)
            return EXIT_REFUSED
        story.say(f"Served with `Authorization: L402 <macaroon>:<preimage>`: HTTP {msft.status_code}",
                  ticker_table("MSFT", msft.json()))
        aapl = client.get("/l402/ticker/AAPL")
        paid_again = httpay.receipt_of(aapl) is not None
        story.say(f"AAPL with the same token: HTTP {aapl.status_code}, "
                  + ("paid again?!" if paid_again else "no new payment (the token is reused until the server says 402)"),
                  ticker_table("AAPL", aapl.json()))
        console.print(f"tokens held (scopes only, never the token): {', '.join(client.ledger.token_scopes())}")
        _summary(story, client, wallet, policy, rate)
    console.print(Panel("Done. " + DEMO_LABEL, border_style="magenta"))
    plain.close()
    wallet.close()
    return 0


def _tell_mpp(base: str, console: Console, *, approve: bool, non_interactive: bool, ledger: str, budget_usd: float,
              max_per_payment_usd: float, confirm: Callable[[str], bool] | None) -> int:
    """The story over MPP (the HTTP `Payment` scheme): a lightning charge paid per request, then an
    Aperture-style 402 with LSAT, L402 and Payment side by side, where one quote picks the token
    that serves every later request, then a lightning session with its refund."""
    from httpay.protocols import mpp

    story = Story(console, None)
    story.say("Local stock service started, with MPP routes (the HTTP Payment scheme)",
              f"listening on {base} (loopback only)")
    plain = httpx.Client(base_url=base, timeout=10)
    first = plain.get("/mpp/ticker/MSFT")
    found = mpp.parse(first.status_code, first.headers, first.content)
    assert found is not None
    shown = Text("\n").join(safe.plain(f"Payment method={c.method}, intent={c.intent}, amount={c.request.get('amount')} "
                                        f"{c.request.get('currency', '')}, expires {c.expires:%H:%M:%S} UTC"
                                        if c.expires else f"Payment method={c.method}, intent={c.intent}", 160)
                             for c in found)
    story.say(f"A plain request meets HTTP {first.status_code} with a `WWW-Authenticate: Payment` challenge", shown)

    wallet, rate, policy = _wallet_and_policy(story, base, console, 5_000, approve=approve, confirm=confirm,
                                              budget_usd=budget_usd, max_per_payment_usd=max_per_payment_usd)
    with story, httpay.Client(wallet=wallet, policy=policy, ledger=ledger, base_url=base, timeout=10,
                              on_event=story.on_event) as client:
        console.rule("[bold]A lightning charge: one payment buys one answer", align="left")
        try:
            msft = client.get("/mpp/ticker/MSFT")
        except httpay.PaymentRefused as exc:
            story.show_refusal(exc)
            _summary(story, client, wallet, policy, rate)
            return EXIT_REFUSED
        receipt = httpay.receipt_of(msft)
        story.say(f"Served with `Authorization: Payment <challenge echo + preimage>`: HTTP {msft.status_code}; "
                  f"the service's Payment-Receipt is on ledger #{receipt.id if receipt else '?'}",
                  ticker_table("MSFT", msft.json()))

        console.rule("[bold]One 402, three dialects (Aperture's l402+mpp mode)", align="left")
        both = plain.get("/aperture/ticker/AAPL")
        challenges = httpay.read_challenge(both.status_code, both.headers, both.content, url=str(both.url))
        story.say(f"HTTP {both.status_code} offers {len(challenges)} challenge(s): "
                  f"{', '.join(c.dialect for c in challenges)} (LSAT and L402 name one token)",
                  offers_table([o for c in challenges for o in c.offers], title="every offer, side by side",
                               usd_per_btc=rate))
        aapl = client.get("/aperture/ticker/AAPL")
        bought = httpay.receipt_of(aapl)
        story.say(f"The quote picks {bought.protocol if bought else '?'} at the same price: its token serves the "
                  f"whole host, a Payment credential one request. HTTP {aapl.status_code}", ticker_table("AAPL", aapl.json()))
        again = client.get("/aperture/ticker/NVDA")
        story.say(f"NVDA with the same token: HTTP {again.status_code}, "
                  + ("paid again?!" if httpay.receipt_of(again) else "no new payment"), ticker_table("NVDA", again.json()))

        console.rule("[bold]A lightning session: a deposit, bearer requests, a refund", align="left")
        with httpay.MppSession(client, f"{base}/mpp/session/ticker/MSFT") as session:
            for symbol in ("MSFT", "AAPL", "GOOGL"):
                r = session.get(f"{base}/mpp/session/ticker/{symbol}")
                console.print(f"session request for {symbol}: HTTP {r.status_code}")
        state = session.state
        story.say("Session closed", safe.plain(str(state), 300))
        _summary(story, client, wallet, policy, rate)
    console.print(Panel("Done. " + DEMO_LABEL, border_style="magenta"))
    plain.close()
    wallet.close()
    return 0


def _wallet_and_policy(story: Story, base: str, console: Console, balance_sat: int, *, approve: bool,
                       confirm: Callable[[str], bool] | None, budget_usd: float,
                       max_per_payment_usd: float) -> tuple[DemoWallet, float | None, httpay.Policy]:
    """A funded demo wallet (said so), the demo's rate, and the story's policy (asking a person when
    `approve`)."""
    wallet = DemoWallet.create(base, balance_sat=balance_sat)
    rate = wallet.usd_per_btc()
    story.rate = rate
    story.say(f"A demo wallet funded with {balance_sat:,} sat",
              f"{wallet!r}, balance {fmt_msat(wallet.balance_msat(), rate)}")

    def ask(decision: Quote) -> bool:
        question = f"Pay {fmt_msat(decision.price_msat or 0, rate)} for '{safe.clean(decision.offer.title)}'?"
        return _ask_person(question, console, confirm)

    policy = httpay.Policy(max_per_payment_usd=max_per_payment_usd, budget_usd=budget_usd, usd_per_btc=rate,
                           approve=ask if approve else None)
    return wallet, rate, policy


def _policy_text(p: httpay.Policy) -> str:
    approve = ", approve=<ask a person>" if p.approve else ""
    return f"Policy(max_per_payment_usd={p.max_per_payment_usd}, budget_usd={p.budget_usd}{approve})"


def _summary(story: Story, client: httpay.Client, wallet: DemoWallet, policy: httpay.Policy, rate: float | None) -> None:
    spent = client.ledger.spent_msat()
    budget_msat = policy.limits("", rate)[0].limit_msat if policy.budget_usd is not None else None
    left = f"{fmt_msat(budget_msat - spent, rate)} of {fmt_msat(budget_msat, rate)}" if budget_msat else "unlimited"
    story.say("Ledger and budget", Group(
        receipts_table(client.ledger.receipts(), title="Ledger", usd_per_btc=rate),
        f"spent {fmt_msat(spent, rate)}; budget left {left}; wallet balance {fmt_msat(wallet.balance_msat(), rate)}",
    ))
