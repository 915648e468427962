"""The payment flow's scenario table (issue 11): every dialect x every outcome, through both drivers.

Each row runs the real `request_flow` through the real drivers (`_drive_sync`, `_drive_async`)
against a scripted in-memory service (an `httpx.MockTransport`: no socket anywhere), with real
signed BOLT11 invoices, real macaroons and a real EVM signer, a scripted wallet and a fresh SQLite
ledger. A row says what a user notices: the status or the exception (and its `rule` / `check`),
how often the wallet or signer was called, the ledger rows it wrote (status, amount), what was
spent (`ledger.spent_msat()`, fees included) and, for paid rows, the typed events in order.

`test_flow_is_pure` drives the flow with a driver of its own that answers each effect from a
script and never touches a ledger, wallet or network: the flow asks for every outside call.

`DEFECT_ROWS` are rows of the table with one more expectation each, for a defect this table found
in the core (now fixed): `defect` says what it was, so the row guards against its return.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

import httpay
from httpay.core.effects import (
    Beside,
    CallAnswered,
    CallKey,
    Effect,
    Find,
    GetRate,
    Join,
    Leave,
    LedgerNow,
    Note,
    Outcome,
    Pay,
    ReadBody,
    RecordCall,
    Reserve,
    SaveToken,
    Send,
    Settle,
    Sign,
    TokenFor,
)
from httpay.core.events import Approved, Event, Paid, Quoted, Refused
from httpay.core.flow import receipt_of, request_flow
from httpay.core.payer import Payer
from httpay.core.rates import Rate
from httpay.core.transport import _AsyncFlights, _drive_async, _drive_sync, _SyncFlights
from httpay.errors import (
    InsufficientFunds,
    InvoiceError,
    PaymentNotHonored,
    PaymentOutcomeUnknown,
    PaymentRefused,
    PaymentRejected,
    PaymentRequestError,
    PaymentSentUnanswered,
    WalletError,
)
from httpay.ledger.base import Call, Intent, Ledger
from httpay.ledger.models import Receipt, Status
from httpay.policy import Policy
from httpay.protocols import macaroons
from httpay.signers import EvmSigner
from httpay.wallets.base import Payment, PaymentStatus, Wallet
from tests.helpers import make_invoice
from tests.hostile.harness import X402_KEY, x402_requirement

V02, CLASSIC, X402 = "l402-v0.2", "l402-classic", "x402"
URLS = {V02: "https://v02.example/data", CLASSIC: "https://classic.example/data", X402: "https://x402.example/data"}
RATE = 100_000.0      # USD per BTC: $0.01 = 10 sat = 10,000 msat
FEE_MSAT = 1_000      # what the scripted wallet spends on routing fees
FEE_CAP_MSAT = 10_000  # the fee cap the ledger holds for a pending payment of 10 sat (the wallet default: 10 sat)
PRIOR_MSAT = 20_000   # a payment made earlier this hour, for the budget rows
ROOT_KEY = hashlib.sha256(b"scenario macaroon root").digest()

# The offers each service makes: (offer id, price in msat at RATE). v0.2 prices them in USD cents,
# x402 in USDC atomic units (6 decimals), classic has one offer: its invoice's.
V02_OFFERS = (("small", 1, 10_000), ("big", 2, 20_000))   # (id, USD cents, msat)
X402_OFFERS = (("10000", 10_000), ("20000", 20_000))       # (atomic USDC, msat)


# -- the scripted parts -------------------------------------------------------------------------
class Node:
    """The services' Lightning node: real signed regtest invoices, the preimages it knows, what was paid."""

    def __init__(self) -> None:
        self.preimages: dict[str, str] = {}
        self.paid: list[str] = []

    def mint(self, amount_msat: int | None, kind: str = "ok") -> tuple[str, str]:
        """(bolt11, payment hash); `kind` makes it bad: "wrong_network", "expired", "no_amount"."""
        network = "bitcoin" if kind == "wrong_network" else "regtest"
        date = int(time.time()) - 3_600 if kind == "expired" else None  # expired 50 minutes ago
        bolt11, pre = make_invoice(None if kind == "no_amount" else amount_msat, network=network, expiry=600,
                                   date=date, description="scenario")
        payment_hash = hashlib.sha256(bytes.fromhex(pre)).hexdigest()
        self.preimages[payment_hash] = pre
        return bolt11, payment_hash


class ScriptedWallet(Wallet):
    """Pays the node's invoices, or does what its row says, counting calls. Behaviours: "ok"; "fails"
    (raises, outcome known: nothing left); "unknown" (raises, outcome unknown; lookup cannot tell);
    "unknown_paid" (raises, outcome unknown; lookup finds it paid); "bug" / "bug_paid" / "bug_blind"
    (raises a plain ConnectionResetError; lookup cannot tell / finds it paid / raises too); "says_failed" / "says_pending"
    (answers a failed / in-flight payment); "bad_preimage" (says paid, with a preimage of another hash)."""

    network = "regtest"
    name = "scripted"

    def __init__(self, node: Node, behaviour: str = "ok") -> None:
        self.node, self.behaviour = node, behaviour
        self.calls: list[str] = []
        self.amounts: dict[str, int | None] = {}  # payment hash -> amount, of the invoices it was asked to pay
        self.lookups = 0

    def _paid(self, payment_hash: str, amount_msat: int | None) -> Payment:
        self.node.paid.append(payment_hash)
        return Payment(payment_hash, PaymentStatus.SETTLED, amount_msat=amount_msat, fee_msat=FEE_MSAT,
                       preimage=self.node.preimages[payment_hash])

    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Payment:
        invoice = httpay.decode_invoice(bolt11)
        self.calls.append(invoice.payment_hash)
        self.amounts[invoice.payment_hash] = invoice.amount_msat
        if self.behaviour == "fails":
            raise InsufficientFunds("the wallet holds 0 sat")
        if self.behaviour in ("unknown", "unknown_paid"):
            raise WalletError("the wallet's node stopped answering", outcome_known=False)
        if self.behaviour in ("bug", "bug_paid", "bug_blind"):  # an adapter's own failure, not a WalletError
            if self.behaviour == "bug_paid":
                self.node.paid.append(invoice.payment_hash)
            raise ConnectionResetError("reset after sending the payment")
        if self.behaviour == "says_failed":
            return Payment(invoice.payment_hash, PaymentStatus.FAILED, failure_reason="no route")
        if self.behaviour == "says_pending":
            return Payment(invoice.payment_hash, PaymentStatus.PENDING)
        if self.behaviour == "bad_preimage":
            return Payment(invoice.payment_hash, PaymentStatus.SETTLED, amount_msat=invoice.amount_msat,
                           fee_msat=FEE_MSAT, preimage="00" * 32)
        return self._paid(invoice.payment_hash, invoice.amount_msat)

    def lookup(self, payment_hash: str) -> Payment | None:
        self.lookups += 1
        if self.behaviour == "bug_blind":  # the wallet went down: its lookup fails in its own way too
            raise ConnectionResetError("reset while looking it up")
        if self.behaviour in ("unknown_paid", "bug_paid"):
            return self._paid(payment_hash, self.amounts[payment_hash])  # it did go out
        return None  # it cannot tell


