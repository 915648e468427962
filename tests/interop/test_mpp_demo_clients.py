"""The demo's MPP routes paid by the peers' own clients, on loopback: pympp 0.16.0's `Mpp` client and
mppx 0.11.0's `Mppx.create(...).fetch`, with their evm charge clients on the evm route and, on the
lightning routes, a custom lightning charge method built on each one's published client API that
pays with a demo wallet (each pays once and gets the answer with a receipt); on the session route, a
custom lightning session method on each one's client API (open, bearer, topUp)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from httpay.demo.runner import RunningServer
from httpay.protocols import mpp as wire
from httpay.wallets.demo import DemoWallet
from tests.fixtures.mpp_servers import pympp_lightning_client, pympp_lightning_session_client
from tests.interop.conftest import Node, balance_msat

LIGHTNING_ROUTES = ["/mpp/ticker/AAPL", "/aperture/ticker/AAPL", "/mpp/both/ticker/AAPL"]


def _receipt(value: str | None) -> wire.MppReceipt:
    receipt = wire.read_receipt(httpx.Headers({"payment-receipt": value} if value else {}))
    assert receipt is not None and receipt.success
    return receipt


@pytest.mark.parametrize("path", LIGHTNING_ROUTES)
def test_pympp_client_pays_the_lightning_routes(interop_demo: RunningServer, demo_wallet_key: str, path: str) -> None:
    from mpp.client import Mpp

    wallet = DemoWallet(interop_demo.url, demo_wallet_key)
    method, paid = pympp_lightning_client(wallet)
    paid_before = interop_demo.app.state.mpp.paid

    async def fetch() -> httpx.Response:
        async with Mpp(methods=[method]) as client:
            return await client.fetch(interop_demo.url + path)

    response = asyncio.run(fetch())
    assert response.status_code == 200 and response.json()["symbol"] == "AAPL"
    assert _receipt(response.headers.get("payment-receipt")).method == "lightning"
    assert len(paid) == 1 and interop_demo.app.state.mpp.paid == paid_before + 1
    assert balance_msat(interop_demo, demo_wallet_key) == 990_000  # 10 sat, once
    wallet.close()


def test_pympp_evm_client_pays_the_evm_route(interop_demo: RunningServer) -> None:
    from eth_account import Account
    from mpp.client import Mpp
    from mpp.methods.evm import BASE_SEPOLIA_USDC
    from mpp.methods.evm import client as evm

    account = Account.create()
    settled: list[dict[str, Any]] = interop_demo.app.state.mpp.evm_settled
    before = len(settled)

    async def fetch() -> httpx.Response:
        async with Mpp(methods=[evm.charge(currency=BASE_SEPOLIA_USDC, account=account)]) as client:
            return await client.fetch(interop_demo.url + "/mpp/evm/ticker/AAPL")

    response = asyncio.run(fetch())
    assert response.status_code == 200, response.text
    assert _receipt(response.headers.get("payment-receipt")).method == "evm"
    (item,) = settled[before:]
    assert (item["from"], item["value"]) == (account.address, "10000")
    # pympp signs its own challenge hash (JSON ["id","realm"]), not the spec's: the demo accepts it for this client
    assert item["nonce"] != wire.evm_challenge_hash(item["challenge_id"], "127.0.0.1")


@pytest.mark.parametrize("path", LIGHTNING_ROUTES)
def test_mppx_client_pays_the_lightning_routes(node: Node, interop_demo: RunningServer, demo_wallet_key: str,
                                               path: str) -> None:
    out = node.run("mppx_fetch.mjs", "lightning", interop_demo.url + path,
                   env={"DEMO_URL": interop_demo.url, "DEMO_WALLET_KEY": demo_wallet_key})
    assert out["status"] == 200 and out["body"]["symbol"] == "AAPL", out
    assert out["payCalls"] == 1
    assert _receipt(out["receipt"]).method == "lightning"
    assert balance_msat(interop_demo, demo_wallet_key) == 990_000


def test_mppx_evm_client_pays_the_evm_route(node: Node, interop_demo: RunningServer) -> None:
    from eth_account import Account

    account = Account.create()
    settled: list[dict[str, Any]] = interop_demo.app.state.mpp.evm_settled
    before = len(settled)
    out = node.run("mppx_fetch.mjs", "evm", interop_demo.url + "/mpp/evm/ticker/AAPL",
                   env={"EVM_KEY": "0x" + bytes(account.key).hex()})
    assert out["status"] == 200 and out["payCalls"] == 1, out
    assert _receipt(out["receipt"]).method == "evm"
    (item,) = settled[before:]
    assert item["from"] == account.address
    assert item["nonce"] == wire.evm_challenge_hash(item["challenge_id"], "127.0.0.1")  # mppx signs the spec's hash


# 20 sat deposit, 2 sat a request: ten answers, then the top-up's acknowledgement, then answers again
SESSION_ACTIONS = ["open"] + ["bearer"] * 9 + ["topUp", "bearer"]


def _session_closed_refund(demo: RunningServer, key: str, session_id: str) -> int:
    """Close the peer's session by hand (neither SDK has a lightning session): what the wallet got back."""
    from httpay.protocols.mpp import LightningSession

    before = balance_msat(demo, key)
    found = wire.parse(402, httpx.get(demo.url + "/mpp/session/ticker/AAPL").headers)
    assert found is not None
    (ch,) = found
    session = demo.app.state.mpp.sessions[session_id]
    preimage = demo.app.state.demo.network.invoice(session_id).preimage
    closed = httpx.get(demo.url + "/mpp/session/ticker/AAPL",
                       headers={"Authorization": ch.credential(LightningSession.close_payload(session_id, preimage))})
    assert closed.status_code == 200 and session.status == "closed"
    return balance_msat(demo, key) - before


