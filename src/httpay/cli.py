"""The `httpay` command: the demo, the demo server, paid GETs and the ledger."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from rich.console import Console

from httpay.errors import HttpayError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="httpay", description="An HTTP client that pays 402 Payment Required within limits you set.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log each step (-vv for debug)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="tell the notebook's story offline against the local demo service")
    mode = d.add_mutually_exclusive_group()
    mode.add_argument("--non-interactive", action="store_true", help="never ask a person (as an agent would run it)")
    mode.add_argument("--approve", action="store_true", help="ask y/n before paying")
    d.add_argument("--ledger", help="ledger file for the demo (default: a throwaway file)")
    d.add_argument("--budget-usd", type=float, default=5.0)
    d.add_argument("--max-per-payment-usd", type=float, default=1.0)

    s = sub.add_parser("demo-server", help="run the local demo stock service (loopback only, no real money)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8402)

    g = sub.add_parser("get", help="GET a URL, paying a 402 if the policy allows (wallet from HTTPAY_WALLET)")
    g.add_argument("url")
    g.add_argument("-H", "--header", action="append", default=[], help="'Name: value' (repeatable)")
    g.add_argument("--max-price-usd", type=float, help="cap what this request may pay")
    g.add_argument("--budget-usd", type=float, help="total budget (default from the policy file)")
    g.add_argument("--usd-per-btc", type=float, help="BTC/USD rate for USD limits (default: the wallet's)")
    g.add_argument("--policy", help="policy TOML file (default $HTTPAY_POLICY)")
    g.add_argument("--ledger", help="ledger path or postgresql:// URL (default $HTTPAY_LEDGER or the user data dir)")

    lg = sub.add_parser("ledger", help="show the payments recorded in the ledger")
    lg.add_argument("--ledger", help="ledger path or URL (default $HTTPAY_LEDGER or the user data dir)")
    lg.add_argument("--limit", type=int, default=50)
    lg.add_argument("--json", action="store_true", help="print JSON for scripts")

    m = sub.add_parser(
        "mcp", help="serve the httpay tools to agents over MCP (wallet, policy, ledger from the environment)",
        epilog="environment: HTTPAY_WALLET (+ its variables), HTTPAY_POLICY (TOML file), HTTPAY_LEDGER, "
               'HTTPAY_HEADERS (JSON object of headers for the service, e.g. {"Authorization": "Bearer ..."}), '
               "HTTPAY_BASE_URL (the service those headers belong to)",
    )
    m.add_argument("--transport", choices=("stdio", "http"), default="stdio", help="stdio (default) or streamable HTTP")
    m.add_argument("--host", default="127.0.0.1", help="HTTP only; loopback addresses only")
    m.add_argument("--port", type=int, default=8403, help="HTTP only (default 8403)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    console = Console()
    try:
        return int(_run(args, console) or 0)
    except HttpayError as exc:
        Console(stderr=True).print(f"[red]httpay: {type(exc).__name__}: {exc}[/]")
        return 1
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, console: Console) -> int:
    if args.command == "demo":
        from httpay.demo.story import run_story

        return run_story(approve=args.approve, non_interactive=args.non_interactive, ledger=args.ledger,
                         budget_usd=args.budget_usd, max_per_payment_usd=args.max_per_payment_usd, console=console)
    if args.command == "demo-server":
        from httpay.demo.runner import run

        console.print(f"httpay demo server (DEMO, no real money) on http://{args.host}:{args.port}")
        run(host=args.host, port=args.port)
        return 0
    if args.command == "get":
        return _get(args, console)
    if args.command == "ledger":
        return _ledger(args, console)
    if args.command == "mcp":
        from httpay.agent.mcp_server import serve

        return serve(args.transport, host=args.host, port=args.port)
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
    import httpay
    from httpay.config import policy_from_toml, wallet_from_env

    policy_file = args.policy or os.environ.get("HTTPAY_POLICY")
    policy = policy_from_toml(policy_file) if policy_file else httpay.Policy()
    if args.budget_usd is not None:
        policy.budget_usd = args.budget_usd
    if args.usd_per_btc is not None:
        policy.usd_per_btc = args.usd_per_btc
    wallet = wallet_from_env()
    with httpay.Client(wallet=wallet, policy=policy, ledger=args.ledger, timeout=30) as c:
        ext = c.max_price(args.max_price_usd) if args.max_price_usd is not None else {}
        try:
            r = c.get(args.url, headers=_headers(args.header), extensions=ext)
        except httpay.PaymentRefused as exc:
            Console(stderr=True).print(f"[red]{exc}[/]")
            if exc.offers is not None:
                Console(stderr=True).print(exc.offers)
            return 3
    rec = httpay.receipt_of(r)
    if rec is not None:
        Console(stderr=True).print(f"[green]paid[/] {rec}")
    sys.stdout.write(r.text)
    if not r.text.endswith("\n"):
        sys.stdout.write("\n")
    return 0 if r.status_code < 400 else 4


def _ledger(args: argparse.Namespace, console: Console) -> int:
    from httpay.display import receipts_table
    from httpay.ledger import open_ledger
    from httpay.policy import fmt_msat

    with open_ledger(args.ledger) as lg:
        rows = lg.receipts(limit=args.limit)
        if args.json:
            print(json.dumps({"ledger": lg.url, "spent_msat": lg.spent_msat(), "payments": [r.to_dict() for r in rows]}, indent=2))
            return 0
        console.print(receipts_table(rows, title=f"Ledger ({lg.url})"))
        console.print(f"{len(rows)} payment(s) shown; committed (settled + pending): {fmt_msat(lg.spent_msat())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
