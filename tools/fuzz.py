#!/usr/bin/env python
"""Fuzz httpay's 402 readers: every input must give a model, None, or httpay's own typed error.

    python tools/fuzz.py [--count N] [--seed S] [--workers W] [--engine atheris|random]

Targets: the L402 v0.2 body parser, the WWW-Authenticate/L402 reader (plus the macaroon decoder
and credential builder on whatever it claims), the x402 readers (PAYMENT-REQUIRED header, v1
body, receipt headers), and the invoice check (decode_invoice + check_invoice on mutated real
invoices, re-checksummed so most get past bech32 into the decoder). Invoice decoding costs
~2 ms, so invoice inputs run at most 1 per `--invoice-every` parser inputs and are counted apart.

Engines:
  atheris (default)  coverage-guided: libFuzzer (via atheris) mutates raw bytes, seeded with
                     tests/corpus, watching which branches of the instrumented httpay package each
                     input reaches; one FuzzedDataProvider picks the target and builds its input.
                     W worker processes of N/W inputs each, with libFuzzer seeds derived from S.
  random             blind: mutations of tests/corpus plus random structured JSON and header text,
                     made with the standard `random` module (deterministic for --seed and --workers).

Exit status 1 if any input raised anything other than the typed error (or a worker died).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import importlib.util
import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

# An atheris worker process gets its job in this variable; it must instrument httpay as it imports it.
ATHERIS_JOB_ENV = "HTTPAY_FUZZ_ATHERIS_JOB"
if os.environ.get(ATHERIS_JOB_ENV):
    import atheris

    _instrumented: contextlib.AbstractContextManager[Any] = atheris.instrument_imports(include=["httpay"])
else:
    _instrumented = contextlib.nullcontext()
with _instrumented:
    import httpay.lightning  # noqa: F401 - loaded here so the atheris worker instruments it
    from httpay.errors import ChallengeError, InvoiceError
    from httpay.protocols import l402_classic, l402_v02, macaroons, x402

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
HRPS = ["lnbcrt", "lnbc", "lntb", "lntbs", "lnbc1", "lnbc0n", "lnbc2500000000000p", "lnbc99999999999999999999m",
        "lnbc1p", "lnsb", "ln", "lnbcrt10u"]
NETWORKS = ["regtest", "bitcoin", "testnet", "signet"]
EXPECTED_MSAT: list[int | None] = [None, 0, 1, 10_000, 2**64]
TOLERANCES = [0.0, 0.02, 1.0]
MAX_MSAT: list[int | None] = [None, 1, 10**12]
PAYEES: list[str | None] = [None, "02" + "ab" * 32]
PAYMENT_HASHES: list[str | None] = [None, "00" * 32]
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
                    with contextlib.suppress(ValueError):
                        self.x402_docs.append(json.loads(base64.b64decode(value)))
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
                    hrp = rng.choice(HRPS)
                inv = bech32_encode(hrp, data) or inv
        elif r < 0.9:
            inv = mutate_text(rng, inv, list("qpzry9x8gf2tvdw0s3jn54khce6mua7l1") + ["lightning:", " ", "LN"])
        check = {
            "network": rng.choice(NETWORKS),
            "expected_msat": rng.choice(EXPECTED_MSAT),
            "tolerance": rng.choice(TOLERANCES),
            "max_msat": rng.choice(MAX_MSAT),
            "now": datetime.fromtimestamp(1_700_000_000 + rng.randrange(-10**9, 10**9), tz=UTC),
            "payee": rng.choice(PAYEES),
            "payment_hash": rng.choice(PAYMENT_HASHES),
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
    with contextlib.suppress(ChallengeError):
        out.macaroon_info()
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


Stats = dict[str, dict[str, Any]]


def new_stats() -> Stats:
    return {t: {"runs": 0, "handled": 0, "unhandled": 0, "examples": []} for t in TARGETS}


def run_one(stats: Stats, target: str, inp: Any) -> None:
    """Run one input; the typed error counts as handled, anything else is what the campaign hunts."""
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


def work(job: tuple[str, int, int]) -> Stats:
    """Run `count` parser inputs (and the invoice share) in one process; return the tallies."""
    seed, count, invoice_every = job
    w = Worker(seed)
    makers = {"body": w.body_input, "l402": w.l402_input, "x402": w.x402_input, "invoice": w.invoice_input}
    stats = new_stats()
    for i in range(count):
        target = PARSER_TARGETS[i % len(PARSER_TARGETS)]
        run_one(stats, target, makers[target]())
        if invoice_every and i % invoice_every == 0:
            run_one(stats, "invoice", makers["invoice"]())
    return stats


# --- the atheris engine: coverage-guided ---------------------------------------------------------
#
# libFuzzer hands TestOneInput raw bytes. Control values (target, status, content type, mode...) are
# read one byte each from the END of the buffer (FuzzedDataProvider takes integers from the end) and
# the rest, from the front, is the payload. So a seed is `payload + reversed(control bytes)`, which is
# how the corpus becomes seeds below.

ATHERIS_MAX_LEN = 8192
TARGET_BYTE = {"body": 0, "l402": 5, "x402": 10, "invoice": 15}  # target = byte % 16, see FdpInputs.target
HEADER_NAMES = ["WWW-Authenticate", "www-authenticate", "Www-Authenticate"]
X402_MODES = ("b64-header", "raw-header", "body", "receipt")
RECEIPT_NAMES = ["PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE"]
X402_CONTENT_TYPES = ["application/json", "", "text/plain"]


def seed_bytes(payload: bytes, *controls: int) -> bytes:
    """The raw input that makes FdpInputs read these controls (in order) and this payload."""
    return payload + bytes(reversed(controls))


def _text(payload: bytes, latin1: bool) -> str:
    return payload.decode("latin-1") if latin1 else payload.decode("utf-8", "replace")


def _b64(payload: bytes, variant: int) -> str:
    if variant % 3 == 1:
        return base64.urlsafe_b64encode(payload).decode()
    enc = base64.b64encode(payload).decode()
    return enc.rstrip("=") if variant % 3 == 2 else enc


class FdpInputs:
    """Builds each target's input from a FuzzedDataProvider; caps the slow invoice target's share."""

    def __init__(self, invoice_every: int) -> None:
        self.invoices = make_invoices(random.Random("atheris invoices")) + Seeds().invoices
        self.invoice_every = invoice_every

    def target(self, fdp: Any, stats: Stats) -> str:
        b = fdp.ConsumeIntInRange(0, 255) % 16
        if b == 15:
            parser_runs = sum(stats[t]["runs"] for t in PARSER_TARGETS)
            if self.invoice_every and stats["invoice"]["runs"] <= parser_runs // self.invoice_every:
                return "invoice"
            return PARSER_TARGETS[fdp.ConsumeIntInRange(0, 255) % 3]  # over its share: a parser gets it
        return PARSER_TARGETS[b // 5]

    @staticmethod
    def _byte(fdp: Any) -> int:
        return int(fdp.ConsumeIntInRange(0, 255))

    def body(self, fdp: Any) -> tuple[int, dict[str, str], bytes | str]:
        status_b, ctype_b, form = self._byte(fdp), self._byte(fdp), self._byte(fdp) % 3
        status = 402 if status_b < 240 else (200, 401, 500)[status_b % 3]
        ctype = CONTENT_TYPES[ctype_b % len(CONTENT_TYPES)]
        payload = fdp.ConsumeBytes(fdp.remaining_bytes())
        headers = {} if ctype is None else {"Content-Type": ctype}
        return status, headers, payload if form == 0 else _text(payload, latin1=form == 2)

    def l402(self, fdp: Any) -> list[tuple[str, str]]:
        latin1, names = self._byte(fdp) % 2 == 1, self._byte(fdp)
        values = _text(fdp.ConsumeBytes(fdp.remaining_bytes()), latin1).split("\n")
        if names % 4 == 3:  # other headers in between must be ignored
            return [("WWW-Authenticate" if i % 2 == 0 else "Content-Type", v) for i, v in enumerate(values)]
        return [(HEADER_NAMES[names % 4], v) for v in values]

    def x402(self, fdp: Any) -> tuple[dict[str, str], bytes | str | None]:
        mode, var = X402_MODES[self._byte(fdp) % len(X402_MODES)], self._byte(fdp)
        payload = fdp.ConsumeBytes(fdp.remaining_bytes())
        if mode == "b64-header":
            return {"PAYMENT-REQUIRED": _b64(payload, var)}, None
        if mode == "raw-header":
            return {"PAYMENT-REQUIRED": _text(payload, latin1=var % 2 == 1)}, None
        if mode == "body":
            ctype = X402_CONTENT_TYPES[var % 3]
            return {"content-type": ctype}, payload if var // 3 % 2 == 0 else _text(payload, latin1=False)
        return {RECEIPT_NAMES[var % 2]: _b64(payload, var // 2)}, None

    def invoice(self, fdp: Any) -> tuple[str, dict[str, Any]]:
        """Mode 0: the payload is the invoice text. Modes 1-2: a real invoice, its 5-bit words edited by
        the payload (4 bytes an edit: op, position, value) and re-checksummed; mode 2 also swaps the hrp."""
        from bech32 import bech32_decode, bech32_encode

        idx, mode = self._byte(fdp), self._byte(fdp) % 3
        check = {
            "network": NETWORKS[self._byte(fdp) % len(NETWORKS)],
            "expected_msat": EXPECTED_MSAT[self._byte(fdp) % len(EXPECTED_MSAT)],
            "tolerance": TOLERANCES[self._byte(fdp) % len(TOLERANCES)],
            "max_msat": MAX_MSAT[self._byte(fdp) % len(MAX_MSAT)],
            "now": datetime.fromtimestamp(1_700_000_000 + (fdp.ConsumeIntInRange(0, 2**24 - 1) - 2**23) * 120,
                                          tz=UTC),
            "payee": PAYEES[self._byte(fdp) % len(PAYEES)],
            "payment_hash": PAYMENT_HASHES[self._byte(fdp) % len(PAYMENT_HASHES)],
        }
        hrp_b = self._byte(fdp)
        payload = fdp.ConsumeBytes(fdp.remaining_bytes())
        if mode == 0:
            return payload.decode("utf-8", "replace"), check
        inv = self.invoices[idx % len(self.invoices)]
        hrp, data = bech32_decode(inv.lower())
        if hrp is None or data is None:
            return inv, check
        words = list(data)
        for k in range(0, min(len(payload), 32) - 3, 4):
            op, pos, val = payload[k] % 3, int.from_bytes(payload[k + 1:k + 3], "big"), payload[k + 3] % 32
            if op == 0 and words:
                words[pos % len(words)] = val
            elif op == 1 and words:
                del words[pos % len(words)]
            else:
                words.insert(pos % (len(words) + 1), val)
        if mode == 2:
            hrp = HRPS[hrp_b % len(HRPS)]
        return bech32_encode(hrp, words) or inv, check

    def build(self, target: str, fdp: Any) -> Any:
        return {"body": self.body, "l402": self.l402, "x402": self.x402, "invoice": self.invoice}[target](fdp)


def write_seeds(dest: Path) -> int:
    """tests/corpus as raw atheris inputs (one file each); returns how many."""
    s = Seeds()
    fdp_inputs = FdpInputs(0)
    t = TARGET_BYTE
    seeds: list[bytes] = []
    for path in sorted(CORPUS.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        body = doc.get("body")
        if isinstance(body, str):
            ctypes = [v.split(";")[0].strip().lower() for n, v in doc["headers"] if n.lower() == "content-type"]
            ci = CONTENT_TYPES.index(ctypes[0] if ctypes and ctypes[0] in CONTENT_TYPES else None if not ctypes
                                     else "text/plain")
            raw = body.encode("utf-8", "surrogatepass")[:ATHERIS_MAX_LEN - 8]
            seeds += [seed_bytes(raw, t["body"], 0, ci, 0), seed_bytes(raw, t["x402"], X402_MODES.index("body"), 0)]
        www = [v for n, v in doc["headers"] if n.lower() == "www-authenticate"]
        if www:
            seeds.append(seed_bytes("\n".join(www).encode("utf-8", "surrogatepass"), t["l402"], 0, 0))
    for value in s.x402_headers:
        seeds.append(seed_bytes(value.encode("latin-1", "replace"), t["x402"], X402_MODES.index("raw-header"), 0))
    for d in s.x402_docs:
        seeds.append(seed_bytes(json.dumps(d).encode(), t["x402"], X402_MODES.index("b64-header"), 0))
    for r in s.receipts:
        seeds.append(seed_bytes(json.dumps(r).encode(), t["x402"], X402_MODES.index("receipt"), 0))
    for i, inv in enumerate(fdp_inputs.invoices):
        # target, index, mode 0 (the text is the invoice), network, expected, tolerance, max, now (3), payee,
        # payment hash, hrp
        controls = (t["invoice"], i, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0)
        seeds.append(seed_bytes(inv.encode(), *controls))
        seeds.append(seed_bytes(bytes([0, 0, 9, 7]), t["invoice"], i, 1, *controls[3:]))  # one word edited
    dest.mkdir(parents=True, exist_ok=True)
    for raw in seeds:
        (dest / hashlib.sha1(raw).hexdigest()).write_bytes(raw)
    return len(seeds)


def atheris_worker(job: dict[str, Any]) -> None:
    """One libFuzzer process. libFuzzer ends with C exit(), which skips Python's atexit, so the
    worker stops itself after exactly `runs` inputs, writing its tallies as JSON first."""
    import atheris

    inputs = FdpInputs(job["invoice_every"])
    stats = new_stats()
    done = 0

    def finish() -> None:
        tmp = Path(job["summary"] + ".tmp")
        tmp.write_text(json.dumps(stats))
        tmp.replace(job["summary"])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    def test_one_input(data: bytes) -> None:
        nonlocal done
        fdp = atheris.FuzzedDataProvider(data)
        target = inputs.target(fdp, stats)
        run_one(stats, target, inputs.build(target, fdp))
        done += 1
        if done >= job["runs"]:
            finish()

    if job["runs"] <= 0:
        finish()
    atheris.Setup([sys.argv[0], f"-seed={job['seed']}", f"-max_len={ATHERIS_MAX_LEN}", "-timeout=60",
                   f"-runs={2 * job['runs'] + 10_000}",  # a backstop only: finish() ends the run first
                   f"-artifact_prefix={job['dir']}/", job["corpus"], job["seeds"]], test_one_input)
    atheris.Fuzz()


def run_atheris(count: int, seed: str, workers: int, invoice_every: int) -> tuple[list[Stats], str]:
    """Spawn the workers (N/W inputs each, distinct libFuzzer seeds); return their tallies and,
    if one died without tallies, what went wrong."""
    tmp = Path(tempfile.mkdtemp(prefix="httpay-fuzz-"))
    write_seeds(tmp / "seeds")
    shares = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
    base = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") % (2**31 - workers - 1) + 1
    procs = []
    for i, n in enumerate(shares):
        (tmp / f"corpus{i}").mkdir()
        job = {"runs": n, "seed": base + i, "invoice_every": invoice_every, "summary": str(tmp / f"stats{i}.json"),
               "corpus": str(tmp / f"corpus{i}"), "seeds": str(tmp / "seeds"), "dir": str(tmp)}
        env = {**os.environ, ATHERIS_JOB_ENV: json.dumps(job)}
        with open(tmp / f"worker{i}.log", "wb") as log:
            procs.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve())], env=env, cwd=tmp,
                                          stdout=log, stderr=subprocess.STDOUT))
    results, problems = [], []
    for i, proc in enumerate(procs):
        code = proc.wait()
        summary = tmp / f"stats{i}.json"
        if summary.exists():
            results.append(json.loads(summary.read_text()))
        else:
            log = tmp / f"worker{i}.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
            problems.append(f"atheris worker {i} ended (exit {code}) without its tallies; "
                            f"its log and artifacts are kept in {tmp}\n{tail}")
    if not problems:
        shutil.rmtree(tmp, ignore_errors=True)
    return results, "\n".join(problems)


# --- the command --------------------------------------------------------------------------------


def report(engine: str, seed: str, workers: int, elapsed: float, results: list[Stats]) -> int:
    """Print the per-target table; return how many inputs went unhandled."""
    total = new_stats()
    for res in results:
        for t in TARGETS:
            for k in ("runs", "handled", "unhandled"):
                total[t][k] += res[t][k]
            total[t]["examples"] += res[t]["examples"]
    labels = {"body": "402 body (l402_v02.parse)", "l402": "WWW-Authenticate/L402 (+macaroons)",
              "x402": "x402 header/body/receipt", "invoice": "invoice decode+check"}
    print(f"httpay fuzz: engine {engine}, seed {seed!r}, {workers} workers, {elapsed:.1f} s")
    print(f"{'target':38} {'inputs':>10} {'handled':>10} {'unhandled':>10}")
    for t in TARGETS:
        s = total[t]
        print(f"{labels[t]:38} {s['runs']:>10,} {s['handled']:>10,} {s['unhandled']:>10,}")
    runs = sum(s["runs"] for s in total.values())
    bad = sum(s["unhandled"] for s in total.values())
    print(f"{'total':38} {runs:>10,} {sum(s['handled'] for s in total.values()):>10,} {bad:>10,}")
    print(f"rate: {runs / max(elapsed, 1e-9):,.0f} inputs/s")
    for t in TARGETS:
        for ex in total[t]["examples"][:MAX_EXAMPLES]:
            print(f"  UNHANDLED in {t}: {ex}")
    sys.stdout.flush()
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", choices=("atheris", "random"), default="atheris",
                    help="atheris: coverage-guided libFuzzer (default); random: blind mutation with `random`")
    ap.add_argument("--count", type=int, default=1_000_000,
                    help="inputs in all (default 1,000,000; with --engine random: parser inputs, plus the invoice share)")
    ap.add_argument("--seed", default="0", help="seed; random: the same seed and workers give the same inputs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--invoice-every", type=int, default=200, help="one invoice input per this many parser inputs")
    ap.add_argument("--bolt11-differential", type=int, metavar="N",
                    help="instead: N inputs decoded by httpay's BOLT11 reader and by the bolt11 package, which must agree")
    ap.add_argument("--eip712-differential", type=int, metavar="N",
                    help="instead: N typed-data messages digested by httpay's EIP-712 encoder and by eth-account")
    args = ap.parse_args(argv)
    workers = max(1, args.workers)
    if args.bolt11_differential is not None:
        from fuzz_bolt11 import campaign

        return campaign(args.bolt11_differential, args.seed, workers)
    if args.eip712_differential is not None:
        from fuzz_eip712 import campaign as eip712_campaign

        return eip712_campaign(args.eip712_differential, args.seed, workers)
    start = time.perf_counter()
    problems = ""
    if args.engine == "atheris":
        if importlib.util.find_spec("atheris") is None:
            print("atheris is not installed: `pip install atheris` (it is in the `test` extra), "
                  "or run the blind generator with --engine random", file=sys.stderr)
            return 2
        results, problems = run_atheris(args.count, args.seed, workers, args.invoice_every)
    else:
        shares = [args.count // workers + (1 if i < args.count % workers else 0) for i in range(workers)]
        jobs = [(f"{args.seed}:{i}", n, args.invoice_every) for i, n in enumerate(shares)]
        if workers == 1:
            results = [work(jobs[0])]
        else:
            with mp.get_context("spawn").Pool(workers) as pool:
                results = pool.map(work, jobs)
    bad = report(args.engine, args.seed, workers, time.perf_counter() - start, results)
    if problems:
        print(problems)
    return 1 if bad or problems else 0


if __name__ == "__main__":
    job_text = os.environ.get(ATHERIS_JOB_ENV)
    if job_text:
        atheris_worker(json.loads(job_text))
    sys.exit(main())
