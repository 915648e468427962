"""httpay against its peers and a hand-written floor, one interleaved run, servers in a child process.

Every figure is a ratio of medians measured in the same rounds, so a busy moment of the machine
hits both sides alike; the servers run in their own process so their work never shares the
client's interpreter. Figures:

- unpaid 200: `httpay.Client` / plain `httpx.Client`;
- paid classic L402: httpay / l402-requests' `L402Client` (given a shared SSL context, since it
  opens an httpx client per request; it checks no invoice signature, httpay does), both paying
  the demo service's Aperture-style route through the demo Lightning network;
- paid x402 exact: httpay / the x402 package's own `x402HttpxClient`, both paying their FastAPI
  middleware with their in-process facilitator (httpay writes its ledger row first);
- paid L402 v0.2: httpay / a hand-written httpx loop doing the same three round trips and the
  same wallet call (the floor: no checks, no ledger).

Each paid figure also has a line against the peer plus one durable write (`WriteAhead`): the least a
client that writes the payment down before paying adds, measured in the same rounds, right after
the peer's request (when the machine is in the same state as httpay's reservation).

`python bench/peers_bench.py` prints them; bench/run.py includes them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT / "src"), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

import httpx

import httpay

Line = tuple[str, str, str]
PAYER_KEY = "0x" + "5e" * 32  # the x402 payer, funded on the child's local chain
RATE = 100_000.0


# -- the child: every server, on loopback -----------------------------------------------------------
def serve() -> None:
    """Start the demo service and the x402 service, print their URLs as one JSON line, and serve
    until stdin closes."""
    from eth_account import Account

    from httpay.demo.runner import serve_in_thread
    from httpay.demo.server import create_app
    from tests.e2e.x402_local import LocalChain, paid_app

    chain = LocalChain()
    chain.fund(Account.from_key(PAYER_KEY).address, 10**12)
    with serve_in_thread(create_app()) as demo, serve_in_thread(paid_app(chain, Account.create().address)) as x:
        print(json.dumps({"demo": demo.url, "x402": x.url}), flush=True)
        sys.stdin.read()


def _servers() -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=str(ROOT))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("the bench servers did not start")
    return proc, json.loads(line)


# -- the clients -------------------------------------------------------------------------------------
def _ratio(ours: list[float], theirs: list[float]) -> str:
    return f"{statistics.median(ours) / statistics.median(theirs):.3f}"


def _compared(name: str, ours: list[float], theirs: list[float], goal: str) -> list[Line]:
    """The ratio line, and the same ratio over the first and the second half of the rounds: how far
    the figure moves within this one run (the noise it is read with)."""
    half = len(ours) // 2
    halves = f"{_ratio(ours[:half], theirs[:half])} / {_ratio(ours[half:], theirs[half:])}"
    return [(f"{name} (p50 ratio)", _ratio(ours, theirs), goal),
            (f"{name}, first / second half of the rounds", halves, "noise: how far it moves within the run")]


def _ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1e3:.2f} ms"


def _interleave(rounds: int, a: Callable[[int], object], b: Callable[[int], object]) -> tuple[list[float], list[float]]:
    """Time `a(i)` and `b(i)` alternately (which goes first alternates too)."""
    ta: list[float] = []
    tb: list[float] = []
    for i in range(rounds):
        for fn, out in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            t = time.perf_counter()
            fn(i)
            out.append(time.perf_counter() - t)
    return ta, tb


def _l402_requests_wallet(base: str, key: str) -> object:
    """l402-requests' wallet contract over the demo network, on one kept-alive connection as
    httpay's DemoWallet uses (its native sync method, which the contract allows), so the wallet
    costs both sides the same."""
    import l402_requests

    class Wallet(l402_requests.WalletBase):  # type: ignore[misc]
        def __init__(self) -> None:
            self._http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10)

        def pay_invoice_sync(self, bolt11: str) -> str:
            r = self._http.post("/ln/pay", json={"invoice": bolt11})
            r.raise_for_status()
            return str(r.json()["preimage"])

        async def pay_invoice(self, bolt11: str) -> str:
            return self.pay_invoice_sync(bolt11)

    return Wallet()


class WriteAhead:
    """One row committed durably (SQLite, WAL, synchronous=FULL, one fsync): the floor of writing a
    payment down before it is paid, with no budget, no index and no check. Called once per round."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY, hash TEXT, amount_msat INTEGER)")
        self.samples: list[float] = []

    def __call__(self) -> None:
        t = time.perf_counter()
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("INSERT INTO pending (hash, amount_msat) VALUES (?, ?)", (os.urandom(32).hex(), 10_000))
        self.db.execute("COMMIT")
        self.samples.append(time.perf_counter() - t)

    def line(self, figure: str, peer: str, ours: list[float], theirs: list[float]) -> Line:
        """`figure`, httpay against `peer`'s time plus this write's (their medians)."""
        floor = statistics.median(theirs) + statistics.median(self.samples)
        return (f"{figure}, httpay / ({peer} + one durable write) (p50 ratio)", f"{statistics.median(ours) / floor:.3f}",
                f"reported (the write alone: {_ms(self.samples)})")


