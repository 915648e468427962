"""Bad input from a hostile server, through the real clients (sync and async): absurd numbers,
broken payment-request URLs, JSON nested 100,000 deep, empty offer lists, 402 bodies that are not
JSON, and text meant to forge log lines. Each case: the typed httpay error naming what was wrong
(or the payment that should still happen), the wallet calls, the ledger rows and the spend."""

from __future__ import annotations

import base64
import json
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import httpay
from httpay.errors import ChallengeError, ConfigError, HttpayError, InvoiceError, PaymentRefused, PaymentRequestError
from httpay.protocols import l402_classic, l402_v02, x402
from httpay.safe import MAX_LINE, JSONTooDeep, loads
from httpay.signers import EvmSigner
from tests.hostile.harness import CountingWallet, HostileService, run

DEEP = 100_000
KEY = "0x" + "4c" * 32
USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
RATE = 100_000.0  # USD per BTC: $0.01 = 10,000 msat
SAT_OFFER = {"offer_id": "o1", "title": "ten sat", "type": "top-up", "balance": 1, "amount": 10, "currency": "SAT",
             "payment_methods": ["lightning"]}


def policy(**over: Any) -> httpay.Policy:
    return httpay.Policy(**{"max_per_payment_sat": 1_000, "budget_sat": 10_000, **over})


def x402_policy() -> httpay.Policy:
    return httpay.Policy(methods=["lightning", "x402"], usd_per_btc=RATE, max_per_payment_usd=0.05, budget_usd=1.0)


def b64(obj: Any) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.b64encode(raw).decode()


def deep(n: int = DEEP) -> str:
    return '{"a":' * n + "1" + "}" * n


_DEFAULT = object()


def v02_text(svc: HostileService, *, pr_url: Any = _DEFAULT, offers: str | None = None) -> str:
    """A v0.2 402 body as JSON text; `offers` is spliced in raw (so it may hold 1e308, NaN, 4,000 digits)."""
    body = {"version": "0.2.2", "payment_request_url": svc.url + "/pay" if pr_url is _DEFAULT else pr_url,
            "offers": "__OFFERS__"}
    return json.dumps(body).replace('"__OFFERS__"', offers if offers is not None else json.dumps([SAT_OFFER]))


def offer_with(field_name: str, raw: str) -> str:
    return json.dumps([dict(SAT_OFFER, **{field_name: "__X__"})]).replace('"__X__"', raw)


def x402_requirements(**over: Any) -> dict[str, Any]:
    req = {"scheme": "exact", "network": "eip155:84532", "amount": "10000", "asset": USDC, "payTo": PAY_TO,
           "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2"}}
    req.update(over)
    return {"x402Version": 2, "error": "Payment required", "resource": {"url": "http://svc/weather"}, "accepts": [req]}


def raw402(svc: HostileService, body: bytes | str, headers: dict[str, str] | None = None,
           path: str = "/bad") -> str:
    async def handler(request: Request) -> Response:
        return Response(body, status_code=402, headers=headers or {"content-type": "application/json"})
    return svc.route(path, handler)


def x402_service(svc: HostileService, *, body: bytes, ctype: str = "application/json",
                 header: str | None = None) -> str:
    """An x402 v2 service: the challenge in PAYMENT-REQUIRED, `body` beside it; pays on PAYMENT-SIGNATURE."""
    async def handler(request: Request) -> Response:
        if request.headers.get("payment-signature"):
            receipt = {"success": True, "transaction": "0x" + "ab" * 32, "network": "eip155:84532", "payer": "0x"}
            return JSONResponse({"served": True}, headers={"PAYMENT-RESPONSE": b64(receipt)})
        return Response(body, status_code=402, headers={"content-type": ctype,
                                                        "PAYMENT-REQUIRED": header or b64(x402_requirements())})
    return svc.route("/x402", handler)


def x402_deep_receipt(svc: HostileService) -> str:
    """An x402 service that settles but answers with a receipt header nested 5,000 deep."""
    async def handler(request: Request) -> Response:
        if request.headers.get("payment-signature"):
            return JSONResponse({"served": True}, headers={"PAYMENT-RESPONSE": b64(("[" * 5000 + "]" * 5000).encode())})
        return Response(b"", status_code=402, headers={"content-type": "application/json",
                                                        "PAYMENT-REQUIRED": b64(x402_requirements())})
    return svc.route("/x402-deep-receipt", handler)