class AsyncScriptedWallet(ScriptedWallet):
    """The same wallet with an awaitable pay (as an async-native adapter has): the async driver awaits it."""

    awaited = 0

    async def apay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Payment:
        self.awaited += 1
        await asyncio.sleep(0)
        return self.pay_invoice(bolt11, max_fee_msat=max_fee_msat)


class ScriptedSigner:
    """A real `EvmSigner`, counting what it signs; "fails" makes it refuse to sign, "elsewhere" sets
    it to pay on Base mainnet only (the services ask on Base Sepolia)."""

    def __init__(self, behaviour: str = "ok") -> None:
        self.inner = EvmSigner.from_key(X402_KEY, networks=["eip155:8453"] if behaviour == "elsewhere" else None)
        self.behaviour = behaviour
        self.signed: list[dict[str, Any]] = []

    @property
    def address(self) -> str:
        return self.inner.address

    @property
    def name(self) -> str:
        return self.inner.name

    def pays_on(self, network: str) -> bool:
        return self.inner.pays_on(network)

    def sign_typed_data(self, domain: Any, types: Any, primary_type: str, message: Any) -> bytes:
        self.signed.append(dict(message))
        if self.behaviour == "fails":
            raise WalletError("the signer's hardware key is locked")
        return self.inner.sign_typed_data(domain, types, primary_type, message)


def b64json(data: Any) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


