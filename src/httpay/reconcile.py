"""Reconciliation: settle the truth about payments left `pending` by a crash or a lost answer.

A pending row means the wallet may have paid. It is never paid again blindly: the wallet is
asked about the payment hash. Settled there -> settled here (with the preimage); unknown there
and old enough that no other process can still be sending it -> failed (nothing left the
wallet); still in flight there -> stays pending.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from httpay.errors import WalletError
from httpay.ledger import Ledger, Receipt, Status
from httpay.ledger.base import now_utc
from httpay.wallets.base import PaymentStatus, Wallet
from httpay.safe import get_logger

log = get_logger("httpay.reconcile")

DEFAULT_GRACE_S = 120.0


@dataclass(frozen=True)
class Reconciled:
    """What reconciling one pending payment found."""

    receipt: Receipt
    outcome: str  # "settled", "failed", "pending", "skipped"
    detail: str

    def __str__(self) -> str:
        return f"#{self.receipt.id} {self.outcome}: {self.detail}"


def reconcile_one(ledger: Ledger, wallet: Wallet, receipt: Receipt, *, grace_s: float = DEFAULT_GRACE_S) -> Reconciled:
    """Ask the wallet about one pending payment and record the answer."""
    if receipt.status is not Status.PENDING:
        return Reconciled(receipt, receipt.status.value, "not pending")
    if not receipt.payment_hash:
        return Reconciled(receipt, "skipped", "no payment hash to look up")
    try:
        found = wallet.lookup(receipt.payment_hash)
    except NotImplementedError:
        return Reconciled(receipt, "skipped", f"{wallet.name} cannot look payments up; check the wallet by hand")
    except WalletError as exc:
        return Reconciled(receipt, "pending", f"wallet lookup failed: {exc}")
    if found is not None and found.status is PaymentStatus.SETTLED and found.proves(receipt.payment_hash):
        done = ledger.settle(receipt.id, preimage=found.preimage or "", fee_msat=found.fee_msat,
                             amount_msat=found.amount_msat or receipt.amount_msat)
        log.info("reconciled #%s: settled at the wallet", receipt.id)
        return Reconciled(done, "settled", "the wallet paid it; recorded as settled")
    if found is not None and found.status is PaymentStatus.FAILED:
        done = ledger.fail(receipt.id, f"reconciled: the wallet reports failure ({found.failure_reason or 'no reason'})")
        return Reconciled(done, "failed", "the wallet reports the payment failed")
    if found is None:
        age = now_utc() - receipt.updated_at
        if age < timedelta(seconds=grace_s):
            return Reconciled(receipt, "pending", f"unknown to the wallet but only {age.total_seconds():.0f} s old; "
                                                  "another process may still be sending it")
        done = ledger.fail(receipt.id, "reconciled: the wallet has no record of it, so nothing was paid")
        log.info("reconciled #%s: unknown to the wallet, marked failed", receipt.id)
        return Reconciled(done, "failed", "the wallet never saw it; recorded as failed (budget released)")
    return Reconciled(receipt, "pending", "still in flight at the wallet")


def reconcile(ledger: Ledger, wallet: Wallet, *, grace_s: float = DEFAULT_GRACE_S) -> list[Reconciled]:
    """Reconcile every pending payment made with this wallet (by its name)."""
    out = []
    for receipt in ledger.receipts(status=Status.PENDING):
        if receipt.wallet not in (None, wallet.name):
            out.append(Reconciled(receipt, "skipped", f"paid with wallet {receipt.wallet!r}, not {wallet.name!r}"))
            continue
        out.append(reconcile_one(ledger, wallet, receipt, grace_s=grace_s))
    return out
