"""The demo service's memory: accounts with credits, checkout pages, offers and the demo network.

Kept apart from the HTTP layer so tests can read and poke it (`app.state.demo`). All stores are
thread-safe; the server and tests may touch them from different threads.
"""

from __future__ import annotations

import copy
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from email.utils import formatdate
from typing import Any

from httpay.demo.network import DemoNetwork

DEFAULT_OFFERS: list[dict[str, Any]] = [
    {
        "offer_id": "offer_c668e0c0",
        "title": "1 Credit Package",
        "description": "Purchase 1 credit for API access",
        "type": "top-up",
        "balance": 1,
        "amount": 1,
        "currency": "USD",
        "payment_methods": ["lightning"],
    },
    {
        "offer_id": "offer_97bf23f7",
        "title": "120 Credits Package",
        "description": "Purchase 120 credits for API access",
        "type": "top-up",
        "balance": 120,
        "amount": 100,
        "currency": "USD",
        "payment_methods": ["lightning", "coinbase_commerce"],
    },
    {
        "offer_id": "offer_a896b13c",
        "title": "750 Credits Package",
        "description": "Purchase 750 credits for API access",
        "type": "top-up",
        "balance": 750,
        "amount": 499,
        "currency": "USD",
        "payment_methods": ["lightning", "coinbase_commerce", "credit_card"],
    },
]


def http_date() -> str:
    """Now as an RFC 1123 date ("Thu, 19 Dec 2024 11:23:42 GMT"), the format the reference service uses."""
    return formatdate(usegmt=True)


@dataclass
class Account:
    """A signed-up user: the id doubles as bearer token and as the L402 payment context token."""

    id: str
    credits: int
    created_at: str
    last_credit_update_at: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "credits": self.credits,
            "created_at": self.created_at,
            "last_credit_update_at": self.last_credit_update_at,
        }


class AccountStore:
    """Accounts and their credits; spending and crediting are atomic."""

    def __init__(self, free_credits: int = 1) -> None:
        self._free_credits = free_credits
        self._lock = threading.Lock()
        self._accounts: dict[str, Account] = {}

    @property
    def free_credits(self) -> int:
        """Credits every new account starts with."""
        return self._free_credits

    def create(self) -> Account:
        now = http_date()
        account = Account(id=str(uuid.uuid4()), credits=self._free_credits, created_at=now, last_credit_update_at=now)
        with self._lock:
            self._accounts[account.id] = account
            return copy.copy(account)

    def get(self, account_id: str | None) -> Account | None:
        """A snapshot of the account, or None when the id names none."""
        with self._lock:
            account = self._accounts.get(account_id or "")
            return copy.copy(account) if account else None

    def spend_one(self, account_id: str) -> bool:
        """Take one credit if there is one; False (and nothing taken) when the account is empty."""
        with self._lock:
            account = self._accounts[account_id]
            if account.credits < 1:
                return False
            account.credits -= 1
            account.last_credit_update_at = http_date()
            return True

    def add_credits(self, account_id: str, credits: int) -> None:
        with self._lock:
            account = self._accounts[account_id]
            account.credits += credits
            account.last_credit_update_at = http_date()


@dataclass
class Checkout:
    """A hosted payment page (credit card, Coinbase Commerce, on-chain) a person completes with one click."""

    id: str
    account_id: str
    offer: dict[str, Any]
    method: str
    paid: bool = False


class CheckoutStore:
    """Checkout pages; paying one credits its account exactly once."""

    def __init__(self, accounts: AccountStore) -> None:
        self._accounts = accounts
        self._lock = threading.Lock()
        self._checkouts: dict[str, Checkout] = {}

    def create(self, account_id: str, offer: dict[str, Any], method: str) -> Checkout:
        checkout = Checkout(id=secrets.token_urlsafe(12), account_id=account_id, offer=offer, method=method)
        with self._lock:
            self._checkouts[checkout.id] = checkout
        return checkout

    def get(self, checkout_id: str) -> Checkout | None:
        with self._lock:
            found = self._checkouts.get(checkout_id)
            return copy.copy(found) if found else None

    def pay(self, checkout_id: str) -> bool | None:
        """Mark paid and credit the account. True if this call paid it, False if it was paid before,
        None if there is no such checkout.
        """
        with self._lock:
            checkout = self._checkouts.get(checkout_id)
            if checkout is None:
                return None
            if checkout.paid:
                return False
            checkout.paid = True
        self._accounts.add_credits(checkout.account_id, int(checkout.offer["balance"]))
        return True


# Given the offer and the correctly converted price, return the msat to put in the invoice
# (None for an amount-less invoice). Lets client tests meet a server that overcharges.
InvoiceTamper = Callable[[dict[str, Any], int], "int | None"]


@dataclass
class DemoState:
    """Everything the demo service knows, reachable as `app.state.demo`."""

    offers: list[dict[str, Any]]
    usd_per_btc: float
    invoice_expiry_s: int
    accounts: AccountStore
    network: DemoNetwork = field(default_factory=DemoNetwork)
    checkouts: CheckoutStore = None  # type: ignore[assignment]  # made in __post_init__ from the accounts
    invoice_tamper: InvoiceTamper | None = None
    payment_request_url: str | None = None  # tests: name another host in the 402 (a client must refuse it)
    lnbits: Any = None  # an httpay.demo.lnbits_source.LNbitsInvoices: take invoices from LNbits instead

    def __post_init__(self) -> None:
        if self.checkouts is None:
            self.checkouts = CheckoutStore(self.accounts)

    def offer(self, offer_id: str) -> dict[str, Any] | None:
        return next((o for o in self.offers if o.get("offer_id") == offer_id), None)


_SATS_CURRENCIES = {"SAT", "SATS", "BTC"}  # amounts in these are whole satoshis (the smallest unit)


def price_msat(offer: dict[str, Any], usd_per_btc: float) -> int:
    """The offer's price in millisatoshis: USD cents at the service's own rate, or satoshis as is.

    1 cent at 100,000 USD/BTC is 10 sat = 10,000 msat. Raises ValueError for other currencies.
    """
    amount = Decimal(int(offer["amount"]))
    currency = str(offer.get("currency", "")).upper()
    if currency == "USD":
        return int((amount * Decimal(10) ** 9 / Decimal(str(usd_per_btc))).to_integral_value())
    if currency in _SATS_CURRENCIES:
        return int(amount) * 1000
    raise ValueError(f"the demo cannot price {currency or 'an unnamed currency'} in bitcoin")
