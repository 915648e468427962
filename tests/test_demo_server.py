"""The demo stock service and its demo Lightning network, exercised over real HTTP on loopback."""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import bolt11
import httpx
import pytest

from httpay.demo import DemoNetwork, create_app, run, serve_in_thread
from httpay.demo.runner import RunningServer
from httpay.demo.server import fake_regtest_address
from httpay.demo.state import DEFAULT_OFFERS, DemoState, price_msat

ONCHAIN_OFFER = {
    "offer_id": "offer_onchain",
    "title": "10 Credits On-chain",
    "description": "Purchase 10 credits on-chain",
    "type": "one-time",
    "balance": 10,
    "amount": 50,
    "currency": "USD",
    "payment_methods": ["onchain", "lightning"],
}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve_in_thread() as running:
        yield running


@pytest.fixture(scope="module")
def onchain_server() -> Iterator[RunningServer]:
    with serve_in_thread(create_app(offers=[ONCHAIN_OFFER])) as running:
        yield running


@pytest.fixture()
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def state_of(server: RunningServer) -> DemoState:
    return server.app.state.demo


def signup(client: httpx.Client) -> tuple[str, dict[str, str]]:
    account_id = client.get("/signup").json()["id"]
    return account_id, {"Authorization": f"Bearer {account_id}"}


def broke_account(client: httpx.Client) -> tuple[str, dict[str, str]]:
    """An account that has spent its free credit."""
    account_id, headers = signup(client)
    assert client.get("/ticker/AAPL", headers=headers).status_code == 200
    return account_id, headers


def ask(client: httpx.Client, token: str, offer_id: str, method: str, **extra: Any) -> httpx.Response:
    body = {"offer_id": offer_id, "payment_method": method, "payment_context_token": token, **extra}
    return client.post("/l402/payment-request", json=body)


def wallet_headers(client: httpx.Client, balance_sat: int = 10_000) -> dict[str, str]:
    key = client.post("/ln/wallets", json={"balance_sat": balance_sat}).json()["key"]
    return {"Authorization": f"Bearer {key}"}


# -- pages and accounts ------------------------------------------------------------------------


def test_home_and_terms_say_demo(client: httpx.Client) -> None:
    home = client.get("/")
    assert home.status_code == 200 and "text/html" in home.headers["content-type"]
    assert "DEMO" in home.text and "/ticker/" in home.text and "/l402/payment-request" in home.text
    terms = client.get("/terms")
    assert terms.status_code == 200 and "No real money" in terms.text


def test_signup_gives_an_account_with_one_credit(client: httpx.Client) -> None:
    body = client.get("/signup").json()
    assert set(body) == {"id", "credits", "created_at", "last_credit_update_at"}
    assert uuid.UUID(body["id"]).version == 4
    assert body["credits"] == 1
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", body["created_at"])
    assert parsedate_to_datetime(body["last_credit_update_at"]).tzinfo is not None


def test_info_shows_the_account(client: httpx.Client) -> None:
    account_id, headers = signup(client)
    body = client.get("/info", headers=headers).json()
    assert body["id"] == account_id and body["credits"] == 1


@pytest.mark.parametrize("path", ["/info", "/ticker/AAPL"])
@pytest.mark.parametrize("auth", [None, "Bearer not-an-account", "Basic abc", "Bearer"])
def test_missing_or_unknown_bearer_is_401(client: httpx.Client, path: str, auth: str | None) -> None:
    response = client.get(path, headers={"Authorization": auth} if auth else {})
    assert response.status_code == 401
    assert isinstance(response.json()["error"], str)


# -- the paid resource -------------------------------------------------------------------------


