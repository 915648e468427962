"""MPP lightning sessions against services that lie: a refund claimed and never paid, a stream asking
for top-ups it did not earn, a connection dropped once the deposit is paid; and a policy's methods.
Each is a real server on loopback paid by a real demo wallet; what the wallet lost is what the ledger
and the budgets must see."""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

import httpay
from httpay.demo.runner import RunningServer, serve_in_thread
from httpay.demo.server import create_app
from httpay.errors import PaidRequestFailed, PaymentRefused, SessionError
from httpay.ledger.models import Status
from httpay.protocols import mpp as wire

SECRET = b"s" * 32
BALANCE_SAT = 50_000


def session_402(app: Starlette, deposit_sat: int, unit_sat: int = 10) -> Response:
    rec = app.state.demo.network.create_invoice(deposit_sat * 1000, "deposit")
    req = {"amount": str(unit_sat), "currency": "sat", "unitType": "chunk", "depositInvoice": rec.bolt11,
           "paymentHash": rec.payment_hash, "depositAmount": str(deposit_sat)}
    params = wire.make_challenge(SECRET, realm="127.0.0.1", method="lightning", intent="session", request=req,
                                 expires=datetime.now(UTC) + timedelta(minutes=5))
    return Response(b'{"type":"https://paymentauth.org/problems/payment-required"}', status_code=402,
                    headers={"WWW-Authenticate": wire.challenge_header(params),
                             "content-type": "application/problem+json"})


def action(request: Request) -> tuple[str | None, dict[str, Any]]:
    header = request.headers.get("authorization")
    if not header:
        return None, {}
    payload = wire.parse_credential(header).payload
    return str(payload.get("action")), payload


@contextmanager
def serve(route: Callable[[Request], Any]) -> Iterator[RunningServer]:
    app = create_app()
    app.add_route("/s", route, methods=["GET", "POST"])
    with serve_in_thread(app) as server:
        yield server


def refunding(paid_back_sat: int) -> Callable[[Request], Response]:
    """A service whose close claims the whole deposit back and pays `paid_back_sat` of it."""
    def route(request: Request) -> Response:
        act, payload = action(request)
        if act is None:
            return session_402(request.app, 1_000)
        if act == "open":
            request.app.state.return_invoice = payload["returnInvoice"]
        if act == "close":
            if paid_back_sat:
                request.app.state.demo.network.pay_out(request.app.state.return_invoice, paid_back_sat * 1000)
            return JSONResponse({"status": "closed", "refundSats": 1_000, "refundStatus": "succeeded", "spentSats": 0})
        return JSONResponse({"ok": act})
    return route


@pytest.mark.parametrize(("paid_back", "counted", "status"), [
    (0, 1_000, "the service says it refunded 1000 sat; the wallet received 0"),
    (400, 600, "the service says it refunded 1000 sat; the wallet received 400"),
    (1_000, 0, "succeeded"),
], ids=["claimed-never-paid", "paid-in-part", "honest"])
def test_a_refund_counts_as_far_as_the_wallet_received_it(paid_back: int, counted: int, status: str) -> None:
    """Budgets give a refund back only as it arrived on the return invoice: a service claiming every
    close refunded the deposit, paying nothing, used to empty a wallet past every budget."""
    with serve(refunding(paid_back)) as server:
        wallet = httpay.DemoWallet.create(server.url, balance_sat=BALANCE_SAT)
        with httpay.Client(wallet=wallet, ledger=":memory:") as c:
            with httpay.MppSession(c, server.url + "/s") as s:
                assert s.get().status_code == 200
            lost_sat = BALANCE_SAT - wallet.balance_msat() // 1000
            assert lost_sat == counted and c.payer.ledger.spent_msat() == counted * 1000
            assert (s.state.refund_sat, s.state.refund_status) == (1_000 - counted, status)


def test_a_claimed_refund_cannot_open_session_after_session_past_the_budget() -> None:
    with serve(refunding(0)) as server:
        wallet = httpay.DemoWallet.create(server.url, balance_sat=BALANCE_SAT)
        with httpay.Client(wallet=wallet, ledger=":memory:", policy=httpay.Policy(budget_sat=2_500)) as c:
            opened = 0
            with pytest.raises(PaymentRefused) as over:
                for _ in range(25):
                    with httpay.MppSession(c, server.url + "/s") as s:
                        s.get()
                    opened += 1
        assert over.value.rule == "budget" and opened == 2
        assert BALANCE_SAT - wallet.balance_msat() // 1000 == 2_000


