"""`httpay.Client` and `httpay.AsyncClient`: httpx clients that can pay.

They are httpx.Client / httpx.AsyncClient with a payment transport installed, so every httpx
feature keeps working; the extra keyword arguments say who pays (wallet), within which rules
(policy), and where it is written down (ledger).
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
from collections.abc import Mapping
from typing import Any

import httpx

import httpay.dialects  # noqa: F401 - registers the built-in dialects
from httpay.core.deadline import DEFAULT_PAYMENT_DEADLINE_S
from httpay.core.events import EventHook
from httpay.core.flow import MAX_PRICE_EXTENSION
from httpay.core.payer import Payer
from httpay.core.rates import resolve_rate
from httpay.core.transport import (
    AsyncPaymentTransport,
    PaymentTransport,
    _AsyncFlights,
    _SyncFlights,
)
from httpay.errors import ConfigError
from httpay.ledger import Ledger
from httpay.policy import Policy, usd_to_msat
from httpay.reconcile import DEFAULT_GRACE_S
from httpay.safe import get_logger
from httpay.wallets.base import Wallet

log = get_logger("httpay")


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
        for name, v in (("usd", usd), ("sat", sat)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or v < 0
                                  or (isinstance(v, float) and not math.isfinite(v))):
                raise ConfigError(f"max_price({name}=...) must be a non-negative finite number, got {v!r}")
        if sat is not None:
            return {MAX_PRICE_EXTENSION: int(sat * 1000)}
        if usd is None:
            return {}
        rate = resolve_rate(self.payer.policy, self.payer.wallet)
        if not rate:
            raise ConfigError("a USD price cap needs a BTC/USD rate: set Policy(usd_per_btc=...)")
        return {MAX_PRICE_EXTENSION: usd_to_msat(usd, rate)}


def _timeout_ok(settings: dict[str, Any]) -> None:
    """httpx keeps a timeout it cannot use (`timeout="30"`) until the first request fails on it: say so now."""
    if "timeout" not in settings:
        return
    try:
        t = httpx.Timeout(settings["timeout"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"timeout= must be seconds, None or an httpx.Timeout: {exc}") from None
    for name in ("connect", "read", "write", "pool"):
        v = getattr(t, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0):
            raise ConfigError(f"timeout= must be seconds (a non-negative number), None or an httpx.Timeout, "
                              f"got {name}={v!r:.40}")


def _known_settings(kwargs: dict[str, Any], own: type) -> None:
    """A setting neither httpay nor httpx takes (`walet=`) is named, with the one meant, before anything
    is checked or opened: not a wallet missing, nor httpx's bare TypeError after a ledger was made."""
    httpx_names = set(inspect.signature(own).parameters) - {"args", "kwargs"}
    unknown = sorted(set(kwargs) - httpx_names - {"payer"})
    if not unknown:
        return
    names = sorted(httpx_names | set(inspect.signature(Payer.create).parameters) | {"payer", "transport"})
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, names, n=1)
        hints.append(f"{name}" + (f" (did you mean {close[0]}?)" if close else ""))
    raise ConfigError(f"httpay.{own.__name__} takes no setting {', '.join(hints)}; httpay's settings are "
                      "wallet, policy, ledger, x402_signer, payment_deadline, tags, token_scope, on_event, "
                      "reconcile_grace_s, payer; every other is httpx's own")


def _not_wrapped(transport: object) -> None:
    """An httpay client wraps its transports itself; one already paying would pay in two layers."""
    if isinstance(transport, PaymentTransport | AsyncPaymentTransport):
        raise ConfigError(
            "transport= is already an httpay payment transport: give httpay.Client the transport it wraps, "
            "or pass the payment transport to a plain httpx.Client(transport=...)"
        )


def _wrap_sync(client: httpx.Client, payer: Payer) -> None:
    """Put the payment step on the transports httpx built from the client's own arguments: the
    default one and every mount (proxy= / mounts= / HTTP_PROXY routes), with one shared single flight.
    A route httpx maps to None (NO_PROXY) falls back to the default transport, which is wrapped."""
    flights = _SyncFlights()

    def route(url: httpx.URL) -> httpx.BaseTransport:
        chosen = client._transport_for_url(url)
        return chosen.inner if isinstance(chosen, PaymentTransport) else chosen

    def wrap(inner: httpx.BaseTransport) -> PaymentTransport:
        return PaymentTransport(payer, inner, flights=flights, route=route)

    client._transport = wrap(client._transport)
    client._mounts = {pattern: None if t is None else wrap(t) for pattern, t in client._mounts.items()}


def _wrap_async(client: httpx.AsyncClient, payer: Payer) -> None:
    """The async twin of `_wrap_sync`."""
    flights = _AsyncFlights()

    def route(url: httpx.URL) -> httpx.AsyncBaseTransport:
        chosen = client._transport_for_url(url)
        return chosen.inner if isinstance(chosen, AsyncPaymentTransport) else chosen

    def wrap(inner: httpx.AsyncBaseTransport) -> AsyncPaymentTransport:
        return AsyncPaymentTransport(payer, inner, flights=flights, route=route)

    client._transport = wrap(client._transport)
    client._mounts = {pattern: None if t is None else wrap(t) for pattern, t in client._mounts.items()}


