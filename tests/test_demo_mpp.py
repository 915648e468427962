"""The demo service's MPP routes answered with hand-built credentials (httpay.protocols.mpp, eth-account,
payments on the demo network): the lightning charge, the evm charge, Accept-Payment ranking, the
Aperture-style route's three schemes, and the lightning session with its SSE top-up."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from httpay.demo.network import DemoNetwork, WalletRecord
from httpay.demo.runner import RunningServer
from httpay.protocols import mpp as wire
from httpay.signers import EvmSigner
from tests.fixtures.mpp_servers import evm_authorization, pympp_nonce, spec_nonce


@pytest.fixture
def client(demo: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo.url, timeout=10) as c:
        yield c


def net(demo: RunningServer) -> DemoNetwork:
    network: DemoNetwork = demo.app.state.demo.network
    return network


def secret(demo: RunningServer) -> bytes:
    value: bytes = demo.app.state.mpp.secret
    return value


def only(response: httpx.Response, kind: str | None = None) -> wire.MppChallenge:
    """The one Payment challenge of a 402 (of `kind` when given), after checking the 402's shape."""
    assert response.status_code == 402, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"].startswith("application/problem+json")
    found = wire.parse(402, response.headers)
    assert found is not None
    chosen = [c for c in found if kind is None or c.kind == kind]
    assert len(chosen) == 1
    return chosen[0]


def problem(response: httpx.Response) -> str:
    found = wire.read_problem(response.content)
    assert found is not None, response.text
    return found.kind


def pay(demo: RunningServer, bolt11: str, wallet: WalletRecord | None = None) -> str:
    """Pay on the demo network; the preimage."""
    payer = wallet or net(demo).create_wallet(1_000)
    return net(demo).pay(payer.key, bolt11).preimage


# -- the lightning charge --------------------------------------------------------------------------


def test_lightning_charge_402_is_a_correct_challenge(client: httpx.Client, demo: RunningServer) -> None:
    first = client.get("/mpp/ticker/AAPL")
    ch = only(first, "lightning/charge")
    assert problem(first) == "payment-required" and first.json()["challengeId"] == ch.id
    assert ch.id == wire.challenge_id(secret(demo), ch.params)  # the spec's HMAC id, stateless
    assert ch.realm == "127.0.0.1" and ch.expires is not None
    assert timedelta(minutes=4) < ch.expires - datetime.now(UTC) <= timedelta(minutes=5)
    charge = wire.LightningCharge.from_challenge(ch)
    from httpay.lightning import decode_invoice

    wire.check_charge_invoice(charge, decode_invoice(charge.invoice), expires=ch.expires)
    assert (charge.amount_sat, charge.network) == (10, "regtest")
    again = wire.LightningCharge.from_challenge(only(client.get("/mpp/ticker/AAPL")))
    assert again.payment_hash != charge.payment_hash  # a fresh invoice per challenge


def test_lightning_charge_paid_once(client: httpx.Client, demo: RunningServer) -> None:
    ch = only(client.get("/mpp/ticker/AAPL"))
    charge = wire.LightningCharge.from_challenge(ch)
    credential = ch.credential(wire.LightningCharge.payload(pay(demo, charge.invoice)))
    ok = client.get("/mpp/ticker/AAPL", headers={"Authorization": credential})
    assert ok.status_code == 200 and ok.json()["symbol"] == "AAPL" and ok.json()["demo"] is True
    assert ok.headers["cache-control"] == "private"
    receipt = wire.read_receipt(ok.headers)
    assert receipt is not None and receipt.success
    assert (receipt.method, receipt.reference, receipt.challenge_id) == ("lightning", charge.payment_hash, ch.id)
    replay = client.get("/mpp/ticker/AAPL", headers={"Authorization": credential})
    assert problem(replay) == "invalid-challenge" and only(replay).id != ch.id  # refused, a fresh challenge beside it
    assert demo.app.state.mpp.paid == 1


