"""Fixtures for the wallet adapters: each fake backend on a loopback port, with a payee that mints invoices."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from httpay.wallets.fewsats import FewsatsWallet
from httpay.wallets.lightspark import LightsparkWallet
from tests.wallets import fake_fewsats, fake_lightspark, fake_lnd
from tests.wallets.fake_fewsats import FakeFewsats
from tests.wallets.fake_lightspark import GRAPHQL_PATH, FakeLightspark
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


@dataclass
class LightsparkBackend(Backend):
    """The fake Lightspark plus the credentials the wallet needs."""

    fake: FakeLightspark = field(repr=False, default=None)  # type: ignore[assignment]
    client_id: str = "client-id"
    node_id: str = "LightsparkNodeWithOSK:0190-node"
    node_password: str = field(repr=False, default="")

    def wallet(self, **kwargs: Any) -> LightsparkWallet:
        kwargs.setdefault("poll_interval", 0.01)
        kwargs.setdefault("timeout", 5)
        return LightsparkWallet(self.client_id, self.secret, self.node_id, self.node_password,
                                base_url=self.url + GRAPHQL_PATH, **kwargs)


@pytest.fixture
def lightspark_backend() -> Iterator[LightsparkBackend]:
    payee = Payee("bitcoin")
    account = FakeAccount(payee, balance_msat=FUNDS_MSAT, fee_msat=2_000)
    secret, password = "ls-secret-" + secrets.token_hex(16), "node-pw-" + secrets.token_hex(8)
    fake = FakeLightspark(account, client_id="client-id", client_secret=secret,
                          node_id="LightsparkNodeWithOSK:0190-node", node_password=password)
    with serve(fake_lightspark.create_app(fake)) as url:
        yield LightsparkBackend(url, secret, account, payee, fake=fake, node_password=password)


USD_PER_BTC = 100_000.0  # 1 cent = 10 sat


@dataclass
class FewsatsBackend(Backend):
    fake: FakeFewsats = field(repr=False, default=None)  # type: ignore[assignment]

    def wallet(self, **kwargs: Any) -> FewsatsWallet:
        kwargs.setdefault("usd_per_btc", USD_PER_BTC)
        return FewsatsWallet(self.secret, base_url=self.url, **kwargs)


@pytest.fixture
def fewsats_backend() -> Iterator[FewsatsBackend]:
    payee = Payee("bitcoin")
    key = "fs-key-" + secrets.token_hex(20)
    fake = FakeFewsats(payee, api_key=key, balance_cents=1_000)
    with serve(fake_fewsats.create_app(fake)) as url:
        yield FewsatsBackend(url, key, FakeAccount(payee), payee, fake=fake)
