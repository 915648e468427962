"""One call sent several times at once, on the demo's real routes: the application names it with its
own Idempotency-Key, and threads (or tasks, or clients sharing one ledger, as processes would) send
it together. The first to reserve pays; every other presents that very payment (the same signed
payload, the same preimage) once it is kept, and is served the service's answer to it. Never a
second payment, never a spurious "already paid" error. The key names the operation for the whole
call window: sent again after its answer, it presents the payment again rather than paying twice."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import httpay
from httpay.demo.runner import RunningServer
from httpay.ledger import SQLiteLedger, Status
from httpay.signers import EvmSigner
from tests.hostile.harness import run_many

RATE = 100_000.0
N = 12
KEY = "order-2026-0042-abcdef"


@pytest.mark.parametrize("clients", [1, 3])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_one_mpp_call_sent_at_once_pays_once_and_serves_every_send(demo: RunningServer, ledger_path: Path,
                                                                   mode: str, clients: int) -> None:
    key = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 1_000}).json()["key"]
    done = run_many(mode, f"{demo.url}/mpp/ticker/MSFT", N, wallet=httpay.DemoWallet(demo.url, key),
                    ledger=ledger_path, policy=httpay.Policy(budget_usd=1), clients=clients,
                    send={"headers": {"Idempotency-Key": KEY}})
    assert not done.errors, [f"{type(e).__name__}: {e}" for e in done.errors]
    assert done.statuses == [200] * N
    assert len(demo.app.state.demo.network.wallet_for_key(key).payments) == 1, "one payment for the one call"
    with SQLiteLedger(ledger_path) as lg:
        assert [(r.status, r.protocol) for r in lg.receipts()] == [(Status.SETTLED, "mpp")]


@pytest.mark.parametrize("clients", [1, 3])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_one_x402_call_sent_at_once_signs_once_and_serves_every_send(demo: RunningServer, ledger_path: Path,
                                                                     mode: str, clients: int) -> None:
    done = run_many(mode, f"{demo.url}/x402/ticker/AAPL", N, wallet=None, ledger=ledger_path, clients=clients,
                    policy=httpay.Policy(methods=["x402"], usd_per_btc=RATE, max_per_payment_usd=0.10),
                    x402_signer=EvmSigner.create(), method="POST",
                    send={"content": b'{"note": "one quote"}', "headers": {"Idempotency-Key": KEY}})
    assert not done.errors, [f"{type(e).__name__}: {e}" for e in done.errors]
    assert done.statuses == [200] * N
    [settled] = demo.app.state.x402.settlements
    assert settled["id"] == KEY, "the application's key is the payment id"
    with SQLiteLedger(ledger_path) as lg:
        [row] = lg.receipts()
        assert (row.status, row.amount_msat) == (Status.SETTLED, 10_000)
        assert lg.spent_msat() == 10_000


def test_a_call_named_by_its_key_and_answered_is_presented_again_not_paid_again(demo: RunningServer,
                                                                               ledger_path: Path) -> None:
    """Sequential sends: the same key within the call window is the same operation; another key is another."""
    key = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 1_000}).json()["key"]
    with httpay.Client(wallet=httpay.DemoWallet(demo.url, key), policy=httpay.Policy(budget_usd=1),
                       ledger=ledger_path) as c:
        first = c.get(f"{demo.url}/mpp/ticker/MSFT", headers={"Idempotency-Key": KEY})
        again = c.get(f"{demo.url}/mpp/ticker/MSFT", headers={"Idempotency-Key": KEY})
        other = c.get(f"{demo.url}/mpp/ticker/MSFT", headers={"Idempotency-Key": KEY + "-2"})
    assert first.status_code == again.status_code == other.status_code == 200
    assert again.json() == first.json(), "the service's answer to the same payment"
    assert httpay.receipt_of(again) is not None and httpay.receipt_of(again).id == httpay.receipt_of(first).id
    assert len(demo.app.state.demo.network.wallet_for_key(key).payments) == 2, "one payment per key, not per send"
