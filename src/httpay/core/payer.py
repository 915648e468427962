"""Who pays: the parts the drivers perform effects with, and the settings the flow reads."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from httpay.core.deadline import DEFAULT_PAYMENT_DEADLINE_S
from httpay.core.events import EventHook
from httpay.core.model import Offer
from httpay.errors import ConfigError
from httpay.ledger import open_ledger
from httpay.ledger.base import Ledger
from httpay.ledger.models import Receipt
from httpay.policy import TAG_TEXT, Policy
from httpay.reconcile import DEFAULT_GRACE_S, reconcile
from httpay.safe import clean, get_logger
from httpay.wallets.base import Wallet

log = get_logger("httpay")
TOKEN_SCOPES = ("host", "prefix", "url")  # where a paid token is reused: the host, the path prefix, the URL
# How a payment crediting an account stands in this process (`Payer.credit_uses`): its own request is
# being retried; some request was served with it; its own request met 402 to the end and none was
# served with it; its own request ended otherwise (no answer, a 5xx)
CREDIT_PAYING, CREDIT_SERVED, CREDIT_UNHONORED, CREDIT_OVER = "paying", "served", "unhonored", "over"


@dataclass
class CreditUse:
    """A payment crediting an account, made in this process: the flight key of its account; how many
    requests had been served on it when the payment was made, and how many credits bought here were
    unused then (a service spends an account's credits as one pool: those go first); how many credits
    it bought (None: the offer did not say); and how its use stands (`CREDIT_*`)."""

    key: str
    since: int
    ahead: int
    credits: int | None
    state: str = CREDIT_PAYING


def _bound(kept: dict[Any, Any], most: int = 4096) -> None:
    while len(kept) > most:
        kept.pop(next(iter(kept)))


@dataclass
class Payer:
    """The wallet, signer and ledger (used only by drivers, through effects), the policy, and the
    flow's settings. The flow reads attributes here (a wallet's network, a signer's address), never
    calls out."""

    wallet: Wallet | None  # None: no Lightning payments (e.g. an x402-only client)
    policy: Policy
    ledger: Ledger
    on_event: EventHook | None = None
    retries_after_payment: int = 5
    retry_delay_s: float = 0.2
    token_scope: str = "host"          # where a paid, reusable credential is reused: host, prefix or url
    inflight_wait_s: float = 60.0      # how long to wait for another process's payment of the same challenge
    stale_pending_s: float = 120.0     # a pending payment older than this is reconciled, not waited for
    signer: Any = None                 # signs typed-data payments (httpay.signers.EvmSigner); None: refuse them
    payment_deadline: float | None = DEFAULT_PAYMENT_DEADLINE_S  # seconds from a 402 to paying it; None: none
    tags: dict[str, str] = field(default_factory=dict)  # every payment's attribution ({"agent": "research"})
    # hosts whose 402s named a dialect that advertises (MPP's Accept-Payment), and the headers they get
    advertise_to: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    call_window_s: float = 600.0       # the same call (method, URL, body) sent again within this is one call
    # which variant of a scope's credentials (`Challenge.variant`) a URL's path and a scope last took:
    # the one presented first there (bounded: `remember_variant`)
    token_variants: dict[str, str] = field(default_factory=dict, repr=False)
    _wallet_names: dict[int, tuple[Wallet, str, str]] = field(default_factory=dict, repr=False, compare=False)
    # the calls (`Ledger.call` ids) a send in this process is paying now, and how many sends: another send
    # of one of them waits for its outcome rather than sending the same payment while it settles
    live_calls: Counter[int] = field(default_factory=Counter, repr=False, compare=False)
    ended_calls: dict[int, None] = field(default_factory=dict, repr=False, compare=False)  # (the latest 4,096)
    # payments crediting an account (L402 v0.2) made in this process, by ledger id, and how each stands;
    # and how many requests were served on each flight key (account): one served after a payment was made
    # may have used its credit (the latest 4,096 of each)
    credit_uses: dict[int, CreditUse] = field(default_factory=dict, repr=False, compare=False)
    served_on: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    bought_on: dict[str, int] = field(default_factory=dict, repr=False, compare=False)  # credits bought here, by key
    # payments of other processes this one noted on their rows that a request here was served with (latest 4,096)
    noted_served: dict[int, None] = field(default_factory=dict, repr=False, compare=False)
    # the payment the latest flight of a key (`flight_key`) made or used, for the requests that waited on it
    flight_payments: dict[str, Receipt] = field(default_factory=dict, repr=False, compare=False)

    def credit_mark(self, key: str) -> tuple[int, int]:
        """How many requests of `key` were served here with a payment made or used (`credit_served`),
        and how many of the credits bought here are unused by them: taken just before paying."""
        served = self.served_on.get(key, 0)
        return served, max(self.bought_on.get(key, 0) - served, 0)

    def credit_made(self, receipt_id: int, key: str, mark: tuple[int, int], credits: int | None) -> None:
        """A payment of `credits` crediting the account of `key` was made here (`mark`: `credit_mark`
        before paying); its own request retries with it."""
        self.bought_on[key] = self.bought_on.pop(key, 0) + (credits or 1)
        _bound(self.bought_on)
        self.credit_uses[receipt_id] = CreditUse(key, mark[0], mark[1], credits)
        _bound(self.credit_uses)

    def credit_served(self, key: str | None, receipt_id: int | None) -> None:
        """A request of `key` (None: the account of payment `receipt_id`) was served, with payment
        `receipt_id` if known: it used a credit."""
        use = self.credit_uses.get(receipt_id) if receipt_id is not None else None
        if use is not None:
            use.state = CREDIT_SERVED
        where = key if key is not None else use.key if use is not None else None
        if where is not None:
            self.served_on[where] = self.served_on.pop(where, 0) + 1
            _bound(self.served_on)

    def credit_used(self, receipt_id: int) -> bool:
        """Whether what payment `receipt_id` (made here) bought is used by now: as many requests were
        served on its account since it was made as there were credits ahead of it and it bought (one
        whose credits are not known: once a request was served with it)."""
        use = self.credit_uses.get(receipt_id)
        if use is None:
            return False
        if use.credits is None:
            return use.state == CREDIT_SERVED
        return self.served_on.get(use.key, 0) - use.since >= use.ahead + use.credits

    def credit_state(self, receipt_id: int) -> str | None:
        """How payment `receipt_id` stands here (None: not made here, or forgotten)."""
        use = self.credit_uses.get(receipt_id)
        return None if use is None else use.state

    def credit_ended(self, receipt_id: int, state: str) -> None:
        """Its own request is done with payment `receipt_id` (`CREDIT_UNHONORED`: it met 402 to the end
        and nobody was served since; `CREDIT_OVER`: otherwise); one served stays served."""
        use = self.credit_uses.get(receipt_id)
        if use is not None and use.state == CREDIT_PAYING:
            use.state = state

    def flight_paid(self, key: str, receipt: Receipt) -> None:
        """The payment the latest flight of `key` made or used, for the requests waiting on it (a flight
        that ends with none leaves the one before: what its waiters use, which they find used up)."""
        self.flight_payments.pop(key, None)
        self.flight_payments[key] = receipt
        _bound(self.flight_payments)

    def call_ended(self, call_id: int) -> None:
        """No send of this call is under way here any more: its pending payment has no live send here."""
        self.ended_calls.pop(call_id, None)
        self.ended_calls[call_id] = None
        while len(self.ended_calls) > 4096:
            self.ended_calls.pop(next(iter(self.ended_calls)))

    def remember_variant(self, keys: tuple[str, ...], variant: str) -> None:
        """Present `variant` first at these URL paths and scopes; the oldest are forgotten past 4,096."""
        for key in keys:
            self.token_variants.pop(key, None)
            self.token_variants[key] = variant
        while len(self.token_variants) > 4096:
            self.token_variants.pop(next(iter(self.token_variants)))

    @classmethod
    def create(cls, *, wallet: Wallet | None = None, policy: Policy | None = None,
               ledger: Ledger | str | os.PathLike[str] | None = None, on_event: EventHook | None = None,
               token_scope: str = "host", reconcile_grace_s: float | None = DEFAULT_GRACE_S,
               x402_signer: Any = None, payment_deadline: float | None = DEFAULT_PAYMENT_DEADLINE_S,
               tags: Mapping[str, str] | None = None) -> Payer:
        """A payer from the settings `httpay.Client` takes (the same names, checked the same way, a
        ConfigError naming the one that is wrong), for `httpx.Client(transport=PaymentTransport(payer))`.
        A payment left pending by a crash is reconciled with the wallet here, before anything is paid."""
        if wallet is not None and not isinstance(wallet, Wallet):
            raise ConfigError(f"wallet= must be an httpay Wallet (e.g. httpay.DemoWallet), got {type(wallet).__name__}")
        if policy is not None and not isinstance(policy, Policy):
            example = "httpay.Policy(budget_usd=5)"
            if isinstance(policy, Mapping) and all(isinstance(k, str) and k.isidentifier() for k in policy):
                example = "httpay.Policy(" + ", ".join(f"{k}={v!r:.30}" for k, v in list(policy.items())[:6]) + ")"
            raise ConfigError(f"policy= must be an httpay.Policy, got {type(policy).__name__}: write {example}")
        if token_scope not in TOKEN_SCOPES:
            raise ConfigError(f"token_scope= must be one of {', '.join(TOKEN_SCOPES)}, got {token_scope!r}")
        if x402_signer is not None and not callable(getattr(x402_signer, "sign_typed_data", None)):
            raise ConfigError(f"x402_signer= must be a signer such as httpay.signers.EvmSigner, "
                              f"got {type(x402_signer).__name__}")
        if payment_deadline is not None and not _positive(payment_deadline):
            raise ConfigError(f"payment_deadline= must be a positive number of seconds (or None for no deadline), "
                              f"got {payment_deadline!r}")
        if reconcile_grace_s is not None and not (_positive(reconcile_grace_s) or (reconcile_grace_s == 0 and not isinstance(reconcile_grace_s, bool))):
            raise ConfigError(f"reconcile_grace_s= must be a number of seconds (or None: never reconcile on start), "
                              f"got {reconcile_grace_s!r}")
        if on_event is not None and not callable(on_event):
            raise ConfigError(f"on_event= must be a function taking an httpay.Event, got {type(on_event).__name__}")
        checked = checked_tags(tags)
        if wallet is None and x402_signer is None:  # (after the settings given: a wrong one is named first)
            raise ConfigError("a paying client needs wallet= (Lightning, e.g. httpay.DemoWallet) "
                              "or x402_signer= (or both)")
        payer = cls(wallet=wallet, policy=policy or Policy(), ledger=open_ledger(ledger), on_event=on_event,
                    token_scope=token_scope, signer=x402_signer,
                    payment_deadline=None if payment_deadline is None else float(payment_deadline), tags=checked)
        if reconcile_grace_s is not None and wallet is not None:
            payer.stale_pending_s = reconcile_grace_s
            for outcome in reconcile(payer.ledger, wallet, grace_s=reconcile_grace_s):
                if outcome.outcome != "skipped":
                    log.info("reconciled on start: %s", outcome)
        return payer

    @property
    def lightning(self) -> Wallet:
        """The Lightning wallet; the flow checks there is one before any Lightning step."""
        if self.wallet is None:
            raise ConfigError("no Lightning wallet is configured: pass wallet= to the client")
        return self.wallet

    def cannot_pay(self, offer: Offer) -> tuple[str, str] | None:
        """(rule, why) when this payer has nothing that pays `offer`'s rail, or it follows a proposal the
        policy did not opt in to; None when it can."""
        if offer.proposal is not None and offer.proposal not in self.policy.proposals:
            return "proposal", (f"{offer.proposal} is a proposal, not a standard; opt in with "
                                f"Policy(proposals=[{offer.proposal!r}]) to pay it")
        if offer.rail == "lightning":
            if self.wallet is None:
                return "no_wallet", "no Lightning wallet is configured; pass wallet= to the client"
            return None
        if offer.rail == "evm":
            if self.signer is None:
                return "no_signer", ("no x402 signer is configured: httpay pays it only with a signer for that "
                                     "network (Client(x402_signer=httpay.EvmSigner(...)))")
            if offer.network is not None and not self.signer.pays_on(offer.network):
                return "no_signer", f"the signer is not set to pay on {offer.network}"
            return None
        return "rail", offer.unpayable or f"httpay has no way to pay on {clean(offer.rail, 40)!r}"  # its own words say more

    def wallet_name(self, rail: str) -> tuple[str | None, str | None]:
        """(kind, identity) of what pays on `rail`, for the ledger row. A wallet's identity is worked
        out once (a fingerprint of its endpoint and key: the same answer on every payment)."""
        if rail == "lightning" and self.wallet is not None:
            known = self._wallet_names.get(id(self.wallet))
            if known is not None and known[0] is self.wallet:
                return known[1], known[2]
            name, identity = self.wallet.name, self.wallet.identity
            if identity is not None:  # (a wallet that cannot tell yet is asked again next time)
                self._wallet_names[id(self.wallet)] = (self.wallet, name, identity)
            return name, identity
        if self.signer is not None:
            address = getattr(self.signer, "address", None)
            return getattr(self.signer, "name", "signer"), (f"x402:{str(address).lower()}" if address else None)
        return None, None


def _positive(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0




def checked_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    """Tags as the ledger keeps them: a few short `key=value` words (letters, digits, `_.:/@+-`), so
    that they can be grouped, budgeted and exported as they are. ConfigError naming a bad one."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise ConfigError(f"tags= must be a mapping such as {{'agent': 'research'}}, got {type(tags).__name__}")
    if len(tags) > 16:
        raise ConfigError(f"tags= holds {len(tags)} tags; at most 16 are kept per payment")
    out: dict[str, str] = {}
    for k, v in tags.items():
        if not isinstance(k, str) or not isinstance(v, str) or not TAG_TEXT.fullmatch(k) or not TAG_TEXT.fullmatch(v):
            raise ConfigError(f"tags=: {k!r}: {v!r} must be short words of letters, digits and _.:/@+- "
                              "(e.g. {'agent': 'research', 'task': 'T-17'})")
        out[k] = v
    return out


def tags_from_text(items: Sequence[str] | str, source: str = "tags") -> dict[str, str]:
    """Tags written as text: KEY=VALUE items, or one comma-separated string of them (HTTPAY_TAGS,
    `--tag`), checked as `Client(tags=...)` checks them. ConfigError naming `source`."""
    parts = items.split(",") if isinstance(items, str) else list(items)
    out: dict[str, str] = {}
    for item in (p.strip() for p in parts):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{source}: {item!r} must be KEY=VALUE, e.g. agent=research")
        out[key] = value
    try:
        return checked_tags(out)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
