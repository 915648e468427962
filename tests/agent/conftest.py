"""Fixtures for the agent tools: the demo service, a signed-up account, a funded wallet, a Toolbox."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import httpay
from httpay.apps.agent import Toolbox
from httpay.demo.runner import RunningServer, serve_in_thread
from httpay.wallets.demo import DemoWallet


@dataclass
class Account:
    """A demo account and the secrets a tool result must never show."""

    url: str
    bearer: str
    wallet: DemoWallet
    ledger_path: Path

    @property
    def wallet_key(self) -> str:
        return self.wallet._DemoWallet__key  # type: ignore[attr-defined,no-any-return]

    def secrets(self, toolbox: Toolbox | None = None) -> list[str]:
        """Every secret in play: bearer, wallet key, and the preimage of every payment made."""
        found = [self.bearer, self.wallet_key]
        if toolbox is not None:
            found += [r.preimage for r in toolbox.client.ledger.receipts() if r.preimage]
        return found


@pytest.fixture(scope="module")
def demo() -> Iterator[RunningServer]:
    with serve_in_thread() as running:
        yield running


@pytest.fixture
def account(demo: RunningServer, tmp_path: Path) -> Iterator[Account]:
    bearer = httpx.get(f"{demo.url}/signup", timeout=10).json()["id"]
    wallet = DemoWallet.create(demo.url, balance_sat=1_000)
    yield Account(url=demo.url, bearer=bearer, wallet=wallet, ledger_path=tmp_path / "ledger.sqlite3")
    wallet.close()


def make_toolbox(account: Account, **policy: float) -> Toolbox:
    pol = httpay.Policy(**{"budget_usd": 0.05, "max_per_payment_usd": 0.02, **policy})
    return Toolbox(wallet=account.wallet, policy=pol, ledger=str(account.ledger_path),
                   headers={"Authorization": f"Bearer {account.bearer}"}, base_url=account.url)


@pytest.fixture
def toolbox(account: Account) -> Iterator[Toolbox]:
    with make_toolbox(account) as box:
        yield box


def assert_no_secret(text: str, secrets: list[str]) -> None:
    for s in secrets:
        assert s not in text, f"a secret ({s[:4]}…) reached a tool result"
