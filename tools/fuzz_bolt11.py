"""Differential fuzzing of httpay's BOLT11 reader against the `bolt11` package.

Every input is decoded by both; they must accept and reject alike and, when both accept, agree on
every field httpay reads (network, amount, timestamp, payment hash and secret, description and its
hash, expiry, final CLTV, payee, metadata). Inputs: real signed invoices mutated as text (so the
checksum usually breaks), mutated as 5-bit groups with the checksum made anew (so the tagged
fields, the amount prefix and the signature are what is tested), and random group strings.
Run through `python tools/fuzz.py --bolt11-differential N`.
"""

from __future__ import annotations

import random
import re
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "src", ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bech32 import CHARSET, bech32_create_checksum

PREFIXES = ["lnbc", "lnbcrt", "lntb", "lntbs", "lnbc10u", "lnbc1p", "lnbc10p", "lnbc0", "lnbc2500m", "lnxx", "lnbc1x",
            "lnbc12345678901234567890123456789012p", "lnbc10u_", "lnbcrt1", "lnbc" + "9" * 40, "lnsb10", "lnbc10n-x",
            "lnb", "LNBC10U", "lnbc010", "lntbs1m"]
TAGS = [CHARSET.index(c) for c in "phsndxcfmr9"]


def oracle(text: str) -> tuple[Any, ...] | None:
    import bolt11
    from bolt11.models.tags import TagChar as T

    try:
        inv = bolt11.decode(text, ignore_exceptions=True)
    except Exception:  # noqa: BLE001 - any exception is "rejected"
        return None
    # The amount, exactly: the package reads it through a 28-digit Decimal (rounding amounts beyond all
    # bitcoin) and rounds a pico amount that is no whole msat down, where BOLT 11 says a reader MUST fail.
    amount = None if inv.amount_msat is None else int(inv.amount_msat)
    found = re.fullmatch(r"ln[a-z]+?(\d+)([munp]?)", text.lower()[:text.lower().rfind("1")])
    if found:
        exact = Fraction(int(found.group(1))) * 10**11 / {"": 1, "m": 10**3, "u": 10**6, "n": 10**9, "p": 10**12}[
            found.group(2)]
        if exact.denominator != 1:
            return None
        amount = int(exact)
    def tag(c: Any) -> Any:
        t = inv.tags.get(c)
        return t.data if t else None
    return (inv.currency, None if inv.amount_msat is None else amount, inv.date, tag(T.payment_hash),
            tag(T.payment_secret), tag(T.description), tag(T.description_hash), tag(T.expire_time),
            tag(T.min_final_cltv_expiry), inv.payee, tag(T.metadata))


def ours(text: str) -> tuple[Any, ...] | None:
    from httpay.bolt11_reader import Bolt11Invalid, read_bolt11

    try:
        f = read_bolt11(text)
    except Bolt11Invalid:
        return None
    return (f.currency, f.amount_msat, f.timestamp, f.payment_hash, f.payment_secret, f.description,
            f.description_hash, f.expiry, f.min_final_cltv_expiry, f.payee, f.metadata)


def seeds() -> list[str]:
    from tests.helpers import make_invoice

    out = [make_invoice(a, network=n, description=d)[0]
           for a in (None, 1, 10_000, 123_456_789, 10**15)
           for n in ("regtest", "bitcoin", "testnet", "signet") for d in ("1 Credit Package", "", "ü" * 30)]
    return out


def _encode(hrp: str, data: list[int]) -> str:
    return hrp + "1" + "".join(CHARSET[d] for d in data + bech32_create_checksum(hrp, data))


def _split(text: str) -> tuple[str, list[int]]:
    pos = text.rfind("1")
    return text[:pos], [CHARSET.index(c) for c in text[pos + 1:]][:-6]


def one_input(rng: random.Random, pool: list[str]) -> str:
    kind = rng.random()
    if kind < 0.25:  # text mutation
        chars = list(rng.choice(pool))
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(chars))
            op = rng.random()
            if op < 0.5:
                chars[i] = rng.choice(CHARSET + "1AB\u212a")
            elif op < 0.7:
                del chars[i]
            elif op < 0.9:
                chars.insert(i, rng.choice(CHARSET))
            else:
                chars[i] = chars[i].upper()
        return "".join(chars)
    if kind < 0.9:  # group mutation, checksum made anew
        hrp, data = _split(rng.choice(pool))
        if rng.random() < 0.3:
            hrp = rng.choice(PREFIXES)
        for _ in range(rng.randint(0, 4)):
            if not data:
                data = [0]
            i, op = rng.randrange(len(data)), rng.random()
            if op < 0.3:
                data[i] = rng.randrange(32)
            elif op < 0.45:
                del data[i]
            elif op < 0.6:
                data.insert(i, rng.randrange(32))
            elif op < 0.85:
                tag = rng.choice(TAGS + [rng.randrange(32)])
                length = rng.choice([0, 1, 2, 52, 53, 10, rng.randrange(80)])
                j = rng.randint(7, max(7, len(data) - 104))
                data[j:j] = [tag, length >> 5, length & 31] + [rng.randrange(32) for _ in range(length)]
            else:
                data = data[:rng.randrange(len(data))]
        return _encode(hrp, data)
    # random groups under a random prefix
    return _encode(rng.choice(PREFIXES).lower(), [rng.randrange(32) for _ in range(rng.randrange(0, 400))])


def work(job: tuple[str, int]) -> tuple[int, int, list[str]]:
    """(inputs, accepted by both, disagreeing inputs) for `count` inputs from `seed`."""
    seed, count = job
    rng = random.Random(seed)
    pool = seeds()
    accepted, disagree = 0, []
    for _ in range(count):
        text = one_input(rng, pool)
        a, b = oracle(text), ours(text)
        if a != b:
            disagree.append(text)
        elif a is not None:
            accepted += 1
    return count, accepted, disagree[:20]


def campaign(count: int, seed: str, workers: int) -> int:
    from differential import campaign as run

    return run("bolt11", work, count, seed, workers, "accepted by both")