def classic_with_body(svc: HostileService, body: bytes) -> str:
    """Aperture-style classic L402 whose 402 body is `body` (labelled JSON, whatever it holds)."""
    async def handler(request: Request) -> Response:
        if svc.authorized(request):
            return JSONResponse({"served": True})
        ch = svc.classic_challenge(10)
        return Response(body, status_code=402, headers={"content-type": "application/json",
                                                        "www-authenticate": ch.headers["www-authenticate"]})
    return svc.route("/classic-garbage", handler)


def pr_answer(svc: HostileService, answer: Callable[[], bytes]) -> str:
    """A v0.2 paywall whose payment-request endpoint answers `answer()` (200, labelled JSON)."""
    async def pay(request: Request) -> Response:
        return Response(answer(), status_code=200, headers={"content-type": "application/json"})
    return svc.v02("/v02", offers=[SAT_OFFER], pr_handler=pay)


def huge_invoice(svc: HostileService) -> bytes:
    bolt11, _ = svc.node.mint(10**30)
    return json.dumps({"offer_id": "o1", "payment_request": {"lightning_invoice": bolt11}}).encode()


class InfiniteRateWallet(CountingWallet):
    """A wallet whose rate source answers inf: that is no rate, never an overflow."""

    def usd_per_btc(self) -> float:
        return float("inf")


@dataclass
class Case:
    name: str
    url: Callable[[HostileService], str]
    error: type[BaseException] | None        # None: no error expected
    says: str = ""                           # in the error message
    what: str | None = None                  # ChallengeError.field / InvoiceError.check / PaymentRefused.rule
    status: int | None = None                # the response's status when no error
    wallet_calls: int = 0
    settled: int = 0
    spent_msat: int = 0
    policy: Callable[[], httpay.Policy] = policy
    client: dict[str, Any] = field(default_factory=dict)
    wallet: Callable[[HostileService], CountingWallet] | None = None


def _v02_bad(raw: str, fld: str = "amount") -> Callable[[HostileService], str]:
    return lambda svc: raw402(svc, v02_text(svc, offers=offer_with(fld, raw)))


