"""A tiny in-memory Lightning network for the demo: one node that issues invoices, and wallets that pay them.

Nothing here moves real money. The invoices are still real, signed BOLT11 strings (regtest,
prefix `lnbcrt`) with a random preimage each, so a client exercises the same decoding and
proof checks (sha256(preimage) == payment_hash) it would against a real node. Every method is
thread-safe: the demo server and test threads share one network.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import bolt11
from bolt11 import Bolt11, MilliSatoshi, TagChar, Tags
from coincurve import PrivateKey

CURRENCY = "bcrt"
NETWORK_NAME = "regtest"
DEFAULT_EXPIRY_S = 3600


class LightningError(Exception):
    """A payment the network refuses. `code` is machine-readable, `status` the HTTP status to answer."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass
class InvoiceRecord:
    """What the node remembers about an invoice it issued; `on_settle` runs once when it is paid."""

    bolt11: str
    payment_hash: str
    preimage: str = field(repr=False)
    amount_msat: int | None
    description: str
    created_at: int
    expiry: int
    on_settle: Callable[[InvoiceRecord], None] | None = field(default=None, repr=False)
    paid_by: str | None = None
    settled_at: float | None = None
    payee: str | None = None  # the wallet credited when it is paid (a wallet's own invoice), None for the node
    paid_msat: int | None = None  # what was paid (an amount-less invoice is paid with the amount the payer names)

    @property
    def expires_at(self) -> int:
        return self.created_at + self.expiry

    @property
    def settled(self) -> bool:
        return self.paid_by is not None


@dataclass(frozen=True)
class PaymentRecord:
    """An outgoing payment a wallet made (always settled: the demo network has no in-flight state)."""

    payment_hash: str
    preimage: str = field(repr=False)
    amount_msat: int
    fee_msat: int = 0
    status: str = "settled"

    def as_json(self) -> dict[str, object]:
        return {
            "payment_hash": self.payment_hash,
            "preimage": self.preimage,
            "amount_msat": self.amount_msat,
            "fee_msat": self.fee_msat,
            "status": self.status,
        }


@dataclass
class WalletRecord:
    """A demo wallet: a balance, a secret bearer key and the payments it made."""

    wallet_id: str
    key: str = field(repr=False)
    balance_msat: int
    payments: dict[str, PaymentRecord] = field(default_factory=dict, repr=False)


