"""`httpay.Client` and `httpay.AsyncClient`: httpx clients that can pay.

They are httpx.Client / httpx.AsyncClient with a payment transport installed, so every httpx
feature keeps working; the extra keyword arguments say who pays (wallet), within which rules
(policy), and where it is written down (ledger).
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from httpay.challenge import TOKEN_SCOPES
from httpay.errors import ConfigError
from httpay.events import EventHook
from httpay.ledger import Ledger, open_ledger
from httpay.pipeline import MAX_PRICE_EXTENSION, Payer
from httpay.policy import Policy, usd_to_msat
from httpay.transport import AsyncPaymentTransport, PaymentTransport
from httpay.reconcile import DEFAULT_GRACE_S, reconcile
from httpay.wallets.base import Wallet
from httpay.safe import get_logger

log = get_logger("httpay")


def _payer(wallet: Wallet | None, policy: Policy | None, ledger: Ledger | str | os.PathLike[str] | None,
           on_event: EventHook | None, token_scope: str, reconcile_grace_s: float | None,
           x402_signer: Any = None) -> Payer:
    if wallet is None and x402_signer is None:
        raise ConfigError("a paying client needs wallet= (Lightning, e.g. httpay.DemoWallet) or x402_signer= (or both)")
    if wallet is not None and not isinstance(wallet, Wallet):
        raise ConfigError(f"wallet= must be an httpay Wallet (e.g. httpay.DemoWallet), got {type(wallet).__name__}")
    if token_scope not in TOKEN_SCOPES:
        raise ConfigError(f"token_scope= must be one of {', '.join(TOKEN_SCOPES)}, got {token_scope!r}")
    if x402_signer is not None and not callable(getattr(x402_signer, "sign_typed_data", None)):
        raise ConfigError(f"x402_signer= must be a signer such as httpay.signers.EvmSigner, got {type(x402_signer).__name__}")
    payer = Payer(wallet=wallet, policy=policy or Policy(), ledger=open_ledger(ledger), on_event=on_event,
                  token_scope=token_scope, x402_signer=x402_signer)
    if reconcile_grace_s is not None and wallet is not None:
        # A payment left pending by a crash is settled or released before anything new is paid.
        payer.stale_pending_s = reconcile_grace_s
        for outcome in reconcile(payer.ledger, wallet, grace_s=reconcile_grace_s):
            if outcome.outcome != "skipped":
                log.info("reconciled on start: %s", outcome)
    return payer


class _PayingMixin:
    payer: Payer

    @property
    def wallet(self) -> Wallet | None:
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
            raise ConfigError("a USD price cap needs a BTC/USD rate: set Policy(usd_per_btc=...)")
        return {MAX_PRICE_EXTENSION: usd_to_msat(usd, rate)}


class Client(_PayingMixin, httpx.Client):
    """An httpx.Client that meets 402 Payment Required by paying within `policy`, then retrying.

    Refusals raise `httpay.PaymentRefused` (with the offers); every payment lands in `ledger`
    (SQLite at the default path unless given a path, a URL or a Ledger). `token_scope` says where
    a paid L402 token is reused (host, prefix or url); payments left pending by a crash are
    reconciled with the wallet on start once older than `reconcile_grace_s` (None: never).
    `x402_signer` (an `httpay.signers.EvmSigner`) pays x402 challenges when the policy allows
    `x402` methods; without one they are refused.
    """

    def __init__(self, *, wallet: Wallet | None = None, policy: Policy | None = None,
                 ledger: Ledger | str | os.PathLike[str] | None = None, on_event: EventHook | None = None,
                 token_scope: str = "host", reconcile_grace_s: float | None = DEFAULT_GRACE_S,
                 transport: httpx.BaseTransport | None = None, x402_signer: Any = None, **kwargs: Any) -> None:
        self.payer = _payer(wallet, policy, ledger, on_event, token_scope, reconcile_grace_s, x402_signer)
        self._own_ledger = not isinstance(ledger, Ledger)
        super().__init__(transport=PaymentTransport(self.payer, transport), **kwargs)

    def close(self) -> None:
        super().close()
        if self._own_ledger:
            self.payer.ledger.close()


class AsyncClient(_PayingMixin, httpx.AsyncClient):
    """The async twin of `Client`, running the very same pipeline."""

    def __init__(self, *, wallet: Wallet | None = None, policy: Policy | None = None,
                 ledger: Ledger | str | os.PathLike[str] | None = None, on_event: EventHook | None = None,
                 token_scope: str = "host", reconcile_grace_s: float | None = DEFAULT_GRACE_S,
                 transport: httpx.AsyncBaseTransport | None = None, x402_signer: Any = None,
                 **kwargs: Any) -> None:
        self.payer = _payer(wallet, policy, ledger, on_event, token_scope, reconcile_grace_s, x402_signer)
        self._own_ledger = not isinstance(ledger, Ledger)
        super().__init__(transport=AsyncPaymentTransport(self.payer, transport), **kwargs)

    async def aclose(self) -> None:
        await super().aclose()
        if self._own_ledger:
            self.payer.ledger.close()
