"""Run in a separate process by the concurrency tests: many threads hit one 402 at once."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import httpay


def main(base: str, key: str, ledger: str, token: str, n: int) -> None:
    wallet = httpay.DemoWallet(base, key)
    policy = httpay.Policy(strategy="covers_calls", calls=200, max_per_payment_usd=5, budget_usd=6)  # $4.99 + its fee cap (1%) fits
    auth = {"Authorization": f"Bearer {token}"}
    with httpay.Client(wallet=wallet, policy=policy, ledger=ledger, timeout=60) as c, ThreadPoolExecutor(n) as pool:
        codes = list(pool.map(lambda _: c.get(f"{base}/ticker/MSFT", headers=auth).status_code, range(n)))
    print(json.dumps(codes))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
