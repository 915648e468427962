"""httpay's demo against PyPI `l402-requests` 0.9.0: its challenge parser reads our classic
challenge, and its L402Client, given a small wallet adapter over the demo network's /ln/pay,
pays our demo server once and reuses the credential."""

from __future__ import annotations

import httpx
import l402_requests
from l402_requests.bolt11 import extract_amount_sats
from l402_requests.challenge import parse_challenge

from httpay.demo.runner import RunningServer
from httpay.protocols import l402_classic
from tests.interop.conftest import balance_msat


class DemoNetworkWallet(l402_requests.WalletBase):
    """l402-requests's wallet contract (async pay_invoice -> preimage hex) over the demo network."""

    def __init__(self, base_url: str, key: str) -> None:
        self._base_url = base_url
        self.__key = key
        self.calls = 0

    def __repr__(self) -> str:
        return f"DemoNetworkWallet({self._base_url!r})"

    async def pay_invoice(self, bolt11: str) -> str:
        self.calls += 1
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.post(f"{self._base_url}/ln/pay", json={"invoice": bolt11},
                             headers={"Authorization": f"Bearer {self.__key}"})
        if r.status_code != 200:
            raise l402_requests.PaymentFailedError(f"demo network: {r.json().get('code')}", bolt11)
        return str(r.json()["preimage"])


def test_l402_requests_parses_our_demo_classic_challenge(interop_demo: RunningServer) -> None:
    r = httpx.get(f"{interop_demo.url}/l402/ticker/MSFT")
    ours = l402_classic.parse(r.status_code, r.headers, r.content)
    assert ours is not None
    lsat_header, l402_header = r.headers.get_list("www-authenticate")
    theirs = parse_challenge(lsat_header)
    assert (theirs.macaroon, theirs.invoice) == (ours.macaroon, ours.invoice)
    assert extract_amount_sats(theirs.invoice) == 10
    # its regex wants `macaroon=` right after the scheme: the current spec's `L402 version="0", ...`
    # form is not read on its own, so it relies on the LSAT header Aperture (and our demo) also send
    try:
        parse_challenge(l402_header)
    except l402_requests.ChallengeParseError as exc:
        assert "no L402/LSAT challenge found" in str(exc)
    else:
        raise AssertionError("l402-requests 0.9.0 now reads `L402 version=..., macaroon=...`: update the README row")


def test_l402_requests_client_pays_our_demo_server(interop_demo: RunningServer, demo_wallet_key: str) -> None:
    classic = interop_demo.app.state.classic
    issued, served = classic.issued, classic.served
    wallet = DemoNetworkWallet(interop_demo.url, demo_wallet_key)
    client = l402_requests.L402Client(wallet=wallet, budget=l402_requests.BudgetController(max_sats_per_request=20))
    r = client.get(f"{interop_demo.url}/l402/ticker/MSFT")
    assert r.status_code == 200 and r.json()["symbol"] == "MSFT"
    again = client.get(f"{interop_demo.url}/l402/ticker/AAPL")  # its credential cache reuses the token
    assert again.status_code == 200 and again.json()["symbol"] == "AAPL"
    assert wallet.calls == 1 and classic.issued - issued == 1 and classic.served - served == 2
    assert balance_msat(interop_demo, demo_wallet_key) == 990_000
    assert client.spending_log.total_spent() == 10
