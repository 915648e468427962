"""Every error httpay raises, so callers can catch one family and read what to do next.

Each error carries a message that says what was wrong and what a person (or an agent) can
change. No error text ever holds a secret: keys, bearer tokens and preimages are redacted
before they reach a message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


def _one_line(text: str) -> str:
    """An error's words as they may be shown anywhere: URLs' secrets masked, control characters
    escaped, bounded."""
    from httpay.safe import MAX_LINE, clean, mask_urls

    return clean(mask_urls(text), MAX_LINE)


class HttpayError(Exception):
    """Base of every error httpay raises on purpose. Its text is one bounded line that never shows
    a URL's password or a credential in a URL's query (`safe.mask_urls`), with any control character
    a service slipped into it shown as an escape: errors reach terminals, logs and LLMs."""

    def __str__(self) -> str:
        return _one_line(super().__str__())


class ChallengeError(HttpayError, ValueError):
    """A 402 answer could not be read: it names the field and what was expected."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PaymentRequestError(HttpayError):
    """The service's payment-request endpoint refused or answered something unusable."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class InvoiceError(HttpayError, ValueError):
    """An invoice failed a check made before paying it (nothing was paid)."""

    def __init__(self, message: str, *, check: str) -> None:
        super().__init__(message)
        self.check = check


class PaymentRefused(HttpayError):
    """The policy (or the person approving) said no. Nothing was paid.

    `rule` names the rule that refused, `offers` holds what the service offered so a caller can
    show it or pick differently.
    """

    def __init__(self, message: str, *, rule: str, offers: Any = None, response: Any = None,
                 knob: str | None = None, advice: str | None = None) -> None:
        self.reason = message
        self.knob = knob      # the Policy field (or "max_price") a person would change
        self.advice = advice  # what to do, with "{knob}" where the surface names its own knob
        super().__init__(self.render())
        self.rule = rule
        self.offers = offers
        self.response = response

    def render(self, knobs: Mapping[str, str] | None = None) -> str:
        """The refusal with its advice naming the knob of the surface showing it.

        `knobs` maps a Policy field (and "max_price", the per-request cap) to how that surface sets
        it ("--budget-usd", "budget_usd in policy.toml", "the max_price_usd argument"); a knob it
        does not map is named as the library's (`Policy(budget_usd=...)`).
        """
        if self.advice is None:
            return _one_line(self.reason)
        if self.knob is None:
            name = "the limit in the policy"
        elif (tag := _TAG_KNOB.fullmatch(self.knob)) is not None:  # one tag's limit: said as each surface sets it
            spec, field = tag.group(2), tag.group(4)
            where = (knobs or {}).get("tag_limits")
            name = (f'{field} under [tag_limits."{spec}"] {where.removeprefix("tag_limits ")}' if where
                    else f"Policy(tag_limits={{{spec!r}: {{{field!r}: ...}}}})")
        else:
            name = (knobs or {}).get(self.knob) or LIBRARY_KNOBS.get(self.knob) or f"Policy({self.knob}=...)"
        return _one_line(f"{self.reason}; {self.advice.format(knob=name)}")

    def recorded(self) -> str:
        """The refusal as the ledger keeps it for whoever reads it later (the dashboard, another
        surface): its advice names the setting by its own name (`max_per_payment_sat`, the TOML key
        and the Policy field alike), not the spelling of the surface that happened to refuse."""
        if self.advice is None or self.knob is None:
            return self.render()
        tag = _TAG_KNOB.fullmatch(self.knob)
        name = (f'{tag.group(4)} of the tag limits for "{tag.group(2)}"' if tag is not None
                else "this request's price cap" if self.knob == "max_price" else self.knob)
        return _one_line(f"{self.reason}; {self.advice.format(knob=name)}")


class DuplicatePayment(PaymentRefused):
    """This invoice (payment hash) is already in the ledger: it is never paid twice.

    `existing` is the ledger row (a `httpay.ledger.Receipt`) that already holds it."""

    def __init__(self, message: str, *, existing: Any) -> None:
        super().__init__(message, rule="duplicate")
        self.existing = existing


class ChallengeInFlight(PaymentRefused):
    """Another payment for the same challenge is pending or just settled: wait or retry, never pay twice.

    `existing` is that payment's ledger row (a `httpay.ledger.Receipt`)."""

    def __init__(self, message: str, *, existing: Any) -> None:
        super().__init__(message, rule="in_flight")
        self.existing = existing


# How the library surface names a knob a refusal points at (Policy fields are `Policy(field=...)`).
_TAG_KNOB = re.compile(r"tag_limits\[(['\"])(.*?)\1\]\[(['\"])(.*?)\3\]")
LIBRARY_KNOBS: dict[str, str] = {
    "max_price": "the request's price cap (extensions=client.max_price(...))",
    "approval_timeout": "ApprovalQueue(timeout_s=...)",
}


class WalletError(HttpayError):
    """The wallet could not pay. `outcome_known` is False when the payment may have gone out."""

    outcome_known: bool = True

    def __init__(self, message: str, *, outcome_known: bool | None = None) -> None:
        super().__init__(message)
        if outcome_known is not None:
            self.outcome_known = outcome_known


class WalletUnreachable(WalletError):
    """The wallet could not be reached (refused, unknown host, no route): nothing was sent to it, so
    nothing was paid. A network fault to look at, not a setting."""


