"""x402 v2 end to end on loopback (issue 12): httpay pays the demo's x402 routes (payment-identifier,
upto; a local facilitator that recovers the EIP-712 signatures) and the PyPI `x402` package's own
server parts: their FastAPI middleware with payment-identifier declared (their strict echo check),
their `upto` facilitator settling a metered amount on a local Permit2 chain, and their
sign-in-with-x server extension (their SIWE verifier). Sync and async clients."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from starlette.requests import Request
from starlette.testclient import TestClient

import httpay
from httpay.demo.runner import serve_in_thread
from httpay.demo.server import create_app
from httpay.dialects.x402 import authorization, payment_payload, to_challenge, typed_data
from httpay.errors import Permit2AllowanceRequired
from httpay.ledger import SQLiteLedger, Status
from httpay.protocols import x402
from httpay.signers import EvmSigner
from tests.e2e.x402_local import BASE_SEPOLIA, LocalChain, Reverted

RATE = 100_000.0  # USD per BTC: 1 atomic USDC unit (1e-6 $) is 1 msat


def policy(**over: Any) -> httpay.Policy:
    return httpay.Policy(**{"methods": ["x402"], "usd_per_btc": RATE, "max_per_payment_usd": 0.10, **over})


def receipts(ledger: Path) -> list[Any]:
    with SQLiteLedger(ledger) as lg:
        return sorted(lg.receipts(), key=lambda r: r.id)


def call(mode: str, url: str, ledger: Path, signer: Any, method: str = "POST", **kw: Any) -> httpx.Response:
    """One request through httpay.Client (sync) or httpay.AsyncClient (async)."""
    pol = kw.pop("pol", {})
    if mode == "sync":
        with httpay.Client(ledger=ledger, policy=policy(**pol), x402_signer=signer) as c:
            return c.request(method, url, **kw)

    async def go() -> httpx.Response:
        async with httpay.AsyncClient(ledger=ledger, policy=policy(**pol), x402_signer=signer) as c:
            return await c.request(method, url, **kw)
    return asyncio.run(go())


@pytest.fixture
def demo() -> Iterator[tuple[str, Any]]:
    app = create_app()
    with serve_in_thread(app) as server:
        yield server.url, app


MODES = ["sync", "async"]


# -- the demo's routes ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_httpay_pays_the_demos_exact_route_with_its_call_key_as_payment_id(mode: str, demo: tuple[str, Any],
                                                                            ledger_path: Path) -> None:
    url, app = demo
    r = call(mode, f"{url}/x402/ticker/AAPL", ledger_path, EvmSigner.create(), content=b'{"note": "one quote"}')
    assert r.status_code == 200 and r.json()["paid_by"] == "x402 exact"
    [row] = receipts(ledger_path)
    assert (row.status, row.amount_msat, row.method) == (Status.SETTLED, 10_000, "x402:exact:eip155:84532")
    [settled] = app.state.x402.settlements
    assert settled["amount"] == 10_000 and x402.PAYMENT_ID.match(settled["id"]) and settled["id"].startswith("pay_")


@pytest.mark.parametrize("mode", MODES)
def test_httpay_pays_the_demos_upto_route_noting_the_metered_amount(mode: str, demo: tuple[str, Any],
                                                                    ledger_path: Path) -> None:
    url, _ = demo
    text = b"the quick brown fox jumps over the lazy dog " * 20  # 880 bytes: 8,800 of the 50,000 ceiling
    r = call(mode, f"{url}/x402/summarize", ledger_path, EvmSigner.create(), content=text)
    assert r.status_code == 200 and r.json()["charged"] == 8_800 and r.json()["ceiling"] == 50_000
    [row] = receipts(ledger_path)
    assert (row.status, row.amount_msat, row.offer_amount) == (Status.SETTLED, 50_000, 50_000)
    assert "settled 8800 of the 50000 signed for" in (row.reason or "")
    with SQLiteLedger(ledger_path) as lg:
        assert lg.spent_msat() == 50_000  # the service's report is only its word: its signature may take the ceiling


@pytest.mark.parametrize("mode", MODES)
def test_the_demos_upto_route_without_permit2_approval_is_a_clear_error(mode: str, demo: tuple[str, Any],
                                                                         ledger_path: Path) -> None:
    url, app = demo
    app.state.x402.permit2_approved = False
    with pytest.raises(Permit2AllowanceRequired) as err:
        call(mode, f"{url}/x402/summarize", ledger_path, EvmSigner.create(), content=b"hello")
    assert "approve the Permit2 contract" in str(err.value) and err.value.network == "eip155:84532"
    [row] = receipts(ledger_path)
    assert row.status is Status.PENDING and app.state.x402.settlements == []  # the signature is held: counted


def test_the_demo_replays_the_first_answer_for_the_same_payment_id_and_409s_another() -> None:
    app = create_app()
    client = TestClient(app)
    first = client.post("/x402/ticker/AAPL")
    ch = x402.parse(402, first.headers)
    assert ch is not None and ch.payment_identifier() == x402.PaymentIdentifier(required=False)
    valued = to_challenge(ch, "http://testserver/x402/ticker/AAPL").offers[0].payload
    signer = EvmSigner.create()

    def signed(nonce: bytes) -> str:
        auth = authorization(valued, signer.address, nonce=nonce, now=int(__import__("time").time()))
        sig = signer.sign_typed_data(*typed_data(valued, auth))
        return x402.encode_payment_header(payment_payload(ch, ch.accepts[0], auth, sig, "pay_" + "1" * 32), 2)[1]

    one = signed(b"\x01" * 32)
    paid = client.post("/x402/ticker/AAPL", headers={"PAYMENT-SIGNATURE": one})
    again = client.post("/x402/ticker/AAPL", headers={"PAYMENT-SIGNATURE": one})
    assert paid.status_code == again.status_code == 200 and paid.content == again.content
    assert again.headers["PAYMENT-RESPONSE"] == paid.headers["PAYMENT-RESPONSE"]
    other = client.post("/x402/ticker/AAPL", headers={"PAYMENT-SIGNATURE": signed(b"\x02" * 32)})
    assert other.status_code == 409 and len(app.state.x402.settlements) == 1


def test_the_demo_imports_without_eth_account_and_names_the_extra_when_paid(monkeypatch: pytest.MonkeyPatch) -> None:
    code = ("import sys; sys.modules['eth_account'] = None; import httpay.demo.server as s; s.create_app(); "
            "assert 'eth_account' not in [m for m in sys.modules if sys.modules[m] is not None]")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    monkeypatch.setitem(sys.modules, "eth_account", None)  # as if it were not installed
    r = TestClient(create_app()).post("/x402/ticker/AAPL", headers={"PAYMENT-SIGNATURE": base64.b64encode(
        json.dumps({"x402Version": 2, "accepted": {}, "payload": {}}).encode()).decode()})
    assert r.status_code == 501 and "pip install 'httpay[x402]'" in r.json()["error"]
    # and it asks for no payment it could not verify: a client would sign one for nothing and keep
    # its row pending (a newcomer's demo-server, installed with the demo extra alone)
    for unpaid in (TestClient(create_app()).get("/x402/ticker/AAPL"),
                   TestClient(create_app()).post("/x402/summarize", content=b"some text")):
        assert unpaid.status_code == 501 and "PAYMENT-REQUIRED" not in unpaid.headers
        assert "pip install 'httpay[x402]'" in unpaid.json()["error"]


# -- the x402 package's own server parts ---------------------------------------------------------------
PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
UPTO_PROXY = "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002"


class Permit2Chain(LocalChain):
    """The local token chain with Permit2 allowances and x402's upto proxy: `settle` moves at most the
    signed amount, once per nonce, and only with the owner's allowance for Permit2."""

    def __init__(self) -> None:
        super().__init__()
        self.allowances: dict[str, int] = {}
        self.permit_nonces: set[int] = set()

    def get_code(self, address: str) -> bytes:
        return b"\x60\x80" if address.lower() in (self.token.lower(), UPTO_PROXY.lower(), PERMIT2.lower()) else b""

    def read_contract(self, address: str, abi: Any, function_name: str, *args: Any) -> Any:
        if function_name == "allowance":
            return self.allowances.get(str(args[0]).lower(), 0)
        if address.lower() == UPTO_PROXY.lower() and function_name == "settle":
            self._check_settle(*args)
            return None
        return super().read_contract(address, abi, function_name, *args)

    def _check_settle(self, permit: Any, amount: int, owner: str, witness: Any, sig: bytes) -> None:
        (_token, permitted), nonce, _deadline = permit
        if amount > permitted or nonce in self.permit_nonces:
            raise Reverted("execution reverted: upto settle")
        if self.allowances.get(owner.lower(), 0) < amount or self.balance(owner) < amount:
            raise Reverted("execution reverted: TRANSFER_FROM_FAILED")

    def write_contract(self, address: str, abi: Any, function_name: str, *args: Any, data_suffix: str | None = None) -> str:
        if address.lower() != UPTO_PROXY.lower() or function_name != "settle":
            return super().write_contract(address, abi, function_name, *args, data_suffix=data_suffix)
        permit, amount, owner, witness, sig = args
        self._check_settle(permit, amount, owner, witness, sig)
        self.permit_nonces.add(permit[1])
        self.balances[owner.lower()] -= amount
        self.fund(witness[0], amount)
        tx = "0x" + f"{len(self.transactions) + 1:064x}"
        self.transactions.append({"hash": tx, "from": owner, "to": witness[0], "value": amount, "nonce": str(permit[1])})
        return tx


