"""Crash safety: a real process is killed at each point of the pipeline; the next start
reconciles with the wallet. No double payment, no lost record, the budget stays right."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import httpay
from httpay.demo.runner import RunningServer
from httpay.ledger import SQLiteLedger, Status

ROOT = Path(__file__).resolve().parents[2]
POINTS = ["before_wallet", "after_wallet", "after_settle", "none"]


def run_child(demo: RunningServer, key: str, ledger: Path, token: str, point: str,
              path: str = "/ticker/MSFT") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, "-m", "tests.e2e.fault_child", demo.url, key, str(ledger), token, point,
                           path],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def broke_account(demo: RunningServer) -> tuple[str, dict[str, str]]:
    token = httpx.get(f"{demo.url}/signup").json()["id"]
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{demo.url}/ticker/AAPL", headers=auth).status_code == 200
    return token, auth


def wallet_payments(demo: RunningServer, key: str) -> int:
    return len(demo.app.state.demo.network.wallet_for_key(key).payments)


def recover(demo: RunningServer, key: str, ledger: Path, auth: dict[str, str]) -> httpx.Response:
    """The next start: reconcile, then ask again (paying only if nothing was paid)."""
    with httpay.Client(wallet=httpay.DemoWallet(demo.url, key), policy=httpay.Policy(budget_usd=1), ledger=ledger,
                       reconcile_grace_s=0) as c:
        return c.get(f"{demo.url}/ticker/MSFT", headers=auth)


def check_invariant(demo: RunningServer, key: str, ledger: Path, budget_msat: int) -> None:
    with SQLiteLedger(ledger) as lg:
        settled = lg.receipts(status=Status.SETTLED)
        assert lg.pending() == [], "nothing may stay pending after reconciliation"
        assert len(settled) == wallet_payments(demo, key), "wallet payments == settled ledger rows"
        assert lg.spent_msat() <= budget_msat
        assert sum(r.amount_msat + r.fee_msat for r in settled) == lg.spent_msat()


@pytest.mark.parametrize(("point", "failed_rows"), [("before_wallet", 1), ("after_wallet", 0), ("after_settle", 0)])
def test_kill_at_each_point(demo: RunningServer, ledger_path: Path, point: str, failed_rows: int) -> None:
    key = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 1_000}).json()["key"]
    token, auth = broke_account(demo)
    p = run_child(demo, key, ledger_path, token, point)
    assert p.returncode == -signal.SIGKILL, p.stderr
    with SQLiteLedger(ledger_path) as lg:
        [row] = lg.receipts()
        assert row.status is (Status.SETTLED if point == "after_settle" else Status.PENDING)
    assert wallet_payments(demo, key) == (0 if point == "before_wallet" else 1)

    r = recover(demo, key, ledger_path, auth)
    assert r.status_code == 200 and r.json()["symbol"] == "MSFT"
    assert wallet_payments(demo, key) == 1, "exactly one payment, whatever the crash"
    with SQLiteLedger(ledger_path) as lg:
        assert len(lg.receipts(status=Status.FAILED)) == failed_rows
        [settled] = lg.receipts(status=Status.SETTLED)
        assert settled.preimage and settled.amount_msat == 10_000
    check_invariant(demo, key, ledger_path, 100_000_000)


def test_killed_once_the_paid_answer_came_and_before_its_record(demo: RunningServer, ledger_path: Path) -> None:
    """The retry and the record run at once, so a process can die after the service served the paid
    retry and before the settle is written. The row stays pending with its hash; the next start
    settles it from the wallet. The credit it bought was spent on that answer, which the application
    never saw: asking again pays once more, and the books still match the wallet."""
    key = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 1_000}).json()["key"]
    token, auth = broke_account(demo)
    p = run_child(demo, key, ledger_path, token, "after_retry")
    assert p.returncode == -signal.SIGKILL, p.stderr
    with SQLiteLedger(ledger_path) as lg:
        [row] = lg.receipts()
        assert row.status is Status.PENDING and row.payment_hash  # written down, not yet settled
    assert wallet_payments(demo, key) == 1

    r = recover(demo, key, ledger_path, auth)
    assert r.status_code == 200 and r.json()["symbol"] == "MSFT"
    assert wallet_payments(demo, key) == 2, "the credit was spent on the lost answer: one more payment"
    with SQLiteLedger(ledger_path) as lg:
        settled = lg.receipts(status=Status.SETTLED)
        assert len(settled) == 2 and row.id in {s.id for s in settled}  # reconciled, then the new one
        assert not lg.receipts(status=Status.FAILED) and not lg.receipts(status=Status.PENDING)
    check_invariant(demo, key, ledger_path, 100_000_000)


@pytest.mark.parametrize("point", ["after_wallet", "after_settle"])
def test_a_classic_l402_token_paid_before_a_crash_is_used_not_bought_again(demo: RunningServer, ledger_path: Path,
                                                                           point: str) -> None:
    """A classic L402 payment buys a token for its scope. Killed after the wallet paid and before
    the token was stored, the next start reconciles the row and holds the token again (its macaroon
    was written with the pending row, the preimage comes from the wallet): the next request
    presents it. It used to pay a second time for the access already bought."""
    key = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 1_000}).json()["key"]
    p = run_child(demo, key, ledger_path, "", point, "/l402/ticker/AAPL")
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert wallet_payments(demo, key) == 1
    with httpay.Client(wallet=httpay.DemoWallet(demo.url, key), policy=httpay.Policy(budget_usd=1),
                       ledger=ledger_path, reconcile_grace_s=0) as c:
        for _ in range(2):
            r = c.get(f"{demo.url}/l402/ticker/AAPL")
            assert r.status_code == 200 and r.json()["symbol"] == "AAPL"
    assert wallet_payments(demo, key) == 1, "the token bought before the crash serves; nothing is bought again"
    with SQLiteLedger(ledger_path) as lg:
        [settled] = lg.receipts()
        assert settled.status is Status.SETTLED and settled.protocol == "l402-classic"
        assert lg.token_scopes(), "the token is held again"
    check_invariant(demo, key, ledger_path, 100_000_000)


@pytest.mark.parametrize("point", ["before_wallet", "after_wallet", "after_settle"])
def test_kill_at_each_point_of_an_mpp_charge(demo: RunningServer, ledger_path: Path, point: str) -> None:
    """An MPP lightning charge buys one request, and the application names its call with an
    Idempotency-Key: killed anywhere, the pending row is reconciled by its payment hash and the
    application's retry (the same key) never pays again. Killed after recording the
    credential, the retry presents that payment (the challenge it answered, its preimage); killed
    between the wallet's payment and that record, there is no credential to present, so the retry
    is refused by name with the receipt (CallAlreadyPaid) instead of paying twice; killed before
    the wallet, nothing was paid and the retry pays once."""
    key = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 1_000}).json()["key"]
    p = run_child(demo, key, ledger_path, "", point, "/mpp/ticker/MSFT")
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert wallet_payments(demo, key) == (0 if point == "before_wallet" else 1)
    with httpay.Client(wallet=httpay.DemoWallet(demo.url, key), policy=httpay.Policy(budget_usd=1),
                       ledger=ledger_path, reconcile_grace_s=0) as c:
        if point == "after_wallet":
            with pytest.raises(httpay.CallAlreadyPaid) as caught:
                c.get(f"{demo.url}/mpp/ticker/MSFT", headers={"Idempotency-Key": "call-1"})
            assert caught.value.receipt.status is Status.SETTLED and "nothing is paid twice" in str(caught.value)
        else:
            r = c.get(f"{demo.url}/mpp/ticker/MSFT", headers={"Idempotency-Key": "call-1"})
            assert r.status_code == 200 and r.json()["symbol"] == "MSFT"
    assert wallet_payments(demo, key) == 1, "exactly one payment, whatever the crash"
    with SQLiteLedger(ledger_path) as lg:
        [settled] = lg.receipts(status=Status.SETTLED)
        assert settled.protocol == "mpp" and settled.preimage
        assert len(lg.receipts(status=Status.FAILED)) == (1 if point == "before_wallet" else 0)
    check_invariant(demo, key, ledger_path, 100_000_000)


def test_a_lost_wallet_answer_is_looked_up_not_paid_again(demo: RunningServer, ledger_path: Path) -> None:
    _, auth = broke_account(demo)
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=1_000)
    pay = wallet.pay_invoice

    def pay_then_lose_the_answer(bolt11: str, **kw):  # type: ignore[no-untyped-def]
        pay(bolt11, **kw)
        raise httpay.PaymentTimeout("the answer was lost on the way back")

    wallet.pay_invoice = pay_then_lose_the_answer  # type: ignore[method-assign]
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_usd=1), ledger=ledger_path) as c:
        r = c.get(f"{demo.url}/ticker/MSFT", headers=auth)
    assert r.status_code == 200
    assert wallet.balance_msat() == 990_000
    with SQLiteLedger(ledger_path) as lg:
        assert [x.status for x in lg.receipts()] == [Status.SETTLED]


def test_randomized_crashes_keep_the_books_right(demo: RunningServer, ledger_path: Path) -> None:
    seed = int(os.environ.get("HTTPAY_STRESS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    key = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 1_000_000}).json()["key"]
    budget_msat = 100_000_000  # Policy(budget_usd=1) at 100,000 USD/BTC
    rounds = int(os.environ.get("HTTPAY_STRESS_ROUNDS", "8"))
    for i in range(rounds):
        token, auth = broke_account(demo)
        point = rng.choice(POINTS)
        run_child(demo, key, ledger_path, token, point)
        if rng.random() < 0.7:
            r = recover(demo, key, ledger_path, auth)
            assert r.status_code == 200, f"seed {seed}, round {i}, point {point}"
        else:  # sometimes only reconcile, as `httpay ledger reconcile` would
            from httpay.reconcile import reconcile

            with SQLiteLedger(ledger_path) as lg:
                reconcile(lg, httpay.DemoWallet(demo.url, key), grace_s=0)
        try:
            check_invariant(demo, key, ledger_path, budget_msat)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}, round {i}, point {point}: {exc}") from None
