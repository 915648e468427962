"""httpay against PyPI `l402` 0.1.0 (the L402 v0.2 reference package, made with nbdev).

What the package holds: `l402.core` (pydantic `Offer`, `L402Response`, and `PaymentServer`, a
helper that stores offers in SQLite and answers payment requests for `onchain` only, through a
Coinbase provider; `lightning` raises ValueError), `l402.payment_providers` (`get_payment_request`,
a `Client` that pays one-offer challenges onchain, `CoinbaseProvider`). It has no HTTP server of
its own, so `_l402_service` below wraps `PaymentServer` in a few lines of Starlette.

Quirks handled here, not hidden: `l402.core` uses fastcore's `@patch` without importing it (it
came through `from fastlite import *` until fastlite 0.2.3; the `test` extra pins `fastlite<0.2.3`)
and imports fastapi, which it does not declare; importing it creates
`$XDG_CONFIG_HOME/l402/l402.db` (pointed at a temporary folder); `l402.payment_providers` starts
with `from cdp import *` (Coinbase's SDK, whose 0.x pins clash with httpay's `cryptography` and
`coincurve`) and only needs the name `cdp.Wallet` at import, so a stand-in module provides that
name and nothing else.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import httpay
from httpay.demo.runner import RunningServer, serve_in_thread
from httpay.demo.server import create_app
from httpay.lightning import decode_invoice
from httpay.protocols import l402_v02


@pytest.fixture(scope="module")
def l402(tmp_path_factory: pytest.TempPathFactory) -> types.SimpleNamespace:
    """The l402 package's modules, imported with its SQLite file in a temporary folder."""
    saved_env = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("xdg"))
    had_cdp = "cdp" in sys.modules
    if not had_cdp:
        stand_in = types.ModuleType("cdp")
        stand_in.Wallet = type("Wallet", (), {})  # type: ignore[attr-defined]
        stand_in.__all__ = ["Wallet"]  # type: ignore[attr-defined]
        sys.modules["cdp"] = stand_in
    try:
        core = importlib.import_module("l402.core")
        providers = importlib.import_module("l402.payment_providers")
        config = importlib.import_module("l402.config")
        version = importlib.import_module("l402").__version__
    finally:
        if saved_env is None:
            os.environ.pop("XDG_CONFIG_HOME", None)
        else:
            os.environ["XDG_CONFIG_HOME"] = saved_env
        if not had_cdp:
            sys.modules.pop("cdp", None)
    assert version == "0.1.0"
    return types.SimpleNamespace(core=core, providers=providers, config=config)


def _demo_402(demo: RunningServer) -> httpx.Response:
    token = httpx.get(f"{demo.url}/signup").json()["id"]
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{demo.url}/ticker/AAPL", headers=auth).status_code == 200  # the free credit
    r = httpx.get(f"{demo.url}/ticker/AAPL", headers=auth)
    assert r.status_code == 402
    return r


def test_l402_models_read_our_402(l402: types.SimpleNamespace, interop_demo: RunningServer) -> None:
    r = _demo_402(interop_demo)
    theirs = l402.core.L402Response.model_validate(r.json())
    ours = l402_v02.parse(r.status_code, r.headers, r.content)
    assert ours is not None
    assert theirs.version == ours.version == l402.config.L402_VERSION == "0.2.2"
    assert theirs.payment_request_url == ours.payment_request_url
    assert theirs.payment_context_token == ours.payment_context_token
    assert [(o.offer_id, o.amount, o.currency, o.type, o.payment_methods) for o in theirs.offers] == [
        (o.offer_id, o.amount, o.currency, o.type, list(o.payment_methods)) for o in ours.offers
    ]


def test_l402_client_asks_our_demo_for_lightning_details(l402: types.SimpleNamespace, interop_demo: RunningServer) -> None:
    """l402's own get_payment_request POSTs to our payment_request_url; httpay reads the answer."""
    r = _demo_402(interop_demo)
    offers = l402.core.L402Response.model_validate(r.json())
    offer = offers.offers[0]
    answer = l402.providers.get_payment_request(offers.payment_request_url, offers.payment_context_token,
                                                offer.offer_id, "lightning")
    req = l402_v02.PaymentRequest.from_dict(answer, payment_method="lightning", offer_id=offer.offer_id)
    assert req.lightning_invoice is not None and req.expires_at is not None
    inv = decode_invoice(req.lightning_invoice)
    assert inv.network == "regtest" and inv.amount_msat == 10_000  # 1 cent = 10 sat at the demo's 100,000 USD/BTC


