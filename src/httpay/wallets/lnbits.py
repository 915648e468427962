"""Pay through an LNbits wallet over its REST API.

LNbits is a common self-hosted (and hosted) Lightning accounts server, so one admin key is all an
agent needs to pay. Facts below were checked against a running LNbits 1.6.2 (FakeWallet funding
source), not taken from its docs:

- Pay: ``POST /api/v1/payments`` with ``X-Api-Key: <admin key>`` and ``{"out": true, "bolt11"}``
  answers 201 with the payment: ``payment_hash``, ``checking_id`` (``internal_<hash>`` when payee
  and payer share the LNbits), ``amount`` (msat, negative for outgoing), ``fee`` (msat, may be
  negative while a fee reserve is held), ``status`` (``"success"``, ``"pending"`` or ``"failed"``)
  and ``preimage``. The body has no fee cap: LNbits applies its own fee-reserve settings.
- Errors on that route come back as HTTP 520 ``{"detail": <message>, "status": <payment state>}``:
  - balance too low: ``{"detail": "Insufficient balance.", "status": "failed"}``; with an external
    invoice also "You must reserve at least (N sat) to cover potential routing fees.";
  - paying a same-LNbits invoice twice: ``{"detail": "Internal invoice already paid.",
    "status": "failed"}`` (nothing is debited the second time); for external invoices LNbits says
    "Payment already paid." (``status: "success"``) or "Payment is still pending." (``"pending"``);
  - garbage invoice: ``{"detail": "Bolt11 decoding failed.", "status": "failed"}``;
  - no amount: ``{"detail": "Amountless invoices not supported.", "status": "failed"}``.
  An invoice key on the pay route gives 403 "Invoice (or Admin) key required."; an unknown key
  gives 404 "Wallet not found.".
- Lookup: ``GET /api/v1/payments/{hash}`` with a key of the wallet answers
  ``{"paid", "preimage", "status"?, "details": {...payment...}}``; a hash this wallet never saw
  answers 404 ``{"detail": "Payment does not exist."}`` (also for a hash of another wallet's
  invoice). Without a valid key LNbits searches *all* wallets and drops ``details``: so an answer
  without ``details`` means the key is wrong, never "not paid".
- Balance: ``GET /api/v1/wallet`` answers ``{"name", "balance"}`` (msat; plus ``id`` for the admin
  key).
- Invoice: ``POST /api/v1/payments`` with the invoice key and ``{"out": false, "amount": <sat>,
  "memo"}`` answers 201 with ``bolt11`` (and ``payment_request``, ``payment_hash``).
"""

from __future__ import annotations

from typing import Any

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
from httpay.safe import get_logger, mask_urls
from httpay.wallets.base import (
    Payment,
    PaymentStatus,
    Wallet,
    fingerprint,
    invoice_facts,
)

log = get_logger("httpay.wallet.lnbits")

_STATUS = {
    "success": PaymentStatus.SETTLED,
    "pending": PaymentStatus.PENDING,
    "failed": PaymentStatus.FAILED,
}




