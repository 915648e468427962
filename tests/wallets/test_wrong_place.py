"""A wallet pointed at the wrong place says where it looked and what to check: a server that is not
the wallet's API is not a refused key, and nobody listening is a network fault (exit 5), not a setting."""

from __future__ import annotations

import socket

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

import httpay
from httpay.apps.cli import main
from httpay.demo.runner import serve_in_thread


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def not_found(request: object) -> HTMLResponse:
    return HTMLResponse("<h1>Not Found</h1>", status_code=404)


def test_an_lnbits_url_that_is_not_lnbits_says_so_not_that_the_key_was_refused() -> None:
    site = Starlette(routes=[Route("/{path:path}", not_found)])
    with serve_in_thread(site) as server:
        wallet = httpay.LNbitsWallet(server.url, "a" * 32)
        with pytest.raises(httpay.WalletError) as err:
            wallet.balance_msat()
        wallet.close()
    assert f"no LNbits API at {server.url}" in str(err.value) and "check LNBITS_URL" in str(err.value)
    assert "refused the API key" not in str(err.value) and "a" * 32 not in str(err.value)


def test_open_demo_with_nobody_listening_is_a_network_failure(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(httpay.WalletUnreachable, match="is `httpay demo-server` running there"):
        httpay.DemoWallet.create(f"http://127.0.0.1:{closed_port()}")
    assert main(["wallet", "open-demo", f"http://127.0.0.1:{closed_port()}"]) == 5
    assert "cannot be reached" in capsys.readouterr().err
