"""The demo stock service: a local stand-in for stock.l402.org that answers 402 with L402 v0.2 offers.

It exists so httpay's users (people and agents) and its tests can walk the whole flow — 402,
payment request, paying, retrying — against something real but harmless. Everything is labelled
DEMO; no real money moves. Lightning invoices come from an in-memory regtest network served under
`/ln/`, whose wallets `httpay.wallets.demo.DemoWallet` drives.
"""

from __future__ import annotations

import copy
import html
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from string import Template
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from httpay.demo import data
from httpay.demo.classic import ClassicL402, classic_ticker
from httpay.demo.mpp import (
    MppDemo,
    aperture_ticker,
    mpp_both_ticker,
    mpp_evm_ticker,
    mpp_session_stream,
    mpp_session_ticker,
    mpp_ticker,
)
from httpay.demo.network import DemoNetwork, LightningError
from httpay.demo.state import DEFAULT_OFFERS, AccountStore, DemoState, price_msat
from httpay.demo.x402 import X402Demo, x402_summarize, x402_ticker

L402_VERSION = "0.2.2"
PAYMENT_REQUEST_TTL = timedelta(minutes=35)
COINBASE_CONTRACTS = {
    "1": "0x1fa57f879417e029ef57d7ce915b0aa56a507c31",
    "137": "0x288844216a63638381784e0c1081a3826fd5a2e4",
    "8453": "0x03059433bcdb6144624cc2443159d9445c32b7a8",
}


# -- small helpers -----------------------------------------------------------------------------


def _state(request: Request) -> DemoState:
    state: DemoState = request.app.state.demo
    return state


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _ln_error(exc: LightningError) -> JSONResponse:
    return JSONResponse({"error": exc.message, "code": exc.code}, status_code=exc.status)


def _bearer(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), else None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def _json_object(request: Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or None when it is empty, not JSON or not an object."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _int_field(body: dict[str, Any], name: str, default: int | None, minimum: int) -> int | None:
    """An optional integer field; ValueError with a readable message when it is not a whole number >= minimum."""
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}")
    return value


@cache
def _template(name: str) -> Template:
    text = resources.files("httpay.demo").joinpath("templates", f"{name}.html").read_text(encoding="utf-8")
    return Template(text)


def _page(title: str, name: str, status: int = 200, **values: str) -> HTMLResponse:
    """Render a template into the DEMO-labelled base page. Values are escaped unless their key ends in `_html`."""
    safe = {k: (v if k.endswith("_html") else html.escape(v)) for k, v in values.items()}
    body = _template(name).substitute({k.removesuffix("_html"): v for k, v in safe.items()})
    return HTMLResponse(_template("base").substitute(title=html.escape(title), body=body), status_code=status)


def _format_price(offer: dict[str, Any]) -> str:
    currency = str(offer.get("currency", "")).upper()
    if currency == "USD":
        return f"${int(offer['amount']) / 100:.2f} (demo)"
    return f"{offer['amount']} {currency} (demo)"


# -- pages -------------------------------------------------------------------------------------


async def home(request: Request) -> Response:
    return _page("Home", "home", free_credits=str(_state(request).accounts.free_credits), symbols=", ".join(data.known_symbols()))


async def terms(request: Request) -> Response:
    return _page("Terms", "terms")


# -- accounts and the paid resource ------------------------------------------------------------


async def signup(request: Request) -> Response:
    return JSONResponse(_state(request).accounts.create().as_json())


async def info(request: Request) -> Response:
    account = _state(request).accounts.get(_bearer(request))
    if account is None:
        return _error(401, "missing or unknown bearer token; get one from /signup")
    return JSONResponse(account.as_json())


async def ticker(request: Request) -> Response:
    state = _state(request)
    account = state.accounts.get(_bearer(request))
    if account is None:
        return _error(401, "missing or unknown bearer token; get one from /signup")
    symbol = request.path_params["symbol"]
    body = data.ticker(symbol)
    if body is None:
        return _error(404, f"unknown ticker {symbol.upper()}; known: {', '.join(data.known_symbols())}")
    if not state.accounts.spend_one(account.id) and not await _collect_lnbits(state, account.id):
        return JSONResponse(_challenge(request, account.id), status_code=402)
    return JSONResponse(body)


async def _collect_lnbits(state: DemoState, account_id: str) -> bool:
    """With LNbits behind the service: credit paid invoices, then try to spend a credit again."""
    if state.lnbits is None:
        return False
    bought = await run_in_threadpool(state.lnbits.collect, account_id)
    if bought:
        state.accounts.add_credits(account_id, bought)
    return bool(bought) and state.accounts.spend_one(account_id)


