#!/usr/bin/env python
"""Fuzz httpay's 402 readers: every input must give a model, None, or httpay's own typed error.

    python tools/fuzz.py [--count N] [--seed S] [--workers W]

Targets: the L402 v0.2 body parser, the WWW-Authenticate/L402 reader (plus the macaroon decoder
and credential builder on whatever it claims), the x402 readers (PAYMENT-REQUIRED header, v1
body, receipt headers), and the invoice check (decode_invoice + check_invoice on mutated real
invoices, re-checksummed so most get past bech32 into the decoder). Invoice decoding costs
~2 ms, so invoice inputs run at 1 per `--invoice-every` parser inputs and are counted apart.

Inputs are mutations of tests/corpus plus random structured JSON and header text, made with the
standard `random` module (deterministic for a given --seed and --workers). Exit status 1 if any
input raised anything other than the typed error.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import multiprocessing as mp
import random
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from httpay.errors import ChallengeError, InvoiceError  # noqa: E402
from httpay.protocols import l402_classic, l402_v02, macaroons, x402  # noqa: E402

CORPUS = ROOT / "tests" / "corpus"
PARSER_TARGETS = ("body", "l402", "x402")
TARGETS = (*PARSER_TARGETS, "invoice")
MAX_EXAMPLES = 5
MAX_LEN = 20_000

SPECIALS = ['"', "\\", ",", "=", " ", "\t", "\r\n", "\x00", "\ud800", "é", "💳", "\u202e", "{", "}", "[", "]",
            ":", "null", "1e400", "-0", "9" * 40, '\\"', "==", "L402 ", "LSAT ", "macaroon=", "token=", "invoice=",
            "lnbc", "x402Version", "offers", "accepts", "amount"]
TEXT_ALPHABET = [chr(c) for c in range(32, 127)] + SPECIALS
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/html",
                 "text/plain", "application/problem+json", "", None]
RANDOM_VALUES: list[Any] = [None, True, False, 0, -1, 1, 2**63, 2**256, 10**100, 1.5, -0.0, float("inf"), "", "0",
                            " 1 ", "1.0", "-5", "💳\u202e", "\ud800", "x" * 300, "lnbcrt1", [], {}, [[[[]]]],
                            {"a": {"b": {"c": None}}}, ["lightning"], "USD", "SAT", "0x" + "f" * 40]
KEY_RENAMES = {"offer_id": "id", "balance": "credits", "maxAmountRequired": "amount", "amount": "maxAmountRequired",
               "payTo": "pay_to", "x402Version": "version", "offers": "accepts", "accepts": "offers"}


# --- mutation helpers ---------------------------------------------------------------------------


def mutate_text(rng: random.Random, s: str, alphabet: list[str] = TEXT_ALPHABET) -> str:
    """A few edits: insert, delete, replace, cut, duplicate, truncate."""
    for _ in range(rng.randint(1, 4)):
        if not s:
            s = rng.choice(alphabet)
            continue
        i = rng.randrange(len(s) + 1)
        op = rng.random()
        if op < 0.3:
            s = s[:i] + rng.choice(alphabet) + s[i:]
        elif op < 0.45:
            s = s[:i] + s[i + 1:]
        elif op < 0.65:
            s = s[:i] + rng.choice(alphabet) + s[i + 1:]
        elif op < 0.75:
            j = rng.randrange(len(s) + 1)
            s = s[:min(i, j)] + s[max(i, j):]
        elif op < 0.88:
            j = min(len(s), i + rng.randint(1, 40))
            s = s[:i] + s[i:j] * rng.randint(2, 5) + s[i:]
        else:
            s = s[:i]
    return s[:MAX_LEN]


def mutate_bytes(rng: random.Random, b: bytes) -> bytes:
    out = bytearray(b)
    for _ in range(rng.randint(1, 4)):
        if not out:
            out.append(rng.randrange(256))
            continue
        i = rng.randrange(len(out))
        op = rng.random()
        if op < 0.35:
            out[i] ^= 1 << rng.randrange(8)
        elif op < 0.55:
            out[i] = rng.choice((0, 1, 2, 6, 0x30, 0x7F, 0x80, 0xFF))
        elif op < 0.7:
            out.insert(i, rng.randrange(256))
        elif op < 0.85:
            del out[i]
        else:
            del out[i:]
    return bytes(out)


def copy_json(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: copy_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [copy_json(x) for x in v]
    return v


def random_json(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 3 or r < 0.5:
        return copy_json(rng.choice(RANDOM_VALUES))  # a fresh copy: shared lists could grow cycles
    if r < 0.75:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["offers", "offer_id", "amount", "currency", "payment_methods", "version", "payment_request_url",
            "x402Version", "accepts", "scheme", "network", "payTo", "asset", "error", "resource", "k", ""]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def mutate_json(rng: random.Random, doc: Any) -> Any:
    """Replace, delete, add or rename one node somewhere in a copy of `doc`."""
    doc = copy_json(doc)
    for _ in range(rng.randint(1, 3)):
        containers: list[Any] = []
        stack = [doc]
        while stack:
            node = stack.pop()
            if isinstance(node, dict | list):
                containers.append(node)
                stack.extend(node.values() if isinstance(node, dict) else node)
        if not containers:
            return random_json(rng)
        node = rng.choice(containers)
        op = rng.random()
        if isinstance(node, dict):
            if node and op < 0.5:
                key = rng.choice(list(node))
                node[key] = copy_json(rng.choice(RANDOM_VALUES)) if rng.random() < 0.7 else random_json(rng)
            elif node and op < 0.7:
                del node[rng.choice(list(node))]
            elif node and op < 0.85:
                key = rng.choice(list(node))
                node[KEY_RENAMES.get(key, key.upper())] = node.pop(key)
            else:
                node[rng.choice(["extra", "offer_id", "amount", "x402Version", "💳", ""])] = random_json(rng)
        else:
            if node and op < 0.5:
                node[rng.randrange(len(node))] = random_json(rng)
            elif node and op < 0.7:
                del node[rng.randrange(len(node))]
            elif node and op < 0.85:
                node.append(copy_json(rng.choice(node)))
            else:
                node.append(random_json(rng))
    return doc


def dumps(rng: random.Random, doc: Any) -> str:
    try:
        return json.dumps(doc, ensure_ascii=rng.random() < 0.5)
    except (ValueError, TypeError, RecursionError):
        return "{}"


# --- seeds --------------------------------------------------------------------------------------


class Seeds:
    """What the corpus holds, sorted by target."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.json_docs: list[Any] = []
        self.www: list[str] = []
        self.x402_docs: list[Any] = []
        self.x402_headers: list[str] = []
        self.macaroons: list[bytes] = []
        self.invoices: list[str] = []
        for path in sorted(CORPUS.glob("*.json")):
            doc = json.loads(path.read_text(encoding="utf-8"))
            body = doc.get("body")
            if isinstance(body, str) and len(body) < 5000:
                self.bodies.append(body)
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict):
                    (self.x402_docs if "x402Version" in parsed else self.json_docs).append(parsed)
            for name, value in doc["headers"]:
                if name.lower() == "www-authenticate":
                    self.www.append(value)
                elif name.lower() == "payment-required":
                    self.x402_headers.append(value)
                    try:
                        self.x402_docs.append(json.loads(base64.b64decode(value)))
                    except ValueError:
                        pass
        for value in self.www:
            try:
                ch = l402_classic.parse(402, [("www-authenticate", value)], None)
            except ChallengeError:
                continue
            if ch is not None:
                self.macaroons.append(macaroons.b64decode_any(ch.macaroon))
                self.invoices.append(ch.invoice)
        self.receipts = [
            {"success": True, "transaction": "0x" + "ab" * 32, "network": "eip155:84532", "payer": "0x" + "12" * 20,
             "amount": "10000"},
            {"success": False, "errorReason": "insufficient_funds", "transaction": "", "network": "base-sepolia"},
        ]


