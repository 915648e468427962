"""Issue 10, the money core, against hostile loopback services, sync and async:

1. a classic L402 invoice is paid only if the macaroon commits to it (token68: what is checked instead);
3. one payment per token scope, however many requests meet fresh (Aperture-style) challenges at once;
5. every route to a payment, automatic or approved (hook, queue, dashboard), passes the same decision;
7. after money left, every failure is a typed error carrying the receipt, and the row stays settled.

Each case asserts what a person would check: wallet calls (or signatures), ledger rows, spend with
fees, the error's type and text.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

import httpay
from httpay.apps.approvals import ApprovalQueue
from httpay.apps.dashboard import create_app
from httpay.core.flow import MAX_PRICE_EXTENSION
from httpay.core.quote import quote, requote
from httpay.dialects.l402_v02 import to_challenge
from httpay.errors import (
    ApprovalError,
    InvoiceError,
    PaidRequestFailed,
    PaymentNotHonored,
    PaymentOutcomeUnknown,
    PaymentRefused,
)
from httpay.ledger import Intent, SQLiteLedger, Status
from tests.fixtures.postgres import clean_postgres_url, postgres_url  # noqa: F401  # fixtures used by name
from tests.helpers import NOTEBOOK_OFFERS, quote_of
from tests.hostile.harness import (
    CountingSigner,
    CountingWallet,
    HostileService,
    RawClassic,
    classic_static,
    classic_then,
    classic_token68,
    release,
    run,
    run_many,
    v02_then,
    x402,
    x402_requirement,
)

RATE = 100_000.0  # USD per BTC: $0.01 = 10 sat
PAID = "paid 10 sat + 1 sat fee, ledger #1"  # a 10 sat invoice with the counting wallet's 1 sat fee


def rows(ledger: Path) -> list[Any]:
    with SQLiteLedger(ledger) as lg:
        return lg.receipts()


# -- 1. the invoice must be the one the token commits to ----------------------------------------------
@dataclass(frozen=True)
class Binding:
    name: str
    route: Callable[[HostileService], str]
    status: int | None
    error: type[BaseException] | None
    text: str
    wallet_calls: int
    spent_msat: int


BINDINGS = [
    Binding("macaroon commits to this invoice", lambda s: s.classic("/bound"), 200, None, "", 1, 11_000),
    Binding("macaroon commits to another invoice", lambda s: s.classic("/unbound", bind_hash="ab" * 32), None,
            InvoiceError, "but the macaroon commits to abababababababab", 0, 0),
    Binding("token68 (not a macaroon), honoured", lambda s: classic_token68(s, "/opaque"), 200, None, "", 1, 11_000),
    Binding("token68 (not a macaroon), paid but refused", lambda s: classic_token68(s, "/opaque-no", honour=False),
            None, PaymentNotHonored, "still answers 402", 1, 11_000),
]


@pytest.mark.parametrize("case", BINDINGS, ids=lambda c: c.name)
def test_classic_invoice_must_be_the_one_the_token_commits_to(case: Binding, svc: HostileService,
                                                             wallet: CountingWallet, ledger: Path, mode: str) -> None:
    out = run(mode, case.route(svc), wallet=wallet, ledger=ledger, policy=httpay.Policy(budget_sat=1_000))
    assert out.status == case.status
    assert out.wallet_calls == case.wallet_calls and out.spent_msat == case.spent_msat
    if case.error is None:
        assert out.error is None and [r.status for r in out.receipts] == [Status.SETTLED]
        return
    assert isinstance(out.error, case.error) and case.text in str(out.error)
    if isinstance(out.error, InvoiceError):
        assert out.error.check == "payment_hash" and out.receipts == []  # nothing reserved, nothing paid
    else:
        assert [r.status for r in out.receipts] == [Status.SETTLED]  # paid: the receipt is kept


# -- 3. one payment per token scope -------------------------------------------------------------------
@dataclass(frozen=True)
class Crowd:
    name: str
    route: Callable[[HostileService], str]
    n: int = 200
    clients: int = 1
    policy: dict[str, Any] = field(default_factory=lambda: {"budget_sat": 1_000})
    headers: dict[str, str] = field(default_factory=dict)  # sent on every request: the caller's own


OWN = {"Authorization": "Bearer my-service-account"}
CROWDS = [
    Crowd("fresh macaroon+invoice per 402 (Aperture)", lambda s: s.classic("/c")),
    Crowd("budget for exactly one payment", lambda s: s.classic("/c"), policy={"budget_sat": 20, "max_fee_msat": 1_000}),
    Crowd("one static challenge for all", lambda s: classic_static(s, "/static")),
    Crowd("two clients sharing only the ledger file", lambda s: s.classic("/c"), n=100, clients=2),
    Crowd("the caller's own Authorization on every request", lambda s: s.classic("/c"), headers=OWN),
    Crowd("the caller's own Authorization, two clients sharing only the ledger file", lambda s: s.classic("/c"),
          n=100, clients=2, headers=OWN),
]


@pytest.mark.parametrize("case", CROWDS, ids=lambda c: c.name)
def test_one_payment_per_token_scope(case: Crowd, svc: HostileService, wallet: CountingWallet, ledger: Path,
                                     mode: str) -> None:
    out = run_many(mode, case.route(svc), case.n, wallet=wallet, ledger=ledger, policy=httpay.Policy(**case.policy),
                   clients=case.clients, timeout=60, send={"headers": case.headers})
    assert out.errors == [] and out.statuses == [200] * case.n
    assert out.wallet_calls == 1 and [r.status for r in out.receipts] == [Status.SETTLED]
    assert out.spent_msat == 11_000


def test_a_prefix_scope_pays_once_per_folder(svc: HostileService, wallet: CountingWallet, ledger: Path,
                                            mode: str) -> None:
    a, b = svc.classic("/a/x"), svc.classic("/b/x")
    for url in (a, b, a, b):
        out = run(mode, url, wallet=wallet, ledger=ledger, policy=httpay.Policy(budget_sat=1_000), token_scope="prefix")
        assert out.error is None and out.status == 200
    assert out.wallet_calls == 2 and out.spent_msat == 22_000


# -- 5. one decision path: every approval surface against every limit --------------------------------------
CARD_ONLY = {"offer_id": "card_only", "title": "Card only", "description": "by card", "type": "top-up", "balance": 1,
             "amount": 1, "currency": "USD", "payment_methods": ["credit_card"]}
OFFERS = [*NOTEBOOK_OFFERS, CARD_ONLY]
CHEAP, MID, BIG = "offer_c668e0c0", "offer_97bf23f7", "offer_a896b13c"  # $0.01, $1.00, $4.99


@dataclass(frozen=True)
class Limit:
    name: str
    policy: dict[str, Any]
    pick: str
    rule: str | None           # None: the pick is paid
    text: str = ""
    asked: bool = True         # False: the first decision refuses, nobody is asked
    max_price_msat: int | None = None
    prespent_msat: int = 0


LIMITS = [
    Limit("max_price per request", {"budget_sat": 10_000}, BIG, "max_price",
          "above this request's price cap of 50 sat ($0.05)", max_price_msat=50_000),
    Limit("max_per_payment", {"max_per_payment_sat": 100}, MID, "max_per_payment", "per-payment limit of 100 sat ($0.10)"),
    Limit("budget with spent", {"budget_sat": 600}, MID, "budget", "100 sat ($0.10) of the total budget is left (500 sat ($0.50) spent)",
          prespent_msat=500_000),
    Limit("allowed hosts", {"allowed_hosts": ["elsewhere.example"]}, MID, "allowed_hosts", "not in the policy's allowed",
          asked=False),
    Limit("denied hosts", {"denied_hosts": ["127.0.0.1"]}, MID, "denied_host", "on the policy's denied hosts",
          asked=False),
    Limit("methods", {"budget_sat": 10_000}, "card_only", "methods", "no offer can be paid with lightning"),
    Limit("within every limit", {"budget_sat": 10_000}, MID, None),
]
SURFACES = ["hook", "queue", "dashboard"]


class Person:
    """Answers the first waiting approval in the queue (directly, or through the dashboard) with `pick`."""

    def __init__(self, surface: str, queue_path: Path, ledger: Path, pick: str) -> None:
        self.surface, self.queue_path, self.ledger, self.pick = surface, queue_path, ledger, pick
        self.stop = threading.Event()
        self.answered: list[int] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with ApprovalQueue(self.queue_path) as q:
            while not self.stop.wait(0.01):
                waiting = q.pending()
                if not waiting:
                    continue
                a = waiting[0]
                if self.surface == "queue":
                    q.decide(a.id, True, "alice", offer_id=self.pick)
                    self.answered.append(200)
                else:
                    app = create_app(self.ledger, approvals=self.queue_path)
                    with TestClient(app) as tc:
                        r = tc.post(f"/approvals/{a.id}/approve", data={"token": app.state.token, "offer_id": self.pick},
                                    headers={"accept": "application/json"})
                    self.answered.append(r.status_code)
                return

    def done(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)



def _prespend(ledger: Path, msat: int) -> None:
    if msat:
        with SQLiteLedger(ledger) as lg:
            r = lg.reserve(Intent(host="other.example", url="http://other.example/x", protocol="l402-v0.2",
                                  method="lightning", amount_msat=msat, payment_hash="cd" * 32))
            lg.settle(r.id, preimage="", fee_msat=0)


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("case", LIMITS, ids=lambda c: c.name)
def test_an_approved_pick_passes_every_limit(case: Limit, surface: str, svc: HostileService, wallet: CountingWallet,
                                             ledger: Path, tmp_path: Path, mode: str) -> None:
    url = svc.v02("/v02", offers=OFFERS)
    _prespend(ledger, case.prespent_msat)
    queue_path = tmp_path / "approvals.db"
    asked: list[httpay.Decision] = []
    person: Person | None = None
    queue: ApprovalQueue | None = None
    if surface == "hook":
        def hook(d: httpay.Decision) -> httpay.Offer:
            asked.append(d)
            return next(o for o in d.offers if o.offer_id == case.pick)
        approve: Any = hook
    else:
        queue = ApprovalQueue(queue_path, timeout_s=30)
        approve = queue if mode == "sync" else queue.aapprove
        person = Person(surface, queue_path, ledger, case.pick)
    policy = httpay.Policy(usd_per_btc=RATE, approve=approve, **case.policy)
    request = {"extensions": {MAX_PRICE_EXTENSION: case.max_price_msat}} if case.max_price_msat else None
    try:
        out = run(mode, url, wallet=wallet, ledger=ledger, policy=policy, request=request)
    finally:
        if person is not None:
            person.done()
    if surface == "hook":
        assert len(asked) == int(case.asked)
    else:
        assert queue is not None
        decided = queue.recent()
        assert [(a.status, a.chosen_offer_id) for a in decided] == ([("approved", case.pick)] if case.asked else [])
        assert person is not None and person.answered == ([200] if case.asked else [])
        queue.close()
    new_rows = [r for r in out.receipts if r.host != "other.example"]
    if case.rule is None:
        assert out.error is None and out.status == 200
        assert out.wallet_calls == 1 and [(r.status, r.offer_id) for r in new_rows] == [(Status.SETTLED, case.pick)]
        assert out.spent_msat == case.prespent_msat + 11_000
        return
    assert isinstance(out.error, PaymentRefused) and out.error.rule == case.rule, out.error
    assert case.text in str(out.error)
    assert out.wallet_calls == 0 and new_rows == [] and out.spent_msat == case.prespent_msat
    assert svc.hits.get("/pay", 0) == 0  # not even an invoice was asked for


def test_the_queue_refuses_an_offer_the_service_did_not_make(tmp_path: Path) -> None:
    offers = httpay.PaymentOffers.from_dict({"version": "0.2.2", "payment_request_url": "http://x/pay",
                                             "offers": OFFERS})
    d = quote_of(offers, "http://x/", "x", usd_per_btc=RATE)
    with ApprovalQueue(tmp_path / "q.db") as q:
        a = q.add(d)
        with pytest.raises(ApprovalError, match="has no offer 'nope'"):
            q.decide(a.id, True, "alice", offer_id="nope")
        with pytest.raises(ApprovalError, match="only when approving"):
            q.decide(a.id, False, "alice", offer_id=MID)
        assert q.get(a.id).status == "waiting"
        assert [c.offer_id for c in a.choices] == [o["offer_id"] for o in OFFERS]


X402_LIMITS = [
    Limit("max_price per request", {"budget_sat": 10_000}, "big", "max_price",
          "above this request's price cap of 50 sat ($0.05)", max_price_msat=50_000),
    Limit("max_per_payment", {"max_per_payment_sat": 100}, "big", "max_per_payment", "per-payment limit of 100 sat ($0.10)"),
    Limit("budget with spent", {"budget_sat": 600, "max_per_payment_sat": 10_000}, "big", "budget",
          "of the total budget is left (500 sat ($0.50) spent)", prespent_msat=500_000),
    Limit("denied hosts", {"denied_hosts": ["127.0.0.1"]}, "big", "denied_host", "on the policy's denied hosts",
          asked=False),
    Limit("within every limit", {"budget_sat": 10_000, "max_per_payment_sat": 10_000}, "big", None),
]


def _x402_offer_id(index: int, amounts: tuple[str, ...]) -> str:
    from httpay.protocols import x402 as x402_protocol

    ch = x402_protocol.X402Challenge.from_dict({"x402Version": 2, "accepts": [x402_requirement(a) for a in amounts]},
                                               default_version=2)
    return ch.to_offers()[index].offer_id


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("case", X402_LIMITS, ids=lambda c: c.name)
def test_an_approved_x402_pick_passes_the_same_decision(case: Limit, surface: str, svc: HostileService, ledger: Path,
                                                        tmp_path: Path, mode: str) -> None:
    amounts = ("10000", "4990000")  # $0.01 and $4.99 in USDC
    url = x402(svc, "/x402", amounts=amounts)
    big = _x402_offer_id(1, amounts)
    _prespend(ledger, case.prespent_msat)
    signer = CountingSigner()
    asked: list[httpay.Decision] = []
    person: Person | None = None
    queue: ApprovalQueue | None = None
    if surface == "hook":
        def hook(d: httpay.Decision) -> httpay.Offer:
            asked.append(d)
            return next(o for o in d.offers if o.offer_id == big)
        approve: Any = hook
    else:
        queue = ApprovalQueue(tmp_path / "approvals.db", timeout_s=30)
        approve = queue if mode == "sync" else queue.aapprove
        person = Person(surface, tmp_path / "approvals.db", ledger, big)
    policy = httpay.Policy(usd_per_btc=RATE, methods=["x402"], approve=approve, **case.policy)
    request = {"extensions": {MAX_PRICE_EXTENSION: case.max_price_msat}} if case.max_price_msat else None
    try:
        out = run(mode, url, wallet=None, ledger=ledger, policy=policy, request=request, x402_signer=signer)
    finally:
        if person is not None:
            person.done()
    if queue is not None:
        assert [(a.status, a.chosen_offer_id) for a in queue.recent()] == ([("approved", big)] if case.asked else [])
        queue.close()
    else:
        assert len(asked) == int(case.asked)
    new_rows = [r for r in out.receipts if r.host != "other.example"]
    if case.rule is None:
        assert out.error is None and out.status == 200 and len(signer.signed) == 1
        assert signer.signed[0]["value"] == 4_990_000 and [r.status for r in new_rows] == [Status.SETTLED]
        assert out.spent_msat == case.prespent_msat + 4_990_000
        return
    assert isinstance(out.error, PaymentRefused) and out.error.rule == case.rule, out.error
    assert case.text in str(out.error)
    assert signer.signed == [] and new_rows == [] and out.spent_msat == case.prespent_msat


# -- 7. after paying, every failure says it paid --------------------------------------------------------
@dataclass(frozen=True)
class AfterPaid:
    name: str
    route: Callable[[HostileService], Iterator[str]] | Callable[[HostileService], str]
    cause: str                       # what the message names
    status: int | None = None        # the failed answer's status, when there was one
    timeout: float | None = None


def _raw(behaviour: str) -> Callable[[HostileService], Iterator[str]]:
    def route(svc: HostileService) -> Iterator[str]:
        raw = RawClassic(svc, behaviour)
        try:
            yield raw.url
        finally:
            raw.close()
    return route


AFTER_PAID = [
    AfterPaid("classic: no answer", lambda s: classic_then(s, "/hang", "hang"), "did not answer (ReadTimeout", timeout=0.5),
    AfterPaid("classic: 503", lambda s: classic_then(s, "/503", "503"), "answered HTTP 503", status=503),
    AfterPaid("classic: connection reset", _raw("reset"), "did not answer ("),
    AfterPaid("classic: body breaks off", _raw("short"), "did not answer (RemoteProtocolError"),
    # it answered, in bytes that are not HTTP: said as what it is, not as silence
    AfterPaid("classic: not HTTP", _raw("garbage"), "the service answered, but not in HTTP httpay can read"),
    AfterPaid("v0.2: no answer", lambda s: v02_then(s, "/v", "hang"), "did not answer (ReadTimeout", timeout=0.5),
    AfterPaid("v0.2: 500", lambda s: v02_then(s, "/v", "500"), "answered HTTP 500", status=500),
]


@pytest.mark.parametrize("case", AFTER_PAID, ids=lambda c: c.name)
def test_after_paying_every_failure_says_it_paid(case: AfterPaid, svc: HostileService, wallet: CountingWallet,
                                                 ledger: Path, mode: str) -> None:
    made = case.route(svc)
    gen = made if not isinstance(made, str) else iter([made])
    url = next(gen)
    kwargs: dict[str, Any] = {"timeout": httpx.Timeout(10, read=case.timeout)} if case.timeout else {}
    try:
        out = run(mode, url, wallet=wallet, ledger=ledger, policy=httpay.Policy(budget_sat=1_000, usd_per_btc=RATE),
                  **kwargs)
    finally:
        release(svc)
        for _ in gen:
            pass
    err = out.error
    assert isinstance(err, PaidRequestFailed) and not isinstance(err, httpx.HTTPError), repr(err)
    text = str(err)
    assert text.startswith(PAID) and case.cause in text and "the receipt is kept" in text
    assert err.receipt.id == 1 and err.receipt.status is Status.SETTLED
    assert (err.response.status_code if err.response is not None else None) == case.status
    assert out.wallet_calls == 1 and out.spent_msat == 11_000
    [row] = out.receipts
    assert row.status is Status.SETTLED and "paid, then" in (row.reason or "")
    assert isinstance(httpay.PaidRequestFailed, type) and httpay.PaidRequestFailed is PaidRequestFailed


X402_AFTER = [
    ("no answer", "hang", Status.PENDING, "did not answer (ReadTimeout", None),
    ("500 with a success receipt", "500_settled", Status.SETTLED, "answered HTTP 500", 500),
    ("500 without a receipt", "500", Status.PENDING, "answered HTTP 500", 500),
]


@pytest.mark.parametrize(("name", "answer", "row_status", "cause", "status"), X402_AFTER, ids=[c[0] for c in X402_AFTER])
def test_after_an_x402_payment_every_failure_says_it_paid(name: str, answer: str, row_status: Status, cause: str,
                                                         status: int | None, svc: HostileService, ledger: Path,
                                                         mode: str) -> None:
    url = x402(svc, "/x402", answer=answer)
    signer = CountingSigner()
    try:
        out = run(mode, url, wallet=None, ledger=ledger, x402_signer=signer, timeout=httpx.Timeout(10, read=0.5),
                  policy=httpay.Policy(usd_per_btc=RATE, methods=["x402"], budget_sat=1_000))
    finally:
        release(svc)
    err = out.error
    assert isinstance(err, PaidRequestFailed), repr(err)
    assert isinstance(err, PaymentOutcomeUnknown) == (row_status is Status.PENDING)  # pending: it may have settled
    text = str(err)
    assert "0.01 USDC on eip155:84532, ledger #1" in text and cause in text and "the receipt is kept" in text
    assert (err.response.status_code if err.response is not None else None) == status
    assert len(signer.signed) == 1 and svc.hits.get("x402-paid") == 1  # sent once, never again
    [row] = out.receipts
    assert row.status is row_status and row.amount_msat == 10_000 and err.receipt.id == row.id


ANSWERS = [
    ("a forged, cheaper copy of an offer", lambda d: dataclasses.replace(d.offers[1], price=httpay.Money(0, d.offers[1].currency)),
     "picked an offer the service did not make"),
    ("no", lambda d: False, "refused by the approver"),
    ("nothing", lambda d: None, "refused by the approver"),
]


@pytest.mark.parametrize(("name", "answer", "text"), ANSWERS, ids=[a[0] for a in ANSWERS])
def test_an_approver_cannot_pay_what_was_not_offered(name: str, answer: Callable[[httpay.Decision], Any], text: str,
                                                     svc: HostileService, wallet: CountingWallet, ledger: Path,
                                                     mode: str) -> None:
    out = run(mode, svc.v02("/v02", offers=OFFERS), wallet=wallet, ledger=ledger,
              policy=httpay.Policy(usd_per_btc=RATE, budget_sat=10_000, approve=answer))
    assert isinstance(out.error, PaymentRefused) and out.error.rule == "approval" and text in str(out.error)
    assert out.wallet_calls == 0 and out.receipts == [] and out.spent_msat == 0 and svc.hits.get("/pay", 0) == 0


def test_a_402_after_a_redirect_to_another_host_keeps_the_first_hosts_token(svc: HostileService, wallet: CountingWallet,
                                                                           ledger: Path, mode: str) -> None:
    """httpx drops Authorization on a redirect to another origin; that origin's 402 must not evict the
    token of the host that redirected (nor see it), and each host is paid once."""
    from starlette.responses import RedirectResponse

    from tests.hostile.harness import hostile_service

    with hostile_service() as other:
        other.node = svc.node  # one Lightning network: the wallet reaches both services' invoices
        target = other.classic("/there")

        async def go(request: Any) -> Any:
            if svc.authorized(request):
                assert "authorization" in request.headers
                return RedirectResponse(target, status_code=302)
            return svc.classic_challenge(10)
        url = svc.route("/go", go)
        seen: list[str] = []
        for _ in range(3):
            out = run(mode, url, wallet=wallet, ledger=ledger, policy=httpay.Policy(budget_sat=1_000),
                      follow_redirects=True)
            assert out.error is None and out.status == 200, out.error
            seen.append(str(out.response.url) if out.response is not None else "")
    assert seen == [target] * 3
    assert out.wallet_calls == 2 and out.spent_msat == 22_000  # one token per host, each kept
    assert other.issued == 1 and svc.issued == 1


def aperture_services(svc: HostileService, *names: str) -> dict[str, str]:
    """One host fronting several services, as Aperture does: each path's 402 mints a token for its own
    service (`services=NAME:0`), and serves only a token for that service. A name starting "plain"
    mints tokens that name no service (and serves any of its own)."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    from httpay.protocols import macaroons
    from httpay.protocols.l402_classic import parse_credential

    def gate(name: str) -> Any:
        async def handler(request: Request) -> Response:
            header = request.headers.get("authorization", "")
            plain = name.startswith("plain")
            if svc.authorized(request) and all(
                    (not macaroons.decode(m).services) if plain else f"services={name}:0" in macaroons.decode(m).caveats
                    for m in parse_credential(header).macaroons):
                return JSONResponse({"served": name})
            bolt11, payment_hash = svc.node.mint(10_000)
            with svc._lock:
                svc.issued += 1
            mac = macaroons.mint(svc.root_key, payment_hash, caveats=[] if plain else [f"services={name}:0"])
            resp = JSONResponse({}, status_code=402)
            resp.headers.append("WWW-Authenticate", f'L402 macaroon="{mac}", invoice="{bolt11}"')
            return resp
        return handler
    return {name: svc.route(f"/service{i}", gate(name)) for i, name in enumerate(names)}  # any name: a URL of its own