def _challenge(request: Request, account_id: str) -> dict[str, Any]:
    """The L402 v0.2 402 body: offers plus where and with which token to ask for payment details."""
    return {
        "version": L402_VERSION,
        "payment_request_url": _state(request).payment_request_url or str(request.url_for("payment_request")),
        "payment_context_token": account_id,
        "terms_url": str(request.url_for("terms")),
        "offers": copy.deepcopy(_state(request).offers),
    }


# -- payment requests --------------------------------------------------------------------------


async def payment_request(request: Request) -> Response:
    state = _state(request)
    body = await _json_object(request)
    if body is None:
        return _error(400, "body must be a JSON object")
    problem = _missing_fields(body)
    if problem:
        return _error(400, problem)
    account = state.accounts.get(body["payment_context_token"])
    if account is None:
        return _error(401, "payment_context_token names no account")
    offer = state.offer(body["offer_id"])
    if offer is None:
        return _error(400, f"unknown offer_id {body['offer_id']!r}")
    method = body["payment_method"]
    if method not in offer.get("payment_methods", []):
        enabled = ", ".join(offer.get("payment_methods", []))
        return _error(400, f"payment method {method!r} is not enabled for {offer['offer_id']}; enabled: {enabled}")
    builder = _METHODS.get(method)
    if builder is None:
        return _error(400, f"payment method {method!r} is not supported by this demo")
    try:
        details = builder(request, account.id, offer, body)
    except ValueError as exc:
        return _error(400 if isinstance(exc, _BadRequest) else 500, str(exc))
    expires = (datetime.now(UTC) + PAYMENT_REQUEST_TTL).isoformat(timespec="seconds")
    return JSONResponse({"version": L402_VERSION, "offer_id": offer["offer_id"], "expires_at": expires, "payment_request": details})


class _BadRequest(ValueError):
    """A client mistake found while building payment details (answered 400, not 500)."""


def _missing_fields(body: dict[str, Any]) -> str | None:
    for name in ("offer_id", "payment_method", "payment_context_token"):
        if not isinstance(body.get(name), str) or not body[name]:
            return f"missing {name} (a non-empty string)"
    return None