def make_invoices(rng: random.Random) -> list[str]:
    """A handful of real signed invoices, deterministic for the worker's seed."""
    from bolt11 import Bolt11, MilliSatoshi, Tags, encode
    from bolt11.types import TagChar

    key = hashlib.sha256(b"httpay fuzz node").hexdigest()
    out = []
    for cur, amount, desc in (("bcrt", 10_000, "1 Credit Package"), ("bc", 2_500_000, "x" * 200),
                              ("tb", None, "no amount"), ("bcrt", 1, "é💳"), ("tbs", 123_456_789_000, "")):
        tags = Tags()
        tags.add(TagChar.payment_hash, rng.randbytes(32).hex())
        tags.add(TagChar.payment_secret, rng.randbytes(32).hex())
        tags.add(TagChar.description, desc)
        tags.add(TagChar.expire_time, rng.choice((60, 3600, 86400)))
        inv = Bolt11(currency=cur, date=1_700_000_000 + rng.randrange(10**6), tags=tags,
                     amount_msat=MilliSatoshi(amount) if amount is not None else None)
        out.append(encode(inv, key))
    return out


# --- one input per target -----------------------------------------------------------------------


class Worker:
    def __init__(self, seed: str) -> None:
        self.rng = random.Random(seed)
        self.seeds = Seeds()
        self.invoices = make_invoices(self.rng) + self.seeds.invoices

    def body_input(self) -> tuple[int, dict[str, str], bytes | str]:
        rng, s = self.rng, self.seeds
        r = rng.random()
        if r < 0.35:
            text = mutate_text(rng, rng.choice(s.bodies))
        elif r < 0.85:
            text = dumps(rng, mutate_json(rng, rng.choice(s.json_docs + s.x402_docs)))
            if rng.random() < 0.2:
                text = mutate_text(rng, text)
        else:
            text = dumps(rng, random_json(rng))
        ctype = rng.choice(CONTENT_TYPES)
        headers = {} if ctype is None else {"Content-Type": ctype}
        status = 402 if rng.random() < 0.95 else rng.choice((200, 401, 500))
        body: bytes | str = text.encode("utf-8", "surrogatepass") if rng.random() < 0.7 else text
        return status, headers, body

    def _value(self) -> str:
        rng, s = self.rng, self.seeds
        r = rng.random()
        if r < 0.3 and s.macaroons:
            raw = rng.choice(s.macaroons)
            raw = mutate_bytes(rng, raw) if rng.random() < 0.7 else raw
            enc = base64.urlsafe_b64encode(raw) if rng.random() < 0.3 else base64.b64encode(raw)
            return enc.decode().rstrip("=" if rng.random() < 0.3 else "")
        if r < 0.55 and s.invoices:
            inv = rng.choice(s.invoices)
            return mutate_text(rng, inv) if rng.random() < 0.3 else inv
        if r < 0.7:
            return rng.choice(["0", "1", "", "0.2", "L402"])
        return mutate_text(rng, "", TEXT_ALPHABET)

    def _header(self) -> str:
        rng = self.rng
        parts = []
        for _ in range(rng.randint(1, 3)):
            scheme = rng.choice(["L402", "LSAT", "l402", "lsat", "Bearer", "Payment", "Cashu", "Basic", "L40", "X"])
            params = []
            for _ in range(rng.randint(0, 4)):
                name = rng.choice(["macaroon", "token", "invoice", "version", "realm", "id", "MACAROON", "x"])
                value = self._value()
                if rng.random() < 0.7:
                    value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
                params.append(f"{name}{rng.choice(['=', ' = ', '='])}{value}")
            sep = rng.choice([", ", ",", " ", ",,", " , "])
            parts.append(scheme + (" " + sep.join(params) if params else ""))
        return rng.choice([", ", ",", " "]).join(parts)

    def l402_input(self) -> list[tuple[str, str]]:
        rng, s = self.rng, self.seeds
        values = []
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            r = rng.random()
            if r < 0.35:
                values.append(mutate_text(rng, rng.choice(s.www)))
            elif r < 0.75:
                values.append(self._header())
            else:
                a, b = rng.choice(s.www), rng.choice(s.www)
                values.append(mutate_text(rng, a[: rng.randrange(len(a) + 1)] + b[rng.randrange(len(b) + 1):]))
        return [("WWW-Authenticate", v) for v in values]

    def x402_input(self) -> tuple[dict[str, str], bytes | str | None]:
        rng, s = self.rng, self.seeds
        r = rng.random()
        if r < 0.4:
            doc = mutate_json(rng, rng.choice(s.x402_docs))
            if rng.random() < 0.5:
                return {"PAYMENT-REQUIRED": base64.b64encode(dumps(rng, doc).encode("utf-8", "surrogatepass")).decode()}, None
            return {"content-type": rng.choice(["application/json", ""])}, dumps(rng, doc)
        if r < 0.6:
            return {"PAYMENT-REQUIRED": mutate_text(rng, rng.choice(s.x402_headers))}, None
        if r < 0.75:
            text = mutate_text(rng, dumps(rng, rng.choice(s.x402_docs)))
            return {"PAYMENT-REQUIRED": base64.b64encode(text.encode("utf-8", "surrogatepass")).decode()}, None
        receipt = mutate_json(rng, rng.choice(s.receipts))
        name = rng.choice(["PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE"])
        enc = base64.b64encode(dumps(rng, receipt).encode("utf-8", "surrogatepass")).decode()
        return {name: mutate_text(rng, enc) if rng.random() < 0.3 else enc}, None

    def invoice_input(self) -> tuple[str, dict[str, Any]]:
        from bech32 import bech32_decode, bech32_encode

        rng = self.rng
        inv = rng.choice(self.invoices)
        r = rng.random()
        if r < 0.6:
            hrp, data = bech32_decode(inv.lower())
            if hrp is not None and data is not None:
                data = list(data)
                for _ in range(rng.randint(1, 3)):
                    op = rng.random()
                    i = rng.randrange(len(data))
                    if op < 0.6:
                        data[i] = rng.randrange(32)
                    elif op < 0.8:
                        del data[i]
                    else:
                        data.insert(i, rng.randrange(32))
                if rng.random() < 0.3:
                    hrp = rng.choice(["lnbcrt", "lnbc", "lntb", "lntbs", "lnbc1", "lnbc0n", "lnbc2500000000000p",
                                      "lnbc99999999999999999999m", "lnbc1p", "lnsb", "ln", "lnbcrt10u"])
                inv = bech32_encode(hrp, data) or inv
        elif r < 0.9:
            inv = mutate_text(rng, inv, list("qpzry9x8gf2tvdw0s3jn54khce6mua7l1") + ["lightning:", " ", "LN"])
        check = {
            "network": rng.choice(["regtest", "bitcoin", "testnet", "signet"]),
            "expected_msat": rng.choice([None, 0, 1, 10_000, 2**64]),
            "tolerance": rng.choice([0.0, 0.02, 1.0]),
            "max_msat": rng.choice([None, 1, 10**12]),
            "now": datetime.fromtimestamp(1_700_000_000 + rng.randrange(-10**9, 10**9), tz=timezone.utc),
            "payee": rng.choice([None, "02" + "ab" * 32]),
            "payment_hash": rng.choice([None, "00" * 32]),
        }
        return inv, check


