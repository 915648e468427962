"""Who pays: the parts the drivers perform effects with, and the settings the flow reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from httpay.core.deadline import DEFAULT_PAYMENT_DEADLINE_S
from httpay.core.events import EventHook
from httpay.core.model import Offer
from httpay.errors import ConfigError
from httpay.ledger.base import Ledger
from httpay.policy import Policy
from httpay.wallets.base import Wallet


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
        return "rail", f"httpay has no way to pay on {offer.rail!r}"

    def wallet_name(self, rail: str) -> tuple[str | None, str | None]:
        """(kind, identity) of what pays on `rail`, for the ledger row."""
        if rail == "lightning" and self.wallet is not None:
            return self.wallet.name, self.wallet.identity
        if self.signer is not None:
            address = getattr(self.signer, "address", None)
            return getattr(self.signer, "name", "signer"), (f"x402:{str(address).lower()}" if address else None)
        return None, None
