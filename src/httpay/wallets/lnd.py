"""Pay through an LND node over its REST API (the grpc-gateway in front of lnd's gRPC services).

LND is the most common self-run Lightning node; its REST port (8080 by default) takes a macaroon in
a header and serves a self-signed TLS certificate. Facts relied on, from lnd's protos as shipped in
the npm package ``@lightningpolar/lnd-api`` 0.20.0-beta (``routerrpc/router.proto``,
``lightning.proto``) and lnd's REST mapping (``router.yaml``: ``SendPaymentV2 -> POST
/v2/router/send``, ``TrackPaymentV2 -> GET /v2/router/track/{payment_hash}``;
``ChannelBalance -> GET /v1/balance/channels``):

- Auth: header ``Grpc-Metadata-macaroon: <macaroon hex>``. TLS: lnd's own ``tls.cert``.
- grpc-gateway JSON: 64-bit integers are strings, enums are names, ``bytes`` fields are base64
  (a ``bytes`` path parameter is given base64url). ``lnrpc.Payment.payment_hash`` and
  ``payment_preimage`` are hex *strings* (not bytes); we still accept base64 defensively.
- Pay: ``POST /v2/router/send`` with ``payment_request``, ``timeout_seconds`` (int32, time allowed
  to find a route before the first HTLC), ``fee_limit_msat`` (int64; 0 would allow only fee-free
  routes). It streams newline-delimited ``{"result": Payment}`` updates: ``status`` INITIATED /
  IN_FLIGHT / SUCCEEDED / FAILED, ``payment_preimage``, ``value_msat``, ``fee_msat``,
  ``failure_reason`` (FAILURE_REASON_TIMEOUT, _NO_ROUTE, _ERROR, _INCORRECT_PAYMENT_DETAILS,
  _INSUFFICIENT_BALANCE, _CANCELED). Errors come as ``{"error": {"code", "message", "details"}}``
  (a gRPC status; HTTP status set from the code when nothing was streamed before). Paying an
  invoice this node already paid: code 6 (AlreadyExists) "invoice is already paid"; while an
  earlier attempt is in flight: code 6 "payment is in transition".
  We chose v2 over ``/v1/channels/transactions`` (SendPaymentSync) because it reports a fee limit
  in msat, the payment status and the failure reason as enums rather than free text.
- Lookup: ``GET /v2/router/track/{hash base64url}`` streams the payment's current state first (we
  read that one update and close). A hash this node never paid: code 5 (NotFound)
  "payment isn't initiated". We chose it over ``GET /v1/payments`` (which lists every payment and
  has no hash filter).
- Balance: ``GET /v1/balance/channels`` -> ``local_balance.msat`` (spendable in channels).
- A bad macaroon answers (HTTP 500, code 2) "verification failed: signature mismatch ...".
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
import time
from pathlib import Path
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
    default_fee_limit_msat,
    fingerprint,
    invoice_facts,
)

log = get_logger("httpay.wallet.lnd")

_FINAL = {"SUCCEEDED", "FAILED"}
_NOT_FOUND = 5
_ALREADY_EXISTS = 6
# Transport failures that happen before the request can have reached LND: nothing was paid.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)






def _hex(value: Any) -> str | None:
    """A 32-byte value LND sent as hex (lnrpc.Payment) or base64 (bytes fields) as lowercase hex."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) == 64:
        try:
            bytes.fromhex(value)
            return value.lower()
        except ValueError:
            pass
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_" if "-" in value or "_" in value else None)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class LNDWallet(Wallet):
    """An LND node driven over REST with a macaroon (admin, or one baked for offchain:write + read)."""

    name = "lnd"

    def __init__(
        self,
        url: str,
        macaroon_hex: str | None = None,
        *,
        macaroon_path: str | Path | None = None,
        tls_cert_path: str | Path | None = None,
        network: str = "bitcoin",
        timeout: float = 60.0,
        client: httpx.Client | None = None,
    ) -> None:
        """Give the macaroon as hex or as the path of the ``.macaroon`` file (not both).

        `timeout` bounds a whole payment: LND gets it as ``timeout_seconds`` and a payment still in
        flight after it raises PaymentTimeout (look it up later). `client` lets tests inject a
        transport; the wallet then does not close it.
        """
        if not url.startswith(("http://", "https://")):
            raise WalletError(f"LND REST URL must start with https:// (or http://), got {url!r}")
        if (macaroon_hex is None) == (macaroon_path is None):
            raise WalletError("LND needs a macaroon: pass macaroon_hex or macaroon_path (exactly one)")
        if macaroon_path is not None:
            try:
                macaroon_hex = Path(macaroon_path).expanduser().read_bytes().hex()
            except OSError as exc:
                raise WalletError(f"cannot read the LND macaroon file {macaroon_path}: {exc.strerror}") from None
        assert macaroon_hex is not None
        macaroon_hex = macaroon_hex.strip()
        try:
            bytes.fromhex(macaroon_hex)
        except ValueError:
            raise WalletError("the LND macaroon must be hex (e.g. `xxd -ps -c 1000 admin.macaroon`)") from None
        if not macaroon_hex:
            raise WalletError("the LND macaroon is empty")
        if timeout <= 0:
            raise WalletError(f"timeout must be positive, got {timeout}")
        self.url = url.rstrip("/")
        self.network = network
        self.timeout = float(timeout)
        self.__macaroon = macaroon_hex
        verify: ssl.SSLContext | bool = True
        if tls_cert_path is not None:
            try:
                verify = ssl.create_default_context(cafile=str(Path(tls_cert_path).expanduser()))
            except (OSError, ssl.SSLError) as exc:
                raise WalletError(f"cannot load LND's TLS certificate {tls_cert_path}: {exc}") from None
        self._owns_client = client is None
        self._client = client if client is not None else kept(httpx.Client(
            base_url=self.url, timeout=self.timeout, verify=verify, follow_redirects=False
        ))

    def __repr__(self) -> str:
        return f"LNDWallet(url={mask_urls(self.url)!r}, network={self.network!r})"

    __str__ = __repr__

    @property
    def identity(self) -> str:
        """This LND node, named by its REST endpoint: every macaroon of one node sees the same payments."""
        return fingerprint("lnd", self.url)

    # --- plumbing -------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self.__macaroon, redact(self.__macaroon, 0))

    def _headers(self) -> dict[str, str]:
        return {"Grpc-Metadata-macaroon": self.__macaroon}

    def _transport_error(self, exc: httpx.HTTPError, what: str, *, paying: bool) -> WalletError:
        name = type(exc).__name__
        if isinstance(exc, _NOT_SENT):
            hint = " (check the URL, that LND runs, and its TLS certificate)" if isinstance(exc, httpx.ConnectError) else ""
            return WalletUnreachable(f"cannot reach LND at {self.url} for {what}: {self._scrub(str(exc)) or name}{hint}; nothing was paid")
        if isinstance(exc, httpx.TimeoutException):
            if paying:
                return PaymentTimeout(
                    f"LND at {self.url} did not finish {what} within {self.timeout:g} s; the payment may still "
                    "go through: look it up before paying again"
                )
            return WalletError(f"LND at {self.url} did not answer {what} within {self.timeout:g} s")
        return WalletError(
            f"the connection to LND at {self.url} broke during {what} ({name})"
            + ("; the payment may have gone out: look it up before paying again" if paying else ""),
            outcome_known=not paying,
        )

    def _lines(self, response: httpx.Response, deadline: float | None) -> Any:
        """JSON objects from a grpc-gateway stream (or a single JSON body), one at a time."""
        for line in response.iter_lines():
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                obj = {"error": {"code": -1, "message": f"unreadable answer: {line[:120]}"}}
            yield obj if isinstance(obj, dict) else {}
            if deadline is not None and time.monotonic() > deadline:
                return

    def _status_error(self, err: dict[str, Any], http_status: int, what: str) -> WalletError:
        """A gRPC status LND sent instead of a payment."""
        code = _int(err.get("code"))
        message = self._scrub(str(err.get("message") or f"HTTP {http_status}"))
        low = message.lower()
        if "already paid" in low:
            return AlreadyPaid(f"LND says: {message}. Nothing was paid this time; look the payment up.")
        if "in transition" in low or (code == _ALREADY_EXISTS and "flight" in low):
            return AlreadyPaid(f"LND says: {message}: an earlier attempt is in flight; look the payment up.", outcome_known=False)
        if "macaroon" in low or "verification failed" in low or "permission denied" in low:
            return WalletError(f"LND refused the macaroon ({message}); use an admin macaroon or one allowed to send payments")
        return WalletError(f"LND could not {what}: {message} (gRPC code {code})")

    # --- Wallet API -----------------------------------------------------------------------------

    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Payment:
        """Pay with SendPaymentV2 and follow its updates until the payment settles or fails.

        Never returns SETTLED without a preimage that proves the invoice's hash. FAILED with
        FAILURE_REASON_TIMEOUT (LND gave up finding a route; nothing paid) raises PaymentTimeout with
        outcome_known=True; our own deadline passing while the payment is in flight raises
        PaymentTimeout with outcome_known=False.
        """
        bolt11 = bolt11.strip()
        expected_hash, amount_msat = invoice_facts(bolt11)
        fee_limit = max_fee_msat if max_fee_msat is not None else default_fee_limit_msat(amount_msat)
        body = {
            "payment_request": bolt11,
            "timeout_seconds": max(1, int(self.timeout)),
            "fee_limit_msat": str(fee_limit),
        }
        log.debug("lnd pay_invoice url=%s hash=%s fee_limit_msat=%d", self.url, (expected_hash or "?")[:16], fee_limit)
        deadline = time.monotonic() + self.timeout
        last: dict[str, Any] | None = None
        try:
            with self._client.stream("POST", "/v2/router/send", json=body, headers=self._headers()) as response:
                for obj in self._lines(response, deadline):
                    if "error" in obj and isinstance(obj["error"], dict):
                        raise self._pay_error(obj["error"], response.status_code, last)
                    if "code" in obj and "message" in obj and "result" not in obj:
                        raise self._pay_error(obj, response.status_code, last)
                    result = obj.get("result")
                    if not isinstance(result, dict):
                        continue
                    last = result
                    log.debug("lnd payment update: %s", result.get("status"))
                    if result.get("status") in _FINAL:
                        return self._final(result, expected_hash)
        except httpx.HTTPError as exc:
            if last is not None and isinstance(exc, httpx.TimeoutException):
                raise PaymentTimeout(
                    f"LND still reports the payment {(expected_hash or '?')[:16]}… in flight after {self.timeout:g} s; "
                    "look it up before paying again"
                ) from None
            raise self._transport_error(exc, "the payment", paying=True) from None
        if last is not None:
            raise PaymentTimeout(
                f"LND still reports the payment {(expected_hash or '?')[:16]}… {last.get('status', 'in flight')} after "
                f"{self.timeout:g} s; look it up before paying again"
            )
        raise WalletError(
            f"LND closed the payment stream without an answer (HTTP {response.status_code}); look the payment up before retrying",
            outcome_known=False,
        )

    def _pay_error(self, err: dict[str, Any], http_status: int, last: dict[str, Any] | None) -> WalletError:
        error = self._status_error(err, http_status, "pay the invoice")
        if last is not None and type(error) is WalletError:
            error.outcome_known = False  # it broke off after the payment had started
        return error

    def _final(self, result: dict[str, Any], expected_hash: str | None) -> Payment:
        payment = self._to_payment(result)
        if expected_hash and payment.payment_hash and payment.payment_hash != expected_hash:
            raise WalletError(
                f"LND reported payment hash {payment.payment_hash[:16]}… for an invoice with hash {expected_hash[:16]}…",
                outcome_known=False,
            )
        if payment.status is PaymentStatus.SETTLED:
            if not payment.proves(expected_hash or payment.payment_hash):
                raise WalletError(
                    f"LND says payment {payment.payment_hash[:16]}… succeeded but its preimage does not prove it; "
                    "do not pay again, check the payment in LND",
                    outcome_known=False,
                )
            log.debug("lnd pay_invoice settled: %d msat, fee %d msat", payment.amount_msat or 0, payment.fee_msat)
            return payment
        reason = str(result.get("failure_reason") or "FAILURE_REASON_NONE")
        message = f"LND could not pay {payment.payment_hash[:16]}…: {reason}"
        if reason == "FAILURE_REASON_INSUFFICIENT_BALANCE":
            raise InsufficientFunds(message + " (not enough outbound liquidity in the node's channels); nothing was paid")
        if reason == "FAILURE_REASON_TIMEOUT":
            raise PaymentTimeout(message + " (no route found in time); nothing was paid", outcome_known=True)
        if reason == "FAILURE_REASON_NO_ROUTE":
            raise WalletError(message + " (no route to the payee within the fee limit); nothing was paid")
        if reason == "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS":
            raise WalletError(message + " (the payee rejected it: unknown or expired invoice, wrong amount); nothing was paid")
        raise WalletError(message + "; nothing was paid")

    @staticmethod
    def _to_payment(d: dict[str, Any]) -> Payment:
        status = {"SUCCEEDED": PaymentStatus.SETTLED, "FAILED": PaymentStatus.FAILED}.get(
            str(d.get("status")), PaymentStatus.PENDING
        )
        preimage = _hex(d.get("payment_preimage")) if status is PaymentStatus.SETTLED else None
        value_msat = d.get("value_msat")
        return Payment(
            payment_hash=_hex(d.get("payment_hash")) or "",
            status=status,
            amount_msat=_int(value_msat) if value_msat is not None else None,
            fee_msat=_int(d.get("fee_msat")),
            preimage=preimage,
            failure_reason=str(d.get("failure_reason")) if status is PaymentStatus.FAILED else None,
        )

    def lookup(self, payment_hash: str) -> Payment | None:
        """LND's current record of this node's payment with that hash (TrackPaymentV2's first update)."""
        payment_hash = payment_hash.strip().lower()
        try:
            raw = bytes.fromhex(payment_hash)
        except ValueError:
            raise WalletError(f"payment hash must be 64 hex characters, got {payment_hash[:70]!r}") from None
        path = "/v2/router/track/" + base64.urlsafe_b64encode(raw).decode()
        log.debug("lnd lookup url=%s hash=%s", self.url, payment_hash[:16])
        try:
            with self._client.stream("GET", path, headers=self._headers()) as response:
                for obj in self._lines(response, None):
                    err = obj.get("error") if isinstance(obj.get("error"), dict) else (obj if "code" in obj and "message" in obj else None)
                    if err is not None:
                        msg = str(err.get("message", "")).lower()
                        if _int(err.get("code")) == _NOT_FOUND or "isn't initiated" in msg or "not found" in msg:
                            return None
                        raise self._status_error(err, response.status_code, "look the payment up")
                    result = obj.get("result")
                    if isinstance(result, dict):
                        payment = self._to_payment(result)
                        if payment.status is PaymentStatus.SETTLED and not payment.proves(payment_hash):
                            raise WalletError(f"LND's record of {payment_hash[:16]}… has a preimage that does not prove it")
                        return payment
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, "the payment lookup", paying=False) from None
        raise WalletError(f"LND answered the lookup of {payment_hash[:16]}… with nothing (HTTP {response.status_code})")

    def balance_msat(self) -> int:
        """What the node can spend: its local balance in open channels (msat)."""
        log.debug("lnd balance url=%s", self.url)
        try:
            r = self._client.get("/v1/balance/channels", headers=self._headers())
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, "the balance request", paying=False) from None
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code != 200 or not isinstance(body, dict):
            err = body.get("error", body) if isinstance(body, dict) else {"message": f"HTTP {r.status_code}"}
            raise self._status_error(err if isinstance(err, dict) else {}, r.status_code, "tell the balance")
        local = body.get("local_balance")
        if isinstance(local, dict) and "msat" in local:
            return _int(local["msat"])
        if "balance" in body:  # lnd before 0.13 only had the deprecated sat total
            return _int(body["balance"]) * 1000
        raise WalletError("LND answered the balance request without local_balance")

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