CASES = [
    # -- item 8: absurd numbers, wherever an amount is read, converted or formatted ----------------
    Case("amount_1e308", _v02_bad("1e308"), ChallengeError, "larger than any real amount", "amount"),
    Case("amount_infinity", _v02_bad("Infinity"), ChallengeError, "whole number", "amount"),
    Case("amount_minus_infinity", _v02_bad("-Infinity"), ChallengeError, "whole number", "amount"),
    Case("amount_nan", _v02_bad("NaN"), ChallengeError, "whole number", "amount"),
    Case("amount_negative", _v02_bad("-5"), ChallengeError, "must not be negative", "amount"),
    Case("amount_4000_digits", _v02_bad("9" * 4000), ChallengeError, "larger than any real amount", "amount"),
    Case("amount_5000_digits", _v02_bad("9" * 5000), ChallengeError, "does not parse as JSON", "body"),
    Case("balance_1e308", _v02_bad("1e308", "balance"), ChallengeError, "larger than any real amount", "balance"),
    Case("balance_4000_digits", _v02_bad("7" * 4000, "balance"), ChallengeError, "larger than any real", "balance"),
    Case("balance_infinity", _v02_bad("Infinity", "balance"), ChallengeError, "whole number", "balance"),
    Case("invoice_10^30_msat", lambda svc: pr_answer(svc, lambda: huge_invoice(svc)), InvoiceError,
         "more than all the bitcoin", "amount_above_limit"),
    Case("largest_offer_refused_exactly", lambda svc: raw402(svc, v02_text(svc, offers=offer_with("amount", str(2**63 - 1)))),
         PaymentRefused, "costs 9,223,372,036,854,775,807 sat, above the per-payment limit of 1,000 sat", "max_per_payment"),
    Case("wallet_rate_infinite", lambda svc: svc.v02("/v02", offers=[dict(SAT_OFFER, amount=1, currency="USD")]),
         PaymentRefused, "no BTC/USD rate is known", "exchange_rate",
         policy=lambda: httpay.Policy(max_per_payment_usd=1.0), wallet=lambda svc: InfiniteRateWallet(svc.node)),
    Case("x402_amount_4000_digits", lambda svc: x402_service(svc, body=b"", header=b64(
        json.dumps(x402_requirements()).replace('"10000"', "9" * 4000).encode())),
         ChallengeError, "out of range", "amount", policy=x402_policy, client={"x402_signer": EvmSigner.from_key(KEY)}),
    Case("x402_amount_infinity", lambda svc: x402_service(svc, body=b"", header=b64(
        json.dumps(x402_requirements()).replace('"10000"', "Infinity").encode())),
         ChallengeError, "whole number of atomic units", "amount", policy=x402_policy,
         client={"x402_signer": EvmSigner.from_key(KEY)}),
    # -- item 9: malformed payment_request_url --------------------------------------------------------
    *[Case(f"pr_url_{name}", (lambda u: lambda svc: raw402(svc, v02_text(svc, pr_url=u)))(url), ChallengeError, says,
           "payment_request_url")
      for name, url, says in [("bad_port", "http://127.0.0.1:abc/pay", "not a URL"),
                              ("open_ipv6", "http://[::1/pay", "not a URL"),
                              ("ftp", "ftp://x", "must be an http or https URL"),
                              ("empty", "", "is empty"),
                              ("spaces", "http://x/ pay", "spaces or control characters"),
                              ("number", 42, "must be str"),
                              ("null", None, "must be str")]],
    # -- item 9: JSON nested 100,000 deep in every body the client parses -----------------------------
    Case("deep_402_body_labelled_json", lambda svc: raw402(svc, deep()), ChallengeError, "does not parse as JSON", "body"),
    Case("deep_402_body_unlabelled", lambda svc: raw402(svc, deep(), headers={"x-nothing": "1"}), None, status=402),
    Case("deep_offers_list", lambda svc: raw402(svc, v02_text(svc, offers="[" * DEEP + "]" * DEEP)), ChallengeError,
         "does not parse as JSON", "body"),
    Case("deep_payment_request_answer", lambda svc: pr_answer(svc, lambda: deep().encode()), PaymentRequestError,
         "not JSON"),
    # (a header carries at most 16 KB through h11, so 5,000 deep: five times the default recursion limit)
    Case("deep_x402_header", lambda svc: x402_service(svc, body=b"", header=b64(("[" * 5000 + "]" * 5000).encode())),
         ChallengeError,
         "not base64-encoded JSON", "PAYMENT-REQUIRED", policy=x402_policy, client={"x402_signer": EvmSigner.from_key(KEY)}),
    Case("deep_x402_receipt", x402_deep_receipt, None, status=200, settled=1, spent_msat=10_000, policy=x402_policy,
         client={"x402_signer": EvmSigner.from_key(KEY)}),  # served and kept settled: the receipt is unreadable, not fatal
    # -- item 9: empty offers / accepts ---------------------------------------------------------------
    Case("empty_offers", lambda svc: raw402(svc, v02_text(svc, offers="[]")), ChallengeError, "'offers' is empty", "offers"),
    Case("empty_accepts", lambda svc: x402_service(svc, body=b"", header=b64(dict(x402_requirements(), accepts=[]))),
         ChallengeError, "'accepts' is empty", "accepts", policy=x402_policy,
         client={"x402_signer": EvmSigner.from_key(KEY)}),
    # -- item 9: a 402 whose body is empty or not JSON is still read from its headers -----------------
    Case("x402_header_empty_json_body", lambda svc: x402_service(svc, body=b""), None, status=200, settled=1,
         spent_msat=10_000, policy=x402_policy, client={"x402_signer": EvmSigner.from_key(KEY)}),
    Case("x402_header_garbage_json_body", lambda svc: x402_service(svc, body=b"<html>402</html>"), None, status=200,
         settled=1, spent_msat=10_000, policy=x402_policy, client={"x402_signer": EvmSigner.from_key(KEY)}),
    Case("x402_header_deep_json_body", lambda svc: x402_service(svc, body=deep().encode()), None, status=200,
         settled=1, spent_msat=10_000, policy=x402_policy, client={"x402_signer": EvmSigner.from_key(KEY)}),
    Case("classic_garbage_json_body", lambda svc: classic_with_body(svc, b"{not json"), None, status=200,
         wallet_calls=1, settled=1, spent_msat=11_000),
    Case("classic_empty_json_body", lambda svc: classic_with_body(svc, b""), None, status=200,
         wallet_calls=1, settled=1, spent_msat=11_000),
    Case("classic_deep_json_body", lambda svc: classic_with_body(svc, deep().encode()), None, status=200,
         wallet_calls=1, settled=1, spent_msat=11_000),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_a_typed_error_or_still_paid_right(case: Case, mode: str, svc: HostileService,
                                                        ledger: Any) -> None:
    wallet = case.wallet(svc) if case.wallet else CountingWallet(svc.node)
    url = case.url(svc)
    out = run(mode, url, wallet=wallet, ledger=ledger, policy=case.policy(), **case.client)
    if case.error is None:
        assert out.error is None, f"{type(out.error).__name__}: {out.error}"
        assert out.status == case.status
    else:
        assert isinstance(out.error, case.error), f"{type(out.error).__name__}: {out.error}"
        assert isinstance(out.error, HttpayError)
        assert case.says in str(out.error)
        if case.what is not None:
            got = getattr(out.error, "field", None) or getattr(out.error, "check", None) or getattr(out.error, "rule", None)
            assert got == case.what, str(out.error)
    assert out.wallet_calls == case.wallet_calls
    assert len(out.settled) == case.settled and len(out.receipts) == case.settled  # nothing pending or failed
    assert out.spent_msat == case.spent_msat


# -- numbers a person sets: refused where they enter ---------------------------------------------------
@pytest.mark.parametrize(("kwargs", "name"), [
    ({"usd_per_btc": float("inf")}, "usd_per_btc"), ({"usd_per_btc": float("nan")}, "usd_per_btc"),
    ({"usd_per_btc": 1e308}, "usd_per_btc"), ({"budget_usd": 1e308}, "budget_usd"),
    ({"budget_usd": float("nan")}, "budget_usd"), ({"max_per_payment_sat": 10**4000}, "max_per_payment_sat"),
    ({"max_fee_msat": float("inf")}, "max_fee_msat"), ({"per_day_usd": -1.0}, "per_day_usd"),
])
def test_absurd_policy_numbers_are_a_config_error_naming_the_field(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=rf"Policy\({name}="):
        httpay.Policy(**kwargs)


def test_amount_helpers_are_exact_at_any_size() -> None:
    from httpay.amounts import fmt_msat
    from httpay.policy import msat_to_usd, usd_to_msat
    from httpay.protocols.l402_v02 import format_amount

    assert fmt_msat(10**4000) .startswith("over 10^") and "inf" not in fmt_msat(10**4000, 1e15)
    assert fmt_msat(10**30, RATE) == f"{10**27:,} sat (${10**24:,}.00)"  # exact, where a float says 1e+24
    assert fmt_msat(12_345, RATE) == "12.345 sat ($0.0123)"
    assert msat_to_usd(10**4000, RATE) is None and msat_to_usd(10_000, float("inf")) is None
    assert usd_to_msat(1e15, 1e-300) == 21_000_000 * 10**11  # held at every bitcoin there is, not 10^326
    assert format_amount(2**256, "USDC").endswith(" USDC") and "e+" not in format_amount(2**256, "USDC")
    assert format_amount(499, "USD") == "$4.99" and format_amount(1_500, "MSAT") == "1.5 sat"
    with pytest.raises(ConfigError):
        usd_to_msat(float("inf"), RATE)


# -- item 9: no parser recurses into absurd nesting, whatever the recursion limit --------------------
@pytest.fixture
def huge_recursion_limit() -> Iterator[None]:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000_000)  # with no guard, the C parser would now overflow the C stack
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


