"""The effects: every outside call the payment flow needs, as a typed request to its driver.

The flow (`httpay.core.flow`) never performs I/O; it yields one of these and is sent the result
(or has the error thrown in). `run(payer)` is how any driver performs a blocking one with the
payer's parts; the async driver runs those in a worker thread (so a slow ledger, rate source,
wallet or signer never stalls its event loop) and awaits the ones that can be awaited (`Send`,
`ReadBody`, `Sleep`, single flight, an async approver or wallet). A test can answer them by type.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, dataclass_transform, overload

import httpx

from httpay.core.deadline import Deadline
from httpay.core.model import Quote
from httpay.core.rates import Rate, read_rate
from httpay.ledger.base import Call, Intent, held_key
from httpay.ledger.models import Receipt
from httpay.policy import Limit
from httpay.reconcile import Reconciled, reconcile_one
from httpay.wallets.base import Payment

if TYPE_CHECKING:
    from httpay.core.payer import Payer

_E = TypeVar("_E")


@overload
def effect(cls: type[_E], /) -> type[_E]: ...
@overload
def effect(*, eq: bool = True) -> Any: ...


@dataclass_transform(frozen_default=True)
def effect(cls: type[_E] | None = None, /, *, eq: bool = True) -> Any:
    """An effect's class: a dataclass, read-only to type checkers, and not frozen at run time. A
    frozen dataclass's `__init__` sets each field through `object.__setattr__` (0.6 us for a Send,
    against 0.26), and every step of every request makes one; no code assigns to an effect."""
    if cls is None:
        return lambda c: dataclass(c, eq=eq)
    return dataclass(cls, eq=eq)


@effect
class Effect:
    """One outside call. `blocking` ones are run by `run` (in a worker thread by the async driver)."""

    blocking: ClassVar[bool] = True

    def run(self, payer: Payer) -> Any:
        raise NotImplementedError(type(self).__name__)

    def answer_in_memory(self, payer: Payer) -> tuple[bool, Any]:
        """(True, result) when the answer is already known without I/O, so no worker thread is needed."""
        return False, None


Resend = Literal["never", "kept-alive", "always"]  # when a Send dropped before any answer goes out once more


# -- HTTP --------------------------------------------------------------------------------------
@effect
class Send(Effect):
    """Send `request`. With `deadline`: the whole exchange, body included, must end before it.
    With `payment_deadline_s`: the answer may be the 402 to pay, so if it is a 402 the driver starts a
    `Deadline` of that many seconds, reads the body within it and puts it in the response's extensions.
    Any other answer goes back unread, as httpx hands it over (`client.stream(...)` streams).
    `resend`, if the connection drops before any answer: "never" (the error goes back); "kept-alive"
    (a request safe to repeat: sent once more if the connection was one the pool had kept alive, which
    the server may have closed while idle, and never after a drop on a connection opened for it, since
    the server took it and may have acted); "always" (a request that only asks, for an invoice:
    asking twice spends nothing)."""

    blocking: ClassVar[bool] = False
    request: httpx.Request
    deadline: Deadline | None = None
    payment_deadline_s: float | None = None
    resend: Resend = "never"


@effect
class ReadBody(Effect):
    """Read a response's whole body (a 402's, or a paid answer's, to see it did not break off)."""

    blocking: ClassVar[bool] = False
    response: httpx.Response


# -- waiting -----------------------------------------------------------------------------------
@effect
class Sleep(Effect):
    blocking: ClassVar[bool] = False
    seconds: float


@effect
class Join(Effect):
    """Enter the single flight for `key`. Answers False when this flow now owns it (and must
    `Leave` it), True when another flow was paying it and has finished (nothing is owned)."""

    blocking: ClassVar[bool] = False
    key: str


@effect
class Leave(Effect):
    blocking: ClassVar[bool] = False
    key: str


@effect
class Outcome:
    """What one flow of a `Beside` came to: its value, or the exception it raised."""

    value: Any = None
    error: BaseException | None = None

    def get(self) -> Any:
        """The value, or the exception raised here."""
        if self.error is not None:
            raise self.error
        return self.value


@effect(eq=False)
class Beside(Effect):
    """Run two flows at once and answer both outcomes (`main`'s, `aside`'s), each kept whole: a
    paid request's retry goes out (`main`, in the caller's own thread or task) while the payment is
    written down (`aside`, driven whole in one worker thread, which a cancelled caller still waits
    for: a record is finished whatever the caller does). `aside` performs only blocking effects
    and `Leave` (no request, no flight to join). Neither may raise out of the driver; each ends."""

    blocking: ClassVar[bool] = False
    main: Generator[Effect, Any, Any] = field(repr=False)
    aside: Generator[Effect, Any, Any] = field(repr=False)


