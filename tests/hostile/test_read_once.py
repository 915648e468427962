"""Hostile cases for reading a 402 once (the remembered header parse, macaroon and invoice decode):
a service whose 402s follow one another (a fresh macaroon and invoice each time, or a second one
whose macaroon commits to another invoice) is answered per 402, never with what was remembered
from the one before. Two payers in a row (their own ledgers), sync and async."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import httpay
from httpay.errors import InvoiceError
from httpay.lightning import decode_invoice
from tests.hostile.harness import CountingWallet, HostileService, run

POLICY = httpay.Policy(budget_sat=1_000, max_per_payment_sat=100)


def fresh_each_time(svc: HostileService) -> str:
    """Aperture: every 402 a new macaroon and invoice."""
    return svc.classic("/fresh")


def second_binds_elsewhere(svc: HostileService) -> str:
    """The first 402 is sound; every later one carries a macaroon committing to another hash."""
    count = {"n": 0}

    async def handler(request: Request) -> Response:
        if svc.authorized(request):
            return JSONResponse({"served": True})
        count["n"] += 1
        return svc.classic_challenge(10, bind_hash=None if count["n"] == 1 else "ab" * 32)
    return svc.route("/rebound", handler)


@dataclass(frozen=True)
class Case:
    name: str
    route: Callable[[HostileService], str]
    second_status: int | None       # the second payer's answer (None: an error)
    second_calls: int               # wallet calls the second payer made
    second_spent_msat: int          # what the second payer's ledger says was spent, fees included
    second_error: str | None        # words of the second payer's error


CASES = [
    Case("a fresh macaroon and invoice each 402", fresh_each_time, 200, 1, 11_000, None),
    Case("the second 402's macaroon commits elsewhere", second_binds_elsewhere, None, 0, 0,
         "the macaroon commits to abababababababab"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_402_is_read_for_itself(case: Case, svc: HostileService, tmp_path: Path, mode: str) -> None:
    url = case.route(svc)
    first_wallet, second_wallet = CountingWallet(svc.node), CountingWallet(svc.node)
    first = run(mode, url, wallet=first_wallet, ledger=tmp_path / "first.db", policy=POLICY)
    assert first.error is None and first.status == 200, first.error
    assert first.wallet_calls == 1 and first.spent_msat == 11_000 and len(first.settled) == 1

    second = run(mode, url, wallet=second_wallet, ledger=tmp_path / "second.db", policy=POLICY)
    assert second.status == case.second_status
    assert second.wallet_calls == case.second_calls and second.spent_msat == case.second_spent_msat
    assert svc.issued == 2  # each payer met its own 402
    if case.second_error is None:
        assert second.error is None and len(second.settled) == 1
        # each paid the invoice of its own 402: two payments, two hashes, each in its own ledger
        hashes = [decode_invoice(w.calls[0]).payment_hash for w in (first_wallet, second_wallet)]
        assert hashes[0] != hashes[1] and svc.node.paid == hashes
        assert [first.settled[0].payment_hash, second.settled[0].payment_hash] == hashes
    else:
        assert isinstance(second.error, InvoiceError) and second.error.check == "payment_hash"
        assert case.second_error in str(second.error)
        assert second.settled == [] and len(svc.node.paid) == 1