@pytest.mark.parametrize("limit", ["default", "huge"])
def test_deep_json_is_a_typed_error_or_not_this_dialect(limit: str, request: pytest.FixtureRequest) -> None:
    if limit == "huge":
        request.getfixturevalue("huge_recursion_limit")
    js = {"content-type": "application/json"}
    for body in (deep(), "[" * DEEP + "]" * DEEP, '{"offers":' + "[" * DEEP + "]" * DEEP + "}"):
        if body.startswith("["):
            assert l402_v02.parse(402, js, body) is None  # an array is never a v0.2 challenge: not this dialect
        else:
            with pytest.raises(ChallengeError, match="does not parse as JSON"):
                l402_v02.parse(402, js, body)
        assert l402_v02.parse(402, {}, body) is None and x402.parse(402, {}, body) is None
        assert l402_classic.parse(402, js, body) is None
        with pytest.raises(ChallengeError, match="not base64-encoded JSON|too long to be real"):
            x402.parse(402, {"PAYMENT-REQUIRED": b64(body.encode())}, None)
        with pytest.raises(ChallengeError, match="not base64-encoded JSON"):
            x402.parse(402, {"PAYMENT-REQUIRED": b64(("[" * 50_000 + "]" * 50_000).encode())}, None)
        with pytest.raises(ChallengeError, match="PAYMENT-RESPONSE is (not base64-encoded JSON|too long to be real)"):
            x402.decode_payment_response({"PAYMENT-RESPONSE": b64(body.encode())})
        with pytest.raises(JSONTooDeep):
            loads(body)