@effect
class Ask(Effect):
    """Ask the policy's approver about a quote: True, False, or another offer (bool | Offer | None)."""

    blocking: ClassVar[bool] = False
    quote: Quote


# -- the payer's parts -------------------------------------------------------------------------
@effect
class GetRate(Effect):
    """The BTC/USD rate for this attempt (resolved once), or why it is unknown."""

    def run(self, payer: Payer) -> Rate:
        return read_rate(payer.policy, payer.wallet)

    def answer_in_memory(self, payer: Payer) -> tuple[bool, Any]:
        """The policy's fixed rate needs no source asked, so no worker thread."""
        rate = payer.policy.usd_per_btc
        return (True, Rate(rate)) if rate else (False, None)


@effect
class Pay(Effect):
    """Pay a BOLT11 invoice with the Lightning wallet, spending at most `max_fee_msat` on fees."""

    invoice: str
    max_fee_msat: int | None

    def run(self, payer: Payer) -> Payment:
        return payer.lightning.pay_invoice(self.invoice, max_fee_msat=self.max_fee_msat)


@effect
class Lookup(Effect):
    """Ask the wallet what became of a payment (None: it cannot tell)."""

    payment_hash: str

    def run(self, payer: Payer) -> Payment | None:
        try:
            return payer.lightning.lookup(self.payment_hash)
        except Exception:  # noqa: BLE001 - a lookup only ever helps: any failure of it (a bug, a reset) tells nothing
            return None


@effect
class Sign(Effect):
    """Have the signer sign EIP-712 typed data (an x402 or MPP authorization)."""

    domain: Mapping[str, Any]
    types: Mapping[str, Sequence[Mapping[str, str]]]
    primary_type: str
    message: Mapping[str, Any] = field(repr=False)

    def run(self, payer: Payer) -> bytes:
        signature: bytes = payer.signer.sign_typed_data(self.domain, self.types, self.primary_type, self.message)
        return signature

    def answer_in_memory(self, payer: Payer) -> tuple[bool, Any]:
        """A signer holding its key here (`in_process`) signs in tens of microseconds of pure
        computation: inline, where a worker thread would only add its hand-over (and the GIL would
        not let the loop run meanwhile anyway). A remote or slow signer still gets a thread."""
        if getattr(payer.signer, "in_process", False) is True:
            return True, self.run(payer)
        return False, None


# -- the ledger --------------------------------------------------------------------------------
@effect
class LedgerNow(Effect):
    """The ledger's clock (shared by every process)."""

    def run(self, payer: Payer) -> datetime:
        return payer.ledger.now()

    def answer_in_memory(self, payer: Payer) -> tuple[bool, Any]:
        """A ledger whose clock is this process's own (SQLite) is read without a statement or a thread."""
        return (True, payer.ledger.now()) if payer.ledger.clock_is_local else (False, None)


@effect
class Spent(Effect):
    """What was spent in total (settled and pending)."""

    def run(self, payer: Payer) -> int:
        return payer.ledger.spent_msat()


@effect
class Find(Effect):
    """The newest non-failed payment for a challenge key."""

    challenge_key: str

    def run(self, payer: Payer) -> Receipt | None:
        return payer.ledger.find(challenge_key=self.challenge_key)


@effect
class GetReceipt(Effect):
    receipt_id: int

    def run(self, payer: Payer) -> Receipt:
        return payer.ledger.get(self.receipt_id)


@effect
class Reserve(Effect):
    """Write the payment pending, every limit checked in the same transaction (PaymentRefused if not)."""

    intent: Intent
    limits: tuple[Limit, ...]
    usd_per_btc: float | None

    def run(self, payer: Payer) -> Receipt:
        return payer.ledger.reserve(self.intent, self.limits, usd_per_btc=self.usd_per_btc)


@effect
class Settle(Effect):
    """Record a payment settled (with its proof, fee and amount); `note`, its reason, in the same write."""

    receipt_id: int
    preimage: str = field(repr=False)
    fee_msat: int = 0
    amount_msat: int | None = None
    note: str | None = None

    def run(self, payer: Payer) -> Receipt:
        return payer.ledger.settle(self.receipt_id, preimage=self.preimage, fee_msat=self.fee_msat,
                                   amount_msat=self.amount_msat, note=self.note)


@effect
class Fail(Effect):
    receipt_id: int
    reason: str

    def run(self, payer: Payer) -> Receipt:
        return payer.ledger.fail(self.receipt_id, self.reason)


@effect
class Note(Effect):
    receipt_id: int
    reason: str

    def run(self, payer: Payer) -> Receipt:
        return payer.ledger.note(self.receipt_id, self.reason)


