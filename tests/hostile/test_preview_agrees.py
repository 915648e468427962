"""A preview refuses what paying refuses (helper-38's real-world pass).

`httpay get --dry-run`, `httpay offers` and the agent's price check said "would pay" for challenges
the payment itself then refused before calling the wallet: an MPP challenge past its `expires` (the
Payment scheme says never to pay it), an MPP challenge binding another request's body (`digest` on
a GET), a classic L402 invoice already expired, an invoice for another network than the wallet's.
Each preview now runs the dialect's own checks before paying (`ChecksAhead`) and the flow's invoice
checks, so a person is never told yes where the payment says no. Each row asserts what the dry run,
`offers`, the agent's tool and the paying client do, and that the wallet was never called.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from httpay.apps.agent.tools import Toolbox
from httpay.protocols import macaroons, mpp
from tests.helpers import make_invoice
from tests.hostile.conftest import Ran
from tests.hostile.harness import CountingWallet, HostileService

LATER = datetime.now(UTC) + timedelta(minutes=10)
EARLIER = datetime.now(UTC) - timedelta(minutes=5)


def _mpp_route(svc: HostileService, path: str, *, expires: datetime, digest: str | None = None,
               network: str = "regtest") -> str:
    async def handler(request: Request) -> Response:
        if request.headers.get("authorization", "").startswith("Payment "):  # the control row's paid retry
            return JSONResponse({"served": True})
        bolt11, payment_hash = svc.node.mint(10_000, network=network)
        charge = mpp.b64url_encode(json.dumps({"amount": "10", "currency": "sat", "methodDetails": {
            "invoice": bolt11, "paymentHash": payment_hash, "network": network}}).encode())
        extra = f', digest="{digest}"' if digest else ""
        resp = JSONResponse({"error": "payment required"}, status_code=402)
        resp.headers.append("WWW-Authenticate", f'Payment id="c-{payment_hash[:8]}", realm="{request.url.hostname}", '
                            f'method="lightning", intent="charge", request="{charge}", '
                            f'expires="{expires:%Y-%m-%dT%H:%M:%SZ}"{extra}')
        return resp
    return svc.route(path, handler)


def _classic_route(svc: HostileService, path: str, *, expired: bool = False, network: str = "regtest") -> str:
    async def handler(request: Request) -> Response:
        if svc.authorized(request):
            return JSONResponse({"served": True})
        if expired:  # made two minutes ago, good for one second
            bolt11, preimage = make_invoice(10_000, expiry=1, date=int(time.time()) - 120, network=network)
            payment_hash = hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
        else:
            bolt11, payment_hash = svc.node.mint(10_000, network=network)
        mac = macaroons.mint(svc.root_key, payment_hash, caveats=["services=hostile:0"])
        resp = JSONResponse({"error": "payment required"}, status_code=402)
        resp.headers.append("WWW-Authenticate", f'L402 macaroon="{mac}", invoice="{bolt11}"')
        return resp
    return svc.route(path, handler)


@dataclass(frozen=True)
class Case:
    name: str
    route: Callable[[HostileService], str]
    rule: str            # the refusal's rule, in the dry run's JSON
    says: str            # words of the refusal, the same in every surface
    paid: bool = False   # the control row: every surface says yes, and the payment is made


CASES = [
    Case("an MPP challenge past its expires", lambda s: _mpp_route(s, "/mpp-expired", expires=EARLIER),
         "invoice:expiry", "the MPP challenge expired"),
    Case("an MPP challenge binding another body (digest on a GET)",
         lambda s: _mpp_route(s, "/mpp-digest", expires=LATER, digest="sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"),
         "digest", "its digest does not match"),
    Case("a classic L402 invoice already expired", lambda s: _classic_route(s, "/l402-expired", expired=True),
         "invoice:expired", "the invoice expired"),
    Case("a classic L402 invoice for another network than the wallet's",
         lambda s: _classic_route(s, "/l402-testnet", network="testnet"), "invoice:network", "the testnet network"),
    Case("an MPP invoice for another network than the wallet's",
         lambda s: _mpp_route(s, "/mpp-testnet", expires=LATER, network="testnet"), "invoice:network",
         "the testnet network"),
    Case("control: an MPP charge in time is paid", lambda s: _mpp_route(s, "/mpp-ok", expires=LATER), "", "", paid=True),
    Case("control: a classic L402 in time is paid", lambda s: _classic_route(s, "/l402-ok"), "", "", paid=True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_preview_refuses_what_paying_refuses(case: Case, svc: HostileService, wallet: CountingWallet,
                                               cli: Callable[..., Ran], tmp_path: Path) -> None:
    url = case.route(svc)
    ledger = str(tmp_path / "ledger.sqlite3")
    dry = cli("get", url, "--dry-run", "--json", "--ledger", ledger)
    said = json.loads(dry.out)
    offers = json.loads(cli("offers", url, "--json").out)["policy_would"]
    with Toolbox(wallet=wallet, ledger=tmp_path / "agent.sqlite3") as tools:
        checked = str(tools.offers(url))
    if case.paid:
        assert (dry.code, said["would_pay"], offers["pay"]) == (0, True, True), (dry, offers)
        assert "would pay" in checked, checked
    else:
        assert (dry.code, said["would_pay"], said["rule"]) == (3, False, case.rule), dry
        assert case.says in said["reason"], said
        assert offers["pay"] is False and case.says in offers["text"], offers
        assert "would refuse" in checked and case.says in checked, checked
    assert wallet.calls == []  # no preview calls the wallet
    paying = cli("get", url, "--ledger", ledger)
    if case.paid:
        assert paying.code == 0 and wallet.paid == 1, paying
    else:
        assert paying.code == 3 and case.says in paying.err, paying
        assert wallet.calls == []  # refused before the wallet, as the preview said
