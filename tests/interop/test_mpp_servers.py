"""The peers' own MPP servers on loopback (pympp 0.16.0's evm charge and a lightning charge built on
its ServerMethod API; mppx 0.11.0's evm charge), answered with credentials httpay's wire format
builds: each answers 402 with a correct `Payment` challenge and accepts a correctly built credential
once. The two SDKs' evm challenge hashes differ; the table shows which formula each accepts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from httpay.demo.network import DemoNetwork
from httpay.demo.runner import RunningServer, serve_in_thread
from httpay.protocols import mpp as wire
from httpay.signers import EvmSigner
from tests.fixtures.mpp_servers import (
    Settled,
    evm_authorization,
    pympp_evm_app,
    pympp_lightning_app,
    pympp_nonce,
    spec_nonce,
)
from tests.interop.conftest import PeerServer


@pytest.fixture
def pympp_evm() -> Iterator[tuple[RunningServer, Settled]]:
    app, settled = pympp_evm_app()
    with serve_in_thread(app) as server:
        yield server, settled


@pytest.fixture
def pympp_lightning() -> Iterator[tuple[RunningServer, Settled, DemoNetwork]]:
    network = DemoNetwork()
    app, settled = pympp_lightning_app(network, amount_sat=10)
    with serve_in_thread(app) as server:
        yield server, settled, network


def challenge_of(response: httpx.Response) -> wire.MppChallenge:
    assert response.status_code == 402
    assert response.headers["cache-control"] == "no-store"
    found = wire.parse(402, response.headers)
    assert found is not None and len(found) == 1
    problem = wire.read_problem(response.content)
    assert problem is not None and problem.kind == "payment-required"
    (ch,) = found
    assert ch.realm == "127.0.0.1" and ch.expires is not None and not ch.expired()
    return ch


def test_pympp_lightning_charge_is_paid_with_a_demo_invoice_once(
        pympp_lightning: tuple[RunningServer, Settled, DemoNetwork]) -> None:
    server, settled, network = pympp_lightning
    ch = challenge_of(httpx.get(f"{server.url}/paid"))
    charge = wire.LightningCharge.from_challenge(ch)
    invoice = network.invoice(charge.payment_hash or "")
    assert charge.amount_sat == 10 and charge.network == "regtest" and invoice is not None
    assert invoice.bolt11 == charge.invoice and not invoice.settled
    from httpay.lightning import decode_invoice

    wire.check_charge_invoice(charge, decode_invoice(charge.invoice), expires=ch.expires)
    payer = network.create_wallet(100)
    paid = network.pay(payer.key, charge.invoice)
    credential = ch.credential(wire.LightningCharge.payload(paid.preimage))
    ok = httpx.get(f"{server.url}/paid", headers={"Authorization": credential})
    assert ok.status_code == 200 and ok.json()["paid"] is True
    receipt = wire.read_receipt(ok.headers)
    assert receipt is not None and receipt.success and (receipt.method, receipt.reference) == ("lightning", charge.payment_hash)
    assert ok.headers["cache-control"] == "private"
    assert settled.items == [{"payment_hash": charge.payment_hash, "challenge_id": ch.id}]
    again = httpx.get(f"{server.url}/paid", headers={"Authorization": credential})  # one payment buys one answer
    assert again.status_code in (402, 403) and len(settled.items) == 1
    assert network.balance_msat(payer.key) == 90_000


def test_pympp_lightning_refuses_a_preimage_of_another_invoice(
        pympp_lightning: tuple[RunningServer, Settled, DemoNetwork]) -> None:
    server, settled, network = pympp_lightning
    ch = challenge_of(httpx.get(f"{server.url}/paid"))
    other = network.create_invoice(10_000, "another")
    bad = httpx.get(f"{server.url}/paid", headers={"Authorization": ch.credential({"preimage": other.preimage})})
    problem = wire.read_problem(bad.content)
    assert bad.status_code == 402 and problem is not None and problem.kind == "verification-failed"
    assert settled.items == []


def test_pympp_fresh_invoice_per_challenge(pympp_lightning: tuple[RunningServer, Settled, DemoNetwork]) -> None:
    server, _, _ = pympp_lightning
    a, b = (wire.LightningCharge.from_challenge(challenge_of(httpx.get(f"{server.url}/paid"))) for _ in range(2))
    assert a.payment_hash != b.payment_hash and a.invoice != b.invoice


Nonce = Callable[[wire.MppChallenge], str]
# (peer, the nonce formula used, accepted?): pympp hashes JSON ["id","realm"]; mppx, like [evm], id || realm
EVM_CASES = [
    pytest.param("pympp", pympp_nonce, True, id="pympp-accepts-its-json-hash"),
    pytest.param("pympp", spec_nonce, False, id="pympp-refuses-the-spec-hash"),
    pytest.param("mppx", spec_nonce, True, id="mppx-accepts-the-spec-hash"),
    pytest.param("mppx", pympp_nonce, False, id="mppx-refuses-the-json-hash"),
]


@pytest.mark.parametrize(("peer", "nonce", "accepted"), EVM_CASES)
def test_evm_charge_with_an_eip3009_authorization(peer: str, nonce: Nonce, accepted: bool, request: pytest.FixtureRequest) -> None:
    if peer == "pympp":
        server, settled = request.getfixturevalue("pympp_evm")
        url = f"{server.url}/paid"
        settled_now: Callable[[], list[Any]] = lambda: settled.items  # noqa: E731
    else:
        mppx: PeerServer = request.getfixturevalue("mppx_evm_server")
        url = f"{mppx.url}/paid"
        before = len(mppx.stats()["settled"])
        settled_now = lambda: mppx.stats()["settled"][before:]  # noqa: E731
    ch = challenge_of(httpx.get(url))
    assert ch.kind == "evm/charge"
    assert ch.request["amount"] == "10000" and ch.request["methodDetails"]["chainId"] == 84532
    assert "authorization" in ch.request["methodDetails"]["credentialTypes"]
    signer = EvmSigner.create()
    payload = evm_authorization(signer, ch, nonce=nonce(ch))
    response = httpx.get(url, headers={"Authorization": ch.credential(payload)})
    if not accepted:
        problem = wire.read_problem(response.content)
        assert response.status_code == 402 and problem is not None and problem.kind == "verification-failed"
        assert "challenge hash mismatch" in (problem.detail or "").lower()
        assert settled_now() == []
        return
    assert response.status_code == 200, response.text
    receipt = wire.read_receipt(response.headers)
    assert receipt is not None and receipt.success and receipt.method == "evm" and receipt.reference.startswith("0x")
    (item,) = settled_now()
    got = item["payload"] if peer == "pympp" else item
    assert (got["from"].lower(), got["value"], got["nonce"].lower()) == (signer.address.lower(), "10000", nonce(ch))
    replay = httpx.get(url, headers={"Authorization": ch.credential(payload)})
    assert replay.status_code != 200 and len(settled_now()) == 1  # one authorization settles once


@pytest.mark.parametrize("peer", ["pympp", "mppx"])
def test_evm_charge_refuses_a_short_authorization(peer: str, request: pytest.FixtureRequest) -> None:
    if peer == "pympp":
        server, _ = request.getfixturevalue("pympp_evm")
        url, nonce = f"{server.url}/paid", pympp_nonce
    else:
        url, nonce = f"{request.getfixturevalue('mppx_evm_server').url}/paid", spec_nonce
    ch = challenge_of(httpx.get(url))
    payload = evm_authorization(EvmSigner.create(), ch, nonce=nonce(ch), value="9999")
    response = httpx.get(url, headers={"Authorization": ch.credential(payload)})
    problem = wire.read_problem(response.content)
    assert response.status_code == 402 and problem is not None and problem.kind == "verification-failed"
    assert "amount" in (problem.detail or "").lower()