def test_ticker_spends_one_credit_and_is_case_insensitive(client: httpx.Client, server: RunningServer) -> None:
    account_id, headers = signup(client)
    response = client.get("/ticker/aapl", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert body["symbol"] == "AAPL"
    assert body["additional_data"] == {"current_price": 248.05, "eps": 6.08, "pe_ratio": 40.7977}
    assert len(body["financial_data"]) == 4
    assert body["financial_data"][0] == {
        "fiscalDateEnding": "2024-09-30",
        "grossProfit": 180683000000.0,
        "netIncome": 93736000000.0,
        "totalRevenue": 391035000000.0,
    }
    assert state_of(server).accounts.get(account_id).credits == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("symbol", ["MSFT", "GOOGL", "AMZN", "NVDA", "META", "TSLA", "NFLX", "BTC-USD"])
def test_every_known_ticker_answers(client: httpx.Client, symbol: str) -> None:
    _, headers = signup(client)
    body = client.get(f"/ticker/{symbol.lower()}", headers=headers).json()
    assert body["symbol"] == symbol and "current_price" in body["additional_data"]


def test_unknown_ticker_is_404_and_keeps_the_credit(client: httpx.Client) -> None:
    _, headers = signup(client)
    response = client.get("/ticker/xyz", headers=headers)
    assert response.status_code == 404
    assert response.json()["error"].startswith("unknown ticker XYZ; known: AAPL, ")
    assert client.get("/info", headers=headers).json()["credits"] == 1


def test_no_credit_gives_the_exact_402_challenge(client: httpx.Client, server: RunningServer) -> None:
    account_id, headers = broke_account(client)
    response = client.get("/ticker/AAPL", headers=headers)
    assert response.status_code == 402
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "version": "0.2.2",
        "payment_request_url": f"{server.url}/l402/payment-request",
        "payment_context_token": account_id,
        "terms_url": f"{server.url}/terms",
        "offers": DEFAULT_OFFERS,
    }
    assert client.get("/info", headers=headers).json()["credits"] == 0


# -- payment requests --------------------------------------------------------------------------


def test_lightning_payment_request_gives_a_regtest_invoice_for_the_offer(client: httpx.Client, server: RunningServer) -> None:
    account_id, _ = broke_account(client)
    response = ask(client, account_id, "offer_c668e0c0", "lightning")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"version", "offer_id", "expires_at", "payment_request"}
    assert body["version"] == "0.2.2" and body["offer_id"] == "offer_c668e0c0"
    expires = datetime.fromisoformat(body["expires_at"])
    assert body["expires_at"].endswith("+00:00")
    assert timedelta(minutes=30) < expires - datetime.now(UTC) <= timedelta(minutes=35)
    invoice_text = body["payment_request"]["lightning_invoice"]
    assert invoice_text.startswith("lnbcrt")
    invoice = bolt11.decode(invoice_text)
    assert invoice.currency == "bcrt"
    assert invoice.amount_msat == 10_000
    assert invoice.description == "1 Credit Package"
    assert invoice.expiry == 1800
    assert invoice.payment_secret
    assert invoice.payee == client.get("/ln/node").json()["pubkey"] == state_of(server).network.pubkey
    record = state_of(server).network.invoice(invoice.payment_hash)
    assert record is not None and hashlib.sha256(bytes.fromhex(record.preimage)).hexdigest() == invoice.payment_hash


@pytest.mark.parametrize(("offer_id", "msat"), [("offer_97bf23f7", 1_000_000), ("offer_a896b13c", 4_990_000)])
def test_invoice_amount_converts_cents_at_the_service_rate(client: httpx.Client, offer_id: str, msat: int) -> None:
    account_id, _ = signup(client)
    invoice = ask(client, account_id, offer_id, "lightning").json()["payment_request"]["lightning_invoice"]
    assert bolt11.decode(invoice).amount_msat == msat


def test_price_conversion() -> None:
    offer = {"amount": 1, "currency": "USD"}
    assert price_msat(offer, 100_000) == 10_000
    assert price_msat(offer, 50_000) == 20_000
    assert price_msat({"amount": 3, "currency": "usd"}, 70_000) == 42_857  # 42857.14… rounds to whole msat
    assert price_msat({"amount": 21, "currency": "SAT"}, 100_000) == 21_000
    with pytest.raises(ValueError):
        price_msat({"amount": 1, "currency": "EUR"}, 100_000)


