"""A wallet on the demo Lightning network (`httpay demo-server`, `/ln/` routes): pays regtest invoices, no real money.

It behaves like a real wallet adapter so the client's whole flow (pay, prove, look up, fail in
each documented way) can be tried and tested without a Lightning node. The key is a bearer
secret: it is sent only in the Authorization header and never shown in a repr, log or error.
"""

from __future__ import annotations

from typing import Any

import httpx

from httpay.core.pooled import kept
from httpay.errors import AlreadyPaid, InsufficientFunds, PaymentTimeout, WalletError, WalletUnreachable
from httpay.safe import get_logger, mask_urls
from httpay.wallets.base import (
    Payment,
    PaymentStatus,
    Wallet,
    fingerprint,
    invoice_facts,
)

log = get_logger("httpay.wallet.demo")

# Transport failures that happen before the request can have reached the server: nothing was paid.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


class DemoWallet(Wallet):
    """Pays invoices from a wallet held by the demo service's in-memory network (regtest)."""

    network = "regtest"
    name = "demo"

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout: float = 10.0,
        wallet_id: str | None = None,
        client: httpx.Client | None = None,
        key_advice: str = "create a new wallet with DemoWallet.create",
    ) -> None:
        """`client` lets tests inject a transport (e.g. `httpx.MockTransport`); the wallet then does not close it.
        `key_advice`: what a service refusing the key (401) tells the person to do, in the words of the
        surface that configured the wallet (the command line's: `httpay wallet open-demo`)."""
        if not key:
            raise WalletError("the demo wallet needs its key (from POST /ln/wallets or DemoWallet.create)")
        self.base_url = base_url.rstrip("/")
        self.wallet_id = wallet_id
        self.key_advice = key_advice
        self.__key = key
        self._owns_client = client is None
        self._rate: float | None = None
        self._client = client if client is not None else kept(httpx.Client(timeout=timeout))

    @classmethod
    def create(cls, base_url: str, balance_sat: int = 10_000, *, timeout: float = 10.0) -> DemoWallet:
        """Open a new funded wallet on the demo service and return an adapter for it."""
        if not isinstance(base_url, str) or "://" not in base_url:
            raise WalletError(f"DemoWallet.create needs the demo service's URL (e.g. http://127.0.0.1:8402, where "
                              f"`httpay demo-server` listens), got {base_url!r:.60}")
        url = base_url.rstrip("/") + "/ln/wallets"
        try:
            response = httpx.post(url, json={"balance_sat": balance_sat}, timeout=timeout)
        except _NOT_SENT as exc:
            raise WalletUnreachable(f"could not reach the demo service at {base_url} to open a wallet: "
                                    f"{type(exc).__name__}; is `httpay demo-server` running there?") from None
        except httpx.HTTPError as exc:
            raise WalletError(f"could not reach the demo service at {base_url} to open a wallet: {type(exc).__name__}") from None
        body = _json(response)
        if response.status_code != 201 or not isinstance(body.get("key"), str):
            raise WalletError(f"the demo service refused to open a wallet ({response.status_code}): {_message(body, response)}")
        log.debug("opened demo wallet %s with %d sat", body.get("wallet_id"), balance_sat)
        return cls(base_url, body["key"], timeout=timeout, wallet_id=body.get("wallet_id"))

    def __repr__(self) -> str:
        return f"DemoWallet(url={mask_urls(self.base_url)!r}, wallet_id={self.wallet_id!r})"

    __str__ = __repr__

    def reveal_key(self) -> str:
        """The wallet's key, to hand to another process (`HTTPAY_DEMO_KEY`): whoever holds it spends
        this wallet's demo balance. A method, not an attribute, so no repr or dump shows it by accident."""
        return self.__key

    @property
    def identity(self) -> str:
        """This demo wallet: a one-way fingerprint of the service and the wallet's key."""
        return fingerprint("demo", self.base_url, self.__key)

    # -- Wallet API ---------------------------------------------------------------------------

    def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Payment:
        """Pay on the demo network; the returned Payment's preimage is checked against the hash."""
        body: dict[str, Any] = {"invoice": bolt11}
        if max_fee_msat is not None:
            body["max_fee_msat"] = max_fee_msat
        log.debug("paying invoice %s… on %s", bolt11[:24], self.base_url)
        response = self._send("POST", "/ln/pay", json=body, paying=True)
        answer = _json(response)
        if response.status_code != 200:
            raise _pay_error(response, answer, self._key_rejected())
        payment = _payment(answer)
        expected = invoice_facts(bolt11)[0]
        if expected is not None and payment.payment_hash != expected:
            raise WalletError(
                "the demo network answered for a different payment hash than the invoice's",
                outcome_known=False,
            )
        if not payment.proves(payment.payment_hash):
            raise WalletError(
                "the demo network reported the payment settled but its preimage does not match the payment hash",
                outcome_known=False,
            )
        log.debug("paid %s msat, hash %s…", payment.amount_msat, payment.payment_hash[:16])
        return payment

    def lookup(self, payment_hash: str) -> Payment | None:
        """This wallet's record of a payment, or None if it never paid that hash."""
        log.debug("looking up payment %s…", payment_hash[:16])
        response = self._send("GET", f"/ln/payments/{payment_hash}")
        if response.status_code == 404:
            return None
        answer = _json(response)
        if response.status_code != 200:
            raise WalletError(f"demo wallet lookup failed ({response.status_code}): {_message(answer, response)}")
        return _payment(answer)

    def received_msat(self, payment_hash: str) -> int | None:
        """What was paid to this wallet's own invoice (0 while unpaid; None: not its invoice)."""
        response = self._send("GET", f"/ln/invoices/{payment_hash}")
        if response.status_code == 404:
            return None
        answer = _json(response)
        got = answer.get("received_msat")
        if response.status_code != 200 or isinstance(got, bool) or not isinstance(got, int) or got < 0:
            raise WalletError(f"demo wallet invoice lookup failed ({response.status_code}): {_message(answer, response)}")
        return got

    def balance_msat(self) -> int:
        log.debug("reading balance of %r", self)
        response = self._send("GET", "/ln/balance")
        answer = _json(response)
        if response.status_code != 200 or not isinstance(answer.get("balance_msat"), int):
            raise WalletError(f"demo wallet balance failed ({response.status_code}): {_message(answer, response)}")
        return int(answer["balance_msat"])

    def create_receive_invoice(self, amount_msat: int | None, *, description: str = "", expiry_s: int = 3600) -> str:
        """This wallet's own invoice on the demo network (amount-less allowed): paying it credits this wallet."""
        body: dict[str, Any] = {"description": description, "expiry": expiry_s}
        if amount_msat is not None:
            body["amount_msat"] = amount_msat
        response = self._send("POST", "/ln/invoices", json=body)
        answer = _json(response)
        if response.status_code != 201 or not isinstance(answer.get("payment_request"), str):
            raise WalletError(f"the demo wallet could not create an invoice ({response.status_code}): {_message(answer, response)}")
        return str(answer["payment_request"])

    def usd_per_btc(self) -> float | None:
        """The demo network's fixed BTC/USD rate (the one its service prices offers with)."""
        if self._rate is None:
            body = _json(self._send("GET", "/ln/node"))
            rate = body.get("usd_per_btc")
            self._rate = float(rate) if isinstance(rate, int | float) and rate > 0 else None
        return self._rate

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # -- plumbing -----------------------------------------------------------------------------

    def _key_rejected(self) -> WalletError:
        return WalletError(f"demo wallet key was rejected (401); {self.key_advice}")

    def _send(self, method: str, path: str, *, json: Any = None, paying: bool = False) -> httpx.Response:
        """One authorised request; transport failures become wallet errors that say whether money may have
        moved. A key the service does not know (401) is said so, with `key_advice`, whatever was asked."""
        headers = {"Authorization": f"Bearer {self.__key}"}
        try:
            response = self._client.request(method, self.base_url + path, json=json, headers=headers)
        except _NOT_SENT as exc:
            raise WalletUnreachable(f"could not reach the demo wallet at {self.base_url} ({type(exc).__name__}); nothing was paid") from None
        except httpx.TimeoutException as exc:
            if paying:
                raise PaymentTimeout(f"the demo wallet at {self.base_url} did not answer in time ({type(exc).__name__}); the payment may have gone out: look it up before paying again") from None
            raise WalletError(f"the demo wallet at {self.base_url} did not answer in time ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise WalletError(
                f"the connection to the demo wallet at {self.base_url} failed ({type(exc).__name__})"
                + ("; the payment may have gone out: look it up before paying again" if paying else ""),
                outcome_known=not paying,
            ) from None
        if response.status_code == 401:  # nothing was done with a key the network does not know
            raise self._key_rejected()
        return response