class LNbitsWallet(Wallet):
    """An LNbits wallet, driven with its admin key (pays) and optionally its invoice key (reads).

    The keys live in private attributes only; repr, logs and errors never show them.
    """

    name = "lnbits"

    def __init__(
        self,
        url: str,
        admin_key: str,
        *,
        invoice_key: str | None = None,
        network: str = "bitcoin",
        timeout: float = 30.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise WalletError(f"LNbits URL must start with http:// or https://, got {url!r}")
        if not admin_key:
            raise WalletError("LNbits admin key is empty: pass the wallet's Admin key")
        self.url = url.rstrip("/")
        self.network = network
        self.timeout = timeout
        self.__admin_key = admin_key
        self.__invoice_key = invoice_key or admin_key
        self._client = kept(httpx.Client(base_url=self.url, timeout=timeout, follow_redirects=False))

    def __repr__(self) -> str:
        return f"LNbitsWallet(url={mask_urls(self.url)!r}, network={self.network!r})"

    __str__ = __repr__

    @property
    def identity(self) -> str:
        """This LNbits wallet: a one-way fingerprint of the server and the wallet's admin key (one key, one wallet)."""
        return fingerprint("lnbits", self.url, self.__admin_key)

    # --- plumbing -------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """Remove the keys from any text that may reach a message (LNbits echoes nothing, but be sure)."""
        for key in {self.__admin_key, self.__invoice_key}:
            if key:
                text = text.replace(key, redact(key, 0))
        return text

    def _request(self, method: str, path: str, *, admin: bool, json: Any = None) -> httpx.Response:
        key = self.__admin_key if admin else self.__invoice_key
        try:
            return self._client.request(method, path, json=json, headers={"X-Api-Key": key})
        except httpx.TimeoutException as exc:
            sent = not isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
            raise PaymentTimeout(
                f"LNbits at {self.url} did not answer {method} {path} within {self.timeout:g} s"
                + ("; the request may have been processed: look the payment up before retrying" if sent else ""),
                outcome_known=not sent,
            ) from None
        except httpx.ConnectError as exc:
            raise WalletUnreachable(
                f"cannot reach LNbits at {self.url}: {self._scrub(str(exc))}; check the URL and that it runs"
            ) from None
        except httpx.HTTPError as exc:
            raise WalletError(
                f"LNbits at {self.url} broke off {method} {path}: {type(exc).__name__}; "
                "look the payment up before retrying",
                outcome_known=False,
            ) from None

    def _json(self, r: httpx.Response) -> Any:
        try:
            return r.json()
        except ValueError:
            return None

    def _detail(self, r: httpx.Response) -> tuple[str, str | None]:
        """LNbits' error message and payment state from an error answer."""
        body = self._json(r)
        if isinstance(body, dict):
            detail = body.get("detail")
            if isinstance(detail, list):  # FastAPI validation errors
                detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
            state = body.get("status")
            return self._scrub(str(detail or r.reason_phrase)), state if isinstance(state, str) else None
        if r.is_redirect:
            where = r.headers.get("location", "")
            hint = " (LNbits is not set up yet: finish its first install)" if "first_install" in where else ""
            return f"redirected to {self._scrub(where)!r}{hint}", None
        return self._scrub(f"HTTP {r.status_code} {r.text[:200]}"), None

    def _auth_error(self, r: httpx.Response, detail: str) -> WalletError:
        """A refused key, or (a 404 that is not LNbits' JSON) a URL where no LNbits answers."""
        if r.status_code == 404 and not (isinstance(body := self._json(r), dict) and "detail" in body):
            return WalletError(f"no LNbits API at {self.url} (HTTP 404 for {r.request.url.path}): check LNBITS_URL "
                               "names the LNbits server itself")
        return WalletError(f"LNbits refused the API key (HTTP {r.status_code}: {detail}); check the wallet's Admin/Invoice keys")

    # --- Wallet API -----------------------------------------------------------------------------

    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Payment:
        """Pay through LNbits; never returns SETTLED without a preimage that proves the hash.

        `max_fee_msat` cannot be passed to LNbits (its API has no per-payment cap: it reserves fees
        by its own settings); a settled payment whose fee exceeded it is logged as a warning.
        """
        bolt11 = bolt11.strip()
        expected_hash = invoice_facts(bolt11)[0]
        log.debug("lnbits pay_invoice url=%s hash=%s", self.url, (expected_hash or "?")[:16])
        r = self._request("POST", "/api/v1/payments", admin=True, json={"out": True, "bolt11": bolt11})
        if r.status_code in (200, 201):
            return self._paid(r, expected_hash, max_fee_msat)
        detail, state = self._detail(r)
        log.debug("lnbits pay_invoice refused: HTTP %s %s (state %s)", r.status_code, detail, state)
        low = detail.lower()
        if "insufficient balance" in low or "must reserve" in low:
            raise InsufficientFunds(f"LNbits wallet cannot pay: {detail}")
        if "already paid" in low:
            raise AlreadyPaid(f"LNbits says: {detail} Nothing was paid this time; look the payment up.")
        if "still pending" in low:
            raise AlreadyPaid(
                f"LNbits says: {detail} An earlier attempt is in flight; look the payment up.",
                outcome_known=False,
            )
        if r.status_code in (401, 403) or (r.status_code == 404 and "wallet" in low):
            raise self._auth_error(r, detail)
        if r.status_code == 520:
            # LNbits' own payment/invoice errors: `status` says where the payment stands.
            if state == "success":
                raise AlreadyPaid(f"LNbits says: {detail}")
            raise WalletError(f"LNbits could not pay the invoice: {detail}", outcome_known=state != "pending")
        # 4xx: LNbits rejected the request before paying; 5xx: it may have paid.
        raise WalletError(
            f"LNbits could not pay the invoice (HTTP {r.status_code}): {detail}",
            outcome_known=r.status_code < 500,
        )

    def _paid(self, r: httpx.Response, expected_hash: str | None, max_fee_msat: int | None) -> Payment:
        body = self._json(r)
        if not isinstance(body, dict) or not body.get("payment_hash"):
            raise WalletError(
                f"LNbits answered the payment with an unreadable body (HTTP {r.status_code}); "
                "look the payment up before retrying",
                outcome_known=False,
            )
        payment_hash = str(body["payment_hash"]).lower()
        if expected_hash and payment_hash != expected_hash:
            raise WalletError(
                f"LNbits reported payment hash {payment_hash[:16]}… for an invoice with hash {expected_hash[:16]}…",
                outcome_known=False,
            )
        payment = self._to_payment(body, payment_hash)
        if payment.status is PaymentStatus.SETTLED:
            if not payment.proves(payment_hash):
                raise WalletError(
                    f"LNbits says payment {payment_hash[:16]}… succeeded but its preimage does not prove it; "
                    "do not pay again, check the payment in LNbits",
                    outcome_known=False,
                )
            if max_fee_msat is not None and payment.fee_msat > max_fee_msat:
                log.warning(
                    "lnbits payment %s… paid fee %d msat above the limit %d msat",
                    payment_hash[:16], payment.fee_msat, max_fee_msat,
                )
        elif payment.status is PaymentStatus.FAILED:
            raise WalletError(f"LNbits reports payment {payment_hash[:16]}… failed")
        log.debug("lnbits pay_invoice done: %s", payment.status.value)
        return payment

    @staticmethod
    def _to_payment(d: dict[str, Any], payment_hash: str, paid: bool | None = None) -> Payment:
        status = _STATUS.get(str(d.get("status", "")).lower())
        if status is None:
            status = PaymentStatus.SETTLED if paid else PaymentStatus.PENDING
        amount = d.get("amount")
        fee = d.get("fee") or 0
        preimage = d.get("preimage") if status is PaymentStatus.SETTLED else None
        return Payment(
            payment_hash=payment_hash,
            status=status,
            amount_msat=abs(int(amount)) if amount is not None else None,
            fee_msat=abs(int(fee)),
            preimage=str(preimage) if preimage else None,
            failure_reason="LNbits reports the payment failed" if status is PaymentStatus.FAILED else None,
        )

    def lookup(self, payment_hash: str) -> Payment | None:
        """This wallet's outgoing payment with that hash; None if LNbits has none for this wallet."""
        payment_hash = payment_hash.strip().lower()
        log.debug("lnbits lookup url=%s hash=%s", self.url, payment_hash[:16])
        r = self._request("GET", f"/api/v1/payments/{payment_hash}", admin=False)
        if r.status_code == 404:
            detail, _ = self._detail(r)
            if "wallet" in detail.lower():
                raise self._auth_error(r, detail)
            return None
        if r.status_code != 200:
            detail, _ = self._detail(r)
            raise WalletError(f"LNbits could not look up payment {payment_hash[:16]}… (HTTP {r.status_code}): {detail}")
        body = self._json(r)
        details = body.get("details") if isinstance(body, dict) else None
        if not isinstance(details, dict):
            # Without a valid key LNbits searches every wallet and omits the details.
            raise WalletError(
                "LNbits answered the lookup without payment details: the API key is not this wallet's"
            )
        amount = details.get("amount")
        if amount is not None and int(amount) > 0:
            log.debug("lnbits lookup: %s… is an incoming invoice of this wallet, not a payment", payment_hash[:16])
            return None
        if "status" not in details and "status" in body:
            details = {**details, "status": body["status"]}
        if details.get("preimage") is None and body.get("preimage"):
            details = {**details, "preimage": body["preimage"]}
        payment = self._to_payment(details, payment_hash, paid=bool(body.get("paid")))
        log.debug("lnbits lookup done: %s", payment.status.value)
        return payment

    def received_msat(self, payment_hash: str) -> int | None:
        """What came in on an invoice of this wallet (0 while unpaid), None when LNbits knows no such
        incoming payment of this wallet (an outgoing one is not a receipt)."""
        body = self._invoice(payment_hash)
        if body is None:
            return None
        details = body.get("details")
        if not isinstance(details, dict):
            raise WalletError("LNbits answered the invoice lookup without details: the API key is not this wallet's")
        amount = details.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            return None  # an outgoing payment (negative), or no amount: not something this wallet received
        paid = bool(body.get("paid")) or details.get("status") == "success"
        return amount if paid else 0

    def balance_msat(self) -> int:
        """Spendable balance as LNbits reports it (msat)."""
        log.debug("lnbits balance url=%s", self.url)
        r = self._request("GET", "/api/v1/wallet", admin=False)
        if r.status_code != 200:
            detail, _ = self._detail(r)
            if r.status_code in (401, 403, 404):
                raise self._auth_error(r, detail)
            raise WalletError(f"LNbits could not tell the balance (HTTP {r.status_code}): {detail}")
        body = self._json(r)
        if not isinstance(body, dict) or "balance" not in body:
            raise WalletError("LNbits answered the balance request without a balance")
        return int(body["balance"])

    def create_invoice(self, amount_sat: int, memo: str = "") -> str:
        """A BOLT11 invoice paying this wallet (lets a service take payments into LNbits)."""
        if amount_sat <= 0:
            raise WalletError(f"invoice amount must be a positive number of sat, got {amount_sat}")
        log.debug("lnbits create_invoice url=%s amount_sat=%d", self.url, amount_sat)
        r = self._request(
            "POST", "/api/v1/payments", admin=False, json={"out": False, "amount": amount_sat, "memo": memo}
        )
        if r.status_code not in (200, 201):
            detail, _ = self._detail(r)
            if r.status_code in (401, 403) or (r.status_code == 404 and "wallet" in detail.lower()):
                raise self._auth_error(r, detail)
            raise WalletError(f"LNbits could not create an invoice (HTTP {r.status_code}): {detail}")
        body = self._json(r)
        bolt11 = body.get("bolt11") or body.get("payment_request") if isinstance(body, dict) else None
        if not bolt11:
            raise WalletError("LNbits created an invoice but sent no bolt11")
        return str(bolt11)

    def _invoice(self, payment_hash: str) -> dict[str, Any] | None:
        """LNbits' answer about a payment hash of this wallet (None: it knows none)."""
        payment_hash = payment_hash.strip().lower()
        r = self._request("GET", f"/api/v1/payments/{payment_hash}", admin=False)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            detail, _ = self._detail(r)
            raise WalletError(f"LNbits could not look up invoice {payment_hash[:16]}… (HTTP {r.status_code}): {detail}")
        body = self._json(r)
        return body if isinstance(body, dict) else {}

    def invoice_paid(self, payment_hash: str) -> bool:
        """Whether an invoice this wallet issued (create_invoice) has been paid: what a service asks."""
        body = self._invoice(payment_hash)
        return bool(body and body.get("paid"))

    def close(self) -> None:
        self._client.close()
