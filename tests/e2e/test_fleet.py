"""A fleet on one PostgreSQL ledger (issue 15): agent processes, each with its own wallet, sharing
one budget. A crashed agent's payment is never written off by another agent; a process whose
clock is off by seconds never makes a challenge be paid twice.

Real parts: the demo service's Lightning network (a wallet per agent), a real PostgreSQL server
(tests/fixtures/postgres.py), real processes killed with SIGKILL.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

import httpay
from httpay.demo.runner import RunningServer
from httpay.ledger import Status, open_ledger
from httpay.reconcile import reconcile
from tests.fixtures.postgres import clean_postgres_url, postgres_url  # noqa: F401  # fixtures used by name

ROOT = Path(__file__).resolve().parents[2]
ONE_PAYMENT = {"budget_sat": 25}  # a 10 sat payment holds 10 sat + a 10 sat fee cap: room for one, not two


def child(**args: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, "-m", "tests.e2e.fleet_child", json.dumps(args)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120, check=False)


def new_wallet(demo: RunningServer) -> str:
    return str(httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 10_000}).json()["key"])


def broke_account(demo: RunningServer) -> str:
    token = str(httpx.get(f"{demo.url}/signup").json()["id"])
    assert httpx.get(f"{demo.url}/ticker/AAPL", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    return token


def payments_of(demo: RunningServer, key: str) -> int:
    return len(demo.app.state.demo.network.wallet_for_key(key).payments)


def test_a_crashed_agents_payment_is_never_written_off_by_another_agent(
        demo: RunningServer, clean_postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """Agent A pays and is SIGKILLed before it records the settle. Agent B (another demo wallet, same
    kind) starts, reconciles, and must leave A's payment pending and counted: a budget for one payment
    then refuses B's own. A's restart settles it. One payment left the fleet, one is recorded."""
    key_a, key_b = new_wallet(demo), new_wallet(demo)
    p = child(base=demo.url, key=key_a, ledger=clean_postgres_url, token=broke_account(demo), policy=ONE_PAYMENT,
              die="after_wallet")
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert payments_of(demo, key_a) == 1
    wallet_a, wallet_b = httpay.DemoWallet(demo.url, key_a), httpay.DemoWallet(demo.url, key_b)
    with open_ledger(clean_postgres_url) as lg:
        [row] = lg.receipts()
        assert row.status is Status.PENDING and row.wallet_id == wallet_a.identity != wallet_b.identity

    caplog.set_level(logging.INFO)
    with httpay.Client(wallet=wallet_b, policy=httpay.Policy(**ONE_PAYMENT), ledger=clean_postgres_url,
                       reconcile_grace_s=0) as b:
        with pytest.raises(httpay.PaymentRefused) as refused:
            b.get(f"{demo.url}/ticker/MSFT", headers={"Authorization": f"Bearer {broke_account(demo)}"})
        assert refused.value.rule == "budget", refused.value
        [outcome] = reconcile(b.ledger, wallet_b, grace_s=0)
    assert outcome.outcome == "other_wallet" and outcome.receipt.status is Status.PENDING
    assert wallet_a.identity in outcome.detail and "HTTPAY_WALLET" in outcome.detail
    assert f"payment #{row.id} is pending and was made with the demo wallet {wallet_a.identity}" in caplog.text
    assert key_a not in caplog.text and key_b not in caplog.text
    assert payments_of(demo, key_b) == 0, "B paid nothing: A's payment still counts in the budget"
    with open_ledger(clean_postgres_url) as lg:
        assert lg.get(row.id).status is Status.PENDING and lg.spent_msat() == 20_000

    with httpay.Client(wallet=wallet_a, policy=httpay.Policy(**ONE_PAYMENT), ledger=clean_postgres_url,
                       reconcile_grace_s=0):
        pass  # A's next start reconciles its own payment with its own wallet
    with open_ledger(clean_postgres_url) as lg:
        settled = lg.get(row.id)
        assert settled.status is Status.SETTLED and settled.preimage and lg.pending() == []
        assert lg.spent_msat() == 10_000 == payments_of(demo, key_a) * 10_000


@pytest.mark.parametrize("skew_s", [-3.0, 3.0, -300.0])
def test_a_worker_with_a_skewed_clock_never_causes_a_second_payment(
        demo: RunningServer, clean_postgres_url: str, skew_s: float) -> None:  # noqa: F811
    """B meets the 402; before B pays, worker A (its clock `skew_s` off, and its own wallet) pays that
    very challenge and settles. B must see A's payment as made after its 402 and use it: one payment."""
    token = broke_account(demo)
    key_a, key_b = new_wallet(demo), new_wallet(demo)
    policy = {"strategy": "covers_calls", "calls": 5, "budget_usd": 5, "max_per_payment_usd": 5}
    ran: list[subprocess.CompletedProcess[str]] = []

    def on_event(event: httpay.Event) -> None:
        if event.kind == "challenge" and not ran:  # B has met the 402 and not yet paid: A pays now
            ran.append(child(base=demo.url, key=key_a, ledger=clean_postgres_url, token=token, policy=policy,
                             skew_s=skew_s))

    with httpay.Client(wallet=httpay.DemoWallet(demo.url, key_b), policy=httpay.Policy(**policy),
                       ledger=clean_postgres_url, on_event=on_event) as b:
        r = b.get(f"{demo.url}/ticker/MSFT", headers={"Authorization": f"Bearer {token}"})
    assert ran and ran[0].returncode == 0 and json.loads(ran[0].stdout) == 200, ran[0].stderr
    assert r.status_code == 200
    assert payments_of(demo, key_a) == 1 and payments_of(demo, key_b) == 0, "one challenge, one payment"
    with open_ledger(clean_postgres_url) as lg:
        assert [x.status for x in lg.receipts()] == [Status.SETTLED]


def test_a_fleet_of_eight_processes_never_overspends(clean_postgres_url: str) -> None:  # noqa: F811
    """8 agent processes (each its own wallet, several threads, every request its own 402) on one
    PostgreSQL budget that fits 80% of them: never a msat over, exactly what fits is paid, each hash
    once, every payment that left a wallet settled, nothing left pending (bench/fleet_bench.py's
    own run, asserted)."""
    from bench.fleet_bench import run_fleet

    res = run_fleet(clean_postgres_url, processes=8, threads=2, pool_size=2)
    assert all(res["checks"].values()), (res["checks"], res["errors"])
    assert res["paid"] == 12 and res["requests"] == 16
