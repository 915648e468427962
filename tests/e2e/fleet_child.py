"""One agent of a fleet, run in its own process by tests/e2e/test_fleet.py and bench/fleet_bench.py.

`python -m tests.e2e.fleet_child '<json>'` with: base (demo service), key (this agent's own demo
wallet), ledger (the fleet's PostgreSQL URL), token (the account to query with), policy (Policy
kwargs), die ("after_wallet": SIGKILL once the wallet paid, before the ledger hears of it; or
"none"), skew_s (this process's clock, and only this process's, runs that many seconds off).
Prints the HTTP status it got, or the error's type.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import datetime, timedelta
from typing import Any

import httpay


def skew_clock(seconds: float) -> None:
    """Replace httpay's clock in this process with one `seconds` off (wherever a module holds it)."""
    from httpay.ledger import base

    real = base.now_utc

    def skewed() -> datetime:
        return real() + timedelta(seconds=seconds)

    for name, module in list(sys.modules.items()):
        if name.startswith("httpay") and getattr(module, "now_utc", None) is real:
            module.now_utc = skewed  # type: ignore[attr-defined]


def main(args: dict[str, Any]) -> None:
    if args.get("skew_s"):
        skew_clock(float(args["skew_s"]))
    wallet = httpay.DemoWallet(args["base"], args["key"])
    if args.get("die") == "after_wallet":
        pay = wallet.pay_invoice

        def pay_and_die(bolt11: str, **kw: Any) -> Any:
            pay(bolt11, **kw)
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        wallet.pay_invoice = pay_and_die  # type: ignore[method-assign]
    policy = httpay.Policy(**args.get("policy", {}))
    with httpay.Client(wallet=wallet, policy=policy, ledger=args["ledger"], timeout=60, reconcile_grace_s=0) as c:
        try:
            r = c.get(f"{args['base']}/ticker/MSFT", headers={"Authorization": f"Bearer {args['token']}"})
            print(json.dumps(r.status_code))
        except httpay.HttpayError as exc:
            print(json.dumps(type(exc).__name__))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