@effect
class NoteRefusal(Effect):
    """Keep a refused payment in the ledger (nothing was paid), for the people who oversee."""

    host: str
    url: str
    rule: str
    reason: str
    tags: tuple[tuple[str, str], ...] = ()

    def run(self, payer: Payer) -> None:
        payer.ledger.note_refusal(host=self.host, url=self.url, rule=self.rule, reason=self.reason,
                                  tags=dict(self.tags))


@effect
class Reconcile(Effect):
    """Settle the truth of a pending payment left behind (a crash) with the wallet that made it."""

    receipt: Receipt
    grace_s: float

    def run(self, payer: Payer) -> Reconciled:
        return reconcile_one(payer.ledger, payer.lightning, self.receipt, grace_s=self.grace_s)


@effect
class TokenFor(Effect):
    """The credential held for a scope, and where it is stored (None: none, or it expired). Of a
    scope's several kinds ("scope#variant"), those in `prefer` come first, then the scope's own,
    then the rest; `only`: just the kinds in `prefer`. A scope the ledger knows holds nothing costs
    no query; `fresh` (the look before paying): unless the ledger also knows nobody else has
    stored one since (`Ledger.held_scopes_exact`)."""

    scope: str
    fresh: bool = False
    prefer: tuple[str, ...] = ()  # kinds by their variant; "" is the scope's own
    only: bool = False

    def run(self, payer: Payer) -> tuple[str, str] | None:
        ledger = payer.ledger
        if not ledger.holds_token(self.scope, fresh=self.fresh):
            return None
        wanted = [held_key(self.scope, v) for v in self.prefer]
        if not self.fresh and not (ledger.held_variants or {}).get(self.scope):  # one kind: the scope's own key
            token = ledger.token_for(self.scope) if not self.only or self.scope in wanted else None
            return (self.scope, token) if token else None
        held = ledger.tokens_of(self.scope)
        order = wanted if self.only else [*wanted, self.scope, *sorted(held)]
        return next(((key, held[key]) for key in order if key in held), None)

    def answer_in_memory(self, payer: Payer) -> tuple[bool, Any]:
        """A scope the ledger already knows holds nothing: None, with no thread and no query (the
        unpaid path of an AsyncClient, and its look before paying while no one else wrote the store)."""
        ledger = payer.ledger
        held = ledger.held_scopes
        if held is None or self.scope in held or (ledger.held_variants or {}).get(self.scope):
            return False, None
        return (not self.fresh or ledger.held_scopes_exact(wait=False)), None


@effect
class SaveToken(Effect):
    scope: str
    authorization: str = field(repr=False)
    payment_hash: str | None = None
    expires_at: datetime | None = None

    def run(self, payer: Payer) -> None:
        payer.ledger.save_token(self.scope, self.authorization, payment_hash=self.payment_hash,
                                expires_at=self.expires_at)


@effect
class DropToken(Effect):
    """Forget a scope's credential, if it is still `authorization` (another may have stored a newer one)."""

    scope: str
    authorization: str = field(repr=False)

    def run(self, payer: Payer) -> bool:
        if payer.ledger.token_for(self.scope) != self.authorization:
            return False
        return payer.ledger.drop_token(self.scope)


# -- calls: the application's own retry of a paid call never pays again ---------------------------
@effect
class CallKey(Effect):
    """The ledger's key for this call (its fingerprint: method, URL, body), issued afresh or the
    one issued within the payer's call window, with the payment already made for it, if any.
    `key`: the caller's own Idempotency-Key, used as the call's key."""

    fingerprint: str
    key: str | None = None

    def run(self, payer: Payer) -> Call:
        return payer.ledger.call(self.fingerprint, window=timedelta(seconds=payer.call_window_s), key=self.key)


@effect
class CallNow(Effect):
    """The call as the ledger has it now (None: gone), read without the write lock: a request
    waiting for another's payment of the same call polls it."""

    call_id: int

    def run(self, payer: Payer) -> Call | None:
        return payer.ledger.get_call(self.call_id)


@effect
class RecordCall(Effect):
    """Keep on the call the credential its payment presents (secret), to present it again on a retry."""

    call_id: int
    receipt_id: int
    headers: Mapping[str, str] = field(repr=False)

    def run(self, payer: Payer) -> None:
        payer.ledger.record_call(self.call_id, self.receipt_id, dict(self.headers))


@effect
class CallAnswered(Effect):
    """The call's answer reached the application: the same request sent again is a new call."""

    call_id: int

    def run(self, payer: Payer) -> None:
        payer.ledger.answer_call(self.call_id)


@effect
class SignMessage(Effect):
    """Have the signer sign a text message by EIP-191 (a sign-in: it pays nothing)."""

    message: str

    def run(self, payer: Payer) -> bytes:
        signature: bytes = payer.signer.sign_message(self.message)
        return signature
