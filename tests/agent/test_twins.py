"""Toolbox and AsyncToolbox are twins: each case runs through both, and both give the same text, the
same isError, the same wallet calls and the same ledger rows (only a payment hash may differ)."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import httpay
from httpay.apps.agent import (
    MAX_BODY_CHARS,
    TOOL_NAMES,
    AsyncToolbox,
    Toolbox,
    ToolText,
    adispatch,
    anthropic_tools,
    dispatch,
)
from httpay.ledger import SQLiteLedger, Status
from tests.agent.conftest import Account
from tests.helpers import FakeService, FakeWallet

BEARER = "sekrit-bearer-123"
Handler = Callable[[httpx.Request], httpx.Response]


def twin(mode: str, handler: Handler, ledger: SQLiteLedger, wallet: httpay.Wallet, **policy: Any) -> Any:
    """A Toolbox (sync) or AsyncToolbox (async) over an in-memory service, as tests/agent/test_tools.py's mock_box."""
    pol = httpay.Policy(**{"usd_per_btc": 100_000, "budget_usd": 5, "max_per_payment_usd": 2, **policy})
    kind = httpay.Client if mode == "sync" else httpay.AsyncClient
    client = kind(wallet=wallet, policy=pol, ledger=ledger, transport=httpx.MockTransport(handler))
    box = Toolbox if mode == "sync" else AsyncToolbox
    return box(client, headers={"Authorization": f"Bearer {BEARER}"}, base_url="http://stock.test")


def call(box: Any, name: str, *args: Any, **kwargs: Any) -> ToolText:
    """One tool call: awaited on a fresh event loop for the AsyncToolbox (its mock transport has no pool)."""
    tool = getattr(box, name)
    if inspect.iscoroutinefunction(tool):
        async def run() -> Any:
            return await tool(*args, **kwargs)
        out = anyio.run(run)
    else:
        out = tool(*args, **kwargs)
    assert isinstance(out, ToolText) and isinstance(out, str)
    return out


