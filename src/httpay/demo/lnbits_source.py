"""Let the demo service take its Lightning invoices from a real LNbits wallet.

With it the money path is real software end to end: LNbits issues the invoice, httpay checks
and pays it from another LNbits wallet, and the service credits the account once LNbits says
the invoice is paid (checked when the account next asks for data, as a webhook-less service
would).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from httpay.wallets.lnbits import LNbitsWallet


@dataclass
class LNbitsInvoices:
    """Invoices the service issued through LNbits and the credits each buys once paid."""

    wallet: LNbitsWallet
    pending: dict[str, tuple[str, int]] = field(default_factory=dict)  # payment hash -> (account id, credits)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def create(self, account_id: str, amount_msat: int, description: str, credits: int) -> str:
        import bolt11

        sat = -(-amount_msat // 1000)  # LNbits takes whole sat; round up, never under the price
        invoice = self.wallet.create_invoice(sat, description)
        with self._lock:
            self.pending[bolt11.decode(invoice).payment_hash] = (account_id, credits)
        return invoice

    def collect(self, account_id: str) -> int:
        """Credits bought by this account's invoices that LNbits now reports paid (each counted once)."""
        with self._lock:
            mine = [h for h, (acc, _) in self.pending.items() if acc == account_id]
        bought = 0
        for payment_hash in mine:
            if self.wallet.invoice_paid(payment_hash):
                with self._lock:
                    entry = self.pending.pop(payment_hash, None)
                if entry is not None:
                    bought += entry[1]
        return bought
