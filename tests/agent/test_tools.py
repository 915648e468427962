"""The LLM tools against the real demo service (and a mock paywall for the odd cases): each result is
short truthful text, money moves only within the policy, and no secret ever shows up."""

from __future__ import annotations

import inspect
import re
import typing

import httpx
import pytest

import httpay
from httpay.apps.agent import MAX_BODY_CHARS, TOOL_NAMES, Toolbox
from httpay.ledger import SQLiteLedger, Status
from tests.agent.conftest import Account, assert_no_secret, make_toolbox
from tests.helpers import FakeService, FakeWallet


def test_the_notebook_story_through_the_tools_pays_once_and_leaks_nothing(account: Account) -> None:
    box = make_toolbox(account)
    outputs: list[str] = []

    def call(name: str, *args: object, **kwargs: object) -> str:
        out = getattr(box, name)(*args, **kwargs)
        assert isinstance(out, str), f"{name} must return str, as declared"
        outputs.append(out)
        return out

    aapl = call("fetch", "/ticker/AAPL")
    assert aapl.startswith("HTTP 200 OK") and '"symbol":"AAPL"' in aapl and "paid" not in aapl

    priced = call("offers", "/ticker/MSFT")
    assert priced.startswith("this costs $0.01 (≈ 10 sat) for 1 credit (cheapest offer: offer_c668e0c0)")
    assert priced.count("\n- offer_") == 3 and "the policy would pay offer_c668e0c0 by lightning" in priced
    assert "budget left 50 sat ($0.05) of 50 sat ($0.05)" in priced
    assert box.client.ledger.receipts() == [], "pricing a URL pays nothing"

    msft = call("fetch", "/ticker/MSFT")
    [rec] = box.client.ledger.receipts()
    assert rec.status is Status.SETTLED and rec.offer_id == "offer_c668e0c0" and rec.amount_msat == 10_000
    assert msft.startswith("HTTP 200 OK\npaid 10 sat ($0.01) + fee 0 sat for offer_c668e0c0 '1 Credit Package' (1 credit)")
    assert "budget left 40 sat ($0.04) of 50 sat ($0.05)" in msft and '"symbol":"MSFT"' in msft

    googl = call("pay", "/ticker/GOOGL", "offer_c668e0c0")
    newest = box.client.ledger.receipts()[0]
    assert googl.startswith(f"paid 10 sat ($0.01) + fee 0 sat for offer_c668e0c0 '1 Credit Package' (1 credit) by "
                            f"lightning, payment hash {newest.payment_hash}, ledger #{newest.id}")
    assert "\nthen HTTP 200 OK\n" in googl and '"symbol":"GOOGL"' in googl

    wrong = call("pay", "/ticker/TSLA", "offer_nope")
    assert wrong.startswith("refused: the service did not offer 'offer_nope'") and "Nothing was paid." in wrong
    assert "- offer_c668e0c0 '1 Credit Package': $0.01 (≈ 10 sat) for 1 credit, pay by lightning" in wrong

    big = call("pay", "/ticker/TSLA", "offer_97bf23f7")
    assert big.startswith("refused: the offer offer_97bf23f7 costs 1,000 sat ($1.00), above the per-payment limit")

    capped = call("fetch", "/ticker/TSLA", max_price_usd=0.001)
    assert capped.startswith("refused:") and "budget left 30 sat ($0.03)" in capped

    card = call("pay", "/ticker/TSLA", "offer_a896b13c", "credit_card")
    assert card.startswith("refused: payment method 'credit_card' is not available")

    budget = call("budget")
    assert budget.startswith("budget left 30 sat ($0.03) of 50 sat ($0.05); spent 20 sat ($0.02) in 2 settled payment(s)")
    assert "at most $0.02 per payment" in budget and "wallet balance 980 sat ($0.98)" in budget

    listed = call("payments")
    assert listed.startswith("2 payment(s), newest first:") and "/ticker/GOOGL" in listed and "/ticker/MSFT" in listed
    info = call("fetch", "/info")
    assert '"id":"[redacted]"' in info, "the account id is the bearer token: scrubbed"

    assert len(box.client.ledger.receipts()) == 2, "only the two allowed payments happened"
    secrets = account.secrets(box) + [f"Bearer {account.bearer}"]
    assert len(secrets) == 5
    for out in outputs:
        assert_no_secret(out, secrets)
    box.close()


