"""Security rules around paying: credentials never follow a redirect to another host, a payment
request URL on another site is refused unless allowed, and a host's payee can be pinned."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

import httpay
from httpay.demo.runner import RunningServer, serve_in_thread
from httpay.ledger import SQLiteLedger


@pytest.fixture
def echo() -> Iterator[RunningServer]:
    """Another host (127.0.0.2) that shows which headers reached it."""
    async def headers(request: Request) -> JSONResponse:
        return JSONResponse({"authorization": request.headers.get("authorization")})

    with serve_in_thread(Starlette(routes=[Route("/headers", headers)]), host="127.0.0.2") as server:
        yield server


def test_no_credential_follows_a_redirect_to_another_host(demo: RunningServer, echo: RunningServer,
                                                          ledger_path: Path) -> None:
    async def bounce(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{echo.url}/headers", status_code=302)

    demo.app.router.routes.append(Route("/l402/bounce", bounce))
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=1_000)
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_sat=100), ledger=ledger_path,
                       follow_redirects=True) as c:
        assert c.get(f"{demo.url}/l402/ticker/MSFT").status_code == 200  # now holds an L402 token for the demo host
        seen = c.get(f"{demo.url}/l402/bounce", headers={"X-Trace": "1"}).json()
        assert seen == {"authorization": None}, "the L402 token must not reach another host"
        seen = c.get(f"{demo.url}/l402/bounce", headers={"Authorization": "Bearer my-secret"}).json()
        assert seen == {"authorization": None}, "a caller's bearer must not reach another host either"


def test_payment_request_url_on_another_host_needs_permission(demo: RunningServer, account: dict[str, str],
                                                              ledger_path: Path) -> None:
    other = demo.url.replace("127.0.0.1", "localhost")  # the same server under another host name
    demo.app.state.demo.payment_request_url = f"{other}/l402/payment-request"
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=1_000)
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_usd=1), ledger=ledger_path) as c, \
            pytest.raises(httpay.PaymentRefused) as err:
        c.get(f"{demo.url}/ticker/MSFT", headers=account)
    assert err.value.rule == "payment_host" and "payment_hosts" in str(err.value)
    assert wallet.balance_msat() == 1_000_000
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_usd=1, payment_hosts=["localhost"]),
                       ledger=ledger_path) as c:
        assert c.get(f"{demo.url}/ticker/MSFT", headers=account).status_code == 200


def test_pinned_payee(demo: RunningServer, account: dict[str, str], ledger_path: Path) -> None:
    node = httpx.get(f"{demo.url}/ln/node").json()["pubkey"]
    wallet = httpay.DemoWallet.create(demo.url, balance_sat=1_000)
    wrong = "02" + "11" * 32
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_usd=1, payees={"127.0.0.1": wrong}),
                       ledger=ledger_path) as c, pytest.raises(httpay.InvoiceError) as err:
        c.get(f"{demo.url}/ticker/MSFT", headers=account)
    assert err.value.check == "payee" and wallet.balance_msat() == 1_000_000
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_usd=1, payees={"127.0.0.1": node}),
                       ledger=ledger_path) as c:
        assert c.get(f"{demo.url}/ticker/MSFT", headers=account).status_code == 200
    with SQLiteLedger(ledger_path) as lg:
        assert len(lg.receipts()) == 1
