"""One payment per challenge: 200 concurrent requests meeting one 402 (threads, asyncio tasks,
4 processes sharing a ledger) make exactly one payment, and every request is served."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

import httpay
from httpay.demo.runner import RunningServer
from httpay.ledger import SQLiteLedger, Status

ROOT = Path(__file__).resolve().parents[2]
N = 200


def policy() -> httpay.Policy:
    # buy enough credits for all of them at once: one payment must serve the crowd
    return httpay.Policy(strategy="covers_calls", calls=N, max_per_payment_usd=5, budget_usd=6)  # $4.99 + its fee cap (1%) fits


def payments_at_wallet(demo: RunningServer, wallet_key: str) -> int:
    return len(demo.app.state.demo.network.wallet_for_key(wallet_key).payments)


def check_one_payment(demo: RunningServer, ledger_path: Path, key: str, auth: dict[str, str]) -> None:
    with SQLiteLedger(ledger_path) as lg:
        rows = lg.receipts()
        assert [r.status for r in rows] == [Status.SETTLED], rows
        assert rows[0].offer_id == "offer_a896b13c" and lg.spent_msat() == 4_990_000
    assert payments_at_wallet(demo, key) == 1
    credits = httpx.get(f"{demo.url}/info", headers=auth).json()["credits"]
    assert credits == 750 - N


def test_threads(demo: RunningServer, account: dict[str, str], ledger_path: Path) -> None:
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=100_000)
    with httpay.Client(wallet=wallet, policy=policy(), ledger=ledger_path, timeout=60) as c, ThreadPoolExecutor(N) as pool:
        codes = list(pool.map(lambda _: c.get(f"{demo.url}/ticker/MSFT", headers=account).status_code, range(N)))
    assert codes == [200] * N
    check_one_payment(demo, ledger_path, wallet._DemoWallet__key, account)  # type: ignore[attr-defined]


def test_asyncio_tasks(demo: RunningServer, account: dict[str, str], ledger_path: Path) -> None:
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=100_000)

    async def go() -> list[int]:
        async with httpay.AsyncClient(wallet=wallet, policy=policy(), ledger=ledger_path, timeout=60,
                                      limits=httpx.Limits(max_connections=N)) as c:
            rs = await asyncio.gather(*(c.get(f"{demo.url}/ticker/MSFT", headers=account) for _ in range(N)))
        return [r.status_code for r in rs]

    assert asyncio.run(go()) == [200] * N
    check_one_payment(demo, ledger_path, wallet._DemoWallet__key, account)  # type: ignore[attr-defined]


def test_four_processes_share_one_ledger(demo: RunningServer, account: dict[str, str], ledger_path: Path) -> None:
    key = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 100_000}).json()["key"]
    token = account["Authorization"].split()[1]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.e2e.concurrent_child", demo.url, key, str(ledger_path),
                               token, str(N // 4)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env, cwd=ROOT) for _ in range(4)]
    codes: list[int] = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        codes += json.loads(out)
    assert codes == [200] * N
    check_one_payment(demo, ledger_path, key, account)


def test_mpp_one_payment_per_challenge(demo: RunningServer, ledger_path: Path) -> None:
    """MPP: a lightning charge buys one request, so 40 concurrent requests each pay their own
    challenge once (40 payments, 40 distinct settled rows, none twice); on Aperture's l402+mpp 402
    the same crowd buys one token and is served by it."""
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=100_000)
    key = wallet._DemoWallet__key  # type: ignore[attr-defined]
    n = 40
    with httpay.Client(wallet=wallet, ledger=ledger_path, timeout=60) as c, ThreadPoolExecutor(n) as pool:
        codes = list(pool.map(lambda _: c.get(f"{demo.url}/mpp/ticker/MSFT").status_code, range(n)))
        assert codes == [200] * n
        with SQLiteLedger(ledger_path) as lg:
            rows = lg.receipts()
        assert [r.status for r in rows] == [Status.SETTLED] * n and {r.protocol for r in rows} == {"mpp"}
        assert len({r.payment_hash for r in rows}) == n and payments_at_wallet(demo, key) == n
        codes = list(pool.map(lambda _: c.get(f"{demo.url}/aperture/ticker/AAPL").status_code, range(n)))
    assert codes == [200] * n
    assert payments_at_wallet(demo, key) == n + 1
    with SQLiteLedger(ledger_path) as lg:
        assert [r.protocol for r in lg.receipts(limit=1)] == ["l402-classic"]
