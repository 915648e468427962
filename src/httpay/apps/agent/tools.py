"""LLM tools bound to one paying client: fetch a paid URL, see what it costs, pay a chosen offer,
read the budget and the payments. `Toolbox` over `httpay.Client`; `AsyncToolbox`, its twin, over
`httpay.AsyncClient` for async agent frameworks.

Why a Toolbox: the wallet, the policy, the ledger and the service's credentials are bound here once,
so no secret is ever a tool argument, and every result is scrubbed of the secrets the Toolbox knows
(bearer tokens, payment context tokens, preimages) before a model sees it. Tools never raise for an
expected outcome (a refusal, a 402, a network error): a model needs short, truthful text to act on,
and each result says whether it reports a failure (`ToolText.is_error`, MCP's isError): a refusal,
a failed payment, a network error, bad input, or an answer of 400 or more.
Server text (bodies, titles, reasons, error messages) reaches a model as it reaches a log: through
`httpay.safe.clean`, so no control character, terminal escape or forged line break gets through,
every piece is bounded, and a body that was cut says so and how to read on (`Toolbox.for_model` is
the last pass).

Why one set of tool programs for both twins: each tool that sends a request is a generator that
yields the `httpx.Request` and is sent the response (or thrown the error); `Toolbox` drives it in
the caller's thread, `AsyncToolbox` awaits the request on the event loop and runs the rest (ledger,
wallet, rate) in a worker thread. The descriptions, checks and text are the same code.
"""

# No `from __future__ import annotations` here: claudette, pydantic (MCP) and `schemas.py` read these
# signatures at run time, and real type objects keep that simple.

import functools
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import httpx

import httpay
from httpay.amounts import fmt_msat
from httpay.apps.exit_codes import EXIT_HTTP, refusal_code
from httpay.config import payment_deadline_ok
from httpay.core.deadline import DEFAULT_PAYMENT_DEADLINE_S
from httpay.core.dialect import dialects_read, read_challenge
from httpay.core.flow import DRY_RUN_EXTENSION, OFFER_EXTENSION, receipt_of
from httpay.core.model import Challenge, Offer
from httpay.core.preview import preview
from httpay.core.rates import resolve_rate
from httpay.errors import (
    ChallengeError,
    ConfigError,
    InvoiceError,
    PaidRequestFailed,
    PaymentDeadlineExceeded,
    PaymentNotHonored,
    PaymentOutcomeUnknown,
    PaymentRefused,
    PaymentRequestError,
    WalletError,
)
from httpay.ledger import Receipt
from httpay.policy import Policy
from httpay.safe import MAX_ESCAPE, MAX_LINE, MAX_TEXT, clean, header_problem
from httpay.safe import loads as safe_loads
from httpay.wallets.base import Wallet

MAX_BODY_CHARS = 4000      # characters of a response body in a tool result by default (fetch's max_chars)
MAX_BODY_LIMIT = 12_000    # the most characters of a body one result shows (fetch's max_chars at most)
MAX_KEPT_CHARS = 1_000_000  # characters of a cut body kept to read on with fetch's offset
MAX_KEPT_BODIES = 8        # cut bodies kept at once (the oldest is forgotten first)
MAX_OFFERS_LISTED = 20     # offers listed one per line; a service may make thousands
MAX_RESULT_CHARS = 16_000  # a whole tool result, whatever a server put in it
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_DIALECT_NOTES = {
    "l402-classic": " (classic L402: one invoice buys a token the client reuses for this host)",
    "x402": " (x402: a signed stablecoin payment)",
    "mpp": " (MPP: the HTTP Payment scheme; one payment buys one request)",
    "mpp session": " (MPP: the HTTP Payment scheme; a session is paid from a deposit across requests)",
    "mpp both": (" (MPP: the HTTP Payment scheme; a charge buys one request, a session is paid from a deposit "
                 "across requests)"),
}
TOOL_NAMES = ("fetch", "offers", "pay", "budget", "payments")
REDACTED = "[redacted]"
_MIN_SECRET_LEN = 6  # shorter strings are too common to scrub safely
# Request headers that carry credentials: what was sent in them is a secret a service may echo back
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,19}")  # an auth scheme's name: not a secret
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "payment-authorization", "x-payment",
                      "payment-signature", "cookie")
_TEXT_TYPES = ("text/", "json", "xml", "javascript", "x-www-form-urlencoded")


@dataclass(frozen=True)
class ToolHints:
    """What a tool does to the world, as MCP's ToolAnnotations say it (hints for a host deciding
    whether to ask the person first). Spending is destructive in the spec's sense: money paid is
    not given back, and a call paid again pays again (not idempotent)."""

    title: str
    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool


TOOL_HINTS: dict[str, ToolHints] = {
    # fetch also sends whatever method the model picks (POST, DELETE) to a service: not idempotent either
    "fetch": ToolHints("Fetch a URL, paying a 402 within the policy", read_only=False, destructive=True,
                       idempotent=False, open_world=True),
    "offers": ToolHints("See what a URL costs (pays nothing)", read_only=True, destructive=False,
                        idempotent=True, open_world=True),
    "pay": ToolHints("Pay a chosen offer for a URL", read_only=False, destructive=True, idempotent=False,
                     open_world=True),
    # the person's own ledger and wallet: a closed world
    "budget": ToolHints("Budget left, limits and wallet balance", read_only=True, destructive=False,
                        idempotent=True, open_world=False),
    "payments": ToolHints("Recent payments from the ledger", read_only=True, destructive=False, idempotent=True,
                          open_world=False),
}


class ToolText(str):
    """A tool's result: the text a model reads, and whether it reports a failure (a refusal, a failed
    payment, a network error, bad input): MCP's `isError`. Still a `str` for every framework."""

    is_error: bool

    def __new__(cls, text: str, is_error: bool = False) -> Self:
        obj = super().__new__(cls, text)
        obj.is_error = is_error
        return obj

    def __repr__(self) -> str:
        return f"ToolText({str.__repr__(self)}, is_error={self.is_error})"


def _error(text: str) -> ToolText:
    return ToolText(text, is_error=True)


# A tool that sends a request: it yields the request and is sent the response (or thrown the error).
Steps = Generator[httpx.Request, httpx.Response, ToolText]


@dataclass(frozen=True)
class _Kept:
    """A cut body kept to read on (already scrubbed of the secrets known when it came)."""

    status: str
    text: str
    total: int  # characters of the whole body (more than `text` holds beyond MAX_KEPT_CHARS)


