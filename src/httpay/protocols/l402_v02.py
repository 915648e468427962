"""L402 v0.2: the JSON offers of stock.l402.org, read and written without any I/O.

A 402 answer carries a JSON body with offers; the client picks one, POSTs to
`payment_request_url` and gets back what to pay (an invoice, a checkout page, an address).
Everything here is a pure function of status, headers and body, so it can be fuzzed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from httpay.amounts import MAX_OFFER_AMOUNT
from httpay.amounts import format_amount as format_amount  # noqa: PLC0414 - re-exported from its first home
from httpay.core.model import offers_view
from httpay.errors import ChallengeError, InvoiceError, PaymentRequestError, redact
from httpay.lightning import decode_invoice
from httpay.safe import clean, loads, may_hold_key, parses
from httpay.view import View, amount, kv, payable
from httpay.view import rate as view_rate

PROTOCOL = "l402-v0.2"
KNOWN_METHODS = ("lightning", "credit_card", "coinbase_commerce", "onchain")


def _req(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str, alt: str | None = None) -> Any:
    """Fetch a required field, naming it and what was expected when it is missing or wrong."""
    if key in d:
        value = d[key]
    elif alt is not None and alt in d:
        value, key = d[alt], alt
    else:
        also = f" (or '{alt}')" if alt else ""
        raise ChallengeError(f"{where}: field '{key}'{also} is missing", field=key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ChallengeError(
            f"{where}: field '{key}' must be {names}, got {type(value).__name__} {_short(value)}", field=key
        )
    return value


def _opt(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str, alt: str | None = None) -> Any:
    if key not in d and (alt is None or alt not in d):
        return None
    value = d.get(key, d.get(alt) if alt else None)
    if value is None:
        return None
    return _req(d, key if key in d else alt, kind, where)  # type: ignore[arg-type]


def _short(value: Any, n: int = 40) -> str:
    if isinstance(value, int) and value.bit_length() > 4 * n:  # never int->str a number of thousands of digits
        return f"a number of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def _whole(value: float, key: str, where: str, what: str) -> int:
    """A JSON number as a bounded whole number: NaN, infinities, fractions, negatives and numbers
    no real offer holds (1e308, 4,000 digits) are a ChallengeError naming the field."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ChallengeError(f"{where}: field '{key}' must be {what}, got {_short(value)}", field=key)
    if value < 0:
        raise ChallengeError(f"{where}: field '{key}' must not be negative, got {_short(value)}", field=key)
    if value > MAX_OFFER_AMOUNT:
        raise ChallengeError(f"{where}: field '{key}' is {_short(value, 24)}, larger than any real amount "
                             f"(at most {MAX_OFFER_AMOUNT:,})", field=key)
    return int(value)


def _amount(d: Mapping[str, Any], where: str) -> int:
    value = _req(d, "amount", (int, float), where)
    return _whole(value, "amount", where, "a whole number of the currency's smallest unit")


