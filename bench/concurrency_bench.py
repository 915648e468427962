"""200 concurrent requests meeting one 402: time until all are served, as a ratio of the time
one paid request takes, measured in the same run on the local demo service."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import httpay


def _broke_account(base: str) -> dict[str, str]:
    auth = {"Authorization": f"Bearer {httpx.get(f'{base}/signup').json()['id']}"}
    httpx.get(f"{base}/ticker/AAPL", headers=auth)
    return auth


def _wallet(base: str, latency_s: float) -> httpay.DemoWallet:
    """A demo wallet; `latency_s` makes each payment take as long as a real Lightning payment might."""
    wallet = httpay.DemoWallet.create(base, balance_sat=100_000)
    if latency_s:
        pay = wallet.pay_invoice

        def slow_pay(bolt11: str, **kw):  # type: ignore[no-untyped-def]
            time.sleep(latency_s)
            return pay(bolt11, **kw)

        wallet.pay_invoice = slow_pay  # type: ignore[method-assign]
    return wallet


def one_paid_request(base: str, tmp: str, i: int, latency_s: float) -> float:
    auth = _broke_account(base)
    wallet = _wallet(base, latency_s)
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_usd=50, max_per_payment_usd=5, strategy="covers_calls",
                                                           calls=200), ledger=f"{tmp}/one-{i}-{latency_s}.sqlite3") as c:
        c.get(f"{base}/info", headers=auth)  # warm the connection
        t = time.perf_counter()
        r = c.get(f"{base}/ticker/MSFT", headers=auth)
        took = time.perf_counter() - t
    assert r.status_code == 200 and httpay.receipt_of(r) is not None
    return took


def crowd(base: str, tmp: str, i: int, n: int, latency_s: float) -> float:
    auth = _broke_account(base)
    wallet = _wallet(base, latency_s)
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_usd=50, max_per_payment_usd=5, strategy="covers_calls",
                                                           calls=n), ledger=f"{tmp}/crowd-{i}-{latency_s}.sqlite3",
                       limits=httpx.Limits(max_connections=n), timeout=60) as c, ThreadPoolExecutor(n) as pool:
        c.get(f"{base}/info", headers=auth)
        t = time.perf_counter()
        codes = list(pool.map(lambda _: c.get(f"{base}/ticker/MSFT", headers=auth).status_code, range(n)))
        took = time.perf_counter() - t
        paid = len(c.ledger.receipts())
        assert codes == [200] * n and paid == 1, (sorted(set(codes)), paid, latency_s)
    return took


@contextmanager
def demo_server_process() -> Iterator[str]:
    """The demo service in its own process, so the crowd's client work does not share its GIL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "httpay.apps.cli", "demo-server", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(f"{base}/ln/node", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def plain_crowd(base: str, n: int) -> float:
    """The floor: n plain httpx GETs from n threads (no 402, no httpay), the same shape of traffic
    the waiters send once the payment is made."""
    auth = _broke_account(base)
    with httpx.Client(limits=httpx.Limits(max_connections=n), timeout=60) as c, ThreadPoolExecutor(n) as pool:
        c.get(f"{base}/info", headers=auth)
        t = time.perf_counter()
        list(pool.map(lambda _: c.get(f"{base}/info", headers=auth), range(n)))
        return time.perf_counter() - t


def run(quick: bool = False, n: int = 200) -> list[tuple[str, str, str]]:
    reps = 3 if quick else 9  # the crowd moves by 0.3 between runs of 5
    lines = []
    with demo_server_process() as base, tempfile.TemporaryDirectory() as tmp:
        for latency, label in ((0.0, "instant demo wallet"), (0.3, "wallet taking 300 ms, like a real payment")):
            singles = [one_paid_request(base, tmp, i, latency) for i in range(reps)]
            crowds = [crowd(base, tmp, i, n, latency) for i in range(reps)]
            floors = [plain_crowd(base, n) for _ in range(reps)]
            one, many, floor = statistics.median(singles), statistics.median(crowds), statistics.median(floors)
            lines += [
                (f"{n} plain httpx GETs from {n} threads, no 402 (median)", f"{floor * 1e3:.1f} ms", "reference"),
                (f"{n} concurrent on one 402 / (one paid request + {n} plain GETs), {label}",
                 f"{many / (one + floor):.2f}", "~1: httpay adds nothing to what the threads cost"),
                (f"one paid request, {label} (median)", f"{one * 1e3:.1f} ms", "reference"),
                (f"{n} concurrent requests on one 402 all served, {label} (median)", f"{many * 1e3:.1f} ms",
                 "reference"),
                (f"{n} concurrent on one 402 / one paid request, {label}", f"{many / one:.2f}",
                 "<= 1.2, 1 payment" if latency else "reported: no wallet time to hide the crowd behind"),
            ]
    return lines


if __name__ == "__main__":
    for name, value, target in run():
        print(f"{name}: {value} ({target})")
