"""The `httpay` command: the demo, the demo server, paid GETs, the ledger, budgets, approvals, the dashboard.

Every failure is one line on stderr saying what happened and what to try, and a documented exit code
(`EXIT_CODES`, shown by `httpay --help`); never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from rich.console import Console

from httpay.apps.exit_codes import (
    EXIT_CODES,
    EXIT_ERROR,
    EXIT_HTTP,
    EXIT_NETWORK,
    EXIT_OK,
    EXIT_PAYMENT,
    EXIT_REFUSED,
    EXIT_USAGE,
    refusal_code,
)
from httpay.config import DEMO_URL
from httpay.core.rates import resolve_rate
from httpay.errors import ConfigError, HttpayError, PaymentRefused, UsageError
from httpay.policy import MAX_POLICY_NUMBER
from httpay.safe import MAX_LINE, clean, header_problem, mask_urls, plain

MAX_ROW_ID = 2**63 - 1  # the largest number a ledger row or an approval can have (a 64-bit integer)


def _number(*, kind: type = float, positive: bool = False, what: str = "real amount",
            most: int = MAX_POLICY_NUMBER) -> Callable[[str], Any]:
    """An argparse type refusing negative (or zero), NaN and infinite values (argparse names the flag),
    and values over `most`, said as larger than any `what` ("real amount", "ledger ID", "count")."""
    bound = f"{most:.0e}" if most == MAX_POLICY_NUMBER else f"{most:,}" if most > 99_999 else str(most)

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a {'whole ' if kind is int else ''}number, got {text[:40]!r}") from None
        if (isinstance(value, float) and not math.isfinite(value)) or value < 0 or (positive and value == 0):
            raise argparse.ArgumentTypeError(
                f"must be a {'positive' if positive else 'non-negative'} finite number, got {text[:40]!r}")
        if value > most:
            raise argparse.ArgumentTypeError(f"is larger than any {what} (at most {bound})")
        return value
    return parse


def _seconds(text: str) -> float:
    """An argparse type for a span of seconds: a positive finite number (argparse names the flag)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text[:40]!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive finite number of seconds, got {text[:40]!r}")
    return value