def _step(steps: Steps, value: httpx.Response | None, error: BaseException | None) -> tuple[bool, Any]:
    """Resume a tool program: (True, its result) once it returns, else (False, the next request)."""
    try:
        request = steps.throw(error) if error is not None else steps.send(value)  # type: ignore[arg-type]
    except StopIteration as stop:
        return True, stop.value
    return False, request


class _Unset:
    """The default of a keyword that may be given as None (Toolbox(payment_deadline=None): no deadline)."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


def _bind(kind: type[Any], name: str, client: Any, wallet: Wallet | None, policy: Policy | None, ledger: Any,
          base_url: str | None, timeout: float, payment_deadline: "float | _Unset | None",
          tags: Mapping[str, str] | None) -> tuple[Any, bool]:
    """The client a Toolbox (`kind` httpay.Client) or AsyncToolbox (httpay.AsyncClient) pays with, and
    whether the toolbox made it (and so closes it)."""
    if not isinstance(payment_deadline, _Unset) and payment_deadline is not None and not payment_deadline_ok(
            payment_deadline):
        raise ConfigError(f"{name}(payment_deadline=...) must be a positive number of seconds (or None for no "
                          f"deadline), got {_shown(payment_deadline)}")
    if base_url is not None:
        scheme = base_url.partition("://")[0].lower() if "://" in base_url else ""
        if scheme not in ("http", "https") or not httpx.URL(base_url).host:
            raise ConfigError(f"{name}(base_url=...) must be the service's http:// or https:// address, e.g. "
                              f"http://127.0.0.1:8402, got {_shown(base_url)}")
    if client is None:
        if wallet is None:
            raise ConfigError(f"{name} needs client=httpay.{kind.__name__}(...) or wallet=... to pay with")
        deadline = DEFAULT_PAYMENT_DEADLINE_S if isinstance(payment_deadline, _Unset) else payment_deadline
        return kind(wallet=wallet, policy=policy, ledger=ledger, base_url=base_url or "", timeout=timeout,
                    payment_deadline=deadline, tags=tags), True
    if not isinstance(client, kind):
        raise ConfigError(f"{name} pays with an httpay.{kind.__name__}, got {type(client).__name__}"
                          + (" (use AsyncToolbox with httpay.AsyncClient)" if isinstance(client, httpay.AsyncClient)
                             else " (use Toolbox with httpay.Client)" if isinstance(client, httpay.Client) else ""))
    if wallet is not None or policy is not None or ledger is not None or tags is not None:
        raise ConfigError(f"give {name} either client= or wallet=/policy=/ledger=/tags=, not both")
    if not isinstance(payment_deadline, _Unset):
        raise ConfigError(f"give {name} either client= or payment_deadline=, not both: the client has its "
                          f"own (httpay.{kind.__name__}(payment_deadline=...))")
    if base_url:
        client.base_url = httpx.URL(base_url)
    return client, False


class _ToolCore:
    """What Toolbox and AsyncToolbox share: the tool programs, their checks, their text, the secrets."""

    client: Any  # httpay.Client (Toolbox) or httpay.AsyncClient (AsyncToolbox)

    def _setup(self, client: Any, owns: bool, headers: Mapping[str, str] | None,
               knobs: Mapping[str, str] | None) -> None:
        self.client = client
        self._owns_client = owns
        kind = type(client).__name__ if not owns else type(self).__name__
        # How a refusal's advice names each knob on this surface (`PaymentRefused.render`): the tool
        # argument for the per-request cap; the policy's own surface (Policy fields, or TOML keys when
        # the Toolbox was configured from a file) for the rest.
        self.knobs: dict[str, str] = {"max_price": "the max_price_usd argument of fetch",
                                      "payment_deadline": f"{kind}(payment_deadline=...)" if owns
                                      else f"httpay.{kind}(payment_deadline=...)", **(knobs or {})}
        self._default_headers = dict(headers or {})
        for name, value in self._default_headers.items():
            if (problem := header_problem(name, value)) is not None:  # said now, not on the model's first fetch
                raise ConfigError(f"{type(self).__name__}(headers=...): {problem}")
        if self._default_headers and not str(client.base_url):
            raise ConfigError(f"{type(self).__name__}(headers=...) needs base_url=... (the service the headers belong "
                              "to): they go to that origin only; without it a model could send them to any host")
        self._secrets: set[str] = set()
        self._kept: OrderedDict[tuple[str, str], _Kept] = OrderedDict()
        self._lock = threading.RLock()
        for value in self._default_headers.values():
            self._add_credential(value)

    def __repr__(self) -> str:
        names = ", ".join(sorted(self._default_headers)) or "none"
        return (f"{type(self).__name__}(base_url={str(self.client.base_url) or None!r}, headers=<{names}>, "
                f"wallet={self.client.wallet!r})")

    # -- what the model is told ---------------------------------------------------------------------------
    def description(self, name: str) -> str:
        """The tool's description as a model and an MCP host see it: what it does, and for the tools
        that spend, the scope they spend in (the hosts, the limits, where the credentials go)."""
        doc = getattr(Toolbox, name).__doc__ or ""
        if name not in ("fetch", "pay"):
            return doc
        return f"{doc}\n\n{self.scope()}"

    def scope(self) -> str:
        """What the bearer of these tools may do, in words: which hosts it may pay, the limits in
        force (as the budget tool states them) and which host the configured headers go to."""
        p: Policy = self.client.policy
        if p.allowed_hosts is None:
            hosts = "any host"
        else:
            hosts = ("only " + ", ".join(clean(h, 80) for h in p.allowed_hosts)) if p.allowed_hosts else "no host"
        if p.denied_hosts:
            hosts += " except " + ", ".join(clean(h, 80) for h in p.denied_hosts)
        approval = "; a person approves each payment" if p.approve is not None else ""
        text = (f"Scope: it may pay {hosts}, by {', '.join(clean(m, 20) for m in p.methods)}, within "
                f"{', '.join(self._limit_words())}{approval} (the budget tool shows what is left).")
        if self._default_headers:
            names = ", ".join(clean(n, 60) for n in sorted(self._default_headers))
            base = self.client.base_url
            if str(base):
                text += (f" The service's credentials ({names}) are added only to requests to "
                         f"{clean(_origin(base), 120)}; never to another host.")
            else:
                text += f" The configured headers ({names}) are added to every request."
        return text

    def _limit_words(self) -> list[str]:
        """The limits in force, in words: the policy's, then those of the tags this toolbox's payments carry."""
        p: Policy = self.client.policy
        words = p.describe_limits()
        tags: Mapping[str, str] = getattr(self.client.payer, "tags", None) or {}
        names = {"budget": "in total", "per_hour": "per hour", "per_day": "per day"}
        for spec, limits in p.tag_limits.items():
            key, _, value = spec.partition("=")
            if tags.get(key) != value:
                continue
            for name, amount in limits.items():
                base, unit = name.rsplit("_", 1)
                shown = f"${float(amount):,.2f}" if unit == "usd" else f"{int(amount):,} sat"
                words.append(f"{shown} {names.get(base, base)} for {clean(spec, 80)}")
        return words

    # -- the tool programs (driven by Toolbox in its thread, by AsyncToolbox on its event loop) ---------
    def _fetch(self, url: str, method: str, headers: dict[str, str] | None, body: str | None,
               max_price_usd: float | None, content_type: str | None, max_chars: int, offset: int) -> Steps:
        bad = self._bad_fetch(url, method, headers, body, content_type, max_price_usd, max_chars, offset)
        if bad is not None:
            return bad
        verb = method.strip().upper()
        if offset:
            return self._read_on(verb, url, max_chars, offset)
        if max_price_usd is not None and not self._rate():
            rate_knob = self.knobs.get("usd_per_btc", "Policy(usd_per_btc=...)")
            return _error(f"error: max_price_usd needs a BTC/USD rate and none is known (the person can set {rate_knob}); "
                          f"call fetch without it to stay within the policy's own limits. Nothing was paid.\n"
                          f"{self._budget_left()}.")
        since = self._last_receipt_id()
        try:
            ext = self.client.max_price(max_price_usd) if max_price_usd is not None else {}
            response = yield self._request(verb, url, headers, body, content_type, ext)
        except PaymentRefused as exc:
            return self._refusal(exc)
        except Exception as exc:  # noqa: BLE001 - an LLM gets the truth as text, not a traceback
            return self._failure(exc, url, since)
        lines = [_status_line(response)]
        receipt = receipt_of(response)
        unpaid = receipt is None and response.status_code == 402
        if receipt is not None:
            self.add_secret(receipt.preimage)
            lines.append(f"paid {self._paid(receipt)}; {self._budget_left()}")
        elif unpaid:
            lines.append(self._unpaid_402(response))
        lines.append(self._body(response, verb, max_chars))
        return ToolText(self.for_model("\n".join(lines)), is_error=unpaid or _failed(response))

    def _offers(self, url: str) -> Steps:
        try:
            response = yield self._request("GET", url, None, None, None, {DRY_RUN_EXTENSION: True})
        except Exception as exc:  # noqa: BLE001
            return self._failure(exc, url, None)
        if response.status_code != 402:
            return ToolText(self.for_model(
                f"{_status_line(response)}: no payment needed; nothing was paid (the request was served and may "
                f"have used a credit)\n{self._body(response, 'GET')}"
            ), is_error=_failed(response))
        try:
            found = read_challenge(response.status_code, response.headers, response.content,
                                   url=str(response.request.url))
        except (ChallengeError, InvoiceError) as exc:
            return _error(self.for_model(f"HTTP 402 Payment Required, but the offers cannot be read: "
                                         f"{self._text(exc, MAX_LINE)}. Nothing was paid."))
        if not found:
            return _error(self.for_model("HTTP 402 Payment Required" + "\n" + self._unpaid_402(response)))
        offers = tuple(o for c in found for o in c.offers)  # every dialect's offers of the 402, side by side
        for c in found:
            self.add_secret(getattr(c.raw, "payment_context_token", None))
        rate = self._rate()
        notes = _dialect_note(found[0]) if len(found) == 1 else \
            f" (offered in {len(found)} dialects: {', '.join(c.dialect for c in found)}; one payment buys it)"
        lines = [self._cost_line(offers, rate) + notes, "offers:",
                 self._offer_lines(offers, rate), self._would_pay(found, response, rate), self._budget_left() + "."]
        return ToolText(self.for_model("\n".join(lines)))

    def _pay(self, url: str, offer_id: str, payment_method: str) -> Steps:
        method = payment_method.strip().lower()
        x402_ok = method.startswith("x402") and self.client.payer.signer is not None
        if method != "lightning" and not x402_ok:
            also = " and x402 (with its signer)" if self.client.payer.signer is not None else ""
            return _error(f"refused: payment method {clean(repr(payment_method), 60)} is not available: this client "
                          f"pays by lightning{also} only (credit_card and coinbase_commerce need a person at a "
                          "checkout page). Nothing was paid.")
        since = self._last_receipt_id()
        try:
            response = yield self._request("GET", url, None, None, None, {OFFER_EXTENSION: offer_id})
        except PaymentRefused as exc:
            return self._refusal(exc)
        except Exception as exc:  # noqa: BLE001
            return self._failure(exc, url, since)
        receipt = receipt_of(response)
        if receipt is None:
            head = (f"nothing was paid: the URL answered {_status_line(response)} without asking for payment "
                    "(an earlier credit may have been used)")
            if response.status_code == 402:
                head = f"nothing was paid: {self._unpaid_402(response)}"
            return ToolText(self.for_model(f"{head}\n{self._body(response, 'GET')}"), is_error=_failed(response))
        self.add_secret(receipt.preimage)
        return ToolText(self.for_model(
            f"paid {self._paid(receipt, full_hash=True)}; {self._budget_left()}\n"
            f"then {_status_line(response)}\n{self._body(response, 'GET')}"
        ), is_error=_failed(response))

    def _budget(self) -> ToolText:
        ledger, policy, rate = self.client.ledger, self.client.policy, self._rate()
        rows = ledger.receipts()
        settled = sum(1 for r in rows if r.status.value == "settled")
        pending = sum(1 for r in rows if r.status.value == "pending")
        parts = [self._budget_left(), f"spent {fmt_msat(ledger.spent_msat(), rate)} in {settled} settled payment(s)"
                 + (f" and {pending} pending" if pending else "")]
        limits = self._limit_words()
        if policy.approve is not None:
            limits.append("a person approves each payment")
        parts.append("limits: " + ", ".join(limits))
        wallet = self.client.wallet
        try:
            if wallet is None:
                parts.append("no Lightning wallet")
            else:
                parts.append(f"wallet balance {fmt_msat(wallet.balance_msat(), rate)}")
        except (NotImplementedError, WalletError, httpx.HTTPError):
            parts.append("wallet balance unknown")
        return ToolText(self.for_model("; ".join(parts) + "."))

    def _payments(self, limit: int) -> ToolText:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
            return _error(f"error: limit must be a whole number from 1 to 100, got {_shown(limit)}")
        rows = self.client.ledger.receipts(limit=limit)
        if not rows:
            return ToolText("no payments recorded yet.")
        rate = self._rate()
        lines = [f"{len(rows)} payment(s), newest first:"] + [_receipt_line(r, rate) for r in rows]
        return ToolText(self.for_model("\n".join(lines)))

    # -- secrets -----------------------------------------------------------------------------------------
    def add_secret(self, value: str | None) -> None:
        """Never show `value` in a tool result again."""
        if value and len(value) >= _MIN_SECRET_LEN:
            with self._lock:  # tools may run in several threads at once (an MCP server's workers)
                self._secrets.add(value)

    def _keep_sent(self, response: httpx.Response) -> None:
        """Every credential the requests behind `response` carried (a held token, a paid credential:
        an MPP one holds the preimage) becomes a secret, whole and in its parts, so a service
        echoing the request back shows the model none of it."""
        for r in (*response.history, response):
            for name in CREDENTIAL_HEADERS:
                for value in r.request.headers.get_list(name):
                    self._add_credential(value)

    def _add_credential(self, value: str) -> None:
        """A credential header's value as secrets: whole, and each part but its scheme's name
        ("Bearer", "Payment": words a result must still be able to say)."""
        self.add_secret(value)
        words = value.split()
        if len(words) > 1 and _SCHEME.fullmatch(words[0]):
            words = words[1:]
        for word in words:
            for part in {word, *word.replace(",", ":").split(":")}:
                self.add_secret(part)

    def scrub(self, text: str) -> str:
        """Replace every secret the Toolbox knows with [redacted]."""
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            text = text.replace(secret, REDACTED)
        return text

    def for_model(self, text: str) -> str:
        """A tool result as a model may read it: secrets scrubbed (before anything is cut, so no part of
        one shows), each line cleaned as a log line is (no control characters), the whole bounded."""
        lines = [clean(line, MAX_BODY_LIMIT + MAX_LINE) for line in self.scrub(text).split("\n")]
        out = "\n".join(lines)
        if len(out) > MAX_RESULT_CHARS:
            out = (out[:MAX_RESULT_CHARS].rstrip() + "…\n"
                   f"[result cut: showing {MAX_RESULT_CHARS:,} of {len(out):,} characters]")
        return self.scrub(out)

    def _text(self, value: object, limit: int = MAX_TEXT) -> str:
        """One piece of server text for a result line: secrets scrubbed first, then `clean` (one line, bounded)."""
        return self._cut(value, limit)[0]

    def _cut(self, value: object, limit: int) -> tuple[str, bool]:
        """(`value` scrubbed and cleaned to at most `limit` characters, whether anything was cut). Only the
        head that can be shown is scrubbed, with room for a secret that starts inside it."""
        text = value if isinstance(value, str) else clean(value, MAX_ESCAPE * (limit + 1))
        keep = limit + self._room() + 1
        head = self.scrub(text[:keep])
        shown = clean(head, limit)
        whole = clean(head, MAX_ESCAPE * (keep + 1))  # all of the head, however many escapes it shows
        return shown, len(text) > keep or whole != shown

    def _room(self) -> int:
        with self._lock:
            return max((len(x) for x in self._secrets), default=0)

    # -- bodies --------------------------------------------------------------------------------------------
    def _body(self, response: httpx.Response, verb: str, max_chars: int = MAX_BODY_CHARS) -> str:
        """The body as one cleaned line (its line breaks shown as \\n), at most `max_chars` characters; a
        longer one is kept (scrubbed) so fetch's `offset` reads on without requesting or paying again."""
        self._keep_sent(response)
        ctype = response.headers.get("content-type", "")
        if not response.content:
            return "(empty body)"
        if ctype and not any(t in ctype.lower() for t in _TEXT_TYPES):
            return f"({len(response.content):,} bytes of {clean(ctype, 80)}, not shown)"
        text = response.text
        # scrubbed with room past the end, so a secret across the kept end is gone whole
        room = self._room()
        head = self.scrub(text[:MAX_KEPT_CHARS + room])
        total = len(head) if len(text) <= MAX_KEPT_CHARS + room else len(text)  # as scrubbed, when all is read
        kept = head[:MAX_KEPT_CHARS]
        shown, n, escaped = _window(kept, 0, max_chars)
        if n >= total:
            return shown
        self._keep((verb, str(response.request.url)), _Kept(_status_line(response), kept, total))
        return f"{shown}\n{_cut_note(0, n, len(kept), total, escaped)}"

    def _keep(self, key: tuple[str, str], kept: _Kept) -> None:
        with self._lock:
            self._kept[key] = kept
            self._kept.move_to_end(key)
            while len(self._kept) > MAX_KEPT_BODIES:
                self._kept.popitem(last=False)

    def _read_on(self, verb: str, url: str, max_chars: int, offset: int) -> ToolText:
        """The kept body of the last `verb url` that was cut, from `offset`: nothing is sent or paid."""
        try:
            key = (verb, str(self.client.build_request(verb, url).url))
        except Exception as exc:  # noqa: BLE001 - a URL httpx cannot read is the model's to correct
            return _error(f"error: the URL {self._text(url)} cannot be read: {self._text(exc, MAX_LINE)}. "
                          "Nothing was sent or paid.")
        with self._lock:
            kept = self._kept.get(key)
        if kept is None:
            return _error(self.for_model(
                f"error: no cut body of {verb} {self._text(url)} is kept to read from offset {offset:,} (only the "
                f"last {MAX_KEPT_BODIES} bodies that were cut are kept); call fetch with offset=0 to request it. "
                "Nothing was sent or paid."))
        if offset >= len(kept.text):
            return _error(self.for_model(
                f"error: offset {offset:,} is past the end of the kept body of {verb} {self._text(url)} "
                f"({len(kept.text):,} characters). Nothing was sent or paid."))
        shown, n, escaped = _window(kept.text, offset, max_chars)
        return ToolText(self.for_model(
            f"{kept.status} (the body kept from the earlier fetch: not requested or paid again)\n{shown}\n"
            f"{_cut_note(offset, n, len(kept.text), kept.total, escaped)}"))

    # -- checks ------------------------------------------------------------------------------------------
    def _bad_fetch(self, url: str, method: str, headers: Mapping[str, str] | None, body: str | None,
                   content_type: str | None, max_price_usd: float | None, max_chars: int,
                   offset: int) -> ToolText | None:
        """Bad arguments, said as the model can correct them, before anything is sent."""
        nothing = " Nothing was sent or paid."
        if not isinstance(url, str) or not url.strip():
            return _error(f"error: url must be the address to fetch, got {_shown(url)}.{nothing}")
        scheme, sep, _ = url.partition("://")
        if sep and scheme.lower() not in ("http", "https"):
            return _error(f"error: only http:// and https:// URLs can be fetched, got {clean(scheme, 20)}://.{nothing}")
        if headers is not None:
            if not isinstance(headers, Mapping):
                return _error(f"error: headers must be an object of header names to text values, got "
                              f"{type(headers).__name__}.{nothing}")
            for name, value in headers.items():
                if (problem := header_problem(name, value)) is not None:
                    return _error(f"error: {problem}.{nothing}")
        if body is not None and not isinstance(body, str):
            return _error(f"error: body must be text (JSON as a string), got {type(body).__name__}.{nothing}")
        if not isinstance(method, str) or method.strip().upper() not in HTTP_METHODS:
            return _error(f"error: method must be one of {', '.join(HTTP_METHODS)}, got {_shown(method)}.{nothing}")
        if max_price_usd is not None and (isinstance(max_price_usd, bool) or not isinstance(max_price_usd, int | float)
                                          or (isinstance(max_price_usd, float) and not math.isfinite(max_price_usd))
                                          or max_price_usd < 0):
            return _error(f"error: max_price_usd must be a non-negative number of US dollars, got "
                          f"{_shown(max_price_usd)}. Nothing was paid.")
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or not 1 <= max_chars <= MAX_BODY_LIMIT:
            return _error(f"error: max_chars must be a whole number from 1 to {MAX_BODY_LIMIT:,}, got "
                          f"{_shown(max_chars)}.{nothing}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            return _error(f"error: offset must be a whole number of characters, 0 or more, got {_shown(offset)}.{nothing}")
        if content_type is not None:
            if body is None:
                return _error(f"error: content_type is the body's type, and no body was given.{nothing}")
            if not isinstance(content_type, str) or not content_type.strip() or clean(content_type, 200) != content_type \
                    or "/" not in content_type:
                return _error(f"error: content_type must be one media type such as application/json or "
                              f"text/plain, got {_shown(content_type)}.{nothing}")
        return None

    # -- helpers -------------------------------------------------------------------------------------
    def _request(self, method: str, url: str, headers: Mapping[str, str] | None, body: str | None,
                 content_type: str | None, extensions: dict[str, Any]) -> httpx.Request:
        request: httpx.Request = self.client.build_request(
            method.upper(), url, content=body.encode() if body is not None else None, extensions=extensions)
        sent = self._headers_for(request.url)
        sent.update(headers or {})
        if body is not None:
            named = [k for k in sent if k.lower() == "content-type"]
            if content_type is not None:
                for k in named:
                    del sent[k]
                sent["Content-Type"] = content_type
            elif not named:
                sent["Content-Type"] = "application/json" if _is_json(body) else "text/plain; charset=utf-8"
        request.headers.update(sent)
        return request

    def _headers_for(self, url: httpx.URL) -> dict[str, str]:
        base = self.client.base_url
        if not str(base) or (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port):
            return dict(self._default_headers)
        return {}

    def _rate(self) -> float | None:
        try:
            return resolve_rate(self.client.payer.policy, self.client.payer.wallet)
        except (WalletError, httpx.HTTPError):
            return None

    def _last_receipt_id(self) -> int:
        rows = self.client.ledger.receipts(limit=1)
        return rows[0].id if rows else 0

    def _budget_numbers(self, rate: float | None) -> tuple[int | None, int]:
        spent = self.client.ledger.spent_msat()
        try:
            limits = self.client.policy.limits("", rate)
        except PaymentRefused:
            return None, spent
        total = [lim.limit_msat for lim in limits if lim.host is None and lim.window is None]
        return (min(total) if total else None), spent

    def _budget_left(self) -> str:
        policy, rate = self.client.policy, self._rate()
        total, spent = self._budget_numbers(rate)
        if total is None:
            if policy.budget_usd is not None:
                return f"budget ${policy.budget_usd:,.2f} (no BTC/USD rate to tell what is left; {fmt_msat(spent)} spent)"
            if policy.is_unlimited:
                return f"unlimited: no spending limit is set (Policy.unlimited()); {fmt_msat(spent, rate)} spent"
            return f"no total budget set{self._window_left(rate)} ({fmt_msat(spent, rate)} spent)"
        return f"budget left {fmt_msat(max(total - spent, 0), rate)} of {fmt_msat(total, rate)}"

    def _window_left(self, rate: float | None) -> str:
        """What the tightest hourly/daily limit leaves now: "; 49,990 sat left of the default daily budget ..."."""
        try:
            limits = [lim for lim in self.client.policy.limits("", rate) if lim.window is not None and lim.host is None]
        except PaymentRefused:
            return ""
        if not limits:
            return ""
        now = datetime.now(UTC)
        left = [(lim.limit_msat - self.client.ledger.spent_msat(since=now - lim.window), lim)
                for lim in limits if lim.window is not None]
        room, lim = min(left, key=lambda x: x[0])
        return f"; {fmt_msat(max(room, 0), rate)} left of the {lim.describe(rate)}"

    def _paid(self, r: Receipt, *, full_hash: bool = False) -> str:
        rate = self._rate()
        credits = f" ({r.credits} credit{'s' if r.credits != 1 else ''})" if r.credits is not None else ""
        what = f"{clean(r.offer_id, 80)} '{clean(r.offer_title, 120)}'{credits}" if r.offer_id else clean(r.protocol, 40)
        ph = clean(r.payment_hash or "?", 80)
        ph = ph if full_hash else ph[:16] + "…"
        return (f"{fmt_msat(r.amount_msat, rate)} + {r.fee_text} for {what} by {clean(r.method, 40)}, "
                f"payment hash {ph}, ledger #{r.id}")

    def _refused(self, exc: PaymentRefused) -> str:
        """The refusal as one line, led by what a model must know first when nothing it can do pays
        the 402 (no argument, retry or setting of a tool changes that)."""
        text = self._text(exc.render(self.knobs), MAX_LINE).rstrip(".")
        if refusal_code(exc.rule) == EXIT_HTTP:
            return "refused: no tool here can pay this: " + text.removeprefix("refused: ")
        return text if text.startswith("refused") else "refused: " + text

    def _refusal(self, exc: PaymentRefused) -> ToolText:
        offers = tuple(exc.offers) if isinstance(exc.offers, tuple | list) and exc.offers else None
        text = self._refused(exc)
        lines = [text + ". Nothing was paid."]
        if offers is not None:
            lines += ["offers:", self._offer_lines(offers, self._rate())]
        lines.append(self._budget_left() + ".")
        return _error(self.for_model("\n".join(lines)))

    def _failure(self, exc: Exception, url: str, since: int | None) -> ToolText:
        """Say what went wrong, and (from the ledger) whether anything was paid meanwhile."""
        if isinstance(exc, PaymentNotHonored):
            text = (f"HTTP 402: paid {self._paid(exc.receipt, full_hash=True)}, but the service still asks for payment; "
                    "do not pay again, keep the payment hash and contact the service")
        elif isinstance(exc, PaidRequestFailed) and isinstance(exc.receipt, Receipt):
            self.add_secret(exc.receipt.preimage)
            answer = exc.response if isinstance(exc.response, httpx.Response) else None
            got = (f"the service answered {_status_line(answer)}: {self._text(answer.text, MAX_TEXT) or '(empty body)'}"
                   if answer is not None and answer.is_stream_consumed else
                   f"the request failed ({self._text(exc, MAX_LINE)})")
            text = (f"error: paid {self._paid(exc.receipt, full_hash=True)}, but then {got}. Do not pay again: the "
                    "same request sent again reuses what was paid where the service honours it")
        elif isinstance(exc, PaymentOutcomeUnknown):
            text = (f"error: the payment's outcome is unknown ({self._text(exc, MAX_LINE)}); it stays pending in the "
                    "ledger and counts against the budget. Do not pay again")
        elif isinstance(exc, PaymentDeadlineExceeded):
            knob = self.knobs.get("payment_deadline", "Toolbox(payment_deadline=...)")
            text = (f"error: not paid: the service took longer than the payment deadline of {exc.deadline_s:g} s from "
                    f"its 402 to the payment (it was still at {self._text(exc.stage)}). Nothing was paid; the person "
                    f"can raise {knob} if this service is known to be slow")
        elif isinstance(exc, httpx.HTTPError):
            text = f"error: the request to {self._text(url)} failed: {type(exc).__name__}: {self._text(exc, MAX_LINE)}"
        elif isinstance(exc, InvoiceError | PaymentRequestError | ChallengeError | ConfigError) or (
                isinstance(exc, WalletError) and exc.outcome_known):
            text = f"error: {type(exc).__name__}: {self._text(exc, MAX_LINE)}. Nothing was paid"
        else:  # e.g. a LedgerError or a wallet that may have paid: the ledger lines below tell what happened
            text = f"error: {type(exc).__name__}: {self._text(exc, MAX_LINE)}"
        lines = [text.rstrip(".") + "."]
        if since is not None and not isinstance(exc, PaymentNotHonored | PaymentOutcomeUnknown | PaidRequestFailed):
            paid = [r for r in self.client.ledger.receipts(limit=20) if r.id > since and r.status.value != "failed"]
            lines += [f"meanwhile the ledger recorded: {_receipt_line(r, self._rate())}" for r in paid]
        lines.append(self._budget_left() + ".")
        return _error(self.for_model("\n".join(lines)))

    def _unpaid_402(self, response: httpx.Response) -> str:
        try:
            data = safe_loads(response.content)  # depth-guarded: a hostile body never recurses
            if isinstance(data, dict) and isinstance(data.get("payment_context_token"), str):
                self.add_secret(data["payment_context_token"])
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass
        return f"the service asks for payment in a form httpay cannot read (not {dialects_read()}); nothing was paid"

    def _offer_lines(self, offers: Sequence[Offer], rate: float | None) -> str:
        listed = [f"- {_offer_text(o, rate)}" for o in offers[:MAX_OFFERS_LISTED]]
        if len(offers) > MAX_OFFERS_LISTED:
            listed.append(f"- … and {len(offers) - MAX_OFFERS_LISTED:,} more offers, not listed")
        return "\n".join(listed)

    def _cost_line(self, offers: Sequence[Offer], rate: float | None) -> str:
        def worth(o: Offer) -> int:
            msat = o.price.in_msat(rate)
            return msat if msat is not None else o.price.amount

        if not offers:
            return "HTTP 402 Payment Required, but the service made no offer."
        payable = sorted((o for o in offers if o.unpayable is None), key=worth)
        if not payable:  # a price for something no tool here can buy would read as an offer to take
            return ("HTTP 402 Payment Required: no tool here can pay any of its offers (each says why below); "
                    "nothing was paid.")
        cheapest = payable[0]
        return (f"this costs {_price(cheapest, rate)} for {_what(cheapest)} (cheapest offer: "
                f"{clean(cheapest.offer_id, 80)}); nothing was paid.")

    def _would_pay(self, challenge: Challenge | Sequence[Challenge], response: httpx.Response,
                   rate: float | None) -> str:
        """What fetch would do with this 402: the flow's one quote, across every dialect it offers."""
        url = str(response.request.url)
        try:
            d = preview(self.client.payer, challenge, url=url, usd_per_btc=rate, request=response.request,
                        with_budgets=True)  # every budget the ledger holds: what fetch would meet
        except PaymentRefused as exc:
            text = self._refused(exc).removeprefix("refused: ")
            return text if refusal_code(exc.rule) == EXIT_HTTP else f"the policy would refuse: {text}"
        approval = " (after a person approves)" if self.client.policy.approve is not None else ""
        return (f"the policy would pay {clean(d.offer.offer_id, 80)} by {clean(d.method, 40)} for {_price(d.offer, rate)}"
                f"{approval}")


class Toolbox(_ToolCore):
    """The tools an LLM may call, bound to one paying `httpay.Client`.

    `headers` (e.g. the service's bearer) are added to requests and never shown in a result; they
    need `base_url`, the origin they go to (only there: a model cannot send them to another host);
    relative URLs like `/ticker/AAPL` are joined to it. With no `client` and no `policy`, httpay's default
    limits apply (1,000 sat per payment, 10,000 sat per hour, 50,000 sat per day). `payment_deadline`
    (seconds from a service's 402 to paying it, default 60; None: none) is the client's, as in
    `httpay.Client`. `knobs` says how a refusal names each limit for the person who set it (e.g.
    {"budget_usd": "budget_usd in policy.toml"}). Each tool returns a `ToolText` (a str) whose
    `is_error` says whether it reports a failure.
    """

    def __init__(
        self,
        client: httpay.Client | None = None,
        *,
        wallet: Wallet | None = None,
        policy: Policy | None = None,
        ledger: Any = None,
        headers: Mapping[str, str] | None = None,
        base_url: str | None = None,
        timeout: float = 30.0,
        knobs: Mapping[str, str] | None = None,
        payment_deadline: float | _Unset | None = _UNSET,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        bound, owns = _bind(httpay.Client, "Toolbox", client, wallet, policy, ledger, base_url, timeout,
                            payment_deadline, tags)
        self._setup(bound, owns, headers, knobs)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # -- the tools (their signatures, comments and docstrings are the schemas of both twins) -----------
    def fetch(
        self,
        url: str,  # The URL to request; a path such as /ticker/AAPL is joined to the service's base URL
        method: str = "GET",  # HTTP method: GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS
        headers: dict[str, str] | None = None,  # Extra request headers (the service's credentials are added already)
        body: str | None = None,  # Request body (POST, PUT, PATCH): JSON text is sent as application/json, other text as text/plain
        max_price_usd: float | None = None,  # Refuse to pay more than this many US dollars for this request
        content_type: str | None = None,  # The body's media type when it is neither JSON nor plain text, e.g. application/x-www-form-urlencoded
        max_chars: int = MAX_BODY_CHARS,  # How many characters of the response body to show (1 to 12000)
        offset: int = 0,  # Read on in a body an earlier fetch cut: skip this many characters of the kept body (nothing is requested or paid again)
    ) -> str:  # The HTTP status, the body, and what was paid
        "Request a URL, paying a 402 Payment Required within the person's policy (wallet, budget and credentials are bound already). A body longer than max_chars is cut; the result says how to read on with offset."
        return self._drive(self._fetch(url, method, headers, body, max_price_usd, content_type, max_chars, offset))

    def offers(
        self,
        url: str,  # The URL to price; it is requested once with payment disabled
    ) -> str:  # What the URL costs, every offer, and what the policy would do
        "See what a URL costs without paying: request it once with payment disabled and list the offers and what the policy would do."
        return self._drive(self._offers(url))

    def pay(
        self,
        url: str,  # The URL the offer is for (it is requested again once paid)
        offer_id: str,  # The offer to buy, as listed by the offers tool, e.g. offer_c668e0c0
        payment_method: str = "lightning",  # How to pay: lightning, or an x402 method when the client has an x402 signer
    ) -> str:  # What was paid (amount, payment hash), then the response to the URL
        "Pay one specific offer for a URL (the policy must still allow it), then request the URL again."
        return self._drive(self._pay(url, offer_id, payment_method))

    def budget(self) -> str:  # The budget left, what was spent, the limits and the wallet balance
        "Show how much may still be spent, what was spent, the policy's limits and the wallet balance."
        return self._budget()

    def payments(
        self,
        limit: int = 10,  # How many recent payments to list (1 to 100)
    ) -> str:  # One line per payment, newest first
        "List recent payments from the ledger, newest first."
        return self._payments(limit)

    def tools(self) -> list[Callable[..., str]]:
        """The tools as plain functions (name, docstring and type hints intact) for Claudette, SDKs and MCP."""
        return [_as_function(getattr(self, name), self.description(name)) for name in TOOL_NAMES]

    def _drive(self, steps: Steps) -> ToolText:
        """Run a tool program in this thread: each request it yields is sent by the client."""
        value: httpx.Response | None = None
        error: BaseException | None = None
        while True:
            done, out = _step(steps, value, error)
            if done:
                return out  # type: ignore[no-any-return]
            value, error = None, None
            try:
                value = self.client.send(out)
            except Exception as exc:  # noqa: BLE001 - handed back to the tool program, which says what happened
                error = exc


def _twin(sync_tool: Callable[..., str]) -> Callable[..., Awaitable[str]]:
    """The coroutine twin of a Toolbox tool: same name, signature, comments and docstring (so the
    same schema), running the same tool program."""
    import inspect

    name = sync_tool.__name__
    signature = inspect.signature(sync_tool)

    @functools.wraps(sync_tool)
    async def tool(self: "AsyncToolbox", *args: Any, **kwargs: Any) -> str:
        bound = signature.bind(self, *args, **kwargs)  # a wrong call is a TypeError here, as with the sync twin
        bound.apply_defaults()
        return await self._arun(getattr(self, "_" + name), *bound.args[1:])

    return tool


class AsyncToolbox(_ToolCore):
    """The async twin of `Toolbox`, bound to one paying `httpay.AsyncClient`: the same tools as
    coroutines, with the same descriptions, checks and text, for async agent frameworks. Requests are
    awaited on the event loop; the ledger, wallet and rate reads run in a worker thread."""

    def __init__(
        self,
        client: httpay.AsyncClient | None = None,
        *,
        wallet: Wallet | None = None,
        policy: Policy | None = None,
        ledger: Any = None,
        headers: Mapping[str, str] | None = None,
        base_url: str | None = None,
        timeout: float = 30.0,
        knobs: Mapping[str, str] | None = None,
        payment_deadline: float | _Unset | None = _UNSET,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        bound, owns = _bind(httpay.AsyncClient, "AsyncToolbox", client, wallet, policy, ledger, base_url, timeout,
                            payment_deadline, tags)
        self._setup(bound, owns, headers, knobs)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    fetch = _twin(Toolbox.fetch)
    offers = _twin(Toolbox.offers)
    pay = _twin(Toolbox.pay)
    budget = _twin(Toolbox.budget)
    payments = _twin(Toolbox.payments)

    def tools(self) -> list[Callable[..., Awaitable[str]]]:
        """The tools as plain coroutine functions (name, docstring and type hints intact) for async frameworks."""
        return [_as_coroutine_function(getattr(self, name), self.description(name)) for name in TOOL_NAMES]

    async def _arun(self, program: Callable[..., Steps | ToolText], *args: Any, **kwargs: Any) -> ToolText:
        """Run a tool program: its own steps (ledger, wallet, rate, text) in a worker thread, so a slow
        wallet never stalls the event loop; each request it yields is awaited on the loop."""
        import anyio

        started = await anyio.to_thread.run_sync(functools.partial(program, *args, **kwargs))
        if isinstance(started, ToolText):
            return started
        value: httpx.Response | None = None
        error: BaseException | None = None
        while True:
            done, out = await anyio.to_thread.run_sync(_step, started, value, error)
            if done:
                return out  # type: ignore[no-any-return]
            value, error = None, None
            try:
                value = await self.client.send(out)
            except Exception as exc:  # noqa: BLE001 - handed back to the tool program
                error = exc


def _as_function(method: Callable[..., str], doc: str) -> Callable[..., str]:
    """A plain function standing for a bound method, keeping its name, annotations and (with the
    toolbox's scope) its docstring."""

    @functools.wraps(method)
    def tool(*args: Any, **kwargs: Any) -> str:
        return method(*args, **kwargs)

    tool.__doc__ = doc
    return tool


def _as_coroutine_function(method: Callable[..., Awaitable[str]], doc: str) -> Callable[..., Awaitable[str]]:
    """A plain coroutine function standing for a bound coroutine method (name, annotations, docstring)."""

    @functools.wraps(method)
    async def tool(*args: Any, **kwargs: Any) -> str:
        return await method(*args, **kwargs)

    tool.__doc__ = doc
    return tool


def _origin(url: httpx.URL) -> str:
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}"


def _window(text: str, offset: int, limit: int) -> tuple[str, int, bool]:
    """`text` from `offset` as shown (control characters as escapes) in at most `limit` characters:
    (what is shown, how many characters of `text` it holds, whether any was shown as an escape)."""
    part = text[offset:offset + limit]
    shown = clean(part, MAX_ESCAPE * (limit + 1))  # never cut here: a character shows as at most MAX_ESCAPE
    if len(shown) == len(part):
        return shown, len(part), False
    n = width = 0
    for ch in part:
        w = len(clean(ch, MAX_ESCAPE))
        if width + w > limit:
            break
        width, n = width + w, n + 1
    return clean(part[:n], MAX_ESCAPE * (limit + 1)), n, True


def _cut_note(offset: int, n: int, kept: int, total: int, escaped: bool) -> str:
    """What part of a body a result shows, and how to read the rest (fetch's offset, from the kept body)."""
    esc = ", control characters shown as escapes" if escaped else ""
    where = f"[body cut: showing characters {offset + 1:,}-{offset + n:,} of {total:,}{esc}"
    end = offset + n
    if end < kept:
        more = (f"; to read on, call fetch again with the same url and method and offset={end} (max_chars up to "
                f"{MAX_BODY_LIMIT:,}): the body is kept, nothing is requested or paid again")
        if kept < total:
            more += f" (only its first {kept:,} characters are kept)"
        return where + more + "]"
    if kept < total:
        return where + f"; only the first {kept:,} characters were kept: the rest cannot be shown]"
    return where + "; this is the end of the body]"


def _shown(value: object) -> str:
    """An argument as the error about it shows it: its repr, bounded (an int too long to print is said so)."""
    try:
        return clean(repr(value), 60)
    except ValueError:  # an int of more than 4,300 digits has no repr
        return "a number too long to show"


def _failed(response: httpx.Response) -> bool:
    """An answer that did not give what was asked for (4xx, 5xx, an unpaid 402): a failure for MCP's isError,
    as a fetch tool reports it; the text still says the status and what was paid."""
    return response.status_code >= 400


def _status_line(response: httpx.Response) -> str:
    return f"HTTP {response.status_code} {clean(response.reason_phrase, 80)}".rstrip()


def _is_json(text: str) -> bool:
    try:
        safe_loads(text)  # depth-guarded: never a RecursionError on a body nested 100,000 deep
    except ValueError:
        return False
    return text.lstrip()[:1] in ("{", "[")


def _price(o: Offer, rate: float | None) -> str:
    msat = o.price.in_msat(rate)
    usd = o.price.in_usd(rate)
    in_usd = f"${float(usd):,.4f}".rstrip("0").rstrip(".") if usd is not None else None
    if msat is None or o.currency.upper() in ("SAT", "SATS", "BTC", "MSAT"):
        return clean(str(o.price), 60) + (f" (≈ {in_usd})" if in_usd and o.currency.upper() != "USD" else "")
    return f"{clean(str(o.price), 60)} (≈ {fmt_msat(msat)})"


def _what(o: Offer) -> str:
    """What the offer's price buys, in words: its credits, its time, one request or, for a session,
    each request drawn from a deposit."""
    if o.balance is not None:
        return f"{o.balance} credit{'s' if o.balance != 1 else ''}"
    if o.type == "session":
        return "each request, drawn from a deposit"
    return clean(o.duration or o.type, 80)


def _dialect_note(c: Challenge) -> str:
    """What one payment of this challenge buys, said once beside its price."""
    if c.dialect == "mpp":
        sessions = sum(o.type == "session" for o in c.offers)
        return _DIALECT_NOTES["mpp" if not sessions else "mpp session" if sessions == len(c.offers) else "mpp both"]
    return _DIALECT_NOTES.get(c.dialect, "")


def _offer_text(o: Offer, rate: float | None) -> str:
    via = f" via {clean(o.dialect, 20)}" if o.dialect else ""
    refused = f" (not payable: {clean(o.unpayable, 160)})" if o.unpayable else ""
    return (f"{clean(o.offer_id, 80)} '{clean(o.title, 120)}': {_price(o, rate)} for {_what(o)}, "
            f"pay by {clean(', '.join(o.payment_methods), 120)}{via}{refused}")


def _receipt_line(r: Receipt, rate: float | None) -> str:
    what = f"{clean(r.offer_id, 80)} '{clean(r.offer_title, 120)}'" if r.offer_id else clean(r.protocol, 40)
    reason = f" ({clean(r.reason, 300)})" if r.reason else ""
    return (f"#{r.id} {r.when} UTC {r.status.value}: {fmt_msat(r.amount_msat, rate)} + {r.fee_text} "
            f"for {what} by {clean(r.method, 40)} at {clean(r.url, 300)}; payment hash {clean(r.payment_hash or '?', 80)}"
            f"{reason}")
