"""What every wallet offers: pay a BOLT11 invoice and return proof, look a payment up, tell the balance.

Wallets are small adapters. They hold their secrets privately (never in a repr, a log line or
an exception) and translate their backend's answers into `Payment` and httpay's wallet errors.
"""

from __future__ import annotations

import enum
import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Self

import httpx


class PaymentStatus(str, enum.Enum):
    """Where a payment stands, as the wallet sees it."""

    SETTLED = "settled"
    PENDING = "pending"
    FAILED = "failed"


@dataclass(frozen=True)
class Payment:
    """A wallet's answer about one outgoing payment.

    `preimage` is the proof of payment (hex, 64 chars) and is only set once settled. The repr
    shows only its first characters: a preimage is a bearer credential for classic L402.
    """

    payment_hash: str
    status: PaymentStatus
    amount_msat: int | None = None
    fee_msat: int = 0
    preimage: str | None = field(default=None, repr=False)
    failure_reason: str | None = None

    def __post_init__(self) -> None:
        if self.preimage is not None:
            pre = self.preimage.lower()
            object.__setattr__(self, "preimage", pre)

    @property
    def settled(self) -> bool:
        return self.status is PaymentStatus.SETTLED

    def proves(self, payment_hash: str) -> bool:
        """True when the preimage hashes to `payment_hash`: the only proof a payment happened."""
        if not self.preimage:
            return False
        try:
            return hashlib.sha256(bytes.fromhex(self.preimage)).hexdigest() == payment_hash.lower()
        except ValueError:
            return False

    def __repr__(self) -> str:
        pre = f"{self.preimage[:8]}…" if self.preimage else None
        return (
            f"Payment(payment_hash={self.payment_hash[:16]}…, status={self.status.value}, "
            f"amount_msat={self.amount_msat}, fee_msat={self.fee_msat}, preimage={pre!r}"
            + (f", failure_reason={self.failure_reason!r})" if self.failure_reason else ")")
        )

    def __str__(self) -> str:
        amt = f"{self.amount_msat / 1000:g} sat" if self.amount_msat is not None else "? sat"
        return f"{self.status.value} payment of {amt} (fee {self.fee_msat / 1000:g} sat), hash {self.payment_hash[:16]}…"


class Wallet(ABC):
    """A Lightning wallet httpay can pay with.

    `network` is the BOLT11 network the wallet pays on: "bitcoin" (mainnet), "testnet",
    "signet" or "regtest". httpay refuses invoices for any other network before calling the wallet.
    """

    network: str = "bitcoin"
    name: str = "wallet"  # the kind of wallet ("lnbits", "lnd"): two wallets of one kind share it

    @property
    def identity(self) -> str | None:
        """Which wallet this is, stable across processes and restarts: a node pubkey, an account or
        wallet id, or `fingerprint(...)` of the endpoint and the wallet's own key. Never a secret.

        The ledger records it on every payment, and only the wallet with this identity reconciles the
        payment: another wallet cannot see it, and must not write it off. None (an adapter that cannot
        tell) keeps the old rule: the wallet is taken to be the only one of its kind on the ledger."""
        return None

    @abstractmethod
    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Payment:
        """Pay the invoice and return the settled `Payment` (with preimage).

        Raises `InsufficientFunds`, `AlreadyPaid`, `PaymentTimeout` or `WalletError`.
        """

    def lookup(self, payment_hash: str) -> Payment | None:
        """The wallet's view of an earlier payment, or None if it never saw it."""
        raise NotImplementedError(f"{type(self).__name__} cannot look payments up")

    def balance_msat(self) -> int:
        """Spendable balance in millisatoshis."""
        raise NotImplementedError(f"{type(self).__name__} cannot tell its balance")

    def create_receive_invoice(self, amount_msat: int | None, *, description: str = "", expiry_s: int = 3600) -> str:
        """A BOLT11 invoice that pays this wallet (`amount_msat=None`: amount-less, e.g. the return
        invoice an MPP lightning session refunds to). WalletError when the backend refuses."""
        raise NotImplementedError(f"{type(self).__name__} cannot create invoices to receive")

    def received_msat(self, payment_hash: str) -> int | None:
        """What came in on an invoice of this wallet's own (`create_receive_invoice`): msat received,
        0 while unpaid, None if the wallet never issued it. How a refund a service says it sent is
        confirmed before budgets give it back."""
        raise NotImplementedError(f"{type(self).__name__} cannot tell what its invoices received")

    def close(self) -> None:
        """Release network resources the wallet holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def invoice_facts(bolt11: str) -> tuple[str | None, int | None]:
    """The payment hash and amount written in an invoice, so an adapter can check its backend's
    answer against the invoice itself. (None, None) when it does not decode here: the backend
    then judges the invoice and says why."""
    from httpay.bolt11_reader import Bolt11Invalid, read_bolt11

    try:
        inv = read_bolt11(bolt11)
    except (Bolt11Invalid, TypeError, AttributeError):
        return None, None
    return inv.payment_hash, inv.amount_msat


def _spelt_once(part: str) -> str:
    if "://" not in part:
        return part
    try:
        return str(httpx.URL(part)).rstrip("/")
    except httpx.InvalidURL:
        return part


def fingerprint(kind: str, *parts: str) -> str:
    """A wallet identity from what names it (endpoint, wallet key): `kind:` + 24 hex of a domain-separated
    SHA-256. One-way, so a key that goes in never comes out, and equal inputs give equal identities in
    every process. An endpoint is taken as a URL, however it is spelt (`HTTP://Host:80/` is
    `http://host`): one wallet must not become "another wallet" whose payments it may not reconcile."""
    digest = hashlib.sha256("\0".join(("httpay-wallet-identity-v1", kind, *map(_spelt_once, parts))).encode()).hexdigest()
    return f"{kind}:{digest[:24]}"


def default_fee_limit_msat(amount_msat: int | None) -> int:
    """Routing fee cap when the caller sets none: 1% of the amount, at least 10 sat."""
    return max(10_000, (amount_msat or 0) // 100)