def _json(response: httpx.Response) -> dict[str, Any]:
    """The response body as a dict ({} when it is not a JSON object)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _message(body: dict[str, Any], response: httpx.Response) -> str:
    error = body.get("error")
    return str(error) if error else (response.reason_phrase or "no explanation given")


def _pay_error(response: httpx.Response, body: dict[str, Any], rejected: WalletError) -> WalletError:
    """Translate a refused payment into httpay's wallet errors. A 5xx leaves the outcome unknown."""
    code = body.get("code")
    message = f"demo wallet could not pay: {_message(body, response)}"
    if code == "already_paid":
        return AlreadyPaid(message)
    if code == "insufficient_funds":
        return InsufficientFunds(message)
    if code == "unauthorized" or response.status_code == 401:
        return rejected
    if response.status_code >= 500:
        return WalletError(f"{message} (server error {response.status_code}; the payment may have gone out)", outcome_known=False)
    return WalletError(f"{message}" + (f" [{code}]" if code else ""))


def _payment(body: dict[str, Any]) -> Payment:
    """A Payment from the demo network's JSON; WalletError when the answer is malformed."""
    try:
        return Payment(
            payment_hash=str(body["payment_hash"]).lower(),
            status=PaymentStatus(body.get("status", "settled")),
            amount_msat=int(body["amount_msat"]),
            fee_msat=int(body.get("fee_msat", 0)),
            preimage=body.get("preimage"),
        )
    except (KeyError, TypeError, ValueError):
        raise WalletError("the demo network answered with a malformed payment record", outcome_known=False) from None
