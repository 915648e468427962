"""httpay against @getalby/lightning-tools 9.0.1 (npm): its parseL402 reads our demo's classic
challenge, its fetchWithL402 pays our demo server through a webln-like shim over the demo network,
and httpay pays a server built from its L402 server helpers."""

from __future__ import annotations

from pathlib import Path

import httpx

import httpay
from httpay.demo.runner import RunningServer
from httpay.protocols import l402_classic
from tests.interop.conftest import Node, PeerServer, balance_msat


def test_getalby_parses_our_demo_classic_challenge(node: Node, interop_demo: RunningServer) -> None:
    r = httpx.get(f"{interop_demo.url}/l402/ticker/MSFT")
    headers = r.headers.get_list("www-authenticate")
    ours = l402_classic.parse(r.status_code, r.headers, r.content)
    assert ours is not None
    out = node.run("parse_challenge.mjs", stdin={"headers": headers})
    # each header alone, and both joined as fetch() hands them to fetchWithL402
    for theirs in [*out["alby"], out["alby_combined"]]:
        assert "error" not in theirs, theirs
        assert theirs["token"] == ours.macaroon and theirs["invoice"] == ours.invoice
        assert theirs["payment_hash"] == ours.macaroon_info().payment_hash and theirs["amount_sat"] == 10
    assert [t["version"] for t in out["alby"]] == [None, "0"]


def test_getalby_fetch_with_l402_pays_our_demo_server(
    node: Node, interop_demo: RunningServer, demo_wallet_key: str
) -> None:
    classic = interop_demo.app.state.classic
    issued, served = classic.issued, classic.served
    out = node.run("alby_fetch.mjs", f"{interop_demo.url}/l402/ticker/MSFT",
                   env={"DEMO_URL": interop_demo.url, "DEMO_WALLET_KEY": demo_wallet_key})
    assert out["status"] == 200 and out["body"]["symbol"] == "MSFT"
    assert out["paid"] is True and out["amount_sat"] == 10 and out["preimage_is_hex64"] is True
    # our demo sends `LSAT ...` first, so getalby answers in that scheme, which the demo accepts
    assert out["credential_header"] == "Authorization" and out["credential_scheme"] == "LSAT"
    # the returned credential is reusable: a second ticker without paying again
    assert out["reuse_status"] == 200 and out["reuse_body"]["symbol"] == "AAPL" and out["pay_calls"] == 1
    assert classic.issued - issued == 1 and classic.served - served == 2
    assert balance_msat(interop_demo, demo_wallet_key) == 990_000


def test_httpay_reads_getalby_tokens_which_are_not_macaroons() -> None:
    """makeL402AuthenticateHeader's shape (no comma after version) with issueL402Macaroon's token."""
    token = "eyJzZXJ2aWNlIjoic3RvY2siLCJwYXltZW50SGFzaCI6ImFiIn0." + "0f" * 32
    header = f'L402 version="0" token="{token}", invoice="lnbcrt100n1pexample"'
    ch = l402_classic.parse(402, {"www-authenticate": header}, b"")
    assert ch is not None and ch.macaroon == token and ch.version == "0"
    cred = l402_classic.parse_credential(ch.credential("ab" * 32))
    assert cred.macaroons == (token,) and cred.preimage == "ab" * 32


def test_httpay_pays_a_getalby_l402_server(alby_server: PeerServer, interop_demo: RunningServer,
                                           ledger_path: Path) -> None:
    """getalby's tokens are `<base64url JSON>.<hex HMAC>`, not macaroons: httpay takes any token68."""
    wallet = httpay.DemoWallet.create(interop_demo.url, balance_sat=1_000)
    before = alby_server.stats()
    with httpay.Client(wallet=wallet, policy=httpay.Policy(budget_sat=100, max_per_payment_sat=20),
                       ledger=ledger_path) as c:
        r = c.get(f"{alby_server.url}/stock/MSFT")
        assert r.status_code == 200, r.text
        assert r.json()["served_by"] == "getalby"
        rec = httpay.receipt_of(r)
        assert rec is not None and rec.amount_msat == 10_000
        assert c.get(f"{alby_server.url}/stock/NVDA").status_code == 200  # token reused
    after = alby_server.stats()
    assert after["issued"] - before["issued"] == 1 and after["accepted"] - before["accepted"] == 2
    assert after["lastScheme"] == "L402" and after["refused"] == before["refused"]
    assert wallet.balance_msat() == 990_000