def run_body(inp: Any) -> None:
    out = l402_v02.parse(*inp)
    if out is not None:
        str(out), repr(out), out.to_dict(), out.by_payment("lightning")


def run_l402(inp: Any) -> None:
    out = l402_classic.parse(402, inp, None)
    if out is None:
        return
    str(out), repr(out)
    try:
        out.macaroon_info()
    except ChallengeError:
        pass
    l402_classic.parse_credential(out.credential(hashlib.sha256(out.macaroon.encode()).hexdigest()))


def run_x402(inp: Any) -> None:
    headers, body = inp
    out = x402.parse(402, headers, body)
    if out is not None:
        str(out), repr(out), [str(o) for o in out.to_offers()]
    receipt = x402.decode_payment_response(headers)
    if receipt is not None:
        str(receipt)


def run_invoice(inp: Any) -> None:
    from httpay.lightning import check_invoice, decode_invoice

    bolt11, check = inp
    inv = decode_invoice(bolt11)
    str(inv), repr(inv)
    check_invoice(inv, **check)


RUNNERS: dict[str, tuple[Callable[[Any], None], type[Exception]]] = {
    "body": (run_body, ChallengeError), "l402": (run_l402, ChallengeError),
    "x402": (run_x402, ChallengeError), "invoice": (run_invoice, InvoiceError),
}


