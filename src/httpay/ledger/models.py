"""A receipt: one line of the ledger, the truth about one payment attempt."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class Status(str, enum.Enum):
    PENDING = "pending"   # written before the wallet is called; outcome not yet known
    SETTLED = "settled"   # the wallet paid; preimage proves it
    FAILED = "failed"     # the wallet did not pay; nothing left the wallet


@dataclass(frozen=True)
class Receipt:
    """One payment as the ledger knows it. The preimage is kept but never shown whole."""

    id: int
    status: Status
    created_at: datetime
    updated_at: datetime
    host: str
    url: str
    protocol: str
    method: str
    offer_id: str | None
    offer_title: str | None
    offer_amount: int | None
    offer_currency: str | None
    credits: int | None
    payment_hash: str | None
    amount_msat: int
    fee_msat: int = 0  # settled: the fee paid; pending: the most the wallet may spend (held in budgets)
    wallet: str | None = None
    challenge_key: str | None = None
    reason: str | None = None
    preimage: str | None = field(default=None, repr=False)
    wallet_id: str | None = None  # the stable identity of the wallet that made it (never a secret)

    @property
    def total_msat(self) -> int:
        return self.amount_msat + (self.fee_msat or 0)

    @property
    def when(self) -> str:
        return self.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")

    def __str__(self) -> str:
        what = f"{self.offer_id} '{self.offer_title}'" if self.offer_id else self.protocol
        reason = f" ({self.reason})" if self.reason else ""
        fee = (f"fee up to {self.fee_msat / 1000:,g} sat held" if self.status is Status.PENDING
               else f"fee {self.fee_msat / 1000:,g} sat")
        return (
            f"#{self.id} {self.when} {self.status.value:<7} {self.amount_msat / 1000:,g} sat + {fee} "
            f"to {self.host} for {what} by {self.method}{reason}"
        )

    def __repr__(self) -> str:
        return (
            f"Receipt(id={self.id}, status={self.status.value!r}, host={self.host!r}, offer_id={self.offer_id!r}, "
            f"amount_msat={self.amount_msat}, fee_msat={self.fee_msat}, payment_hash={(self.payment_hash or '')[:16]!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, without the preimage."""
        return {
            "id": self.id, "status": self.status.value, "created_at": self.created_at.isoformat(),
            "host": self.host, "url": self.url, "protocol": self.protocol, "method": self.method,
            "offer_id": self.offer_id, "offer_title": self.offer_title, "offer_amount": self.offer_amount,
            "offer_currency": self.offer_currency, "credits": self.credits, "payment_hash": self.payment_hash,
            "amount_msat": self.amount_msat, "fee_msat": self.fee_msat, "wallet": self.wallet, "wallet_id": self.wallet_id,
            "reason": self.reason,
        }

    def __rich__(self) -> Any:
        from httpay.display import receipts_table

        return receipts_table([self])

    def _repr_html_(self) -> str:
        from httpay.display import html_receipts

        return html_receipts([self])
