"""L402 v0.2 pays an account, and the account is what the client's requests carry: a service
writing a fresh `payment_context_token` into every 402 (the account plus a nonce) must not be paid
once per concurrent request of that one account."""

from __future__ import annotations

import json
import secrets
import threading

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import httpay
from httpay.demo.runner import serve_in_thread


def test_concurrent_requests_of_one_account_pay_once_whatever_context_token_each_402_carries() -> None:
    with serve_in_thread() as demo:
        async def nonce_proxy(request: Request) -> Response:
            """The demo service, with a nonce on every 402's context token (taken off again when paid)."""
            body = await request.body()
            if request.url.path == "/l402/payment-request":
                doc = json.loads(body)
                doc["payment_context_token"] = doc["payment_context_token"].split(".")[0]
                body = json.dumps(doc).encode()
            async with httpx.AsyncClient() as c:
                r = await c.request(request.method, demo.url + request.url.path, content=body,
                                    headers={k: v for k, v in request.headers.items()
                                             if k.lower() in ("authorization", "content-type")})
            content = r.content
            if r.status_code == 402:
                doc = r.json()
                doc["payment_context_token"] += "." + secrets.token_hex(4)
                doc["payment_request_url"] = str(request.base_url).rstrip("/") + "/l402/payment-request"
                content = json.dumps(doc).encode()
            return Response(content, status_code=r.status_code, media_type=r.headers.get("content-type"))

        proxy = Starlette(routes=[Route("/{p:path}", nonce_proxy, methods=["GET", "POST"])])
        with serve_in_thread(proxy) as front:
            token = httpx.get(demo.url + "/signup").json()["id"]
            auth = {"Authorization": f"Bearer {token}"}
            httpx.get(demo.url + "/ticker/AAPL", headers=auth)  # the free credit, spent
            wallet = httpay.DemoWallet.create(demo.url, balance_sat=100_000)
            policy = httpay.Policy(strategy="covers_calls", calls=100, max_per_payment_usd=2, usd_per_btc=100_000,
                                   per_hour_sat=100_000, per_day_sat=100_000)
            answers: list[object] = []
            with httpay.Client(wallet=wallet, policy=policy, ledger=":memory:") as c:
                def one() -> None:
                    try:
                        answers.append(c.get(front.url + "/ticker/MSFT", headers=auth).status_code)
                    except httpay.HttpayError as exc:
                        answers.append(type(exc).__name__)

                threads = [threading.Thread(target=one) for _ in range(12)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)
                paid = [r for r in c.payer.ledger.receipts() if r.status.value == "settled"]
            credits = httpx.get(demo.url + "/info", headers=auth).json()["credits"]
    assert answers == [200] * 12
    assert len(paid) == 1 and credits == 120 - 12  # one package of 120 credits, 12 spent: not 12 packages
