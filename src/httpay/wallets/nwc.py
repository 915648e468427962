"""Pay through Nostr Wallet Connect (NIP-47): the connection string most agent tools accept (Alby Hub, ...).

Install with ``pip install 'httpay[nwc]'``. The wallet is reached through one or more Nostr relays named
in the connection URI ``nostr+walletconnect://<wallet service pubkey>?relay=wss://...&secret=<hex>``.
The ``secret`` is the client's private key for this connection: it signs the requests and encrypts them
to the wallet service, and spending is whatever the wallet allows that key. It never appears in a repr,
a log line or an exception.

Everything Nostr (keys, Schnorr signatures, NIP-44 v2 and NIP-04 encryption, the relay protocol) is done
by the maintained ``nostr-sdk`` (rust-nostr's Python bindings). Its own NWC client is not used for the
requests because it cannot tell apart the cases a payer must tell apart: a relay that never took the
request (nothing was paid) from a request taken and never answered (it may have been paid), and it reports
the NIP-47 error codes only inside message text. So the adapter builds the NIP-47 events itself with the
SDK's client, event and encryption API:

- request: kind 23194, ``p`` = wallet service, content = encrypted ``{"method", "params"}``, an
  ``expiration`` tag a few seconds after the end of the wait (a wallet service ignores a request that
  reaches it later, so a relay that delivers late cannot pay behind the ledger's back), and ``encryption:
  nip44_v2`` when the wallet service's info event (kind 13194) offers it (otherwise NIP-04, the
  protocol's original scheme);
- response: kind 23195 from the wallet service with ``e`` = the request's id, content = encrypted
  ``{"result_type", "error": {"code", "message"} | null, "result"}``.

Fees: NIP-47's ``pay_invoice`` has no fee limit; the wallet applies its own. A settled payment whose
``fees_paid`` went over the cap httpay held is logged as a warning, and the ledger records what was spent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import hashlib
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from httpay import safe
from httpay.errors import AlreadyPaid, ConfigError, InsufficientFunds, PaymentTimeout, WalletError, WalletUnreachable
from httpay.extras import require
from httpay.safe import get_logger
from httpay.wallets.base import Payment, PaymentStatus, Wallet, fingerprint, invoice_facts

if TYPE_CHECKING:
    import nostr_sdk

log = get_logger("httpay.wallet.nwc")

T = TypeVar("T")

SCHEME = "nostr+walletconnect"
KIND_INFO, KIND_REQUEST, KIND_RESPONSE = 13194, 23194, 23195
NIP44 = "nip44_v2"
EXPIRY_MARGIN_S = 5  # a request expires this long after the client stops waiting (clock skew, relay latency)
# NIP-01 prefixes of a relay's `OK false` answer: the relay refused the event, so no wallet service saw it.
_RELAY_REFUSALS = ("blocked:", "invalid:", "pow:", "rate-limited:", "restricted:", "auth-required:", "error:")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")

# NIP-47 error codes that a wallet service answers before it tries to pay, and what the person can do.
_REFUSED_BEFORE_PAYING = {
    "RATE_LIMITED": "the wallet service is rate-limiting this connection; retry in a few seconds",
    "QUOTA_EXCEEDED": "this connection's spending budget in the wallet is used up; raise it in the wallet app",
    "RESTRICTED": "this connection may not do that; grant it the permission in the wallet app",
    "UNAUTHORIZED": "the wallet service has no wallet for this connection; the NWC_URI may be revoked: make a new one",
    "NOT_IMPLEMENTED": "the wallet service does not offer this command",
    "UNSUPPORTED_ENCRYPTION": "the wallet service does not accept the encryption httpay used",
}


@dataclass(frozen=True)
class NWCUri:
    """A parsed connection URI. The secret is kept out of the repr."""

    wallet_pubkey: str  # the wallet service's public key, hex
    relays: tuple[str, ...]
    secret: str = field(repr=False)
    lud16: str | None = None


def parse_nwc_uri(uri: str) -> NWCUri:
    """Read a ``nostr+walletconnect://`` URI, or raise ConfigError saying what is wrong (never the secret)."""
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError("the NWC connection URI is empty: paste the nostr+walletconnect://... string your wallet shows")
    text = uri.strip()
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        raise ConfigError("the NWC connection URI is not a URI: expected nostr+walletconnect://<pubkey>?relay=...&secret=...") from None
    if parts.scheme.lower() != SCHEME:
        shown = re.sub(r"[^a-z0-9+.-]", "", parts.scheme.lower())[:30]
        raise ConfigError(
            "the NWC connection URI must start with nostr+walletconnect:// "
            + (f"(it starts with {shown}:)" if shown else "(it has no scheme)")
            + "; copy the whole connection string from the wallet's Nostr Wallet Connect page"
        )
    pubkey = (parts.netloc or parts.path.lstrip("/")).strip()
    if not _HEX64.fullmatch(pubkey):
        raise ConfigError(
            "the NWC connection URI must name the wallet service's public key as 64 hex characters after "
            f"nostr+walletconnect:// (found {len(pubkey)} characters)"
        )
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    secrets = [s.strip() for s in query.get("secret", [])]
    if len(secrets) != 1 or not secrets[0]:
        raise ConfigError("the NWC connection URI needs exactly one secret=<64 hex characters> (the connection's key)")
    if not _HEX64.fullmatch(secrets[0]):
        raise ConfigError(
            f"the secret in the NWC connection URI must be 64 hex characters (it has {len(secrets[0])} characters)"
        )
    relays = tuple(r.strip() for r in query.get("relay", []) if r.strip())
    if not relays:
        raise ConfigError("the NWC connection URI names no relay=wss://...: the wallet service listens on that relay")
    for relay in relays:
        if urllib.parse.urlsplit(relay).scheme.lower() not in ("ws", "wss") or not urllib.parse.urlsplit(relay).hostname:
            raise ConfigError(f"the NWC relay {_shown_relay(relay)!r} must be a ws:// or wss:// URL")
    lud16s = query.get("lud16") or []
    return NWCUri(pubkey.lower(), relays, secrets[0].lower(), lud16s[0] if lud16s else None)


