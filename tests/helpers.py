"""Test helpers: mint real signed BOLT11 invoices and fake 402 services without a server."""

from __future__ import annotations

import hashlib
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

from bolt11 import Bolt11, MilliSatoshi, Tags, encode
from bolt11.types import TagChar
from coincurve import PrivateKey

from httpay.wallets.base import Wallet

NODE_KEY = PrivateKey(hashlib.sha256(b"httpay test node").digest())
CURRENCY = {"regtest": "bcrt", "bitcoin": "bc", "testnet": "tb", "signet": "tbs"}

NOTEBOOK_OFFERS: list[dict[str, Any]] = [
    {"offer_id": "offer_c668e0c0", "title": "1 Credit Package", "description": "Purchase 1 credit for API access",
     "type": "top-up", "balance": 1, "amount": 1, "currency": "USD", "payment_methods": ["lightning"]},
    {"offer_id": "offer_97bf23f7", "title": "120 Credits Package", "description": "Purchase 120 credits for API access",
     "type": "top-up", "balance": 120, "amount": 100, "currency": "USD",
     "payment_methods": ["lightning", "coinbase_commerce"]},
    {"offer_id": "offer_a896b13c", "title": "750 Credits Package", "description": "Purchase 750 credits for API access",
     "type": "top-up", "balance": 750, "amount": 499, "currency": "USD",
     "payment_methods": ["lightning", "coinbase_commerce", "credit_card"]},
]


def challenge_body(base: str = "https://stock.example", token: str = "tok-123", **extra: Any) -> dict[str, Any]:
    body = {
        "version": "0.2.1", "payment_request_url": f"{base}/l402/payment-request", "payment_context_token": token,
        "terms_url": "https://link-to-terms.com", "offers": NOTEBOOK_OFFERS,
    }
    body.update(extra)
    return body


def make_invoice(amount_msat: int | None = 10_000, *, network: str = "regtest", expiry: int = 600,
                 date: int | None = None, description: str = "1 Credit Package", key: PrivateKey = NODE_KEY,
                 preimage: bytes | None = None) -> tuple[str, str]:
    """A real signed invoice and its preimage (hex)."""
    pre = preimage or os.urandom(32)
    tags = Tags()
    tags.add(TagChar.payment_hash, hashlib.sha256(pre).hexdigest())
    tags.add(TagChar.payment_secret, os.urandom(32).hex())
    tags.add(TagChar.description, description)
    tags.add(TagChar.expire_time, expiry)
    inv = Bolt11(currency=CURRENCY[network], date=date if date is not None else int(time.time()), tags=tags,
                 amount_msat=MilliSatoshi(amount_msat) if amount_msat is not None else None)
    return encode(inv, key.secret.hex()), pre.hex()


class FakeService:
    """A v0.2 paywall as an httpx.MockTransport handler: one credit per paid invoice."""

    def __init__(self, *, invoice_msat: int | None = 10_000, network: str = "regtest", pr_url: str | None = None,
                 offers: list[dict[str, Any]] | None = None) -> None:
        self.credits = 0
        self.invoice_msat = invoice_msat
        self.network = network
        self.pr_url = pr_url
        self.offers = offers or NOTEBOOK_OFFERS
        self.invoices: dict[str, str] = {}  # payment hash -> preimage
        self.paid: set[str] = set()
        self.pr_calls = 0
        self.requests = 0

    def pay(self, payment_hash: str) -> str:
        self.paid.add(payment_hash)
        self.credits += 1
        return self.invoices[payment_hash]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        import httpx

        self.requests += 1
        if request.url.path == "/l402/payment-request":
            self.pr_calls += 1
            body = __import__("json").loads(request.content)
            s, pre = make_invoice(self.invoice_msat, network=self.network)
            import bolt11

            self.invoices[bolt11.decode(s).payment_hash] = pre
            return httpx.Response(200, json={"version": "0.2.1", "offer_id": body["offer_id"],
                                             "expires_at": "2099-01-01T00:00:00+00:00",
                                             "payment_request": {"lightning_invoice": s}})
        if self.credits > 0:
            self.credits -= 1
            return httpx.Response(200, json={"symbol": "MSFT", "price": 1})
        body = challenge_body(base=f"{request.url.scheme}://{request.url.netloc.decode()}", offers=self.offers)
        if self.pr_url:
            body["payment_request_url"] = self.pr_url
        return httpx.Response(402, json=body)