def test_a_spent_budget_is_refused_with_the_offers_and_what_is_left(account: Account) -> None:
    # the fee cap is held with each payment: 1 sat of fee room keeps a 10 sat payment inside 15 sat
    with make_toolbox(account, budget_usd=0.015, max_fee_msat=1_000) as box:
        assert box.fetch("/ticker/AAPL").startswith("HTTP 200")  # the free credit
        assert "paid 10 sat" in box.fetch("/ticker/MSFT")
        out = box.fetch("/ticker/GOOGL")
        assert out.startswith("refused: the cheapest offer costs 10 sat ($0.01) + up to 1 sat ($0.001) in fees but only 5 sat ($0.005) of the total budget is left")
        assert "offers:\n- offer_c668e0c0" in out and out.endswith("budget left 5 sat ($0.005) of 15 sat ($0.015).")
        assert len(box.client.ledger.receipts()) == 1


@pytest.mark.parametrize("methods", [None, ["lightning", "mpp:lightning:session"]],
                         ids=["the default methods", "the session's method allowed"])
def test_an_mpp_session_is_said_at_once_to_be_beyond_the_tools(account: Account, methods: list[str] | None) -> None:
    """The demo's session route is paid from a deposit a program opens: a model is told so at once,
    not sent to allow a method (or to open an httpay.MppSession) it cannot, and nothing says one
    payment buys one request."""
    policy = httpay.Policy(budget_usd=0.05, **({"methods": methods} if methods else {}))
    with Toolbox(wallet=account.wallet, policy=policy, ledger=str(account.ledger_path), base_url=account.url) as box:
        fetched = box.fetch("/mpp/session/ticker/AAPL")
        offered = box.offers("/mpp/session/ticker/AAPL")
        assert box.client.ledger.receipts() == []
    assert fetched.startswith("refused: no tool here can pay this: no mpp offer can be paid: mpp_lightning_session: "
                              "MPP lightning/session is paid from a deposit across requests, not per request"), fetched
    assert "Policy(methods" not in fetched and "allow one of" not in fetched
    assert offered.startswith("HTTP 402 Payment Required: no tool here can pay any of its offers"), offered
    assert "a session is paid from a deposit across requests" in offered and "for each request, drawn from a deposit" in offered
    assert "one payment buys one request" not in offered and "one-time" not in offered and "policy would" not in offered


def test_a_pending_fee_cap_reads_as_a_cap_and_every_amount_is_told_apart(ledger: SQLiteLedger) -> None:
    """A payment still in flight holds its fee cap in the budget: shown as "up to", never as a fee
    charged; and 25 sat is not shown as the $0.02 of the 20 sat beside it."""
    from httpay.ledger import Intent

    ledger.reserve(Intent(host="stock.test", url="http://stock.test/ticker/MSFT", protocol="l402-v0.2",
                          method="lightning", amount_msat=10_000, payment_hash="ab" * 32, offer_id="o1",
                          offer_title="1 credit", offer_amount=10, offer_currency="SAT", max_fee_msat=10_000), [])
    box = mock_box(lambda r: httpx.Response(200), ledger, budget_sat=25, budget_usd=None)
    listed = box.payments()
    assert "pending: 10 sat ($0.01) + fee up to 10 sat for o1 '1 credit'" in listed, listed
    assert box.budget().startswith("budget left 5 sat ($0.005) of 25 sat ($0.025); spent 20 sat ($0.02) in 0 settled "
                                   "payment(s) and 1 pending"), box.budget()


def test_tools_are_plain_functions_with_names_docs_and_hints(toolbox: Toolbox) -> None:
    fns = toolbox.tools()
    assert [f.__name__ for f in fns] == list(TOOL_NAMES)
    for f in fns:
        assert inspect.isfunction(f) and f.__doc__ and typing.get_type_hints(f)["return"] is str
        assert "self" not in inspect.signature(f).parameters
    fetch = fns[0]
    assert list(inspect.signature(fetch).parameters) == ["url", "method", "headers", "body", "max_price_usd",
                                                       "content_type", "max_chars", "offset"]
    assert fetch("/ticker/AAPL").startswith("HTTP 200 OK")
    assert fns[4](limit=3) == "no payments recorded yet."
    assert fns[4](limit=0).startswith("error: limit must be a whole number from 1 to 100")