@dataclass
class Service:
    """A scripted 402 service of one dialect, as an httpx.MockTransport handler.

    `invoice`: what it asks to be paid ("ok"; invoices: "wrong_amount", "wrong_network", "expired",
    "no_amount"; v0.2: "sold_out", its payment request refused; classic: "other_hash", the macaroon
    commits to a hash its invoice does not pay; x402: "unknown_asset", a token of unknown worth);
    `answer`: what it does with a paid request ("serve", "402": still asks to be paid, "402_settled":
    x402's settlement receipt on a 402, "drop": the connection drops with no answer); `pay_host`:
    where v0.2's payment request endpoint is. It serves only what was paid: a v0.2 invoice its node
    saw paid, a classic credential whose preimage opens its macaroon's hash, an x402 authorization
    signed (EIP-712, recovered here) for one of its requirements exactly.
    """

    dialect: str
    node: Node
    invoice: str = "ok"
    answer: str = "serve"
    pay_host: str | None = None
    payment_requests: list[str] = field(default_factory=list)  # v0.2: the offer ids asked for
    used: set[str] = field(default_factory=set)                # v0.2: paid hashes a request was served for
    paid_values: list[int] = field(default_factory=list)       # x402: the authorized amounts received
    served: int = 0
    keys: list[str] = field(default_factory=list)              # the Idempotency-Keys of paid requests received
    answers: dict[str, httpx.Response] = field(default_factory=dict)  # x402: payload -> the answer it got (replayed)
    dropped: int = 0                                           # paid answers lost on the way ("drop_once")

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.dialect == V02:
            return self.v02(request)
        if self.dialect == CLASSIC:
            return self.classic(request)
        return self.x402(request)

    def _served(self) -> httpx.Response:
        self.served += 1
        return httpx.Response(200, json={"served": True})

    def _mint(self, amount_msat: int) -> tuple[str, str]:
        kind = self.invoice if self.invoice != "wrong_amount" else "ok"
        return self.node.mint(amount_msat * 2 if self.invoice == "wrong_amount" else amount_msat, kind)

    def v02(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/pay":
            offer_id = json.loads(request.content)["offer_id"]
            self.payment_requests.append(offer_id)
            if self.invoice == "sold_out":
                return httpx.Response(409, json={"error": "that offer is sold out"})
            bolt11, _ = self._mint(next(msat for oid, _, msat in V02_OFFERS if oid == offer_id))
            return httpx.Response(200, json={"version": "0.2.1", "offer_id": offer_id,
                                             "expires_at": "2099-01-01T00:00:00+00:00",
                                             "payment_request": {"lightning_invoice": bolt11}})
        credits = [h for h in self.node.paid if h not in self.used]  # one paid invoice serves one request
        if credits and self.answer == "drop_once" and not self.dropped:  # the credit used, the answer lost
            self.used.add(credits[0])
            self.dropped += 1
            self.keys.append(request.headers.get("idempotency-key", ""))
            raise httpx.ReadError("connection reset by peer", request=request)
        if credits and self.answer in ("serve", "drop_once"):
            self.used.add(credits[0])
            return self._served()
        return httpx.Response(402, json={
            "version": "0.2.1", "payment_request_url": f"https://{self.pay_host or request.url.host}/pay",
            "payment_context_token": "account-1", "offers": [
                {"offer_id": oid, "title": f"{oid} package", "description": "credits", "type": "top-up",
                 "balance": cents * 10, "amount": cents, "currency": "USD", "payment_methods": ["lightning"]}
                for oid, cents, _ in V02_OFFERS]})

    def classic(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        if auth.startswith("L402 ") and self.answer == "serve":
            mac, _, pre = auth[5:].rpartition(":")
            committed = macaroons.decode(mac).payment_hash
            if committed in self.node.paid and hashlib.sha256(bytes.fromhex(pre)).hexdigest() == committed:
                return self._served()
        bolt11, payment_hash = self._mint(10_000)
        committed = "ab" * 32 if self.invoice == "other_hash" else payment_hash  # a token the invoice cannot buy
        mac = macaroons.mint(ROOT_KEY, committed, caveats=["services=scenario:0"])
        return httpx.Response(402, text="payment required",
                              headers={"WWW-Authenticate": f'L402 macaroon="{mac}", invoice="{bolt11}"'})

    def x402(self, request: httpx.Request) -> httpx.Response:
        accepts = [x402_requirement(amount) for amount, _ in X402_OFFERS]
        if self.invoice == "unknown_asset":  # a token whose worth nobody can tell
            accepts = [{**r, "asset": "0x" + "77" * 20, "extra": {"name": "Mystery", "version": "1"}} for r in accepts]
        challenge = {"x402Version": 2, "error": "Payment required", "resource": {"url": str(request.url)},
                     "accepts": accepts}
        signed = request.headers.get("payment-signature")
        if signed is None:
            return httpx.Response(402, json={}, headers={"PAYMENT-REQUIRED": b64json(challenge)})
        payload = json.loads(base64.b64decode(signed))
        auth = payload["payload"]["authorization"]
        if signed in self.answers and self.answer == "drop_once":  # the same payment again: its answer replayed
            return self.answers[signed]
        if signed in self.answers:  # a used authorization (its nonce is spent): refused
            return httpx.Response(402, json={}, headers={"PAYMENT-REQUIRED": b64json({**challenge, "error": "used"})})
        if not signed_for(payload, [x402_requirement(amount) for amount, _ in X402_OFFERS]):
            return httpx.Response(402, json={}, headers={"PAYMENT-REQUIRED": b64json({**challenge, "error": "bad"})})
        self.paid_values.append(int(auth["value"]))
        self.keys.append(request.headers.get("idempotency-key", ""))
        if self.answer == "drop":
            raise httpx.ReadError("connection reset by peer", request=request)
        if self.answer in ("drop_once", "drop_refuse_again") and not self.dropped:  # settled, the answer lost
            receipt = {"success": True, "transaction": "0x" + "cd" * 32, "network": "eip155:84532"}
            self.served += 1
            self.answers[signed] = httpx.Response(200, json={"served": True}, headers={"PAYMENT-RESPONSE": b64json(receipt)})
            self.dropped += 1
            raise httpx.ReadError("connection reset by peer", request=request)
        if self.answer == "402":
            refused = {**challenge, "error": "invalid_exact_evm_payload_signature"}
            return httpx.Response(402, json={}, headers={"PAYMENT-REQUIRED": b64json(refused)})
        receipt = {"success": True, "transaction": "0x" + "ab" * 32, "network": "eip155:84532", "payer": auth["from"]}
        if self.answer == "402_settled":
            return httpx.Response(402, json={}, headers={"PAYMENT-REQUIRED": b64json(challenge),
                                                         "PAYMENT-RESPONSE": b64json(receipt)})
        self.served += 1
        return httpx.Response(200, json={"served": True}, headers={"PAYMENT-RESPONSE": b64json(receipt)})

    def sent(self) -> list[int]:
        """What the service was asked to be paid, in msat: v0.2's payment requests, x402's signed payments."""
        if self.dialect == V02:
            return [next(msat for oid, _, msat in V02_OFFERS if oid == asked) for asked in self.payment_requests]
        return [next(msat for atomic, msat in X402_OFFERS if int(atomic) == value) for value in self.paid_values]


def signed_for(payload: dict[str, Any], requirements: list[dict[str, Any]]) -> bool:
    """True when an x402 payload is an EIP-3009 authorization, signed by its `from`, paying exactly the
    requirement it says it accepted (one of `requirements`): what a facilitator checks before settling."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    accepted, auth = payload["accepted"], payload["payload"]["authorization"]
    if accepted not in requirements or (auth["to"], auth["value"]) != (accepted["payTo"], accepted["amount"]):
        return False
    domain = {"name": accepted["extra"]["name"], "version": accepted["extra"]["version"], "chainId": 84532,
              "verifyingContract": accepted["asset"]}
    fields = [("from", "address"), ("to", "address"), ("value", "uint256"), ("validAfter", "uint256"),
              ("validBefore", "uint256"), ("nonce", "bytes32")]
    message = {k: (int(auth[k]) if t == "uint256" else bytes.fromhex(auth[k][2:]) if t == "bytes32" else auth[k])
               for k, t in fields}
    typed = {"types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                        {"name": "chainId", "type": "uint256"},
                                        {"name": "verifyingContract", "type": "address"}],
                       "TransferWithAuthorization": [{"name": k, "type": t} for k, t in fields]},
             "primaryType": "TransferWithAuthorization", "domain": domain, "message": message}
    signer = Account.recover_message(encode_typed_data(full_message=typed), signature=payload["payload"]["signature"])
    return bool(signer.lower() == auth["from"].lower())


# -- the table ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One scenario and what a user notices of it.

    Set up: `policy` (Policy settings over the base: the rate fixed, lightning and x402 allowed),
    `wallet` (the wallet's or signer's behaviour: see `ScriptedWallet`, `ScriptedSigner`; "none": no
    wallet and no signer, "signer_only": no Lightning wallet), `invoice` and `answer` (the
    service's, see `Service`), `pay_host`, `approve` (the approver's answer: "yes": True, "deny":
    False, "other": the challenge's other offer, "wire": that offer as the dialect's own type,
    "missing": an offer id the service did not make, "forged": the other offer at a lower price),
    `prior` (msat spent earlier this hour), `offer_id` and `max_price` (the request's own pin and cap).
    Expected: `status` (None: an error), `error` (its exact type), `rule` (PaymentRefused.rule or
    InvoiceError.check), `calls` (wallet pays, or signer signatures for x402), `rows` (the ledger rows
    this request wrote: status, amount_msat), `spent` (what it added to `ledger.spent_msat()`),
    `events` (the typed events' kinds, in order; None: not compared), `sent` (v0.2 and x402: the
    prices, in msat, of the offers the service was asked to be paid for; None: the row's amount).
    """

    dialect: str
    outcome: str
    policy: dict[str, Any] = field(default_factory=dict)
    wallet: str = "ok"
    invoice: str = "ok"
    answer: str = "serve"
    pay_host: str | None = None
    approve: str | None = None
    prior: int = 0
    offer_id: str | None = None   # the request pins this offer (as an agent that chose one does)
    max_price: int | None = None  # the request's own price cap, msat
    status: int | None = 200
    error: type[BaseException] | None = None
    rule: str | None = None
    calls: int = 1
    rows: tuple[tuple[str, int], ...] = ()
    spent: int = 0
    events: tuple[str, ...] | None = None
    sent: tuple[int, ...] | None = None
    noted: str = ""               # text the ledger row's reason must hold
    says: str = ""                # text the error message must hold
    misleads: str | None = None   # text the error message must not hold (it would be false)
    defect: str | None = None     # the defect of the core this row found (fixed; the row keeps it fixed)

    @property
    def service_sent(self) -> list[int]:
        return list(self.sent) if self.sent is not None else [amount for _, amount in self.rows]

    @property
    def id(self) -> str:
        return f"{self.dialect}-{self.outcome}"


PAID_EVENTS = {
    V02: ("challenge", "decision", "payment_request", "invoice", "reserved", "paid", "retry", "served"),
    CLASSIC: ("challenge", "decision", "invoice", "reserved", "paid", "retry", "served"),
    X402: ("challenge", "decision", "reserved", "retry", "paid", "served"),
}
APPROVED_EVENTS = {d: (*e[:2], "approval", *e[2:]) for d, e in PAID_EVENTS.items()}
SETTLED_10 = (("settled", 10_000),)


def refused(dialect: str, outcome: str, rule: str, **kw: Any) -> Row:
    """A row where the policy says no: nothing paid, nothing written, nothing spent."""
    return Row(dialect, outcome, status=None, error=PaymentRefused, rule=rule, calls=0, **kw)


def refusals(dialect: str) -> list[Row]:
    """Every rule that refuses a payment, for one dialect."""
    ln = dialect != X402
    return [
        refused(dialect, "per-payment-limit", "max_per_payment", policy={"max_per_payment_sat": 5}),
        # 20 sat spent already, 25 sat in total: the 10 sat payment does not fit (quote's check)
        refused(dialect, "total-budget", "budget", policy={"budget_sat": 25}, prior=PRIOR_MSAT),
        # the hourly window is checked by the ledger as it reserves (the fee cap counts, too)
        # 15 sat in total: the 10 sat price fits, but not with the 10 sat fee cap the ledger holds for an
        # invoice (fees count against budgets); x402 pays no routing fee, so there it fits
        # the fee cap is held with the price: the quote refuses it, so no payment request is even sent
        refused(dialect, "budget-with-fees", "budget", policy={"budget_sat": 15}, sent=(), says="+ up to 10 sat")
        if ln else Row(dialect, "budget-with-fees", policy={"budget_sat": 15}, rows=SETTLED_10, spent=10_000,
                       events=PAID_EVENTS[X402]),
        refused(dialect, "per-hour-budget", "per_hour", policy={"per_hour_sat": 25}, prior=PRIOR_MSAT,
                sent=(10_000,) if dialect == V02 else ()),
        refused(dialect, "per-day-budget", "per_day", policy={"per_day_sat": 25}, prior=PRIOR_MSAT,
                sent=(10_000,) if dialect == V02 else ()),
        refused(dialect, "denied-host", "denied_host", policy={"denied_hosts": [httpx.URL(URLS[dialect]).host]}),
        refused(dialect, "host-not-allowed", "allowed_hosts", policy={"allowed_hosts": ["elsewhere.example"]}),
        refused(dialect, "methods", "methods", policy={"methods": ("x402",) if ln else ("lightning",)}),
        # no Lightning wallet for an invoice; no signer for x402 (that refusal's rule is the dialect's name)
        refused(dialect, "no-wallet" if ln else "no-signer", "no_wallet" if ln else "no_signer", wallet="none"),
        # a limit in USD and no BTC/USD rate from anywhere: never guess
        refused(dialect, "no-exchange-rate", "exchange_rate", policy={"usd_per_btc": None, "max_per_payment_usd": 1.0}),
        # the request's own limits: a price cap below every offer, an offer the service did not make
        refused(dialect, "request-price-cap", "max_price", max_price=5_000, says="this request's price cap"),
        refused(dialect, "request-pins-unknown-offer", "offer_id", offer_id="gold"),
    ]


def bad_invoices(dialect: str) -> list[Row]:
    """Invoices that fail a check before anything is reserved (Lightning dialects only)."""
    # Classic L402's one offer is priced by its own invoice, so an amount above the offer cannot
    # exist; its wrong amount is an invoice without one (the payee would choose the price), which
    # is no price at all: refused as the 402 is read, so it is never the "cheapest" of several offers.
    checked = [("wrong_network", "network"), ("expired", "expired")]
    if dialect == V02:
        checked.insert(0, ("wrong_amount", "amount_above_offer"))
    rows = [Row(dialect, f"bad-invoice-{kind}", invoice=kind, status=None, error=InvoiceError, rule=check, calls=0,
                sent=(10_000,)) for kind, check in checked]
    if dialect == CLASSIC:
        rows.insert(0, Row(dialect, "bad-invoice-no_amount", invoice="no_amount", status=None, error=PaymentRefused,
                           rule=CLASSIC, calls=0, sent=(10_000,), says="its invoice names no amount"))
    return rows


def wallet_outcomes(dialect: str) -> list[Row]:
    """What a Lightning wallet may answer, and what each leaves in the ledger."""
    pending = (("pending", 10_000),)
    return [
        Row(dialect, "wallet-fails", wallet="fails", status=None, error=InsufficientFunds, rows=(("failed", 10_000),),
            noted="InsufficientFunds"),
        Row(dialect, "wallet-says-failed", wallet="says_failed", status=None, error=WalletError,
            rows=(("failed", 10_000),), noted="no route"),
        Row(dialect, "outcome-unknown", wallet="unknown", status=None, error=PaymentOutcomeUnknown, rows=pending,
            spent=10_000 + FEE_CAP_MSAT, noted="outcome unknown"),
        # the wallet lost the answer but its lookup finds the payment made: used, never paid again
        Row(dialect, "outcome-unknown-lookup-paid", wallet="unknown_paid", rows=SETTLED_10, spent=10_000 + FEE_MSAT,
            events=PAID_EVENTS[dialect]),
        # an adapter raising a plain exception (a bug, a reset) is an unknown outcome too, never a bare error
        Row(dialect, "wallet-raises-plain", wallet="bug", status=None, error=PaymentOutcomeUnknown, rows=pending,
            spent=10_000 + FEE_CAP_MSAT, noted="outcome unknown: ConnectionResetError",
            says="ConnectionResetError from the wallet"),
        Row(dialect, "wallet-raises-plain-lookup-paid", wallet="bug_paid", rows=SETTLED_10, spent=10_000 + FEE_MSAT,
            events=PAID_EVENTS[dialect]),
        Row(dialect, "wallet-and-lookup-raise-plain", wallet="bug_blind", status=None, error=PaymentOutcomeUnknown,
            rows=pending, spent=10_000 + FEE_CAP_MSAT, noted="outcome unknown: ConnectionResetError"),
        Row(dialect, "wallet-says-pending", wallet="says_pending", status=None, error=PaymentOutcomeUnknown,
            rows=pending, spent=10_000 + FEE_CAP_MSAT),
        # "paid", with a preimage that proves nothing: not taken as proof, the row stays pending
        Row(dialect, "wallet-bad-preimage", wallet="bad_preimage", status=None, error=PaymentOutcomeUnknown,
            rows=pending, spent=10_000 + FEE_CAP_MSAT, noted="preimage that does not match"),
        Row(dialect, "not-honored", answer="402", status=None, error=PaymentNotHonored, rows=SETTLED_10,
            spent=10_000 + FEE_MSAT),
    ]


def approvals(dialect: str) -> list[Row]:
    """What an approver may answer: yes, no, or another offer (made by the service, or not)."""
    fee = FEE_MSAT if dialect != X402 else 0
    rows = [Row(dialect, "approved", approve="yes", rows=SETTLED_10, spent=10_000 + fee,
                events=APPROVED_EVENTS[dialect]),
            refused(dialect, "approval-denied", "approval", approve="deny")]
    if dialect == CLASSIC:  # one offer: an approver's other pick can only be one the service did not make
        rows.append(refused(dialect, "approver-picks-unknown-offer", "approval", approve="missing"))
        return rows
    rows += [
        Row(dialect, "approver-picks-other-offer", approve="other", rows=(("settled", 20_000),), spent=20_000 + fee,
            events=APPROVED_EVENTS[dialect]),
        # the other pick is quoted again through the same limits: above the per-payment limit, refused
        refused(dialect, "approver-picks-offer-over-limit", "max_per_payment", approve="other",
                policy={"max_per_payment_sat": 15}, says="20 sat"),
        # ... and on the same total spent: 15 sat of the budget left fits the first offer, not the pick
        refused(dialect, "approver-picks-offer-over-budget", "budget", approve="other",
                policy={"budget_sat": 45 if dialect != X402 else 35},  # (a Lightning payment holds its 10 sat fee cap too)
                prior=PRIOR_MSAT, says="20 sat"),
        # the other offer, its price lowered: the service never offered that, so it is not paid
        refused(dialect, "approver-forges-cheaper-offer", "approval", approve="forged"),
    ]
    if dialect == V02:
        rows.append(Row(dialect, "approver-picks-other-wire-offer", approve="wire", rows=(("settled", 20_000),),
                        spent=20_000 + FEE_MSAT, events=APPROVED_EVENTS[dialect]))
    return rows


# Combinations that cannot exist, and so are not rows:
# - payment host: only L402 v0.2 has a payment request endpoint (classic's invoice is in its header,
#   x402 signs and sends the payment with the request itself);
# - bad invoice: x402 pays no invoice (it signs an authorization for exactly the chosen requirement);
# - approver picks another offer: classic L402 makes one offer, so the row asks for one it did not make.
ROWS: list[Row] = [
    # -- L402 v0.2 -------------------------------------------------------------------------------
    Row(V02, "paid", rows=SETTLED_10, spent=10_000 + FEE_MSAT, events=PAID_EVENTS[V02]),
    *refusals(V02),
    refused(V02, "payment-host", "payment_host", pay_host="pay.elsewhere.example"),
    Row(V02, "request-pins-offer", offer_id="big", rows=(("settled", 20_000),), spent=20_000 + FEE_MSAT,
        events=PAID_EVENTS[V02]),
    *bad_invoices(V02),
    Row(V02, "payment-request-refused", invoice="sold_out", status=None, error=PaymentRequestError, calls=0,
        sent=(10_000,), says="sold out"),
    *wallet_outcomes(V02),
    *approvals(V02),
    # -- classic L402 ----------------------------------------------------------------------------
    Row(CLASSIC, "paid", rows=SETTLED_10, spent=10_000 + FEE_MSAT, events=PAID_EVENTS[CLASSIC]),
    *refusals(CLASSIC),
    *bad_invoices(CLASSIC),
    # the macaroon commits to another hash: the token this invoice buys could never work
    Row(CLASSIC, "bad-invoice-other-hash", invoice="other_hash", status=None, error=InvoiceError, rule="payment_hash",
        calls=0),
    *wallet_outcomes(CLASSIC),
    *approvals(CLASSIC),
    # -- x402 (a signer signs; no routing fee; the row settles on the service's receipt) -----------
    Row(X402, "paid", rows=SETTLED_10, spent=10_000, events=PAID_EVENTS[X402]),
    Row(X402, "paid-without-wallet", wallet="signer_only", rows=SETTLED_10, spent=10_000, events=PAID_EVENTS[X402]),
    *refusals(X402),
    refused(X402, "signer-for-another-network", "no_signer", wallet="elsewhere"),
    # x402's bad invoice: a requirement whose worth cannot be told is never signed for
    refused(X402, "unknown-asset", X402, invoice="unknown_asset", says="cannot be told"),
    Row(X402, "signer-fails", wallet="fails", status=None, error=WalletError, rows=(("failed", 10_000),), sent=(),
        noted="not signed"),
    # the signed payment went out and no answer came: it may be settled, so the row stays pending
    Row(X402, "outcome-unknown", answer="drop", status=None, error=PaymentSentUnanswered,
        rows=(("pending", 10_000),), spent=10_000, noted="outcome unknown"),
    # the service answers the signed payment with a 402: never signed again, and the row stays pending
    # and counted (the service holds a signature it could still settle: its 402 is only its word)
    Row(X402, "not-honored", answer="402", status=None, error=PaymentRejected, rows=(("pending", 10_000),),
        spent=10_000, noted="answered 402 to the signed payment"),
    # it says it settled the payment, and still answers 402: paid, not honored, the receipt kept
    Row(X402, "settled-not-honored", answer="402_settled", status=None, error=PaymentNotHonored, rows=SETTLED_10,
        spent=10_000, noted="still answers 402"),
    *approvals(X402),
]


def showing(outcome: str, what: str, defect: str, dialects: tuple[str, ...] = (V02, CLASSIC, X402),
            **expect: Any) -> list[Row]:
    """Rows of `outcome` (in `dialects`) that also expect `expect`, which the core does not do yet: each
    guards against one defect the table found."""
    return [replace(r, outcome=f"{r.outcome}:{what}", defect=defect, **expect) for r in ROWS
            if r.outcome == outcome and r.dialect in dialects]


# Defects of the core this table found, each fixed; these rows keep them fixed.
DEFECT_ROWS = [
    *showing("not-honored", "ledger-says-so",
             "flow.py _retry: a paid Lightning request the service still answers 402 raises PaymentNotHonored but "
             "notes nothing on its settled row; x402's settled-not-honored row says 'still answers 402'",
             dialects=(V02, CLASSIC), noted="still answers 402"),
    *showing("wallet-says-pending", "ledger-says-why",
             "flow.py _pay: a wallet answering PENDING leaves the row pending with no reason; every other pending "
             "row says why", noted="in flight"),
    *(row for outcome in ("approver-picks-offer-over-limit", "approver-picks-offer-over-budget") for row in showing(
        outcome, "message-true", "quote.py: the refusal of a pinned offer (an approver's pick, or offer_id) calls "
        "it 'the cheapest offer', though the cheapest costs 10 sat", misleads="the cheapest offer costs 20 sat")),
]


# -- running a row --------------------------------------------------------------------------------
def approver(kind: str | None, asked: list[httpay.Quote], *,
             awaitable: bool = False) -> Callable[[httpay.Quote], Any] | None:
    """The policy's approver giving the row's answer; `awaitable`: an `async def` one."""
    if kind is None:
        return None

    def approve(q: httpay.Quote) -> Any:
        asked.append(q)
        if kind in ("yes", "deny"):
            return kind == "yes"
        if kind == "missing":
            return "offer-the-service-never-made"
        other = next(o for o in q.offers if o.offer_id != q.offer.offer_id)
        if kind == "forged":
            return replace(other, price=replace(other.price, amount=1))
        if kind == "wire":
            return other.payload  # the dialect's own offer (a v0.2 `Offer`), as an agent holding the 402 has it
        return other

    async def aapprove(q: httpay.Quote) -> Any:
        await asyncio.sleep(0)
        return approve(q)

    return aapprove if awaitable else approve


def seed(ledger: Ledger, msat: int) -> None:
    """A payment made earlier this hour, settled, elsewhere."""
    receipt = ledger.reserve(Intent(host="earlier.example", url="https://earlier.example/", protocol=V02,
                                    method="lightning", amount_msat=msat, payment_hash="00" * 32))
    ledger.settle(receipt.id, preimage="11" * 32, fee_msat=0)


def drive(driver: str, payer: Payer, request: httpx.Request, service: Service, **pins: Any) -> httpx.Response:
    """The real flow through the real driver, every request answered by `service` in memory."""
    transport = httpx.MockTransport(service)
    flow = request_flow(payer, request, **pins)
    if driver == "sync":
        return _drive_sync(flow, lambda url: transport, payer, _SyncFlights())
    return asyncio.run(_drive_async(flow, lambda url: transport, payer, _AsyncFlights()))


@dataclass
class Ran:
    """What one row did."""

    response: httpx.Response | None
    error: BaseException | None
    wallet: ScriptedWallet
    signer: ScriptedSigner
    service: Service
    ledger: Ledger
    events: list[Event]
    asked: list[httpay.Quote]

    @property
    def rows(self) -> list[Receipt]:
        """The rows this request wrote (not the seeded earlier payment), oldest first."""
        return sorted((r for r in self.ledger.receipts() if r.host != "earlier.example"), key=lambda r: r.id)


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with httpay.open_ledger(":memory:") as opened:
        yield opened


def run_row(row: Row, driver: str, ledger: Ledger) -> Ran:
    """Set the row's scene up (service, wallet, signer, policy, earlier spending), run one GET through
    `driver`, and keep what happened."""
    node = Node()
    service = Service(row.dialect, node, invoice=row.invoice, answer=row.answer, pay_host=row.pay_host)
    native = driver == "async-native"  # the async driver with an awaitable wallet pay and approver
    wallet = (AsyncScriptedWallet if native else ScriptedWallet)(node, row.wallet)
    signer = ScriptedSigner(row.wallet)
    asked: list[httpay.Quote] = []
    settings: dict[str, Any] = {"usd_per_btc": RATE, "methods": ("lightning", "x402"), **row.policy,
                                "approve": approver(row.approve, asked, awaitable=native)}
    if row.prior:
        seed(ledger, row.prior)
    events: list[Event] = []
    payer = Payer(wallet=None if row.wallet in ("none", "signer_only") else wallet, policy=Policy(**settings),
                  ledger=ledger, signer=None if row.wallet == "none" else signer, on_event=events.append,
                  retries_after_payment=2, retry_delay_s=0.0)
    try:
        response, error = drive(driver, payer, httpx.Request("GET", URLS[row.dialect]), service,
                                offer_id=row.offer_id, max_price_msat=row.max_price), None
    except Exception as exc:  # noqa: BLE001 - the row says which error it expects
        response, error = None, exc
    return Ran(response, error, wallet, signer, service, ledger, events, asked)


def table() -> list[Any]:
    """The rows as pytest params."""
    return [pytest.param(r, id=r.id) for r in ROWS + DEFECT_ROWS]


# "async-native": the async driver again, with a wallet whose pay is awaited and an `async def` approver
@pytest.mark.parametrize("driver", ["sync", "async", "async-native"])
@pytest.mark.parametrize("row", table())
def test_scenario(row: Row, driver: str, ledger: Ledger, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ran = run_row(row, driver, ledger)

    # the answer, or the error and the rule that raised it
    if row.error is None:
        assert ran.error is None, f"{type(ran.error).__name__}: {ran.error}"
        assert ran.response is not None and ran.response.status_code == row.status
        assert ran.response.json() == {"served": True}
        receipt = receipt_of(ran.response)
        assert receipt is not None and receipt.status is Status.SETTLED
    else:
        assert type(ran.error) is row.error, f"{type(ran.error).__name__}: {ran.error}"
        if isinstance(ran.error, PaymentRefused):
            assert ran.error.rule == row.rule, str(ran.error)
            assert any(isinstance(e, Refused) and e.rule == row.rule for e in ran.events)
        if isinstance(ran.error, InvoiceError):
            assert ran.error.check == row.rule, str(ran.error)
            assert any(isinstance(e, Refused) and e.rule == f"invoice:{row.rule}" for e in ran.events)
        if isinstance(ran.error, PaymentOutcomeUnknown | PaymentNotHonored | PaymentRejected):
            assert ran.error.receipt is not None and ran.error.receipt.status.value == row.rows[0][0]
        assert row.says in str(ran.error)
        if row.misleads is not None:
            assert row.misleads not in str(ran.error)

    # no secret anywhere a person or a log sees: no preimage (nor a paid L402 credential, which holds
    # one), no signing key, in the error, the events or the log lines
    secrets = [*ran.service.node.preimages.values(), X402_KEY.removeprefix("0x")]
    seen = [str(ran.error), repr(ran.error), *(str(e) for e in ran.events), *(repr(e) for e in ran.events),
            *(r.getMessage() for r in caplog.records)]
    assert not [s for s in secrets if any(s in text.lower() for text in seen)]

    # what paid: the wallet for Lightning, the signer for x402, never the other
    lightning_calls, signatures = len(ran.wallet.calls), len(ran.signer.signed)
    assert (signatures, lightning_calls) == ((row.calls, 0) if row.dialect == X402 else (0, row.calls))
    if isinstance(ran.wallet, AsyncScriptedWallet):  # its pay was awaited, never run in a thread
        assert ran.wallet.awaited == lightning_calls
    if row.wallet in ("unknown", "unknown_paid"):
        assert ran.wallet.lookups == 1  # asked what became of it before leaving the row pending

    # the ledger: the rows this request wrote, and what was spent (fees included)
    assert [(r.status.value, r.amount_msat) for r in ran.rows] == list(row.rows)
    assert ledger.spent_msat() - row.prior == row.spent
    assert len(ledger.receipts()) == len(row.rows) + (1 if row.prior else 0)
    for r in ran.rows:  # what the row says of itself (why it failed, why it is still pending)
        assert row.noted in (r.reason or ""), r.reason
    quoted = [e.quote for e in ran.events if isinstance(e, Quoted | Approved)]  # the quote, then the approved one
    for r in ran.rows:  # each row names the dialect, the host and the offer that was finally quoted
        assert (r.protocol, r.host, r.offer_id) == (row.dialect, httpx.URL(URLS[row.dialect]).host,
                                                    quoted[-1].offer.offer_id)

    # the service's side: served only when paid; asked to be paid only for the offer the flow chose
    assert ran.service.served == (1 if row.error is None else 0)
    if row.dialect != CLASSIC:  # classic's invoice comes with its 402: nothing is asked for
        assert ran.service.sent() == row.service_sent

    # the approver was asked once, about the offer the policy chose (the cheapest, listed first)
    if row.approve is not None:
        assert len(ran.asked) == 1 and ran.asked[0].offer == ran.asked[0].offers[0]
    if row.approve in ("other", "wire") and row.error is None:  # the approved quote is the other offer's
        assert [q.offer for q in quoted] == [ran.asked[0].offers[0], ran.asked[0].offers[1]]

    # the typed events of a paid request, in order; a Lightning `paid` carries the wallet's payment
    if row.events is not None:
        assert [e.kind for e in ran.events] == list(row.events)
        paid = [e for e in ran.events if isinstance(e, Paid)]
        assert len(paid) == 1 and paid[0].receipt.status is Status.SETTLED
        assert (paid[0].payment is None) == (row.dialect == X402)
        assert len({e.request_id for e in ran.events}) == 1


def test_table_covers_every_dialect_and_outcome() -> None:
    """The table has every outcome the issue names for every dialect, except the impossible ones."""
    outcomes = {d: {r.outcome for r in ROWS if r.dialect == d} for d in (V02, CLASSIC, X402)}
    every = {"paid", "per-payment-limit", "total-budget", "per-hour-budget", "denied-host", "methods",
             "no-exchange-rate", "outcome-unknown", "not-honored", "approval-denied"}
    lightning = {"no-wallet", "wallet-fails", "bad-invoice-wrong_network", "bad-invoice-expired"}
    picks_another = {"approver-picks-other-offer", "approver-picks-offer-over-limit"}
    assert every | lightning | picks_another | {"payment-host", "bad-invoice-wrong_amount"} <= outcomes[V02]
    assert every | lightning | {"bad-invoice-no_amount", "approver-picks-unknown-offer"} <= outcomes[CLASSIC]
    assert every | picks_another | {"no-signer", "signer-fails"} <= outcomes[X402]
    assert len({r.id for r in ROWS + DEFECT_ROWS}) == len(ROWS + DEFECT_ROWS)


# -- the flow is pure: a driver of our own, answering each effect from a script ------------------
class Untouchable:
    """A ledger the flow must never call: anything it reaches on it raises."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the flow reached {type(self).__name__}.{name} itself instead of yielding an effect")


class UntouchableWallet(Untouchable):
    """A wallet the flow may only read facts of (its network, its name for the ledger row), never call."""

    network = "regtest"
    name = "untouchable"
    identity = None


class UntouchableSigner(ScriptedSigner):
    """A signer the flow may ask what it is (its address, where it pays), never have sign."""

    def sign_typed_data(self, domain: Any, types: Any, primary_type: str, message: Any) -> bytes:
        raise AssertionError("the flow had the signer sign itself instead of yielding a Sign effect")


# The effects each paid request yields, in order, and why ("TokenFor:fresh": the ledger itself asked,
# unless it knows no one else has written it since it read its scopes).
PURE: dict[str, list[str]] = {
    V02: [
        "TokenFor", "Send",        # a credential held for the host? none; send the request
        "ReadBody",                # a 402: its body
        "TokenFor:fresh",          # one bought meanwhile by another process? none
        "LedgerNow",               # when the 402 was met, on the ledger's clock (for the shared flight)
        "Join", "Find",            # the single flight; no payment made for this challenge meanwhile
        "GetRate",                 # the rate, once for this attempt; then the quote (pure)
        "Send", "ReadBody",        # the payment request for the chosen offer; its invoice
        "Reserve",                 # written down pending, every limit checked by the ledger
        "Pay",                     # the wallet pays
        "Beside",                  # two flows at once, the script answering the first's effects first:
        "Send",                    #   the request again (the account is credited), while
        "Settle",                  #   the row is settled with the preimage and the fee,
        "Leave",                   #   and the flight left once it is (waiters never wait on the retry)
    ],
    CLASSIC: [
        "TokenFor", "Send", "ReadBody", "TokenFor:fresh", "LedgerNow", "Join", "Find", "GetRate",
        "Reserve", "Pay",          # the invoice came in the header: nothing to fetch
        "Beside",
        "Send",                    # the request again, with the credential just bought (no newer one yet)
        "SaveToken",               # beside it, the paid credential kept for its scope before the row settles
        "Settle", "Leave",
    ],
    X402: [
        "TokenFor", "Send", "ReadBody",
        # a payment buys this one request: no credential another process could have bought, no
        # flight to join, so neither the ledger's clock nor a fresh look is needed
        "GetRate",
        "Reserve",
        "Sign",                    # the signer signs the authorization
        "Send",                    # sent with the request; the service settles it
        "Settle",                  # settled on its receipt, the transaction noted, in one write
    ],
    # a POST is a call the application may send again: the ledger keys it, keeps the payment's credential
    # before it is sent, and marks the call done once its answer is back
    X402 + " POST": [
        "TokenFor", "Send", "ReadBody",
        "CallKey",                 # the call's key (and any payment already made for it: none)
        "GetRate", "Reserve", "Sign",
        "RecordCall",              # the credential (with Idempotency-Key) kept on the call, before it is sent
        "Send", "Settle",
        "CallAnswered",            # its answer reached the application: the call is done
    ],
}


@pytest.mark.parametrize("dialect", list(PURE))
def test_flow_is_pure(dialect: str) -> None:
    """One paid request, driven by a loop that answers each yielded effect by its type from a script,
    with a wallet, signer and ledger that fail the test if the flow calls them: the flow yields every
    outside call, in this exact order, and performs none itself."""
    dialect, _, method = dialect.partition(" ")
    node = Node()
    service = Service(dialect, node)
    signer = ScriptedSigner()  # what the script signs with (the payer's own signer never signs)
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    rows: list[Receipt] = []

    def answer(effect: Effect) -> Any:
        """The script: what the outside world says to each effect."""
        match effect:
            case Send():
                return service(effect.request)
            case ReadBody():
                return effect.response.read()
            case LedgerNow():
                return now
            case GetRate():
                return Rate(RATE)
            case Join():
                return False  # this request owns the flight
            case Beside():
                return tuple(Outcome(drive(flow)) for flow in (effect.main, effect.aside))
            case TokenFor() | Find() | Leave() | SaveToken() | RecordCall() | CallAnswered():
                return None
            case CallKey():
                return Call(1, "pay_" + "0" * 32, effect.fingerprint, now)
            case Reserve():
                i = effect.intent
                rows.append(Receipt(1, Status.PENDING, now, now, i.host, i.url, i.protocol, i.method, i.offer_id,
                                    i.offer_title, i.offer_amount, i.offer_currency, i.credits, i.payment_hash,
                                    i.amount_msat, fee_msat=i.max_fee_msat))
                return rows[-1]
            case Pay():
                inv = httpay.decode_invoice(effect.invoice)
                node.paid.append(inv.payment_hash)
                return Payment(inv.payment_hash, PaymentStatus.SETTLED, amount_msat=inv.amount_msat,
                               fee_msat=FEE_MSAT, preimage=node.preimages[inv.payment_hash])
            case Sign():
                return signer.inner.sign_typed_data(effect.domain, effect.types, effect.primary_type, effect.message)
            case Settle():
                rows.append(replace(rows[-1], status=Status.SETTLED, fee_msat=effect.fee_msat,
                                    preimage=effect.preimage))
                return rows[-1]
            case Note():
                rows.append(replace(rows[-1], reason=effect.reason))
                return rows[-1]
        raise AssertionError(f"unscripted effect {effect!r}")

    policy = Policy(usd_per_btc=RATE, methods=("lightning", "x402"))
    payer = Payer(wallet=UntouchableWallet(), policy=policy, ledger=Untouchable(),  # type: ignore[arg-type]
                  signer=UntouchableSigner(), retries_after_payment=2, retry_delay_s=0.0)
    flow = request_flow(payer, httpx.Request(method or "GET", URLS[dialect], content=b"{}" if method else None))
    seen: list[str] = []

    def drive(flow: Generator[Effect, Any, Any]) -> Any:
        value: Any = None
        while True:
            try:
                effect = flow.send(value)
            except StopIteration as stop:
                return stop.value
            assert isinstance(effect, Effect)
            seen.append(type(effect).__name__ + (":fresh" if isinstance(effect, TokenFor) and effect.fresh else ""))
            value = answer(effect)

    response: httpx.Response = drive(flow)

    assert seen == PURE[dialect + (" " + method if method else "")]
    assert response.status_code == 200 and response.json() == {"served": True}
    paid = receipt_of(response)
    assert paid is not None and paid.status is Status.SETTLED and paid.amount_msat == 10_000
    assert service.served == 1


# -- the application's own retry: one call, one payment (issue 12) ------------------------------
@dataclass(frozen=True)
class CallRow:
    """The application sends POSTs in turn (`bodies`), each through the real flow and driver, with one
    ledger; the service loses the first paid answer (`answer`: "drop_once": then replays it for the same
    payment; "drop_refuse_again": refuses the same payment sent again). `expire`: the call window passes
    between the requests. Expected: each request's error type (None: served), the payments made
    (signatures for x402, wallet pays for Lightning), the ledger rows, and how many distinct
    Idempotency-Keys the service saw on paid requests."""

    dialect: str
    outcome: str
    bodies: tuple[bytes, ...]
    errors: tuple[type[BaseException] | None, ...]
    calls: int
    rows: tuple[tuple[str, int], ...]
    keys: int
    answer: str = "drop_once"
    expire: bool = False
    says: str = ""


CALL_ROWS = [
    # paid, the answer lost (the row stays pending: the service never said); the app's retry presents that
    # very payment again, the service replays its answer, the row settles: one payment
    CallRow(X402, "app-retry-represents", (b'{"order": 1}', b'{"order": 1}'),
            (httpay.PaymentSentUnanswered, None), calls=1, rows=SETTLED_10, keys=1),
    # the service refuses the payment sent again: a typed error, never a second payment
    CallRow(X402, "app-retry-refused-never-pays", (b'{"order": 1}', b'{"order": 1}'),
            (httpay.PaymentSentUnanswered, httpay.CallAlreadyPaid), calls=1, rows=(("pending", 10_000),), keys=1,
            answer="drop_refuse_again", says="was already paid (ledger #1"),
    # another body is another call: its own key, its own payment
    CallRow(X402, "different-body-different-call", (b'{"order": 1}', b'{"order": 2}'),
            (httpay.PaymentSentUnanswered, None), calls=2, rows=(("pending", 10_000), ("settled", 10_000)), keys=2),
    # past the call window the same request is a new call: a new key, a new payment
    CallRow(X402, "window-expiry-new-key", (b'{"order": 1}', b'{"order": 1}'),
            (httpay.PaymentSentUnanswered, None), calls=2, rows=(("pending", 10_000), ("settled", 10_000)), keys=2,
            expire=True),
    # answered calls are done: the same request sent again is a new call (and is paid for)
    CallRow(X402, "answered-call-is-done", (b'{"order": 1}', b'{"order": 1}'), (None, None), calls=2,
            rows=SETTLED_10 * 2, keys=2, answer="serve"),
    # Lightning: the credit was used and the answer lost; the retry (402 again) presents the paid call's
    # Idempotency-Key, the service (ignoring it) asks again: refused as already paid, never paid twice
    CallRow(V02, "app-retry-after-lost-answer-never-pays", (b'{"order": 1}', b'{"order": 1}'),
            (httpay.PaidRequestFailed, httpay.CallAlreadyPaid), calls=1, rows=SETTLED_10, keys=1),
]


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("row", [pytest.param(r, id=f"{r.dialect}-{r.outcome}") for r in CALL_ROWS])
def test_app_retry_is_one_call(row: CallRow, driver: str, ledger: Ledger) -> None:
    node = Node()
    service = Service(row.dialect, node, answer=row.answer)
    wallet, signer = ScriptedWallet(node), ScriptedSigner()
    payer = Payer(wallet=wallet, policy=Policy(usd_per_btc=RATE, methods=("lightning", "x402")), ledger=ledger,
                  signer=signer, retries_after_payment=1, retry_delay_s=0.0)
    errors: list[BaseException | None] = []
    for i, body in enumerate(row.bodies):
        if i and row.expire:  # the call window passes: the call was issued an hour ago
            ledger._query("UPDATE calls SET created_at = created_at - 3600")  # type: ignore[attr-defined]
        try:
            response = drive(driver, payer, httpx.Request("POST", URLS[row.dialect], content=body), service)
            assert response.status_code == 200 and response.json() == {"served": True}
            errors.append(None)
        except Exception as exc:  # noqa: BLE001 - the row says which error it expects
            errors.append(exc)
    assert [type(e) if e is not None else None for e in errors] == list(row.errors), errors
    assert row.says in str(errors[-1] or "")
    assert len(signer.signed) + len(wallet.calls) == row.calls
    assert [(r.status.value, r.amount_msat) for r in sorted(ledger.receipts(), key=lambda r: r.id)] == list(row.rows)
    assert len(set(service.keys)) == row.keys and all(k.startswith("pay_") for k in service.keys)
    if row.dialect == X402 and row.rows == SETTLED_10:  # the one payment the service saw, settled once
        assert service.served == 1
