"""Pay from a Lightspark node through the official `lightspark` SDK (install with ``pip install httpay[lightspark]``).

Lightspark runs nodes for you; the agent holds an API token and the node's password, which unlocks
the node's signing key locally (the key signs each payment request). Facts relied on, read from the
SDK's source (PyPI ``lightspark`` 2.10.1) and used through its public methods:

- ``LightsparkSyncClient(api_token_client_id, api_token_client_secret, base_url=None)`` posts GraphQL
  to ``base_url`` (default ``https://api.lightspark.com/graphql/server/2023-09-13``) with HTTP Basic
  auth, via a ``requests.Session`` that has no timeout of its own (we mount one, see `_TimeoutAdapter`).
  Errors raise ``LightsparkException(code, message)`` whose ``args`` are ``("HTTP_ERROR" |
  "GRAPHQL_ERROR", text)`` (its ``str()`` is otherwise empty).
- ``recover_node_signing_key(node_id, password)`` fetches the encrypted key and decrypts it locally
  (a wrong password fails in the decryption, e.g. ``cryptography.exceptions.InvalidTag``), then loads it.
- ``pay_invoice(node_id, encoded_invoice, timeout_secs, maximum_fees_msats, idempotency_key=...)``
  returns an ``OutgoingPayment``: ``id``, ``status`` (``TransactionStatus`` SUCCESS / FAILED / PENDING
  ...), ``payment_preimage``, ``amount`` and ``fees`` (``CurrencyAmount``: ``original_value`` in
  ``original_unit``), ``failure_reason`` (``PaymentFailureReason``: INVOICE_ALREADY_PAID,
  INSUFFICIENT_BALANCE, TIMEOUT, NO_ROUTE, ...), ``failure_message.text``, ``origin_id`` (the node).
  It usually answers PENDING at once: we poll ``get_entity(id, OutgoingPayment)`` until it resolves.
  We pass ``idempotency_key="httpay:<payment hash>"``, so a retried call returns the same payment
  instead of paying twice.
- ``outgoing_payments_for_payment_hash(hash)`` lists the account's payments for a hash (lookup, and
  the answer to INVOICE_ALREADY_PAID: the earlier payment if this node made it).
- Balance: ``execute_graphql_request`` with a small query for the node's
  ``balances.available_to_send_balance`` (the same field the SDK's node fragment reads).
"""

from __future__ import annotations

import time
from typing import Any

from httpay.errors import (
    AlreadyPaid,
    InsufficientFunds,
    PaymentTimeout,
    WalletError,
    WalletUnreachable,
    redact,
)
from httpay.safe import get_logger
from httpay.wallets.base import (
    Payment,
    PaymentStatus,
    Wallet,
    default_fee_limit_msat,
    invoice_facts,
)

log = get_logger("httpay.wallet.lightspark")

_UNIT_MSAT = {
    "MILLISATOSHI": 1, "SATOSHI": 1_000, "NANOBITCOIN": 100, "MICROBITCOIN": 100_000,
    "MILLIBITCOIN": 100_000_000, "BITCOIN": 100_000_000_000,
}
_INSUFFICIENT = {"INSUFFICIENT_BALANCE", "INSUFFICIENT_BALANCE_ON_SINGLE_PATH_INVOICE"}

NODE_BALANCE_QUERY = """
query HttpayNodeBalance($id: ID!) {
    entity(id: $id) {
        ... on LightsparkNode {
            balances {
                available_to_send_balance {
                    original_value
                    original_unit
                }
            }
        }
    }
}
"""






def _name(value: Any) -> str:
    """An SDK enum's name (or a plain string from an injected client)."""
    return str(getattr(value, "value", value) or "")


def _msat(amount: Any) -> int | None:
    if amount is None:
        return None
    unit = _name(getattr(amount, "original_unit", None))
    factor = _UNIT_MSAT.get(unit)
    if factor is None:
        return None
    return int(getattr(amount, "original_value", 0)) * factor


def _outgoing_payment_class() -> Any:
    """The SDK's OutgoingPayment class (get_entity needs it); its name for an injected client without the SDK."""
    try:
        from lightspark import OutgoingPayment
    except ImportError:
        return "OutgoingPayment"
    return OutgoingPayment


def _timeout_adapter(timeout: float) -> Any:
    """A requests adapter that gives every request a timeout (the SDK's session sets none)."""
    from requests.adapters import HTTPAdapter

    class _TimeoutAdapter(HTTPAdapter):
        def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout
            return super().send(request, **kwargs)

    return _TimeoutAdapter()


