"""A fake Fewsats API following the `fewsats` 0.0.22 package's endpoints, on a USD-cents balance.

Endpoints: GET v0/wallets, POST v0/l402/purchases/lightning, POST v0/l402/purchases/from-offer,
GET v0/l402/outgoing-payments/{id}. Errors in Django REST framework's shapes (the `Token` auth
scheme is DRF's): 401 {"detail": "Invalid token."}, 404 {"detail": "Not found."}, 400 field errors.
Purchases above `review_over_cents` come back `needs_review` and are not charged until approved.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.wallets.fakes import Invoice, Payee


@dataclass
class Purchase:
    id: int
    status: str
    amount: int
    payment_method: str = "lightning"
    invoice: Invoice | None = None
    offer_id: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat().replace("+00:00", "Z"))

    def as_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "created_at": self.created_at, "status": self.status,
                             "payment_method": self.payment_method, "amount": self.amount, "currency": "usd"}
        if self.invoice is not None:
            d["invoice"] = self.invoice.bolt11
            if self.status == "success":
                d["preimage"] = self.invoice.preimage
        return d


class FakeFewsats:
    def __init__(self, payee: Payee, *, api_key: str, balance_cents: int = 1_000) -> None:
        self.payee = payee
        self.api_key = api_key
        self.balance_cents = balance_cents
        self.purchases: dict[int, Purchase] = {}
        self.review_over_cents: int | None = None
        self.delay_s = 0.0
        self.requests: list[tuple[str, Any]] = []

    def _new(self, **kwargs: Any) -> Purchase:
        p = Purchase(id=len(self.purchases) + 164, **kwargs)
        self.purchases[p.id] = p
        return p

    def approve(self, pid: int) -> None:
        """What the person does in the Fewsats app: the purchase is charged and paid."""
        p = self.purchases[pid]
        self.balance_cents -= p.amount
        if p.invoice is not None:
            p.invoice.paid_by = "fewsats"
        p.status = "success"

    def charge(self, amount: int, invoice: Invoice | None = None, offer_id: str | None = None) -> Purchase:
        if self.review_over_cents is not None and amount > self.review_over_cents:
            return self._new(status="needs_review", amount=amount, invoice=invoice, offer_id=offer_id)
        p = self._new(status="pending", amount=amount, invoice=invoice, offer_id=offer_id)
        self.approve(p.id)
        return p


def _missing(body: dict[str, Any], *names: str) -> Response | None:
    errors = {n: ["This field is required."] for n in names if n not in body}
    return JSONResponse(errors, status_code=400) if errors else None


def create_app(fake: FakeFewsats) -> Starlette:
    def authorised(request: Request) -> bool:
        return request.headers.get("authorization") == f"Token {fake.api_key}"

    unauthorised = JSONResponse({"detail": "Invalid token."}, status_code=401)

    async def wallets(request: Request) -> Response:
        if not authorised(request):
            return unauthorised
        return JSONResponse([{"id": 1, "balance": fake.balance_cents, "currency": "usd"}])

    async def lightning(request: Request) -> Response:
        if not authorised(request):
            return unauthorised
        body = json.loads(await request.body())
        fake.requests.append(("lightning", body))
        if (err := _missing(body, "invoice", "amount")) is not None:
            return err
        inv = fake.payee.find(str(body["invoice"]))
        if inv is None:
            return JSONResponse({"detail": "Invalid lightning invoice"}, status_code=400)
        if inv.paid_by is not None:
            return JSONResponse({"detail": "Invoice already paid"}, status_code=400)
        amount = int(body["amount"])
        if amount > fake.balance_cents:
            return JSONResponse({"detail": "Insufficient balance and no default payment method"}, status_code=400)
        purchase = fake.charge(amount, invoice=inv)
        if fake.delay_s:
            await asyncio.sleep(fake.delay_s)
        return JSONResponse(purchase.as_json())

    async def from_offer(request: Request) -> Response:
        if not authorised(request):
            return unauthorised
        body = json.loads(await request.body())
        fake.requests.append(("from-offer", body))
        if (err := _missing(body, "offer_id", "offers", "payment_context_token", "payment_request_url", "version")) is not None:
            return err
        chosen = [o for o in body["offers"] if (o.get("id") or o.get("offer_id")) == body["offer_id"]]
        if not chosen:
            return JSONResponse({"detail": f"Offer {body['offer_id']} not found in offers"}, status_code=400)
        amount = int(chosen[0]["amount"])
        if amount > fake.balance_cents:
            return JSONResponse({"detail": "Insufficient balance and no default payment method"}, status_code=400)
        purchase = fake.charge(amount, offer_id=body["offer_id"])
        return JSONResponse({k: v for k, v in purchase.as_json().items() if k in ("id", "created_at", "status", "payment_method")})

    async def outgoing(request: Request) -> Response:
        if not authorised(request):
            return unauthorised
        try:
            purchase = fake.purchases[int(request.path_params["pid"])]
        except (KeyError, ValueError):
            return JSONResponse({"detail": "Not found."}, status_code=404)
        return JSONResponse(purchase.as_json())

    return Starlette(routes=[
        Route("/v0/wallets", wallets),
        Route("/v0/l402/purchases/lightning", lightning, methods=["POST"]),
        Route("/v0/l402/purchases/from-offer", from_offer, methods=["POST"]),
        Route("/v0/l402/outgoing-payments/{pid}", outgoing),
    ])
