"""Wallet adapters: one module per backend."""

from httpay.wallets.base import Payment, PaymentStatus, Wallet

__all__ = ["Payment", "PaymentStatus", "Wallet"]