def _payer(kwargs: dict[str, Any], **settings: Any) -> tuple[Payer, bool]:
    """The client's payer: `payer=` (an `httpay.Payer` shared with other clients: one wallet, policy,
    ledger and flight of payments for all, its ledger left open), or one made from the settings;
    and whether the client opened its ledger (and so closes it)."""
    if "payer" not in kwargs:
        return Payer.create(**settings), not isinstance(settings["ledger"], Ledger)
    payer = kwargs.pop("payer")
    if not isinstance(payer, Payer):
        raise ConfigError(f"payer= must be an httpay.Payer (httpay.Payer.create(wallet=..., ...)), "
                          f"got {type(payer).__name__}")
    defaults = inspect.signature(Payer.create).parameters
    given = sorted(k for k, v in settings.items() if v is not defaults[k].default and v != defaults[k].default)
    if given:
        raise ConfigError(f"give the client payer= or its settings, not both (got payer= and {', '.join(given)}=); "
                          "the payer holds them")
    return payer, False


class Client(_PayingMixin, httpx.Client):
    """An httpx.Client that meets 402 Payment Required by paying within `policy`, then retrying.

    With no `policy`, httpay's default limits apply (`httpay.Policy()`: at most 1,000 sat per payment,
    10,000 sat per hour, 50,000 sat per day); `httpay.Policy.unlimited()` is the explicit way to have none.
    Refusals raise `httpay.PaymentRefused` (with the offers); every payment lands in `ledger`
    (SQLite at the default path unless given a path, a URL or a Ledger). `token_scope` says where
    a paid L402 token is reused (host, prefix or url); payments left pending by a crash are
    reconciled with the wallet on start once older than `reconcile_grace_s` (None: never).
    `x402_signer` (an `httpay.signers.EvmSigner`) pays x402 challenges when the policy allows
    `x402` methods; without one they are refused. `payment_deadline` (seconds, default 60; None:
    none) bounds one paid request from its 402 to the wallet: past it nothing is paid
    (`PaymentDeadlineExceeded`). Every other argument is httpx's own and keeps httpx's meaning:
    httpx builds the transports (verify, cert, http2, limits, proxy, mounts, trust_env, transport)
    and httpay wraps each of them with the payment step. `payer=` (an `httpay.Payer`) instead of
    these settings shares one payer among clients: their payments share its wallet, policy and
    ledger, and the ledger stays open when a client closes.
    """

    def __init__(self, *, wallet: Wallet | None = None, policy: Policy | None = None,
                 ledger: Ledger | str | os.PathLike[str] | None = None, on_event: EventHook | None = None,
                 token_scope: str = "host", reconcile_grace_s: float | None = DEFAULT_GRACE_S,
                 transport: httpx.BaseTransport | None = None, x402_signer: Any = None,
                 payment_deadline: float | None = DEFAULT_PAYMENT_DEADLINE_S, tags: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        _known_settings(kwargs, httpx.Client)
        _not_wrapped(transport)
        _timeout_ok(kwargs)
        self.payer, self._own_ledger = _payer(kwargs, wallet=wallet, policy=policy, ledger=ledger, on_event=on_event,
                                              token_scope=token_scope, reconcile_grace_s=reconcile_grace_s,
                                              x402_signer=x402_signer, payment_deadline=payment_deadline, tags=tags)
        super().__init__(transport=transport, **kwargs)
        _wrap_sync(self, self.payer)

    def close(self) -> None:
        from httpay.dialects.mpp_session import close_sessions

        close_sessions(self)  # MPP sessions opened from this client ask for their refunds first
        super().close()
        if self._own_ledger:
            self.payer.ledger.close()


class AsyncClient(_PayingMixin, httpx.AsyncClient):
    """The async twin of `Client`, running the very same flow."""

    def __init__(self, *, wallet: Wallet | None = None, policy: Policy | None = None,
                 ledger: Ledger | str | os.PathLike[str] | None = None, on_event: EventHook | None = None,
                 token_scope: str = "host", reconcile_grace_s: float | None = DEFAULT_GRACE_S,
                 transport: httpx.AsyncBaseTransport | None = None, x402_signer: Any = None,
                 payment_deadline: float | None = DEFAULT_PAYMENT_DEADLINE_S, tags: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        _known_settings(kwargs, httpx.AsyncClient)
        _not_wrapped(transport)
        _timeout_ok(kwargs)
        self.payer, self._own_ledger = _payer(kwargs, wallet=wallet, policy=policy, ledger=ledger, on_event=on_event,
                                              token_scope=token_scope, reconcile_grace_s=reconcile_grace_s,
                                              x402_signer=x402_signer, payment_deadline=payment_deadline, tags=tags)
        super().__init__(transport=transport, **kwargs)
        _wrap_async(self, self.payer)

    async def aclose(self) -> None:
        from httpay.dialects.mpp_session import aclose_sessions

        await aclose_sessions(self)
        await super().aclose()
        if self._own_ledger:
            self.payer.ledger.close()
