"""Pay through Fewsats, a hosted payer for agents: it pays Lightning invoices, or whole L402 offers, from a USD balance.

Facts relied on, read from the PyPI package ``fewsats`` 0.0.22 (``fewsats/core.py``, its README) and
the TypeScript client ``fewsats-ts`` (``src/types.ts``); we talk HTTP with httpx instead of depending
on the package:

- Base URL ``https://api.fewsats.com``; every call sends ``Authorization: Token <api key>``.
- ``GET v0/wallets`` -> ``[{"id", "balance", "currency": "usd"}]``: the balance is in USD cents.
- ``POST v0/l402/purchases/lightning`` with ``{"invoice", "amount", "currency", "description"}``:
  ``amount`` is what the caller expects to pay, in cents of ``currency`` ("for accounting purposes";
  the sats paid are the invoice's).
- ``POST v0/l402/purchases/from-offer`` with ``{"offer_id", "offers", "payment_context_token",
  "payment_request_url", "version"}``: Fewsats asks the service for payment details and pays; the
  caller then repeats its request. 0.0.22 sends each offer with the key ``id``; newer Fewsats docs
  use ``offer_id``: we send both.
- Purchases answer ``{"id", "status", "created_at", "payment_method", ...}`` and may carry
  ``amount``, ``currency``, ``invoice``, ``preimage`` (fewsats-ts ``PaymentResponseData``).
  ``status`` is ``success``, ``needs_review`` (a person must approve it in the Fewsats app),
  ``pending`` or ``failed``. Only ``success`` counts as paid, and for an invoice only with a
  preimage that proves it.
- ``GET v0/l402/outgoing-payments/{id}`` -> the same purchase record (``payment_info``).
- Errors are not documented by the package (it returns raw responses). ``Token`` auth is Django
  REST framework's scheme, so we expect its shapes: ``{"detail": "..."}`` (401 "Invalid token.",
  404 "Not found.") or field errors ``{"field": ["..."]}``; we read both and map by status code
  and wording (already paid, insufficient balance).

Fewsats looks purchases up by its own id, not by payment hash: `lookup` knows the purchases this
wallet object made (hash -> id, in memory). For any other hash it raises WalletError instead of
returning None, because None tells a reconciler "nothing was paid" and a purchase made before a
restart would then be paid again: check such payments in the Fewsats app.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import httpx

from httpay.core.pooled import kept
from httpay.errors import (
    AlreadyPaid,
    InsufficientFunds,
    PaymentTimeout,
    WalletError,
    WalletUnreachable,
    redact,
)
from httpay.wallets.base import Payment, PaymentStatus, Wallet, fingerprint

if TYPE_CHECKING:
    from httpay.protocols.l402_v02 import Offer, PaymentOffers
from httpay.safe import get_logger, mask_urls

log = get_logger("httpay.wallet.fewsats")

_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
REVIEW_HINT = "a person must approve it in the Fewsats app (app.fewsats.com); then look it up or repeat the request"


class FewsatsWallet(Wallet):
    """A Fewsats account driven with its API key (kept private: never in a repr, log or error)."""

    name = "fewsats"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://api.fewsats.com",
        timeout: float = 30.0,
        usd_per_btc: float | None = None,
        network: str = "bitcoin",
        client: httpx.Client | None = None,
    ) -> None:
        """`usd_per_btc` prices invoices in the USD cents Fewsats asks for (pass `amount_usd_cents` per
        payment instead, or neither and paying an invoice is refused). `client` lets tests inject a transport."""
        if not api_key:
            raise WalletError("Fewsats API key is empty: create one in the Fewsats app (Settings -> API keys)")
        if not base_url.startswith(("http://", "https://")):
            raise WalletError(f"Fewsats base URL must start with https://, got {base_url!r}")
        if usd_per_btc is not None and usd_per_btc <= 0:
            raise WalletError(f"usd_per_btc must be positive, got {usd_per_btc}")
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.network = network
        self._rate = usd_per_btc
        self.__key = api_key
        self._pids: dict[str, str] = {}
        self._owns_client = client is None
        self._client = client if client is not None else kept(httpx.Client(timeout=self.timeout, follow_redirects=False))

    def __repr__(self) -> str:
        return f"FewsatsWallet(base_url={mask_urls(self.base_url)!r})"

    __str__ = __repr__

    @property
    def identity(self) -> str:
        """This Fewsats account: a one-way fingerprint of the API and the account's key."""
        return fingerprint("fewsats", self.base_url, self.__key)

    def usd_per_btc(self) -> float | None:
        """The BTC/USD rate this wallet prices invoices with (None when not given)."""
        return self._rate

    def usd_cents_for(self, amount_msat: int) -> int:
        """The USD cents declared to Fewsats for an invoice of `amount_msat` (rounded up: never understate)."""
        if self._rate is None:
            raise WalletError(
                "Fewsats wants the price in USD cents: create FewsatsWallet(usd_per_btc=...) or pass amount_usd_cents"
            )
        return max(1, math.ceil(amount_msat * self._rate / 1_000_000_000 - 1e-9))

    # --- plumbing -------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self.__key, redact(self.__key, 0))

    def _send(self, method: str, path: str, *, json: Any = None, paying: bool = False) -> httpx.Response:
        headers = {"Authorization": f"Token {self.__key}"}
        try:
            return self._client.request(method, f"{self.base_url}/{path}", json=json, headers=headers)
        except _NOT_SENT as exc:
            raise WalletUnreachable(f"cannot reach Fewsats at {self.base_url} ({type(exc).__name__}); nothing was paid") from None
        except httpx.TimeoutException:
            if paying:
                raise PaymentTimeout(
                    f"Fewsats did not answer within {self.timeout:g} s; the purchase may have gone through: "
                    "check it in the Fewsats app before paying again"
                ) from None
            raise WalletError(f"Fewsats did not answer {method} {path} within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise WalletError(
                f"the connection to Fewsats broke during {method} {path} ({type(exc).__name__})"
                + ("; the purchase may have gone through: check the Fewsats app" if paying else ""),
                outcome_known=not paying,
            ) from None

    def _detail(self, r: httpx.Response) -> str:
        try:
            body = r.json()
        except ValueError:
            return self._scrub(f"HTTP {r.status_code} {r.text[:200]}".strip())
        if isinstance(body, dict):
            if "detail" in body:
                return self._scrub(str(body["detail"]))
            parts = [f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in body.items()]
            return self._scrub("; ".join(parts))[:300] or f"HTTP {r.status_code}"
        return self._scrub(str(body))[:300]

    def _error(self, r: httpx.Response, what: str, *, paying: bool) -> WalletError:
        detail = self._detail(r)
        low = detail.lower()
        if r.status_code in (401, 403):
            return WalletError(f"Fewsats refused the API key (HTTP {r.status_code}: {detail}); check FEWSATS_API_KEY")
        if "already paid" in low or "already purchased" in low:
            return AlreadyPaid(f"Fewsats says: {detail}. Nothing was paid this time; look the payment up.")
        if "insufficient" in low or "not enough" in low:
            return InsufficientFunds(f"Fewsats cannot pay: {detail} (top up the balance or add a card in the Fewsats app)")
        return WalletError(
            f"Fewsats could not {what} (HTTP {r.status_code}): {detail}",
            outcome_known=not (paying and r.status_code >= 500),
        )

    def _body(self, r: httpx.Response) -> dict[str, Any]:
        try:
            body = r.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "status" not in body:
            raise WalletError(
                f"Fewsats answered with an unreadable purchase (HTTP {r.status_code}); check the Fewsats app before retrying",
                outcome_known=False,
            )
        return body

    def _to_payment(self, body: dict[str, Any], payment_hash: str, amount_msat: int | None) -> Payment:
        """A purchase record as a Payment: SETTLED only for `success` with a preimage proving `payment_hash`."""
        pid, status = body.get("id"), str(body.get("status", "")).lower()
        preimage = body.get("preimage") if isinstance(body.get("preimage"), str) else None
        if status == "success":
            candidate = Payment(payment_hash, PaymentStatus.SETTLED, amount_msat, 0, preimage)
            if candidate.proves(payment_hash):
                return candidate
            return Payment(payment_hash, PaymentStatus.PENDING, amount_msat,
                           failure_reason=f"Fewsats reports purchase #{pid} succeeded but sent no preimage that proves it; "
                                          "check it in the Fewsats app")
        if status == "failed":
            return Payment(payment_hash, PaymentStatus.FAILED, amount_msat,
                           failure_reason=f"Fewsats purchase #{pid} failed" + (f": {body['error']}" if body.get("error") else ""))
        if status == "needs_review":
            return Payment(payment_hash, PaymentStatus.PENDING, amount_msat,
                           failure_reason=f"needs_review: Fewsats purchase #{pid} waits for approval: {REVIEW_HINT}")
        return Payment(payment_hash, PaymentStatus.PENDING, amount_msat,
                       failure_reason=f"{status or 'unknown'}: Fewsats purchase #{pid} is not complete yet; look it up later")

    # --- Wallet API -----------------------------------------------------------------------------

    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None, amount_usd_cents: int | None = None,
                    description: str = "") -> Payment:
        """Have Fewsats pay the invoice (`pay_lightning`), declaring its price in USD cents.

        Returns SETTLED (with a proving preimage), or PENDING with `failure_reason` saying why
        (`needs_review`: a person must approve it in the Fewsats app; `pending`). Fewsats takes
        no fee cap: `max_fee_msat` is not sent.
        """
        from httpay.bolt11_reader import Bolt11Invalid, read_bolt11

        bolt11 = bolt11.strip()
        try:
            inv = read_bolt11(bolt11)
        except Bolt11Invalid:
            raise WalletError("the invoice could not be decoded as BOLT11; nothing was paid") from None
        payment_hash, amount_msat = (inv.payment_hash or ""), inv.amount_msat
        if amount_msat is None:
            raise WalletError("the invoice has no amount; Fewsats needs one to price it. Nothing was paid")
        cents = amount_usd_cents if amount_usd_cents is not None else self.usd_cents_for(amount_msat)
        log.debug("fewsats pay_lightning hash=%s amount=%d cents", payment_hash[:16], cents)
        body = {"invoice": bolt11, "amount": cents, "currency": "usd", "description": description or inv.description or ""}
        r = self._send("POST", "v0/l402/purchases/lightning", json=body, paying=True)
        if r.status_code not in (200, 201):
            raise self._error(r, "pay the invoice", paying=True)
        record = self._body(r)
        if record.get("id") is not None:
            self._pids[payment_hash] = str(record["id"])
        if str(record.get("status")).lower() == "success" and not record.get("preimage") and record.get("id") is not None:
            record = self._payment_info_raw(str(record["id"])) or record
        payment = self._to_payment(record, payment_hash, amount_msat)
        if payment.status is PaymentStatus.FAILED:
            raise WalletError(f"{payment.failure_reason}; nothing was paid")
        log.debug("fewsats pay_lightning -> %s", payment.status.value)
        return payment

    def pay_offer(self, offers: PaymentOffers, offer: Offer) -> Payment:
        """Let Fewsats run the whole L402 v0.2 flow for `offer` (`pay_offer`); then repeat your request.

        The Payment has no Lightning hash (Fewsats pays an invoice we never see): `payment_hash` is
        ``fewsats:<purchase id>``, `amount_msat` None; SETTLED means Fewsats reports success.
        """
        if offer.offer_id not in {o.offer_id for o in offers.offers}:
            raise WalletError(f"offer {offer.offer_id!r} is not one of the offers the service made; nothing was paid")
        listed = [{**o.to_dict(), "id": o.offer_id} for o in offers.offers]
        body = {
            "offer_id": offer.offer_id, "offers": listed, "payment_context_token": offers.payment_context_token or "",
            "payment_request_url": offers.payment_request_url, "version": offers.version,
        }
        log.debug("fewsats pay_offer offer=%s amount=%d %s", offer.offer_id, offer.amount, offer.currency)
        r = self._send("POST", "v0/l402/purchases/from-offer", json=body, paying=True)
        if r.status_code not in (200, 201):
            raise self._error(r, f"pay offer {offer.offer_id}", paying=True)
        record = self._body(r)
        pid = str(record.get("id", "?"))
        status = str(record.get("status", "")).lower()
        if status == "success":
            return Payment(f"fewsats:{pid}", PaymentStatus.SETTLED)
        payment = self._to_payment(record, f"fewsats:{pid}", None)
        if payment.status is PaymentStatus.FAILED:
            raise WalletError(f"{payment.failure_reason}; nothing was paid")
        return payment

    def _payment_info_raw(self, pid: str) -> dict[str, Any] | None:
        r = self._send("GET", f"v0/l402/outgoing-payments/{pid}")
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise self._error(r, f"look up purchase #{pid}", paying=False)
        return self._body(r)

    def payment_info(self, pid: str | int) -> Payment | None:
        """Fewsats' record of purchase `pid` (None if it has none)."""
        record = self._payment_info_raw(str(pid))
        if record is None:
            return None
        known = {v: k for k, v in self._pids.items()}.get(str(pid))
        return self._to_payment(record, known or f"fewsats:{pid}", None)

    def lookup(self, payment_hash: str) -> Payment | None:
        """Fewsats' record of a purchase this wallet object made for that hash.

        Raises WalletError for a hash it did not pay in this process: Fewsats cannot search by hash,
        so "no record here" does not mean "not paid" (see the module notes).
        """
        payment_hash = payment_hash.strip().lower()
        pid = self._pids.get(payment_hash)
        if pid is None:
            raise WalletError(
                f"Fewsats cannot look payments up by hash; this wallet made no purchase for {payment_hash[:16]}… "
                "since it started. Check the Fewsats app (app.fewsats.com) before paying it again"
            )
        record = self._payment_info_raw(pid)
        return None if record is None else self._to_payment(record, payment_hash, None)

    def balance_usd_cents(self) -> int:
        """The Fewsats balance in USD cents (what Fewsats holds; it is not a Lightning balance)."""
        r = self._send("GET", "v0/wallets")
        if r.status_code != 200:
            raise self._error(r, "tell the balance", paying=False)
        try:
            wallets = r.json()
            return sum(int(w["balance"]) for w in wallets if str(w.get("currency", "usd")).lower() == "usd")
        except (ValueError, KeyError, TypeError):
            raise WalletError("Fewsats answered the balance request without a readable balance") from None

    def balance_msat(self) -> int:
        """Not available: Fewsats holds USD, not sats. Use `balance_usd_cents()`."""
        raise NotImplementedError("Fewsats holds a USD balance, not sats: use FewsatsWallet.balance_usd_cents()")

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
