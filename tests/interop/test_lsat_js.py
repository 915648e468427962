"""httpay against lsat-js 2.0.6 (npm): httpay pays an LSAT service built from lsat-js and lsat-js's
own checks accept httpay's credential; lsat-js's parser reads our demo's classic challenge."""

from __future__ import annotations

from pathlib import Path

import httpx

import httpay
from httpay.demo.runner import RunningServer
from httpay.protocols import l402_classic
from tests.interop.conftest import Node, PeerServer


def _client(wallet: httpay.Wallet, ledger: Path) -> httpay.Client:
    return httpay.Client(wallet=wallet, policy=httpay.Policy(budget_sat=100, max_per_payment_sat=20), ledger=ledger)


def test_httpay_pays_an_lsat_js_service_once_and_reuses_the_token(
    lsat_server: PeerServer, interop_demo: RunningServer, ledger_path: Path
) -> None:
    wallet = httpay.DemoWallet.create(interop_demo.url, balance_sat=1_000)
    before = lsat_server.stats()
    with _client(wallet, ledger_path) as c:
        r = c.get(f"{lsat_server.url}/stock/MSFT")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["served_by"] == "lsat-js" and body["symbol"] == "MSFT"
        # lsat-js read httpay's credential: the payment hash and caveats it decoded are ours to check
        rec = httpay.receipt_of(r)
        assert rec is not None and rec.protocol == "l402-classic" and rec.amount_msat == 10_000
        assert body["caveats"][:2] == ["services=stock:0", "stock_capabilities=ticker"]
        again = c.get(f"{lsat_server.url}/stock/AAPL")
        assert again.status_code == 200 and httpay.receipt_of(again) is None  # the token was reused
    after = lsat_server.stats()
    assert after["issued"] - before["issued"] == 1 and after["accepted"] - before["accepted"] == 2
    assert after["refused"] == before["refused"] and after["lastScheme"] == "LSAT"  # answered in the challenge's scheme
    assert wallet.balance_msat() == 990_000


def test_lsat_js_refuses_a_wrong_preimage_and_the_l402_scheme(lsat_server: PeerServer) -> None:
    """lsat-js's checks are real: a preimage that does not hash to the macaroon's payment hash is
    refused, and so is an `L402 ...` credential (lsat-js 2.0.6 reads only the LSAT scheme)."""
    ch = l402_classic.parse(*_challenge(lsat_server))
    assert ch is not None and ch.scheme == "LSAT"
    before = lsat_server.stats()
    wrong = httpx.get(f"{lsat_server.url}/stock/MSFT", headers={"Authorization": ch.credential("00" * 32)})
    assert wrong.status_code == 402
    assert "did not match" in lsat_server.stats()["lastRefusal"]
    as_l402 = l402_classic.credential(ch.macaroon, "00" * 32, scheme="L402")
    assert httpx.get(f"{lsat_server.url}/stock/MSFT", headers={"Authorization": as_l402}).status_code == 402
    after = lsat_server.stats()
    assert after["refused"] - before["refused"] == 2 and "LSAT prefix" in after["lastRefusal"]


def _challenge(server: PeerServer) -> tuple[int, httpx.Headers, bytes]:
    r = httpx.get(f"{server.url}/stock/MSFT")
    return r.status_code, r.headers, r.content


def test_lsat_js_reads_our_demo_classic_challenge(node: Node, interop_demo: RunningServer) -> None:
    r = httpx.get(f"{interop_demo.url}/l402/ticker/MSFT")
    headers = r.headers.get_list("www-authenticate")
    assert [h.split(" ")[0] for h in headers] == ["LSAT", "L402"]
    ours = l402_classic.parse(r.status_code, r.headers, r.content)
    assert ours is not None
    info = ours.macaroon_info()
    out = node.run("parse_challenge.mjs", stdin={"headers": headers})
    for theirs in out["lsat_js"]:  # lsat-js's Lsat.fromHeader, on both of Aperture's two challenges
        assert "error" not in theirs, theirs
        assert theirs["invoice"] == ours.invoice and theirs["macaroon"] == ours.macaroon
        assert theirs["payment_hash"] == theirs["identifier_payment_hash"] == info.payment_hash
        assert theirs["invoice_amount_sat"] == 10
        assert theirs["caveats"] == list(info.caveats)
