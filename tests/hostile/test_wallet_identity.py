"""A payment is reconciled only through the wallet that made it (issue 15, item 1), sync and async.

Wallet A paid an invoice and its process died before recording it: the ledger row is pending.
A client starting with another wallet (B, same kind) must leave the row pending and counted
(a budget for one payment then refuses B's own), and say so; a client with A settles it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

import httpay
from httpay.ledger import Intent, SQLiteLedger, Status
from httpay.lightning import decode_invoice
from tests.hostile.harness import CountingWallet, HostileService, run


@dataclass(frozen=True)
class Case:
    name: str
    holder: str | None       # the wallet id of the client that starts next
    wallet_calls: int        # what that client's wallet pays
    status: Status           # A's row afterwards
    spent_msat: int
    error: type[BaseException] | None
    log: str | None


CASES = [
    Case("another wallet of the same kind leaves it pending, counted, and says whose it is", "B", 0, Status.PENDING,
         20_000, httpay.PaymentRefused, "was made with the counting wallet counting:A"),
    Case("the wallet that made it settles it, then the budget is right", "A", 0, Status.SETTLED, 11_000,
         httpay.PaymentRefused, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_only_the_paying_wallet_reconciles(svc: HostileService, ledger: Path, mode: str, case: Case,
                                           caplog: pytest.LogCaptureFixture) -> None:
    paid_by_a = CountingWallet(svc.node, wallet_id="A")
    bolt11, payment_hash = svc.node.mint(10_000)
    with SQLiteLedger(ledger) as lg:  # A wrote the row, paid, and died before settling
        row = lg.reserve(Intent(host="x", url="u", protocol="l402-v0.2", method="lightning", amount_msat=10_000,
                                payment_hash=decode_invoice(bolt11).payment_hash, wallet="counting",
                                wallet_id=paid_by_a.identity, max_fee_msat=10_000))
    paid_by_a.pay_invoice(bolt11)
    assert svc.node.settled(payment_hash)

    caplog.set_level(logging.WARNING)
    holder = CountingWallet(svc.node, wallet_id=case.holder)
    # a budget with room for one 10 sat payment and its 10 sat fee cap, not two
    out = run(mode, svc.v02(), wallet=holder, ledger=ledger, policy=httpay.Policy(budget_sat=25, usd_per_btc=100_000),
              reconcile_grace_s=0)
    assert out.wallet_calls == case.wallet_calls
    assert {r.id: r.status for r in out.receipts} == {row.id: case.status}
    assert out.spent_msat == case.spent_msat
    assert isinstance(out.error, case.error) if case.error else out.error is None, out.error
    assert out.error is not None and "budget" in str(out.error)
    if case.log:
        assert case.log in caplog.text and "left pending and counted" in caplog.text
    else:
        assert "not this client's wallet" not in caplog.text


def test_a_wallets_identity_does_not_depend_on_how_its_url_is_spelt() -> None:
    """`HTTPAY_DEMO_URL=HTTP://127.0.0.1:8402/` is the same wallet as `http://127.0.0.1:8402`: its
    pending payments stay its own to reconcile (they read as another wallet's)."""
    import httpay
    from httpay.wallets.base import fingerprint

    key = "k" * 32
    same = {httpay.DemoWallet(u, key).identity for u in ("http://127.0.0.1:8402", "HTTP://127.0.0.1:8402/",
                                                        "http://127.0.0.1:8402//")}
    assert len(same) == 1
    assert same == {fingerprint("demo", "http://127.0.0.1:8402", key)}  # the spelling rows already carry
    assert httpay.DemoWallet("http://127.0.0.1:8403", key).identity not in same