def test_credit_card_payment_request_gives_a_checkout_page(client: httpx.Client, server: RunningServer) -> None:
    account_id, _ = signup(client)
    body = ask(client, account_id, "offer_a896b13c", "credit_card").json()
    assert set(body["payment_request"]) == {"checkout_url"}
    assert body["payment_request"]["checkout_url"].startswith(f"{server.url}/checkout/")


def test_coinbase_payment_request_gives_checkout_and_contracts(client: httpx.Client, server: RunningServer) -> None:
    account_id, _ = signup(client)
    details = ask(client, account_id, "offer_97bf23f7", "coinbase_commerce").json()["payment_request"]
    assert details["checkout_url"].startswith(f"{server.url}/checkout/")
    assert set(details["contract_addresses"]) == {"1", "137", "8453"}
    assert all(re.fullmatch(r"0x[0-9a-f]{40}", a) for a in details["contract_addresses"].values())


def test_onchain_payment_request_gives_a_regtest_address(onchain_server: RunningServer) -> None:
    with httpx.Client(base_url=onchain_server.url) as c:
        account_id, _ = signup(c)
        plain = ask(c, account_id, "offer_onchain", "onchain").json()["payment_request"]
        other = ask(c, account_id, "offer_onchain", "onchain", chain="liquid-regtest", asset="L-BTC").json()["payment_request"]
    assert plain["address"].startswith("bcrt1q") and plain["address"] != other["address"]
    assert (plain["asset"], plain["chain"]) == ("BTC", "bitcoin-regtest")
    assert (other["asset"], other["chain"]) == ("L-BTC", "liquid-regtest")
    assert plain["checkout_url"].startswith(f"{onchain_server.url}/checkout/")