def _shown_relay(relay: str) -> str:
    """A relay URL without its query or user part (a relay URL may carry an access token there)."""
    try:
        p = urllib.parse.urlsplit(relay)
        host = p.hostname or ""
        port = f":{p.port}" if p.port else ""
    except ValueError:
        return "<unreadable URL>"
    return safe.clean(f"{p.scheme}://{host}{port}{p.path}", 120)


class _NotSent(Exception):
    """No relay took the request: the wallet service cannot have seen it."""


class _Unanswered(Exception):
    """A relay took the request (or may have) and no answer came in time."""


class NWCWallet(Wallet):
    """A Lightning wallet behind Nostr Wallet Connect (NIP-47): pay, look up, balance, receive.

    `network` is the BOLT11 network the wallet pays on (NIP-47 does not say; mainnet unless told).
    `timeout` bounds the wait for each answer; `connect_timeout` the wait for a relay.
    """

    name = "nwc"

    def __init__(
        self,
        uri: str,
        *,
        network: str = "bitcoin",
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
    ) -> None:
        require("nwc")
        import nostr_sdk as ns

        parsed = parse_nwc_uri(uri)
        try:
            keys = ns.Keys(ns.SecretKey.parse(parsed.secret))
        except Exception:  # noqa: BLE001 - the SDK's error may describe the key: say only that it is unusable
            raise ConfigError("the secret in the NWC connection URI is not a usable Nostr private key") from None
        try:
            wallet_pk = ns.PublicKey.parse(parsed.wallet_pubkey)
            relay_urls = [ns.RelayUrl.parse(r) for r in parsed.relays]
        except Exception as exc:  # noqa: BLE001 - the SDK raises its own error type for bad keys and URLs
            raise ConfigError(f"the NWC connection URI is not usable: {safe.clean(exc, 120)}") from None
        if timeout <= 0 or connect_timeout <= 0:
            raise ConfigError("NWC timeouts must be positive numbers of seconds")
        self._ns = ns
        self.network = network
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.wallet_pubkey = parsed.wallet_pubkey
        self.relays = tuple(_shown_relay(r) for r in parsed.relays)
        self.__keys = keys
        self._app_pubkey = keys.public_key().to_hex()
        self._wallet_pk = wallet_pk
        self._relay_urls = relay_urls
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        # loop-thread state
        self._client: nostr_sdk.Client | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connecting: asyncio.Lock | None = None
        self._waiting: dict[str, asyncio.Future[nostr_sdk.Event]] = {}
        self._encryption: str | None = None
        self._methods: frozenset[str] | None = None

    def __repr__(self) -> str:
        return f"NWCWallet(wallet={self.wallet_pubkey[:16]}…, relays={list(self.relays)!r}, network={self.network!r})"

    __str__ = __repr__

    @property
    def identity(self) -> str:
        """This connection: a one-way fingerprint of the wallet service's key and the connection's public key."""
        return fingerprint("nwc", self.wallet_pubkey, self._app_pubkey)

    # --- the event loop the SDK's coroutines run on ------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], wait_s: float) -> T:
        """Run `coro` on the wallet's own event loop thread (sync callers, any thread) and wait for it."""
        with self._lock:
            if self._closed:
                coro.close()
                raise WalletError("this NWC wallet is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="httpay-nwc", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            loop = self._loop
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(wait_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise _Unanswered from None

    async def _session(self) -> nostr_sdk.Client:
        """The connected relay client with its response subscription, made once (concurrent first calls wait)."""
        if self._client is not None:
            return self._client
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._client is None:
                self._client = await self._connect()
            return self._client

    async def _connect(self) -> nostr_sdk.Client:
        ns = self._ns
        wait = datetime.timedelta(seconds=self.connect_timeout)
        client = ns.ClientBuilder().connect_timeout(wait).build()
        # Retry a lost relay every few seconds, not on the SDK's growing back-off: a payer waits for it.
        retry = datetime.timedelta(seconds=max(1.0, min(3.0, self.connect_timeout / 2)))
        options = ns.RelayOptions().retry_interval(retry).adjust_retry_interval(False)
        for url in self._relay_urls:
            await client.add_relay(url, opts=options)
        out = await client.try_connect(wait)
        if not out.success:
            reasons = "; ".join(safe.clean(v, 80) for v in out.failed.values()) or "no answer"
            await client.shutdown()
            raise WalletUnreachable(
                f"cannot reach the NWC relay {', '.join(self.relays)} ({reasons}); nothing was sent. "
                "Check the relay in NWC_URI and that it is up"
            )
        answers = ns.Filter().kind(ns.Kind(KIND_RESPONSE)).author(self._wallet_pk).pubkey(self.__keys.public_key())
        sub = await client.subscribe(ns.ReqTarget.auto([answers]))
        if not sub.success:
            await client.shutdown()
            raise WalletError(f"the NWC relay {', '.join(self.relays)} refused the subscription for answers; nothing was sent")
        self._reader = asyncio.get_running_loop().create_task(self._read(client))
        info_filter = ns.Filter().kind(ns.Kind(KIND_INFO)).author(self._wallet_pk).limit(1)
        try:
            infos = await client.fetch_events(ns.ReqTarget.auto([info_filter]), wait)
        except Exception as exc:  # noqa: BLE001 - the SDK's error type; without the info event NIP-04 is the default
            log.debug("nwc info event not read: %s", type(exc).__name__)
            infos = []
        self._read_info(infos)
        return client

    def _read_info(self, infos: list[nostr_sdk.Event]) -> None:
        """What the wallet service offers (content) and which encryption it takes (`encryption` tag)."""
        if not infos:
            self._encryption, self._methods = "nip04", None
            log.debug("nwc: no info event from %s…; using NIP-04", self.wallet_pubkey[:16])
            return
        info = max(infos, key=lambda e: e.created_at().as_secs())
        self._methods = frozenset(info.content().split()) or None  # an empty list tells nothing: ask anyway
        schemes: set[str] = set()
        for tag in info.tags():
            values = tag.to_vec()
            if values and values[0] == "encryption":
                schemes.update(" ".join(values[1:]).split())
        self._encryption = NIP44 if NIP44 in schemes else "nip04"
        log.debug("nwc: wallet service %s… offers %s, encryption %s", self.wallet_pubkey[:16],
                  sorted(self._methods or ()), self._encryption)

    async def _read(self, client: nostr_sdk.Client) -> None:
        """Hand each answer from the wallet service to the request it names (its `e` tag)."""
        ns = self._ns
        stream = client.notifications()
        while True:
            try:
                note = await stream.next()
            except Exception as exc:  # noqa: BLE001 - the stream broke: connect afresh on the next request
                log.warning("nwc: the relay client's notification stream failed (%s); reconnecting on next use",
                            type(exc).__name__)
                if self._client is client:
                    self._client = None
                return
            if note is None or note.is_shutdown():
                return
            if not isinstance(note, ns.ClientNotification.NEW_EVENT):
                continue
            event = note.event
            if event.kind().as_u16() != KIND_RESPONSE or event.author().to_hex() != self.wallet_pubkey:
                continue
            for tag in event.tags():
                values = tag.to_vec()
                if len(values) >= 2 and values[0] == "e":
                    waiter = self._waiting.get(values[1])
                    if waiter is not None and not waiter.done():
                        waiter.set_result(event)

    async def _ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one NIP-47 request and return the decrypted answer. _NotSent or _Unanswered otherwise."""
        ns = self._ns
        client = await self._session()
        if self._methods is not None and method not in self._methods:
            return {"result_type": method, "error": {"code": "NOT_IMPLEMENTED",
                                                     "message": f"the wallet service's info event does not list {method}"}}
        keys, payload = self.__keys, json.dumps({"method": method, "params": params})
        nip44 = self._encryption == NIP44
        content = keys.nip44_encrypt(self._wallet_pk, payload) if nip44 else keys.nip04_encrypt(self._wallet_pk, payload)
        expires = ns.Timestamp.from_secs(int(time.time() + self.timeout + EXPIRY_MARGIN_S))
        tags = [ns.Tag.public_key(self._wallet_pk), ns.Tag.expiration(expires)]
        if nip44:
            tags.append(ns.Tag.parse(["encryption", NIP44]))
        event = ns.EventBuilder(ns.Kind(KIND_REQUEST), content).tags(tags).finalize(keys)
        request_id = event.id().to_hex()
        waiter: asyncio.Future[nostr_sdk.Event] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = waiter
        try:
            connected = await self._connected(client)
            give_up = time.monotonic() + self.connect_timeout
            while not connected and time.monotonic() < give_up:  # the SDK reconnects in the background
                await asyncio.sleep(0.1)
                connected = await self._connected(client)
            if not connected:
                raise _NotSent(f"no connection to the relay {', '.join(self.relays)}")
            out = await client.send_event(event, ns.SendEventTarget.to(connected),
                                          ok_timeout=datetime.timedelta(seconds=self.connect_timeout))
            if not out.success:
                reasons = [str(v) for v in out.failed.values()]
                shown = "; ".join(safe.clean(r, 80) for r in reasons)
                if reasons and all(r.lower().startswith(_RELAY_REFUSALS) for r in reasons):
                    raise _NotSent(f"the relay refused the request ({shown})")
                raise _Unanswered(f"the relay did not confirm the request ({shown})")
            log.debug("nwc %s sent as %s… to %s", method, request_id[:16], ", ".join(self.relays))
            try:
                answer = await asyncio.wait_for(waiter, self.timeout)
            except TimeoutError:
                raise _Unanswered(f"no answer within {self.timeout:g} s") from None
        finally:
            self._waiting.pop(request_id, None)
        return self._open(answer, method)

    async def _connected(self, client: nostr_sdk.Client) -> list[nostr_sdk.RelayUrl]:
        relays = await client.relays()
        return [url for url, relay in relays.items() if relay.status() == self._ns.RelayStatus.CONNECTED]

    def _open(self, event: nostr_sdk.Event, method: str) -> dict[str, Any]:
        """Decrypt and read an answer; WalletError (outcome unknown) when it cannot be read."""
        content = event.content()
        try:
            if "?iv=" in content:
                text = self.__keys.nip04_decrypt(self._wallet_pk, content)
            else:
                text = self.__keys.nip44_decrypt(self._wallet_pk, content)
            body = json.loads(text)
        except Exception:  # noqa: BLE001 - SDK decryption errors and bad JSON mean the same: unreadable
            raise WalletError(f"the NWC wallet service's answer to {method} could not be decrypted or read",
                              outcome_known=False) from None
        if not isinstance(body, dict) or body.get("result_type") not in (method, None):
            raise WalletError(f"the NWC wallet service answered {method} with a message of another kind",
                              outcome_known=False)
        return body

    def _call(self, method: str, params: dict[str, Any], *, paying: bool = False) -> dict[str, Any]:
        """One request from a sync caller: the answer, or the WalletError a person can act on."""
        wait = self.timeout + 4 * self.connect_timeout + 5  # a safety net; `_ask` keeps its own deadlines
        try:
            return self._run(self._ask(method, params), wait)
        except _NotSent as exc:
            raise WalletError(f"the NWC request {method} was not delivered: {exc}; nothing was sent") from None
        except _Unanswered as exc:
            detail = str(exc) or f"no answer within {wait:g} s"
            if paying:
                raise PaymentTimeout(
                    f"the NWC wallet service did not answer pay_invoice ({detail}); the payment may have gone out: "
                    "look the payment up (httpay ledger reconcile) before paying again"
                ) from None
            raise WalletError(f"the NWC wallet service did not answer {method} ({detail}); check that the wallet "
                              "service is online") from None
        except WalletError:
            raise
        except Exception as exc:  # noqa: BLE001 - an SDK error from inside the relay client
            raise WalletError(
                f"the NWC request {method} failed in the Nostr client ({type(exc).__name__}: {safe.clean(exc, 120)})"
                + ("; look the payment up before paying again" if paying else ""),
                outcome_known=not paying,
            ) from None

    @staticmethod
    def _error(body: dict[str, Any]) -> tuple[str, str] | None:
        err = body.get("error")
        if not err:
            return None
        if not isinstance(err, dict):
            return "OTHER", safe.clean(err, 200)
        code = str(err.get("code") or "OTHER").strip().upper()  # server text: shown cleaned, matched exactly
        return safe.clean(code, 40), safe.clean(err.get("message") or "", 200)

    # --- Wallet API ------------------------------------------------------------------------------

    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Payment:
        """Pay with `pay_invoice`; returns SETTLED only with a preimage that proves the invoice's hash."""
        bolt11 = bolt11.strip()
        payment_hash, amount_msat = invoice_facts(bolt11)
        log.debug("nwc pay_invoice wallet=%s… hash=%s", self.wallet_pubkey[:16], (payment_hash or "?")[:16])
        body = self._call("pay_invoice", {"invoice": bolt11}, paying=True)
        error = self._error(body)
        if error is not None:
            return self._refused(error, payment_hash)
        result = body.get("result")
        preimage = result.get("preimage") if isinstance(result, dict) else None
        if not isinstance(preimage, str) or not preimage:
            raise WalletError("the NWC wallet service answered pay_invoice without a preimage; look the payment up",
                              outcome_known=False)
        fee = result.get("fees_paid") if isinstance(result, dict) else None
        preimage = preimage.strip().lower()
        digest = _sha256_hex(preimage)
        if payment_hash is not None and digest != payment_hash:
            raise WalletError(
                f"the NWC wallet service says it paid {payment_hash[:16]}… but its preimage does not prove it; "
                "do not pay again, check the payment in the wallet", outcome_known=False)
        if not isinstance(fee, int) or isinstance(fee, bool) or fee < 0:
            found = self._lookup_quietly(payment_hash) if payment_hash else None
            fee = found.fee_msat if found is not None else 0
        payment = Payment(payment_hash=payment_hash or digest or "", status=PaymentStatus.SETTLED,
                          amount_msat=amount_msat, fee_msat=int(fee), preimage=preimage)
        if max_fee_msat is not None and payment.fee_msat > max_fee_msat:
            log.warning("nwc payment %s… paid fee %d msat above the limit %d msat (NIP-47 has no fee limit)",
                        payment.payment_hash[:16], payment.fee_msat, max_fee_msat)
        log.debug("nwc pay_invoice settled %s…", payment.payment_hash[:16])
        return payment

    def _refused(self, error: tuple[str, str], payment_hash: str | None) -> Payment:
        """A pay_invoice error answer as the typed error it means. Where it may hide a payment (an earlier
        one, or one made before the error), the wallet's own record (lookup_invoice) decides: a settled
        payment with its proof is returned, one in flight is AlreadyPaid with the outcome unknown."""
        code, message = error
        said = f"{code}: {message}" if message else code
        log.debug("nwc pay_invoice refused: %s", said)
        if code == "INSUFFICIENT_BALANCE":
            raise InsufficientFunds(f"the NWC wallet cannot pay ({said}); nothing was paid")
        if code in _REFUSED_BEFORE_PAYING:
            raise WalletError(f"the NWC wallet did not pay ({said}): {_REFUSED_BEFORE_PAYING[code]}; nothing was paid")
        # PAYMENT_FAILED, INTERNAL, OTHER or a code NIP-47 does not name: ask the wallet what it holds.
        failed = code == "PAYMENT_FAILED"
        if payment_hash is None:
            raise WalletError(f"the NWC wallet did not pay ({said})", outcome_known=failed)
        try:
            found = self.lookup(payment_hash)
        except WalletError as exc:
            raise WalletError(
                f"the NWC wallet did not pay ({said}) and could not be asked about the payment ({exc})"
                + ("" if failed else "; look the payment up before paying again"),
                outcome_known=failed,
            ) from None
        if found is not None and found.settled:
            # This wallet holds the proof (paid before, or paid before the error): hand back that payment, so
            # money that left is recorded; the wallet never paid the invoice twice.
            log.info("nwc pay_invoice answered %s, but invoice %s… is paid by this wallet: returning that payment",
                     code, payment_hash[:16])
            return found
        if found is not None and found.status is PaymentStatus.PENDING:
            raise AlreadyPaid(
                f"the NWC wallet answered {said} while a payment of invoice {payment_hash[:16]}… is in flight; "
                "look the payment up before paying again", outcome_known=False)
        raise WalletError(f"the NWC wallet did not pay ({said})")

    def _lookup_quietly(self, payment_hash: str) -> Payment | None:
        try:
            return self.lookup(payment_hash)
        except WalletError:
            return None

    def lookup(self, payment_hash: str) -> Payment | None:
        """This wallet's outgoing payment with that hash (`lookup_invoice`); None when it has none."""
        payment_hash = payment_hash.strip().lower()
        log.debug("nwc lookup_invoice hash=%s…", payment_hash[:16])
        body = self._call("lookup_invoice", {"payment_hash": payment_hash})
        error = self._error(body)
        if error is not None:
            code, message = error
            if code == "NOT_FOUND":
                return None
            hint = _REFUSED_BEFORE_PAYING.get(code, "")
            raise WalletError(f"the NWC wallet could not look up {payment_hash[:16]}… ({code}: {message})"
                              + (f": {hint}" if hint else ""))
        result = body.get("result")
        if not isinstance(result, dict):
            raise WalletError("the NWC wallet service answered lookup_invoice without a result")
        if result.get("type") == "incoming":
            log.debug("nwc lookup: %s… is an invoice this wallet issued, not a payment", payment_hash[:16])
            return None
        answered = str(result.get("payment_hash") or payment_hash).lower()
        if answered != payment_hash:
            raise WalletError(f"the NWC wallet service answered the lookup of {payment_hash[:16]}… for another payment")
        preimage = result.get("preimage")
        proven = isinstance(preimage, str) and _sha256_hex(preimage.strip().lower()) == payment_hash
        state = str(result.get("state") or "").lower()
        if state in ("failed", "expired"):
            status = PaymentStatus.FAILED
        elif state == "settled" or (not state and (proven or result.get("settled_at"))):
            if not proven:
                raise WalletError(f"the NWC wallet reports {payment_hash[:16]}… settled without a preimage that proves it")
            status = PaymentStatus.SETTLED
        else:
            status = PaymentStatus.PENDING
        return Payment(
            payment_hash=payment_hash,
            status=status,
            amount_msat=_msat(result.get("amount")),
            fee_msat=_msat(result.get("fees_paid")) or 0,
            preimage=preimage.strip().lower() if status is PaymentStatus.SETTLED and isinstance(preimage, str) else None,
            failure_reason=f"the NWC wallet reports the payment {state}" if status is PaymentStatus.FAILED else None,
        )

    def balance_msat(self) -> int:
        """The balance the wallet service reports for this connection (`get_balance`, msat)."""
        log.debug("nwc get_balance wallet=%s…", self.wallet_pubkey[:16])
        body = self._call("get_balance", {})
        error = self._error(body)
        if error is not None:
            code, message = error
            raise WalletError(f"the NWC wallet could not tell its balance ({code}: {message})"
                              + (f": {_REFUSED_BEFORE_PAYING[code]}" if code in _REFUSED_BEFORE_PAYING else ""))
        result = body.get("result")
        balance = _msat(result.get("balance")) if isinstance(result, dict) else None
        if balance is None:
            raise WalletError("the NWC wallet service answered get_balance without a balance")
        return balance

    def create_receive_invoice(self, amount_msat: int | None, *, description: str = "", expiry_s: int = 3600) -> str:
        """An invoice paying this wallet (`make_invoice`). NIP-47 invoices carry an amount, so None is refused."""
        if amount_msat is None or amount_msat <= 0:
            raise WalletError("an NWC wallet makes invoices for a positive amount only (NIP-47 make_invoice needs one)")
        body = self._call("make_invoice", {"amount": int(amount_msat), "description": description, "expiry": int(expiry_s)})
        error = self._error(body)
        if error is not None:
            code, message = error
            raise WalletError(f"the NWC wallet could not make an invoice ({code}: {message})")
        result = body.get("result")
        invoice = result.get("invoice") if isinstance(result, dict) else None
        if not isinstance(invoice, str) or not invoice:
            raise WalletError("the NWC wallet service answered make_invoice without an invoice")
        return invoice

    def close(self) -> None:
        """Disconnect from the relays and stop the wallet's event loop thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._client is not None:
                try:
                    await self._client.shutdown()
                except Exception as exc:  # noqa: BLE001 - closing must not raise
                    log.debug("nwc shutdown: %s", type(exc).__name__)
            if self._reader is not None:
                self._reader.cancel()
            for waiter in self._waiting.values():
                waiter.cancel()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(self.connect_timeout)
        except Exception as exc:  # noqa: BLE001 - closing must not raise
            log.debug("nwc close: %s", type(exc).__name__)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self.connect_timeout)


def _sha256_hex(preimage_hex: str) -> str | None:
    try:
        return hashlib.sha256(bytes.fromhex(preimage_hex)).hexdigest()
    except ValueError:
        return None


def _msat(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value
