"""httpay: an HTTP client that meets 402 Payment Required, pays within limits a person set,
retries, and keeps a truthful record.

    import httpay
    with httpay.Client(wallet=wallet, policy=httpay.Policy(max_per_payment_usd=1, budget_usd=5)) as c:
        r = c.get(url, headers=auth)   # 402 -> pay -> retry, transparently
"""

from __future__ import annotations

from typing import Any

from httpay.client import AsyncClient, Client
from httpay.errors import (
    AlreadyPaid,
    ApprovalError,
    ChallengeError,
    ChallengeInFlight,
    ConfigError,
    DuplicatePayment,
    HttpayError,
    InsufficientFunds,
    InvoiceError,
    LedgerError,
    LoopbackOnly,
    PaidRequestFailed,
    PaymentDeadlineExceeded,
    PaymentRefused,
    PaymentRequestError,
    PaymentTimeout,
    UsageError,
    WalletError,
)
from httpay.events import Event
from httpay.ledger import Ledger, Receipt, open_ledger
from httpay.lightning import Invoice, check_invoice, decode_invoice
from httpay.pipeline import PaymentNotHonored, PaymentOutcomeUnknown, receipt_of
from httpay.policy import Decision, Policy
from httpay.protocols.l402_v02 import Offer, PaymentOffers, PaymentRequest, parse
from httpay.transport import AsyncPaymentTransport, PaymentTransport
from httpay.wallets.base import Payment, Wallet

__version__ = "0.1.0"

__all__ = [
    "AlreadyPaid",
    "ApprovalError",
    "ApprovalQueue",
    "AsyncClient",
    "AsyncPaymentTransport",
    "ChallengeError",
    "ChallengeInFlight",
    "Client",
    "ConfigError",
    "Decision",
    "DemoWallet",
    "DuplicatePayment",
    "Event",
    "EvmSigner",
    "FewsatsWallet",
    "HttpayError",
    "InsufficientFunds",
    "Invoice",
    "InvoiceError",
    "LNDWallet",
    "LNbitsWallet",
    "Ledger",
    "LedgerError",
    "LightsparkWallet",
    "LoopbackOnly",
    "Offer",
    "PaidRequestFailed",
    "Payment",
    "PaymentDeadlineExceeded",
    "PaymentNotHonored",
    "PaymentOffers",
    "PaymentOutcomeUnknown",
    "PaymentRefused",
    "PaymentRejected",
    "PaymentRequest",
    "PaymentRequestError",
    "PaymentTimeout",
    "PaymentTransport",
    "Policy",
    "Receipt",
    "UsageError",
    "Wallet",
    "WalletError",
    "check_invoice",
    "decode_invoice",
    "open_ledger",
    "parse",
    "receipt_of",
    "wallet_from_env",
]


# Wallet adapters and optional parts load on first use, so importing httpay stays light.
_LAZY = {
    "DemoWallet": "httpay.wallets.demo",
    "LNbitsWallet": "httpay.wallets.lnbits",
    "LNDWallet": "httpay.wallets.lnd",
    "LightsparkWallet": "httpay.wallets.lightspark",
    "FewsatsWallet": "httpay.wallets.fewsats",
    "wallet_from_env": "httpay.config",
    "EvmSigner": "httpay.signers",
    "PaymentRejected": "httpay.x402_pay",
    "ApprovalQueue": "httpay.approvals",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'httpay' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
