"""The harness itself works: a paid v0.2 request and a paid classic request, sync and async."""

from __future__ import annotations

from pathlib import Path

import httpay
from tests.hostile.harness import CountingWallet, HostileService, run


def test_v02_is_paid_once_and_fees_count(svc: HostileService, wallet: CountingWallet, ledger: Path, mode: str) -> None:
    out = run(mode, svc.v02(), wallet=wallet, ledger=ledger, policy=httpay.Policy(budget_sat=1_000, usd_per_btc=100_000))
    assert out.error is None and out.status == 200
    assert out.wallet_calls == 1 and len(out.settled) == 1
    assert out.spent_msat == 10_000 + 1_000


def test_classic_is_paid_once(svc: HostileService, wallet: CountingWallet, ledger: Path, mode: str) -> None:
    out = run(mode, svc.classic(), wallet=wallet, ledger=ledger, policy=httpay.Policy(budget_sat=1_000))
    assert out.error is None and out.status == 200, out.error
    assert out.wallet_calls == 1 and out.spent_msat == 11_000