def _wallet_key(base: str) -> str:
    """A funded wallet on the demo network, by its key (for the peers and the floor)."""
    r = httpx.post(f"{base}/ln/wallets", json={"balance_sat": 10**7})
    r.raise_for_status()
    return str(r.json()["key"])


def unpaid(urls: dict[str, str], rounds: int, tmp: Path) -> list[Line]:
    url = f"{urls['demo']}/info"
    wallet = httpay.DemoWallet(urls["demo"], "unused")  # never called: nothing here asks for payment
    with httpx.Client() as plain, httpay.Client(wallet=wallet, ledger=tmp / "unpaid.db",
                                                policy=httpay.Policy(usd_per_btc=RATE)) as ours:
        for _ in range(30):
            plain.get(url), ours.get(url)
        a, b = _interleave(rounds, lambda i: ours.get(url), lambda i: plain.get(url))
    return _compared("unpaid 200, httpay.Client / httpx.Client", a, b, "<= 1.02")


def classic(urls: dict[str, str], rounds: int, tmp: Path) -> list[Line]:
    import l402_requests

    base = urls["demo"]
    wallet = httpay.DemoWallet.create(base, balance_sat=10**7)
    peer = l402_requests.L402Client(wallet=_l402_requests_wallet(base, _wallet_key(base)),
                                    budget=l402_requests.BudgetController(max_sats_per_request=100,
                                                                          max_sats_per_day=10**9),
                                    verify=ssl.create_default_context())
    from l402_requests.credential_cache import CredentialCache

    url = f"{base}/l402/ticker/MSFT"
    with httpay.Client(wallet=wallet, ledger=tmp / "classic.db",
                       policy=httpay.Policy.unlimited(usd_per_btc=RATE)) as ours:
        scope = httpay.token_scope(url) if hasattr(httpay, "token_scope") else None

        def forget() -> None:
            """Each timed request is a purchase: both sides drop the token they hold first (untimed)."""
            for held in ours.ledger.token_scopes():
                ours.ledger.drop_token(held)
            peer._cache = CredentialCache()

        write = WriteAhead(tmp / "classic-floor.db")
        sides: list[tuple[Callable[[], None], list[float]]] = [
            (lambda: _ok(ours.get(url)), []), (lambda: _ok(peer.get(url)), [])]
        for i in range(rounds + 1):
            for fn, out in sides if i % 2 == 0 else sides[::-1]:
                forget()
                t = time.perf_counter()
                fn()
                if i:
                    out.append(time.perf_counter() - t)
                    if out is sides[1][1]:
                        write()
        assert scope is None or scope
        a, b = sides[0][1], sides[1][1]
    wallet.close()
    return [*_compared("paid classic L402, httpay / l402-requests L402Client", a, b, "<= 1.10"),
            write.line("paid classic L402", "l402-requests", a, b),
            ("paid classic L402, httpay p50", _ms(a), "reference")]


def _ok(r: httpx.Response) -> None:
    if r.status_code != 200:
        raise RuntimeError(f"the bench request was not served: HTTP {r.status_code}")