def test_payment_authorization_header_and_idempotency_key(client: httpx.Client, demo: RunningServer) -> None:
    ch = only(client.get("/mpp/ticker/MSFT"))
    credential = ch.credential({"preimage": pay(demo, wire.LightningCharge.from_challenge(ch).invoice)})
    headers = {"Payment-Authorization": credential, "Idempotency-Key": "k-1"}
    first = client.get("/mpp/ticker/MSFT", headers=headers)
    second = client.get("/mpp/ticker/MSFT", headers=headers)  # the application's own retry
    assert first.status_code == second.status_code == 200 and first.content == second.content
    assert second.headers["payment-receipt"] == first.headers["payment-receipt"]
    assert demo.app.state.mpp.paid == 1
    other_key = client.get("/mpp/ticker/MSFT", headers={**headers, "Idempotency-Key": "k-2"})
    assert problem(other_key) == "invalid-challenge"


def _altered(ch: wire.MppChallenge, **changes: str) -> wire.MppChallenge:
    params = {**ch.params, **changes}
    return wire.MppChallenge(id=params["id"], realm=params["realm"], method=params["method"], intent=params["intent"],
                             request={}, params=params)


def _expired(demo: RunningServer, ch: wire.MppChallenge) -> wire.MppChallenge:
    params = wire.make_challenge(secret(demo), realm=ch.realm, method="lightning", intent="charge",
                                 request=dict(ch.request), expires=datetime.now(UTC) - timedelta(seconds=1))
    return _altered(ch, **params)


# (name, how the credential is made from (demo, challenge, preimage), status, problem kind)
REFUSALS: list[Any] = [
    ("garbage", lambda d, ch, pre: "Payment !!!", 402, "malformed-credential"),
    ("no payload", lambda d, ch, pre: "Payment " + wire.b64url_encode(json.dumps({"challenge": ch.echo()}).encode()),
     402, "malformed-credential"),
    ("altered request", lambda d, ch, pre: _altered(ch, request=wire.encode_json({**ch.request, "amount": "1"}))
     .credential({"preimage": pre}), 402, "invalid-challenge"),
    ("other realm", lambda d, ch, pre: _altered(ch, realm="evil.example").credential({"preimage": pre}),
     402, "invalid-challenge"),
    ("wrong preimage", lambda d, ch, pre: ch.credential({"preimage": "00" * 32}), 402, "lightning/invalid-preimage"),
    ("short preimage", lambda d, ch, pre: ch.credential({"preimage": "abcd"}), 402, "lightning/malformed-credential"),
    ("expired", lambda d, ch, pre: _expired(d, ch).credential({"preimage": pre}), 402, "payment-expired"),
    ("evm on lightning", lambda d, ch, pre: _altered(ch, **wire.make_challenge(
        secret(d), realm=ch.realm, method="evm", intent="charge", request={"amount": "1"},
        expires=datetime.now(UTC) + timedelta(minutes=1))).credential({"type": "authorization"}), 400, "method-unsupported"),
]