def their_app(chain: LocalChain, pay_to: str, *, scheme: str, extensions: dict[str, Any] | None = None,
              metered: str | None = None, server_extension: Any = None) -> Any:
    """Their FastAPI middleware and in-process facilitator guarding POST /work (exact or upto)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from x402 import x402Facilitator, x402ResourceServer
    from x402.extensions.payment_identifier import extract_payment_identifier
    from x402.http.middleware.fastapi import payment_middleware, set_settlement_overrides
    from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme, ExactEvmServerScheme
    from x402.mechanisms.evm.upto import UptoEvmFacilitatorScheme, UptoEvmServerScheme

    facilitator = x402Facilitator()
    facilitator.register([BASE_SEPOLIA], UptoEvmFacilitatorScheme(chain) if scheme == "upto"
                         else ExactEvmFacilitatorScheme(chain))
    server = x402ResourceServer(facilitator)
    server.register(BASE_SEPOLIA, UptoEvmServerScheme() if scheme == "upto" else ExactEvmServerScheme())
    if server_extension is not None:
        server.register_extension(server_extension)
    price = "$0.05" if scheme == "upto" else "$0.01"
    routes = {"POST /work": {"accepts": {"scheme": scheme, "payTo": pay_to, "price": price, "network": BASE_SEPOLIA},
                             "description": "metered work", "mimeType": "application/json",
                             **({"extensions": extensions} if extensions else {})}}
    app = FastAPI()
    app.state.ids = []
    middleware = payment_middleware(routes, server)

    @app.middleware("http")
    async def x402_middleware(request: Any, call_next: Any) -> Any:
        return await middleware(request, call_next)

    @app.post("/work")
    async def work(request: Request) -> Any:
        payload = getattr(request.state, "payment_payload", None)
        app.state.ids.append(extract_payment_identifier(payload) if payload is not None else None)
        response = JSONResponse({"done": True})
        if metered is not None:
            set_settlement_overrides(response, {"amount": metered})
        return response

    return app


@pytest.mark.parametrize("mode", MODES)
def test_their_middleware_takes_our_payment_id_and_it_is_the_ledgers_call_key(mode: str, ledger_path: Path) -> None:
    from x402.extensions.payment_identifier import PAYMENT_IDENTIFIER, declare_payment_identifier_extension

    chain, payee, signer = LocalChain(), Account.create().address, EvmSigner.create()
    chain.fund(signer.address, 1_000_000)
    app = their_app(chain, payee, scheme="exact",
                    extensions={PAYMENT_IDENTIFIER: declare_payment_identifier_extension(required=True)})
    with serve_in_thread(app) as server:
        r = call(mode, f"{server.url}/work", ledger_path, signer, content=b'{"job": 1}')
    assert r.status_code == 200 and r.json() == {"done": True}
    [pid] = app.state.ids
    assert pid is not None and pid.startswith("pay_") and len(chain.transactions) == 1
    with SQLiteLedger(ledger_path) as lg:
        [row] = lg.receipts()
        assert row.status is Status.SETTLED
        [key] = [str(r["call_key"]) for r in lg._query("SELECT call_key FROM calls", ())]
    assert key == pid


@pytest.mark.parametrize("mode", MODES)
def test_their_upto_facilitator_settles_the_metered_amount_and_the_ledger_records_it(mode: str,
                                                                                    ledger_path: Path) -> None:
    chain, payee, signer = Permit2Chain(), Account.create().address, EvmSigner.create()
    chain.fund(signer.address, 1_000_000)
    chain.allowances[signer.address.lower()] = 2**256 - 1  # the person approved Permit2 once, on chain
    app = their_app(chain, payee, scheme="upto", metered="1858")
    with serve_in_thread(app) as server:
        r = call(mode, f"{server.url}/work", ledger_path, signer, content=b'{"tokens": 1858}')
    assert r.status_code == 200
    [tx] = chain.transactions
    assert (tx["to"], tx["value"]) == (payee, 1858) and chain.balance(signer.address) == 1_000_000 - 1858
    [row] = receipts(ledger_path)
    assert (row.status, row.method, row.offer_amount, row.amount_msat) == (Status.SETTLED, "x402:upto:eip155:84532",
                                                                           50_000, 50_000)  # the ceiling stays counted
    assert "settled 1858 of the 50000 signed for" in (row.reason or "")


@pytest.mark.parametrize("mode", MODES)
def test_their_upto_facilitator_without_allowance_is_a_permit2_error_nothing_spent(mode: str,
                                                                                 ledger_path: Path) -> None:
    chain, payee, signer = Permit2Chain(), Account.create().address, EvmSigner.create()
    chain.fund(signer.address, 1_000_000)  # funded, but Permit2 never approved
    app = their_app(chain, payee, scheme="upto", metered="1858")
    with serve_in_thread(app) as server, pytest.raises(Permit2AllowanceRequired) as err:
        call(mode, f"{server.url}/work", ledger_path, signer, content=b"{}")
    assert "approve the Permit2 contract" in str(err.value)
    [row] = receipts(ledger_path)
    assert row.status is Status.PENDING and chain.transactions == []  # the signature is held: still counted


@pytest.mark.parametrize("mode", MODES)
def test_their_sign_in_with_x_lets_a_returning_payer_in_without_paying_again(mode: str, ledger_path: Path) -> None:
    import socket

    from x402.extensions.sign_in_with_x import (
        SIGN_IN_WITH_X,
        CreateSIWxRequestHookOptions,
        InMemorySIWxStorage,
        create_siwx_resource_server_extension,
        declare_siwx_extension,
    )

    chain, payee, signer = LocalChain(), Account.create().address, EvmSigner.create()
    chain.fund(signer.address, 1_000_000)
    with socket.socket() as sock:  # their extension is configured with the origin it serves
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ext = create_siwx_resource_server_extension(CreateSIWxRequestHookOptions(
        origin=f"http://127.0.0.1:{port}", storage=InMemorySIWxStorage()))
    app = their_app(chain, payee, scheme="exact", extensions={SIGN_IN_WITH_X: declare_siwx_extension()},
                    server_extension=ext)
    with serve_in_thread(app, port=port) as server:
        first = call(mode, f"{server.url}/work", ledger_path, signer, pol={"sign_in": True}, content=b"{}")
        again = call(mode, f"{server.url}/work", ledger_path, signer, pol={"sign_in": True}, content=b"{}")
    assert first.status_code == again.status_code == 200
    assert len(chain.transactions) == 1  # paid once; the second time it signed in (their SIWE verifier agreed)
    assert [r.status for r in receipts(ledger_path)] == [Status.SETTLED]