@dataclass
class _Onchain:
    """The provider shape l402 asks for (`chain`, `asset`, `pay`, `create_address`), recording calls."""

    chain: str = "bitcoin-regtest"
    asset: str = "BTC"
    paid: list[tuple[Any, ...]] = field(default_factory=list)

    def pay(self, amount: int, address: str, asset: str) -> str:
        self.paid.append((amount, address, asset))
        return "demo-transfer"

    def create_address(self) -> Any:
        return types.SimpleNamespace(address_id="bcrt1qinteropdemoaddress", network_id=self.chain)


def test_l402_client_pays_a_one_offer_demo_onchain(l402: types.SimpleNamespace) -> None:
    """l402's Client.pay (one offer, onchain only) drives our demo's payment request end to end."""
    offer = {"offer_id": "one", "title": "1 credit", "description": "one query", "type": "top-up", "balance": 1,
             "amount": 1, "currency": "USD", "payment_methods": ["onchain"]}
    with serve_in_thread(create_app(offers=[offer], free_credits=0)) as demo:
        token = httpx.get(f"{demo.url}/signup").json()["id"]
        r = httpx.get(f"{demo.url}/ticker/AAPL", headers={"Authorization": f"Bearer {token}"})
        provider = _Onchain()
        assert l402.providers.Client(onchain_provider=provider).pay(r.json()) == "demo-transfer"
    [(amount, address, asset)] = provider.paid
    assert amount == 1 and asset == "BTC" and address.startswith("bcrt1")


def _l402_service(l402: types.SimpleNamespace, base: str, methods: list[str]) -> Starlette:
    """A resource guarded by l402's PaymentServer: 402 with its offers, payment requests by it."""
    server = l402.core.PaymentServer(payment_request_url=f"{base}/payment_request", onchain_provider=_Onchain(),
                                     onchain_supported_assets=["BTC"])

    async def resource(request: Request) -> JSONResponse:
        offer = l402.core.Offer(offer_id=f"o-{os.urandom(4).hex()}", title="1 query", description="one query",
                                type="one-time", amount=1, currency="USD", payment_methods=methods)
        return JSONResponse(server.create_offers([offer]).model_dump(), status_code=402)

    async def payment_request(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        try:
            return JSONResponse(server.create_payment_request(**body))
        except ValueError as exc:  # lightning, credit_card: "Payment method ... is not supported"
            return JSONResponse({"error": str(exc)}, status_code=400)

    return Starlette(routes=[Route("/data", resource), Route("/payment_request", payment_request, methods=["POST"])])


@pytest.fixture
def l402_service(l402: types.SimpleNamespace) -> Iterator[tuple[RunningServer, Starlette]]:
    app = Starlette()
    with serve_in_thread(app) as running:
        app.router.routes.extend(_l402_service(l402, running.url, ["lightning", "onchain"]).routes)
        yield running, app


def test_httpay_reads_an_l402_payment_server_but_cannot_pay_it(
    l402: types.SimpleNamespace, l402_service: tuple[RunningServer, Starlette], interop_demo: RunningServer,
    ledger_path: Path,
) -> None:
    running, _ = l402_service
    r = httpx.get(f"{running.url}/data")
    offers = l402_v02.parse(r.status_code, r.headers, r.content)
    assert offers is not None and offers.version == "0.2.2" and offers.payment_methods == ("lightning", "onchain")
    # l402's server accepts httpay's payment-request body and answers onchain; httpay reads it
    body = l402_v02.payment_request_body(offers, offers[0], "onchain", chain="bitcoin-regtest", asset="BTC")
    answer = httpx.post(offers.payment_request_url, json=body)
    req = l402_v02.PaymentRequest.from_dict(answer.json(), payment_method="onchain", offer_id=offers[0].offer_id)
    assert (req.address, req.chain, req.asset) == ("bcrt1qinteropdemoaddress", "bitcoin-regtest", "BTC")
    # paying: httpay asks for a lightning invoice, l402 0.1.0 cannot issue one; nothing is paid
    wallet = httpay.DemoWallet.create(interop_demo.url, balance_sat=1_000)
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_sat=100, max_per_payment_sat=20),
                       ledger=ledger_path) as c, pytest.raises(httpay.PaymentRequestError) as err:
        c.get(f"{running.url}/data")
    assert "not supported" in str(err.value) and "400" in str(err.value)
    assert wallet.balance_msat() == 1_000_000
