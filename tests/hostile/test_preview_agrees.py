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
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import httpay
from httpay.apps.agent.tools import Toolbox
from httpay.protocols import macaroons, mpp
from tests.helpers import make_invoice
from tests.hostile.conftest import Ran
from tests.hostile.harness import CountingSigner, CountingWallet, HostileService, x402_requirement
from tests.hostile.test_x402_v2 import RATE, LnbtcWallet, Seen, b64, lnbtc

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


# -- x402 (helper-45): Lightning exact's binding checks, a payment-identifier httpay cannot follow,
# the budgets the agent's tool left out, the policy file's proposals the command's preview ignored
def _agree(client: httpay.Client, url: str, wallet: CountingWallet, signer: CountingSigner | None,
           says: str | None) -> None:
    """The agent's offers tool and the paying client say the same: `says` None, both pay; else both
    refuse in these words, and nothing is paid or signed."""
    told = str(Toolbox(client).offers(url))
    if says is None:
        assert "the policy would pay" in told, told
        assert client.get(url).status_code == 200
        return
    assert "would pay" not in told and says in told, told  # ("would refuse", or "no tool here can pay this")
    with pytest.raises(httpay.HttpayError) as refused:
        client.get(url)
    assert says in str(refused.value)
    assert wallet.calls == [] and (signer is None or signer.signed == [])


LNBTC = [("in time and bound to this request", "request", LnbtcWallet, None, None),
         ("bound to another request", "other", LnbtcWallet, None, "not bound to this request"),
         ("for another network than the wallet's", "request", CountingWallet, None, "the testnet network"),
         ("to another payee than the pinned one", "request", LnbtcWallet, "02" + "11" * 32, "not the pinned payee")]


@pytest.mark.parametrize(("bind", "kind", "pin", "says"), [c[1:] for c in LNBTC], ids=[c[0] for c in LNBTC])
def test_x402_lightning_exact_is_previewed_with_the_checks_paying_makes(
        svc: HostileService, tmp_path: Path, bind: str, kind: type[CountingWallet], pin: str | None,
        says: str | None) -> None:
    url = lnbtc(svc, Seen(), bind=bind)
    wallet = kind(svc.node)
    pinned: dict[str, Any] = {"payees": {"127.0.0.1": pin}} if pin else {}
    policy = httpay.Policy(methods=["x402"], proposals=["x402-lnbtc"], usd_per_btc=RATE, **pinned)
    with httpay.Client(wallet=wallet, ledger=tmp_path / "l.sqlite3", policy=policy) as client:
        _agree(client, url, wallet, None, says)


def test_an_x402_payment_identifier_httpay_cannot_follow_is_refused_by_the_preview_too(
        svc: HostileService, wallet: CountingWallet, tmp_path: Path) -> None:
    challenge = {"x402Version": 2, "error": "Payment required", "resource": {"url": svc.url + "/pid"},
                 "accepts": [x402_requirement()], "extensions": {"payment-identifier": {"info": {"required": "yes"}}}}

    async def handler(request: Request) -> Response:
        return JSONResponse({}, status_code=402, headers={"PAYMENT-REQUIRED": b64(challenge)})
    url = svc.route("/pid", handler)
    signer = CountingSigner()
    with httpay.Client(x402_signer=signer, ledger=tmp_path / "l.sqlite3",
                       policy=httpay.Policy(methods=["x402"], usd_per_btc=RATE)) as client:
        _agree(client, url, wallet, signer, "payment-identifier extension in a form httpay cannot follow")


def test_the_agents_offers_tool_holds_every_budget_as_fetch_does(svc: HostileService, wallet: CountingWallet,
                                                                 tmp_path: Path) -> None:
    """With 5 of an hourly 15 sat left, the tool said "would pay" a 10 sat offer that fetch refused."""
    with httpay.Client(wallet=wallet, ledger=tmp_path / "l.sqlite3", token_scope="url",  # each route its own token
                       policy=httpay.Policy(per_hour_sat=15, max_fee_msat=0)) as client:
        assert client.get(svc.classic("/first")).status_code == 200
        paid = len(wallet.calls)
        told = str(Toolbox(client).offers(svc.classic("/second")))
        assert "would refuse" in told and "hourly budget of 15 sat" in told, told
        with pytest.raises(httpay.PaymentRefused, match="hourly budget of 15 sat"):
            client.get(svc.classic("/second"))
        assert len(wallet.calls) == paid


def test_the_commands_preview_opts_in_to_the_policy_files_proposals_as_paying_does(
        svc: HostileService, wallet: CountingWallet, tmp_path: Path, cli: Callable[..., Ran]) -> None:
    """`proposals = ["x402-lnbtc"]` in HTTPAY_POLICY: --dry-run and offers refused ("the httpay command does
    not pay it"), then `httpay get` paid it."""
    url = lnbtc(svc, Seen())
    wallet.network = LnbtcWallet.network  # the command's wallet, on the network the lnbtc draft names
    policy = tmp_path / "policy.toml"
    policy.write_text('methods = ["x402", "lightning"]\nusd_per_btc = 100000\nproposals = ["x402-lnbtc"]\n')
    env = {"HTTPAY_POLICY": str(policy)}
    ledger = str(tmp_path / "l.sqlite3")
    dry = json.loads(cli("get", url, "--dry-run", "--json", "--ledger", ledger, env=env).out)
    assert dry["would_pay"] is True, (dry.get("rule"), dry.get("reason"))
    assert json.loads(cli("offers", url, "--json", env=env).out)["policy_would"]["pay"] is True
    assert wallet.calls == []
    assert cli("get", url, "--ledger", ledger, env=env).code == 0 and wallet.paid == 1
    policy.write_text('methods = ["x402", "lightning"]\nusd_per_btc = 100000\n')  # not opted in: both refuse
    dry = json.loads(cli("get", url, "--dry-run", "--json", "--ledger", ledger, env=env).out)
    assert dry["would_pay"] is False and "proposals = [\"x402-lnbtc\"] in the policy file" in dry["reason"], dry


def test_a_hostile_x402_network_is_made_safe_in_every_field_built_from_it(svc: HostileService,
                                                                          cli: Callable[..., Ran]) -> None:
    evil = "\x1b[31mRED\u202eRTL\u2066" + "Z" * 5000
    challenge = {"x402Version": 2, "resource": {"url": svc.url + "/evil"},
                 "accepts": [{**x402_requirement(), "network": "eip155:" + evil}]}

    async def handler(request: Request) -> Response:
        return JSONResponse({}, status_code=402, headers={"PAYMENT-REQUIRED": b64(challenge)})
    url = svc.route("/evil", handler)
    shown = cli("offers", url, "--json", paying=False)

    def strings(x: object) -> list[str]:
        if isinstance(x, dict):
            return [s for v in x.values() for s in strings(v)]
        if isinstance(x, list):
            return [s for v in x for s in strings(v)]
        return [x] if isinstance(x, str) else []
    found = strings(json.loads(shown.out))
    assert found and all("\x1b" not in s and "\u202e" not in s and len(s) < 1000 for s in found)