def down(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


@dataclass
class Case:
    """One tool call against a service; what a model reads back, and what it cost."""

    name: str
    tool: str
    args: tuple[Any, ...]
    starts: str
    is_error: bool
    kwargs: dict[str, Any] = field(default_factory=dict)
    service: str = "paywall"          # paywall | down | unreadable | text
    fail: Exception | None = None      # the wallet raises this
    policy: dict[str, Any] = field(default_factory=dict)
    wallet_calls: int = 0
    rows: tuple[Status, ...] = ()
    contains: tuple[str, ...] = ()


CASES = [
    Case("a paid fetch", "fetch", ("/ticker/MSFT",), "HTTP 200 OK\npaid 10 sat ($0.01) + fee 0.003 sat for offer_c668e0c0",
         False, wallet_calls=1, rows=(Status.SETTLED,), contains=('{"symbol":"MSFT","price":1}',)),
    Case("a free fetch", "fetch", ("/free",), "HTTP 200 OK\nhello", False, service="text"),
    Case("a refusal", "fetch", ("/ticker/MSFT",), "refused: the cheapest offer costs 10 sat ($0.01), above the "
         "per-payment limit", True, policy={"max_per_payment_usd": 0.001}, contains=("Nothing was paid.", "offers:\n- offer_")),
    Case("a failed payment", "fetch", ("/ticker/MSFT",), "error: InsufficientFunds: the wallet holds 3 sat. Nothing was paid.",
         True, fail=httpay.InsufficientFunds("the wallet holds 3 sat"), wallet_calls=1, rows=(Status.FAILED,)),
    Case("a network failure", "fetch", ("/x",), "error: the request to /x failed: ConnectError: connection refused.", True,
         service="down"),
    Case("a 402 httpay cannot read", "fetch", ("/x",), "HTTP 402 Payment Required\nthe service asks for payment in a "
         "form httpay cannot read", True, service="unreadable"),
    Case("a bad method", "fetch", ("/x",), "error: method must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, "
         "got 'FROB'. Nothing was sent or paid.", True, kwargs={"method": "FROB"}),
    Case("a bad max_chars", "fetch", ("/x",), "error: max_chars must be a whole number from 1 to 12,000, got 0", True,
         kwargs={"max_chars": 0}),
    Case("a negative offset", "fetch", ("/x",), "error: offset must be a whole number of characters, 0 or more", True,
         kwargs={"offset": -1}),
    Case("an offset with nothing kept", "fetch", ("/x",), "error: no cut body of GET /x is kept to read from offset 10",
         True, kwargs={"offset": 10}),
    Case("a content type without a body", "fetch", ("/x",), "error: content_type is the body's type, and no body was given",
         True, kwargs={"content_type": "text/csv"}),
    Case("a negative USD cap", "fetch", ("/x",), "error: max_price_usd must be a non-negative number", True,
         kwargs={"max_price_usd": -1.0}),
    Case("a non-ASCII header", "fetch", ("/x",), "error: header 'X-Name' is not ASCII text; encode anything else "
         "(e.g. percent-encoding) first. Nothing was sent or paid.", True, kwargs={"headers": {"X-Name": "café"}}),
    Case("a header with a line break", "fetch", ("/x",), "error: header 'X' holds a line break or a control "
         "character, which a header cannot carry. Nothing was sent or paid.", True,
         kwargs={"headers": {"X": "a\r\nInjected: 1"}}),
    Case("a header name with a space", "fetch", ("/x",), "error: 'Bad Name' is not a header name", True,
         kwargs={"headers": {"Bad Name": "x"}}),
    Case("a header value that is a number", "fetch", ("/x",), "error: a header's name and value are text, got str "
         "and int. Nothing was sent or paid.", True, kwargs={"headers": {"X": 5}}),
    Case("headers that are a list", "fetch", ("/x",), "error: headers must be an object of header names to text "
         "values, got list", True, kwargs={"headers": ["X: 1"]}),
    Case("a body that is not text", "fetch", ("/x",), "error: body must be text (JSON as a string), got dict", True,
         kwargs={"method": "POST", "body": {"a": 1}}),
    Case("an ftp URL", "fetch", ("ftp://127.0.0.1/x",), "error: only http:// and https:// URLs can be fetched, got "
         "ftp://. Nothing was sent or paid.", True),
    Case("offers priced", "offers", ("/ticker/MSFT",), "this costs $0.01 (≈ 10 sat) for 1 credit (cheapest offer: "
         "offer_c668e0c0); nothing was paid.", False, contains=("the policy would pay offer_c668e0c0 by lightning",)),
    Case("offers of an unreachable host", "offers", ("/x",), "error: the request to /x failed: ConnectError", True,
         service="down"),
    Case("offers that cannot be read", "offers", ("/x",), "HTTP 402 Payment Required\nthe service asks for payment in a "
         "form httpay cannot read", True, service="unreadable"),
    Case("pay a chosen offer", "pay", ("/ticker/MSFT", "offer_c668e0c0"), "paid 10 sat ($0.01) + fee 0.003 sat for "
         "offer_c668e0c0 '1 Credit Package' (1 credit) by lightning, payment hash ", False, wallet_calls=1,
         rows=(Status.SETTLED,), contains=("\nthen HTTP 200 OK\n",)),
    Case("pay an offer never made", "pay", ("/ticker/MSFT", "offer_nope"), "refused: the service did not offer "
         "'offer_nope'", True),
    Case("pay by card", "pay", ("/ticker/MSFT", "offer_a896b13c", "credit_card"), "refused: payment method "
         "'credit_card' is not available", True),
    Case("the budget", "budget", (), "budget left 5,000 sat ($5.00) of 5,000 sat ($5.00); spent 0 sat ($0.00) in 0 "
         "settled payment(s)", False, contains=("wallet balance 1,000 sat ($1.00)",)),
    Case("payments out of range", "payments", (), "error: limit must be a whole number from 1 to 100, got 0", True,
         kwargs={"limit": 0}),
    Case("no payments", "payments", (), "no payments recorded yet.", False),
]


def service(kind: str, paywall: FakeService) -> Handler:
    if kind == "down":
        return down
    if kind == "unreadable":
        return lambda r: httpx.Response(402, json={"payment_context_token": "ctx-secret-token", "accepts": []})
    if kind == "text":
        return lambda r: httpx.Response(200, text="hello", headers={"content-type": "text/plain"})
    return paywall


def run_case(case: Case, mode: str, tmp_path: Path) -> ToolText:
    svc = FakeService()
    wallet = FakeWallet(svc, fail=case.fail)
    with SQLiteLedger(tmp_path / f"{mode}.sqlite3") as led:
        box = twin(mode, service(case.service, svc), led, wallet, **case.policy)
        out = call(box, case.tool, *case.args, **case.kwargs)
        assert out.startswith(case.starts), (mode, out[:400])
        assert out.is_error is case.is_error, (mode, out[:200])
        for part in case.contains:
            assert part in out, (mode, part, out[:600])
        assert len(wallet.calls) == case.wallet_calls, mode
        assert tuple(r.status for r in led.receipts()) == case.rows, mode
        assert BEARER not in out and "ctx-secret-token" not in out
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_both_twins_answer_each_case_alike(case: Case, tmp_path: Path) -> None:
    sync, asynchronous = (run_case(case, mode, tmp_path) for mode in ("sync", "async"))
    masked = [re.sub(r"[0-9a-f]{16,64}…?", "<hash>", str(t)) for t in (sync, asynchronous)]
    assert masked[0] == masked[1]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_cut_body_is_read_on_from_the_kept_copy_without_a_second_request(mode: str, ledger: SQLiteLedger) -> None:
    body = "".join(f"{i:05d}," for i in range(2_000))  # 12,000 characters, each position readable
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return httpx.Response(200, text=body, headers={"content-type": "text/csv"})

    box = twin(mode, handler, ledger, FakeWallet(FakeService()))
    first = call(box, "fetch", "/report")
    assert first.startswith("HTTP 200 OK\n00000,00001,") and not first.is_error
    assert first.endswith(f"[body cut: showing characters 1-{MAX_BODY_CHARS:,} of 12,000; to read on, call fetch again "
                          f"with the same url and method and offset={MAX_BODY_CHARS} (max_chars up to 12,000): the body "
                          "is kept, nothing is requested or paid again]")
    second = call(box, "fetch", "/report", offset=MAX_BODY_CHARS, max_chars=5_000)
    assert second.startswith("HTTP 200 OK (the body kept from the earlier fetch: not requested or paid again)\n")
    assert second.split("\n")[1] == body[4_000:9_000]
    assert second.endswith("[body cut: showing characters 4,001-9,000 of 12,000; to read on, call fetch again with the "
                           "same url and method and offset=9000 (max_chars up to 12,000): the body is kept, nothing is "
                           "requested or paid again]")
    last = call(box, "fetch", "http://stock.test/report", offset=9_000, max_chars=12_000)
    assert last.split("\n")[1] == body[9_000:] and last.endswith("of 12,000; this is the end of the body]")
    assert seen == ["GET"], "reading on never sends the request again"
    past = call(box, "fetch", "/report", offset=12_000)
    assert past.is_error and past.startswith("error: offset 12,000 is past the end of the kept body of GET /report")
    whole = call(box, "fetch", "/report", max_chars=12_000)
    assert whole.split("\n")[1] == body and "[body cut" not in whole and seen == ["GET", "GET"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_secret_in_a_cut_body_never_shows_when_reading_on(mode: str, ledger: SQLiteLedger) -> None:
    body = "x" * (MAX_BODY_CHARS - 5) + f"Bearer {BEARER} " + "y" * 5_000
    box = twin(mode, lambda r: httpx.Response(200, text=body), ledger, FakeWallet(FakeService()))
    first = call(box, "fetch", "/echo")
    offset = int(re.search(r"offset=(\d+)", first).group(1))  # type: ignore[union-attr]
    rest = call(box, "fetch", "/echo", offset=offset)
    for text in (first, rest):
        for n in range(6, len(BEARER) + 1):
            assert BEARER[:n] not in text
    assert "[redacted]" in first.split("\n")[1] + rest.split("\n")[1]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_fetch_posts_a_body_with_its_type_and_a_paid_post_keeps_its_call_identity(mode: str, ledger: SQLiteLedger) -> None:
    svc = FakeService()
    got: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/orders"):
            got.append(request)
        return svc(request)

    wallet = FakeWallet(svc)
    box = twin(mode, handler, ledger, wallet)
    out = call(box, "fetch", "/orders", method="post", body='{"symbol": "AAPL"}')
    assert out.startswith("HTTP 200 OK\npaid 10 sat") and not out.is_error
    assert [r.method for r in got] == ["POST", "POST"] and all(r.content == b'{"symbol": "AAPL"}' for r in got)
    assert all(r.headers["content-type"] == "application/json" for r in got)
    assert "idempotency-key" in got[1].headers, "the paid POST carries the call's identity"
    assert len(wallet.calls) == 1
    form = call(box, "fetch", "/orders", method="PUT", body="a=1&b=2", content_type="application/x-www-form-urlencoded")
    assert got[-1].method == "PUT" and got[-1].headers["content-type"] == "application/x-www-form-urlencoded"
    text = call(box, "fetch", "/orders", method="PATCH", body="plain words", headers={"X-Trace": "1"})
    assert got[-1].headers["content-type"] == "text/plain; charset=utf-8" and got[-1].headers["x-trace"] == "1"
    assert not form.is_error and not text.is_error


def test_the_twins_share_names_signatures_and_descriptions(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    sync = twin("sync", svc, ledger, FakeWallet(svc), allowed_hosts=["stock.test"])
    asynchronous = twin("async", svc, ledger, FakeWallet(svc), allowed_hosts=["stock.test"])
    fns, afns = sync.tools(), asynchronous.tools()
    assert [f.__name__ for f in afns] == [f.__name__ for f in fns] == list(TOOL_NAMES)
    for f, af in zip(fns, afns, strict=True):
        assert inspect.iscoroutinefunction(af) and not inspect.iscoroutinefunction(f)
        assert inspect.signature(af) == inspect.signature(f) and af.__doc__ == f.__doc__
        assert typing.get_type_hints(af)["return"] is str
    assert anthropic_tools(asynchronous) == anthropic_tools(sync)
    assert inspect.iscoroutinefunction(AsyncToolbox.fetch) and httpay.AsyncToolbox is AsyncToolbox
    assert httpay.Toolbox is Toolbox


def test_adispatch_awaits_the_async_tools_and_dispatch_says_to_use_it(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    box = twin("async", svc, ledger, FakeWallet(svc))

    async def run() -> tuple[str, str]:
        return (await adispatch(box, "fetch", '{"url": "/ticker/MSFT"}'),
                await adispatch(box, "payments", {"limit": "3"}))

    paid, bad = anyio.run(run)
    assert paid.startswith("HTTP 200 OK\npaid 10 sat") and BEARER not in paid
    assert bad.startswith("error: argument 'limit' of payments must match") and bad.is_error  # type: ignore[attr-defined]
    wrong = dispatch(box, "budget", {})
    assert wrong.startswith("error: budget is a coroutine function: run it with `await adispatch(...)`")


def test_an_async_toolbox_needs_an_async_client(ledger: SQLiteLedger) -> None:
    svc = FakeService()
    sync_client = httpay.Client(wallet=FakeWallet(svc), ledger=ledger)
    with pytest.raises(httpay.ConfigError, match="AsyncToolbox pays with an httpay.AsyncClient, got Client"):
        AsyncToolbox(sync_client)  # type: ignore[arg-type]
    with pytest.raises(httpay.ConfigError, match="AsyncToolbox needs client=httpay.AsyncClient"):
        AsyncToolbox()
    with pytest.raises(httpay.ConfigError, match="payment_deadline"):
        AsyncToolbox(wallet=FakeWallet(svc), payment_deadline=-1)
    sync_client.close()


def test_the_async_notebook_story_pays_once_on_the_demo_and_leaks_nothing(account: Account) -> None:
    async def story() -> list[str]:
        pol = httpay.Policy(budget_usd=0.05, max_per_payment_usd=0.02)
        async with AsyncToolbox(wallet=account.wallet, policy=pol, ledger=str(account.ledger_path),
                                headers={"Authorization": f"Bearer {account.bearer}"}, base_url=account.url) as box:
            seen = [await box.fetch("/ticker/AAPL"), await box.offers("/ticker/MSFT"), await box.fetch("/ticker/MSFT"),
                    await box.pay("/ticker/GOOGL", "offer_c668e0c0"), await box.budget(), await box.payments(),
                    await box.fetch("/info")]
            seen += [r.preimage for r in box.client.ledger.receipts() if r.preimage]
            return seen

    aapl, priced, msft, googl, budget, listed, info, *preimages = anyio.run(story)
    assert aapl.startswith("HTTP 200 OK") and "paid" not in aapl
    assert priced.startswith("this costs $0.01 (≈ 10 sat) for 1 credit (cheapest offer: offer_c668e0c0)")
    assert msft.startswith("HTTP 200 OK\npaid 10 sat ($0.01) + fee 0 sat for offer_c668e0c0 '1 Credit Package'")
    assert googl.startswith("paid 10 sat ($0.01) + fee 0 sat for offer_c668e0c0") and '"symbol":"GOOGL"' in googl
    assert budget.startswith("budget left 30 sat ($0.03) of 50 sat ($0.05); spent 20 sat ($0.02) in 2 settled payment(s)")
    assert listed.startswith("2 payment(s), newest first:") and '"id":"[redacted]"' in info
    assert len(preimages) == 2 and account.wallet.balance_msat() == 980_000
    for text in (aapl, priced, msft, googl, budget, listed, info):
        for secret in [account.bearer, account.wallet_key, *preimages]:
            assert secret not in text