def x402(urls: dict[str, str], rounds: int, tmp: Path) -> list[Line]:
    from eth_account import Account
    from x402 import x402Client
    from x402.http.clients import x402HttpxClient
    from x402.mechanisms.evm.exact.register import register_exact_evm_client
    from x402.mechanisms.evm.signers import EthAccountSigner

    url = f"{urls['x402']}/weather"
    theirs = x402Client()
    register_exact_evm_client(theirs, EthAccountSigner(Account.from_key(PAYER_KEY)))
    signer = httpay.EvmSigner.from_key(PAYER_KEY)
    write = WriteAhead(tmp / "x402-floor.db")

    async def go() -> tuple[list[float], list[float]]:
        async with httpay.AsyncClient(ledger=tmp / "x402.db", x402_signer=signer,
                                      policy=httpay.Policy.unlimited(methods=["x402"], usd_per_btc=RATE)) as ours, \
                x402HttpxClient(theirs) as peer:
            await ours.get(url), await peer.get(url)
            ta: list[float] = []
            tb: list[float] = []
            for i in range(rounds):
                for c, out in ((ours, ta), (peer, tb)) if i % 2 == 0 else ((peer, tb), (ours, ta)):
                    t = time.perf_counter()
                    _ok(await c.get(url))
                    out.append(time.perf_counter() - t)
                    if out is tb:
                        write()
            return ta, tb

    a, b = asyncio.run(go())
    return [*_compared("paid x402 exact, httpay / x402's x402HttpxClient", a, b, "<= 1.05"),
            write.line("paid x402 exact", "x402HttpxClient", a, b),
            ("paid x402 exact, httpay p50", _ms(a), "reference")]


def v02(urls: dict[str, str], rounds: int, tmp: Path) -> list[Line]:
    """httpay against the floor: the same three round trips (402, payment request, retry) and the
    same wallet call, hand-written with httpx and nothing checked or recorded."""
    base = urls["demo"]
    wallet = httpay.DemoWallet.create(base, balance_sat=10**7)
    floor_key = _wallet_key(base)
    with httpx.Client() as setup:
        ours_token = setup.get(f"{base}/signup").json()["id"]
        floor_token = setup.get(f"{base}/signup").json()["id"]
    with httpx.Client(headers={"Authorization": f"Bearer {floor_token}"}) as raw, \
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {floor_key}"}) as ln, \
            httpay.Client(wallet=wallet, ledger=tmp / "v02.db", headers={"Authorization": f"Bearer {ours_token}"},
                          policy=httpay.Policy.unlimited(usd_per_btc=RATE)) as ours:

        url = f"{base}/ticker/MSFT"

        def until_402(c: httpx.Client) -> None:
            """Spend the credits a purchase left, so the timed request meets a 402 (both sides alike)."""
            while c.get(url, extensions={"httpay_dry_run": True}).status_code == 200:
                pass

        def floor() -> None:
            offers = raw.get(url).json()
            offer = offers["offers"][0]
            pr = raw.post(offers["payment_request_url"], json={
                "offer_id": offer["offer_id"], "payment_method": "lightning",
                "payment_context_token": offers["payment_context_token"]})
            ln.post("/ln/pay", json={"invoice": pr.json()["payment_request"]["lightning_invoice"]}).raise_for_status()
            for _ in range(50):
                if raw.get(url).status_code == 200:
                    return
                time.sleep(0.005)
            raise RuntimeError("the floor's paid request was not served")

        write = WriteAhead(tmp / "v02-floor.db")
        sides: list[tuple[httpx.Client, Callable[[], None], list[float]]] = [
            (ours, lambda: _ok(ours.get(url)), []), (raw, floor, [])]
        for i in range(rounds + 1):
            for c, fn, out in sides if i % 2 == 0 else sides[::-1]:
                until_402(c)
                t = time.perf_counter()
                fn()
                if i:  # the first round warms up
                    out.append(time.perf_counter() - t)
                    if out is sides[1][2]:
                        write()
        a, b = sides[0][2], sides[1][2]
    wallet.close()
    return [*_compared("paid L402 v0.2, httpay / hand-written httpx floor", a, b, "<= 1.10"),
            write.line("paid L402 v0.2", "hand-written floor", a, b),
            ("paid L402 v0.2, httpay p50", _ms(a), "reference")]


def run(quick: bool = False) -> list[Line]:
    rounds = 40 if quick else 200
    proc, urls = _servers()
    lines: list[Line] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for part in (unpaid, classic, x402, v02):
                lines += part(urls, rounds * (10 if part is unpaid else 1), Path(tmp))
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    return lines


def main() -> int:
    if "--serve" in sys.argv:
        serve()
        return 0
    for name, value, goal in run(quick="--quick" in sys.argv):
        print(f"{name}: {value} ({goal})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