def work(job: tuple[str, int, int]) -> dict[str, Any]:
    """Run `count` parser inputs (and the invoice share) in one process; return the tallies."""
    seed, count, invoice_every = job
    w = Worker(seed)
    makers = {"body": w.body_input, "l402": w.l402_input, "x402": w.x402_input, "invoice": w.invoice_input}
    stats = {t: {"runs": 0, "handled": 0, "unhandled": 0, "examples": []} for t in TARGETS}

    def one(target: str) -> None:
        inp = makers[target]()
        run, handled = RUNNERS[target]
        st = stats[target]
        st["runs"] += 1
        try:
            run(inp)
        except handled:
            st["handled"] += 1
        except Exception as exc:  # noqa: BLE001 - this is what the fuzzer hunts
            st["unhandled"] += 1
            if len(st["examples"]) < MAX_EXAMPLES:
                tb = traceback.extract_tb(exc.__traceback__)[-1]
                st["examples"].append(
                    f"{type(exc).__name__}: {str(exc)[:200]} at {Path(tb.filename).name}:{tb.lineno}\n"
                    f"      input: {repr(inp)[:600]}")

    for i in range(count):
        one(PARSER_TARGETS[i % len(PARSER_TARGETS)])
        if invoice_every and i % invoice_every == 0:
            one("invoice")
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1_000_000, help="parser inputs in all (default 1,000,000)")
    ap.add_argument("--seed", default="0", help="seed; the same seed and workers give the same inputs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--invoice-every", type=int, default=200, help="one invoice input per this many parser inputs")
    args = ap.parse_args(argv)
    workers = max(1, args.workers)
    shares = [args.count // workers + (1 if i < args.count % workers else 0) for i in range(workers)]
    jobs = [(f"{args.seed}:{i}", n, args.invoice_every) for i, n in enumerate(shares)]
    start = time.perf_counter()
    if workers == 1:
        results = [work(jobs[0])]
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            results = pool.map(work, jobs)
    elapsed = time.perf_counter() - start

    total = {t: {"runs": 0, "handled": 0, "unhandled": 0, "examples": []} for t in TARGETS}
    for res in results:
        for t in TARGETS:
            for k in ("runs", "handled", "unhandled"):
                total[t][k] += res[t][k]
            total[t]["examples"] += res[t]["examples"]
    labels = {"body": "402 body (l402_v02.parse)", "l402": "WWW-Authenticate/L402 (+macaroons)",
              "x402": "x402 header/body/receipt", "invoice": "invoice decode+check"}
    print(f"httpay fuzz: seed {args.seed!r}, {workers} workers, {elapsed:.1f} s")
    print(f"{'target':38} {'inputs':>10} {'handled':>10} {'unhandled':>10}")
    for t in TARGETS:
        s = total[t]
        print(f"{labels[t]:38} {s['runs']:>10,} {s['handled']:>10,} {s['unhandled']:>10,}")
    runs = sum(s["runs"] for s in total.values())
    bad = sum(s["unhandled"] for s in total.values())
    print(f"{'total':38} {runs:>10,} {sum(s['handled'] for s in total.values()):>10,} {bad:>10,}")
    print(f"rate: {runs / elapsed:,.0f} inputs/s")
    for t in TARGETS:
        for ex in total[t]["examples"][:MAX_EXAMPLES]:
            print(f"  UNHANDLED in {t}: {ex}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
