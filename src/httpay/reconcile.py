"""Reconciliation: settle the truth about payments left `pending` by a crash or a lost answer.

A pending row means the wallet may have paid. It is never paid again blindly: the wallet is
asked about the payment hash. Settled there -> settled here (with the preimage); unknown there
and old enough that no other process can still be sending it -> failed (nothing left the
wallet); still in flight there -> stays pending.

Only the wallet that made a payment can tell: another wallet, even of the same kind, has never
heard of it, and reading its silence as "not paid" would write off money that really left. So a
payment is reconciled only through the wallet whose identity (`Wallet.identity`) is on its row;
any other leaves it pending, counted in every budget, and says which wallet can settle it. Ages
are measured on the ledger's clock, never this machine's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from httpay.errors import WalletError
from httpay.ledger import Ledger, Receipt, Status
from httpay.safe import get_logger
from httpay.wallets.base import PaymentStatus, Wallet

log = get_logger("httpay.reconcile")

DEFAULT_GRACE_S = 120.0


@dataclass(frozen=True)
class Reconciled:
    """What reconciling one pending payment found."""

    receipt: Receipt
    outcome: str  # "settled", "failed", "pending", "skipped", "other_wallet" (stays pending and counted)
    detail: str

    def __str__(self) -> str:
        return f"#{self.receipt.id} {self.outcome}: {self.detail}"


def who_paid(receipt: Receipt) -> str:
    """The wallet that made a payment, as a person can find it: its kind and identity."""
    if receipt.wallet_id:
        return f"the {receipt.wallet or 'unknown'} wallet {receipt.wallet_id}"
    return f"a {receipt.wallet} wallet of unrecorded identity" if receipt.wallet else "the wallet that made it (not recorded)"


def owns(wallet: Wallet, receipt: Receipt) -> bool:
    """True when `wallet` made this payment, so its silence about it means something.

    A row with an identity belongs to the wallet with that identity only. A row without one (made
    before identities, or by an adapter that has none) belongs only to an adapter that has none
    either, of the same kind: the one case where "the only wallet of its kind" is all anyone knows."""
    if receipt.wallet_id is not None:
        return wallet.identity == receipt.wallet_id
    return wallet.identity is None and receipt.wallet in (None, wallet.name)


def reconcile_one(ledger: Ledger, wallet: Wallet, receipt: Receipt, *, grace_s: float = DEFAULT_GRACE_S) -> Reconciled:
    """Ask the wallet about one pending payment and record the answer, if this wallet made it."""
    if receipt.status is not Status.PENDING:
        return Reconciled(receipt, receipt.status.value, "not pending")
    if not receipt.payment_hash:
        return Reconciled(receipt, "skipped", "no payment hash to look up")
    if not owns(wallet, receipt):
        return _not_mine(ledger, wallet, receipt)
    try:
        found = wallet.lookup(receipt.payment_hash)
    except NotImplementedError:
        return Reconciled(receipt, "skipped", f"{wallet.name} cannot look payments up; check the wallet by hand")
    except WalletError as exc:
        return Reconciled(receipt, "pending", f"wallet lookup failed: {exc}")
    if found is not None and found.status is PaymentStatus.SETTLED and found.proves(receipt.payment_hash):
        restored = _restored(ledger, receipt, found.preimage or "")
        done = ledger.settle(receipt.id, preimage=found.preimage or "", fee_msat=found.fee_msat,
                             amount_msat=found.amount_msat or receipt.amount_msat)
        log.info("reconciled #%s: settled at the wallet", receipt.id)
        return Reconciled(done, "settled", "the wallet paid it; recorded as settled" + restored)
    if found is not None and found.status is PaymentStatus.FAILED:
        done = ledger.fail(receipt.id, f"reconciled: the wallet reports failure ({found.failure_reason or 'no reason'})")
        return Reconciled(done, "failed", "the wallet reports the payment failed")
    if found is None:
        age = ledger.now() - receipt.updated_at  # the ledger's clock: the one every process stamps with
        if age < timedelta(seconds=grace_s):
            return Reconciled(receipt, "pending", f"unknown to the wallet but only {age.total_seconds():.0f} s old; "
                                                  "another process may still be sending it")
        done = ledger.fail(receipt.id, "reconciled: the wallet has no record of it, so nothing was paid")
        log.info("reconciled #%s: unknown to the wallet, marked failed", receipt.id)
        return Reconciled(done, "failed", "the wallet never saw it; recorded as failed (budget released)")
    return Reconciled(receipt, "pending", "still in flight at the wallet")


def _restored(ledger: Ledger, pending: Receipt, preimage: str) -> str:
    """The token the payment bought, stored again if a crash lost it (before the row is settled,
    which forgets it): the next request presents it instead of paying again."""
    try:
        return "; the token it bought is held again" if ledger.restore_token(pending.id, preimage) else ""
    except Exception as exc:  # noqa: BLE001 - the settlement stands whatever restoring the token did
        log.warning("reconciled #%s: could not restore its token (%s)", pending.id, type(exc).__name__)
        return ""


def _not_mine(ledger: Ledger, wallet: Wallet, receipt: Receipt) -> Reconciled:
    """Another wallet's pending payment: settle it only on proof, never write it off; say who can.
    Asked all the same: the wallet that made it, reached at another address (`localhost` for
    `127.0.0.1`, a proxy), has another identity, and its proof of payment is proof whoever asks."""
    mine = f"this client holds the {wallet.name} wallet {wallet.identity or '(no identity)'}"
    try:
        found = wallet.lookup(receipt.payment_hash or "")
    except (NotImplementedError, WalletError):
        found = None
    if found is not None and found.status is PaymentStatus.SETTLED and found.proves(receipt.payment_hash or ""):
        restored = _restored(ledger, receipt, found.preimage or "")
        done = ledger.settle(receipt.id, preimage=found.preimage or "", fee_msat=found.fee_msat,
                             amount_msat=found.amount_msat or receipt.amount_msat)
        return Reconciled(done, "settled", "this wallet proves it paid it; recorded as settled" + restored)
    detail = (f"paid with {who_paid(receipt)}; {mine}, which holds no proof of it, so it stays pending and counted in the "
              f"budget. Only that wallet can settle it: run `httpay ledger reconcile` with HTTPAY_WALLET set to it")
    log.warning("payment #%s is pending and was made with %s, not this client's wallet; left pending and counted",
                receipt.id, who_paid(receipt))
    return Reconciled(receipt, "other_wallet", detail)


def reconcile(ledger: Ledger, wallet: Wallet, *, grace_s: float = DEFAULT_GRACE_S) -> list[Reconciled]:
    """Reconcile every pending payment; those another wallet made stay pending (outcome "other_wallet")."""
    return [reconcile_one(ledger, wallet, receipt, grace_s=grace_s)
            for receipt in ledger.pending()]
