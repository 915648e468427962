"""MPP `lightning` sessions ([lns]), paid from an httpay client's wallet within its policy and ledger.

A session is opened by paying a deposit invoice and sending `open {preimage, returnInvoice}` (the
return invoice is an amount-less invoice of the client's own wallet, for the refund); each later
request presents `bearer {sessionId, preimage}` and the service debits the deposit. When the
deposit runs out the service answers a fresh 402 (or, mid-stream, `event: payment-need-topup`):
the session pays that challenge's deposit invoice and sends `topUp`, then goes on. `close` asks for
the unspent rest back on the return invoice.

Every deposit and top-up is held to the policy like a payment (its hosts, the per-payment cap, the
approver when there is one: asked with a quote of the deposit), and the ledger holds it as one
(reserved pending within the policy's limits before the wallet is called, then settled), keeps what the session spent in the row's note,
and on close gives back to the budgets what was refunded (the rows' amounts become what was spent).

Once a deposit is written down, nothing cuts it short: an `AsyncMppSession` task cancelled (or an
`MppSession` given Ctrl-C in the main thread) meanwhile stops only once the wallet's answer is
recorded, the `open` or `topUp` it paid for is answered and a close's refund is given back; the
session then holds the deposit, and its next request uses it instead of paying another.

The protocol steps are written once as generators of two kinds of step (an HTTP exchange, a blocking
call to the wallet or the ledger); `MppSession` runs them with an httpx.Client and `AsyncMppSession`
with an httpx.AsyncClient (blocking calls in a worker thread), so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Self, TypeVar

import httpx

from httpay.core.effects import Ask
from httpay.core.model import Challenge, Money, Offer, Quote
from httpay.core.pooled import kept
from httpay.core.quote import fee_cap_for, quote
from httpay.core.rates import resolve_rate
from httpay.core.transport import _approve_async, _approve_sync
from httpay.core.workers import in_thread, to_the_end, to_the_end_in_thread
from httpay.errors import (
    ChallengeError,
    ConfigError,
    InvoiceError,
    PaidRequestFailed,
    PaymentOutcomeUnknown,
    PaymentRefused,
    SessionError,
    WalletError,
)
from httpay.hosts import url_host
from httpay.ledger.base import Intent
from httpay.ledger.models import Receipt
from httpay.lightning import decode_invoice
from httpay.protocols import mpp as wire
from httpay.safe import clean, get_logger
from httpay.safe import loads as safe_loads
from httpay.wallets.base import Payment

__all__ = ["AsyncMppSession", "MppSession", "SessionError", "SessionState", "SseEvent", "SseParser"]

log = get_logger("httpay.mpp.session")

T = TypeVar("T")
MAX_TOP_UPS_PER_REQUEST = 1  # a request that still finds the session empty after a top-up gives up (pays no more)


@dataclass(frozen=True)
class _Http:
    """An HTTP exchange. `kept`: one that moves money (the `open` or `topUp` a deposit was paid for,
    the `close` that brings the refund back), made and answered whatever a cancellation (see `_run`).
    `stream`: its body is left to stream (a refusal's is read)."""

    request: httpx.Request
    kept: bool = False
    stream: bool = False


@dataclass(frozen=True)
class _Call:
    """A blocking call to the wallet or the ledger. `kept`: it begins the stretch a cancellation
    never cuts short (the deposit written down). `pays`: the wallet's payment, never begun once a
    cancellation is held."""

    fn: Callable[[], Any]
    kept: bool = False
    pays: bool = False


@dataclass(frozen=True)
class _Ask:
    """Ask the policy's approver, as the flow does (the client's own drivers' approval rules)."""

    quote: Quote


Step = _Http | _Call | _Ask
Steps = Generator[Step, Any, T]


@dataclass(frozen=True)
class SseEvent:
    """One server-sent event: its `event` name (None for plain data) and its data text (untrusted)."""

    event: str | None
    data: str

    def json(self) -> Any:
        """The data as JSON (ValueError when it is not, or nests too deep: never RecursionError)."""
        return safe_loads(self.data)


class SseParser:
    """Lines of a `text/event-stream` in, events out (RFC: `event:`/`data:` lines, a blank line ends one)."""

    def __init__(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> SseEvent | None:
        if line == "":
            if not self._data and self._event is None:
                return None
            done = SseEvent(self._event, "\n".join(self._data))
            self._event, self._data = None, []
            return done
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


@dataclass
class SessionState:
    """Where a session stands (no secrets): what was deposited, spent and refunded, and its ledger rows."""

    url: str
    host: str
    status: str = "new"  # new, open, closed
    session_id: str | None = None
    unit_sat: int | None = None
    deposited_sat: int = 0
    spent_sat: int = 0
    units: int = 0
    refund_sat: int = 0
    refund_status: str | None = None
    receipt_ids: list[int] = field(default_factory=list)


class _Core:
    """The session's protocol as steps; shared by the sync and async sessions."""

    def __init__(self, payer: Any, url: str) -> None:
        if payer.wallet is None:
            raise ConfigError("an MPP lightning session needs a Lightning wallet: pass wallet= to the client")
        self.payer = payer
        url_obj = httpx.URL(url)
        self.state = SessionState(url=str(url_obj), host=url_host(url_obj.host, url_obj.port))
        self._challenge: wire.MppChallenge | None = None
        self._preimage: str | None = None
        self._return_invoice: str | None = None
        self._stream_base = 0  # what the session had spent when the current stream began (sat)
        self._streamed = 0     # data events the current stream delivered: one unit each

    # -- helpers ----------------------------------------------------------------------------
    def _with_credential(self, request: httpx.Request, header_value: str, challenge: wire.MppChallenge) -> httpx.Request:
        headers = httpx.Headers(request.headers)
        headers[challenge.credential_header] = header_value
        return httpx.Request(request.method, request.url, headers=headers, content=request.content,
                             extensions=dict(request.extensions))

    def _plain(self, method: str = "GET") -> httpx.Request:
        return httpx.Request(method, self.state.url)

    @staticmethod
    def session_challenge(response: httpx.Response) -> wire.MppChallenge | None:
        if response.status_code != 402:
            return None
        try:
            found = wire.parse(402, response.headers)
        except ChallengeError:
            return None
        chosen = found.by_kind("lightning", "session") if found else []
        return chosen[0] if chosen else None

    def _note(self, receipt_id: int | None = None) -> Steps[None]:
        target = receipt_id if receipt_id is not None else (self.state.receipt_ids[-1] if self.state.receipt_ids else None)
        if target is None:
            return
        s = self.state
        text = (f"MPP session {(s.session_id or '')[:12]}…: {s.status}, deposited {s.deposited_sat} sat, "
                f"spent {s.spent_sat} sat ({s.units} units)")
        if s.refund_status == "succeeded":
            text += f", refund {s.refund_sat} sat succeeded"
        elif s.refund_status:
            text += f", refund: {s.refund_status}"
        yield _Call(lambda: self.payer.ledger.note(target, text))

    def read_receipt(self, response: httpx.Response) -> Steps[None]:
        """What the service says the session spent (its receipt's `spent`/`units`), written to the ledger."""
        try:
            receipt = wire.read_receipt(response.headers)
        except ChallengeError:
            receipt = None
        if receipt is None or response.status_code >= 300:
            return
        spent, units = receipt.extra.get("spent"), receipt.extra.get("units")
        if isinstance(spent, int) and not isinstance(spent, bool) and 0 <= spent <= self.state.deposited_sat:
            self.state.spent_sat = spent
        if isinstance(units, int) and not isinstance(units, bool) and units >= 0:
            self.state.units = units
        yield from self._note()

    # -- paying a deposit (open or top-up) --------------------------------------------------
    def deposit(self, challenge: wire.MppChallenge, what: str) -> Steps[str]:
        """Check the deposit invoice against the challenge and the policy, write it down, pay it; the preimage."""
        payer, policy, wallet = self.payer, self.payer.policy, self.payer.wallet
        offer = wire.LightningSession.from_challenge(challenge)
        invoice = decode_invoice(offer.deposit_invoice)
        wire.check_charge_invoice(offer.as_charge(), invoice, expires=challenge.expires)
        if invoice.network != wallet.network:
            raise InvoiceError(f"the deposit invoice is for {invoice.network}, the wallet pays on {wallet.network}",
                               check="network")
        pinned = policy.payee_for(self.state.host)
        if pinned and invoice.payee != pinned:
            raise InvoiceError("the deposit invoice pays another node than the one pinned for this host", check="payee")
        if self.state.unit_sat is not None and offer.unit_sat != self.state.unit_sat:
            raise SessionError(f"the service changed the session's price from {self.state.unit_sat} to "
                               f"{offer.unit_sat} sat a unit; not topping up")
        amount_msat = offer.deposit_sat * 1000
        # the one place a rate is resolved (policy, its source, the wallet), as a blocking step: the
        # async session asks the wallet in a worker thread, never on its event loop
        rate: float | None = yield _Call(partial(resolve_rate, policy, wallet))
        # the one quote() every payment passes: hosts, methods, the per-payment cap, then the approver
        decided = self._quote(challenge, offer, invoice.network, rate, what)
        if policy.needs_approval():
            answer = yield _Ask(decided)
            if answer is not True and answer is not decided.offer and answer != decided.offer.offer_id:
                raise PaymentRefused(f"refused: the approver did not approve the session's {what} of "
                                     f"{offer.deposit_sat} sat", rule="approval", offers=decided.challenge.offers)
        fee_cap = fee_cap_for(policy, amount_msat, decided.cap_msat)
        intent = Intent(host=self.state.host, url=self.state.url, protocol="mpp", method="lightning",
                        amount_msat=amount_msat, payment_hash=offer.payment_hash,
                        offer_id=f"session-{what}", offer_title=f"MPP session {what}",
                        offer_amount=offer.deposit_sat, offer_currency="SAT", challenge_key=challenge.id,
                        max_fee_msat=fee_cap, wallet=wallet.name, wallet_id=wallet.identity, tags=dict(payer.tags))
        limits = tuple(policy.limits(self.state.host, rate, tags=payer.tags))
        row: Receipt = yield _Call(lambda: payer.ledger.reserve(intent, limits, usd_per_btc=rate), kept=True)
        asked: list[bool] = []

        def pay() -> Payment:
            asked.append(True)
            paid: Payment = wallet.pay_invoice(offer.deposit_invoice, max_fee_msat=fee_cap)
            return paid

        try:
            payment: Payment = yield _Call(pay, pays=True)
        except Exception as exc:  # any failure but a known one leaves the deposit's outcome unknown
            reason = f"wallet: {type(exc).__name__}"
            if isinstance(exc, WalletError) and exc.outcome_known:
                yield _Call(lambda: payer.ledger.fail(row.id, reason))
                raise
            lost = f"outcome unknown: {type(exc).__name__}; the wallet's answer was lost: reconcile before paying again"
            noted: Receipt = yield _Call(lambda: payer.ledger.note(row.id, lost))
            if isinstance(exc, WalletError):
                raise
            raise PaymentOutcomeUnknown(f"the wallet did not say whether it paid the session's {what} (ledger "
                                        f"#{row.id} stays pending; run `httpay ledger reconcile` later): "
                                        f"{type(exc).__name__} from the wallet", receipt=noted) from None
        except GeneratorExit:  # the steps closed by their driver: no step may follow
            raise
        except BaseException:  # cancelled before the wallet was asked, or interrupted (a second Ctrl-C) while it paid
            yield from self._stopped(row, what, paying=bool(asked))
            raise
        if not payment.proves(offer.payment_hash):
            yield _Call(lambda: payer.ledger.note(row.id, "the wallet's preimage does not prove the deposit"))
            raise WalletError("the wallet reported the deposit paid but its preimage does not match", outcome_known=False)
        assert payment.preimage is not None
        preimage = payment.preimage
        yield _Call(lambda: payer.ledger.settle(row.id, preimage=preimage, fee_msat=payment.fee_msat))
        self.state.receipt_ids.append(row.id)
        self.state.deposited_sat += offer.deposit_sat
        self.state.unit_sat = offer.unit_sat
        log.info("MPP session %s: paid %s sat (ledger #%d)", what, offer.deposit_sat, row.id)
        return preimage

    def _stopped(self, row: Receipt, what: str, *, paying: bool) -> Steps[None]:
        """What a deposit stopped around its wallet call leaves: never asked, the row is failed
        (nothing was paid, nothing counted); stopped while the wallet paid, its answer is lost, so
        the row stays pending and counted and says so."""
        ledger = self.payer.ledger
        if paying:
            reason = f"outcome unknown: interrupted while the wallet paid the session's {what}; reconcile before paying again"
            step = _Call(lambda: ledger.note(row.id, reason))
        else:
            reason = f"the session's {what} was cancelled before the wallet was asked; nothing was paid"
            step = _Call(lambda: ledger.fail(row.id, reason))
        try:
            yield step
        except Exception:  # noqa: BLE001 - the cancellation reaches the caller whatever the ledger does
            log.warning("MPP session %s: could not write down on ledger #%d that it was stopped", what, row.id)

    def _quote(self, challenge: wire.MppChallenge, offer: wire.LightningSession, network: str, rate: float | None,
               what: str) -> Quote:
        """The deposit as the one offer of a challenge, decided by `quote()` like every payment (the
        ledger checks the budgets when it writes the deposit down); the approver sees this quote."""
        unit = offer.unit_type or "unit"
        title = clean(f"MPP session {what}: {offer.deposit_sat} sat at {offer.unit_sat} sat a {unit}", 200)
        found = Offer(offer_id=f"session-{what}", title=title, description=title, type="session",
                      price=Money.msat(offer.deposit_sat * 1000), payment_methods=("lightning",), dialect=wire.PROTOCOL,
                      pay_method="lightning", rail="lightning", network=network)
        neutral = Challenge(wire.PROTOCOL, (found,), challenge.id, url=self.state.url, reuse="request")
        return quote(neutral, self.payer.policy, url=self.state.url, host=self.state.host, usd_per_btc=rate,
                     spent_msat=0, cannot_pay=self.payer.cannot_pay)

    # -- the actions -----------------------------------------------------------------------
    def prepare_open(self, request: httpx.Request) -> Steps[httpx.Response | httpx.Request]:
        """Meet the 402, pay its deposit and build the `open` request; the response as it came when the
        service did not ask for a session."""
        response: httpx.Response = yield _Http(request)
        challenge = self.session_challenge(response)
        if challenge is None:
            return response
        wire.LightningSession.from_challenge(challenge)  # a malformed session request is refused before anything
        ret = yield from self.return_invoice()  # before paying: a wallet that cannot receive opens no session
        preimage = yield from self.deposit(challenge, "deposit")
        self._challenge, self._preimage, self._return_invoice = challenge, preimage, ret
        self.state.session_id = wire.LightningSession.from_challenge(challenge).payment_hash
        self.state.status = "open"
        yield from self._note()
        return self._with_credential(request, challenge.credential(wire.LightningSession.open_payload(preimage, ret)),
                                     challenge)

    def return_invoice(self) -> Steps[str]:
        """An amount-less invoice of the wallet's own, for the refund, checked to be one."""
        wallet = self.payer.wallet
        try:
            ret: str = yield _Call(lambda: wallet.create_receive_invoice(None, description="MPP session refund"))
        except NotImplementedError:
            raise ConfigError(f"the {wallet.name} wallet cannot create the amount-less return invoice an MPP session "
                              "refunds to; use a wallet that can receive (e.g. DemoWallet)") from None
        try:
            invoice = decode_invoice(ret)
        except (InvoiceError, ChallengeError, ValueError):
            raise WalletError("the wallet's return invoice is not a BOLT11 invoice") from None
        if invoice.amount_msat is not None or invoice.network != wallet.network:
            raise WalletError("the wallet's return invoice is not an amount-less invoice on its own network")
        return ret

    def bearer(self, request: httpx.Request) -> httpx.Request:
        assert self._challenge is not None and self._preimage is not None and self.state.session_id is not None
        payload = wire.LightningSession.bearer_payload(self.state.session_id, self._preimage)
        return self._with_credential(request, self._challenge.credential(payload), self._challenge)

    def top_up(self, challenge: wire.MppChallenge) -> Steps[None]:
        """Pay a fresh challenge's deposit invoice and send `topUp` on it."""
        assert self.state.session_id is not None
        preimage = yield from self.deposit(challenge, "top-up")
        credential = challenge.credential(wire.LightningSession.top_up_payload(self.state.session_id, preimage))
        response: httpx.Response = yield from self._after_deposit(
            self._with_credential(self._plain(), credential, challenge), "take the top-up")
        if response.status_code != 200:
            yield from self.paid_but_refused(response, "take the top-up")
        yield from self._note()

    def stream_started(self) -> None:
        self._stream_base, self._streamed = self.state.spent_sat, 0

    def streamed(self, event: SseEvent) -> None:
        if event.event is None and event.data != "[DONE]":
            self._streamed += 1

    def top_up_mid_stream(self) -> Steps[None]:
        """Answer `payment-need-topup`, only once what the session knows it spent (its receipts, or the
        units this stream delivered) leaves no room for the next unit: a service asking again and
        again without delivering would otherwise be paid a deposit per event."""
        unit = self.state.unit_sat or 0
        known = max(self.state.spent_sat, self._stream_base + self._streamed * unit)
        if known + unit <= self.state.deposited_sat:
            raise SessionError(f"the service asks for a top-up mid-stream, but only {known} sat of the "
                               f"{self.state.deposited_sat} sat deposited is known to be spent; not paying again "
                               "(session left open: close it for the refund)")
        challenge = yield from self.fresh_challenge()
        yield from self.top_up(challenge)

    def fresh_challenge(self) -> Steps[wire.MppChallenge]:
        response: httpx.Response = yield _Http(self._plain())
        challenge = self.session_challenge(response)
        if challenge is None:
            raise SessionError(f"the service answered {response.status_code}, not a session challenge, when asked "
                               "for a top-up")
        return challenge

    def request(self, request: httpx.Request) -> Steps[httpx.Response]:
        """One request within the session: open it on first use, bearer afterwards, top up on a 402 that
        asks for more."""
        if self.state.status == "closed":
            raise SessionError("this MPP session is closed; open a new one")
        if self.state.status == "new":
            prepared = yield from self.prepare_open(request)
            if isinstance(prepared, httpx.Response):
                return prepared
            response: httpx.Response = yield from self._after_deposit(prepared, "open the session")
            if response.status_code == 402 or response.status_code >= 500:
                yield from self.paid_but_refused(response, "open the session")
            yield from self.read_receipt(response)
            return response
        for top_ups in range(MAX_TOP_UPS_PER_REQUEST + 1):
            response = yield _Http(self.bearer(request))
            yield from self.read_receipt(response)
            challenge = self.session_challenge(response)
            problem = wire.read_problem(response.content) if response.status_code == 402 else None
            if challenge is None or problem is None or problem.kind != "payment-insufficient":
                return response
            if top_ups == MAX_TOP_UPS_PER_REQUEST:
                raise SessionError(f"the service still asks for more after {top_ups} top-up(s) for one request; "
                                   "not paying again (session left open: close it for the refund)")
            yield from self.top_up(challenge)
        return response

    def _after_deposit(self, request: httpx.Request, what: str, *, stream: bool = False) -> Steps[httpx.Response]:
        """The exchange a deposit was paid for: a connection that breaks off is PaidRequestFailed with
        the deposit's row, never httpx's bare error (the money has left)."""
        try:
            response: httpx.Response = yield _Http(request, kept=True, stream=stream)
        except httpx.HTTPError as exc:
            row = self.state.receipt_ids[-1]
            if what == "open the session":
                self.state.status = "closed"
            said = f"the connection broke off ({type(exc).__name__})"
            receipt = yield _Call(lambda: self.payer.ledger.note(row, f"paid, but when asked to {what} {said}"))
            raise PaidRequestFailed(f"the deposit is paid (ledger #{row}) but when asked to {what} {said}; the "
                                    "receipt is kept", receipt=receipt) from None
        return response

    def open_stream(self, request: httpx.Request) -> Steps[httpx.Response]:
        """Open the session with the request whose answer streams: the deposit paid and presented, the
        answer's body left to stream when it is a 200 (a refusal is PaidRequestFailed with the row)."""
        prepared = yield from self.prepare_open(request)
        if isinstance(prepared, httpx.Response):
            raise SessionError(f"the service answered {prepared.status_code}, not a session challenge")
        response = yield from self._after_deposit(prepared, "open the session", stream=True)
        if response.status_code != 200:
            yield from self.paid_but_refused(response, "open the session")
        return response

    def paid_but_refused(self, response: httpx.Response, what: str) -> Steps[None]:
        """The deposit left the wallet but the service would not `what`: PaidRequestFailed with its row."""
        row = self.state.receipt_ids[-1]
        problem = wire.read_problem(response.content)
        said = f" ({clean(problem.kind, 60)})" if problem else ""  # server text: cleaned
        self.state.status = "closed" if what == "open the session" else self.state.status
        receipt = yield _Call(lambda: self.payer.ledger.note(
            row, f"paid, but the service would not {what}: {response.status_code}{said}"))
        raise PaidRequestFailed(f"the service took the payment (ledger #{row}) but would not {what}: it answered "
                                f"{response.status_code}{said}", receipt=receipt, response=response)

    def close(self) -> Steps[SessionState]:
        """Ask for the unspent deposit back; give the refund back to the budgets in the ledger."""
        if self.state.status != "open":
            self.state.status = "closed"
            return self.state
        assert self._challenge is not None and self._preimage is not None and self.state.session_id is not None
        payload = wire.LightningSession.close_payload(self.state.session_id, self._preimage)
        self.state.status = "closed"
        try:
            response: httpx.Response = yield _Http(self._with_credential(
                self._plain(), self._challenge.credential(payload), self._challenge), kept=True)
        except httpx.HTTPError as exc:  # no refund known: budgets keep counting the deposits
            self.state.refund_status = f"unknown: the close broke off ({type(exc).__name__})"
            yield from self._note()
            raise SessionError(f"closing the MPP session broke off ({type(exc).__name__}); no refund is known, so "
                               "budgets still count its deposits") from None
        try:
            body = response.json() if response.status_code == 200 else {}
        except ValueError:
            body = {}
        refund = body.get("refundSats") if isinstance(body, dict) else None
        status = body.get("refundStatus") if isinstance(body, dict) else None
        spent = body.get("spentSats") if isinstance(body, dict) else None
        if isinstance(spent, int) and not isinstance(spent, bool) and 0 <= spent <= self.state.deposited_sat:
            self.state.spent_sat = spent
        if status == "succeeded" and isinstance(refund, int) and not isinstance(refund, bool) \
                and 0 < refund <= self.state.deposited_sat:
            yield from self._confirm_refund(refund)
        else:
            self.state.refund_status = status if status in ("failed", "skipped") else f"not refunded ({response.status_code})"
        yield from self._note()
        return self.state

    def _confirm_refund(self, claimed_sat: int) -> Steps[None]:
        """A refund is given back to the budgets as far as the wallet saw it arrive on the return
        invoice, never on the service's word: a service claiming refunds it never paid would
        otherwise empty a budget session by session."""
        assert self._return_invoice is not None
        payment_hash = decode_invoice(self._return_invoice).payment_hash
        wallet = self.payer.wallet

        def received() -> int | None:
            try:
                got: int | None = wallet.received_msat(payment_hash)
                return got
            except NotImplementedError:
                return None
            except Exception as exc:  # noqa: BLE001 - an unconfirmed refund stays counted, whatever the wallet did
                log.warning("MPP session refund not confirmed: %s", type(exc).__name__)
                return None

        got_msat: int | None = yield _Call(received)
        if got_msat is None:
            self.state.refund_status = (f"the service says it refunded {claimed_sat} sat; the {wallet.name} wallet "
                                        "cannot confirm it, so budgets still count the deposit")
            return
        confirmed = min(claimed_sat, got_msat // 1000)
        self.state.refund_sat = confirmed
        self.state.refund_status = ("succeeded" if confirmed == claimed_sat else
                                    f"the service says it refunded {claimed_sat} sat; the wallet received {confirmed}")
        if confirmed:
            yield from self._give_back(confirmed)

    def _give_back(self, refund_sat: int) -> Steps[None]:
        """The refund came back: the newest deposit rows shrink by it, so budgets count what was spent."""
        left = refund_sat * 1000
        for row_id in reversed(self.state.receipt_ids):
            if left <= 0:
                break
            row: Receipt = yield _Call(partial(self.payer.ledger.get, row_id))
            cut = min(left, row.amount_msat)
            left -= cut
            yield _Call(partial(self.payer.ledger.settle, row.id, preimage=row.preimage or "", fee_msat=row.fee_msat,
                                amount_msat=row.amount_msat - cut))


def _kept(step: Step, guarded: bool) -> bool:
    """Whether `step` runs to its end whatever a cancellation (or Ctrl-C) that comes meanwhile: a
    step that moves money or begins writing a deposit down, and, in the stretch one begins, every
    blocking call (the wallet's answer, the ledger's writes, the refund looked up). A request or an
    approval of the steps' own ends the stretch."""
    if isinstance(step, _Ask):
        return False
    return step.kept or (guarded and isinstance(step, _Call))


def _said_stopped(how: str, exc: BaseException) -> None:
    log.warning("the MPP session was %s while its money moved, which then ended in %s: %s", how,
                type(exc).__name__, clean(str(exc), 300))


def _close_answer(answer: Any) -> None:
    if isinstance(answer, httpx.Response):
        answer.close()  # nobody will read it


async def _aclose_answer(answer: Any) -> None:
    if isinstance(answer, httpx.Response):
        await answer.aclose()


class _HeldInterrupt:
    """Ctrl-C held while a sync session's money moves: the first SIGINT is kept (`came`), for the
    driver to raise as KeyboardInterrupt once the session holds what was paid; a second one
    interrupts at once. Only in the main thread, and only in place of Python's own SIGINT handler:
    a program's own handler is left alone (its Ctrl-C comes as it decides)."""

    def __init__(self) -> None:
        self.came = False
        self._before: Any = None

    def hold(self) -> None:
        if self._before is not None or threading.current_thread() is not threading.main_thread():
            return
        try:
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._before = signal.signal(signal.SIGINT, self._on_sigint)
        except (ValueError, OSError):  # not the main interpreter: Ctrl-C comes as it always does
            self._before = None

    def _on_sigint(self, signum: int, frame: object) -> None:
        if self.came:
            self.let_go()
            raise KeyboardInterrupt
        self.came = True
        log.warning("Ctrl-C: the MPP session stops once the money it moved is recorded; press it again to stop at "
                    "once (leaving the ledger row pending)")

    def let_go(self) -> None:
        if self._before is not None:
            before, self._before = self._before, None
            signal.signal(signal.SIGINT, before)


def _payer_of(client: Any) -> Any:
    payer = getattr(client, "payer", None)
    if payer is None or not hasattr(payer, "ledger"):
        raise ConfigError("an MPP session is opened from an httpay.Client or httpay.AsyncClient (it pays with its "
                          "wallet, policy and ledger)")
    return payer


def _register(client: Any, session: Any) -> None:
    """The client closes its open sessions (with their refunds) when it is closed."""
    sessions = client.__dict__.setdefault("_mpp_sessions", [])
    sessions.append(session)


class MppSession:
    """A lightning session with one service, paid from `client`'s wallet within its policy and ledger.

    `session.get(url)` (or `request`) opens the session on first use and presents the bearer
    credential afterwards, topping up when the service asks; `stream(...)` reads an SSE stream and
    tops up when `payment-need-topup` arrives; `close()` asks for the refund (also on `with` exit and
    when the client closes). Requests go over the session's own httpx connection, never through the
    paying transport, so the flow never pays a session challenge on its own.
    """

    def __init__(self, client: Any, url: str, *, http: httpx.Client | None = None) -> None:
        self._core = _Core(_payer_of(client), url)
        self._own_http = http is None
        timeout = getattr(client, "timeout", None)
        self._http = http if http is not None else kept(httpx.Client(timeout=30.0 if timeout is None else timeout))
        self._lock = threading.RLock()
        _register(client, self)

    @property
    def state(self) -> SessionState:
        return self._core.state

    def _run(self, steps: Steps[T]) -> T:
        """Perform the steps in this thread. From a deposit written down (or the close sent) until
        the steps next go out on their own, a Ctrl-C is held (`_HeldInterrupt`: in the main thread,
        over Python's own handler): the wallet's answer, the ledger's writes and the exchange the
        money moved for reach their end, then KeyboardInterrupt is raised, a payment not yet begun
        never begun; a second Ctrl-C interrupts at once."""
        value: Any = None
        error: BaseException | None = None
        guarded = False
        held = _HeldInterrupt()
        try:
            while True:
                try:
                    step = steps.throw(error) if error is not None else steps.send(value)
                except StopIteration as done:
                    held.let_go()
                    if held.came:
                        _close_answer(done.value)
                        raise KeyboardInterrupt from None
                    return done.value  # type: ignore[no-any-return]
                except BaseException as exc:
                    held.let_go()
                    if not held.came or isinstance(exc, KeyboardInterrupt):
                        raise
                    _said_stopped("interrupted", exc)
                    raise KeyboardInterrupt from exc
                value, error = None, None
                if _kept(step, guarded):
                    if held.came and isinstance(step, _Call) and step.pays:
                        error = KeyboardInterrupt()  # never begun once interrupted: nothing is paid
                        continue
                    if not guarded:
                        held.hold()
                        guarded = True
                else:
                    held.let_go()
                    if held.came:
                        error = KeyboardInterrupt()  # the steps would go out again: interrupted instead
                        continue
                    guarded = False
                try:
                    if isinstance(step, _Http):
                        value = self._send(step)
                    elif isinstance(step, _Ask):
                        value = _approve_sync(self._core.payer, Ask(step.quote))
                    else:
                        value = step.fn()
                except BaseException as exc:  # noqa: BLE001 - handed to the steps, which decide
                    error = exc
        finally:
            held.let_go()
            steps.close()

    def _send(self, step: _Http) -> httpx.Response:
        response = self._http.send(step.request, stream=step.stream)
        if step.stream and response.status_code != 200:
            try:
                response.read()
            except BaseException:
                response.close()
                raise
        return response

    def request(self, method: str, url: str | None = None, **kwargs: Any) -> httpx.Response:
        with self._lock:
            request = self._http.build_request(method, url or self.state.url, **kwargs)
            return self._run(self._core.request(request))

    def get(self, url: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def stream(self, method: str = "GET", url: str | None = None, **kwargs: Any) -> Iterator[SseEvent]:
        """The events of an SSE response paid from the session; a `payment-need-topup` is answered with
        a top-up on a fresh challenge while the stream waits (the event is still yielded)."""
        with self._lock:
            request = self._http.build_request(method, url or self.state.url, **kwargs)
            if self.state.status == "closed":
                raise SessionError("this MPP session is closed; open a new one")
            opened: httpx.Response | None = None
            if self.state.status == "new":  # the deposit paid and presented with this request (a refusal raises)
                opened = self._run(self._core.open_stream(request))
            else:
                request = self._core.bearer(request)
        # the lock is not held while the caller reads: it may use the session between events
        response = opened if opened is not None else self._http.send(request, stream=True)
        try:
            if response.status_code != 200:
                response.read()
                raise SessionError(f"the service answered {response.status_code} to the session's stream")
            parser = SseParser()
            self._core.stream_started()
            for line in response.iter_lines():
                event = parser.feed(line)
                if event is None:
                    continue
                self._core.streamed(event)
                self._on_event(event)
                yield event
        finally:
            response.close()

    def _on_event(self, event: SseEvent) -> None:
        with self._lock:
            if event.event == "payment-need-topup":
                self._run(self._top_up_now())
            elif event.event == "payment-receipt":
                self._read_event_receipt(event)

    def _top_up_now(self) -> Steps[None]:
        return self._core.top_up_mid_stream()

    def _read_event_receipt(self, event: SseEvent) -> None:
        try:
            doc = event.json()
        except ValueError:
            return
        fake = httpx.Response(200, headers={"payment-receipt": wire.receipt_header(doc)} if isinstance(doc, dict) else {})
        self._run(self._core.read_receipt(fake))

    def close(self) -> SessionState:
        """Close the session: the service refunds what is left to the return invoice."""
        with self._lock:
            try:
                return self._run(self._core.close())
            finally:
                if self._own_http:
                    self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.state
        return f"MppSession(url={s.url!r}, status={s.status!r}, deposited_sat={s.deposited_sat}, spent_sat={s.spent_sat})"


class AsyncMppSession:
    """The async twin of `MppSession`, running the very same steps."""

    def __init__(self, client: Any, url: str, *, http: httpx.AsyncClient | None = None) -> None:
        self._core = _Core(_payer_of(client), url)
        self._own_http = http is None
        timeout = getattr(client, "timeout", None)
        self._http = http if http is not None else kept(httpx.AsyncClient(timeout=30.0 if timeout is None else timeout))
        self._lock = asyncio.Lock()
        _register(client, self)

    @property
    def state(self) -> SessionState:
        return self._core.state

    async def _run(self, steps: Steps[T]) -> T:
        """Perform the steps: requests awaited, blocking calls in a worker thread.

        From a deposit written down (or the close sent) until the steps next go out on their own (a
        request, an approval), nothing is cut short: a cancellation that comes meanwhile is held,
        the wallet's answer, the ledger's writes and the exchange the money moved for (the `open`,
        the `topUp`, the `close`, within the HTTP client's timeout) reach their end, and then the
        cancellation is raised, a payment not yet begun never begun. The session holds what was
        paid, so its next request uses it instead of paying again; the task ends cancelled."""
        value: Any = None
        error: BaseException | None = None
        guarded = False
        cancelled: BaseException | None = None  # a cancellation held while the money's moves are recorded
        try:
            while True:
                try:
                    step = steps.throw(error) if error is not None else steps.send(value)
                except StopIteration as done:
                    if cancelled is not None:
                        await _aclose_answer(done.value)
                        raise cancelled from None
                    return done.value  # type: ignore[no-any-return]
                except BaseException as exc:
                    if cancelled is None or exc is cancelled:
                        raise
                    _said_stopped("cancelled", exc)
                    raise cancelled from exc  # cancelled, as the caller asked, whatever the money came to
                value, error = None, None
                if _kept(step, guarded):
                    if cancelled is not None and isinstance(step, _Call) and step.pays:
                        error = cancelled  # never begun once cancelled: nothing is paid
                        continue
                    guarded = True
                    if isinstance(step, _Http):
                        ended = await to_the_end(partial(self._send, step))
                    else:
                        assert isinstance(step, _Call)
                        ended = await to_the_end_in_thread(step.fn)
                    value, error, cancelled = ended.value, ended.error, cancelled or ended.cancelled
                    continue
                if cancelled is not None:
                    error = cancelled  # the steps would go out again: cancelled instead, as the caller asked
                    continue
                guarded = False
                try:
                    if isinstance(step, _Http):
                        value = await self._send(step)
                    elif isinstance(step, _Ask):
                        value = await _approve_async(self._core.payer, Ask(step.quote))
                    else:
                        value = await in_thread(step.fn)
                except BaseException as exc:  # noqa: BLE001 - handed to the steps, which decide
                    error = exc
        finally:
            steps.close()

    async def _send(self, step: _Http) -> httpx.Response:
        response = await self._http.send(step.request, stream=step.stream)
        if step.stream and response.status_code != 200:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response

    async def request(self, method: str, url: str | None = None, **kwargs: Any) -> httpx.Response:
        async with self._lock:
            request = self._http.build_request(method, url or self.state.url, **kwargs)
            return await self._run(self._core.request(request))

    async def get(self, url: str | None = None, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def stream(self, method: str = "GET", url: str | None = None, **kwargs: Any) -> AsyncIterator[SseEvent]:
        async with self._lock:
            request = self._http.build_request(method, url or self.state.url, **kwargs)
            if self.state.status == "closed":
                raise SessionError("this MPP session is closed; open a new one")
            opened: httpx.Response | None = None
            if self.state.status == "new":  # the deposit paid and presented with this request (a refusal raises)
                opened = await self._run(self._core.open_stream(request))
            else:
                request = self._core.bearer(request)
        # the lock is not held while the caller reads: it may use the session between events
        response = opened if opened is not None else await self._http.send(request, stream=True)
        try:
            if response.status_code != 200:
                await response.aread()
                raise SessionError(f"the service answered {response.status_code} to the session's stream")
            parser = SseParser()
            self._core.stream_started()
            async for line in response.aiter_lines():
                event = parser.feed(line)
                if event is None:
                    continue
                self._core.streamed(event)
                async with self._lock:
                    if event.event == "payment-need-topup":
                        await self._run(self._top_up_now())
                    elif event.event == "payment-receipt":
                        await self._read_event_receipt(event)
                yield event
        finally:
            await response.aclose()

    def _top_up_now(self) -> Steps[None]:
        return self._core.top_up_mid_stream()

    async def _read_event_receipt(self, event: SseEvent) -> None:
        try:
            doc = event.json()
        except ValueError:
            return
        fake = httpx.Response(200, headers={"payment-receipt": wire.receipt_header(doc)} if isinstance(doc, dict) else {})
        await self._run(self._core.read_receipt(fake))

    async def close(self) -> SessionState:
        async with self._lock:
            try:
                return await self._run(self._core.close())
            finally:
                if self._own_http:
                    await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        s = self.state
        return f"AsyncMppSession(url={s.url!r}, status={s.status!r}, deposited_sat={s.deposited_sat}, spent_sat={s.spent_sat})"


def close_sessions(client: Any) -> list[SessionState]:
    """Close the sync sessions a client opened (called when the client closes); errors are logged, not raised."""
    done = []
    for session in client.__dict__.pop("_mpp_sessions", []):
        if isinstance(session, MppSession) and session.state.status == "open":
            try:
                done.append(session.close())
            except Exception as exc:  # noqa: BLE001 - closing the client must not fail on one session
                log.warning("closing an MPP session failed: %s", type(exc).__name__)
    return done


async def aclose_sessions(client: Any) -> list[SessionState]:
    """The async twin of `close_sessions`."""
    done = []
    for session in client.__dict__.pop("_mpp_sessions", []):
        if session.state.status != "open":
            continue
        try:
            done.append(await session.close() if isinstance(session, AsyncMppSession) else session.close())
        except Exception as exc:  # noqa: BLE001 - closing the client must not fail on one session
            log.warning("closing an MPP session failed: %s", type(exc).__name__)
    return done
