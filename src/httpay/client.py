"""`httpay.Client` and `httpay.AsyncClient`: httpx clients that can pay.

They are httpx.Client / httpx.AsyncClient with a payment transport installed, so every httpx
feature keeps working; the extra keyword arguments say who pays (wallet), within which rules
(policy), and where it is written down (ledger).
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from httpay.events import EventHook
from httpay.ledger import Ledger, open_ledger
from httpay.pipeline import MAX_PRICE_EXTENSION, Payer
from httpay.policy import Policy, usd_to_msat
from httpay.transport import AsyncPaymentTransport, PaymentTransport
from httpay.wallets.base import Wallet


def _payer(wallet: Wallet, policy: Policy | None, ledger: Ledger | str | os.PathLike[str] | None,
           on_event: EventHook | None) -> Payer:
    if not isinstance(wallet, Wallet):
        from httpay.errors import ConfigError

        raise ConfigError(f"wallet= must be an httpay Wallet (e.g. httpay.DemoWallet), got {type(wallet).__name__}")
    return Payer(wallet=wallet, policy=policy or Policy(), ledger=open_ledger(ledger), on_event=on_event)


class _PayingMixin:
    payer: Payer

    @property
    def wallet(self) -> Wallet:
        return self.payer.wallet

    @property
    def policy(self) -> Policy:
        return self.payer.policy

    @property
    def ledger(self) -> Ledger:
        return self.payer.ledger

    def max_price(self, usd: float | None = None, *, sat: int | None = None) -> dict[str, Any]:
        """Request extensions capping what one request may pay: `c.get(url, extensions=c.max_price(0.05))`."""
        if sat is not None:
            return {MAX_PRICE_EXTENSION: sat * 1000}
        if usd is None:
            return {}
        rate = self.payer.rate()
        if not rate:
            from httpay.errors import ConfigError

            raise ConfigError("a USD price cap needs a BTC/USD rate: set Policy(usd_per_btc=...)")
        return {MAX_PRICE_EXTENSION: usd_to_msat(usd, rate)}


class Client(_PayingMixin, httpx.Client):
    """An httpx.Client that meets 402 Payment Required by paying within `policy`, then retrying.

    Refusals raise `httpay.PaymentRefused` (with the offers); every payment lands in `ledger`
    (SQLite at the default path unless given a path, a URL or a Ledger).
    """

    def __init__(self, *, wallet: Wallet, policy: Policy | None = None,
                 ledger: Ledger | str | os.PathLike[str] | None = None, on_event: EventHook | None = None,
                 transport: httpx.BaseTransport | None = None, **kwargs: Any) -> None:
        self.payer = _payer(wallet, policy, ledger, on_event)
        self._own_ledger = not isinstance(ledger, Ledger)
        super().__init__(transport=PaymentTransport(self.payer, transport), **kwargs)

    def close(self) -> None:
        super().close()
        if self._own_ledger:
            self.payer.ledger.close()


class AsyncClient(_PayingMixin, httpx.AsyncClient):
    """The async twin of `Client`, running the very same pipeline."""

    def __init__(self, *, wallet: Wallet, policy: Policy | None = None,
                 ledger: Ledger | str | os.PathLike[str] | None = None, on_event: EventHook | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, **kwargs: Any) -> None:
        self.payer = _payer(wallet, policy, ledger, on_event)
        self._own_ledger = not isinstance(ledger, Ledger)
        super().__init__(transport=AsyncPaymentTransport(self.payer, transport), **kwargs)

    async def aclose(self) -> None:
        await super().aclose()
        if self._own_ledger:
            self.payer.ledger.close()
