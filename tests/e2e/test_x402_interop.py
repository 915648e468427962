"""httpay pays the PyPI `x402` package's own server: their FastAPI middleware, their in-process
facilitator with their real `exact` EVM scheme (it recovers our EIP-712 signature itself), and a
local token contract instead of a chain (tests/e2e/x402_local.py). Also: their v1 facilitator
accepts our v1 payload, and our reader agrees with theirs about their 402."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account

import httpay
from httpay.demo.runner import serve_in_thread
from httpay.errors import PaymentRejected
from httpay.ledger import SQLiteLedger, Status
from httpay.protocols import x402
from httpay.signers import EvmSigner
from tests.e2e.x402_local import BASE_SEPOLIA_USDC, LocalChain, paid_app
from tests.helpers import FakeService, FakeWallet

RATE = 100_000.0  # USD per BTC: the route's $0.01 is 10,000 msat


@pytest.fixture
def chain() -> LocalChain:
    return LocalChain()


@pytest.fixture
def payee() -> str:
    return str(Account.create().address)


@pytest.fixture
def signer(chain: LocalChain) -> EvmSigner:
    s = EvmSigner.create()
    chain.fund(s.address, 1_000_000)  # 1 USDC
    return s


@pytest.fixture
def app(chain: LocalChain, payee: str) -> Any:
    return paid_app(chain, payee)


def policy(**over: Any) -> httpay.Policy:
    return httpay.Policy(**{"methods": ["lightning", "x402"], "usd_per_btc": RATE, "max_per_payment_usd": 0.05, **over})


def async_client(app: Any, ledger: Path, signer: Any, **pol: Any) -> httpay.AsyncClient:
    return httpay.AsyncClient(wallet=FakeWallet(FakeService()), ledger=ledger, policy=policy(**pol),
                              transport=httpx.ASGITransport(app), x402_signer=signer, base_url="http://svc")


def receipts(ledger: Path) -> list[Any]:
    with SQLiteLedger(ledger) as lg:
        return lg.receipts()


async def test_pays_their_middleware_and_gets_200(app: Any, chain: LocalChain, payee: str, signer: EvmSigner,
                                                  ledger_path: Path) -> None:
    async with async_client(app, ledger_path, signer) as c:
        r = await c.get("/weather")
        assert r.status_code == 200 and r.json()["report"] == "sunny"
        assert (await c.get("/free")).status_code == 200
    [tx] = chain.transactions
    assert (tx["from"], tx["to"], tx["value"]) == (signer.address, payee, 10_000)
    assert chain.balance(signer.address) == 990_000 and chain.balance(payee) == 10_000 and app.state.served == 1
    [paid] = receipts(ledger_path)
    assert (paid.status, paid.protocol, paid.method) == (Status.SETTLED, "x402", "x402:exact:eip155:84532")
    assert paid.amount_msat == 10_000 and paid.payment_hash == tx["nonce"][2:] and tx["hash"] in (paid.reason or "")
    assert httpay.receipt_of(r) == paid


def test_the_sync_client_pays_over_loopback(app: Any, chain: LocalChain, signer: EvmSigner, ledger_path: Path) -> None:
    with serve_in_thread(app) as server, httpay.Client(
        wallet=FakeWallet(FakeService()), ledger=ledger_path, policy=policy(), x402_signer=signer,
    ) as c:
        for _ in range(2):  # x402 buys one request at a time: each is paid once
            assert c.get(f"{server.url}/weather").status_code == 200
    assert len(chain.transactions) == 2 and chain.balance(signer.address) == 980_000
    assert [r.status for r in receipts(ledger_path)] == [Status.SETTLED, Status.SETTLED]


@pytest.mark.parametrize("pol", [{"budget_usd": 0.005}, {"max_per_payment_usd": 0.001}])
async def test_over_the_limit_nothing_is_signed(app: Any, chain: LocalChain, ledger_path: Path,
                                                pol: dict[str, Any]) -> None:
    class NeverSign(EvmSigner):
        __slots__ = ()

        def sign_typed_data(self, *a: Any, **k: Any) -> bytes:
            raise AssertionError("signed although the policy refuses")

    async with async_client(app, ledger_path, NeverSign(Account.create()), **pol) as c:
        with pytest.raises(httpay.PaymentRefused) as err:
            await c.get("/weather")
    assert err.value.rule in ("budget", "max_per_payment") and "$0.01" in str(err.value)
    assert chain.transactions == [] and app.state.served == 0 and receipts(ledger_path) == []


async def test_with_no_signer_it_is_refused_clearly(app: Any, chain: LocalChain, ledger_path: Path) -> None:
    async with async_client(app, ledger_path, None) as c:
        with pytest.raises(httpay.PaymentRefused) as err:
            await c.get("/weather")
    assert err.value.rule == "no_signer" and "0.01 USDC" in str(err.value) and "eip155:84532" in str(err.value)
    assert chain.transactions == [] and receipts(ledger_path) == []


async def test_their_facilitator_rejects_a_forged_signature(app: Any, chain: LocalChain, signer: EvmSigner,
                                                            ledger_path: Path) -> None:
    """Their exact scheme really checks the signature: one by another key for our address is refused."""
    class Forger:
        def __init__(self) -> None:
            self.other = EvmSigner.create()

        address, name = signer.address, signer.name

        def pays_on(self, network: str) -> bool:
            return True

        def sign_typed_data(self, *args: Any) -> bytes:
            return self.other.sign_typed_data(*args)

    async with async_client(app, ledger_path, Forger()) as c:
        with pytest.raises(PaymentRejected) as err:
            await c.get("/weather")
    assert "signature" in str(err.value) and chain.transactions == [] and app.state.served == 0
    [row] = receipts(ledger_path)
    assert row.status is Status.PENDING and "answered 402" in (row.reason or "")  # its word only: counted


async def test_a_payer_without_funds_is_refused_and_nothing_settles(app: Any, chain: LocalChain,
                                                                    ledger_path: Path) -> None:
    async with async_client(app, ledger_path, EvmSigner.create()) as c:
        with pytest.raises(PaymentRejected, match="insufficient_balance"):
            await c.get("/weather")
    assert chain.transactions == [] and [r.status for r in receipts(ledger_path)] == [Status.PENDING]


async def test_our_reader_agrees_with_theirs(app: Any, payee: str) -> None:
    from x402.http.utils import decode_payment_required_header

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://svc") as plain:
        r = await plain.get("/weather")
    theirs = decode_payment_required_header(r.headers["payment-required"])
    ours = x402.parse(r.status_code, r.headers, r.content)
    assert ours is not None and ours.version == theirs.x402_version == 2
    assert ours.resource == theirs.resource.url == "http://svc/weather"
    assert ours.description == theirs.resource.description
    [mine], [their] = ours.accepts, theirs.accepts
    assert (mine.scheme, mine.network, mine.amount, mine.asset, mine.pay_to, mine.max_timeout_seconds) == (
        their.scheme, their.network, int(their.amount), their.asset, their.pay_to, their.max_timeout_seconds)
    assert dict(mine.extra) == their.extra and mine.pay_to == payee and mine.asset == BASE_SEPOLIA_USDC
    assert ours.to_offers()[0].payment_methods == ("x402:exact:eip155:84532",)


async def test_they_decode_our_payment_header(app: Any, signer: EvmSigner, ledger_path: Path) -> None:
    """What we send is their PaymentPayload, accepting exactly the requirement they offered."""
    from x402.http.utils import decode_payment_required_header, decode_payment_signature_header

    async with async_client(app, ledger_path, signer) as c:
        r = await c.get("/weather")
    assert r.status_code == 200
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://svc") as plain:
        offered = decode_payment_required_header((await plain.get("/weather")).headers["payment-required"])
    header = r.request.headers["payment-signature"]
    payload = decode_payment_signature_header(header)
    assert payload.x402_version == 2 and payload.accepted == offered.accepts[0]
    assert payload.payload["authorization"]["from"] == signer.address


# -- v1: their v1 facilitator verifies and settles our v1 payload --------------------------------
@pytest.fixture
def v1_service(chain: LocalChain, payee: str) -> Iterator[tuple[Any, list[Any]]]:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from x402 import x402Facilitator
    from x402.http.utils import decode_payment_signature_header, encode_payment_response_header
    from x402.mechanisms.evm.exact.v1.facilitator import ExactEvmSchemeV1
    from x402.schemas.v1 import PaymentRequirementsV1

    facilitator = x402Facilitator()
    facilitator.register_v1(["base-sepolia"], ExactEvmSchemeV1(chain))
    req = {"scheme": "exact", "network": "base-sepolia", "maxAmountRequired": "25000", "resource": "http://svc/v1",
           "description": "v1 weather", "mimeType": "application/json", "payTo": payee, "maxTimeoutSeconds": 60,
           "asset": BASE_SEPOLIA_USDC, "extra": {"name": "USDC", "version": "2"}}
    verdicts: list[Any] = []

    async def route(request: Request) -> JSONResponse:
        header = request.headers.get("x-payment")
        challenge = {"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": [req]}
        if header is None:
            return JSONResponse(challenge, status_code=402)
        payload = decode_payment_signature_header(header)
        requirements = PaymentRequirementsV1.model_validate(req)
        verdict = await facilitator.verify(payload, requirements)
        verdicts.append(verdict)
        if not verdict.is_valid:
            return JSONResponse(dict(challenge, error=verdict.invalid_reason), status_code=402)
        settled = await facilitator.settle(payload, requirements)
        return JSONResponse({"report": "v1 sunny"}, headers={"X-PAYMENT-RESPONSE": encode_payment_response_header(settled)})

    yield Starlette(routes=[Route("/v1", route)]), verdicts


async def test_their_v1_facilitator_accepts_our_v1_payment(v1_service: tuple[Any, list[Any]], chain: LocalChain,
                                                           signer: EvmSigner, ledger_path: Path) -> None:
    v1_app, verdicts = v1_service
    async with async_client(v1_app, ledger_path, signer) as c:
        r = await c.get("/v1")
    assert r.status_code == 200 and [v.is_valid for v in verdicts] == [True]
    assert [t["value"] for t in chain.transactions] == [25_000]
    [row] = receipts(ledger_path)
    assert (row.status, row.method, row.amount_msat) == (Status.SETTLED, "x402:exact:base-sepolia", 25_000)
    assert chain.transactions[0]["hash"] in (row.reason or "")
    sent = json.loads(base64.b64decode(r.request.headers["x-payment"]))
    assert sent["x402Version"] == 1 and sent["scheme"] == "exact"


async def test_an_x402_only_client_needs_no_lightning_wallet(app: Any, chain: LocalChain, signer: EvmSigner,
                                                              ledger_path: Path) -> None:
    async with httpay.AsyncClient(ledger=ledger_path, policy=policy(methods=["x402"]), x402_signer=signer,
                                  transport=httpx.ASGITransport(app), base_url="http://svc") as c:
        assert (await c.get("/weather")).status_code == 200
    assert len(chain.transactions) == 1 and [r.status for r in receipts(ledger_path)] == [Status.SETTLED]


def test_without_a_lightning_wallet_an_l402_challenge_is_refused_clearly(signer: EvmSigner, ledger_path: Path) -> None:
    svc = FakeService()
    with httpay.Client(ledger=ledger_path, policy=policy(), x402_signer=signer, transport=httpx.MockTransport(svc)) as c, \
            pytest.raises(httpay.PaymentRefused) as err:
        c.get("http://stock.test/ticker/MSFT")
    assert err.value.rule == "no_wallet" and "wallet=" in str(err.value) and svc.pr_calls == 0
    with pytest.raises(httpay.ConfigError, match="wallet= .* or x402_signer="):
        httpay.Client(ledger=ledger_path)
