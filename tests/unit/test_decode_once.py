"""One payment decodes its invoice once: the dialect, the checks and the wallet adapter share it."""

from __future__ import annotations

from pathlib import Path

import httpx

import httpay
from httpay.bolt11_reader import read_bolt11
from httpay.demo.runner import serve_in_thread
from httpay.demo.server import create_app


def test_a_paid_request_decodes_its_invoice_once(tmp_path: Path) -> None:
    """The notebook's story on the demo service, paid by the demo wallet (whose adapter checks the
    invoice too): one decode and one signature recovery for the one invoice paid."""
    with serve_in_thread(create_app()) as srv:
        auth = {"Authorization": f"Bearer {httpx.get(f'{srv.url}/signup').json()['id']}"}
        wallet = httpay.DemoWallet.create(srv.url, balance_sat=10_000)
        with httpay.Client(wallet=wallet, ledger=tmp_path / "l.db",
                           policy=httpay.Policy(usd_per_btc=100_000)) as c:
            assert c.get(f"{srv.url}/ticker/AAPL", headers=auth).status_code == 200  # the free credit
            read_bolt11.cache_clear()
            r = c.get(f"{srv.url}/ticker/MSFT", headers=auth)
            info = read_bolt11.cache_info()
    assert r.status_code == 200 and httpay.receipt_of(r) is not None
    assert info.misses == 1, f"the invoice was decoded {info.misses} times"
    assert info.hits >= 1, "the wallet adapter read the decoded invoice instead of decoding it again"