@dataclass(frozen=True)
class Offer:
    """One way to buy access: a price, what it buys, and how it can be paid.

    `amount` is in the currency's smallest unit (USD cents, sats), as the spec says.
    """

    offer_id: str
    title: str
    description: str
    type: str
    balance: int | None
    amount: int
    currency: str
    payment_methods: tuple[str, ...]
    duration: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Any, index: int = 0) -> Offer:
        where = f"offers[{index}]"
        if not isinstance(d, Mapping):
            raise ChallengeError(f"{where} must be an object, got {type(d).__name__}", field="offers")
        methods = _req(d, "payment_methods", list, where)
        if not all(isinstance(m, str) for m in methods):
            raise ChallengeError(f"{where}: 'payment_methods' must be a list of strings", field="payment_methods")
        balance = _opt(d, "balance", (int, float), where, alt="credits")
        if balance is not None:
            if isinstance(balance, float) and not math.isfinite(balance):
                raise ChallengeError(f"{where}: field 'balance' must be a whole number, got {balance!r}", field="balance")
            balance = _whole(int(balance), "balance", where, "a whole number of credits")
        known = {"offer_id", "id", "title", "description", "type", "balance", "credits", "amount", "currency",
                 "payment_methods", "duration"}
        return cls(
            offer_id=_req(d, "offer_id", str, where, alt="id"),
            title=_opt(d, "title", str, where) or "",
            description=_opt(d, "description", str, where) or "",
            type=_opt(d, "type", str, where) or "one-time",
            balance=balance,
            amount=_amount(d, where),
            currency=_req(d, "currency", str, where).upper(),
            payment_methods=tuple(methods),
            duration=_opt(d, "duration", str, where),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def supports(self, payment: str) -> bool:
        """True when this offer can be paid with `payment` (e.g. 'lightning')."""
        return payment in self.payment_methods

    @property
    def price(self) -> str:
        """The price as a person reads it: '$0.01', '120 SAT'."""
        return format_amount(self.amount, self.currency)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "offer_id": self.offer_id, "title": self.title, "description": self.description, "type": self.type,
            "amount": self.amount, "currency": self.currency, "payment_methods": list(self.payment_methods),
        }
        if self.balance is not None:
            d["balance"] = self.balance
        if self.duration is not None:
            d["duration"] = self.duration
        return d

    def __str__(self) -> str:
        credits = f"{self.balance} credits" if self.balance is not None else clean(self.duration or self.type, 40)
        return (f"{clean(self.offer_id, 80)} '{clean(self.title)}' {self.price} for {credits} "
                f"via {clean(', '.join(self.payment_methods), 120)}")

    def view(self, usd_per_btc: float | None = None) -> View:
        """This offer as a one-row offers table."""
        return offers_view([self], usd_per_btc=usd_per_btc)

    def __rich__(self) -> Any:
        return self.view().to_rich()

    def _repr_html_(self) -> str:
        return self.view().to_html()


class OfferList(list["Offer"]):
    """A list of offers that reads well when printed (what `by_payment` returns)."""

    def __str__(self) -> str:
        return "\n".join(f"- {o}" for o in self) or "(no offers)"

    def view(self, usd_per_btc: float | None = None) -> View:
        return offers_view(self, usd_per_btc=usd_per_btc)

    def __rich__(self) -> Any:
        return self.view().to_rich()

    def _repr_html_(self) -> str:
        return self.view().to_html()