# -- odd cases, against an in-memory paywall -----------------------------------------------------------
def mock_box(handler: typing.Callable[[httpx.Request], httpx.Response], ledger: SQLiteLedger,
             wallet: httpay.Wallet | None = None, **policy: object) -> Toolbox:
    pol = httpay.Policy(**{"usd_per_btc": 100_000, "budget_usd": 5, "max_per_payment_usd": 2, **policy})  # type: ignore[arg-type]
    client = httpay.Client(wallet=wallet or FakeWallet(FakeService()), policy=pol, ledger=ledger,
                           transport=httpx.MockTransport(handler))
    return Toolbox(client, headers={"Authorization": "Bearer sekrit-bearer-123"}, base_url="http://stock.test")


def test_default_headers_go_only_to_the_services_origin(ledger: SQLiteLedger) -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("authorization")))
        return httpx.Response(200, text="ok")

    box = mock_box(handler, ledger)
    box.fetch("/ticker/MSFT")
    box.fetch("http://evil.test/steal", headers={"X-Extra": "1"})
    assert seen == [("stock.test", "Bearer sekrit-bearer-123"), ("evil.test", None)]
    assert "sekrit" not in repr(box) and "Authorization" in repr(box)


def test_long_bodies_are_truncated_and_say_so(ledger: SQLiteLedger) -> None:
    box = mock_box(lambda r: httpx.Response(200, text="x" * 10_000), ledger)
    out = box.fetch("/big")
    assert out.endswith(f"[body cut: showing characters 1-{MAX_BODY_CHARS:,} of 10,000; to read on, call fetch again "
                        f"with the same url and method and offset={MAX_BODY_CHARS} (max_chars up to 12,000): the body "
                        "is kept, nothing is requested or paid again]")
    assert len(out) < MAX_BODY_CHARS + 300 and not out.is_error  # type: ignore[attr-defined]
    binary = mock_box(lambda r: httpx.Response(200, content=b"\x89PNG", headers={"content-type": "image/png"}), ledger)
    assert binary.fetch("/logo").endswith("(4 bytes of image/png, not shown)")


def test_a_post_body_that_is_json_is_sent_as_json(ledger: SQLiteLedger) -> None:
    got: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        got.append(request)
        return httpx.Response(201, json={"ok": True})

    out = mock_box(handler, ledger).fetch("/orders", method="post", body='{"symbol": "AAPL"}')
    assert out.startswith("HTTP 201 Created") and got[0].method == "POST"
    assert got[0].headers["content-type"] == "application/json" and got[0].content == b'{"symbol": "AAPL"}'


def test_a_402_httpay_cannot_read_is_reported_unpaid_and_its_token_scrubbed(ledger: SQLiteLedger) -> None:
    body = {"payment_context_token": "ctx-secret-token", "accepts": [{"scheme": "exact"}]}
    box = mock_box(lambda r: httpx.Response(402, json=body), ledger)
    out = box.fetch("/x")
    assert out.startswith("HTTP 402 Payment Required\nthe service asks for payment in a form httpay cannot read")
    assert "ctx-secret-token" not in out and "[redacted]" in out