class DemoNetwork:
    """One demo node plus the wallets that pay it.

    `clock` returns unix seconds; tests may pass a fake one instead of sleeping.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, private_key: PrivateKey | None = None) -> None:
        self._key = private_key or PrivateKey()
        self.pubkey: str = self._key.public_key.format(compressed=True).hex()
        self._clock = clock
        self._lock = threading.RLock()
        self._invoices: dict[str, InvoiceRecord] = {}
        self._wallets: dict[str, WalletRecord] = {}
        self._wallet_by_key: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"DemoNetwork(pubkey={self.pubkey[:16]}…, invoices={len(self._invoices)}, wallets={len(self._wallets)})"

    # -- invoices -----------------------------------------------------------------------------

    def create_invoice(
        self,
        amount_msat: int | None,
        description: str,
        *,
        expiry: int = DEFAULT_EXPIRY_S,
        date: int | None = None,
        currency: str = CURRENCY,
        on_settle: Callable[[InvoiceRecord], None] | None = None,
        payee: str | None = None,
    ) -> InvoiceRecord:
        """Issue a signed invoice. Tests use the odd knobs: `amount_msat=None` (no amount), a `date`
        in the past (already expired), another `currency` ("bc" gives a mainnet `lnbc` invoice).
        `payee` (a wallet id) makes it that wallet's invoice: paying it credits the wallet (MPP
        session refunds go to such a return invoice).
        """
        if amount_msat is not None and amount_msat <= 0:
            raise ValueError("amount_msat must be positive (or None for an amount-less invoice)")
        preimage = secrets.token_bytes(32)
        payment_hash = hashlib.sha256(preimage).hexdigest()
        created = int(self._clock()) if date is None else int(date)
        encoded = self._sign(payment_hash, amount_msat, description, expiry, created, currency)
        record = InvoiceRecord(
            bolt11=encoded,
            payment_hash=payment_hash,
            preimage=preimage.hex(),
            amount_msat=amount_msat,
            description=description,
            created_at=created,
            expiry=expiry,
            on_settle=on_settle,
            payee=payee,
        )
        with self._lock:
            if payee is not None and payee not in self._wallets:
                raise LightningError("unauthorized", "no such wallet to receive the payment", 401)
            self._invoices[payment_hash] = record
        return record

    def _sign(self, payment_hash: str, amount_msat: int | None, description: str, expiry: int, date: int, currency: str) -> str:
        tags = Tags()
        tags.add(TagChar.payment_hash, payment_hash)
        tags.add(TagChar.payment_secret, secrets.token_hex(32))
        tags.add(TagChar.description, description)
        tags.add(TagChar.expire_time, expiry)
        amount = MilliSatoshi(amount_msat) if amount_msat is not None else None
        invoice = Bolt11(currency=currency, date=date, tags=tags, amount_msat=amount)
        encoded: str = bolt11.encode(invoice, self._key.to_hex())
        return encoded

    def invoice(self, payment_hash: str) -> InvoiceRecord | None:
        """The node's record of an invoice it issued (for tests and the server's own bookkeeping)."""
        with self._lock:
            return self._invoices.get(payment_hash.lower())

    # -- wallets ------------------------------------------------------------------------------

    def create_wallet(self, balance_sat: int = 10_000) -> WalletRecord:
        """Open a funded wallet. The returned record holds the secret key: hand it only to its owner."""
        if balance_sat < 0:
            raise ValueError("balance_sat must not be negative")
        record = WalletRecord(wallet_id=uuid.uuid4().hex, key=secrets.token_hex(16), balance_msat=balance_sat * 1000)
        with self._lock:
            self._wallets[record.wallet_id] = record
            self._wallet_by_key[record.key] = record.wallet_id
        return record

    def wallet_for_key(self, key: str | None) -> WalletRecord:
        """The wallet a bearer key opens; LightningError("unauthorized") for any other key."""
        with self._lock:
            wallet_id = self._wallet_by_key.get(key or "")
            if wallet_id is None:
                raise LightningError("unauthorized", "unknown or missing wallet key", 401)
            return self._wallets[wallet_id]

    def balance_msat(self, key: str) -> int:
        with self._lock:
            return self.wallet_for_key(key).balance_msat

    def received(self, key: str, payment_hash: str) -> InvoiceRecord | None:
        """This wallet's own invoice (what was paid to it), or None: another's invoices stay private."""
        with self._lock:
            wallet = self.wallet_for_key(key)
            record = self._invoices.get(payment_hash.lower())
            return record if record is not None and record.payee == wallet.wallet_id else None

    def lookup(self, key: str, payment_hash: str) -> PaymentRecord | None:
        """A payment this wallet made, or None (other wallets' payments stay private)."""
        with self._lock:
            return self.wallet_for_key(key).payments.get(payment_hash.lower())

    # -- paying -------------------------------------------------------------------------------

    def pay(self, key: str, invoice: str, *, max_fee_msat: int | None = None,
            amount_msat: int | None = None) -> PaymentRecord:
        """Pay an invoice this node issued, all or nothing, then run its settle hook once.

        Raises LightningError with the codes the HTTP API documents. Routing is free here, so
        `max_fee_msat` only has to be non-negative. `amount_msat` pays an amount-less invoice.
        """
        if max_fee_msat is not None and max_fee_msat < 0:
            raise LightningError("bad_request", "max_fee_msat must not be negative")
        with self._lock:
            wallet = self.wallet_for_key(key)
            record = self._check_payable(invoice, amount_msat)
            amount = record.amount_msat or amount_msat
            assert amount is not None  # _check_payable refuses amount-less invoices paid without an amount
            if wallet.balance_msat < amount:
                raise LightningError(
                    "insufficient_funds",
                    f"wallet holds {wallet.balance_msat} msat, invoice asks {amount} msat",
                )
            wallet.balance_msat -= amount
            self._settle(record, wallet.wallet_id, amount)
            payment = PaymentRecord(payment_hash=record.payment_hash, preimage=record.preimage, amount_msat=amount)
            wallet.payments[record.payment_hash] = payment
        # The hook runs outside the lock so it may take its own locks (the account store's).
        if record.on_settle is not None:
            record.on_settle(record)
        return payment

    def pay_out(self, invoice: str, amount_msat: int) -> PaymentRecord:
        """The node itself pays a wallet's invoice (an MPP session's refund to its return invoice): out of
        what the node collected, so no wallet is debited; the payee wallet is credited."""
        if amount_msat <= 0:
            raise LightningError("bad_request", "amount_msat must be positive")
        with self._lock:
            record = self._check_payable(invoice, amount_msat)
            if record.payee is None:
                raise LightningError("invoice_invalid", "the node does not pay its own invoices")
            amount = record.amount_msat or amount_msat
            self._settle(record, "node", amount)
            payment = PaymentRecord(payment_hash=record.payment_hash, preimage=record.preimage, amount_msat=amount)
        if record.on_settle is not None:
            record.on_settle(record)
        return payment

    def _settle(self, record: InvoiceRecord, paid_by: str, amount_msat: int) -> None:
        """Mark paid (under the lock) and credit the wallet whose invoice it is."""
        record.paid_by = paid_by
        record.paid_msat = amount_msat
        record.settled_at = self._clock()
        if record.payee is not None:
            self._wallets[record.payee].balance_msat += amount_msat

    def _check_payable(self, invoice: str, amount_msat: int | None = None) -> InvoiceRecord:
        """The node's record for `invoice` if it can be paid now; otherwise the reason as LightningError."""
        decoded = _decode(invoice)
        if decoded.currency != CURRENCY:
            raise LightningError("invoice_invalid", f"invoice is for network '{decoded.currency}', this demo network is regtest ('bcrt')")
        record = self._invoices.get(decoded.payment_hash) if decoded.payee == self.pubkey else None
        if record is None:
            raise LightningError("invoice_invalid", "invoice was not issued by this demo network")
        if (decoded.amount_msat is None or record.amount_msat is None) and not amount_msat:
            raise LightningError("amount_missing", "invoice has no amount; name the amount to pay (amount_msat)")
        if record.amount_msat is not None and amount_msat is not None and amount_msat != record.amount_msat:
            raise LightningError("bad_request", "amount_msat differs from the invoice's amount")
        if record.settled:
            raise LightningError("already_paid", "invoice was already paid", 409)
        if self._clock() >= record.expires_at:
            raise LightningError("invoice_expired", "invoice has expired")
        return record


def _decode(invoice: object) -> Bolt11:
    """Decode a BOLT11 string, turning any parse failure into LightningError("invoice_invalid")."""
    if not isinstance(invoice, str) or not invoice.strip():
        raise LightningError("invoice_invalid", "invoice must be a non-empty BOLT11 string")
    try:
        return bolt11.decode(invoice.strip())
    except Exception as exc:  # noqa: BLE001 - bolt11 raises many unrelated types on bad input
        raise LightningError("invoice_invalid", f"invoice is not valid BOLT11 ({type(exc).__name__})") from None
