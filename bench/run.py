"""httpay's benchmarks, one command: `python bench/run.py` (after `bash run.sh test` or `bash run.sh demo`
set up .venv; or `bash run.sh python bench/run.py`).

Prints one line per figure as `name: value (target)`, every ratio measured against plain httpx
in the same run, on loopback servers this script starts itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import httpay
from httpay.bolt11_reader import read_bolt11
from httpay.core.quote import quote
from httpay.demo.runner import serve_in_thread
from httpay.demo.server import create_app
from httpay.ledger import Intent, SQLiteLedger
from httpay.lightning import check_invoice, decode_invoice
from httpay.protocols import l402_v02

Line = tuple[str, str, str]


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def _ok_app() -> Starlette:
    async def ok(request):  # type: ignore[no-untyped-def]
        return JSONResponse({"ok": True, "pad": "x" * 512})

    return Starlette(routes=[Route("/ok", ok)])


def overhead_200(rounds: int) -> list[Line]:
    """httpay.Client vs httpx.Client on a plain 200, interleaved so drift hits both alike."""
    with serve_in_thread(_ok_app()) as srv, tempfile.TemporaryDirectory() as tmp:
        wallet = httpay.DemoWallet("http://127.0.0.1:9", "unused-key")
        plain = httpx.Client()
        paying = httpay.Client(wallet=wallet, policy=httpay.Policy(usd_per_btc=100_000), ledger=Path(tmp) / "l.db")
        url = f"{srv.url}/ok"
        for c in (plain, paying):  # warm up connections
            for _ in range(50):
                c.get(url)
        a: list[float] = []
        b: list[float] = []
        for i in range(rounds):
            order = (plain, paying) if i % 2 == 0 else (paying, plain)
            for c in order:
                t = time.perf_counter()
                c.get(url)
                (a if c is plain else b).append(time.perf_counter() - t)
        plain.close()
        paying.close()
    ratio = p50(b) / p50(a)
    return [
        ("httpx GET 200 p50", f"{p50(a) * 1e3:.3f} ms", "reference"),
        ("httpay.Client GET 200 p50", f"{p50(b) * 1e3:.3f} ms", "reference"),
        # The goal (<= 1.02) is the figure, measured with the servers in a child process
        # ("unpaid 200, ..." below); here the server shares this process and its interpreter.
        ("httpay.Client / httpx on a 200, server in this process (p50 ratio)", f"{ratio:.3f}",
         "reported (the goal is the unpaid line's, server in a child process)"),
    ]


def _timeit(fn: Callable[[], object], n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return p50(samples)


def paid_request_split(n: int) -> list[Line]:
    """Client-side cost of one paid request, step by step, on the real demo service."""
    with serve_in_thread(create_app()) as srv, tempfile.TemporaryDirectory() as tmp:
        base = srv.url
        token = httpx.get(f"{base}/signup").json()["id"]
        auth = {"Authorization": f"Bearer {token}"}
        httpx.get(f"{base}/ticker/AAPL", headers=auth)
        r402 = httpx.get(f"{base}/ticker/MSFT", headers=auth)
        body, headers = r402.content, r402.headers
        policy = httpay.Policy(usd_per_btc=100_000, max_per_payment_usd=1, budget_usd=1_000)
        offers = l402_v02.parse(402, headers, body)
        assert offers is not None
        [challenge] = httpay.read_challenge(402, headers, body, url=str(r402.url))
        decision = quote(challenge, policy, url=str(r402.url), host="127.0.0.1", usd_per_btc=100_000)
        pr = httpx.post(offers.payment_request_url, json=l402_v02.payment_request_body(offers, decision.offer.payload, "lightning"))
        bolt11 = pr.json()["payment_request"]["lightning_invoice"]
        inv = decode_invoice(bolt11)
        ledger = SQLiteLedger(Path(tmp) / "bench.sqlite3")
        counter = iter(range(10**9))

        def ledger_step() -> None:
            i = next(counter)
            rec = ledger.reserve(Intent(host="127.0.0.1", url="u", protocol="l402-v0.2", method="lightning",
                                        amount_msat=10_000, payment_hash=f"{i:064x}"), policy.limits("127.0.0.1", 100_000))
            ledger.settle(rec.id, preimage="00" * 32, fee_msat=0)

        parse_t = _timeit(lambda: httpay.read_challenge(402, headers, body, url="u"), n)
        choose_t = _timeit(lambda: (quote(challenge, policy, url="u", host="127.0.0.1", usd_per_btc=100_000),
                                    l402_v02.payment_request_body(offers, decision.offer.payload, "lightning")), n)
        check_t = _timeit(lambda: check_invoice(inv, network="regtest", expected_msat=decision.price_msat,
                                                tolerance=0.05, max_msat=policy.max_per_payment_msat(100_000)), n)
        def cold_decode() -> None:
            read_bolt11.cache_clear()  # a first decode, as each payment's invoice is (later reads share it)
            decode_invoice(bolt11)

        decode_t = _timeit(cold_decode, max(n // 5, 20))
        ledger_t = _timeit(ledger_step, n)

        wallet = httpay.DemoWallet.create(base, balance_sat=10**7)
        net = srv.app.state.demo.network
        invoices = [net.create_invoice(10_000, "bench").bolt11 for _ in range(max(n // 5, 20))]
        it = iter(invoices)
        wallet_t = _timeit(lambda: wallet.pay_invoice(next(it)), len(invoices))
        srv.app.state.demo.accounts.add_credits(token, 10**6)
        with httpx.Client() as c:
            retry_t = _timeit(lambda: c.get(f"{base}/ticker/MSFT", headers=auth), n)
        ledger.close()
        wallet.close()
    core = parse_t + choose_t + check_t + ledger_t
    def ms(s: float) -> str:
        return f"{s * 1e3:.3f} ms"

    return [
        ("paid request: parse 402 p50", ms(parse_t), "part of < 1 ms"),
        ("paid request: choose offer + build payment request p50", ms(choose_t), "part of < 1 ms"),
        ("paid request: invoice check (decoded) p50", ms(check_t), "part of < 1 ms"),
        ("paid request: ledger reserve + settle (SQLite, fsync) p50", ms(ledger_t), "part of < 1 ms"),
        ("paid request: client-side steps but decode, together", ms(core), "< 1 ms"),
        ("paid request: BOLT11 decode (httpay.bolt11_reader) p50", ms(decode_t), "reported alone (bolt11 package: ~1.7 ms here)"),
        ("paid request: wallet pay, demo network over loopback p50", ms(wallet_t), "network, reported"),
        ("paid request: retry GET over loopback p50", ms(retry_t), "network, reported"),
    ]


def signing(n: int) -> list[Line]:
    """An x402 `exact` authorization signed by httpay's EvmSigner (its own EIP-712 digest, coincurve)
    against eth-account's `sign_typed_data` (what x402's own EthAccountSigner calls), interleaved."""
    import os

    from eth_account import Account

    from httpay.dialects.x402 import AUTHORIZATION_TYPES
    from httpay.signers.evm import _domain_fields

    key = "0x" + "5e" * 32
    ours, theirs = httpay.EvmSigner.from_key(key), Account.from_key(key)
    domain = {"name": "USD Coin", "version": "2", "chainId": 84532,
              "verifyingContract": "0x036CbD53842c5426634e7929541eC2318f3dCF7e"}
    a: list[float] = []
    b: list[float] = []
    for _ in range(n):
        message = {"from": ours.address, "to": "0x" + "11" * 20, "value": 10_000, "validAfter": 0,
                   "validBefore": 1_900_000_000, "nonce": os.urandom(32)}
        full = {"types": {"EIP712Domain": _domain_fields(domain), **AUTHORIZATION_TYPES},
                "primaryType": "TransferWithAuthorization", "domain": domain, "message": message}
        t = time.perf_counter()
        mine = ours.sign_typed_data(domain, AUTHORIZATION_TYPES, "TransferWithAuthorization", message)
        a.append(time.perf_counter() - t)
        t = time.perf_counter()
        reference = bytes(theirs.sign_typed_data(full_message=full).signature)
        b.append(time.perf_counter() - t)
        assert mine == reference  # the same signature, or the figure means nothing
    return [("x402 authorization signed (EIP-712), httpay EvmSigner p50", f"{p50(a) * 1e3:.3f} ms", "reference"),
            ("x402 authorization signed, httpay / eth-account sign_typed_data (p50 ratio)", f"{p50(a) / p50(b):.3f}",
             "reported (the same signature)")]


def extra_benchmarks(quick: bool) -> list[Line]:
    """Benchmarks other modules contribute (ledger throughput, concurrency), when present."""
    lines: list[Line] = []
    from bench import concurrency_bench, ledger_bench, peers_bench

    lines += peers_bench.run(quick=quick)  # against httpx, l402-requests, x402's client, the floor

    for name, value, target in ledger_bench.run(n=100 if quick else 500):
        lines.append((name, f"{value:,.1f}" if value >= 100 else f"{value:.4g}", target))
    lines += concurrency_bench.run(quick=quick)
    from bench import fleet_bench

    lines += fleet_bench.run(quick=quick)  # N processes x M threads on one PostgreSQL budget
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rounds = 300 if args.quick else 2000
    lines = (overhead_200(rounds) + paid_request_split(100 if args.quick else 500) + signing(100 if args.quick else 500)
             + extra_benchmarks(args.quick))
    if args.json:
        print(json.dumps([{"name": n, "value": v, "target": t} for n, v, t in lines], indent=2))
    else:
        for n, v, t in lines:
            print(f"{n}: {v} ({t})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
