"""Fixtures for the wallet adapters: each fake backend on a loopback port, with a payee that mints invoices."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.wallets import fake_lnd
from tests.wallets.fakes import FakeAccount, Payee, serve

FUNDS_MSAT = 1_000_000


@dataclass
class Backend:
    """A running fake: where it listens, its secret, the payer's account and the payee."""

    url: str
    secret: str = field(repr=False)
    account: FakeAccount
    payee: Payee


@pytest.fixture
def lnd_backend() -> Iterator[Backend]:
    payee = Payee("bitcoin")
    account = FakeAccount(payee, balance_msat=FUNDS_MSAT, fee_msat=1_000)
    macaroon = secrets.token_bytes(64).hex()
    with serve(fake_lnd.create_app(account, macaroon)) as url:
        yield Backend(url, macaroon, account, payee)
