"""The EIP-712 digest of typed data, fast, for the message shapes httpay's dialects sign.

Why not only eth-account: its `encode_typed_data` validates and ABI-encodes in pure Python and
takes ~0.3 ms a message, most of a paid x402 request's client-side time. This computes the same
digest (`keccak256(0x1901 || domainSeparator || hashStruct(message))`, EIP-712) in a few tens of
microseconds for plain values: ints for integer types, `0x` hex strings for addresses, bytes for
`bytesN`/`bytes`, str for `string`, bools, nested structs and arrays. Any other shape (a numeric
string, a hex string for bytes, an out-of-range integer, a mixed-case address whose checksum is
wrong, a missing or extra field) returns None, and the signer asks eth-account, which accepts or
refuses it as it always has. tests/unit/test_eip712.py holds the two to the same digest.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from eth_hash.auto import keccak

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_INT = re.compile(r"(u?)int(\d*)")
_FIXED_BYTES = re.compile(r"bytes(\d+)")
_ARRAY = re.compile(r"(.+)\[(\d*)\]")
DOMAIN_TYPES = {"name": "string", "version": "string", "chainId": "uint256", "verifyingContract": "address",
                "salt": "bytes32"}

Fields = tuple[tuple[str, str], ...]
Types = tuple[tuple[str, Fields], ...]


class _NotPlain(Exception):
    """A value this encoder leaves to eth-account (which then accepts or refuses it)."""


def _canonical(types: Mapping[str, Sequence[Mapping[str, str]]]) -> Types:
    try:
        return tuple((name, tuple((str(f["name"]), str(f["type"])) for f in fields))
                     for name, fields in types.items() if name != "EIP712Domain")
    except (KeyError, TypeError, AttributeError):
        raise _NotPlain from None


@functools.lru_cache(maxsize=64)
def _type_hashes(types: Types) -> dict[str, bytes]:
    """keccak256 of each struct's encodeType: itself, then the structs it references, sorted."""
    by_name = dict(types)

    def deps(name: str, found: set[str]) -> set[str]:
        for _, kind in by_name[name]:
            base = kind.split("[", 1)[0]
            if base in by_name and base not in found:
                found.add(base)
                deps(base, found)
        return found

    def one(name: str) -> str:
        return f"{name}({','.join(f'{kind} {field}' for field, kind in by_name[name])})"

    return {name: keccak((one(name) + "".join(one(d) for d in sorted(deps(name, set()) - {name}))).encode())
            for name in by_name}


@functools.lru_cache(maxsize=64)
def _primary(types: Types) -> str | None:
    """The one struct no other struct references (what eth-account derives and requires to be the
    primary type), or None when there is not exactly one."""
    referenced = {kind.split("[", 1)[0] for name, fields in types for _, kind in fields
                  if kind.split("[", 1)[0] != name}
    unreferenced = [name for name, _ in types if name not in referenced]
    return unreferenced[0] if len(unreferenced) == 1 else None


@functools.lru_cache(maxsize=256)
def _kind(kind: str) -> tuple[str, int, str]:
    """What a field type is, parsed once: (shape, size, inner type): "array" (size 0: dynamic),
    "int"/"uint" (bits), "fixed" (bytesN), or the type's own name for the rest."""
    array = _ARRAY.fullmatch(kind)
    if array is not None:
        return "array", int(array.group(2) or 0), array.group(1)
    integer = _INT.fullmatch(kind)
    if integer is not None:
        return integer.group(1) + "int", int(integer.group(2) or 256), ""
    fixed = _FIXED_BYTES.fullmatch(kind)
    if fixed is not None:
        return "fixed", int(fixed.group(1)), ""
    return kind, 0, ""