@pytest.mark.parametrize(("name", "make", "status", "kind"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_lightning_charge_refusals(client: httpx.Client, demo: RunningServer, name: str, make: Any, status: int,
                                  kind: str) -> None:
    ch = only(client.get("/mpp/ticker/AAPL"))
    preimage = pay(demo, wire.LightningCharge.from_challenge(ch).invoice)
    refused = client.get("/mpp/ticker/AAPL", headers={"Authorization": make(demo, ch, preimage)})
    assert refused.status_code == status and problem(refused) == kind
    if status == 402:
        assert only(refused).id != ch.id  # with a fresh challenge to pay instead
    assert demo.app.state.mpp.paid == 0
    assert preimage not in refused.text


def test_unknown_ticker_is_404_before_any_challenge(client: httpx.Client, demo: RunningServer) -> None:
    assert client.get("/mpp/ticker/NOPE").status_code == 404 and demo.app.state.mpp.issued == 0


# -- the evm charge --------------------------------------------------------------------------------


@pytest.mark.parametrize(("nonce", "value", "status", "kind"), [
    pytest.param(spec_nonce, None, 200, None, id="spec-hash"),
    pytest.param(pympp_nonce, None, 200, None, id="pympp-json-hash-accepted-for-its-client"),
    pytest.param(lambda ch: "0x" + "11" * 32, None, 402, "verification-failed", id="unbound-nonce"),
    pytest.param(spec_nonce, "9999", 402, "payment-insufficient", id="short-value"),
])
def test_evm_charge(client: httpx.Client, demo: RunningServer, nonce: Any, value: str | None, status: int,
                    kind: str | None) -> None:
    ch = only(client.get("/mpp/evm/ticker/AAPL"), "evm/charge")
    assert ch.request["methodDetails"] == {"chainId": 84532, "credentialTypes": ["authorization"], "decimals": 6}
    signer = EvmSigner.create()
    payload = evm_authorization(signer, ch, nonce=nonce(ch), value=value)
    answer = client.get("/mpp/evm/ticker/AAPL", headers={"Authorization": ch.credential(payload)})
    assert answer.status_code == status, answer.text
    settled = demo.app.state.mpp.evm_settled
    if kind:
        assert problem(answer) == kind and settled == []
        return
    receipt = wire.read_receipt(answer.headers)
    assert receipt is not None and receipt.method == "evm" and receipt.challenge_id == ch.id
    assert [(s["from"], s["value"], s["nonce"]) for s in settled] == [(signer.address, "10000", nonce(ch))]
    replay = client.get("/mpp/evm/ticker/AAPL", headers={"Authorization": ch.credential(payload)})
    assert problem(replay) == "invalid-challenge" and len(settled) == 1


def test_evm_charge_signed_by_another_key_is_refused(client: httpx.Client, demo: RunningServer) -> None:
    ch = only(client.get("/mpp/evm/ticker/AAPL"))
    payload = evm_authorization(EvmSigner.create(), ch, nonce=spec_nonce(ch))
    payload["from"] = EvmSigner.create().address
    answer = client.get("/mpp/evm/ticker/AAPL", headers={"Authorization": ch.credential(payload)})
    assert problem(answer) == "verification-failed" and demo.app.state.mpp.evm_settled == []


@pytest.mark.parametrize(("accept", "kinds"), [
    (None, ["lightning/charge", "evm/charge"]),
    ("evm/charge, lightning/charge;q=0.5", ["evm/charge", "lightning/charge"]),
    ("lightning/*;q=0, */*", ["evm/charge"]),
    ("evm/*", ["evm/charge"]),  # what is not named is not wanted
    ("*/session", ["lightning/charge", "evm/charge"]),  # rules everything out: ignored
])
def test_accept_payment_ranks_and_filters(client: httpx.Client, accept: str | None, kinds: list[str]) -> None:
    response = client.get("/mpp/both/ticker/AAPL", headers={"Accept-Payment": accept} if accept else {})
    found = wire.parse(402, response.headers)
    assert found is not None and [c.kind for c in found] == kinds


# -- the Aperture-style route ----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["LSAT", "L402", "Payment"])
def test_aperture_route_is_bought_by_any_of_its_three_schemes(client: httpx.Client, demo: RunningServer,
                                                              scheme: str) -> None:
    from httpay.protocols.www_authenticate import header_values, parse_challenges

    first = client.get("/aperture/ticker/AAPL")
    assert first.status_code == 402
    challenges = parse_challenges(header_values(first.headers, "www-authenticate"))
    assert [c.scheme for c in challenges] == ["LSAT", "L402", "Payment"]
    lsat, l402, _ = challenges
    charge = wire.LightningCharge.from_challenge(only(first))
    assert lsat.params["invoice"] == l402.params["invoice"] == charge.invoice  # one price, one invoice
    preimage = pay(demo, charge.invoice)
    if scheme == "Payment":
        header = only(first).credential({"preimage": preimage})
    else:
        header = f"{scheme} {(lsat if scheme == 'LSAT' else l402).params['macaroon']}:{preimage}"
    ok = client.get("/aperture/ticker/AAPL", headers={"Authorization": header})
    assert ok.status_code == 200 and ok.json()["symbol"] == "AAPL"
    assert (wire.read_receipt(ok.headers) is not None) is (scheme == "Payment")


def test_aperture_route_refuses_an_unpaid_preimage(client: httpx.Client) -> None:
    first = client.get("/aperture/ticker/AAPL")
    refused = client.get("/aperture/ticker/AAPL", headers={"Authorization": only(first).credential({"preimage": "00" * 32})})
    assert problem(refused) == "lightning/invalid-preimage"
    assert len(parse_all(refused)) == 3


def parse_all(response: httpx.Response) -> list[Any]:
    from httpay.protocols.www_authenticate import header_values, parse_challenges

    return parse_challenges(header_values(response.headers, "www-authenticate"))


# -- the lightning session -------------------------------------------------------------------------


class SessionPayer:
    """A hand-built session client: pays the deposit from a demo wallet, refunds to its own return invoice."""

    def __init__(self, demo: RunningServer, client: httpx.Client, path: str) -> None:
        self.demo, self.client, self.path = demo, client, path
        self.wallet = net(demo).create_wallet(1_000)
        self.return_invoice = net(demo).create_invoice(None, "refund", payee=self.wallet.wallet_id).bolt11
        self.challenge: wire.MppChallenge | None = None
        self.preimage = ""
        self.session_id = ""

    def fresh(self) -> wire.MppChallenge:
        ch = only(self.client.get(self.path), "lightning/session")
        req = ch.request
        assert req["currency"] == "sat" and req["amount"] == "2" and req["depositAmount"] == "20"
        return ch

    def open(self) -> httpx.Response:
        self.challenge = self.fresh()
        self.preimage = pay(self.demo, self.challenge.request["depositInvoice"], self.wallet)
        self.session_id = self.challenge.request["paymentHash"]
        assert hashlib.sha256(bytes.fromhex(self.preimage)).hexdigest() == self.session_id
        return self.send({"action": "open", "preimage": self.preimage, "returnInvoice": self.return_invoice})

    def send(self, payload: dict[str, str], challenge: wire.MppChallenge | None = None, path: str | None = None,
             **kwargs: Any) -> httpx.Response:
        ch = challenge or self.challenge
        assert ch is not None
        return self.client.get(path or self.path, headers={"Authorization": ch.credential(payload)}, **kwargs)

    def bearer(self) -> httpx.Response:
        return self.send({"action": "bearer", "sessionId": self.session_id, "preimage": self.preimage})

    def top_up(self) -> httpx.Response:
        fresh = self.fresh()
        pre = pay(self.demo, fresh.request["depositInvoice"], self.wallet)
        return self.send({"action": "topUp", "sessionId": self.session_id, "topUpPreimage": pre}, fresh)

    def close(self) -> httpx.Response:
        return self.send({"action": "close", "sessionId": self.session_id, "preimage": self.preimage})


def test_session_open_bearer_top_up_close_with_refund(client: httpx.Client, demo: RunningServer) -> None:
    payer = SessionPayer(demo, client, "/mpp/session/ticker/AAPL")
    opened = payer.open()
    assert opened.status_code == 200 and opened.json()["symbol"] == "AAPL"
    receipt = wire.read_receipt(opened.headers)
    assert receipt is not None and receipt.reference == payer.session_id and receipt.extra["spent"] == 2
    for n in range(2, 11):  # 20 sat at 2 sat a request: nine more
        answer = payer.bearer()
        assert answer.status_code == 200, answer.text
        assert (wire.read_receipt(answer.headers) or receipt).extra["spent"] == 2 * n
    empty = payer.bearer()
    assert problem(empty) == "payment-insufficient" and only(empty).intent == "session"
    topped = payer.top_up()
    assert topped.status_code == 200 and topped.json()["status"] == "ok" and topped.json()["balanceSats"] == 20
    assert payer.bearer().status_code == 200  # 22 of 40 spent
    before = net(demo).balance_msat(payer.wallet.key)
    closed = payer.close()
    assert closed.status_code == 200 and closed.json() == {"status": "closed", "sessionId": payer.session_id,
                                                           "refundSats": 18, "refundStatus": "succeeded", "spentSats": 22}
    assert net(demo).balance_msat(payer.wallet.key) - before == 18_000  # the refund reached the return invoice
    final = wire.read_receipt(closed.headers)
    assert final is not None and final.extra == {"refundSats": 18, "refundStatus": "succeeded"}
    assert problem(payer.bearer()) == "payment-expired"  # closed: no more requests
    assert problem(payer.close()) == "payment-expired"  # nor a second refund
    assert net(demo).balance_msat(payer.wallet.key) == (1_000 - 40 + 18) * 1000


def test_session_refusals(client: httpx.Client, demo: RunningServer) -> None:
    payer = SessionPayer(demo, client, "/mpp/session/ticker/AAPL")
    ch = payer.fresh()
    pre = pay(demo, ch.request["depositInvoice"], payer.wallet)
    amountful = net(demo).create_invoice(5_000, "not amount-less", payee=payer.wallet.wallet_id).bolt11
    cases = [
        ({"action": "open", "preimage": pre, "returnInvoice": amountful}, "lightning/malformed-credential"),
        ({"action": "open", "preimage": "00" * 32, "returnInvoice": payer.return_invoice}, "lightning/invalid-preimage"),
        ({"action": "bearer", "sessionId": "ab" * 32, "preimage": pre}, "lightning/unknown-challenge"),
        ({"action": "dance"}, "lightning/malformed-credential"),
    ]
    for payload, kind in cases:
        assert problem(payer.send(payload, ch)) == kind, payload
    assert demo.app.state.mpp.sessions == {}


def _events(response: httpx.Response) -> Iterator[tuple[str | None, str]]:
    event: str | None = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, line[6:]
            event = None


def test_session_stream_asks_for_a_top_up_mid_stream_and_resumes(client: httpx.Client, demo: RunningServer) -> None:
    path = "/mpp/session/stream/AAPL"
    payer = SessionPayer(demo, client, path)
    payer.challenge = payer.fresh()
    payer.preimage = pay(demo, payer.challenge.request["depositInvoice"], payer.wallet)
    payer.session_id = payer.challenge.request["paymentHash"]
    headers = {"Authorization": payer.challenge.credential(
        {"action": "open", "preimage": payer.preimage, "returnInvoice": payer.return_invoice})}
    seen: list[tuple[str | None, str]] = []
    with httpx.Client(base_url=demo.url, timeout=30) as streamer:
        with streamer.stream("GET", path, params={"chunks": 12}, headers=headers) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            for event, data in _events(response):
                seen.append((event, data))
                if event == "payment-need-topup":
                    need = json.loads(data)
                    assert need == {"sessionId": payer.session_id, "balanceSpent": 20, "balanceRequired": 2}
                    assert payer.top_up().status_code == 200  # from another connection, while the stream waits
    chunks = [json.loads(d) for e, d in seen if e is None and d != "[DONE]"]
    assert [c["chunk"] for c in chunks] == list(range(12))
    assert [e for e, _ in seen if e] == ["payment-need-topup", "payment-receipt"]
    assert [e for e, _ in seen].index("payment-need-topup") == 10  # after the deposit's ten chunks
    receipt = json.loads(next(d for e, d in seen if e == "payment-receipt"))
    assert (receipt["reference"], receipt["spent"], receipt["units"]) == (payer.session_id, 24, 12)
    assert seen[-1] == (None, "[DONE]")
    assert payer.close().json()["refundSats"] == 16


def test_session_stream_times_out_without_a_top_up(client: httpx.Client, demo: RunningServer) -> None:
    demo.app.state.mpp.topup_wait_s = 0.2
    payer = SessionPayer(demo, client, "/mpp/session/stream/AAPL")
    payer.challenge = payer.fresh()
    payer.preimage = pay(demo, payer.challenge.request["depositInvoice"], payer.wallet)
    payer.session_id = payer.challenge.request["paymentHash"]
    payload = {"action": "open", "preimage": payer.preimage, "returnInvoice": payer.return_invoice}
    with client.stream("GET", payer.path, params={"chunks": 11},
                       headers={"Authorization": payer.challenge.credential(payload)}) as response:
        events = [e for e, _ in _events(response)]
    assert events[-2:] == ["payment-need-topup", "session-timeout"] and events.count(None) == 10


# -- what the session needs from the demo network: wallets' own (amount-less) invoices --------------


def test_a_demo_wallet_receives_on_its_own_amountless_invoice(demo: RunningServer) -> None:
    from httpay.errors import WalletError
    from httpay.lightning import decode_invoice
    from httpay.wallets.demo import DemoWallet

    payee = DemoWallet.create(demo.url, balance_sat=0)
    payer = net(demo).create_wallet(100)
    invoice = payee.create_receive_invoice(None, description="refund")
    assert decode_invoice(invoice).amount_msat is None
    with httpx.Client(base_url=demo.url) as c:
        key = {"Authorization": f"Bearer {payer.key}"}
        refused = c.post("/ln/pay", json={"invoice": invoice}, headers=key)
        assert refused.json()["code"] == "amount_missing"
        assert c.post("/ln/pay", json={"invoice": invoice, "amount_msat": 7_000}, headers=key).status_code == 200
        assert c.post("/ln/invoices", json={}, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.post("/ln/invoices", json={}).json()["error"] == "amount_msat is required"  # the node's own: priced
    assert (payee.balance_msat(), net(demo).balance_msat(payer.key)) == (7_000, 93_000)
    second = payee.create_receive_invoice(3_000)
    net(demo).pay_out(second, 3_000)  # the node pays a wallet's invoice (a session refund)
    assert payee.balance_msat() == 10_000
    with pytest.raises(Exception, match="already"):
        net(demo).pay_out(second, 3_000)
    with pytest.raises(WalletError):
        DemoWallet(demo.url, "not-a-key").create_receive_invoice(None)


def test_an_idle_session_is_closed_and_refunded(client: httpx.Client, demo: RunningServer) -> None:
    payer = SessionPayer(demo, client, "/mpp/session/ticker/AAPL")
    assert payer.open().status_code == 200
    demo.app.state.mpp.sessions[payer.session_id].last_used -= demo.app.state.mpp.session_idle_s + 1
    before = net(demo).balance_msat(payer.wallet.key)
    assert problem(payer.bearer()) == "payment-expired"
    assert net(demo).balance_msat(payer.wallet.key) - before == 18_000  # the rest came back on its own
    assert demo.app.state.mpp.sessions[payer.session_id].refund_status == "succeeded"


def test_the_home_page_lists_the_mpp_routes(client: httpx.Client) -> None:
    page = client.get("/").text
    for path in ("/mpp/ticker/", "/mpp/evm/ticker/", "/mpp/both/ticker/", "/aperture/ticker/", "/mpp/session/ticker/",
                 "/mpp/session/stream/"):
        assert f"<code>{path}{{symbol}}" in page


def test_the_evm_settle_hook_decides(client: httpx.Client, demo: RunningServer) -> None:
    seen: list[dict[str, Any]] = []

    def refuse(authorization: dict[str, Any]) -> str:
        seen.append(authorization)
        raise RuntimeError("the chain said no")

    demo.app.state.mpp.evm_settle = refuse
    ch = only(client.get("/mpp/evm/ticker/AAPL"))
    credential = ch.credential(evm_authorization(EvmSigner.create(), ch, nonce=spec_nonce(ch)))
    refused = client.get("/mpp/evm/ticker/AAPL", headers={"Authorization": credential})
    assert problem(refused) == "verification-failed" and demo.app.state.mpp.evm_settled == []
    assert seen[0]["challenge_id"] == ch.id and seen[0]["signature"].startswith("0x")
    demo.app.state.mpp.evm_settle = lambda a: "0x" + "cd" * 32
    ok = client.get("/mpp/evm/ticker/AAPL", headers={"Authorization": credential})  # nothing settled: the retry may
    receipt = wire.read_receipt(ok.headers)
    assert ok.status_code == 200 and receipt is not None and receipt.reference == "0x" + "cd" * 32