def test_fake_addresses_are_valid_bech32() -> None:
    import bech32 as segwit  # installed with bolt11
    address = fake_regtest_address()
    version, program = segwit.decode("bcrt", address)
    assert version == 0 and program is not None and len(program) == 20


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "JSON"),
        (b"[1, 2]", "JSON"),
        ({"payment_method": "lightning", "payment_context_token": "TOKEN"}, "offer_id"),
        ({"offer_id": "offer_c668e0c0", "payment_context_token": "TOKEN"}, "payment_method"),
        ({"offer_id": "offer_c668e0c0", "payment_method": "lightning"}, "payment_context_token"),
        ({"offer_id": "offer_nope", "payment_method": "lightning", "payment_context_token": "TOKEN"}, "offer_nope"),
        ({"offer_id": "offer_c668e0c0", "payment_method": "credit_card", "payment_context_token": "TOKEN"}, "not enabled"),
        ({"offer_id": "offer_c668e0c0", "payment_method": 7, "payment_context_token": "TOKEN"}, "payment_method"),
    ],
)
def test_bad_payment_requests_are_400(client: httpx.Client, body: Any, fragment: str) -> None:
    account_id, _ = signup(client)
    if isinstance(body, bytes):
        response = client.post("/l402/payment-request", content=body, headers={"Content-Type": "application/json"})
    else:
        body = {k: (account_id if v == "TOKEN" else v) for k, v in body.items()}
        response = client.post("/l402/payment-request", json=body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_payment_request_for_unknown_account_is_401(client: httpx.Client) -> None:
    response = ask(client, str(uuid.uuid4()), "offer_c668e0c0", "lightning")
    assert response.status_code == 401 and response.json()["error"]


# -- checkout pages ----------------------------------------------------------------------------


def test_checkout_page_then_pay_credits_once(client: httpx.Client) -> None:
    account_id, headers = broke_account(client)
    url = ask(client, account_id, "offer_a896b13c", "credit_card").json()["payment_request"]["checkout_url"]
    page = client.get(url)
    assert page.status_code == 200
    for text in ("DEMO", "750 Credits Package", "$4.99", 'method="post"', "Pay"):
        assert text in page.text
    paid = client.post(url)
    assert paid.status_code == 200 and "Paid (demo)" in paid.text
    again = client.post(url)
    assert again.status_code == 200 and "Already paid" in again.text
    assert client.get("/info", headers=headers).json()["credits"] == 750
    assert "Paid (demo)" in client.get(url).text
    assert client.get("/ticker/AAPL", headers=headers).status_code == 200


def test_unknown_checkout_is_404(client: httpx.Client) -> None:
    assert client.get("/checkout/nope").status_code == 404
    assert client.post("/checkout/nope").status_code == 404


# -- the demo Lightning network over HTTP ------------------------------------------------------


def test_paying_the_offer_invoice_credits_the_account(client: httpx.Client) -> None:
    account_id, headers = broke_account(client)
    invoice = ask(client, account_id, "offer_c668e0c0", "lightning").json()["payment_request"]["lightning_invoice"]
    payer = wallet_headers(client, 100)
    paid = client.post("/ln/pay", json={"invoice": invoice, "max_fee_msat": 0}, headers=payer)
    assert paid.status_code == 200
    body = paid.json()
    assert body["status"] == "settled" and body["fee_msat"] == 0 and body["amount_msat"] == 10_000
    assert hashlib.sha256(bytes.fromhex(body["preimage"])).hexdigest() == body["payment_hash"] == bolt11.decode(invoice).payment_hash
    assert client.get("/ln/balance", headers=payer).json() == {"balance_msat": 90_000}
    assert client.get("/ticker/AAPL", headers=headers).status_code == 200
    again = client.post("/ln/pay", json={"invoice": invoice}, headers=wallet_headers(client))
    assert again.status_code == 409 and again.json()["code"] == "already_paid"
    assert client.get("/info", headers=headers).json()["credits"] == 0


def test_wallet_creation(client: httpx.Client) -> None:
    created = client.post("/ln/wallets")
    assert created.status_code == 201
    body = created.json()
    assert body["balance_msat"] == 10_000_000 and len(body["key"]) >= 32 and body["wallet_id"]
    assert client.post("/ln/wallets", json={"balance_sat": -1}).status_code == 400
    assert client.post("/ln/wallets", json={"balance_sat": "lots"}).status_code == 400


def mint(server: RunningServer, amount_msat: int | None = 5_000, **kwargs: Any) -> str:
    return state_of(server).network.create_invoice(amount_msat, "test", **kwargs).bolt11


@pytest.mark.parametrize(
    ("make_invoice", "status", "code"),
    [
        (lambda s: "lnbcrt1garbage", 400, "invoice_invalid"),
        (lambda s: 42, 400, "invoice_invalid"),
        (lambda s: DemoNetwork().create_invoice(5_000, "elsewhere").bolt11, 400, "invoice_invalid"),
        (lambda s: mint(s, currency="bc"), 400, "invoice_invalid"),
        (lambda s: mint(s, date=int(time.time()) - 7200, expiry=60), 400, "invoice_expired"),
        (lambda s: mint(s, None), 400, "amount_missing"),
        (lambda s: mint(s, 10_000_000_000), 400, "insufficient_funds"),
    ],
    ids=["garbage", "not-a-string", "foreign-node", "mainnet", "expired", "no-amount", "too-big"],
)
def test_refused_payments_name_the_reason(client: httpx.Client, server: RunningServer, make_invoice: Any, status: int, code: str) -> None:
    payer = wallet_headers(client)
    response = client.post("/ln/pay", json={"invoice": make_invoice(server)}, headers=payer)
    assert response.status_code == status
    assert response.json()["code"] == code and response.json()["error"]
    assert client.get("/ln/balance", headers=payer).json()["balance_msat"] == 10_000_000


def test_pay_needs_a_wallet_key(client: httpx.Client, server: RunningServer) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}):
        response = client.post("/ln/pay", json={"invoice": mint(server)}, headers=headers)
        assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    assert client.get("/ln/balance").status_code == 401
    assert client.get("/ln/payments/" + "0" * 64).status_code == 401