def _lightning(request: Request, account_id: str, offer: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Issue an invoice for the offer; paying it on the demo network credits the account once."""
    state = _state(request)
    correct = price_msat(offer, state.usd_per_btc)
    amount: int | None = state.invoice_tamper(offer, correct) if state.invoice_tamper is not None else correct
    credits = int(offer["balance"])
    if state.lnbits is not None:
        if amount is None:
            raise _BadRequest("the LNbits-backed demo cannot issue an invoice without an amount")
        return {"lightning_invoice": state.lnbits.create(account_id, amount, str(offer["title"]), credits)}

    def credit(_: object) -> None:
        state.accounts.add_credits(account_id, credits)

    record = state.network.create_invoice(amount, str(offer["title"]), expiry=state.invoice_expiry_s, on_settle=credit)
    return {"lightning_invoice": record.bolt11}


def _checkout_url(request: Request, account_id: str, offer: dict[str, Any], method: str) -> str:
    checkout = _state(request).checkouts.create(account_id, offer, method)
    return str(request.url_for("checkout", checkout_id=checkout.id))


def _credit_card(request: Request, account_id: str, offer: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    return {"checkout_url": _checkout_url(request, account_id, offer, "credit_card")}


def _coinbase(request: Request, account_id: str, offer: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    return {
        "checkout_url": _checkout_url(request, account_id, offer, "coinbase_commerce"),
        "contract_addresses": dict(COINBASE_CONTRACTS),
    }


def _onchain(request: Request, account_id: str, offer: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    for name in ("asset", "chain"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise _BadRequest(f"{name} must be a string")
    return {
        "address": fake_regtest_address(),
        "asset": body.get("asset") or "BTC",
        "chain": body.get("chain") or "bitcoin-regtest",
        "checkout_url": _checkout_url(request, account_id, offer, "onchain"),
    }


_METHODS: dict[str, Callable[[Request, str, dict[str, Any], dict[str, Any]], dict[str, Any]]] = {
    "lightning": _lightning,
    "credit_card": _credit_card,
    "coinbase_commerce": _coinbase,
    "onchain": _onchain,
}


# -- checkout pages ----------------------------------------------------------------------------


async def checkout(request: Request) -> Response:
    """GET shows the offer and a Pay button; POST pays (once) and says so."""
    checkouts = _state(request).checkouts
    checkout_id = request.path_params["checkout_id"]
    found = checkouts.get(checkout_id)
    if found is None:
        return _page("Not found", "paid", status=404, heading="No such checkout (demo)", message="This checkout link is unknown or was lost when the demo restarted.")
    if request.method == "POST":
        if checkouts.pay(checkout_id):
            return _page("Paid", "paid", heading="Paid (demo)", message=f"{found.offer['balance']} credits were added to your account. No real money moved.")
        return _page("Paid", "paid", heading="Already paid (demo)", message="This checkout was paid before; no credits were added twice.")
    action = (
        "<p><strong>Paid (demo).</strong></p>" if found.paid
        else f'<form method="post" action="{html.escape(str(request.url))}"><button type="submit">Pay (demo)</button></form>'
    )
    return _page(
        "Checkout",
        "checkout",
        offer_title=str(found.offer["title"]),
        offer_description=str(found.offer.get("description", "")),
        balance=str(found.offer["balance"]),
        price=_format_price(found.offer),
        method=found.method,
        action_html=action,
    )


# -- the demo Lightning network ----------------------------------------------------------------


async def ln_create_wallet(request: Request) -> Response:
    body = await _json_object(request)
    if body is None:
        return _ln_error(LightningError("bad_request", "body must be a JSON object"))
    try:
        balance_sat = _int_field(body, "balance_sat", 10_000, 0)
    except ValueError as exc:
        return _ln_error(LightningError("bad_request", str(exc)))
    wallet = _state(request).network.create_wallet(balance_sat or 0)
    return JSONResponse(
        {"wallet_id": wallet.wallet_id, "key": wallet.key, "balance_msat": wallet.balance_msat, "demo": True},
        status_code=201,
    )


async def ln_pay(request: Request) -> Response:
    body = await _json_object(request)
    try:
        _state(request).network.wallet_for_key(_bearer(request))
        if body is None:
            raise LightningError("bad_request", "body must be a JSON object")
        max_fee = _int_field(body, "max_fee_msat", None, 0)
        amount = _int_field(body, "amount_msat", None, 1)  # for an amount-less invoice
        payment = _state(request).network.pay(_bearer(request) or "", body.get("invoice"), max_fee_msat=max_fee,  # type: ignore[arg-type]
                                              amount_msat=amount)
    except ValueError as exc:
        return _ln_error(LightningError("bad_request", str(exc)))
    except LightningError as exc:
        return _ln_error(exc)
    return JSONResponse(payment.as_json())


def _wallets_own(request: Request, find: Callable[[str, str], Any], missing: str) -> Any:
    """What `find(key, payment_hash)` gives for the wallet whose key the request carries; a
    LightningError (unknown key; 404 with `missing`) when there is none."""
    found = find(_bearer(request) or "", request.path_params["payment_hash"])
    if found is None:
        raise LightningError("not_found", missing, 404)
    return found


async def ln_payment(request: Request) -> Response:
    try:
        payment = _wallets_own(request, _state(request).network.lookup, "this wallet made no payment with that hash")
    except LightningError as exc:
        return _ln_error(exc)
    return JSONResponse(payment.as_json())


async def ln_balance(request: Request) -> Response:
    try:
        return JSONResponse({"balance_msat": _state(request).network.balance_msat(_bearer(request) or "")})
    except LightningError as exc:
        return _ln_error(exc)


async def ln_invoice(request: Request) -> Response:
    """A wallet's own invoice, as its wallet sees it: paid or not, and how much came in."""
    try:
        record = _wallets_own(request, _state(request).network.received, "this wallet issued no invoice with that hash")
    except LightningError as exc:
        return _ln_error(exc)
    return JSONResponse({"payment_hash": record.payment_hash, "settled": record.settled,
                         "received_msat": record.paid_msat or 0})


async def ln_create_invoice(request: Request) -> Response:
    """The node's invoice (for a server); with a wallet's key, that wallet's own invoice, amount-less allowed
    (paying it credits the wallet: an MPP session's return invoice)."""
    body = await _json_object(request)
    payee = None
    try:
        if _bearer(request) is not None:
            payee = _state(request).network.wallet_for_key(_bearer(request)).wallet_id
    except LightningError as exc:
        return _ln_error(exc)
    try:
        if body is None:
            raise ValueError("body must be a JSON object")
        amount = _int_field(body, "amount_msat", None, 1)
        if amount is None and payee is None:
            raise ValueError("amount_msat is required")
        expiry = _int_field(body, "expiry", 3600, 1) or 3600
        description = body.get("description", "")
        if not isinstance(description, str):
            raise ValueError("description must be a string")  # noqa: TRY004 - reported as a bad request below
    except ValueError as exc:
        return _ln_error(LightningError("bad_request", str(exc)))
    record = _state(request).network.create_invoice(amount, description, expiry=expiry, payee=payee)
    return JSONResponse({"payment_request": record.bolt11, "payment_hash": record.payment_hash}, status_code=201)


async def ln_node(request: Request) -> Response:
    state = _state(request)
    return JSONResponse({"pubkey": state.network.pubkey, "network": "regtest", "usd_per_btc": state.usd_per_btc, "demo": True})


# -- fake on-chain addresses -------------------------------------------------------------------

def fake_regtest_address() -> str:
    """A random but well-formed regtest P2WPKH address (`bcrt1q…`) nobody owns."""
    import bech32  # installed with bolt11

    address = bech32.encode("bcrt", 0, secrets.token_bytes(20))
    assert address is not None  # a 20-byte v0 program always encodes
    return address


# -- the app -----------------------------------------------------------------------------------


def create_app(
    *,
    offers: list[dict[str, Any]] | None = None,
    usd_per_btc: float = 100_000,
    invoice_expiry_s: int = 1800,
    free_credits: int = 1,
    network: DemoNetwork | None = None,
    lnbits: Any = None,
) -> Starlette:
    """Build a fresh demo service with its own accounts and Lightning network (state in `app.state.demo`)."""
    if usd_per_btc <= 0:
        raise ValueError("usd_per_btc must be positive")
    routes = [
        Route("/", home, name="home"),
        Route("/terms", terms, name="terms"),
        Route("/signup", signup, name="signup"),
        Route("/info", info, name="info"),
        Route("/ticker/{symbol}", ticker, name="ticker"),
        Route("/l402/payment-request", payment_request, methods=["POST"], name="payment_request"),
        Route("/l402/ticker/{symbol}", classic_ticker, name="classic_ticker"),
        Route("/mpp/ticker/{symbol}", mpp_ticker, methods=["GET", "POST"], name="mpp_ticker"),
        Route("/mpp/evm/ticker/{symbol}", mpp_evm_ticker, methods=["GET", "POST"], name="mpp_evm_ticker"),
        Route("/mpp/both/ticker/{symbol}", mpp_both_ticker, methods=["GET", "POST"], name="mpp_both_ticker"),
        Route("/mpp/session/ticker/{symbol}", mpp_session_ticker, methods=["GET", "POST"], name="mpp_session_ticker"),
        Route("/mpp/session/stream/{symbol}", mpp_session_stream, methods=["GET", "POST"], name="mpp_session_stream"),
        Route("/aperture/ticker/{symbol}", aperture_ticker, name="aperture_ticker"),
        Route("/checkout/{checkout_id}", checkout, methods=["GET", "POST"], name="checkout"),
        Route("/ln/wallets", ln_create_wallet, methods=["POST"], name="ln_wallets"),
        Route("/ln/pay", ln_pay, methods=["POST"], name="ln_pay"),
        Route("/ln/payments/{payment_hash}", ln_payment, name="ln_payment"),
        Route("/ln/balance", ln_balance, name="ln_balance"),
        Route("/ln/invoices", ln_create_invoice, methods=["POST"], name="ln_invoices"),
        Route("/ln/invoices/{payment_hash}", ln_invoice, name="ln_invoice"),
        Route("/ln/node", ln_node, name="ln_node"),
        Route("/x402/ticker/{symbol}", x402_ticker, methods=["GET", "POST"], name="x402_ticker"),
        Route("/x402/summarize", x402_summarize, methods=["POST"], name="x402_summarize"),
    ]
    app = Starlette(routes=routes)
    app.state.classic = ClassicL402()
    app.state.mpp = MppDemo()
    app.state.x402 = X402Demo()
    app.state.demo = DemoState(
        offers=copy.deepcopy(DEFAULT_OFFERS if offers is None else offers),
        usd_per_btc=usd_per_btc,
        invoice_expiry_s=invoice_expiry_s,
        accounts=AccountStore(free_credits),
        network=network or DemoNetwork(),
        lnbits=lnbits,
    )
    return app
