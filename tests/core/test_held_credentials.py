"""The unpaid path costs nothing: a request whose scope holds no credential asks the ledger
nothing, and a credential another process bought meanwhile is still found (on the 402 it spares)
and used, never paid for again."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

import httpay
from httpay.core.flow import token_scope
from httpay.ledger import Status
from httpay.ledger.sqlite import SQLiteLedger
from tests.helpers import thread_hops
from tests.hostile.harness import CountingWallet, HostileService


class CountingLedger(SQLiteLedger):
    """A real SQLite ledger that counts the credential lookups that reach the database."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.lookups = 0

    def token_for(self, scope: str, **kw: Any) -> str | None:
        self.lookups += 1
        return super().token_for(scope, **kw)

    def tokens_of(self, scope: str, **kw: Any) -> dict[str, str]:
        self.lookups += 1
        return super().tokens_of(scope, **kw)


def test_requests_in_a_scope_holding_nothing_ask_the_ledger_nothing(svc: HostileService, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    url = svc.free("/free")
    lg = CountingLedger(ledger)
    with httpay.Client(wallet=CountingWallet(svc.node), ledger=lg) as c:
        for _ in range(50):
            assert c.get(url).status_code == 200
    assert lg.lookups == 0, "a 200 in a scope with no credential made no credential query"
    lg.close()


def test_a_credential_bought_by_another_process_is_used_not_paid_again(svc: HostileService, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    paid_url, free_url = svc.classic("/classic"), svc.free("/free")
    wallet = CountingWallet(svc.node)
    other = CountingLedger(ledger)  # "another process": its own ledger object on the same file
    with httpay.Client(wallet=wallet, ledger=other) as b:
        assert b.get(free_url).status_code == 200  # B has looked: it knows of no credential for the host
        with httpay.Client(wallet=wallet, ledger=ledger) as a:
            assert a.get(paid_url).status_code == 200  # A pays, and keeps the token in the shared ledger
        assert len(wallet.calls) == 1
        r = b.get(paid_url)  # B meets the 402, looks in the ledger itself, and presents A's token
    assert r.status_code == 200 and len(wallet.calls) == 1, "one payment for the scope across both processes"
    assert svc.issued == 2 and len(other.receipts()) == 1  # B met one 402, and paid nothing for it
    other.close()


async def test_an_async_client_on_the_unpaid_path_uses_no_worker_thread(svc: HostileService, tmp_path: Path,
                                                                       monkeypatch: Any) -> None:
    """Once the ledger knows a scope holds nothing, an AsyncClient's 200s need no thread and no query."""
    url = svc.free("/free")
    lg = CountingLedger(tmp_path / "ledger.db")
    async with httpay.AsyncClient(wallet=CountingWallet(svc.node), ledger=lg) as c:
        assert (await c.get(url)).status_code == 200  # the first look reads the held scopes (in a thread)
        hops = thread_hops(monkeypatch)
        for _ in range(20):
            assert (await c.get(url)).status_code == 200
    assert hops == [] and lg.lookups == 0, f"{len(hops)} worker-thread hops, {lg.lookups} credential queries"
    lg.close()


# -- the first send, decided without the flow ----------------------------------------------------
def _payer(tmp_path: Path, **kw: Any) -> Any:
    from httpay.core.payer import Payer

    ledger = SQLiteLedger(tmp_path / "first.db")
    return Payer(wallet=None, policy=httpay.Policy(), ledger=ledger, **kw)


@pytest.mark.parametrize(("setup", "fast"), [
    ("nothing held, the ledger has looked", True),
    ("the ledger has not looked yet", False),          # the flow asks it (and it learns)
    ("a credential held for the scope", False),         # the flow presents it
    ("this flow's own credential on the request", False),
    ("a host asked to be told the payer's methods", False),  # the flow adds Accept-Payment
], ids=lambda v: v if isinstance(v, str) else "")
def test_the_first_send_skips_the_flow_only_when_nothing_goes_on_the_request(setup: str, fast: bool,
                                                                             tmp_path: Path) -> None:
    from httpay.core.effects import Send
    from httpay.core.flow import TOKEN_EXTENSION, first_send, token_scope

    payer = _payer(tmp_path)
    url = "http://127.0.0.1:8000/api/x"
    request = httpx.Request("GET", url)
    if setup != "the ledger has not looked yet":
        payer.ledger.holds_token(token_scope(url))  # reads the held scopes once, as the first request does
    if setup == "a credential held for the scope":
        payer.ledger.save_token(token_scope(url), "L402 mac:pre")
    if setup == "this flow's own credential on the request":
        request.extensions[TOKEN_EXTENSION] = (token_scope(url), "L402 mac:pre")
    if setup == "a host asked to be told the payer's methods":
        payer.advertise_to["127.0.0.1:8000"] = {"Accept-Payment": "lightning"}
    first = first_send(payer, request)
    assert (first is not None) == fast
    if first is not None:
        assert isinstance(first, Send) and first.request is request and first.resend == "kept-alive"
        assert first.payment_deadline_s == payer.payment_deadline and "authorization" not in request.headers
    payer.ledger.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_unpaid_requests_ask_the_ledger_nothing_and_a_402_is_still_paid_once(mode: str, svc: HostileService,
                                                                                  tmp_path: Path) -> None:
    """With nothing held, 200s are sent as they are (no statement reaches the ledger); a 402 met that
    way is paid by the flow, and its credential then goes on the next request of its scope."""
    statements: list[str] = []
    lg = CountingLedger(tmp_path / "ledger.db")
    free, paid = svc.free("/free"), svc.classic("/classic")
    wallet = CountingWallet(svc.node)

    async def go(c: Any) -> list[int]:
        async def get(u: str) -> int:
            r = c.get(u)
            return int((await r if mode == "async" else r).status_code)

        codes = [await get(free)]  # the first look reads the held scopes
        lg._db.set_trace_callback(statements.append)
        codes += [await get(free) for _ in range(20)]
        quiet = len(statements)
        codes += [await get(paid), await get(paid)]
        return codes + [quiet]

    if mode == "async":
        async with httpay.AsyncClient(wallet=wallet, ledger=lg) as c:
            *codes, quiet = await go(c)
    else:
        with httpay.Client(wallet=wallet, ledger=lg) as c:
            *codes, quiet = await go(c)
    assert quiet == 0, f"{quiet} statements on 20 unpaid requests"
    assert codes == [200] * 23 and len(wallet.calls) == 1, "the 402 paid once; its token served the next request"
    assert svc.issued == 1 and len(lg.receipts()) == 1
    lg.close()


# -- the look before paying ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_the_look_before_paying_asks_the_ledger_nothing_while_no_one_else_writes_it(
        mode: str, svc: HostileService, tmp_path: Path, monkeypatch: Any) -> None:
    """A 402 met with nothing held: the ledger knows nobody else has written it since it read its
    scopes (SQLite's data_version), so the look for a credential bought meanwhile is answered from
    memory: no query, and on an AsyncClient no worker thread."""
    from httpay.core.effects import TokenFor

    lg = CountingLedger(tmp_path / "ledger.db")
    wallet = CountingWallet(svc.node)
    hops = thread_hops(monkeypatch)
    if mode == "async":
        async with httpay.AsyncClient(wallet=wallet, ledger=lg) as ac:
            codes = [(await ac.get(svc.free("/free"))).status_code, (await ac.get(svc.classic("/classic"))).status_code]
    else:
        with httpay.Client(wallet=wallet, ledger=lg) as c:
            codes = [c.get(svc.free("/free")).status_code, c.get(svc.classic("/classic")).status_code]
    assert codes == [200, 200] and len(wallet.calls) == 1
    assert lg.lookups == 0, "the look before paying queried the ledger though no one else had written it"
    assert not [h for h in hops if isinstance(h, TokenFor) and h.fresh], "the look before paying took a worker thread"
    lg.close()


@pytest.mark.parametrize("many", [False, True], ids=["a few scopes read again", "many scopes: asked one by one"])
def test_a_ledger_written_by_another_process_is_looked_in_again_before_paying(many: bool, svc: HostileService,
                                                                              tmp_path: Path) -> None:
    """Once another process has written the ledger, the look before paying no longer trusts memory: it
    reads the held scopes again (a few) or asks for its own (many), and finds that process's credential."""
    paid_url = svc.classic("/classic")
    wallet = CountingWallet(svc.node)
    b = CountingLedger(tmp_path / "ledger.db")
    if many:
        b.REREAD_SCOPES = 2
        for i in range(3):
            b.save_token(f"https://held{i}.example", "L402 mac:pre")
    with httpay.Client(wallet=wallet, ledger=b) as cb:
        assert cb.get(svc.free("/free")).status_code == 200  # b has read its scopes
        with httpay.Client(wallet=wallet, ledger=tmp_path / "ledger.db") as ca:
            assert ca.get(paid_url).status_code == 200  # "another process" pays and keeps its credential
        assert cb.get(paid_url).status_code == 200
    assert len(wallet.calls) == 1, "b paid again for what the other process had bought"
    assert b.lookups == 1  # many or few: one query for the credential it then presented
    b.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_credential_held_stands_in_for_the_callers_own_authorization(mode: str, svc: HostileService,
                                                                            tmp_path: Path) -> None:
    """A caller that sends its own Authorization (a service account's bearer, a URL's user:password)
    to a classic L402 route: the 402 it meets is answered with the token already bought for the scope,
    never by paying again. Three requests, one payment."""
    paid = svc.classic("/classic")
    wallet = CountingWallet(svc.node)
    own = {"Authorization": "Bearer the-callers-own"}
    if mode == "async":
        async with httpay.AsyncClient(wallet=wallet, ledger=tmp_path / "l.db") as ac:
            codes = [(await ac.get(paid, headers=own)).status_code for _ in range(3)]
            rows = ac.ledger.receipts()
    else:
        with httpay.Client(wallet=wallet, ledger=tmp_path / "l.db") as c:
            codes = [c.get(paid, headers=own).status_code for _ in range(3)]
            rows = c.ledger.receipts()
    assert codes == [200, 200, 200]
    assert len(wallet.calls) == 1 and len(rows) == 1, f"{len(wallet.calls)} payments for one token's scope"


class MetBeforePaying:
    """An `on_event` hook and a wallet that holds its first payment until `n` requests have met
    their 402 and found nothing held (each says ChallengeMet once it goes on to pay): a crowd of
    which every request is then waiting on that payment, whatever the speed of the machine."""

    def __init__(self, n: int) -> None:
        self.n, self.met, self._lock, self.all_met = n, 0, threading.Lock(), threading.Event()

    def __call__(self, event: object) -> None:
        from httpay.core.events import ChallengeMet

        if isinstance(event, ChallengeMet):
            with self._lock:
                self.met += 1
                if self.met >= self.n:
                    self.all_met.set()

    def wallet(self, svc: HostileService) -> CountingWallet:
        gate = self

        class Held(CountingWallet):
            def pay_invoice(self, bolt11: str, *, max_fee_msat: int | None = None) -> Any:
                if not self.calls:  # the first payment waits for the whole crowd (a safety bound, never a pace)
                    assert gate.all_met.wait(120), f"only {gate.met} of {gate.n} requests met their 402"
                return super().pay_invoice(bolt11, max_fee_msat=max_fee_msat)
        return Held(svc.node)


OWN = [  # where a caller's own Authorization comes from (none: the crowd as it pays without one)
    "none", "the client's headers=", "the request's headers=", "the URL's user:password",
]


@pytest.mark.parametrize("where", OWN)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_crowd_sending_its_own_authorization_pays_once_and_every_request_is_served(
        mode: str, where: str, svc: HostileService, tmp_path: Path) -> None:
    """20 threads (or tasks) sending their own Authorization (however the caller puts it on) to a
    classic L402 route meet its 402 at once: one pays, and the others, waiting on that payment, present the token it bought in place of
    their own header, as a request after it does. One payment, twenty 200s, no error, twenty 402s
    (one each: nobody is sent back to pay again)."""
    n = 20
    gate = MetBeforePaying(n)
    wallet = gate.wallet(svc)
    url = svc.classic("/classic")
    own = {"Authorization": "Bearer my-service-account"}
    client: dict[str, Any] = {"headers": own} if where == "the client's headers=" else {}
    send: dict[str, Any] = {"headers": own} if where == "the request's headers=" else {}
    if where == "the URL's user:password":
        url = url.replace("://", "://service-account:its-password@")
    kwargs: dict[str, Any] = dict(wallet=wallet, ledger=tmp_path / "l.db", on_event=gate, **client)

    def said(exc: httpay.HttpayError) -> str:
        return f"{type(exc).__name__}: {exc}"

    if mode == "async":
        async def go() -> tuple[list[object], list[Any]]:
            async with httpay.AsyncClient(**kwargs) as ac:
                async def one() -> object:
                    try:
                        return (await ac.get(url, **send)).status_code
                    except httpay.HttpayError as exc:
                        return said(exc)
                return list(await asyncio.gather(*(one() for _ in range(n)))), ac.ledger.receipts()
        answers, rows = asyncio.run(go())
    else:
        with httpay.Client(**kwargs) as c, ThreadPoolExecutor(n) as pool:
            def one(_: int) -> object:
                try:
                    return c.get(url, **send).status_code
                except httpay.HttpayError as exc:
                    return said(exc)
            answers, rows = list(pool.map(one, range(n))), c.ledger.receipts()
    assert answers == [200] * n, [a for a in answers if a != 200][:3]
    assert len(wallet.calls) == 1, f"{len(wallet.calls)} payments for one token's scope"
    assert [r.status for r in rows] == [Status.SETTLED]
    assert svc.issued == n, f"{svc.issued} 402s for {n} requests: some were sent back to pay again"


def test_a_held_credential_the_service_refuses_in_place_of_the_callers_is_dropped_and_paid_once(
        svc: HostileService, tmp_path: Path) -> None:
    """The held token is refused (the service forgot it): it is evicted, the caller's own header is
    put back, and the 402 is paid once; the request after that presents the new token."""
    paid = svc.classic("/classic")
    wallet = CountingWallet(svc.node)
    own = {"Authorization": "Bearer the-callers-own"}
    with httpay.Client(wallet=wallet, ledger=tmp_path / "l.db") as c:
        assert c.get(paid).status_code == 200
        # a token the service no longer takes, where the host's "hostile" service token is kept
        c.ledger.save_token(token_scope(paid) + "#hostile", "L402 forgotten:00")
        request = c.build_request("GET", paid, headers=own)
        r = c.send(request)
        assert c.get(paid, headers=own).status_code == 200
    assert r.status_code == 200 and len(wallet.calls) == 2, "one payment for the refused token, none after"