def topup_spam(request: Request) -> Response:
    """Every event of the stream asks for a top-up, and no data is ever delivered."""
    act, _ = action(request)
    if act is None:
        return session_402(request.app, 500)
    if act == "open":
        async def events() -> AsyncIterator[bytes]:
            for _ in range(30):
                yield b'event: payment-need-topup\ndata: {"balanceSpent": 500}\n\n'
            yield b"data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")
    return JSONResponse({"ok": act})


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stream_is_topped_up_only_once_its_deposit_is_used(mode: str) -> None:
    """`payment-need-topup` with the deposit unspent (no unit delivered) is refused: it used to be
    paid a deposit per event, 19 of them until the hourly budget stopped it."""
    with serve(topup_spam) as server:
        wallet = httpay.DemoWallet.create(server.url, balance_sat=BALANCE_SAT)
        if mode == "sync":
            with httpay.Client(wallet=wallet, ledger=":memory:") as c:
                session = httpay.MppSession(c, server.url + "/s")
                with pytest.raises(SessionError, match="only 0 sat of the 500 sat deposited is known to be spent"):
                    list(session.stream())
        else:
            import asyncio

            async def go() -> None:
                async with httpay.AsyncClient(wallet=wallet, ledger=":memory:") as c:
                    session = httpay.AsyncMppSession(c, server.url + "/s")
                    with pytest.raises(SessionError, match="only 0 sat of the 500 sat deposited"):
                        [e async for e in session.stream()]

            asyncio.run(go())
        assert BALANCE_SAT - wallet.balance_msat() // 1000 == 500  # the deposit, and nothing more


def test_a_session_obeys_the_policys_methods() -> None:
    with serve(refunding(1_000)) as server:
        wallet = httpay.DemoWallet.create(server.url, balance_sat=BALANCE_SAT)
        with httpay.Client(wallet=wallet, ledger=":memory:", policy=httpay.Policy(methods=["x402"])) as c:
            with pytest.raises(PaymentRefused) as refused:
                httpay.MppSession(c, server.url + "/s").get()
        assert refused.value.rule == "methods" and wallet.balance_msat() == BALANCE_SAT * 1000


def test_a_connection_dropped_once_the_deposit_is_paid_keeps_the_receipt() -> None:
    """The service takes the deposit and hangs up on `open`: PaidRequestFailed with the settled row,
    not httpx's bare RemoteProtocolError."""
    with serve(refunding(0)) as demo:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]

        def hang_up_on_payment() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                    data += chunk
                if b"authorization: payment" in data.lower():
                    conn.close()  # the deposit is paid; the credential arrives; hang up
                    continue
                r = session_402(demo.app, 200)
                conn.sendall((f"HTTP/1.1 402 Payment Required\r\nWWW-Authenticate: {r.headers['www-authenticate']}"
                              "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").encode())
                conn.close()

        threading.Thread(target=hang_up_on_payment, daemon=True).start()
        try:
            wallet = httpay.DemoWallet.create(demo.url, balance_sat=BALANCE_SAT)
            with httpay.Client(wallet=wallet, ledger=":memory:") as c:
                with pytest.raises(PaidRequestFailed) as broke:
                    httpay.MppSession(c, f"http://127.0.0.1:{port}/s").get()
                receipt = broke.value.receipt
                assert receipt.status is Status.SETTLED and receipt.amount_msat == 200_000
                assert "broke off" in str(broke.value) and "ledger #" in str(broke.value)
                assert c.payer.ledger.spent_msat() == 200_000
        finally:
            listener.close()


def test_a_wallet_failing_in_its_own_way_while_paying_a_deposit_leaves_it_pending_and_named() -> None:
    """A wallet adapter that sends the deposit and then raises a plain exception (a bug, a reset
    mapped badly) is an unknown outcome: the row stays pending and counted, with a note, and the
    caller gets a typed error naming it, never a bare ConnectionResetError."""
    with serve(refunding(1_000)) as server:
        wallet = httpay.DemoWallet.create(server.url, balance_sat=BALANCE_SAT)
        pay = wallet.pay_invoice

        def pay_then_break(bolt11: str, **kw: Any) -> Any:
            pay(bolt11, **kw)
            raise ConnectionResetError("reset after sending")
        wallet.pay_invoice = pay_then_break  # type: ignore[method-assign]
        with httpay.Client(wallet=wallet, ledger=":memory:") as c:
            with pytest.raises(httpay.PaymentOutcomeUnknown, match="stays pending") as caught:
                httpay.MppSession(c, server.url + "/s").get()
            row = caught.value.receipt
            assert row is not None and row.status is Status.PENDING and "ConnectionResetError" in (row.reason or "")
            assert c.payer.ledger.spent_msat() >= 1_000_000