class LightsparkWallet(Wallet):
    """A Lightspark node, paid from with an API token and the node password (both kept private)."""

    name = "lightspark"

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        node_id: str,
        node_password: str,
        *,
        network: str = "bitcoin",
        client: Any = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        poll_interval: float = 1.0,
    ) -> None:
        """`client` is an already built ``LightsparkSyncClient`` (or an object with its methods);
        without it one is made from the token. `timeout` bounds a whole payment, HTTP and polling."""
        missing = [n for n, v in (("client_id", client_id), ("client_secret", client_secret), ("node_id", node_id),
                                  ("node_password", node_password)) if not v]
        if missing:
            raise WalletError(f"Lightspark needs {', '.join(missing)}: find them in the Lightspark dashboard")
        if timeout <= 0 or poll_interval <= 0:
            raise WalletError("timeout and poll_interval must be positive")
        self.node_id = node_id
        self.network = network
        self.timeout = float(timeout)
        self.poll_interval = float(poll_interval)
        self.__secrets = (client_secret, node_password)
        self.__password: str | None = node_password
        if client is None:
            try:
                from lightspark import LightsparkSyncClient
            except ImportError:
                raise WalletError(
                    "the Lightspark wallet needs the `lightspark` SDK: pip install 'httpay[lightspark]'"
                ) from None
            client = LightsparkSyncClient(client_id, client_secret, base_url=base_url)
        session = getattr(getattr(client, "_requester", None), "graphql_session", None)
        if session is not None and hasattr(session, "mount"):
            adapter = _timeout_adapter(self.timeout)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._client = client

    def __repr__(self) -> str:
        return f"LightsparkWallet(node_id={self.node_id!r}, network={self.network!r})"

    __str__ = __repr__

    @property
    def identity(self) -> str:
        """This Lightspark node: its node id (an identifier, not a secret)."""
        return f"lightspark:{self.node_id}"

    # --- plumbing -------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        for secret in self.__secrets:
            if secret:
                text = text.replace(secret, redact(secret, 0))
        return text

    def _message(self, exc: BaseException) -> str:
        args = [str(a) for a in getattr(exc, "args", ()) if a]
        return self._scrub(" ".join(args[1:] if len(args) > 1 else args) or type(exc).__name__)[:500]

    def _call(self, what: str, fn: Any, *args: Any, paying: bool = False, **kwargs: Any) -> Any:
        """Run one SDK call; its failures become httpay wallet errors that say whether money may have moved."""
        try:
            return fn(*args, **kwargs)
        except WalletError:
            raise
        except Exception as exc:  # noqa: BLE001 - the SDK raises requests, crypto and its own errors
            raise self._sdk_error(exc, what, paying=paying) from None

    def _sdk_error(self, exc: BaseException, what: str, *, paying: bool) -> WalletError:
        kind = type(exc).__name__
        text = self._message(exc)
        code = str(exc.args[0]) if getattr(exc, "args", None) else ""
        low = text.lower()
        if "Timeout" in kind or "timed out" in low:
            if paying:
                return PaymentTimeout(
                    f"Lightspark did not answer {what} within {self.timeout:g} s; the payment may have gone out: "
                    "look it up before paying again"
                )
            return WalletError(f"Lightspark did not answer {what} within {self.timeout:g} s")
        if kind == "ConnectionError" or "Connection" in kind:
            refused = "refused" in low or "NewConnectionError" in text or "Name or service" in text
            if refused:
                return WalletUnreachable(f"cannot reach Lightspark for {what} ({kind}); nothing was paid")
            return WalletError(
                f"cannot reach Lightspark for {what} ({kind})"
                + ("; nothing was paid" if not paying else "; the payment may have gone out: look it up"),
                outcome_known=not paying,
            )
        if code == "HTTP_ERROR":
            if " 401 " in f" {text} " or " 403 " in f" {text} " or "unauthorized" in low or "forbidden" in low:
                return WalletError(f"Lightspark refused the API token during {what} ({text}); check the client id and secret")
            server_side = any(f"{n}" in text[:4] for n in range(500, 600))
            return WalletError(f"Lightspark failed {what}: {text}", outcome_known=not (paying and server_side))
        if "already_paid" in low or "already paid" in low:
            return AlreadyPaid(f"Lightspark says the invoice was already paid ({text}); nothing was paid this time")
        if "insufficient" in low:
            return InsufficientFunds(f"Lightspark node cannot pay: {text}")
        return WalletError(f"Lightspark could not {what}: {text}")

    def _unlock(self) -> None:
        """Recover the node's signing key once (the password decrypts it locally), then forget the password."""
        if self.__password is None:
            return
        try:
            self._client.recover_node_signing_key(self.node_id, self.__password)
        except Exception as exc:  # noqa: BLE001
            if type(exc).__name__ in {"InvalidTag", "ValueError"} or "decrypt" in str(exc).lower():
                raise WalletError(
                    "could not unlock the Lightspark node's signing key: check the node password"
                ) from None
            raise self._sdk_error(exc, "recover the node's signing key", paying=False) from None
        self.__password = None
        log.debug("lightspark signing key loaded for node %s", self.node_id)

    def _to_payment(self, op: Any, payment_hash: str) -> Payment:
        status = {"SUCCESS": PaymentStatus.SETTLED, "FAILED": PaymentStatus.FAILED}.get(
            _name(getattr(op, "status", None)), PaymentStatus.PENDING
        )
        preimage = getattr(op, "payment_preimage", None) if status is PaymentStatus.SETTLED else None
        reason = None
        if status is PaymentStatus.FAILED:
            message = getattr(getattr(op, "failure_message", None), "text", None)
            reason = _name(getattr(op, "failure_reason", None)) + (f": {message}" if message else "")
        return Payment(
            payment_hash=payment_hash,
            status=status,
            amount_msat=_msat(getattr(op, "amount", None)),
            fee_msat=_msat(getattr(op, "fees", None)) or 0,
            preimage=str(preimage) if preimage else None,
            failure_reason=reason,
        )

    # --- Wallet API -----------------------------------------------------------------------------

    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Payment:
        """Pay from the node and wait (polling) until Lightspark settles or fails the payment.

        Never returns SETTLED without a preimage that proves the invoice's hash. INVOICE_ALREADY_PAID
        returns this node's earlier settled payment when there is one, else raises AlreadyPaid.
        """
        bolt11 = bolt11.strip()
        payment_hash, amount_msat = invoice_facts(bolt11)
        if payment_hash is None:
            raise WalletError("the invoice could not be decoded as BOLT11; nothing was paid")
        fee_limit = max_fee_msat if max_fee_msat is not None else default_fee_limit_msat(amount_msat)
        self._unlock()
        log.debug("lightspark pay_invoice node=%s hash=%s fee_limit_msat=%d", self.node_id, payment_hash[:16], fee_limit)
        deadline = time.monotonic() + self.timeout
        op = self._call(
            "the payment", self._client.pay_invoice, self.node_id, bolt11, max(1, int(self.timeout)), fee_limit,
            idempotency_key=f"httpay:{payment_hash}", paying=True,
        )
        while _name(getattr(op, "status", None)) not in {"SUCCESS", "FAILED"}:
            if time.monotonic() + self.poll_interval > deadline:
                raise PaymentTimeout(
                    f"Lightspark still reports payment {payment_hash[:16]}… {_name(op.status).lower() or 'pending'} after "
                    f"{self.timeout:g} s; look it up before paying again"
                )
            time.sleep(self.poll_interval)
            latest = self._call("the payment status", self._client.get_entity, op.id, _outgoing_payment_class(), paying=True)
            op = latest if latest is not None else op
        payment = self._to_payment(op, payment_hash)
        if payment.status is PaymentStatus.FAILED:
            return self._failed(op, payment, payment_hash)
        if not payment.proves(payment_hash):
            raise WalletError(
                f"Lightspark says payment {payment_hash[:16]}… succeeded but its preimage does not prove it; "
                "do not pay again, check the payment in Lightspark",
                outcome_known=False,
            )
        log.debug("lightspark pay_invoice settled: %s msat, fee %d msat", payment.amount_msat, payment.fee_msat)
        return payment

    def _failed(self, op: Any, payment: Payment, payment_hash: str) -> Payment:
        reason = _name(getattr(op, "failure_reason", None))
        message = f"Lightspark could not pay {payment_hash[:16]}…: {payment.failure_reason}"
        if reason == "INVOICE_ALREADY_PAID":
            earlier = self.lookup(payment_hash)
            if earlier is not None and earlier.settled:
                log.debug("lightspark: invoice %s… was paid earlier by this node", payment_hash[:16])
                return earlier
            raise AlreadyPaid(message + " (not by this node); nothing was paid this time")
        if reason in _INSUFFICIENT:
            raise InsufficientFunds(message + "; nothing was paid")
        if reason == "TIMEOUT":
            raise PaymentTimeout(message + " (no route found in time); nothing was paid", outcome_known=True)
        raise WalletError(message + "; nothing was paid")

    def lookup(self, payment_hash: str) -> Payment | None:
        """This node's payment for that hash: settled first, else pending, else failed; None if it made none."""
        payment_hash = payment_hash.strip().lower()
        log.debug("lightspark lookup node=%s hash=%s", self.node_id, payment_hash[:16])
        ops = self._call("the payment lookup", self._client.outgoing_payments_for_payment_hash, payment_hash) or []
        mine = [self._to_payment(op, payment_hash) for op in ops if getattr(op, "origin_id", self.node_id) == self.node_id]
        for status in (PaymentStatus.SETTLED, PaymentStatus.PENDING, PaymentStatus.FAILED):
            for p in mine:
                if p.status is status:
                    if status is PaymentStatus.SETTLED and not p.proves(payment_hash):
                        raise WalletError(f"Lightspark's record of {payment_hash[:16]}… has a preimage that does not prove it")
                    return p
        return None

    def balance_msat(self) -> int:
        """What the node can send now (`available_to_send_balance`), in msat."""
        data = self._call("the balance request", self._client.execute_graphql_request, NODE_BALANCE_QUERY, {"id": self.node_id})
        entity = data.get("entity") if isinstance(data, dict) else None
        try:
            amount = entity["balances"]["available_to_send_balance"]  # type: ignore[index]
            unit = str(amount["original_unit"])
            return int(amount["original_value"]) * _UNIT_MSAT[unit]
        except (KeyError, TypeError, ValueError):
            raise WalletError(f"Lightspark answered the balance request for node {self.node_id} without a usable balance") from None

    def close(self) -> None:
        """Close the SDK's HTTP session (the client object itself has no close)."""
        session = getattr(getattr(self._client, "_requester", None), "graphql_session", None)
        if session is not None and hasattr(session, "close"):
            session.close()
