"""The demo service's classic L402 route, the way Aperture guards a service.

`GET /l402/ticker/{symbol}` answers 402 with a macaroon bound to a fresh invoice's payment hash
(both `LSAT` and `L402` challenges, as Aperture sends them). Paying the invoice on the demo
network and presenting `Authorization: L402 <macaroon>:<preimage>` unlocks every ticker until
the macaroon's `stock_valid_until` caveat lapses. A bad or stale credential gets a fresh 402.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from httpay.demo import data
from httpay.demo.network import InvoiceRecord
from httpay.errors import ChallengeError
from httpay.protocols import macaroons
from httpay.protocols.l402_classic import parse_credential

SERVICE = "stock"


@dataclass
class ClassicL402:
    """Settings and root key of the classic route (per app: a fresh key per demo instance)."""

    price_sat: int = 10
    valid_for_s: int = 3600
    root_key: bytes = field(default_factory=lambda: os.urandom(32), repr=False)
    issued: int = 0
    served: int = 0


def classic_challenges(request: Request, record: InvoiceRecord) -> list[str]:
    """The `LSAT` and `L402` challenge values for an invoice: a macaroon bound to its payment hash."""
    cfg: ClassicL402 = request.app.state.classic
    until = int(time.time()) + cfg.valid_for_s
    mac = macaroons.mint(cfg.root_key, record.payment_hash, location="httpay-demo",
                         caveats=[f"services={SERVICE}:0", f"{SERVICE}_capabilities=ticker",
                                  f"{SERVICE}_valid_until={until}"])
    cfg.issued += 1
    params = f'macaroon="{mac}", invoice="{record.bolt11}"'
    return [f"LSAT {params}", f'L402 version="0", {params}']


def _challenge(request: Request) -> Response:
    state = request.app.state.demo
    cfg: ClassicL402 = request.app.state.classic
    record = state.network.create_invoice(cfg.price_sat * 1000, f"L402 access to {SERVICE} (demo)",
                                          expiry=state.invoice_expiry_s)
    response = JSONResponse({"error": "payment required", "protocol": "L402", "price_sat": cfg.price_sat},
                            status_code=402)
    for value in classic_challenges(request, record):
        response.headers.append("WWW-Authenticate", value)
    return response


def classic_authorized(request: Request) -> bool:
    """True when the request carries a paid classic L402/LSAT credential of this demo."""
    return _authorized(request)


def _authorized(request: Request) -> bool:
    header = request.headers.get("authorization", "")
    if not header.upper().startswith(("L402 ", "LSAT ")):
        return False
    try:
        cred = parse_credential(header)
    except ChallengeError:
        return False
    cfg: ClassicL402 = request.app.state.classic
    state = request.app.state.demo
    for mac in cred.macaroons:
        if not macaroons.verify(cfg.root_key, mac, cred.preimage):
            return False
        info = macaroons.decode(mac)
        record = state.network.invoice(info.payment_hash or "")
        if record is None or not record.settled:
            return False
        if not hmac.compare_digest(hashlib.sha256(bytes.fromhex(cred.preimage)).hexdigest(), record.payment_hash):
            return False
    return bool(cred.macaroons)


async def classic_ticker(request: Request) -> Response:
    """A ticker behind classic L402: no account, the paid macaroon is the credential."""
    symbol = request.path_params["symbol"]
    body = data.ticker(symbol)
    if body is None:
        return JSONResponse({"error": f"unknown ticker {symbol.upper()}"}, status_code=404)
    if not _authorized(request):
        return _challenge(request)
    request.app.state.classic.served += 1
    return JSONResponse(body)
