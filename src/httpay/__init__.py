"""httpay: an HTTP client that meets 402 Payment Required, pays within limits a person set,
retries, and keeps a truthful record.

    import httpay
    with httpay.Client(wallet=wallet, policy=httpay.Policy(max_per_payment_usd=1, budget_usd=5)) as c:
        r = c.get(url, headers=auth)   # 402 -> pay -> retry, transparently
"""

from __future__ import annotations

import logging
from typing import Any

from httpay.client import AsyncClient, Client
from httpay.core.dialect import Dialect, read_challenge
from httpay.core.events import Event
from httpay.core.flow import receipt_of
from httpay.core.model import Challenge, Money, Quote
from httpay.core.payer import Payer
from httpay.core.transport import AsyncPaymentTransport, PaymentTransport
from httpay.errors import (
    AlreadyPaid,
    ApprovalError,
    ApprovalExpired,
    CallAlreadyPaid,
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
    PaymentIdConflict,
    PaymentNotHonored,
    PaymentOutcomeUnknown,
    PaymentRefused,
    PaymentRejected,
    PaymentRequestError,
    PaymentSentUnanswered,
    PaymentTimeout,
    Permit2AllowanceRequired,
    SessionError,
    UsageError,
    WalletError,
    WalletUnreachable,
)
from httpay.ledger import Ledger, Receipt, open_ledger
from httpay.lightning import Invoice, check_invoice, decode_invoice
from httpay.policy import Policy
from httpay.protocols.l402_v02 import Offer, PaymentOffers, PaymentRequest, parse
from httpay.wallets.base import Payment, Wallet

Decision = Quote  # the name an approver's argument had before quotes: the same object

__version__ = "0.1.0"

# A library says nothing until its user configures logging: a refusal is already the exception raised,
# and Python's last-resort handler would print it on stderr a second time.
logging.getLogger("httpay").addHandler(logging.NullHandler())

__all__ = [
    "AlreadyPaid",
    "ApprovalError",
    "ApprovalExpired",
    "ApprovalQueue",
    "AsyncClient",
    "AsyncMppSession",
    "AsyncPaymentTransport",
    "AsyncToolbox",
    "CallAlreadyPaid",
    "Challenge",
    "ChallengeError",
    "ChallengeInFlight",
    "Client",
    "ConfigError",
    "Decision",
    "DemoWallet",
    "Dialect",
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
    "Money",
    "MppSession",
    "NWCWallet",
    "Offer",
    "PaidRequestFailed",
    "Payer",
    "Payment",
    "PaymentDeadlineExceeded",
    "PaymentIdConflict",
    "PaymentNotHonored",
    "PaymentOffers",
    "PaymentOutcomeUnknown",
    "PaymentRefused",
    "PaymentRejected",
    "PaymentRequest",
    "PaymentRequestError",
    "PaymentSentUnanswered",
    "PaymentTimeout",
    "PaymentTransport",
    "Permit2AllowanceRequired",
    "Policy",
    "Quote",
    "Receipt",
    "SessionError",
    "Toolbox",
    "UsageError",
    "Wallet",
    "WalletError",
    "WalletUnreachable",
    "check_invoice",
    "decode_invoice",
    "open_ledger",
    "parse",
    "read_challenge",
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
    "NWCWallet": "httpay.wallets.nwc",
    "wallet_from_env": "httpay.config",
    "EvmSigner": "httpay.signers",
    "ApprovalQueue": "httpay.apps.approvals",
    "Toolbox": "httpay.apps.agent.tools",
    "AsyncToolbox": "httpay.apps.agent.tools",
    "MppSession": "httpay.dialects.mpp_session",
    "AsyncMppSession": "httpay.dialects.mpp_session",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'httpay' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