def test_bad_pay_bodies_are_400(client: httpx.Client, server: RunningServer) -> None:
    payer = wallet_headers(client)
    bad_fee = client.post("/ln/pay", json={"invoice": mint(server), "max_fee_msat": -1}, headers=payer)
    assert bad_fee.status_code == 400
    not_json = client.post("/ln/pay", content=b"{", headers=payer)
    assert not_json.status_code == 400


def test_lookup_is_private_to_the_payer(client: httpx.Client, server: RunningServer) -> None:
    payer, other = wallet_headers(client), wallet_headers(client)
    paid = client.post("/ln/pay", json={"invoice": mint(server, 7_000)}, headers=payer).json()
    found = client.get(f"/ln/payments/{paid['payment_hash']}", headers=payer)
    assert found.status_code == 200
    assert found.json() == {**paid, "status": "settled"}
    hidden = client.get(f"/ln/payments/{paid['payment_hash']}", headers=other)
    assert hidden.status_code == 404 and hidden.json()["code"] == "not_found"


def test_minting_invoices_over_http(client: httpx.Client, server: RunningServer) -> None:
    created = client.post("/ln/invoices", json={"amount_msat": 1234, "description": "tip", "expiry": 60})
    assert created.status_code == 201
    body = created.json()
    invoice = bolt11.decode(body["payment_request"])
    assert invoice.amount_msat == 1234 and invoice.description == "tip" and invoice.expiry == 60
    assert invoice.payment_hash == body["payment_hash"]
    for bad in ({}, {"amount_msat": 0}, {"amount_msat": "5"}, {"amount_msat": 5, "description": 3}):
        assert client.post("/ln/invoices", json=bad).status_code == 400


def test_node_info(client: httpx.Client, server: RunningServer) -> None:
    assert client.get("/ln/node").json() == {"pubkey": state_of(server).network.pubkey, "network": "regtest",
                                             "usd_per_btc": 100_000, "demo": True}


def test_concurrent_payers_settle_an_invoice_once(client: httpx.Client, server: RunningServer) -> None:
    account_id, headers = broke_account(client)
    invoice = ask(client, account_id, "offer_97bf23f7", "lightning").json()["payment_request"]["lightning_invoice"]
    payers = [wallet_headers(client) for _ in range(8)]
    codes: list[int] = []
    barrier = threading.Barrier(len(payers))

    def pay(h: dict[str, str]) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            barrier.wait()
            codes.append(c.post("/ln/pay", json={"invoice": invoice}, headers=h).status_code)

    threads = [threading.Thread(target=pay, args=(h,)) for h in payers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] + [409] * 7
    assert client.get("/info", headers=headers).json()["credits"] == 120


# -- app options and the runner ----------------------------------------------------------------


def test_app_options_and_tamper_hook() -> None:
    app = create_app(usd_per_btc=50_000, invoice_expiry_s=600, free_credits=0)
    with serve_in_thread(app) as running, httpx.Client(base_url=running.url) as c:
        account_id, headers = signup(c)
        assert c.get("/ticker/AAPL", headers=headers).status_code == 402
        invoice = bolt11.decode(ask(c, account_id, "offer_c668e0c0", "lightning").json()["payment_request"]["lightning_invoice"])
        assert (invoice.amount_msat, invoice.expiry) == (20_000, 600)
        app.state.demo.invoice_tamper = lambda offer, msat: msat * 3
        tampered = ask(c, account_id, "offer_c668e0c0", "lightning").json()["payment_request"]["lightning_invoice"]
        assert bolt11.decode(tampered).amount_msat == 60_000


def test_servers_start_and_stop_repeatedly() -> None:
    urls = []
    for _ in range(3):
        with serve_in_thread() as running:
            assert httpx.get(running.url + "/ln/node").status_code == 200
            urls.append(running.url)
        with pytest.raises(httpx.ConnectError):
            httpx.get(running.url + "/ln/node")
    assert all(u.startswith("http://127.0.0.1:") for u in urls)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_only_loopback_hosts_are_allowed(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        run(host=host, port=0)
    with pytest.raises(ValueError, match="loopback"), serve_in_thread(host=host):
        pass
