"""A paying process that is killed (SIGKILL) at one point of the pipeline, for fault-injection tests.

Points: before_wallet (ledger says pending, wallet never called), after_wallet (wallet paid, the
answer never recorded), after_settle (recorded, the paid request's retry not yet at the service: the
payment is written down beside the retry, so the retry is held here for the kill to land first),
after_retry (the service has answered the paid retry, the settle not yet written: the settle is held
until then, and the kill lands in it), none.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import httpay


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main(base: str, key: str, ledger: str, token: str, point: str, path: str = "/ticker/MSFT") -> None:
    wallet = httpay.DemoWallet(base, key)
    pay = wallet.pay_invoice

    def pay_and_maybe_die(bolt11: str, **kw):  # type: ignore[no-untyped-def]
        if point == "before_wallet":
            die()
        result = pay(bolt11, **kw)
        if point == "after_wallet":
            die()
        return result

    wallet.pay_invoice = pay_and_maybe_die  # type: ignore[method-assign]
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_usd=1), ledger=ledger, timeout=30,
                       reconcile_grace_s=0) as c:
        settle = c.ledger.settle

        answered = threading.Event()

        def settle_and_maybe_die(*a, **kw):  # type: ignore[no-untyped-def]
            if point == "after_retry":
                answered.wait(60)
                die()
            result = settle(*a, **kw)
            if point == "after_settle":
                die()
            return result

        c.ledger.settle = settle_and_maybe_die  # type: ignore[method-assign]
        if point in ("after_settle", "after_retry"):
            inner: Any = c._transport.inner  # type: ignore[attr-defined]
            handle, sent = inner.handle_request, []

            def watch_the_retry(request: Any) -> Any:
                retry = request.url.path == path and len(sent) == 1  # the second send of the path: the paid retry
                if request.url.path == path:
                    sent.append(request)
                if retry and point == "after_settle":
                    threading.Event().wait(60)  # the record beside it dies first
                answer = handle(request)
                if retry:
                    answered.set()
                return answer

            inner.handle_request = watch_the_retry
        headers = {"Authorization": f"Bearer {token}"} if token else {"Idempotency-Key": "call-1"}
        r = c.get(f"{base}{path}", headers=headers)
        print(r.status_code)


if __name__ == "__main__":
    main(*sys.argv[1:7])