def test_pympp_client_pays_the_session_route(interop_demo: RunningServer, demo_wallet_key: str) -> None:
    from mpp.client import Mpp

    wallet = DemoWallet(interop_demo.url, demo_wallet_key)
    method, state = pympp_lightning_session_client(wallet)

    async def fetch_all() -> list[httpx.Response]:
        async with Mpp(methods=[method]) as client:
            return [await client.fetch(interop_demo.url + "/mpp/session/ticker/AAPL") for _ in range(12)]

    answers = asyncio.run(fetch_all())
    assert [r.status_code for r in answers] == [200] * 12
    assert [r.json().get("symbol") for r in answers[:10]] == ["AAPL"] * 10
    assert answers[10].json()["status"] == "ok" and answers[11].json()["symbol"] == "AAPL"
    assert state.actions == SESSION_ACTIONS
    assert state.session_id is not None
    assert interop_demo.app.state.mpp.sessions[state.session_id].spent_sat == 22
    assert balance_msat(interop_demo, demo_wallet_key) == 960_000  # deposit and top-up, nothing else
    assert _session_closed_refund(interop_demo, demo_wallet_key, state.session_id) == 18_000
    wallet.close()


def test_mppx_client_pays_the_session_route(node: Node, interop_demo: RunningServer, demo_wallet_key: str) -> None:
    out = node.run("mppx_session.mjs", interop_demo.url + "/mpp/session/ticker/AAPL", "12",
                   env={"DEMO_URL": interop_demo.url, "DEMO_WALLET_KEY": demo_wallet_key})
    assert [a["status"] for a in out["answers"]] == [200] * 12, out
    assert [a["symbol"] for a in out["answers"][:10]] == ["AAPL"] * 10
    assert out["answers"][10]["ack"] == "ok" and out["answers"][11]["symbol"] == "AAPL"
    assert out["actions"] == SESSION_ACTIONS
    assert interop_demo.app.state.mpp.sessions[out["sessionId"]].spent_sat == 22
    assert balance_msat(interop_demo, demo_wallet_key) == 960_000
    assert _session_closed_refund(interop_demo, demo_wallet_key, out["sessionId"]) == 18_000