class InsufficientFunds(WalletError):
    """The wallet holds less than the invoice asks (plus fees)."""


class AlreadyPaid(WalletError):
    """The invoice was paid before; look the payment up instead of paying again."""


class PaymentTimeout(WalletError):
    """The wallet did not answer in time; the payment may or may not have gone out."""

    outcome_known = False


class PaidRequestFailed(HttpayError):
    """Money left for this request, then the request failed: the service timed out, reset the
    connection, or answered 5xx or a broken response on the retry the payment bought.

    `receipt` is the ledger row, kept (settled; for x402 pending when the service never said);
    `response` is the failed answer when there was one. Retrying reuses what was bought where the
    service honours it (a stored L402 token, a v0.2 credit).
    """

    def __init__(self, message: str, *, receipt: Any, response: Any = None) -> None:
        super().__init__(message)
        self.receipt = receipt
        self.response = response
class PaymentDeadlineExceeded(HttpayError):
    """The service took longer than `payment_deadline` between its 402 and the payment; nothing was paid.

    `deadline_s` is the knob's value, `stage` says what the service was slow at (e.g. "the invoice").
    """

    def __init__(self, message: str, *, deadline_s: float, stage: str) -> None:
        super().__init__(message)
        self.deadline_s = deadline_s
        self.stage = stage


class LedgerError(HttpayError):
    """The payment record could not be read or written."""


class ConfigError(HttpayError):
    """A setting is missing or wrong: the message names it and how to set it."""


class ApprovalError(HttpayError):
    """An approval could not be found or decided (unknown id, or already decided)."""


class ApprovalExpired(ApprovalError):
    """An answer to an approval nobody waits for any more: its deadline passed (`state` "expired")
    or the request that asked stopped beating (`state` "abandoned": killed, its machine gone). The
    answer is refused, because nothing would be paid for it; the approval is closed as denied so
    it is not offered again."""

    def __init__(self, message: str, *, approval_id: int, state: str) -> None:
        super().__init__(message)
        self.approval_id = approval_id
        self.state = state


class UsageError(HttpayError):
    """A command line httpay cannot run as given (exit code 2)."""


class LoopbackOnly(ConfigError, ValueError):
    """A server was asked to listen beyond this machine."""


def redact(secret: str | None, keep: int = 4) -> str:
    """Show just enough of a secret to tell two apart, never enough to use it."""
    if not secret:
        return "<none>"
    if len(secret) <= keep * 2:
        return "***"
    return f"{secret[:keep]}…{secret[-keep:]}" if keep else "***"


# -- after money may have left: each carries the ledger `receipt` (a httpay.Receipt) ------------------
class PaymentNotHonored(HttpayError):
    """The payment went out (see `receipt`) but the service still answers 402. `problem` is the
    scheme's problem type when the service named one (MPP: "verification-failed", ...)."""

    def __init__(self, message: str, *, receipt: Any, response: Any, problem: str | None = None) -> None:
        super().__init__(message)
        self.receipt = receipt
        self.response = response
        self.problem = problem


class PaymentOutcomeUnknown(HttpayError):
    """The wallet may have paid; the ledger keeps the payment pending until it is reconciled."""

    def __init__(self, message: str, *, receipt: Any) -> None:
        super().__init__(message)
        self.receipt = receipt


class PaymentSentUnanswered(PaidRequestFailed, PaymentOutcomeUnknown):
    """A signed payment went out with the request and the service did not say whether it settled it
    (no answer, or a 5xx without a receipt): the ledger row stays pending and `receipt` is kept."""

    def __init__(self, message: str, *, receipt: Any, response: Any = None) -> None:
        HttpayError.__init__(self, message)
        self.receipt = receipt
        self.response = response


class PaymentRejected(HttpayError):
    """The service refused the signed payment it was sent (it answered 402 again): nothing was
    settled. `receipt` is the ledger row, now failed; `response` is the service's answer; `problem`
    the scheme's problem type when the service named one (MPP: "payment-expired", ...)."""

    def __init__(self, message: str, *, receipt: Any, response: Any, problem: str | None = None) -> None:
        super().__init__(message)
        self.receipt = receipt
        self.response = response
        self.problem = problem


class CallAlreadyPaid(PaymentNotHonored):
    """The application sent again a call (same method, URL and body, within the call window) that
    httpay had already paid for, and the service refused the very credential that payment presented.
    Nothing is paid a second time. `receipt` is that payment's ledger row, `response` the refusal."""


class PaymentIdConflict(PaymentRejected):
    """The service answered 409: it already holds this call's payment id (x402 payment-identifier)
    for another payment. Nothing is paid again; `receipt` (failed) and `response` are kept."""


class Permit2AllowanceRequired(PaymentRejected):
    """The service (x402 `upto`) needs an on-chain Permit2 allowance for the token before a signed
    permit can be settled (412 PERMIT2_ALLOWANCE_REQUIRED). Nothing was spent: `receipt` is failed.
    `token` and `network` say what the person must approve for the Permit2 contract."""

    def __init__(self, message: str, *, receipt: Any, response: Any, token: str | None = None,
                 network: str | None = None) -> None:
        super().__init__(message, receipt=receipt, response=response)
        self.token = token
        self.network = network


class SessionError(HttpayError):
    """An MPP session cannot go on: the service refused it, closed it, changed its price, or kept asking
    for top-ups (httpay.MppSession). What was paid is on the ledger; close the session for the refund."""