def test_a_wallet_failure_says_nothing_was_paid(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    box = mock_box(svc, ledger, wallet=FakeWallet(svc, fail=httpay.InsufficientFunds("the wallet holds 3 sat")))
    out = box.fetch("/ticker/MSFT")
    assert out.startswith("error: InsufficientFunds: the wallet holds 3 sat. Nothing was paid.")
    assert [r.status for r in ledger.receipts()] == [Status.FAILED]


def test_a_payment_the_service_does_not_honor_is_reported_as_paid() -> None:
    svc = FakeService()

    def never_serves(request: httpx.Request) -> httpx.Response:
        svc.credits = 0  # whatever was paid, no credit is ever granted
        return svc(request)

    led = SQLiteLedger(":memory:")
    box = mock_box(never_serves, led, wallet=FakeWallet(svc))
    box.client.payer.retries_after_payment = 1
    out = box.fetch("/ticker/MSFT")
    [rec] = led.receipts()
    assert out.startswith("HTTP 402: paid 10 sat ($0.01) + fee 0.003 sat for offer_c668e0c0")
    assert f"payment hash {rec.payment_hash}" in out and "do not pay again" in out


def test_an_unreachable_host_is_text_not_an_exception(ledger: SQLiteLedger) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    box = mock_box(down, ledger)
    assert box.fetch("/x").startswith("error: the request to /x failed: ConnectError: connection refused.")
    assert box.offers("/x").startswith("error: the request to /x failed: ConnectError")
    assert box.pay("/x", "offer_c668e0c0").startswith("error: the request to /x failed")


def test_a_usd_cap_without_a_rate_is_explained(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    client = httpay.Client(wallet=FakeWallet(svc), ledger=ledger, transport=httpx.MockTransport(svc))
    out = Toolbox(client).fetch("http://stock.test/ticker/MSFT", max_price_usd=0.05)
    assert out.startswith("error: max_price_usd needs a BTC/USD rate") and "Nothing was paid." in out
    assert "no total budget set" in out


# -- the pipeline hooks the tools rely on ------------------------------------------------------------------
def test_dry_run_hands_the_402_back_and_pays_nothing(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    wallet = FakeWallet(svc)
    with httpay.Client(wallet=wallet, policy=httpay.Policy(usd_per_btc=100_000), ledger=ledger,
                       transport=httpx.MockTransport(svc)) as c:
        r = c.get("http://stock.test/ticker/MSFT", extensions={"httpay_dry_run": True})
    assert r.status_code == 402 and r.json()["offers"][0]["offer_id"] == "offer_c668e0c0"
    assert wallet.calls == [] and svc.pr_calls == 0 and ledger.receipts() == []


def test_a_pinned_offer_is_the_one_paid_and_still_obeys_the_policy(ledger: SQLiteLedger) -> None:
    svc = FakeService(invoice_msat=1_000_000)  # $1.00 at 100,000 USD/BTC: the 120-credit offer
    wallet = FakeWallet(svc)
    with httpay.Client(wallet=wallet, policy=httpay.Policy(usd_per_btc=100_000, max_per_payment_usd=2), ledger=ledger,
                       transport=httpx.MockTransport(svc)) as c:
        r = c.get("http://stock.test/ticker/MSFT", extensions={"httpay_offer_id": "offer_97bf23f7"})
        assert r.status_code == 200
        assert httpay.receipt_of(r).offer_id == "offer_97bf23f7"  # type: ignore[union-attr]
        with pytest.raises(httpay.PaymentRefused) as err:
            c.get("http://stock.test/ticker/MSFT", extensions={"httpay_offer_id": "offer_a896b13c"})
    assert err.value.rule == "max_per_payment" and len(wallet.calls) == 1


def test_a_toolbox_needs_a_wallet_or_a_client() -> None:
    with pytest.raises(httpay.ConfigError, match="needs client="):
        Toolbox()
    svc = FakeService()
    client = httpay.Client(wallet=FakeWallet(svc), ledger=":memory:")
    with pytest.raises(httpay.ConfigError, match="not both"):
        Toolbox(client, wallet=FakeWallet(svc))
    client.close()


def test_a_toolboxs_headers_need_the_service_they_belong_to() -> None:
    """Credentials given as headers go to one origin: without base_url a model led astray by a page
    could send them to any host, so the toolbox is not built; a base_url without a scheme would
    silently never match, so it is an error too."""
    svc = FakeService()
    with pytest.raises(httpay.ConfigError, match=r"headers=\.\.\.\) needs base_url"):
        Toolbox(wallet=FakeWallet(svc), ledger=":memory:", headers={"Authorization": "Bearer sekrit123456"})
    with pytest.raises(httpay.ConfigError, match="http:// or https:// address") as bad:
        Toolbox(wallet=FakeWallet(svc), ledger=":memory:", base_url="127.0.0.1:8402",
                headers={"Authorization": "Bearer sekrit123456"})
    assert "sekrit123456" not in str(bad.value)
    with pytest.raises(httpay.ConfigError, match="not ASCII"):
        Toolbox(wallet=FakeWallet(svc), ledger=":memory:", base_url="http://stock.test", headers={"X-Name": "café"})
    with Toolbox(wallet=FakeWallet(svc), ledger=":memory:", base_url="http://stock.test",
                 headers={"Authorization": "Bearer sekrit123456"}) as box:
        assert "Authorization" in repr(box) and "sekrit123456" not in repr(box)


def test_results_stay_short(toolbox: Toolbox) -> None:
    out = toolbox.offers("/ticker/NOPE")
    assert out.startswith("HTTP 404 Not Found: no payment needed") and re.search(r"unknown ticker NOPE", out)
    assert len(toolbox.budget()) < 300