def test_a_host_fronting_two_services_is_paid_once_per_service(svc: HostileService, wallet: CountingWallet,
                                                              ledger: Path, mode: str) -> None:
    """Requests alternating between two services of one host (the default token scope is the host):
    each service's token is kept beside the other's, so a, b, a, b... pays twice, never once per
    request; a restart (a new client on the same ledger) presents them too, paying nothing."""
    urls = aperture_services(svc, "alpha", "beta")
    order = ["alpha", "beta"] * 3
    for round_ in range(2):  # the second round: a new client, as after a restart
        for name in order:
            out = run(mode, urls[name], wallet=wallet, ledger=ledger)
            assert out.error is None and out.status == 200, out.error
            assert out.response is not None and out.response.json() == {"served": name}
        assert out.wallet_calls == 2, f"round {round_}: {out.wallet_calls} payments for two services"
    with SQLiteLedger(ledger) as lg:
        assert sorted(lg.token_scopes()) == [f"{svc.url}#alpha", f"{svc.url}#beta"]


def test_a_host_with_a_service_and_a_plain_path_is_paid_once_for_each(svc: HostileService, wallet: CountingWallet,
                                                                     ledger: Path) -> None:
    """One path behind an Aperture service, one whose tokens name none: each kind is bought once and
    presented where it belongs (the plain path's 402 looks for the scope's own token, never the
    service's again), in one client and after a restart."""
    urls = aperture_services(svc, "alpha", "plain")
    with httpay.Client(wallet=wallet, ledger=ledger) as c:
        for name in ["alpha", "plain"] * 3:
            r = c.get(urls[name])
            assert r.status_code == 200 and r.json() == {"served": name}
    for name in ["plain", "alpha"]:
        out = run("sync", urls[name], wallet=wallet, ledger=ledger)
        assert out.error is None and out.status == 200, out.error
    assert len(wallet.calls) == 2
    with SQLiteLedger(ledger) as lg:
        assert sorted(lg.token_scopes()) == [svc.url, f"{svc.url}#alpha"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_services_named_with_a_nul_are_paid_once_each_on_every_backend(
        svc: HostileService, wallet: CountingWallet, tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    """Two Aperture services whose names hold a NUL (server text, which PostgreSQL's text cannot
    hold): each token is kept, apart from the other's, under the name as a view shows it, and found
    again after a restart, on SQLite and PostgreSQL alike: two payments, every request served."""
    urls = aperture_services(svc, "svc\x00a", "svc\x00b")
    ledger = str(tmp_path / "l.db") if backend == "sqlite" else str(request.getfixturevalue("clean_postgres_url"))
    for _ in range(2):  # the second round: a new client, as after a restart
        with httpay.Client(wallet=wallet, ledger=ledger) as c:
            for name in ["svc\x00a", "svc\x00b"] * 2:
                r = c.get(urls[name])
                assert r.status_code == 200 and r.json() == {"served": name}
    assert len(wallet.calls) == 2
    with httpay.open_ledger(ledger) as lg:
        kinds = sorted(lg.token_scopes())
    # kept under a readable head and a digest of the whole name: never a raw NUL, never two names in one
    assert [k.rpartition("~")[0] for k in kinds] == [f"{svc.url}#svc\\x00a", f"{svc.url}#svc\\x00b"], kinds
    assert all("\x00" not in k for k in kinds)


def test_services_alike_in_their_first_200_characters_keep_a_token_each(svc: HostileService, wallet: CountingWallet,
                                                                       ledger: Path) -> None:
    """Service names are server text a view cuts short; two that differ only past the cut (or a NUL
    and its escape typed out) are two services: one payment each, however often the client switches."""
    long_a, long_b = "s" * 250 + "a", "s" * 250 + "b"
    urls = aperture_services(svc, long_a, long_b, "x\\x00", "x\x00")
    with httpay.Client(wallet=wallet, ledger=ledger) as c:
        for name in [long_a, long_b, "x\\x00", "x\x00"] * 2:
            r = c.get(urls[name])
            assert r.status_code == 200 and r.json() == {"served": name}
    assert len(wallet.calls) == 4


def test_two_clients_meeting_a_new_service_at_once_pay_once_and_both_are_served(
        svc: HostileService, wallet: CountingWallet, ledger: Path) -> None:
    """Both hold service alpha's token; both ask beta together. One pays, the other uses that payment:
    its retry looks for beta's token (the kind the payment was for), not alpha's, and is served;
    nobody is told the service would not honour a payment."""
    urls = aperture_services(svc, "alpha", "beta")
    assert run("sync", urls["alpha"], wallet=wallet, ledger=ledger).status == 200
    done = run_many("sync", urls["beta"], 2, wallet=wallet, ledger=ledger, clients=2)
    assert done.errors == [] and done.statuses == [200, 200], done.errors
    assert done.wallet_calls == 2 and all(r.status is Status.SETTLED and not r.reason for r in done.receipts)


def test_policy_with_offer_re_decides_on_the_decisions_own_inputs() -> None:
    """The public re-decision keeps this request's cap and the spent total the first decision saw."""
    offers = httpay.PaymentOffers.from_dict({"version": "0.2.2", "payment_request_url": "http://x/pay",
                                             "offers": NOTEBOOK_OFFERS})
    policy = httpay.Policy(usd_per_btc=RATE, budget_sat=1_500)
    challenge = to_challenge(offers, "http://x/")
    first = quote(challenge, policy, url="http://x/", host="x", usd_per_btc=None, max_price_msat=50_000, spent_msat=0)
    with pytest.raises(PaymentRefused, match="price cap of 50 sat") as capped:
        requote(first, policy, offers.get(BIG))
    spent = quote(challenge, policy, url="http://x/", host="x", usd_per_btc=None, spent_msat=1_000_000)
    with pytest.raises(PaymentRefused, match=r"500 sat \(\$0.50\) of the total budget is left") as budget:
        requote(spent, policy, offers.get(MID))
    assert (capped.value.rule, budget.value.rule) == ("max_price", "budget")
    assert requote(first, policy, offers.get(CHEAP)).offer.offer_id == CHEAP


def test_a_queue_made_by_an_older_httpay_is_upgraded_in_place(tmp_path: Path) -> None:
    """Its rows carry no deadline or heartbeat: one asked just now may be answered, one older than
    the 300 s its askers waited by default is expired (nobody could still be waiting for it)."""
    import sqlite3
    import time

    from httpay.errors import ApprovalExpired

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE approvals (id INTEGER PRIMARY KEY AUTOINCREMENT, status TEXT NOT NULL, created_at REAL NOT NULL, "
            "decided_at REAL, host TEXT NOT NULL, url TEXT NOT NULL, offer_id TEXT, offer_title TEXT, offer_price TEXT, "
            "price_msat INTEGER, method TEXT, usd_per_btc REAL, decided_by TEXT, reason TEXT);"
            "INSERT INTO approvals (status, created_at, host, url, offer_id) VALUES ('waiting', 1, 'x', 'http://x/', 'o0');"
            f"INSERT INTO approvals (status, created_at, host, url, offer_id) VALUES ('waiting', {time.time()}, 'x', "
            "'http://x/', 'o1');"
        )
    with ApprovalQueue(path) as q:
        [old] = q.pending()
        assert old.choices == () and old.chosen_offer_id is None and old.offer_id == "o1"
        assert old.fee_cap_msat is None and "fees" not in old.price  # not known: not made up
        with pytest.raises(ApprovalError, match="has no offer"):
            q.decide(old.id, True, "alice", offer_id="o2")
        assert q.decide(old.id, True, "alice").status == "approved"
        with pytest.raises(ApprovalExpired, match="approval #1 is expired"):
            q.decide(1, True, "alice")


def test_clients_sharing_one_payer_share_its_ledger_and_tokens(svc: HostileService, wallet: CountingWallet,
                                                              ledger: Path) -> None:
    """`Client(payer=...)` and `AsyncClient(payer=...)`: one payer for several clients, so a token one
    bought serves the other, and closing a client leaves the shared ledger open. A payer and settings
    together, or anything but a Payer, is a ConfigError naming them."""
    import asyncio

    from httpay.core.payer import Payer

    url = svc.classic("/shared")
    payer = Payer.create(wallet=wallet, ledger=ledger, reconcile_grace_s=None)
    with httpay.Client(payer=payer) as first:
        assert first.get(url).status_code == 200

    async def other() -> int:
        async with httpay.AsyncClient(payer=payer) as c:
            return (await c.get(url)).status_code
    assert asyncio.run(other()) == 200
    assert len(wallet.calls) == 1 and len(payer.ledger.receipts()) == 1  # still open after both closed
    with pytest.raises(httpay.ConfigError, match="payer= or its settings, not both .*policy="):
        httpay.Client(payer=payer, policy=httpay.Policy())
    with pytest.raises(httpay.ConfigError, match="payer= must be an httpay.Payer"):
        httpay.Client(payer="mine")
    payer.ledger.close()
