"""httpay's own client (the MPP dialect) paying the peers' MPP servers and the demo's MPP routes, on
loopback, sync and async: pympp 0.16.0's lightning charge (ServerMethod API, demo invoices) and its evm
charge, mppx 0.11.0's evm charge, the demo's /mpp/ticker, /mpp/evm/ticker and /aperture/ticker.

httpay signs the spec's evm challenge hash, keccak256(id || realm): mppx agrees and is paid; pympp
hashes JSON ["id","realm"] and refuses the authorization (nothing settles, and httpay says why)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import httpay
from httpay.demo.runner import RunningServer, serve_in_thread
from httpay.errors import PaymentRejected
from httpay.ledger import SQLiteLedger
from httpay.protocols import mpp as wire
from httpay.signers import EvmSigner
from httpay.wallets.demo import DemoWallet
from tests.fixtures.mpp_servers import Settled, pympp_evm_app, pympp_lightning_app
from tests.interop.conftest import PeerServer, balance_msat

EVM_POLICY = {"methods": ["mpp:evm"], "usd_per_btc": 100_000}


def fetch(mode: str, url: str, **client: Any) -> httpx.Response:
    if mode == "sync":
        with httpay.Client(**client) as c:
            return c.get(url)

    async def go() -> httpx.Response:
        async with httpay.AsyncClient(**client) as c:
            return await c.get(url)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def pympp_lightning_server(interop_demo: RunningServer) -> Iterator[tuple[RunningServer, Settled]]:
    app, settled = pympp_lightning_app(interop_demo.app.state.demo.network, amount_sat=10)
    with serve_in_thread(app) as server:
        yield server, settled


@pytest.fixture(scope="module")
def pympp_evm_server() -> Iterator[tuple[RunningServer, Settled]]:
    app, settled = pympp_evm_app()
    with serve_in_thread(app) as server:
        yield server, settled


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("where", ["pympp", "demo:/mpp/ticker/AAPL", "demo:/aperture/ticker/AAPL"])
def test_httpay_pays_a_lightning_charge(mode: str, where: str, interop_demo: RunningServer, demo_wallet_key: str,
                                        pympp_lightning_server: tuple[RunningServer, Settled], tmp_path: Path) -> None:
    server, settled = pympp_lightning_server
    url = f"{server.url}/paid" if where == "pympp" else interop_demo.url + where.split(":", 1)[1]
    before = len(settled.items)
    wallet = DemoWallet(interop_demo.url, demo_wallet_key)
    ledger = tmp_path / "ledger.db"
    response = fetch(mode, url, wallet=wallet, ledger=ledger, reconcile_grace_s=None,
                     policy=httpay.Policy(methods=["lightning"]))
    assert response.status_code == 200, response.text
    assert balance_msat(interop_demo, demo_wallet_key) == 990_000  # one payment of 10 sat
    with SQLiteLedger(ledger) as lg:
        (row,) = lg.receipts()
    assert row.status.value == "settled" and row.amount_msat == 10_000
    if where.startswith("demo:/aperture"):
        # L402, LSAT and Payment for one price: the quote takes the credential reused across the host
        assert row.protocol != "mpp" and "payment-receipt" not in response.headers
        return
    receipt = wire.read_receipt(response.headers)
    assert receipt is not None and receipt.method == "lightning" and row.payment_hash == receipt.reference
    if where == "pympp":
        assert len(settled.items) == before + 1 and settled.items[-1]["payment_hash"] == row.payment_hash
    wallet.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("peer", ["mppx", "demo"])
def test_httpay_pays_an_evm_charge_with_the_spec_hash(mode: str, peer: str, request: pytest.FixtureRequest,
                                                      interop_demo: RunningServer, tmp_path: Path) -> None:
    signer = EvmSigner.create()
    if peer == "mppx":
        mppx: PeerServer = request.getfixturevalue("mppx_evm_server")
        url, before = f"{mppx.url}/paid", len(mppx.stats()["settled"])
    else:
        url, before = f"{interop_demo.url}/mpp/evm/ticker/AAPL", len(interop_demo.app.state.mpp.evm_settled)
    response = fetch(mode, url, x402_signer=signer, ledger=tmp_path / "l.db", reconcile_grace_s=None,
                     policy=httpay.Policy(**EVM_POLICY))
    assert response.status_code == 200, response.text
    receipt = wire.read_receipt(response.headers)
    assert receipt is not None and receipt.method == "evm"
    settled = mppx.stats()["settled"][before:] if peer == "mppx" else interop_demo.app.state.mpp.evm_settled[before:]
    (item,) = settled
    assert item["from"].lower() == signer.address.lower() and item["value"] == "10000"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_pympp_refuses_the_spec_hash_and_httpay_says_so(mode: str, pympp_evm_server: tuple[RunningServer, Settled],
                                                        tmp_path: Path) -> None:
    server, settled = pympp_evm_server
    before = len(settled.items)
    with pytest.raises(PaymentRejected) as refused:
        fetch(mode, f"{server.url}/paid", x402_signer=EvmSigner.create(), ledger=tmp_path / "l.db",
              reconcile_grace_s=None, policy=httpay.Policy(**EVM_POLICY))
    assert "verification-failed" in str(refused.value) and "challenge hash mismatch" in str(refused.value)
    assert "nothing is paid again" in str(refused.value)
    assert len(settled.items) == before  # nothing settled
    with SQLiteLedger(tmp_path / "l.db") as lg:
        assert [r.status.value for r in lg.receipts()] == ["pending"]  # it holds the signed authorization: counted
