"""The unpaid path costs nothing: a request whose scope holds no credential asks the ledger
nothing, and a credential another process bought meanwhile is still found (on the 402 it spares)
and used, never paid for again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpay
from httpay.ledger.sqlite import SQLiteLedger
from tests.hostile.harness import CountingWallet, HostileService


class CountingLedger(SQLiteLedger):
    """A real SQLite ledger that counts the credential lookups that reach the database."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.lookups = 0

    def token_for(self, scope: str, **kw: Any) -> str | None:
        self.lookups += 1
        return super().token_for(scope, **kw)


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
    import anyio.to_thread

    url = svc.free("/free")
    lg = CountingLedger(tmp_path / "ledger.db")
    async with httpay.AsyncClient(wallet=CountingWallet(svc.node), ledger=lg) as c:
        assert (await c.get(url)).status_code == 200  # the first look reads the held scopes (in a thread)
        hops: list[Any] = []
        real = anyio.to_thread.run_sync

        async def counted(func: Any, *args: Any, **kw: Any) -> Any:
            hops.append(func)
            return await real(func, *args, **kw)

        monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
        for _ in range(20):
            assert (await c.get(url)).status_code == 200
    assert hops == [] and lg.lookups == 0, f"{len(hops)} worker-thread hops, {lg.lookups} credential queries"
    lg.close()
