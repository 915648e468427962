"""Redirects after a payment (follow_redirects=True): one caller request pays once, however many
402s its redirects meet, and a proof good once never follows a redirect to another place."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

import httpay
from httpay.ledger import SQLiteLedger
from tests.hostile.harness import CountingWallet, HostileService
from tests.hostile.test_mpp import MppServer, header, problem
from tests.wallets.fakes import serve


async def _get(mode: str, url: str, **kw: Any) -> Any:
    if mode == "async":
        async with httpay.AsyncClient(follow_redirects=True, **kw) as ac:
            return await ac.get(url)
    with httpay.Client(follow_redirects=True, **kw) as c:
        return c.get(url)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_service_redirecting_each_paid_request_to_another_402_is_paid_once(
        mode: str, svc: HostileService, tmp_path: Path) -> None:
    """Each path takes only the token minted for it and redirects a paid request to the next path,
    which asks again: without a limit one GET paid once per hop (21 payments, then TooManyRedirects)."""
    minted: dict[str, int] = {}

    async def hop(request: Request) -> Response:
        n = int(request.url.path.rsplit("/", 1)[1])
        auth = request.headers.get("authorization", "")
        mac = auth.partition(" ")[2].rsplit(":", 1)[0]
        if svc.authorized(request) and minted.get(mac) == n:
            return RedirectResponse(f"/hop/{n + 1}", status_code=302)
        challenge = svc.classic_challenge(10)
        found = re.search(r'macaroon="([^"]+)"', challenge.headers["www-authenticate"])
        assert found is not None
        minted[found.group(1)] = n
        return challenge

    for i in range(30):
        svc.route(f"/hop/{i}", hop)
    wallet = CountingWallet(svc.node)
    with pytest.raises(httpay.PaymentNotHonored) as err:
        await _get(mode, svc.url + "/hop/0", wallet=wallet, ledger=tmp_path / "l.db")
    assert len(wallet.calls) == 1 and err.value.receipt.id == 1
    assert "/hop/1, which asks for payment again" in str(err.value) and "ledger #1" in str(err.value)
    with SQLiteLedger(tmp_path / "l.db") as lg:
        assert [(r.id, r.status.value) for r in lg.receipts()] == [(1, "settled")]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_an_mpp_proof_in_its_own_header_does_not_follow_a_redirect_to_another_origin(
        mode: str, svc: HostileService, tmp_path: Path) -> None:
    """`Payment-Authorization` holds the preimage; httpx strips only `Authorization` across origins."""
    seen: list[dict[str, str]] = []

    async def elsewhere(request: Request) -> Response:
        seen.append(dict(request.headers))
        return JSONResponse({"landed": True})

    with serve(Starlette(routes=[Route("/{p:path}", elsewhere)])) as other:
        other = other.replace("127.0.0.1", "localhost")
        server = MppServer(svc)

        async def paid(request: Request) -> Response:
            if request.headers.get("payment-authorization", "").startswith("Payment "):
                return RedirectResponse(other + "/landing", status_code=302)
            r = JSONResponse(problem("payment-required"), status_code=402)
            r.headers.append("WWW-Authenticate", header(server.lightning(10, header="Payment-Authorization")))
            return r

        wallet = CountingWallet(svc.node)
        r = await _get(mode, svc.route("/mpp", paid), wallet=wallet, ledger=tmp_path / "l.db")
    assert r.status_code == 200 and r.json() == {"landed": True} and len(wallet.calls) == 1
    assert seen and all("payment-authorization" not in h for h in seen), seen
    preimages = set(svc.node.preimages.values())
    assert not any(p in json.dumps(h) for h in seen for p in preimages)



@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_402_with_an_enormous_body_is_read_from_its_headers_and_fills_no_memory(
        mode: str, svc: HostileService, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A body past 4 MiB is not read on (an endless one filled 12 GiB before): the classic challenge
    in its header is paid, once."""
    from starlette.responses import StreamingResponse

    from httpay.core.transport import MAX_402_BODY
    from tests.hostile.harness import run

    sent: list[int] = []

    async def endless() -> Any:
        chunk = b"x" * 65536
        while sum(sent) < 64 * MAX_402_BODY:  # (a bound for the test's own sake: 256 MiB)
            sent.append(len(chunk))
            yield chunk

    async def handler(request: Request) -> Response:
        if svc.authorized(request):
            return JSONResponse({"served": True})
        challenge = svc.classic_challenge(10)
        return StreamingResponse(endless(), status_code=402,
                                 headers={"WWW-Authenticate": challenge.headers["www-authenticate"]})

    caplog.set_level(logging.WARNING, logger="httpay")
    out = run(mode, svc.route("/huge", handler), wallet=(wallet := CountingWallet(svc.node)), ledger=tmp_path / "l.db")
    assert out.error is None and out.status == 200, out.error
    assert len(wallet.calls) == 1
    assert f"a 402 sent more than {MAX_402_BODY} bytes of body: not read on" in caplog.text