@dataclass(frozen=True)
class PaymentOffers:
    """Everything a v0.2 402 answer offers, in the notebook's words.

    The `payment_context_token` is often the account's bearer id, so it is kept out of the repr.
    """

    version: str
    payment_request_url: str
    offers: tuple[Offer, ...]
    payment_context_token: str | None = field(default=None, repr=False)
    terms_url: str | None = None
    metadata: Mapping[str, Any] | None = None
    expiry: str | None = None
    protocol: str = PROTOCOL

    @classmethod
    def from_dict(cls, d: Any) -> PaymentOffers:
        """Read a decoded 402 JSON body; raise ChallengeError naming the bad field."""
        where = "402 body"
        if not isinstance(d, Mapping):
            raise ChallengeError(f"{where} must be a JSON object, got {type(d).__name__}", field=None)
        raw_offers = _req(d, "offers", list, where)
        if not raw_offers:
            raise ChallengeError(f"{where}: field 'offers' is empty: a challenge must offer something to buy",
                                 field="offers")
        offers = tuple(Offer.from_dict(o, i) for i, o in enumerate(raw_offers))
        ids = [o.offer_id for o in offers]
        if len(set(ids)) != len(ids):
            raise ChallengeError(f"{where}: field 'offers' has repeated offer ids: {clean(ids)}", field="offers")
        version = d.get("version")
        if version is not None and not isinstance(version, str | int | float):
            raise ChallengeError(f"{where}: field 'version' must be a string", field="version")
        metadata = _opt(d, "metadata", dict, where)
        return cls(
            version=str(version) if version is not None else "0.2",
            payment_request_url=check_payment_request_url(_req(d, "payment_request_url", str, where)),
            offers=offers,
            payment_context_token=_opt(d, "payment_context_token", str, where),
            terms_url=_opt(d, "terms_url", str, where),
            metadata=metadata,
            expiry=_opt(d, "expiry", str, where),
        )

    @classmethod
    def from_response(cls, response: Any) -> PaymentOffers:
        """Read an httpx (or requests-like) 402 response. Raises ChallengeError if it holds no offers."""
        if not all(hasattr(response, a) for a in ("status_code", "headers", "content")):
            raise ChallengeError(f"PaymentOffers.from_response takes an HTTP response (httpx or requests), "
                                 f"got {type(response).__name__}; for a body alone use httpay.parse(402, headers, body)")
        offers = parse(response.status_code, response.headers, response.content)
        if offers is None:
            raise ChallengeError(
                f"the response (status {response.status_code}) is not an L402 v0.2 payment challenge", field=None
            )
        return offers

    def by_payment(self, payment: str, reverse: bool = False) -> OfferList:
        """Offers payable with `payment`, sorted by amount (cheapest first unless `reverse`)."""
        return OfferList(sorted((o for o in self.offers if o.supports(payment)), key=lambda o: o.amount, reverse=reverse))

    def supports(self, payment: str) -> bool:
        return any(o.supports(payment) for o in self.offers)

    def get(self, offer_id: str) -> Offer:
        for o in self.offers:
            if o.offer_id == offer_id:
                return o
        raise ChallengeError(
            f"no offer with id {clean(repr(offer_id), 80)}; offered: "
            f"{clean(', '.join(o.offer_id for o in self.offers)) or 'none'}",
            field="offer_id",
        )

    @property
    def payment_methods(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for o in self.offers:
            for m in o.payment_methods:
                seen.setdefault(m, None)
        return tuple(seen)

    def __iter__(self) -> Iterator[Offer]:
        return iter(self.offers)

    def __len__(self) -> int:
        return len(self.offers)

    def __getitem__(self, i: int) -> Offer:
        return self.offers[i]

    def __str__(self) -> str:
        head = f"L402 Payment Offers (v{clean(self.version, 20)})"
        return head + "\n" + "\n".join(f"- {o}" for o in self.offers)

    def __repr__(self) -> str:
        return (
            f"PaymentOffers(version={self.version!r}, payment_request_url={self.payment_request_url!r}, "
            f"payment_context_token={redact(self.payment_context_token)!r}, offers={list(self.offers)!r})"
        )

    def view(self, usd_per_btc: float | None = None, chosen: str | None = None) -> View:
        return offers_view(self.offers, title=f"L402 Payment Offers (v{self.version})", usd_per_btc=usd_per_btc,
                           chosen=chosen)

    def __rich__(self) -> Any:
        return self.view().to_rich()

    def _repr_html_(self) -> str:
        return self.view().to_html()

    def to_dict(self) -> dict[str, Any]:
        """The challenge as JSON-able data, without the context token (it may be a bearer)."""
        d: dict[str, Any] = {
            "version": self.version, "payment_request_url": self.payment_request_url,
            "offers": [o.to_dict() for o in self.offers],
        }
        if self.terms_url:
            d["terms_url"] = self.terms_url
        return d


_BODY_KEYS = ("offers", "payment_request_url")


def _header(headers: Any, name: str) -> str:
    if headers is None:
        return ""
    if isinstance(headers, Mapping):
        for k, v in headers.items():
            if isinstance(k, str) and k.lower() == name:
                return str(v)
        return ""
    try:
        return str(headers.get(name) or "")
    except Exception:  # noqa: BLE001 - any odd header container means "absent"
        return ""


def parse(status: int, headers: Any, body: bytes | str | None) -> PaymentOffers | None:
    """Read a response into `PaymentOffers`, or None when it is not an L402 v0.2 challenge.

    A 402 whose JSON body has `offers` is a challenge; a malformed one raises ChallengeError.
    A 402 that carries no JSON object with offers returns None (another protocol may claim it).
    """
    if status != 402 or body is None or not body.strip():
        return None  # an empty body holds no offers, whatever its label says (a header dialect may)
    ctype = _header(headers, "content-type").lower()
    if ctype and "json" not in ctype:
        return None
    text = body.lstrip()[:1] if isinstance(body, str) else body.lstrip()[:1].decode("latin-1")
    if text == "[":
        return None  # a JSON array is never a challenge: decided before parsing, however deep it nests
    if not may_hold_key(body, _BODY_KEYS):  # another dialect's body: parsed only to tell whether it is JSON
        if "json" in ctype and not parses(body):
            raise ChallengeError("402 body says it is JSON but does not parse as JSON", field="body")
        return None
    try:
        data = loads(body)
    except ValueError:  # not JSON, not text, nested absurdly deep, an integer of thousands of digits
        if "json" in ctype:
            raise ChallengeError("402 body says it is JSON but does not parse as JSON", field="body") from None
        return None
    if not isinstance(data, dict) or ("offers" not in data and "payment_request_url" not in data):
        return None
    return PaymentOffers.from_dict(data)


def check_payment_request_url(raw: Any) -> str:
    """A `payment_request_url` the client can POST to: an http(s) URL or a path on the service.

    Empty, not text, another scheme (`ftp://x`), a bad port (`http://127.0.0.1:abc/pay`) or an
    unclosed IPv6 host (`http://[::1/pay`) is a ChallengeError naming the field, never httpx's
    InvalidURL later. Returns the URL as given (relative ones are joined to the request's URL)."""
    if isinstance(raw, str) and len(raw) <= 2048:
        return _checked_url(raw)  # one service sends the same URL in every 402: checked once
    return _check_url(raw)


def _check_url(raw: Any) -> str:
    import httpx

    where = "402 body: field 'payment_request_url'"
    if not isinstance(raw, str):
        raise ChallengeError(f"{where} must be a string, got {type(raw).__name__}", field="payment_request_url")
    text = raw.strip()
    if not text:
        raise ChallengeError(f"{where} is empty: the service did not say where to ask for payment",
                             field="payment_request_url")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ChallengeError(f"{where} holds spaces or control characters: {_short(raw)}", field="payment_request_url")
    try:
        url = httpx.URL("https://service.invalid/").join(text)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise ChallengeError(f"{where} is not a URL: {_short(raw)}", field="payment_request_url") from None
    if url.scheme not in ("http", "https"):
        raise ChallengeError(f"{where} must be an http or https URL, got {_short(raw)}", field="payment_request_url")
    if not url.host:
        raise ChallengeError(f"{where} names no host: {_short(raw)}", field="payment_request_url")
    return text


_checked_url = functools.lru_cache(maxsize=128)(_check_url)


def payment_request_body(
    offers: PaymentOffers, offer: Offer, method: str, *, chain: str | None = None, asset: str | None = None
) -> dict[str, Any]:
    """The JSON to POST to `payment_request_url` for `offer` paid by `method`."""
    if offer not in offers.offers:
        raise ChallengeError(f"offer {offer.offer_id!r} is not one of this challenge's offers", field="offer_id")
    if not offer.supports(method):
        raise ChallengeError(
            f"offer {offer.offer_id!r} cannot be paid with {method!r}; it takes {', '.join(offer.payment_methods)}",
            field="payment_method",
        )
    body: dict[str, Any] = {"offer_id": offer.offer_id, "payment_method": method}
    if offers.payment_context_token is not None:
        body["payment_context_token"] = offers.payment_context_token
    if method == "onchain":
        if chain:
            body["chain"] = chain
        if asset:
            body["asset"] = asset
    return body


def _parse_time(value: str, where: str) -> datetime:
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise PaymentRequestError(f"{where}: 'expires_at' is not an ISO 8601 time: {_short(value)}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class PaymentRequest:
    """What the service asks to be paid, for one offer and one method (the notebook's PaymentInfo)."""

    offer_id: str
    payment_method: str
    expires_at: datetime | None
    version: str = "0.2"
    lightning_invoice: str | None = None
    checkout_url: str | None = None
    contract_addresses: Mapping[str, str] | None = None
    address: str | None = None
    asset: str | None = None
    chain: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Any, *, payment_method: str, offer_id: str | None = None) -> PaymentRequest:
        """Read the payment-request answer; check it is for the offer we asked about."""
        where = "payment request answer"
        if not isinstance(d, Mapping):
            raise PaymentRequestError(f"{where} must be a JSON object, got {type(d).__name__}")
        pr = d.get("payment_request")
        if not isinstance(pr, Mapping):
            raise PaymentRequestError(f"{where}: field 'payment_request' is missing or not an object")
        got_id = d.get("offer_id")
        if got_id is not None and not isinstance(got_id, str):
            raise PaymentRequestError(f"{where}: field 'offer_id' must be a string")
        if offer_id is not None and got_id is not None and got_id != offer_id:
            raise PaymentRequestError(f"{where}: it is for offer {_short(got_id)}, but we asked for {_short(offer_id)}")
        expires = d.get("expires_at")
        if expires is not None and not isinstance(expires, str):
            raise PaymentRequestError(f"{where}: field 'expires_at' must be a string")

        def s(key: str) -> str | None:
            v = pr.get(key)
            if v is not None and not isinstance(v, str):
                raise PaymentRequestError(f"{where}: 'payment_request.{key}' must be a string")
            return v

        contracts = pr.get("contract_addresses")
        if contracts is not None and not (
            isinstance(contracts, Mapping) and all(isinstance(v, str) for v in contracts.values())
        ):
            raise PaymentRequestError(f"{where}: 'payment_request.contract_addresses' must map chain ids to addresses")
        req = cls(
            offer_id=got_id or offer_id or "",
            payment_method=payment_method,
            expires_at=_parse_time(expires, where) if expires else None,
            version=str(d.get("version") or "0.2"),
            lightning_invoice=s("lightning_invoice"),
            checkout_url=s("checkout_url"),
            contract_addresses={str(k): v for k, v in contracts.items()} if contracts else None,
            address=s("address"),
            asset=s("asset"),
            chain=s("chain"),
            raw=dict(pr),
        )
        needed = {"lightning": "lightning_invoice", "onchain": "address"}.get(payment_method)
        if needed and not getattr(req, needed):
            raise PaymentRequestError(f"{where}: method {payment_method!r} needs 'payment_request.{needed}', it is absent")
        return req

    def __str__(self) -> str:
        what = {
            "lightning": lambda: f"Lightning invoice {clean(self.lightning_invoice or '', 24)}…",
            "onchain": lambda: f"send {clean(self.asset or 'BTC', 20)} on {clean(self.chain or '?', 40)} "
                               f"to {clean(self.address, 100)}",
        }.get(self.payment_method, lambda: f"checkout at {clean(self.checkout_url)}")()
        exp = f", expires {self.expires_at:%Y-%m-%d %H:%M:%S %Z}" if self.expires_at else ""
        return f"Payment request for {clean(self.offer_id, 80)} by {clean(self.payment_method, 40)}: {what}{exp}"

    def view(self, usd_per_btc: float | None = None) -> View:
        """The payment request as fields: the offer, the method, how long it stays payable, and
        what it asks (the invoice shortened, its amount; a checkout URL; an address)."""
        rows = [("offer", self.offer_id), ("method", self.payment_method)]
        if self.expires_at:
            rows.append(("expires", f"{self.expires_at:%Y-%m-%d %H:%M:%S %Z}"))
            rows.append(("status", payable(self.expires_at)))
        if self.lightning_invoice:
            rows.append(("invoice", self.lightning_invoice[:40] + "…"))
            try:
                rows.append(("amount", amount(decode_invoice(self.lightning_invoice).amount_msat, view_rate(usd_per_btc))))
            except InvoiceError:
                rows.append(("amount", "unknown: not a valid BOLT11 invoice"))
        if self.checkout_url:
            rows.append(("checkout", self.checkout_url))
        for chain, addr in (self.contract_addresses or {}).items():
            rows.append((f"contract (chain {chain})", addr))
        if self.address:
            rows.append(("address", f"{self.address} ({self.asset or '?'} on {self.chain or '?'})"))
        return kv("Payment request", rows, name="payment-request")

    def __rich__(self) -> Any:
        return self.view().to_rich()

    def _repr_html_(self) -> str:
        return self.view().to_html()


def iter_methods(offers: Iterable[Offer]) -> list[str]:
    return sorted({m for o in offers for m in o.payment_methods})
