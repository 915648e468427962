"""Differential fuzzing of httpay's EIP-712 encoder against eth-account.

Every input is typed data (random struct types, nested structs and arrays, every atomic type) with
values both plain and hostile (numeric strings, hex strings for bytes, out-of-range integers, bad
address checksums, missing and extra fields). Where httpay's encoder gives a digest, eth-account
must give the same one; where eth-account refuses the message, httpay's encoder must give none
(so the signer asks eth-account, which refuses it). Signatures are compared too, on a share of the
inputs. Run through `python tools/fuzz.py --eip712-differential N`.
"""

from __future__ import annotations

import random
import string
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "src", ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

ATOMIC = ["address", "bool", "string", "bytes", "uint256", "uint8", "uint64", "int256", "int8", "int128", "bytes32",
          "bytes1", "bytes4", "bytes20"]
KEY = "0x" + "5e" * 32


def _checksum(rng: random.Random) -> str:
    from eth_utils import to_checksum_address

    return str(to_checksum_address("0x" + rng.randbytes(20).hex()))


def _value(rng: random.Random, kind: str, types: dict[str, list[dict[str, str]]], depth: int, plain: bool) -> Any:
    """A value for `kind`: usually one the fast path takes; unless `plain`, sometimes a hostile one."""
    hostile = not plain and rng.random() < 0.12
    if kind.endswith("]"):
        base, size = kind[:-1].rsplit("[", 1)
        n = int(size) if size else rng.randrange(0, 4)
        if hostile:
            n = max(0, n + rng.choice((-1, 1)))
        return [_value(rng, base, types, depth + 1, plain) for _ in range(n)]
    if kind in types:
        return _message(rng, kind, types, depth + 1, plain)
    if kind == "address":
        if hostile:
            good = _checksum(rng)
            return rng.choice([good[:-1] + ("a" if good[-1] != "a" else "B"), good.lower()[:-2], 1234,
                               "0x" + "G" * 40, good.swapcase()])
        return rng.choice([_checksum(rng), "0x" + rng.randbytes(20).hex(), "0x" + rng.randbytes(20).hex().upper()])
    if kind == "bool":
        return rng.choice([0, 1, "true", None]) if hostile else rng.random() < 0.5
    if kind == "string":
        return rng.randbytes(4) if hostile else "".join(rng.choice(string.printable + "éü€😀") for _ in range(rng.randrange(0, 30)))
    if kind == "bytes":
        return "0x" + rng.randbytes(3).hex() if hostile else rng.randbytes(rng.randrange(0, 70))
    if kind.startswith("bytes"):
        size = int(kind[5:])
        if hostile:
            return rng.choice([rng.randbytes(max(0, size - 1)), "0x" + rng.randbytes(size).hex(), rng.randbytes(size + 1)])
        return rng.randbytes(size)
    bits = int(kind.lstrip("uint") or 256)
    signed = not kind.startswith("u")
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if hostile:
        return rng.choice([str(rng.randint(0, 1000)), high + 1, low - 1, True, 1.5, hex(rng.randint(0, 1000))])
    return rng.choice([low, high, 0, rng.randint(low, high)])


def _message(rng: random.Random, name: str, types: dict[str, list[dict[str, str]]], depth: int,
             plain: bool) -> dict[str, Any]:
    fields = types[name]
    out = {f["name"]: _value(rng, f["type"], types, depth, plain) for f in fields}
    if not plain and rng.random() < 0.05 and out:
        out.pop(rng.choice(list(out)))
    if not plain and rng.random() < 0.05:
        out["extra"] = 1
    return out


def one_input(rng: random.Random) -> tuple[dict[str, Any], dict[str, list[dict[str, str]]], str, dict[str, Any]]:
    """(domain, types, primary type, message): a random set of struct types and a message of the first."""
    names = rng.sample(["Mail", "Person", "Asset", "Permit", "Order", "Zeta", "Alpha"], rng.randrange(1, 4))
    types: dict[str, list[dict[str, str]]] = {}
    for i, name in enumerate(names):
        later = names[i + 1:]  # a struct references only later ones: no cycles
        fields = []
        for j in range(rng.randrange(1, 6)):
            kind = rng.choice(ATOMIC + later * 3) if later else rng.choice(ATOMIC)
            if rng.random() < 0.15:
                kind += rng.choice(["[]", "[2]"])
            fields.append({"name": f"f{j}_{rng.randrange(100)}", "type": kind})
        types[name] = fields
    used = {f["type"].split("[", 1)[0] for fields in types.values() for f in fields}
    for name in names[1:]:
        if name not in used and rng.random() < 0.95:  # mostly one primary type, as eth-account requires
            types[names[0]].append({"name": f"ref_{name.lower()}", "type": name})
    domain: dict[str, Any] = {}
    for key, kind in (("name", "string"), ("version", "string"), ("chainId", "uint256"),
                      ("verifyingContract", "address"), ("salt", "bytes32")):
        if rng.random() < 0.7:
            domain[key] = _value(rng, kind, types, 0, rng.random() < 0.9)
    if not domain:
        domain["name"] = "x"
    plain = rng.random() < 0.6
    return domain, types, names[0], _message(rng, names[0], types, 0, plain)


def oracle(domain: dict[str, Any], types: dict[str, list[dict[str, str]]], primary: str,
           message: dict[str, Any]) -> bytes | None:
    """eth-account's digest of the typed data, or None when it refuses it."""
    from eth_account.messages import _hash_eip191_message, encode_typed_data

    from httpay.signers.evm import _domain_fields

    full = {"types": {"EIP712Domain": _domain_fields(domain), **types}, "primaryType": primary, "domain": domain,
            "message": message}
    try:
        return bytes(_hash_eip191_message(encode_typed_data(full_message=full)))
    except Exception:  # noqa: BLE001 - any refusal is "refused"
        return None


def check(rng: random.Random, sign: bool) -> tuple[bool, str | None]:
    """One input: (httpay gave a digest, what differs from eth-account or None)."""
    from eth_account import Account

    import httpay
    from httpay.signers.eip712 import typed_data_digest
    from httpay.signers.evm import _domain_fields

    domain, types, primary, message = one_input(rng)
    ours = typed_data_digest(domain, types, primary, message)
    if ours is None:
        return False, None  # left to eth-account, which decides
    theirs = oracle(domain, types, primary, message)
    if theirs != ours:
        return True, (f"digest differs (eth-account {'refuses' if theirs is None else theirs.hex()}): "
                      f"{primary} {types} {message!r}")
    if sign:
        fast = httpay.EvmSigner.from_key(KEY).sign_typed_data(domain, types, primary, message)
        full = {"types": {"EIP712Domain": _domain_fields(domain), **types}, "primaryType": primary,
                "domain": domain, "message": message}
        if fast != bytes(Account.from_key(KEY).sign_typed_data(full_message=full).signature):
            return True, f"signature differs: {primary} {types} {message!r}"
    return True, None


def work(job: tuple[str, int]) -> tuple[int, int, list[str]]:
    """(inputs, digests both gave, disagreements) for `count` inputs from `seed`."""
    seed, count = job
    rng = random.Random(seed)
    fast, bad = 0, []
    for i in range(count):
        digested, problem = check(rng, sign=i % 25 == 0)
        fast += digested
        if problem is not None:
            bad.append(problem)
    return count, fast, bad[:20]


def campaign(count: int, seed: str, workers: int) -> int:
    from differential import campaign as run

    return run("eip712", work, count, seed, workers, "digested by httpay and checked against eth-account")