def _word(kind: str, value: Any, types: dict[str, Fields], hashes: dict[str, bytes]) -> bytes:
    """The 32-byte encoding of one field's value (EIP-712 encodeData)."""
    shape, size, inner = _kind(kind)
    if shape == "array":
        if not isinstance(value, list | tuple) or (size and len(value) != size):
            raise _NotPlain
        return keccak(b"".join(_word(inner, item, types, hashes) for item in value))
    if kind in types:
        if not isinstance(value, Mapping):
            raise _NotPlain
        return _struct(kind, value, types, hashes)
    if shape == "address":
        if not isinstance(value, str) or not _address_ok(value):
            raise _NotPlain
        return bytes(12) + bytes.fromhex(value[2:])
    if shape == "bool":
        if not isinstance(value, bool):
            raise _NotPlain
        return int(value).to_bytes(32, "big")
    if shape == "string":
        if not isinstance(value, str):
            raise _NotPlain
        return keccak(value.encode())
    if shape == "bytes":
        if not isinstance(value, bytes):
            raise _NotPlain
        return keccak(value)
    if shape == "fixed":
        if not isinstance(value, bytes) or not 1 <= size <= 32 or len(value) != size:
            raise _NotPlain
        return value.ljust(32, b"\0")
    if shape in ("int", "uint"):
        if type(value) is not int or size % 8 or not 8 <= size <= 256:
            raise _NotPlain
        if shape == "uint":
            if not 0 <= value < 2**size:
                raise _NotPlain
            return value.to_bytes(32, "big")
        if not -(2 ** (size - 1)) <= value < 2 ** (size - 1):
            raise _NotPlain
        return value.to_bytes(32, "big", signed=True)
    raise _NotPlain


@functools.lru_cache(maxsize=256)
def _address_ok(value: str) -> bool:
    """A 0x address all in one case, or mixed case with a valid EIP-55 checksum (as eth-account requires)."""
    if not _ADDRESS.fullmatch(value):
        return False
    digits = value[2:]
    lower = digits.lower()
    if digits in (lower, digits.upper()):
        return True
    hashed = keccak(lower.encode()).hex()
    return digits == "".join(c.upper() if int(h, 16) >= 8 else c for c, h in zip(lower, hashed, strict=False))


def _struct(name: str, value: Mapping[str, Any], types: dict[str, Fields], hashes: dict[str, bytes]) -> bytes:
    fields = types[name]
    if len(value) != len(fields) or any(field not in value for field, _ in fields):
        raise _NotPlain
    return keccak(hashes[name] + b"".join(_word(kind, value[field], types, hashes) for field, kind in fields))


def typed_data_digest(domain: Mapping[str, Any], types: Mapping[str, Sequence[Mapping[str, str]]],
                      primary_type: str, message: Mapping[str, Any]) -> bytes | None:
    """The 32-byte EIP-712 digest that is signed, or None for a shape left to eth-account."""
    try:
        canonical = _canonical(types)  # the one struct no other references must be the primary type
        if _primary(canonical) != primary_type or not domain or any(k not in DOMAIN_TYPES for k in domain):
            return None
        domain_fields = tuple((k, DOMAIN_TYPES[k]) for k in DOMAIN_TYPES if k in domain)
        all_types = (*canonical, ("EIP712Domain", domain_fields))
        hashes = _type_hashes(all_types)
        structs = dict(all_types)
        separator = _separator(domain_fields, tuple(domain[k] for k, _ in domain_fields), hashes["EIP712Domain"])
        return keccak(b"\x19\x01" + separator + _struct(primary_type, message, structs, hashes))
    except (_NotPlain, RecursionError):
        return None


def _separator(fields: Fields, values: tuple[Any, ...], type_hash: bytes) -> bytes:
    """The domain separator: the same few domains (a token on a chain) sign every payment, so it is
    computed once per domain (three hashes of the five a payment takes)."""
    try:  # each value with its type: True and 1 are equal keys, and only 1 is a uint
        return _separator_of(fields, tuple((type(v), v) for v in values), type_hash)
    except TypeError:  # a value that cannot be a cache key (a list): computed, not remembered
        return _struct("EIP712Domain", dict(zip((k for k, _ in fields), values, strict=True)),
                       {"EIP712Domain": fields}, {"EIP712Domain": type_hash})


@functools.lru_cache(maxsize=64)
def _separator_of(fields: Fields, typed: tuple[tuple[type, Any], ...], type_hash: bytes) -> bytes:
    return _struct("EIP712Domain", dict(zip((k for k, _ in fields), (v for _, v in typed), strict=True)),
                   {"EIP712Domain": fields}, {"EIP712Domain": type_hash})