class FakeWallet(Wallet):
    """A wallet that pays FakeService invoices in memory. Behaviour is scriptable per test."""

    network = "regtest"
    name = "fake"

    def __init__(self, service: FakeService, *, fail: Exception | None = None, lookup_result: Any = "auto") -> None:
        self.service = service
        self.fail = fail
        self.calls: list[str] = []
        self.lookup_result = lookup_result

    def pay_invoice(self, bolt11_str: str, *, max_fee_msat: int | None = None) -> Any:
        import bolt11

        from httpay.wallets.base import Payment, PaymentStatus

        self.calls.append(bolt11_str)
        h = bolt11.decode(bolt11_str).payment_hash
        if self.fail is not None:
            raise self.fail
        pre = self.service.pay(h)
        return Payment(payment_hash=h, status=PaymentStatus.SETTLED, amount_msat=bolt11.decode(bolt11_str).amount_msat,
                       fee_msat=3, preimage=pre)

    def lookup(self, payment_hash: str) -> Any:
        return None if self.lookup_result == "auto" else self.lookup_result

    def balance_msat(self) -> int:
        return 1_000_000

    def close(self) -> None:
        pass


def quote_of(offers: Any, url: str, host: str, *, usd_per_btc: float | None = None, price_msat: int = 10_000,
             method: str = "lightning") -> Any:
    """A quote for the first of `offers` (L402 v0.2 `PaymentOffers`), as the flow hands one to an approver."""
    from httpay.core.model import Quote
    from httpay.dialects.l402_v02 import to_challenge

    challenge = to_challenge(offers, url)
    return Quote(challenge=challenge, offer=challenge.offers[0], method=method, price_msat=price_msat, url=url,
                 host=host, usd_per_btc=usd_per_btc)


def thread_hops(monkeypatch: Any) -> list[Any]:
    """Every call an AsyncClient's driver hands to a worker thread from now on (`in_thread`, and
    `to_the_end_in_thread` for a payment and what records it), as what it runs: an effect for a
    bound `run`, else the function itself."""
    from httpay.core import transport

    hops: list[Any] = []
    real, real_to_the_end = transport.in_thread, transport.to_the_end_in_thread

    async def counted(func: Any, *args: Any) -> Any:
        hops.append(getattr(func, "__self__", func))
        return await real(func, *args)

    async def counted_to_the_end(func: Any, *args: Any) -> Any:
        hops.append(getattr(func, "__self__", func))
        return await real_to_the_end(func, *args)

    monkeypatch.setattr(transport, "in_thread", counted)
    monkeypatch.setattr(transport, "to_the_end_in_thread", counted_to_the_end)
    return hops


async def cancel_while_held(task: Any, scopes: list[Any], how: str, release: Any) -> None:
    """Cancel `task` (or, `how` "cancel-scope", the anyio scope it runs in) while a test's gate holds
    the step it is in, give the cancellation a few turns of the loop to land there, then let the
    step go on (`release`: the gate's event)."""
    import asyncio

    if how == "cancel-scope":
        scopes[0].cancel()
    else:
        task.cancel()
    for _ in range(20):
        await asyncio.sleep(0)
    release.set()


def in_threads(target: Any, each: Any) -> None:
    """`target(x)` for every x of `each`, each in its own thread, all started before any is waited for."""
    import threading

    threads = [threading.Thread(target=target, args=(x,)) for x in each]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
