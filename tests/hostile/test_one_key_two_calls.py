"""The application's Idempotency-Key names one operation. Two different calls sent at the same moment
under one key: one is paid, the other refused, never both. One call sent twice, its first send
settling longer than the wait for it: the second send is told so and sends nothing, never the same
signed payment while the service is still settling it."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import httpay
from httpay.ledger import SQLiteLedger
from tests.helpers import in_threads
from tests.hostile.harness import CountingSigner, _b64json, hostile_service, release, x402, x402_requirement

KEY = {"Idempotency-Key": "order-2026-0042-abcdef"}
POLICY = httpay.Policy(usd_per_btc=100_000, methods=["x402"], budget_sat=1_000)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_two_calls_under_one_key_at_once_one_is_paid_the_other_refused(tmp_path: Path, mode: str) -> None:
    with hostile_service() as svc:
        challenge = {"x402Version": 2, "error": "Payment required", "resource": {"url": svc.url + "/buy"},
                     "accepts": [x402_requirement("10000")]}
        both_asked = asyncio.Event()
        asked = [0]

        async def buy(request: Request) -> Response:
            if request.headers.get("payment-signature") is None:  # both 402s go out together: both calls exist
                asked[0] += 1
                if asked[0] >= 2:
                    both_asked.set()
                await asyncio.wait_for(both_asked.wait(), 10)
                return JSONResponse({}, status_code=402, headers={"PAYMENT-REQUIRED": _b64json(challenge)})
            receipt = {"success": True, "transaction": "0x" + "ab" * 32, "network": "eip155:84532", "payer": "0x"}
            return JSONResponse({"bought": (await request.json())["item"]}, headers={"PAYMENT-RESPONSE": _b64json(receipt)})

        url = svc.route("/buy", buy)
        signer = CountingSigner()
        out: list[Any] = []
        kwargs: dict[str, Any] = {"wallet": None, "ledger": tmp_path / "l.db", "x402_signer": signer, "policy": POLICY}
        bodies = [{"item": "A"}, {"item": "B"}]
        if mode == "sync":
            with httpay.Client(**kwargs) as c:
                def send(body: dict[str, str]) -> None:
                    try:
                        out.append(c.post(url, json=body, headers=KEY).status_code)
                    except httpay.PaymentRefused as exc:
                        out.append(exc)
                in_threads(send, bodies)
        else:
            async def go() -> None:
                async with httpay.AsyncClient(**kwargs) as c:
                    async def send(body: dict[str, str]) -> None:
                        try:
                            out.append((await c.post(url, json=body, headers=KEY)).status_code)
                        except httpay.PaymentRefused as exc:
                            out.append(exc)
                    await asyncio.gather(*(send(b) for b in bodies))
            asyncio.run(go())
    refused = [o for o in out if isinstance(o, httpay.PaymentRefused)]
    assert sorted(o for o in out if isinstance(o, int)) == [200] and len(refused) == 1, out
    assert refused[0].rule == "idempotency_key" and "give each operation its own key" in str(refused[0])
    assert len(signer.signed) == 1, "one signature: the other call is refused before anything is signed"
    with SQLiteLedger(tmp_path / "l.db") as lg:
        assert [r.status.value for r in lg.receipts()] == ["settled"]


def test_a_send_that_waits_longer_than_its_limit_for_the_first_sends_nothing(tmp_path: Path) -> None:
    with hostile_service() as svc:
        url = x402(svc, "/slow", answer="hang")  # the service is still settling the first send
        signer = CountingSigner()
        with httpay.Client(wallet=None, ledger=tmp_path / "l.db", x402_signer=signer, policy=POLICY) as c:
            c.payer.inflight_wait_s = 0.3
            first: list[Any] = []
            t = threading.Thread(target=lambda: first.append(c.post(url, content=b'{"q":1}', headers=KEY).status_code))
            t.start()
            for _ in range(500):
                if svc.hits.get("x402-paid"):
                    break
                time.sleep(0.01)
            with pytest.raises(httpay.CallAlreadyPaid, match=r"being paid by another send of the same call .*still pending") as told:
                c.post(url, content=b'{"q":1}', headers=KEY)
            assert told.value.receipt is not None and told.value.receipt.status.value == "pending"
            assert svc.hits["x402-paid"] == 1, "the same signed payment never reaches the service twice at once"
            release(svc)
            t.join()
        assert first == [200] and len(signer.signed) == 1


def test_the_key_names_its_call_for_a_window_that_runs_from_the_payment(tmp_path: Path) -> None:
    """A person took longer than the call window to approve: the application's resend of the very call
    (same key, same body) right after the payment presents it, and another body under the key is
    refused; nothing is signed twice. (The window is 0.3 s here, 600 s by default.)"""
    def slow_yes(q: httpay.Quote) -> bool:
        time.sleep(0.5)
        return True

    with hostile_service() as svc:
        url = x402(svc, "/buy")
        signer = CountingSigner()
        policy = httpay.Policy(usd_per_btc=100_000, methods=["x402"], budget_sat=1_000, approve=slow_yes)
        with httpay.Client(wallet=None, ledger=tmp_path / "l.db", x402_signer=signer, policy=policy) as c:
            c.payer.call_window_s = 0.3
            assert c.post(url, content=b'{"q":1}', headers=KEY).status_code == 200
            assert c.post(url, content=b'{"q":1}', headers=KEY).status_code == 200  # the same payment, presented
            with pytest.raises(httpay.PaymentRefused) as other:
                c.post(url, content=b'{"q":2}', headers=KEY)
        assert other.value.rule == "idempotency_key"
        assert len(signer.signed) == 1 and svc.hits["x402-paid"] == 2
    with SQLiteLedger(tmp_path / "l.db") as lg:
        assert [r.status.value for r in lg.receipts()] == ["settled"]


def test_an_identical_send_without_a_key_while_the_first_is_paying_sends_nothing(tmp_path: Path) -> None:
    """No Idempotency-Key: the second identical POST, while the first one's signed payment is still
    being settled by the service, is told so and sends nothing (not the same payment a second time
    while it settles); once the first send has ended, the application's retry presents that payment."""
    with hostile_service() as svc:
        url = x402(svc, "/slow", answer="hang")
        signer = CountingSigner()
        with httpay.Client(wallet=None, ledger=tmp_path / "l.db", x402_signer=signer, policy=POLICY) as c:
            first: list[Any] = []
            t = threading.Thread(target=lambda: first.append(c.post(url, content=b'{"q":1}').status_code))
            t.start()
            for _ in range(500):
                if svc.hits.get("x402-paid"):
                    break
                time.sleep(0.01)
            with pytest.raises(httpay.CallAlreadyPaid, match="being paid by another send of the same call"):
                c.post(url, content=b'{"q":1}')
            assert svc.hits["x402-paid"] == 1
            release(svc)
            t.join()
        assert first == [200] and len(signer.signed) == 1