# -- item 10: server text never forges or floods a log line -------------------------------------------
TITLES = {
    "newline_forges_a_line": "ten sat\nINFO httpay: [deadbeef] paid: 1,000,000 sat to attacker",
    "terminal_escapes": "ten sat \x1b[2J\x1b[31mred\x07\r",
    "megabytes": "A" * 1_500_000,  # title and description: 3 MB (a 402 body past 4 MiB is not read at all)
    "markup": "Premium [/x] plan [bold red]x",
}


@pytest.mark.parametrize("name", list(TITLES))
def test_log_lines_and_events_are_one_bounded_line(name: str, mode: str, svc: HostileService, ledger: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    title = TITLES[name]
    url = svc.v02("/v02", offers=[dict(SAT_OFFER, title=title, description=title, offer_id="o1")])
    events: list[str] = []
    wallet = CountingWallet(svc.node)
    with caplog.at_level(logging.DEBUG, logger="httpay"):
        out = run(mode, url, wallet=wallet, ledger=ledger, policy=policy(), on_event=lambda e: events.append(str(e)))
    assert out.error is None and out.status == 200 and out.wallet_calls == 1 and out.spent_msat == 11_000
    records = [r for r in caplog.records if r.name.startswith("httpay")]
    assert any(r.getMessage().startswith("[") and "decision" in r.getMessage() for r in records)
    for r in records:
        line = r.getMessage()
        assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x07" not in line
        assert len(line) <= MAX_LINE
    for line in caplog.text.splitlines():  # the formatted log: every line starts as a record does
        assert not line.startswith("INFO httpay: [deadbeef]")
    assert len(caplog.text) < 100_000
    assert events and all("\n" not in e and len(e) <= MAX_LINE for e in events)
    if name == "megabytes":
        assert any("AAAA…" in r.getMessage() for r in records)


@pytest.mark.parametrize("rate", [float("inf"), float("-inf"), float("nan"), 0.0, -1.0])
def test_an_unusable_rate_is_no_rate_never_an_overflow(rate: float) -> None:
    from httpay.amounts import fmt_msat
    from httpay.core.quote import quote
    from httpay.dialects.l402_v02 import to_challenge
    from httpay.lightning import offer_price_msat

    offers = l402_v02.PaymentOffers.from_dict({"payment_request_url": "/pay", "offers": [
        dict(SAT_OFFER, amount=1, currency="USD")]})
    with pytest.raises(PaymentRefused) as refused:
        quote(to_challenge(offers, "https://svc.example/x"), httpay.Policy(max_per_payment_usd=1.0),
              url="https://svc.example/x", host="svc.example", usd_per_btc=rate)
    assert refused.value.rule == "exchange_rate" and "no BTC/USD rate is known" in str(refused.value)
    assert offer_price_msat(1, "USD", rate) is None
    assert fmt_msat(10_000, rate) == "10 sat"
