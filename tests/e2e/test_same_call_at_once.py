"""One call sent several times at once, on the demo's real routes: the application names it with its
own Idempotency-Key, and threads (or tasks, or clients sharing one ledger, as processes would) send
it together. The first to reserve pays; every other presents that very payment (the same signed
payload, the same preimage) once it is kept, and is served the service's answer to it. Never a
second payment, never a spurious "already paid" error. The key names the operation for the whole
call window: sent again after its answer, it presents the payment again rather than paying twice."""

from __future__ import annotations

import hashlib
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


@pytest.mark.parametrize("key", [KEY, "op-42"], ids=["payment-id-key", "short-key"])
@pytest.mark.parametrize("clients", [1, 3])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_one_x402_call_sent_at_once_signs_once_and_serves_every_send(demo: RunningServer, ledger_path: Path,
                                                                     mode: str, clients: int, key: str) -> None:
    """The waiters present the signed payment once the service has answered the first send (never
    while it is being settled), and the service answers them by its payment id: the key itself,
    or, for a key not of an id's form, an id made from it (the same for every send)."""
    done = run_many(mode, f"{demo.url}/x402/ticker/AAPL", N, wallet=None, ledger=ledger_path, clients=clients,
                    policy=httpay.Policy(methods=["x402"], usd_per_btc=RATE, max_per_payment_usd=0.10),
                    x402_signer=EvmSigner.create(), method="POST",
                    send={"content": b'{"note": "one quote"}', "headers": {"Idempotency-Key": key}})
    assert not done.errors, [f"{type(e).__name__}: {e}" for e in done.errors]
    assert done.statuses == [200] * N
    [settled] = demo.app.state.x402.settlements
    assert settled["id"] == (key if key == KEY else "pay_" + hashlib.sha256(key.encode()).hexdigest()[:40])
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


def test_a_call_whose_first_payment_fails_is_paid_by_the_request_that_waited(demo: RunningServer,
                                                                             ledger_path: Path) -> None:
    """The first send of the call reserves, and its wallet then refuses (nothing left it); the other
    send, waiting to present that payment, finds it failed and pays the call itself: one payment,
    one row settled, one failed, and the first send's error is the wallet's own."""
    import threading
    import time

    key = httpx.post(f"{demo.url}/ln/wallets", json={"balance_sat": 1_000}).json()["key"]

    class FailsFirst(httpay.DemoWallet):
        calls = 0

        def pay_invoice(self, bolt11: str, **kw: object) -> object:  # type: ignore[override]
            FailsFirst.calls += 1
            if FailsFirst.calls == 1:
                time.sleep(0.3)  # the other send arrives meanwhile and waits
                raise httpay.InsufficientFunds("the wallet refused this one")
            return super().pay_invoice(bolt11, **kw)  # type: ignore[arg-type]

    wallet = FailsFirst(demo.url, key)
    outcomes: dict[str, object] = {}
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_usd=1), ledger=ledger_path) as c:
        def send(name: str) -> None:
            try:
                outcomes[name] = c.get(f"{demo.url}/mpp/ticker/MSFT", headers={"Idempotency-Key": KEY}).status_code
            except Exception as exc:  # noqa: BLE001 - the test asserts which
                outcomes[name] = exc
        first = threading.Thread(target=send, args=("first",))
        first.start()
        time.sleep(0.1)
        send("second")
        first.join()
    assert isinstance(outcomes["first"], httpay.InsufficientFunds) and outcomes["second"] == 200, outcomes
    assert len(demo.app.state.demo.network.wallet_for_key(key).payments) == 1
    with SQLiteLedger(ledger_path) as lg:
        assert sorted(r.status.value for r in lg.receipts()) == ["failed", "settled"]
