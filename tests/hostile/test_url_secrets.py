"""A URL's password and the credentials in its query never reach a log line, an event, an error,
a ledger row or a wallet's repr (the request itself still carries them to the service)."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

import httpay
from httpay.ledger import SQLiteLedger
from tests.hostile.harness import CountingWallet, HostileService

SECRETS = ("s3cretpw", "k3yvalue")


def _with_secrets(url: str) -> str:
    u = httpx.URL(url)
    return str(u.copy_with(userinfo=b"user:s3cretpw", params={"api_key": "k3yvalue", "q": "1"}))


def test_a_paid_request_to_a_url_holding_secrets_shows_none_of_them(svc: HostileService, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    wallet = CountingWallet(svc.node)
    url = _with_secrets(svc.classic("/classic"))
    events: list[httpay.Event] = []
    caplog.set_level(logging.DEBUG, logger="httpay")
    with httpay.Client(wallet=wallet, ledger=tmp_path / "l.db", on_event=events.append) as c:
        r = c.get(url)
    assert r.status_code == 200 and wallet.paid == 1
    shown = " ".join([caplog.text, *(e.url for e in events), *(str(e) for e in events)])
    with SQLiteLedger(tmp_path / "l.db") as lg:
        rows = lg.receipts()
        shown += " ".join(str(x) + x.url for x in rows)
    for secret in SECRETS:
        assert secret not in shown, secret
    assert "api_key=***" in rows[0].url and "q=1" in rows[0].url  # what is no secret stays readable


def test_an_error_naming_a_url_with_a_password_hides_it() -> None:
    exc = httpay.WalletError("cannot reach LNbits at http://user:s3cretpw@127.0.0.1:1/api?token=k3yvalue")
    assert "s3cretpw" not in str(exc) and "k3yvalue" not in str(exc) and "http://user:***@127.0.0.1:1/api" in str(exc)


@pytest.mark.parametrize("make", [lambda u: httpay.LNbitsWallet(u, "admin-key"),
                                  lambda u: httpay.DemoWallet(u, "demo-key")])
def test_a_wallet_made_with_a_url_holding_a_password_hides_it(make: object) -> None:
    w = make("http://user:s3cretpw@127.0.0.1:1")  # type: ignore[operator]
    assert "s3cretpw" not in repr(w) + str(w)
    w.close()


def test_at_debug_level_no_library_log_shows_a_credential_or_a_url_secret(svc: HostileService, tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    """`httpay -vv` (Python logging at DEBUG): httpx logs each request line and httpcore traces every
    header it receives. A service echoing the paid credential (macaroon:preimage) in a response
    header, or a session cookie, and a URL carrying a key in its query show in none of them."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    async def echo(request: Request) -> Response:
        if svc.authorized(request):
            return JSONResponse({"served": True}, headers={"X-Echo": request.headers["authorization"],
                                                           "Set-Cookie": "session=c00kiev4lue"})
        return svc.classic_challenge(10)
    url = _with_secrets(svc.route("/echo", echo))
    caplog.set_level(logging.DEBUG)
    with httpay.Client(wallet=CountingWallet(svc.node), ledger=tmp_path / "l.db") as c:
        r = c.get(url)
    preimage = r.headers["x-echo"].rsplit(":", 1)[1]
    assert r.status_code == 200 and len(preimage) == 64
    logged = caplog.text
    assert "receive_response_headers.complete (headers not logged)" in logged  # the trace itself stays
    assert "HTTP Request: GET" in logged and "api_key=***" in logged
    for secret in (*SECRETS, preimage, "c00kiev4lue"):
        assert secret not in logged, secret


def test_a_header_line_httpcore_cannot_read_is_not_logged_either(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """httpcore's DEBUG trace of a failed header read quotes the line it could not parse: a service
    echoing the credential in a malformed header line shows it in no log line."""
    import socket
    import threading

    secret = "L402 mac:" + "ab" * 32
    server = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(f"HTTP/1.1 200 OK\r\nX-Debug-Auth {secret}\r\nContent-Length: 0\r\n\r\n".encode())
    threading.Thread(target=answer, daemon=True).start()
    caplog.set_level(logging.DEBUG)
    with httpx.Client() as c, pytest.raises(httpx.RemoteProtocolError):
        c.get(f"http://127.0.0.1:{server.getsockname()[1]}/")
    server.close()
    assert "receive_response_headers.failed (headers not logged)" in caplog.text
    assert "ab" * 32 not in caplog.text