def _header_arg(text: str) -> str:
    """An argparse type for -H: 'Name: value' (a bad one is a usage error, exit 2)."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{clean(repr(text), 60)} must look like 'Name: value', e.g. "
                                         "'Authorization: Bearer ...'")
    problem = header_problem(name.strip(), value.strip())
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _when_arg(text: str) -> str:
    """An argparse type for --since: read now, so a bad one is a usage error (exit 2)."""
    try:
        _since(text)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"use 30m, 1h, 1d, 1w or an ISO date/time such as 2026-11-25T10:00 (UTC), "
                                         f"got {text[:40]!r}") from None
    return text


class HostFilter(NamedTuple):
    """`ledger --host`: a host as the ledger records it ('127.0.0.1:8402', 'api.example.com', '[::1]:9'),
    and whether it stands for every port of that host (given without a port, not as a URL)."""

    host: str
    every_port: bool

    def __str__(self) -> str:
        return f"{self.host} (every port)" if self.every_port else self.host


def _host_arg(text: str) -> HostFilter:
    """An argparse type for `ledger --host`: a host (every port of it), host:port, or a URL (its host
    and port: the bare host for its scheme's own port, as the ledger records it); the host however
    it is spelled (case, a trailing dot, IDNA, an IPv6 literal), as the ledger reads it."""
    from urllib.parse import urlsplit

    from httpay.hosts import host_name

    given = text.strip()
    try:
        parts = urlsplit(given if "://" in given else "//" + (f"[{given}]" if given.count(":") > 1
                                                                and not given.startswith("[") else given))
        port = parts.port
    except ValueError:
        parts, port = None, None
    host = (parts.hostname or "").lower() if parts is not None else ""
    host = host_name(f"[{host}]" if ":" in host else host)
    if parts is None or ("://" not in given and (parts.path or parts.query)) \
            or not re.fullmatch(r"[\w.-]+|\[[0-9a-f:.]+\]", host):  # (a URL's user info is not shown)
        raise argparse.ArgumentTypeError(f"{clean(mask_urls(given), 60)!r} is not a host: give api.example.com, "
                                         "127.0.0.1:8402 or a URL such as https://api.example.com/path")
    if port is not None and parts is not None and port == {"http": 80, "https": 443}.get(parts.scheme):
        port = None  # a URL's own scheme's port: recorded bare
    if port is not None:
        return HostFilter(f"{host}:{port}", every_port=False)
    return HostFilter(host, every_port="://" not in given)  # a URL names one port: its scheme's, recorded bare


def _hosts(lg: Any, given: HostFilter | None) -> list[str] | None:
    """The recorded hosts `ledger --host` means, however each was spelled (each then found by equality
    on the host index): it on the port it names, or for a host without a port, it on every port the
    ledger holds payments to (a URL without one: where no port was recorded)."""
    if given is None:
        return None
    return list(lg.hosts_matching(given.host, every_port=given.every_port))


def _port(text: str) -> int:
    return int(_number(kind=int, what="port", most=65535)(text))


REQUEST_COMMANDS = ("get", "post", "put", "patch", "delete", "head", "request")
JSON_OUTPUT = "\x00output"  # `--json` given without a body: print the result as JSON


class _JsonFlag(argparse.Action):
    """`--json BODY` sends BODY as JSON, as curl does; `--json` alone (last, or before another flag)
    prints the result as JSON. A value that is neither JSON nor @FILE is refused with both readings."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if values is None:
            namespace.json_output = True
            return
        text = str(values)
        if not text.startswith("@"):
            try:
                json.loads(text)
            except ValueError:
                parser.error(f"--json {text[:40]!r}: a JSON body (or @FILE) follows --json; for JSON output put "
                             "--json after the URL")
        namespace.json_body = text


class _NamedFlag(argparse.Action):
    """Stores the value and which of a flag's spellings the person typed (`flag_<dest>`), so what
    is said back names that one: `--max-cost-sat 5` is told to raise --max-cost-sat, not an alias."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"flag_{self.dest}", option_string or self.option_strings[0])


def _flag(args: argparse.Namespace, dest: str, default: str) -> str:
    """The spelling of a flag the person typed (`_NamedFlag`), else `default`."""
    return str(getattr(args, f"flag_{dest}", None) or default)


def _request_parser(sub: Any, verb: str) -> None:
    """One request command (`get`, `post`, ... or `request -X METHOD`): curl's flags, httpay's limits."""
    what = "send a request with any method" if verb == "request" else f"{verb.upper()} a URL"
    g = sub.add_parser(verb, help=f"{what}, paying a 402 if the policy allows (wallet from HTTPAY_WALLET)",
                       description=f"{what[0].upper() + what[1:]}. A free URL needs no wallet; a 402 is paid with "
                                   "the wallet named by HTTPAY_WALLET within the policy (default limits: 1,000 sat "
                                   "per payment, 10,000 sat per hour, 50,000 sat per day).")
    g.add_argument("url")
    if verb == "request":
        g.add_argument("-X", "--request", dest="method", default="GET", metavar="METHOD",
                       help="the HTTP method (default GET)")
    g.set_defaults(method=verb.upper() if verb != "request" else None, json_output=False, json_body=None)
    g.add_argument("-H", "--header", action="append", default=[], type=_header_arg, help="'Name: value' (repeatable)")
    g.add_argument("-d", "--data", metavar="DATA", help="the request body: text, @FILE, or @- for stdin")
    g.add_argument("--json", action=_JsonFlag, nargs="?", metavar="BODY", dest="json_flag",
                   help="--json BODY: send BODY (JSON, @FILE or @-) as application/json, as curl does; "
                        "--json with no body, after the URL: print the result (status, receipt) as JSON")
    g.add_argument("-o", "--output", metavar="FILE", help="write the body to FILE (bytes as sent), not stdout")
    g.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="tag the payment (repeatable), e.g. --tag agent=research: the ledger groups and budgets by it "
                        "(default: $HTTPAY_TAGS, e.g. agent=research,task=T-17)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress or notes on stderr (errors still)")
    g.add_argument("--max-cost", "--max-price", "--max-price-usd", dest="max_price_usd", type=_number(),
                   action=_NamedFlag, metavar="USD", help="the most this request may pay, routing fees included, in USD")
    g.add_argument("--max-price-sat", "--max-cost-sat", dest="max_price_sat", type=_number(kind=int), metavar="SAT",
                   action=_NamedFlag, help="the most this request may pay, routing fees included, in sat")
    g.add_argument("--dry-run", "--no-pay", dest="dry_run", action="store_true",
                   help="show the offers and what the policy would pay; pay nothing")
    g.add_argument("--ask", action="store_true",
                   help="hold the payment until a person approves it (`httpay approvals`, `httpay dashboard`)")
    g.add_argument("--approval-timeout", type=_number(positive=True, what="sensible number of seconds"), metavar="S",
                   help="with --ask: seconds before no answer means no (default 300)")
    g.add_argument("--approvals", metavar="PATH",
                   help="with --ask: approval queue file (default: $HTTPAY_APPROVALS, else the ledger file; "
                        "`httpay approvals` and `httpay dashboard` look there by the same rule)")
    g.add_argument("--payment-deadline", type=_seconds, metavar="SECONDS",
                   help="most seconds from the service's 402 to paying it, or nothing is paid (default: the policy "
                        "file's [client] payment_deadline, else 60)")
    g.add_argument("--budget-usd", type=_number(), help="total budget (default from the policy file)")
    g.add_argument("--usd-per-btc", type=_number(positive=True, what="real rate"),
                   help="BTC/USD rate for USD limits (default: the wallet's)")
    g.add_argument("--policy", help="policy TOML file (default $HTTPAY_POLICY)")
    g.add_argument("--ledger", help="ledger path or postgresql:// URL (default $HTTPAY_LEDGER or the user data dir)")


def _epilog() -> str:
    """The defaults and the exit codes, wrapped to the terminal (at most 100 columns)."""
    import shutil
    import textwrap

    width = max(min(shutil.get_terminal_size((80, 24)).columns, 100) - 2, 40)
    defaults = textwrap.fill("With no policy file, httpay's default limits apply: at most 1,000 sat per payment, "
                             "10,000 sat per hour, 50,000 sat per day (`httpay budget` shows them; "
                             "`default_limits = false` in a policy file drops them).", width)
    codes = "\n".join(textwrap.fill(what, width, initial_indent=f"  {code}  ", subsequent_indent="     ")
                      for code, what in EXIT_CODES)
    return f"{defaults}\n\nexit codes:\n{codes}"


class _Parser(argparse.ArgumentParser):
    """`httpay`'s parser and every command's (subparsers take their parent's class): an argument a
    command does not take is refused by that command, with its own usage line (`httpay budget
    --since 1d` printed the top-level `usage: httpay [-h] ...`, which names none of budget's flags)."""

    def parse_known_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> tuple[Any, list[str]]:
        found, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return found, extras


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="httpay", description="An HTTP client that pays 402 Payment Required within limits you set.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_epilog(),
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="log each step (-vv for debug)")
    p.add_argument("--version", action="version", version=f"httpay {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="tell the notebook's story offline against the local demo service")
    mode = d.add_mutually_exclusive_group()
    mode.add_argument("--non-interactive", action="store_true", help="never ask a person (as an agent would run it)")
    mode.add_argument("--approve", action="store_true", help="ask y/n before paying")
    d.add_argument("--ledger", help="ledger file for the demo (default: a throwaway file)")
    d.add_argument("--budget-usd", type=_number(), default=5.0)
    d.add_argument("--max-per-payment-usd", type=_number(), default=1.0)
    d.add_argument("--protocol", choices=("l402-v0.2", "l402", "mpp"), default="l402-v0.2",
                   help="l402-v0.2: the notebook's JSON offers (default); l402: classic macaroon + invoice; mpp: the HTTP Payment scheme (charge, Aperture's three dialects in one 402, a session)")

    s = sub.add_parser("demo-server", help="run the local demo stock service (loopback only, no real money)",
                       description="Serve the demo stock service (a local copy of stock.l402.org on the demo "
                                   "Lightning network; no real money) in the foreground until Ctrl-C.")
    s.add_argument("--host", default="127.0.0.1",
                   help="loopback address to listen on: 127.0.0.1, ::1 or localhost (default: 127.0.0.1)")
    s.add_argument("--port", type=_port, default=8402, help="port to listen on; 0 picks a free one (default: 8402)")

    for verb in REQUEST_COMMANDS:
        _request_parser(sub, verb)

    lg = sub.add_parser("ledger", help="show the payments recorded in the ledger, or reconcile pending ones",
                        description="`httpay ledger` shows payments; `httpay ledger reconcile` asks the wallet "
                                    "(HTTPAY_WALLET) about every pending payment and records the truth.")
    lg.add_argument("action", nargs="?", choices=("show", "reconcile", "export", "write-off"), default="show",
                    help="show (default), reconcile pending payments with the wallet, export every payment "
                         "for accounting (--format jsonl|csv), or write-off --id ID --reason TEXT: a pending "
                         "payment a person has checked never went out (budgets stop counting it)")
    lg.add_argument("--id", type=_number(kind=int, positive=True, what="ledger ID", most=MAX_ROW_ID), metavar="ID",
                    help="write-off: the ledger row")
    lg.add_argument("--reason", metavar="TEXT", help="write-off: what the person checked (kept on the row)")
    lg.add_argument("--wallet-checked", action="store_true",
                    help="write-off: you looked the Lightning payment up in the wallet that made it yourself (needed "
                         "when that wallet is not configured here, or cannot look payments up)")
    lg.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="export: jsonl (default) or csv")
    lg.add_argument("--tag", metavar="KEY=VALUE", help="only payments carrying this tag, e.g. agent=research")
    lg.add_argument("--grace", type=_number(what="sensible number of seconds"), default=120.0, metavar="SECONDS",
                    help="reconcile, write-off: a pending payment is failed only once older than this, as a live process "
                         "may still be paying it (default 120)")
    lg.add_argument("--ledger", help="ledger path or URL (default $HTTPAY_LEDGER or the user data dir)")
    lg.add_argument("--limit", type=_number(kind=int, positive=True, what="count of payments"), default=50,
                    help="show at most this many payments (default 50)")
    lg.add_argument("--before", type=_number(kind=int, positive=True, what="ledger ID", most=MAX_ROW_ID), metavar="ID",
                    help="page back: only payments older than ledger #ID (the output names the next page)")
    lg.add_argument("--since", metavar="WHEN", type=_when_arg, help="only payments since: 30m, 1h, 1d, 1w or an ISO date/time (UTC)")
    lg.add_argument("--host", type=_host_arg, metavar="HOST",
                    help="only payments to this host: 127.0.0.1 (every port), 127.0.0.1:8402 (that port), "
                         "api.example.com, or a URL (its host and port)")
    lg.add_argument("--json", action="store_true", help="print JSON for scripts")
    _add_people_commands(sub)

    m = sub.add_parser(
        "mcp", help="serve the httpay tools to agents over MCP (wallet, policy, ledger from the environment)",
        epilog="environment: HTTPAY_WALLET (+ its variables), HTTPAY_POLICY (TOML file), HTTPAY_LEDGER, "
               'HTTPAY_HEADERS (JSON object of headers for the service, e.g. {"Authorization": "Bearer ..."}), '
               "HTTPAY_BASE_URL (the service those headers belong to; they go to it only), HTTPAY_TAGS, "
               "HTTPAY_APPROVALS (with --ask: the approval queue file, default the ledger's; `httpay approvals` "
               "and `httpay dashboard` read the same variable), HTTPAY_MCP_TOKEN "
               "(--transport http: the bearer token every request must send; else a random one is printed)",
    )
    m.add_argument("--transport", choices=("stdio", "http"), default="stdio", help="stdio (default) or streamable HTTP")
    m.add_argument("--host", default="127.0.0.1", help="HTTP only; loopback addresses only")
    m.add_argument("--port", type=_port, default=8403, help="HTTP only (default 8403)")
    m.add_argument("--payment-deadline", type=_seconds, metavar="SECONDS",
                   help="most seconds from a service's 402 to paying it, or nothing is paid (default: the policy "
                        "file's [client] payment_deadline, else 60)")
    m.add_argument("--ask", action="store_true",
                   help="every payment waits for a person: asked through the MCP host (elicitation) where it can, "
                        "else in the approval queue (`httpay approvals`, `httpay dashboard`)")
    m.add_argument("--approval-timeout", type=_number(positive=True, what="sensible number of seconds"), metavar="S",
                   help="with --ask: seconds to wait for the person's answer (none: not paid; default 300)")
    return p


def _verbosity_first(argv: Sequence[str]) -> list[str]:
    """`httpay get URL -v` as `httpay -v get URL`: -v and -q-like global flags are the command's own
    only before it, and argparse would refuse them after (a newcomer's first guess)."""
    words = list(argv)
    if "--" in words:
        return words
    verbose = [w for w in words[1:] if w in ("-v", "-vv", "-vvv", "--verbose")]
    if not verbose or not words or words[0].startswith("-"):
        return words
    return verbose + [w for w in words if w not in verbose]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(_verbosity_first(sys.argv[1:] if argv is None else argv))
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    before = list(logging.getLogger().handlers)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if handler not in before:  # only the stderr handler the command itself installed
            handler.addFilter(_not_reported_twice)
    console = Console()
    started = datetime.now(UTC)
    try:
        with _sigterm_as_interrupt(args.command in REQUEST_COMMANDS):
            return int(_run(args, console) or 0)
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, _Terminated)
        if args.command in REQUEST_COMMANDS:
            _say(_interrupted(args, started, "stopped by SIGTERM" if terminated else "interrupted"))
        return 143 if terminated else 130
    except BrokenPipeError:
        # the reader went away (`httpay ledger | head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:  # one line and an exit code, never a traceback
        code, line = failure(exc, _knobs(args), paying=args.command in (*REQUEST_COMMANDS, "demo"))
        if getattr(args, "json_output", False) or getattr(args, "json", False) is True:  # every --json command
            print(json.dumps({"ok": False, "exit_code": code, "error": type(exc).__name__, "message": line,
                              "receipt": _receipt_json(getattr(exc, "receipt", None))}))
        logging.getLogger("httpay").debug("the failure in full", exc_info=True)
        _say(f"httpay: {line}")
        return code


class _Terminated(KeyboardInterrupt):
    """SIGTERM taken as Ctrl-C by a request command: `timeout`, systemd or a host stopping it then
    leaves what Ctrl-C leaves (an approval it waited on denied, a pending payment named)."""


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise _Terminated


@contextmanager
def _sigterm_as_interrupt(on: bool) -> Iterator[None]:
    """While a request runs, SIGTERM unwinds it as Ctrl-C does, instead of ending the process where
    it stands (an approval left waiting for an answer nobody would use); the handler before is put back."""
    if not on or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _interrupted(args: argparse.Namespace, started: datetime, what: str = "interrupted") -> str:
    """What a request stopped by Ctrl-C (or SIGTERM) leaves behind: a payment written pending may
    have gone out (the wallet was being called), and must be looked up before anything is paid again."""
    from httpay.ledger import open_ledger

    try:
        with open_ledger(_existing_ledger(getattr(args, "ledger", None))) as lg:
            left = [r for r in lg.pending() if r.created_at >= started - timedelta(seconds=1)]
    except Exception:  # noqa: BLE001 - the line is said whatever the ledger can tell
        left = []
    if not left:
        return f"httpay: {what}"
    ids = ", ".join(f"#{r.id}" for r in left)
    return (f"httpay: {what} while paying: ledger {ids} is pending and the wallet may have paid it; run "
            "`httpay ledger reconcile` before paying again")


def _say(line: str) -> None:
    """One line on stderr, server text and all, never read as rich markup; a secret in a URL it names masked."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(plain(mask_urls(line), MAX_LINE, style="red"))


def _not_reported_twice(record: logging.LogRecord) -> bool:
    """A refusal or a failed payment is raised to the command, which prints it once: its log line
    would say it again (and `-q` would not be quiet)."""
    return getattr(record, "httpay_step", None) not in ("refused", "payment_failed")


def _version() -> str:
    from httpay import __version__

    return __version__


def failure(exc: BaseException, knobs: dict[str, str] | None = None, *, paying: bool = True) -> tuple[int, str]:
    """The exit code and the one line for a failure: what happened and what to try. A wallet error of a
    command that does not pay (`wallet balance`, `ledger reconcile`) is an error, not a failed payment."""
    from httpay.errors import (
        ApprovalExpired,
        ChallengeError,
        InvoiceError,
        LoopbackOnly,
        PaidRequestFailed,
        PaymentDeadlineExceeded,
        PaymentNotHonored,
        PaymentOutcomeUnknown,
        PaymentRequestError,
        WalletError,
        WalletUnreachable,
    )

    if isinstance(exc, UsageError | LoopbackOnly):  # (LoopbackOnly: a --host beyond loopback)
        return EXIT_USAGE, str(exc)
    if isinstance(exc, ChallengeError):  # a 402 nothing could be paid for: what the service sent is at fault
        return EXIT_HTTP, f"the service's 402 cannot be read: {exc}; nothing was paid"
    if isinstance(exc, PaymentDeadlineExceeded):
        knob = (knobs or {}).get("payment_deadline", "--payment-deadline SECONDS")
        return EXIT_NETWORK, (f"not paid: the service took longer than the payment deadline of {exc.deadline_s:g} s "
                              f"from its 402 to the payment (it was still at {clean(exc.stage, 200)}); nothing was "
                              f"paid. If this service is known to be slow, raise {knob}")
    if isinstance(exc, PaymentRefused):
        code, line = refusal_code(exc.rule), exc.render(knobs)
        if code == EXIT_HTTP:  # nobody refused: nothing here can pay this 402 (exit 6, as --help's table says)
            line = "cannot pay: " + line.removeprefix("refused: ")
        return code, line + ". Nothing was paid."
    if isinstance(exc, ApprovalExpired):  # a person's answer refused: no request would use it
        return EXIT_REFUSED, str(exc)
    if isinstance(exc, PaymentNotHonored | PaymentOutcomeUnknown | PaidRequestFailed):  # money may have left
        return EXIT_PAYMENT, f"{exc}; see `httpay ledger`"
    if isinstance(exc, WalletUnreachable):  # a network fault, paying or not: nothing reached the wallet
        return EXIT_NETWORK, f"the wallet cannot be reached: {exc}"
    if isinstance(exc, WalletError) and not paying:
        return EXIT_ERROR, f"the wallet: {type(exc).__name__}: {exc}"
    if isinstance(exc, InvoiceError):  # checked before anything is written down or paid
        return EXIT_REFUSED, f"the invoice was refused before paying: {exc}. Nothing was paid."
    if isinstance(exc, PaymentRequestError):  # the service would not give an invoice: nothing to pay yet
        return EXIT_HTTP, f"the service's payment request failed: {exc}. Nothing was paid."
    if isinstance(exc, WalletError):
        paid = "" if exc.outcome_known else "; it may have gone out: run `httpay ledger reconcile`"
        return EXIT_PAYMENT, f"payment failed: {type(exc).__name__}: {exc}{paid}"
    if isinstance(exc, HttpayError):
        return EXIT_ERROR, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return EXIT_USAGE, f"bad URL: {exc}; give a full http:// or https:// URL"
    if isinstance(exc, httpx.TransportError):
        from httpay.core.flow import unreadable

        why = unreadable(exc)
        if why is not None:  # reached: the fault is the service's, and asking again gets the same
            return EXIT_HTTP, f"{_where(exc)} answered, but {why}; the service is at fault, not your network"
        return EXIT_NETWORK, _network_line(exc)
    if isinstance(exc, httpx.HTTPError):
        return EXIT_NETWORK, f"the request failed: {type(exc).__name__}: {exc or 'no detail'}"
    if isinstance(exc, OSError):
        return EXIT_ERROR, f"{type(exc).__name__}: {exc}"
    return EXIT_ERROR, f"unexpected error: {type(exc).__name__}: {exc} (run with -vv to see where)"


def _where(exc: httpx.TransportError) -> str:
    """host:port of the request `exc` is about ("the service" when it does not say)."""
    try:
        return f"{exc.request.url.host}:{exc.request.url.port or {'https': 443}.get(exc.request.url.scheme, 80)}"
    except RuntimeError:
        return "the service"


def _network_line(exc: httpx.TransportError) -> str:
    """Say which network step failed, in words, from httpx's exception and what caused it."""
    where = _where(exc)
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    text = str(exc).lower()
    if isinstance(cause, socket.gaierror) or "name or service not known" in text or "nodename nor servname" in text \
            or "no address associated" in text or "name resolution" in text:
        host = where.rsplit(":", 1)[0]
        return f"unknown host {host}: its name does not resolve; check the spelling of the URL"
    if isinstance(cause, ConnectionRefusedError) or "connection refused" in text or "errno 111" in text:
        return f"could not connect to {where}: connection refused; is the service running on that port?"
    if isinstance(exc, httpx.TimeoutException):
        return f"{where} did not answer in time ({type(exc).__name__}); try again later or check the URL"
    if isinstance(exc, httpx.RemoteProtocolError):  # connected, then the service hung up without an answer
        return (f"{where} closed the connection without answering ({clean(exc, 80) or type(exc).__name__}); try "
                "again later, and if it keeps happening the service is failing")
    return f"could not reach {where}: {type(exc).__name__}: {exc or 'no detail'}; check the URL and your network"


def _url(text: str) -> str:
    """The URL a command was given, if it is one httpay can request: http:// or https:// with a host."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text.strip())
        _ = parts.port
    except ValueError as exc:
        raise UsageError(f"{text!r} is not a URL httpay can read ({exc}); give a full http:// or https:// URL") from None
    if "://" not in text:
        host = urlsplit("//" + text.strip()).hostname or ""
        local = host == "localhost" or host.startswith("127.") or host == "::1"  # a local server speaks plain http
        raise UsageError(f"{text!r} is not a URL (no scheme): did you mean {'http' if local else 'https'}://{text.strip()}?")
    if parts.scheme.lower() not in ("http", "https"):
        raise UsageError(f"{text!r} is not an http:// or https:// URL: httpay speaks HTTP only")
    if not parts.hostname:
        raise UsageError(f"{text!r} has no host: give a full URL such as https://example.com/path")
    return text.strip()


def _knobs(args: argparse.Namespace) -> dict[str, str]:
    """How this command sets each knob a refusal may name: its flags, else the policy file's keys."""
    from httpay.config import POLICY_FIELDS

    policy_file = getattr(args, "policy", None) or os.environ.get("HTTPAY_POLICY")
    where = f"in {policy_file}" if policy_file else "in a policy file (--policy FILE or HTTPAY_POLICY)"
    knobs = {name: f"{name} {where}" for name in POLICY_FIELDS}
    if getattr(args, "payment_deadline", None) is not None:
        knobs["payment_deadline"] = "--payment-deadline"
    else:
        knobs["payment_deadline"] = (f"--payment-deadline SECONDS (or [client] payment_deadline {where})")
    if getattr(args, "command", None) in REQUEST_COMMANDS:
        knobs["approval_timeout"] = "--approval-timeout"
        knobs["max_price"] = (_flag(args, "max_price_sat", "--max-price-sat") if args.max_price_sat is not None
                              else _flag(args, "max_price_usd", "--max-cost"))
        if args.budget_usd is not None:
            knobs["budget_usd"] = "--budget-usd"
        knobs["usd_per_btc"] = "--usd-per-btc (or usd_per_btc " + where + ")"
    return knobs


def _run(args: argparse.Namespace, console: Console) -> int:
    if args.command == "demo":
        from httpay.demo.story import run_story

        return run_story(approve=args.approve, non_interactive=args.non_interactive, ledger=args.ledger,
                         budget_usd=args.budget_usd, max_per_payment_usd=args.max_per_payment_usd, console=console,
                         protocol=args.protocol)
    if args.command == "demo-server":
        from httpay.demo.runner import run

        run(host=args.host, port=args.port,
            on_ready=lambda url: console.print(f"httpay demo server (DEMO, no real money) on {url}", markup=False))
        return 0
    if args.command in REQUEST_COMMANDS:
        return _get(args, console)
    if args.command == "ledger":
        return _ledger(args, console)
    if args.command in PEOPLE_COMMANDS:
        return PEOPLE_COMMANDS[args.command](args, console)
    if args.command == "mcp":
        from httpay.apps.agent.mcp_server import serve

        _ask_flags(args)
        return serve(args.transport, host=args.host, port=args.port, payment_deadline=args.payment_deadline,
                     ask=args.ask, approval_timeout=args.approval_timeout or APPROVAL_TIMEOUT_S)
    raise AssertionError(args.command)


def _headers(raw: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for h in raw:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise HttpayError(f"header {h!r} must look like 'Name: value'")
        out[name.strip()] = value.strip()
    return out


def _get(args: argparse.Namespace, console: Console) -> int:
    """A request command: send it, paying a 402 within the policy; the body to stdout or -o FILE,
    progress on stderr (unless -q), and with --json one JSON document saying what happened."""
    import httpay

    args.url = _url(args.url)
    args.method = _method(args)
    _check_output(args.output)  # before anything is paid: a body bought must have somewhere to go
    _ask_flags(args)
    policy = _policy(args.policy)
    if args.budget_usd is not None:
        policy.budget_usd = args.budget_usd
    if args.usd_per_btc is not None:
        policy.usd_per_btc = args.usd_per_btc
    body, body_headers = _body(args)
    headers = {**body_headers, **_headers(args.header)}
    tags_from(args.tag)  # a bad --tag is a usage error before anything is sent, wallet or none
    if args.dry_run:
        return _dry_run(args, policy, console, headers, body)
    wallet = _wallet_or_none()
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if wallet is None:
        return _get_without_wallet(args, body, headers)
    queue = None
    if args.ask:
        from httpay.apps.approvals import ApprovalQueue, lines, named_queue, spinner

        named = named_queue(args.approvals)  # --approvals, else HTTPAY_APPROVALS, else the ledger's file
        queue = ApprovalQueue(named[0] if named else args.ledger, timeout_s=args.approval_timeout or APPROVAL_TIMEOUT_S,
                              progress=None if args.quiet else spinner(err) if err.is_terminal else lines(err))
        policy.approve = queue
    progress = None if args.quiet or args.json_output else _progress(err, asking=args.ask)
    try:
        with httpay.Client(wallet=wallet, policy=policy, ledger=args.ledger, timeout=30, on_event=progress,
                           tags=tags_from(args.tag), **_client_settings(args.policy, args.payment_deadline)) as c:
            ext = _max_price(c, args)
            try:
                r = c.request(args.method, args.url, headers=headers, content=body, extensions=ext)
            except httpay.PaymentRefused as exc:
                if exc.offers is not None and not args.quiet and not args.json_output:
                    from httpay.apps.display import offers_table

                    err.print(offers_table(exc.offers, title=f"{mask_urls(args.url)} asks for payment", usd_per_btc=_known_rate(c)))
                raise
    finally:
        if queue is not None:
            queue.close()
    rec = httpay.receipt_of(r)
    if rec is not None and not args.quiet and not args.json_output:
        from rich.text import Text

        err.print(Text("paid ", style="green") + plain(rec, MAX_LINE))
    return _body_out(r, args)


REQUEST_METHOD = re.compile(r"[A-Z][A-Z0-9_-]{0,19}")


def tags_from(given: Sequence[str]) -> dict[str, str]:
    """Tags from --tag KEY=VALUE flags, else from HTTPAY_TAGS ("agent=research,task=T-17")."""
    from httpay.core.payer import tags_from_text

    try:
        if given:
            return tags_from_text(given, "--tag")
        return tags_from_text(os.environ.get("HTTPAY_TAGS", ""), "HTTPAY_TAGS")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _tag_arg(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise UsageError(f"--tag {text!r} must be KEY=VALUE, e.g. agent=research")
    return key, value


def _method(args: argparse.Namespace) -> str:
    """The request's method: the command's, `-X` for `request` (curl: a body without -X is a POST)."""
    if args.command != "request":
        return str(args.method)
    method = (args.method or "GET").upper()
    if method == "GET" and (args.data is not None or args.json_body is not None) and "-X" not in sys.argv \
            and "--request" not in sys.argv:
        method = "POST"
    if not REQUEST_METHOD.fullmatch(method):
        raise UsageError(f"-X {args.method!r} is not an HTTP method (GET, POST, PUT, PATCH, DELETE, ...)")
    return method


def _body(args: argparse.Namespace) -> tuple[bytes | None, dict[str, str]]:
    """The request body from -d/--data or --json (text, @FILE or @- for stdin), and the headers curl
    sends with it."""
    if args.data is not None and args.json_body is not None:
        raise UsageError("-d/--data and --json BODY both give a body: use one")
    if args.data is not None:
        return _read_arg(args.data, "-d"), {"Content-Type": "application/x-www-form-urlencoded"}
    if args.json_body is not None:
        raw = _read_arg(args.json_body, "--json")
        try:
            json.loads(raw)
        except ValueError:
            raise UsageError("--json: the body is not JSON") from None
        return raw, {"Content-Type": "application/json", "Accept": "application/json"}
    return None, {}


def _read_arg(value: str, flag: str) -> bytes:
    if value == "@-":
        return sys.stdin.buffer.read()
    if value.startswith("@"):
        try:
            with open(value[1:], "rb") as f:
                return f.read()
        except OSError as exc:
            raise UsageError(f"{flag} {value}: cannot read the file ({exc.strerror or exc})") from None
    return value.encode()


def _progress(err: Console, *, asking: bool = False) -> Callable[[Any], None]:
    """Each step of a payment as one line on stderr, in a terminal or not (a script's log shows it). A
    failure is not among them: the command's own last line says it, once. `asking` (--ask): the
    quote is what a person is asked to approve, not yet a payment."""
    from httpay.core import events as ev

    def show(e: Any) -> None:
        if isinstance(e, ev.ChallengeMet):
            line = f"402 from {e.url}: {len(e.offers)} offer(s) ({e.protocol})"
        elif isinstance(e, ev.Quoted):
            line = f"asking a person to approve: {e.quote}" if asking else f"paying: {e.quote}"
        elif isinstance(e, ev.Approved):
            line = f"approved; paying: {e.quote}"
        elif isinstance(e, ev.Reserved):
            line = f"ledger #{e.receipt.id} written pending; paying"
        elif isinstance(e, ev.Waited):
            line = "waiting for another payment of this challenge (not paying twice)"
        elif isinstance(e, ev.Retried):
            line = f"retrying the request with the payment (attempt {e.attempt})"
        else:
            return
        err.print(plain(mask_urls(f"· {line}"), MAX_LINE, style="dim"))  # progress: never read as the one failure line

    return show


def _receipt_json(rec: Any) -> dict[str, Any] | None:
    """A receipt as a script reads it: amounts, hash, whether the preimage proves the payment, the row."""
    from httpay.ledger.models import Receipt

    if not isinstance(rec, Receipt):
        return None
    verified = rec.proof == "preimage verified"
    return {"ledger_id": rec.id, "status": rec.status.value, "amount_msat": rec.amount_msat, "fee_msat": rec.fee_msat,
            "payment_hash": rec.payment_hash, "proof_verified": verified, "dialect": rec.protocol,
            "method": rec.method, "offer_id": rec.offer_id, "offer_title": rec.offer_title, "host": rec.host,
            "url": rec.url, "note": rec.reason, "created_at": rec.created_at.isoformat()}


def _known_rate(c: Any) -> float | None:
    """The client's BTC/USD rate for a view, or None when it cannot tell (a view never fails on it)."""
    try:
        rate = resolve_rate(c.payer.policy, c.payer.wallet)
    except (HttpayError, httpx.HTTPError):
        return None
    return float(rate) if rate else None


APPROVAL_TIMEOUT_S = 300.0  # --ask: how long a person has to answer before no answer means no


def _ask_flags(args: argparse.Namespace) -> None:
    """--approval-timeout and --approvals say how a person is asked: without --ask nobody is, and the
    payment would go ahead unasked. A usage error rather than a flag quietly ignored."""
    given = [f for f, v in (("--approval-timeout", args.approval_timeout), ("--approvals", getattr(args, "approvals", None)))
             if v is not None]
    if given and not args.ask:
        verb = "works" if len(given) == 1 else "work"
        raise UsageError(f"{' and '.join(given)} only {verb} with --ask (hold each payment for a person); add --ask")


def _check_output(out: str | None) -> None:
    """-o FILE can be written: checked before the request, so a paid body is never bought for a
    file that cannot take it (a usage error, exit 2, nothing sent)."""
    if not out:
        return
    path = Path(out).expanduser()
    if path.is_dir():
        raise UsageError(f"-o {out}: that is a folder; name a file in it, e.g. -o {path / 'body.out'}")
    if not path.parent.is_dir():
        raise UsageError(f"-o {out}: the folder {path.parent} does not exist")
    if path.exists():
        try:
            open(path, "ab").close()  # opened as it will be, neither made nor emptied: a file that refuses says so now
        except OSError as exc:
            raise UsageError(f"-o {out}: that file cannot be written ({exc.strerror or exc})") from None
    elif not os.access(path.parent, os.W_OK):
        raise UsageError(f"-o {out}: its folder cannot be written by this user")


def _body_out(r: httpx.Response, args: argparse.Namespace | None = None) -> int:
    """The body to stdout (or -o FILE, bytes as sent); with --json, one JSON document instead; the
    exit code says whether the service answered an error. A body that cannot be written where -o
    says goes to stdout instead, and the command says so (with the payment, if one bought it)."""
    import httpay

    out = getattr(args, "output", None)
    quiet = bool(getattr(args, "quiet", False))
    unwritten: str | None = None
    if out:
        try:
            with open(Path(out).expanduser(), "wb") as f:
                f.write(r.content)
        except OSError as exc:
            unwritten, out = f"the body could not be written to {out} ({exc.strerror or exc}); it is on stdout", None
            paid = httpay.receipt_of(r)
            if paid is not None:
                unwritten += f"; it was paid for: {paid} (httpay ledger shows it)"
    if getattr(args, "json_output", False):
        try:
            text: str | None = None if out else r.content.decode(r.encoding or "utf-8")
        except (UnicodeDecodeError, LookupError):
            text = None
        print(json.dumps({"ok": r.status_code < 400, "url": str(r.request.url), "method": r.request.method,
                          "status": r.status_code, "paid": httpay.receipt_of(r) is not None,
                          "receipt": _receipt_json(httpay.receipt_of(r)), "saved_to": out,
                          "body_bytes": len(r.content), "body": text,
                          "content_type": r.headers.get("content-type"),
                          **({"error": unwritten} if unwritten else {})}, indent=2))
    elif not out and r.content:
        sys.stdout.write(r.text)
        if not r.text.endswith("\n"):
            sys.stdout.write("\n")
    elif out and not quiet:
        _note(f"the body ({len(r.content):,} bytes) is saved in {out}")
    elif not quiet:
        _note(f"HTTP {r.status_code} {r.reason_phrase}: no body".rstrip())
    if unwritten:
        _say(f"httpay: {unwritten}")
        return EXIT_ERROR
    if r.status_code >= 400:
        if not getattr(args, "json_output", False):
            _say(f"httpay: the service answered HTTP {r.status_code} {r.reason_phrase}".rstrip())
        return EXIT_HTTP
    return EXIT_OK


def _get_without_wallet(args: argparse.Namespace, body: bytes | None, headers: dict[str, str]) -> int:
    """No wallet configured: fetch the URL as plain HTTP; a 402 is shown, never paid. The body was
    read once already (stdin, for `-d @-`, can be read only once)."""
    from httpay.core.dialect import read_challenge

    with httpx.Client(timeout=30) as client:
        r = client.request(args.method, args.url, headers=headers, content=body)
    if r.status_code != 402:
        return _body_out(r, args)
    found = read_challenge(r.status_code, r.headers, r.content, url=args.url)
    if not found:
        return _body_out(r, args)
    from httpay.apps.display import offers_table

    Console(stderr=True).print(offers_table([o for c in found for o in c.offers],
                                            title=f"{mask_urls(args.url)} asks for payment ({_dialects(found)})"))
    raise PaymentRefused(
        f"refused: {args.url} asks for payment and no wallet is configured; set HTTPAY_WALLET (demo, lnbits, lnd, "
        "lightspark, fewsats, nwc) and its variables to pay it", rule="no_wallet", offers=tuple(o for c in found for o in c.offers),
    )


def _reconcile(args: argparse.Namespace, console: Console) -> int:
    from httpay.config import wallet_from_env
    from httpay.ledger import open_ledger
    from httpay.reconcile import reconcile

    where = _existing_ledger(args.ledger)
    wallet = wallet_from_env()
    with open_ledger(where) as lg:
        outcomes = reconcile(lg, wallet, grace_s=args.grace)
    wallet.close()
    if args.json:
        print(json.dumps([{"id": o.receipt.id, "outcome": o.outcome, "detail": o.detail,
                           "status": o.receipt.status.value, "wallet": o.receipt.wallet,
                           "wallet_id": o.receipt.wallet_id} for o in outcomes], indent=2))
    elif not outcomes:
        console.print("no pending payments: nothing to reconcile")
    else:
        for o in outcomes:
            console.print(plain(o, MAX_LINE))
    # EXIT_PAYMENT (4): a payment's outcome is still not settled: pending, in flight or another wallet's
    # (that wallet must reconcile it)
    return 0 if all(o.outcome not in ("pending", "other_wallet") for o in outcomes) else EXIT_PAYMENT


def _write_off(args: argparse.Namespace) -> int:
    """A pending payment a person has checked never went out (an x402 signature the service answered
    with 402 and never settled, an answer lost for a wallet that cannot look it up): failed, with
    the person's words, so budgets stop counting it. Only a pending row; never a settled one.

    A person's word never overrules a wallet that can tell: the configured wallet (`HTTPAY_WALLET`)
    is asked first, and a payment it proves it made is settled, not written off (the same wallet
    reached at another address proves it too). Only the wallet that made a Lightning payment can say
    it did not go out: unless it answered, the person says they looked it up (`--wallet-checked`).
    A row younger than `--grace` may still be paid by a live process: refused until it is older."""
    from httpay.config import wallet_from_env
    from httpay.ledger import Status, open_ledger
    from httpay.reconcile import owns, reconcile_one, who_paid

    if args.id is None or not (args.reason or "").strip():
        raise UsageError("ledger write-off needs --id ID and --reason TEXT (what you checked)")
    with open_ledger(_existing_ledger(args.ledger)) as lg:
        near = lg.receipts(after=args.id - 1, limit=1)  # by the primary key: the row, or the next one
        if not near or near[0].id != args.id:  # the same mistake as naming a row not pending: a usage error
            raise UsageError(f"ledger #{args.id} does not exist in {lg.url}: `httpay ledger` shows the payments and "
                             "their IDs; only a pending payment is written off")
        row = near[0]
        if row.status is not Status.PENDING:
            raise UsageError(f"ledger #{row.id} is {row.status.value}, not pending: only a pending payment is "
                             "written off")
        wallet = wallet_from_env() if os.environ.get("HTTPAY_WALLET") else None
        lightning = bool(row.payment_hash) and not (row.wallet_id or "").startswith("x402:")  # a signer's: no wallet
        own = wallet is not None and lightning and owns(wallet, row)
        try:
            if wallet is not None and lightning:
                found = reconcile_one(lg, wallet, row, grace_s=args.grace)
                if found.outcome == "settled":
                    print(f"ledger #{row.id} was paid: the wallet holds its proof, so it is recorded as settled and "
                          "still counted, not written off", file=sys.stderr)
                    return EXIT_PAYMENT
                if found.outcome == "failed":  # the wallet's word, and the person's beside it
                    lg.note(row.id, f"{found.receipt.reason}; written off by a person: {args.reason.strip()}")
                    print(f"ledger #{row.id} written off (failed) on the wallet's word: {found.detail}")
                    return EXIT_OK
                if found.outcome == "pending":
                    print(f"ledger #{row.id} is not written off: {found.detail}; it stays pending and counted",
                          file=sys.stderr)
                    return EXIT_PAYMENT
            mine = f" (this client holds {wallet.name} wallet {wallet.identity}, which holds no proof of it)" if (
                wallet is not None and not own) else ""
        finally:
            if wallet is not None:
                wallet.close()
        if lightning and not args.wallet_checked:
            print(f"ledger #{row.id} is not written off: only {who_paid(row)} can say whether it went out, and it "
                  f"did not answer here{mine}. Set HTTPAY_WALLET to that wallet to have it checked, or, once you "
                  "have looked the payment up in that wallet yourself, add --wallet-checked", file=sys.stderr)
            return EXIT_REFUSED
        age = (lg.now() - row.updated_at).total_seconds()
        if age < args.grace:
            print(f"ledger #{row.id} is not written off: it is only {age:.0f} s old, and a live process may still be "
                  f"paying it; try again once it is {args.grace:g} s old (--grace SECONDS)", file=sys.stderr)
            return EXIT_PAYMENT
        done = lg.fail(row.id, f"written off by a person: {args.reason.strip()}")
    print(f"ledger #{done.id} written off (failed): budgets no longer count its {done.amount_msat / 1000:,g} sat")
    return EXIT_OK


def _ledger(args: argparse.Namespace, console: Console) -> int:
    if args.action == "write-off":
        return _write_off(args)
    if args.action == "reconcile":
        return _reconcile(args, console)
    if args.action == "export":
        return _export(args)
    from httpay.amounts import fmt_msat
    from httpay.apps.display import receipts_table
    from httpay.ledger import open_ledger

    since = _since(args.since) if args.since else None
    tag = _tag_arg(args.tag)
    with open_ledger(_existing_ledger(args.ledger, fresh_ok=True)) as lg:
        hosts = _hosts(lg, args.host)  # equality on the host index, for each host:port recorded
        rows = lg.receipts(limit=args.limit, host=hosts, since=since, before=args.before, tag=tag)
        totals = lg.totals(host=hosts, since=since, tag=tag)  # in SQL: no row is read just to count it
        totals["committed_msat"] = lg.spent_msat(host=hosts, since=since, tag=tag)
        older = rows[-1].id if len(rows) == args.limit and rows[-1].id > 1 else None
        shown = None if args.host is None else str(args.host)
        if args.json:
            print(json.dumps({"ledger": lg.url, "since": since.isoformat() if since else None, "host": shown,
                              "hosts": hosts, "spent_msat": totals["committed_msat"], "totals": totals,
                              "before": args.before, "next_before": older,
                              "payments": [r.to_dict() for r in rows]}, indent=2))
            return 0
        if hosts is not None and not totals["count"] and not lg.totals(host=hosts)["count"]:  # ever, not only now
            _note(f"no payment to {shown} is recorded in this ledger; `httpay ledger` shows the hosts paid")
        scope = ((f" to {shown}" if args.host else "") + (f" tagged {tag[0]}={tag[1]}" if tag else "")
                 + (f" since {since:%Y-%m-%d %H:%M} UTC" if since else ""))
        console.print(receipts_table(rows, title=f"Ledger ({_fresh_name(lg.url)}){scope}"))
        console.print(
            f"{len(rows)} of {totals['count']} payment(s) shown{scope}. Settled {totals['settled']} "
            f"({fmt_msat(totals['settled_msat'])} + fees {fmt_msat(totals['fee_msat'])}), pending {totals['pending']} "
            f"({fmt_msat(totals['pending_msat'])}), failed {totals['failed']}; committed (settled + pending): "
            f"{fmt_msat(totals['committed_msat'])}"
        )
        if older is not None:
            console.print(f"older payments: httpay ledger --before {older}"
                          + (f" --limit {args.limit}" if args.limit != 50 else ""))
    return 0


EXPORT_FIELDS = ("id", "time", "status", "url", "host", "dialect", "method", "offer_id", "offer_title", "amount_msat",
                 "fee_msat", "usd", "usd_per_btc", "payment_hash", "proof", "tags", "note")


def export_row(r: Any) -> dict[str, Any]:
    """One payment as accounting reads it: what, to whom, how much (fee apart, USD at the rate the
    payment was quoted at), and its proof: the preimage verified against the hash, or the service's
    transaction id."""
    from fractions import Fraction

    from httpay.amounts import MSAT_PER_BTC

    proof = r.proof  # one rule for every view of a payment (Receipt.proof)
    usd = (Fraction(r.amount_msat + r.fee_msat, MSAT_PER_BTC) * Fraction(str(r.usd_per_btc))) if r.usd_per_btc else None
    return {"id": r.id, "time": r.created_at.isoformat(), "status": r.status.value, "url": r.url, "host": r.host,
            "dialect": r.protocol, "method": r.method, "offer_id": r.offer_id, "offer_title": r.offer_title,
            "amount_msat": r.amount_msat, "fee_msat": r.fee_msat,
            "usd": None if usd is None else f"{float(usd):.6f}", "usd_per_btc": r.usd_per_btc,
            "payment_hash": r.payment_hash, "proof": proof, "tags": dict(r.tags), "note": r.reason}


CSV_CELL = 32_000  # characters of one exported cell (a spreadsheet holds 32,767)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet run a cell (OWASP, CSV injection)


def csv_cell(value: object) -> object:
    """A CSV cell a spreadsheet shows as the text it is: server text cleaned (no escape sequence
    reaches a terminal or the file), and text starting like a formula prefixed with a quote, the
    usual neutraliser, so opening the export runs nothing. Numbers are left as they are."""
    if not isinstance(value, str):
        return value
    text = clean(value, CSV_CELL)
    return "'" + text if value.lstrip(" ").startswith(FORMULA_START) else text


def _export(args: argparse.Namespace) -> int:
    """Every payment (or those of --tag/--host/--since), oldest first, as JSON lines or CSV, paged by id
    so a ledger of a million rows streams in bounded memory. Never a preimage or a token. JSON escapes
    every control character itself; each CSV cell is made safe to open (`csv_cell`)."""
    import csv

    from httpay.ledger import open_ledger

    since = _since(args.since) if args.since else None
    tag = _tag_arg(args.tag)
    # opened first: a missing ledger writes nothing at all (httpay's default place not made yet: no payments)
    with open_ledger(_existing_ledger(args.ledger, fresh_ok=True)) as lg:
        hosts = _hosts(lg, args.host)
        writer = csv.DictWriter(sys.stdout, fieldnames=EXPORT_FIELDS) if args.format == "csv" else None
        if writer is not None:
            writer.writeheader()
        after = 0
        while True:  # oldest first, a page at a time by id: bounded memory at any size
            page = lg.receipts(limit=1000, host=hosts, since=since, tag=tag, after=after)
            if not page:
                break
            for r in page:
                row = export_row(r)
                if writer is not None:
                    tags = ";".join(f"{k}={v}" for k, v in sorted(row["tags"].items()))
                    writer.writerow({k: csv_cell(v) for k, v in (row | {"tags": tags}).items()})
                else:
                    sys.stdout.write(json.dumps(row) + "\n")
            after = page[-1].id
    return EXIT_OK


# -- for the people who watch agents: offers, budget, wallet, approvals, dashboard ---------------------

def _add_people_commands(sub: Any) -> None:
    o = sub.add_parser("offers", help="show what a URL offers for payment (asks, never pays)")
    o.add_argument("url")
    o.add_argument("-H", "--header", action="append", default=[], type=_header_arg, help="'Name: value' (repeatable)")
    o.add_argument("--usd-per-btc", type=_number(positive=True, what="real rate"),
                   help="BTC/USD rate to show sat (default: the policy's or the wallet's)")
    o.add_argument("-o", "--output", metavar="FILE", help="when the URL answers without asking for payment, save the body here")
    o.add_argument("--policy", help="policy TOML file whose choice is shown (default $HTTPAY_POLICY)")
    o.add_argument("--json", action="store_true", help="print JSON for scripts")

    t = sub.add_parser("tokens", help="the paid credentials held for reuse (L402 tokens...): list, or drop",
                       description="A paid L402 token is kept and presented again until the service answers 402. "
                                   "`list` shows where each is used and what paid for it (never the token); "
                                   "`drop SCOPE` (or `drop --all`) forgets one, so the next request pays again.")
    t.add_argument("action", nargs="?", choices=("list", "drop"), default="list")
    t.add_argument("scope", nargs="?", help="drop: the scope to forget, as `tokens list` shows it")
    t.add_argument("--all", action="store_true", help="drop: forget every held credential")
    t.add_argument("--ledger", help="ledger path or URL (default $HTTPAY_LEDGER or the user data dir)")
    t.add_argument("--json", action="store_true", help="print JSON for scripts")

    b = sub.add_parser("budget", help="spent vs each limit of the policy, per window")
    b.add_argument("--policy", help="policy TOML file (default $HTTPAY_POLICY)")
    b.add_argument("--ledger", help="ledger path or URL (default $HTTPAY_LEDGER or the user data dir)")
    b.add_argument("--usd-per-btc", type=_number(positive=True, what="real rate"),
                   help="BTC/USD rate for USD limits (default: the policy's or the wallet's)")
    b.add_argument("--json", action="store_true", help="print JSON for scripts")

    w = sub.add_parser("wallet", help="the wallet configured by HTTPAY_WALLET: balance, open-demo",
                       description="`httpay wallet balance` shows what the wallet in HTTPAY_WALLET can spend; "
                                   "`httpay wallet open-demo URL` opens a funded wallet on a demo server.")
    wsub = w.add_subparsers(dest="wallet_command", required=True, metavar="ACTION {balance,open-demo}")
    wb = wsub.add_parser("balance", help="what the wallet can spend")
    wb.add_argument("--json", action="store_true", help="print JSON for scripts")
    wo = wsub.add_parser("open-demo", help="open a funded wallet on a demo server and print its HTTPAY_ settings",
                         description="Open a wallet on `httpay demo-server` (regtest, no real money) and print "
                                     "the export of HTTPAY_WALLET=demo, HTTPAY_DEMO_URL and HTTPAY_DEMO_KEY, for "
                                     "`eval \"$(httpay wallet open-demo)\"`. "
                                     "The key spends that wallet's demo balance: keep it like a password.")
    wo.add_argument("url", nargs="?", default=DEMO_URL,
                    help="the demo server (default: http://127.0.0.1:8402, where `httpay demo-server` listens)")
    wo.add_argument("--balance-sat", type=_number(kind=int, positive=True), default=10_000,
                    help="the new wallet's demo balance in sat (default: 10,000)")

    a = sub.add_parser("approvals", help="payments waiting for a person: list (default), approve ID, deny ID",
                       description="Payments held by `httpay get --ask`, `httpay mcp --ask` or "
                                   "Policy(approve=ApprovalQueue(...)) wait here. `approve ID --offer OFFER_ID` approves "
                                   "another of the offers the list shows. The queue: --approvals PATH, else "
                                   "$HTTPAY_APPROVALS, else the ledger's file (--ledger, $HTTPAY_LEDGER), the rule "
                                   "`get --ask`, `mcp --ask` and `dashboard` follow.")
    _approval_options(a, argparse.SUPPRESS, top=True)
    asub = a.add_subparsers(dest="approvals_command", metavar="ACTION")
    al = asub.add_parser("list", help="approvals waiting for an answer")
    _approval_options(al, argparse.SUPPRESS)
    al.add_argument("--all", action="store_true", help="also show the ones already answered")
    for verb in ("approve", "deny"):
        av = asub.add_parser(verb, help=f"{verb} a waiting payment")
        av.add_argument("id", type=_number(kind=int, positive=True, what="approval number", most=MAX_ROW_ID),
                        help="the approval's number (from `httpay approvals list`)")
        av.add_argument("--by", help="who answers (default: your user name)")
        if verb == "deny":
            av.add_argument("--reason", help="why (shown to whoever reads the queue)")
        else:
            av.add_argument("--offer", metavar="OFFER_ID", dest="offer_id",
                            help="approve another of the service's offers instead (`httpay approvals` lists them); "
                                 "the paying request decides again for it with every limit")
        _approval_options(av, argparse.SUPPRESS)

    d = sub.add_parser("dashboard", help="a local web page to watch spending and answer approvals",
                       description="A local web page (127.0.0.1, a token in the URL): the ledger with the URL bought "
                                   "and the tags, refused attempts, budgets, spend by tag and over time, the balance "
                                   "of the wallet in HTTPAY_WALLET (when set), and approvals to answer.")
    d.add_argument("--ledger", help="ledger path or URL (default $HTTPAY_LEDGER or the user data dir)")
    d.add_argument("--approvals", metavar="PATH",
                   help="approval queue file (default: $HTTPAY_APPROVALS, else the ledger file)")
    d.add_argument("--policy", help="policy TOML file for the budgets (default $HTTPAY_POLICY)")
    d.add_argument("--usd-per-btc", type=_number(positive=True, what="real rate"),
                   help="BTC/USD rate for USD amounts (default: the policy's or the wallet's)")
    d.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    d.add_argument("--port", type=_port, default=8404, help="port (default 8404; 0 picks a free one)")


def _approval_options(p: argparse.ArgumentParser, default: Any, top: bool = False) -> None:
    """The queue options, accepted before or after the action (`approvals --json list` or `approvals list --json`)."""
    p.add_argument("--approvals", metavar="PATH", default=None if top else default,
                   help="approval queue file (default: $HTTPAY_APPROVALS, else the ledger file)")
    p.add_argument("--ledger", default=None if top else default, help="ledger file whose queue to use (default $HTTPAY_LEDGER)")
    p.add_argument("--json", action="store_true", default=False if top else default, help="print JSON for scripts")


FRESH = ":memory:"  # what a read-only command reads on a machine where nothing has paid yet


def _existing_ledger(where: str | None, what: str = "ledger", flag: str = "--ledger", *,
                     fresh_ok: bool = False) -> str:
    """The ledger a read-only command reads, which must exist: opening a mistyped path would create an
    empty ledger that reads as "nothing was spent". Only httpay's own default place may be missing,
    with `fresh_ok` (nothing has paid on this machine yet): then an empty ledger, created nowhere."""
    from httpay.ledger import default_ledger_path

    text = where or os.environ.get("HTTPAY_LEDGER") or str(default_ledger_path())
    if text.startswith(("postgres://", "postgresql://")) or text == ":memory:":
        return text
    path = os.path.expanduser(text.removeprefix("sqlite:///"))
    if os.path.isdir(path):
        raise ConfigError(f"{path} is a folder, not a {what} file: name the file (e.g. {os.path.join(path, 'ledger.sqlite3')})")
    if not os.path.isfile(path):
        default = not where and not os.environ.get("HTTPAY_LEDGER")
        if fresh_ok and default:
            return FRESH
        origin = flag if where else ("HTTPAY_LEDGER" if os.environ.get("HTTPAY_LEDGER") else "the default path")
        raise ConfigError(
            f"no {what} at {path} (from {origin}): the file does not exist; check the path "
            f"(a ledger is created by the first `httpay get` that pays)"
        )
    return text


def _fresh_name(url: str) -> str:
    """A ledger's name as a command shows it: the default place, said as not made yet, when nothing paid."""
    if url != FRESH:
        return url
    from httpay.ledger import default_ledger_path

    return f"{default_ledger_path()}, not made yet: nothing has paid on this machine"


def _policy(path: str | None) -> Any:
    import httpay

    found = _policy_or_none(path)
    return found if found is not None else httpay.Policy()


def _client_settings(path: str | None, payment_deadline: float | None) -> dict[str, Any]:
    """The client's own settings: the policy file's `[client]` table (or top-level `payment_deadline`),
    then the flags, which win."""
    from httpay.config import client_settings_from_toml

    policy_file = path or os.environ.get("HTTPAY_POLICY")
    settings = client_settings_from_toml(policy_file) if policy_file else {}
    if payment_deadline is not None:
        settings["payment_deadline"] = payment_deadline
    return settings


def _policy_or_none(path: str | None) -> Any:
    from httpay.config import policy_from_toml

    policy_file = path or os.environ.get("HTTPAY_POLICY")
    return policy_from_toml(policy_file) if policy_file else None


def _wallet_or_none() -> Any:
    """The configured wallet, or None when HTTPAY_WALLET is not set (looking needs no wallet)."""
    if not os.environ.get("HTTPAY_WALLET"):
        return None
    from httpay.config import wallet_from_env

    return wallet_from_env()


def _wallet_rate(wallet: Any) -> float | None:
    """The wallet's BTC/USD rate, resolved where every rate is (`httpay.core.rates`)."""
    from httpay.policy import Policy

    return resolve_rate(Policy(), wallet)


def _rate_for(policy: Any, explicit: float | None, wallet: Any = None) -> float | None:
    """--usd-per-btc, else the policy's rate (or its rate source), else the wallet's (if one is configured)."""
    if explicit:
        return float(explicit)
    from httpay.policy import Policy

    if wallet is not None:
        return resolve_rate(policy or Policy(), wallet)
    rate = resolve_rate(policy or Policy())
    if rate:
        return rate
    w = _wallet_or_none()
    if w is None:
        return None
    try:
        return resolve_rate(Policy(), w)
    finally:
        w.close()


def _since(text: str) -> datetime:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    now = datetime.now(UTC)
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
        try:
            return now - timedelta(**{unit: float(m.group(1))})
        except (OverflowError, ValueError):  # longer ago than any date: every payment is since then
            return datetime.min.replace(tzinfo=UTC)
    try:
        when = datetime.fromisoformat(text.strip())  # 3.11 reads a trailing Z
    except ValueError:
        raise ConfigError(f"--since {text!r}: use 30m, 1h, 1d, 1w or an ISO date/time such as 2026-11-25T10:00 (UTC)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _max_price(c: Any, args: argparse.Namespace) -> dict[str, Any]:
    if args.max_price_sat is not None:
        return c.max_price(sat=args.max_price_sat)  # type: ignore[no-any-return]
    if args.max_price_usd is None:
        return {}
    if not resolve_rate(c.payer.policy, c.payer.wallet):
        raise ConfigError(f"{_flag(args, 'max_price_usd', '--max-cost')} is in USD and no BTC/USD rate is known: pass "
                          "--usd-per-btc, set usd_per_btc in the policy file, or use --max-cost-sat")
    return c.max_price(args.max_price_usd)  # type: ignore[no-any-return]


def _look(url: str, headers: dict[str, str], wallet: Any, method: str = "GET",
          content: bytes | None = None) -> tuple[httpx.Response, Any]:
    """Send the request (GET unless the command names another method and body: a POST's 402 may not
    be its GET's) and read its 402 in every dialect the client pays (L402 v0.2, classic L402/LSAT,
    MPP, x402), paying nothing (the transport honours httpay_dry_run). Returns (response, every
    challenge of the 402, ranked: [] when there is none)."""
    import httpay
    from httpay.core.dialect import read_challenge
    from httpay.core.flow import DRY_RUN_EXTENSION

    if wallet is not None:
        with httpay.Client(wallet=wallet, ledger=":memory:", timeout=30, reconcile_grace_s=None) as c:
            r = c.request(method, url, headers=headers, content=content, extensions={DRY_RUN_EXTENSION: True})
    else:
        with httpx.Client(timeout=30) as plain:
            r = plain.request(method, url, headers=headers, content=content)
    return r, read_challenge(r.status_code, r.headers, r.content, url=url)


def _served(args: argparse.Namespace, r: httpx.Response, console: Console) -> int:
    """The URL answered without asking for payment: show (or save) what it served, and say so."""
    note = (f"HTTP {r.status_code}: no payment asked, nothing was paid; the service served the request "
            "(it may have used a credit of your account)" if r.status_code < 400 else
            f"HTTP {r.status_code} {r.reason_phrase}: the service answered an error, not a request for payment; "
            "nothing was paid")
    if args.output:
        try:
            with open(Path(args.output).expanduser(), "wb") as f:
                f.write(r.content)
        except OSError as exc:
            raise HttpayError(f"{note}, but the body could not be written to {args.output} "
                              f"({exc.strerror or exc})") from None
        note += f"; the body ({len(r.content):,} bytes) is saved in {args.output}"
    if args.json:
        print(json.dumps({"url": mask_urls(args.url), "status": r.status_code, "payment_required": False, "offers": [],
                          "may_have_used_a_credit": True, "saved_to": args.output,
                          "body": None if args.output else r.text}))
    else:
        if not args.output:
            sys.stdout.write(r.text + ("" if r.text.endswith("\n") else "\n"))
        _note(note)
    return EXIT_OK if r.status_code < 400 else EXIT_HTTP


def _note(line: str) -> None:
    from rich.text import Text

    Console(stderr=True, highlight=False, soft_wrap=True).print(Text(clean(line, MAX_LINE)))


def _offer_dicts(offers: Any, rate: float | None) -> list[dict[str, Any]]:
    return [o.to_dict() | {"price": str(o.price), "price_msat": o.price.in_msat(rate)} for o in offers]


def _offers(args: argparse.Namespace, console: Console) -> int:
    from httpay.apps.display import offers_table

    args.url = _url(args.url)
    _check_output(args.output)
    wallet = _wallet_or_none()
    network = wallet.network if wallet is not None else None  # an invoice for another network would be refused
    try:
        rate = _rate_for(_policy_or_none(args.policy), args.usd_per_btc, wallet)
        r, found = _look(args.url, _headers(args.header), wallet)
    finally:
        if wallet is not None:
            wallet.close()
    if r.status_code != 402:
        return _served(args, r, console)
    if not found:
        if args.json:
            print(json.dumps({"url": mask_urls(args.url), "status": r.status_code, "payment_required": True, "offers": []}))
        else:
            from httpay.core.dialect import dialects_read

            _note(f"HTTP 402, in a form httpay cannot read (not {dialects_read()}); nothing was paid")
        return EXIT_HTTP
    challenge = found[0]
    offers = [o for c in found for o in c.offers]  # every dialect's offers of the 402, side by side
    pr_url = getattr(challenge.raw, "payment_request_url", None) or None
    terms_url = getattr(challenge.raw, "terms_url", None)
    would = _would_pay(args.url, found, rate, args.policy, r.request, network)
    if args.json:
        print(json.dumps({"url": mask_urls(args.url), "status": r.status_code, "payment_required": True,
                          "protocol": challenge.dialect, "version": challenge.version,
                          "dialects": [c.dialect for c in found],
                          "payment_request_url": pr_url, "terms_url": terms_url,
                          "usd_per_btc": rate, "offers": _offer_dicts(offers, rate), "policy_would": would}, indent=2))
        return 0
    chosen = would.get("offer_id") if would["pay"] else None
    console.print(offers_table(offers, title=f"{mask_urls(args.url)} asks for payment ({_dialects(found)})",
                               usd_per_btc=rate, chosen=chosen))
    if pr_url:
        console.print(plain(f"payment requests go to {clean(pr_url)}"
                            + (f"; terms: {clean(terms_url)}" if terms_url else ""), MAX_LINE))
    console.print(plain(would["text"], MAX_LINE))
    console.print("Nothing was paid: `httpay get URL --dry-run` checks every budget against your ledger too.")
    return 0


def _would_pay(url: str, challenge: Any, rate: float | None, policy_file: str | None = None,
               request: httpx.Request | None = None, network: str | None = None) -> dict[str, Any]:
    """What the policy (HTTPAY_POLICY, else httpay's defaults) would do with this challenge: the flow's
    own quote and the dialect's checks before paying (`request`: the one sent; `network`: the configured
    wallet's), before any budget the ledger keeps (`--dry-run` checks those)."""
    from httpay.core.payer import Payer
    from httpay.core.preview import preview
    from httpay.ledger import open_ledger
    from httpay.policy import Policy

    policy = _policy_or_none(policy_file) or Policy()
    with open_ledger(":memory:") as lg:
        try:
            q = preview(Payer(wallet=None, policy=policy, ledger=lg), challenge, url=url, usd_per_btc=rate,
                        cannot_pay=_cli_cannot_pay(policy), request=request, network=network)
        except PaymentRefused as exc:
            return {"pay": False, "rule": exc.rule, "text": f"your policy would refuse: {exc.reason.removeprefix('refused: ')}"}
    return {"pay": True, "offer_id": q.offer.offer_id, "method": q.method, "price_msat": q.price_msat,
            "dialect": q.challenge.dialect,
            "text": f"your policy would pay {q.offer.offer_id} ({q.challenge.dialect}) by {q.method} for {q.offer.price}"}


def _dialects(found: Any) -> str:
    """The dialects of a 402's challenges by the one name every view, the ledger and --json give them
    ('l402-v0.2', 'l402-classic', 'mpp', 'x402'): the progress line, `offers` and `--dry-run` alike."""
    return ", ".join(dict.fromkeys(clean(c.dialect, 40) for c in found))


def _cli_cannot_pay(policy: Any) -> Callable[[Any], tuple[str, str] | None]:
    """What the httpay command can pay under `policy`: Lightning, with the wallet it is configured
    with (an offer that follows an unmerged proposal only where the policy opts in to it, as paying
    does: `proposals = [...]` in the policy file)."""
    opted_in = tuple(getattr(policy, "proposals", ()) or ())

    def cannot(offer: Any) -> tuple[str, str] | None:
        proposal = getattr(offer, "proposal", None)
        if proposal is not None and proposal not in opted_in:
            return "proposal", (f"{proposal} is a proposal, not a standard; httpay pays it only where the policy "
                                f"opts in: proposals = [{json.dumps(proposal)}] in the policy file (--policy, "
                                f"HTTPAY_POLICY), or Policy(proposals=[{proposal!r}]) from Python")
        if offer.rail == "lightning":
            return None
        return "no_signer", "the httpay command has no x402 signer (pay it from Python with Client(x402_signer=...))"
    return cannot


def _dry_run(args: argparse.Namespace, policy: Any, console: Console, headers: dict[str, str] | None = None,
             body: bytes | None = None) -> int:
    """Show what the request would pay, from the policy and the ledger alone; the wallet is never called.
    The request previewed is the one the command names: its method, headers and body."""
    from httpay.amounts import fee_cap_text, fmt_msat, price_and_worth
    from httpay.apps.display import offers_table
    from httpay.core.payer import Payer
    from httpay.core.preview import preview
    from httpay.errors import PaymentRefused
    from httpay.ledger import open_ledger
    from httpay.policy import usd_to_msat

    wallet = _wallet_or_none()
    network = wallet.network if wallet is not None else None  # an invoice for another network would be refused
    try:
        rate = _rate_for(policy, None, wallet)
        r, found = _look(args.url, _headers(args.header) if headers is None else headers, wallet,
                         method=getattr(args, "method", None) or "GET", content=body)
    finally:
        if wallet is not None:
            wallet.close()
    if not found:
        # exits as the request itself would: an error the service answered (a 402 unread among them) is EXIT_HTTP
        code = EXIT_HTTP if r.status_code >= 400 else EXIT_OK
        if args.json_output:
            print(json.dumps({"ok": code == EXIT_OK, "url": mask_urls(args.url), "status": r.status_code,
                              "payment_required": r.status_code == 402, "would_pay": False, "dry_run": True}))
        elif r.status_code == 402:
            from httpay.core.dialect import dialects_read

            _note(f"HTTP 402, in a form httpay cannot read (not {dialects_read()}); nothing would be paid")
        elif r.status_code >= 400:  # one line, as `httpay get` ends with
            _say(f"httpay: the service answered HTTP {r.status_code} {r.reason_phrase}".rstrip()
                 + ", not a request for payment; nothing would be paid (dry run)")
        else:
            _note(f"HTTP {r.status_code}: no payment asked; nothing would be paid (the service served the request "
                  "and may have used a credit)")
        return code
    challenge = found[0]
    offers = [o for c in found for o in c.offers]
    cap = args.max_price_sat * 1000 if args.max_price_sat is not None else None
    if args.max_price_usd is not None:
        if not rate:
            raise ConfigError(f"{_flag(args, 'max_price_usd', '--max-cost')} is in USD and needs a BTC/USD rate: pass "
                              "--usd-per-btc or configure a wallet")
        usd_cap = usd_to_msat(args.max_price_usd, rate)
        cap = usd_cap if cap is None else min(cap, usd_cap)
    result: dict[str, Any] = {"url": mask_urls(args.url), "status": r.status_code, "payment_required": True, "dry_run": True,
                              "protocol": challenge.dialect}
    try:
        where = _existing_ledger(args.ledger)
    except ConfigError:
        where = ":memory:"  # no ledger yet: nothing spent, and a dry run creates none
    with open_ledger(where) as lg:
        try:
            # the flow's one quote, on the policy and the ledger alone (no wallet is asked), with the
            # very check the ledger makes when reserving (the fee cap held too)
            d = preview(Payer(wallet=None, policy=policy, ledger=lg), found, url=args.url, usd_per_btc=rate,
                        max_price_msat=cap, with_budgets=True, cannot_pay=_cli_cannot_pay(policy), request=r.request,
                        network=network)
        except PaymentRefused as exc:
            result |= {"would_pay": False, "rule": exc.rule, "reason": exc.render(_knobs(args))}
            d = None
    if d is not None:
        result |= {"would_pay": True, "offer_id": d.offer.offer_id, "title": d.offer.title, "method": d.method,
                   "price_msat": d.price_msat, "fee_cap_msat": d.fee_cap_msat, "price": str(d.offer.price),
                   "ask_a_person": bool(args.ask)}
    if args.json_output:
        print(json.dumps(result | {"offers": _offer_dicts(offers, rate)}, indent=2))
    else:
        console.print(offers_table(offers, title=f"{mask_urls(args.url)} asks for payment ({_dialects(found)})", usd_per_btc=rate,
                                   chosen=d.offer.offer_id if d else None))
        if d is not None:
            price = fmt_msat(d.price_msat, rate) if d.price_msat is not None else d.offer.price
            from rich.text import Text

            console.print(Text("would pay", style="green") + Text(
                f" {clean(d.offer.offer_id, 80)} '{clean(d.offer.title)}': {price_and_worth(clean(d.offer.price), str(price))}"
                f"{fee_cap_text(d.fee_cap_msat, rate)} by {clean(d.method, 80)}"
                + (", after a person approves it" if args.ask else "")))
        else:
            from rich.text import Text

            console.print(Text("would not pay", style="red") + Text(f" ({clean(result['rule'], 80)}): {clean(result['reason'], MAX_LINE)}"))
        console.print("dry run: nothing was paid, the wallet was not called")
    return 0 if d is not None else refusal_code(str(result["rule"]))


def _budget(args: argparse.Namespace, console: Console) -> int:
    import httpay
    from httpay.amounts import fmt_msat
    from httpay.apps.display import budget_lines, budget_table
    from httpay.ledger import open_ledger

    found = _policy_or_none(args.policy)
    policy = found if found is not None else httpay.Policy()
    rate = _rate_for(policy, args.usd_per_btc)
    with open_ledger(_existing_ledger(args.ledger, fresh_ok=True)) as lg:
        lines = budget_lines(policy, lg, rate)
        committed = lg.spent_msat()
        where = _fresh_name(lg.url)
    if args.json:
        print(json.dumps({"policy": args.policy or os.environ.get("HTTPAY_POLICY"), "ledger": where, "usd_per_btc": rate,
                          "unlimited": policy.is_unlimited, "limits_in_force": policy.describe_limits(),
                          "committed_msat": committed, "limits": [b.to_dict() for b in lines]}, indent=2))
        return 0
    from rich.text import Text

    console.print(budget_table(lines, rate, title=f"Budget (ledger {where})"))
    if found is None:
        console.print("no policy file (--policy or HTTPAY_POLICY): httpay's default limits apply: "
                      + ", ".join(x.removesuffix(" (default)") for x in policy.describe_limits()))
    elif policy.is_unlimited:
        console.print(Text("(the policy file sets default_limits = false and no limit of its own)", style="bold red"))
    console.print(f"committed so far (settled + pending): {fmt_msat(committed, rate)}")
    return 0


def _demo_url_words(url: str) -> str:
    """` URL` for `httpay wallet open-demo URL`, or nothing for its default (the README's `eval "$(httpay wallet open-demo)"`)."""
    return "" if url.rstrip("/") == DEMO_URL else f" {shlex.quote(url)}"


def _wallet(args: argparse.Namespace, console: Console) -> int:
    from httpay.amounts import fmt_msat
    from httpay.config import wallet_from_env

    if args.wallet_command == "open-demo":
        from httpay.wallets.demo import DemoWallet

        opened = DemoWallet.create(_url(args.url), balance_sat=args.balance_sat)
        print(f"export HTTPAY_WALLET=demo HTTPAY_DEMO_URL={shlex.quote(opened.base_url)} "
              f"HTTPAY_DEMO_KEY={shlex.quote(opened.reveal_key())}")
        # how to use it only when the settings are shown, not taken: under `eval "$(...)"` they are in use
        # already, and telling the person to run what they just ran would open another wallet
        hint = (f"; to pay with it: eval \"$(httpay wallet open-demo{_demo_url_words(opened.base_url)})\""
                if sys.stdout.isatty() else "")
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"opened demo wallet {opened.wallet_id} with {args.balance_sat:,} sat (regtest, no real money){hint}",
            markup=False)
        opened.close()
        return 0

    with wallet_from_env() as w:
        try:
            balance = w.balance_msat()
        except NotImplementedError:
            raise HttpayError(f"the {w.name} wallet cannot tell its balance") from None
        rate = _wallet_rate(w)
    if args.json:
        print(json.dumps({"wallet": w.name, "network": w.network, "balance_msat": balance, "usd_per_btc": rate}))
    else:
        console.print(plain(f"{w.name} wallet on {w.network}: {fmt_msat(balance, rate)}", MAX_LINE))
    return 0


def _who() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "cli"


def _approvals(args: argparse.Namespace, console: Console) -> int:
    from httpay.apps.approvals import ApprovalQueue, named_queue, unfit_note
    from httpay.apps.display import approvals_table

    action = args.approvals_command or "list"
    if named := named_queue(args.approvals):  # --approvals, else HTTPAY_APPROVALS (where `mcp --ask` asks)
        where = _existing_ledger(named[0], "approval queue", named[1])
    else:  # listing on a machine where nothing has asked yet: an empty queue, made nowhere
        where = _existing_ledger(args.ledger, fresh_ok=action == "list")
    with ApprovalQueue(where) as q:
        if action == "list":
            # the waiting ones, and those whose request is gone (listed as such: answering them pays nothing)
            items = q.recent(50) if getattr(args, "all", False) else sorted(q.pending() + q.unanswerable(),
                                                                            key=lambda a: a.id)
            if args.json:
                print(json.dumps({"queue": _fresh_name(q.path), "approvals": [a.to_dict() for a in items]}, indent=2))
                return 0
            console.print(approvals_table(items, title=f"Approvals ({_fresh_name(q.path)})"))
            if getattr(args, "all", False):
                return 0
            if first := next((a for a in items if a.answerable), None):
                other = next((c.offer_id for c in first.choices if c.offer_id != first.offer_id), None)
                console.print(plain(f"answer with `httpay approvals approve {first.id}` or `httpay approvals deny {first.id}`"
                                    + (f"; `httpay approvals approve {first.id} --offer {other}` approves another offer"
                                       if other else ""), MAX_LINE))
            if gone := [a for a in items if not a.answerable]:
                console.print(plain(f"no request waits for {', '.join(f'#{a.id} ({a.state})' for a in gone[:10])} any "
                                    "more: nothing will be paid for " + ("it" if len(gone) == 1 else "them"), MAX_LINE))
            return 0
        offer_id = getattr(args, "offer_id", None)
        a = q.decide(args.id, action == "approve", args.by or _who(), getattr(args, "reason", None), offer_id=offer_id)
    if args.json:
        print(json.dumps(a.to_dict()))
    else:
        console.print(plain(a, MAX_LINE, style="green" if a.status == "approved" else "red"))
    if (note := unfit_note(a)) is not None:
        _note(f"note: {note}")
    return 0


def _dashboard(args: argparse.Namespace, console: Console) -> int:
    import httpay
    from httpay.apps.dashboard import RunningDashboard, create_app, run

    where: str | None = _existing_ledger(args.ledger, fresh_ok=True)
    if where == FRESH:  # nothing has paid here yet: the default ledger is made now, as `httpay get` makes it,
        where = None    # so the page sees the first payment and the first approval an agent asks for
        from httpay.ledger import default_ledger_path

        _note(f"note: no ledger yet at {default_ledger_path()} (nothing has paid on this machine): made it empty, "
              "for the first payment and approval to show here")
    from httpay.apps.approvals import named_queue

    named = named_queue(args.approvals)  # --approvals, else HTTPAY_APPROVALS, else (None) the ledger's file
    approvals = _existing_ledger(named[0], "approval queue", named[1]) if named else None
    policy = _policy_or_none(args.policy) or httpay.Policy()
    wallet, wallet_note = None, None
    try:  # the balance it shows; a wallet that is set up wrong is a note on the page, not a refusal to start
        wallet = _wallet_or_none()
    except HttpayError as exc:
        wallet_note = f"no wallet: {exc}"
        _note(f"note: {wallet_note}")
    try:
        rate = _rate_for(policy, args.usd_per_btc, wallet)
    except HttpayError:
        rate = None
    app = create_app(where, policy=policy, usd_per_btc=rate, approvals=approvals, wallet=wallet, wallet_note=wallet_note)

    def ready(d: RunningDashboard) -> None:
        print(f"httpay dashboard: {d.page_url}", flush=True)
        print("local only; the token in the URL is the key to it, don't share it. Ctrl-C stops.", flush=True)

    try:
        run(app, host=args.host, port=args.port, on_ready=ready)
    finally:
        if wallet is not None:
            wallet.close()
    return 0


def _tokens(args: argparse.Namespace, console: Console) -> int:
    """List the held credentials (scope, the payment behind each, expiry; never a token), or drop them."""
    from dataclasses import replace

    from httpay.ledger import open_ledger
    from httpay.view import Column, Row, View, row

    with open_ledger(_existing_ledger(args.ledger, fresh_ok=args.action == "list")) as lg:
        held = lg.token_info()
        if args.action == "drop":
            if args.all == bool(args.scope):
                raise UsageError("tokens drop: name one SCOPE (as `httpay tokens list` shows it) or pass --all")
            # a host's scope names its kinds too ("https://h#svc", one per service it fronts)
            targets = [t["scope"] for t in held if args.all or t["scope"] == args.scope
                       or t["scope"].startswith(f"{args.scope}#")] or ([] if args.all else [args.scope])
            dropped = [scope for scope in targets if lg.drop_token(scope)]
            if args.json:
                print(json.dumps({"dropped": dropped}))
            elif dropped:
                console.print(plain(f"dropped {len(dropped)} credential(s): {', '.join(dropped)}; the next request "
                                    "there pays again", MAX_LINE))
            elif args.all:
                console.print("no credentials were held: nothing to drop")
            if not dropped and not args.all:
                raise UsageError(f"no credential is held for {args.scope!r}; `httpay tokens list` shows the scopes")
            return EXIT_OK
    if args.json:
        print(json.dumps({"tokens": held}, indent=2))
        return EXIT_OK
    # the scope whole (folded, never cut with an ellipsis): it is what `tokens drop SCOPE` takes; on a
    # terminal under TOKENS_WIDE columns the hash and times are shorter, never cut (80 columns read whole)
    def when(text: str | None, size: int) -> str:
        return text[:size].replace("T", " ") if text else ""

    def table(short: bool) -> tuple[tuple[Column, ...], tuple[Row, ...]]:
        size, digits = (16, 8) if short else (19, 16)
        columns = (Column("scope", style="code", overflow="fold", min_width=20 if short else 24),
                   Column("paid by" if short else "paid by (payment hash)", wrap=not short,
                          hint="the payment hash of the payment that bought it"),
                   Column("stored (UTC)", wrap=not short), Column("expires (UTC)", wrap=not short))
        return columns, tuple(row(clean(t["scope"], 200),
                                  clean(t["payment_hash"][:digits] + "…", 20) if t["payment_hash"] else "—",
                                  when(t["created_at"], size) or "—", when(t["expires_at"], size) or "never said")
                              for t in held)
    title = f"Held credentials ({len(held)})"
    wide, narrow = View(title, *table(False), name="tokens"), View(title, *table(True), name="tokens")
    console.print(replace(wide, narrow=narrow, narrow_below=TOKENS_WIDE).to_rich())
    if not held:
        console.print("No credential is held: every paid request so far bought one request, or none was reusable.")
    return EXIT_OK


TOKENS_WIDE = 100  # `httpay tokens list` on a narrower terminal: the hash and times shorter (minutes, 8 hex)


PEOPLE_COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "offers": _offers, "budget": _budget, "wallet": _wallet, "approvals": _approvals, "dashboard": _dashboard,
    "tokens": _tokens,
}


if __name__ == "__main__":
    raise SystemExit(main())
