"""L402 macaroons: read what a token grants (payment hash, services, deadlines), mint and verify them.

Decoding uses `pymacaroons`. Its v1 reader loops forever on a zero-length packet, so v1 input is
checked here first; v2 (what Aperture and lnd send) goes straight to it. The identifier layout is
Aperture's: uint16 big-endian version 0, 32-byte payment hash, 32-byte token id (lsat-js also
sends those 66 bytes hex-encoded, which is read too).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import hmac
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from httpay.errors import ChallengeError
from httpay.safe import clean, digits

__all__ = ["MacaroonInfo", "b64decode_any", "decode", "mint", "verify"]

MAX_MACAROON_BYTES = 48 * 1024
_CACHED_CHARS = 4 * 1024  # macaroons up to this size are decoded once and remembered (real ones are < 1 KB)
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_HEX132 = re.compile(rb"[0-9a-fA-F]{132}")


@dataclass(frozen=True)
class MacaroonInfo:
    """What a macaroon says about itself. The effective values already apply narrowing caveats."""

    identifier_version: int | None
    payment_hash: str | None
    token_id: str | None
    location: str
    caveats: list[str]
    services: list[tuple[str, int]]
    capabilities: dict[str, list[str]]
    valid_until: datetime | None
    valid_until_by_service: dict[str, datetime] = field(default_factory=dict)

    def expired(self, now: datetime | None = None, service: str | None = None) -> bool:
        """True once the token can no longer be used.

        With `service`, that service's deadline decides. Without, the token counts as expired only
        when no part of it is usable any more (every deadline passed and every named service has
        one), so a still-valid token is never thrown away and paid for again.
        """
        now = now or datetime.now(UTC)
        if service is not None:
            when = self.valid_until_by_service.get(service)
            return when is not None and now >= when
        if not self.valid_until_by_service:
            return False
        if any(name not in self.valid_until_by_service for name, _ in self.services):
            return False
        return all(now >= when for when in self.valid_until_by_service.values())

    def __str__(self) -> str:
        svc = ", ".join(f"{n}:{t}" for n, t in self.services) or "any service"
        until = f", valid until {self.valid_until:%Y-%m-%d %H:%M:%S} UTC" if self.valid_until else ""
        ph = f"payment hash {self.payment_hash[:16]}…" if self.payment_hash else "unknown identifier"
        return f"L402 macaroon at {self.location or '?'}: {ph}, services {svc}{until}"


def b64decode_any(text: str) -> bytes:
    """Decode base64 in the standard or URL-safe alphabet, padded or not; ChallengeError if it is not."""
    if not isinstance(text, str):
        raise ChallengeError(f"a macaroon must be base64 text, got {type(text).__name__}", field="macaroon")
    s = "".join(text.split())
    if len(s) > MAX_MACAROON_BYTES * 4 // 3 + 4:
        raise ChallengeError("the macaroon is too long to be a real one", field="macaroon")
    s = s.rstrip("=").replace("-", "+").replace("_", "/")
    if len(s) % 4 == 1:
        raise ChallengeError("the macaroon is not valid base64 (its length is impossible)", field="macaroon")
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ChallengeError("the macaroon is not valid base64", field="macaroon") from None


def _check_v1(raw: bytes) -> None:
    """Walk v1's hex-length packets so a zero or overlong length can't hang pymacaroons."""
    i = 0
    while i < len(raw):
        head = raw[i:i + 4]
        if len(head) < 4 or not all(c in b"0123456789abcdefABCDEF" for c in head):
            raise ChallengeError("the macaroon (v1) has a bad packet header", field="macaroon")
        size = int(head, 16)
        if size < 6 or i + size > len(raw) or raw[i + size - 1:i + size] != b"\n" or b" " not in raw[i + 4:i + size]:
            raise ChallengeError("the macaroon (v1) has a packet of impossible size", field="macaroon")
        i += size


def _deserialize(raw: bytes) -> object:
    from pymacaroons.serializers.binary_serializer import BinarySerializer

    if not raw:
        raise ChallengeError("the macaroon is empty", field="macaroon")
    if len(raw) > MAX_MACAROON_BYTES:
        raise ChallengeError("the macaroon is too long to be a real one", field="macaroon")
    if raw[0] != 2:
        _check_v1(raw)
    try:
        return BinarySerializer().deserialize_raw(raw)
    except Exception as exc:  # noqa: BLE001 - pymacaroons raises many kinds; all mean "not a macaroon"
        raise ChallengeError(f"the macaroon does not decode ({type(exc).__name__})", field="macaroon") from None


def _identifier(ident: bytes) -> tuple[int | None, str | None, str | None]:
    if _HEX132.fullmatch(ident):
        ident = bytes.fromhex(ident.decode("ascii"))
    if len(ident) == 66 and struct.unpack(">H", ident[:2])[0] == 0:
        return 0, ident[2:34].hex(), ident[34:66].hex()
    return None, None, None


def _utc(seconds: str, key: str) -> datetime:
    text = seconds.strip()
    when = digits(text, 12)
    if when is None:
        raise ChallengeError(f"caveat {key!r} must be unix seconds, got {clean(text, 20)!r}", field="caveats")
    try:
        return datetime.fromtimestamp(when, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise ChallengeError(f"caveat {key!r} is out of range", field="caveats") from None


def _services(value: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for part in value.split(","):
        name, sep, tier = part.strip().partition(":")
        name, tier = name.strip(), tier.strip()
        level = digits(tier, 6)
        if not name or not sep or level is None:
            raise ChallengeError(f"caveat 'services' must read 'name:tier,...', got {clean(part, 30)!r}",
                                 field="caveats")
        out.append((name, level))
    return out


def _apply_caveats(caveats: list[str]) -> tuple[list[tuple[str, int]], dict[str, list[str]], dict[str, datetime]]:
    """Fold caveats in order; each later one may only narrow what earlier ones allowed."""
    services: list[tuple[str, int]] | None = None
    caps: dict[str, list[str]] = {}
    until: dict[str, datetime] = {}
    for cav in caveats:
        key, sep, value = cav.partition("=")
        key = key.strip()
        if not sep:
            continue
        if key == "services":
            new = _services(value)
            if services is None:
                services = new
            else:
                tiers = dict(new)
                services = [(n, tiers[n]) for n, _ in services if n in tiers]
        elif key.endswith("_capabilities") and len(key) > len("_capabilities"):
            svc = key[: -len("_capabilities")]
            new_caps = [c.strip() for c in value.split(",") if c.strip()]
            caps[svc] = [c for c in caps[svc] if c in new_caps] if svc in caps else new_caps
        elif key.endswith("_valid_until") and len(key) > len("_valid_until"):
            svc = key[: -len("_valid_until")]
            when = _utc(value, key)
            until[svc] = min(until[svc], when) if svc in until else when
    return services or [], caps, until


def decode(macaroon_b64: str) -> MacaroonInfo:
    """Read a base64 macaroon (std or URL-safe, padded or not); ChallengeError if it is not one.

    Decoded once per macaroon and remembered (reading the challenge, binding the token to its
    invoice and presenting it all read the same one); each caller gets its own copy of the lists
    and dicts, so changing one result cannot change the next (`peek` reads without a copy)."""
    found = peek(macaroon_b64)
    return dataclasses.replace(
        found, caveats=list(found.caveats), services=list(found.services),
        capabilities={k: list(v) for k, v in found.capabilities.items()},
        valid_until_by_service=dict(found.valid_until_by_service),
    )


def peek(macaroon_b64: str) -> MacaroonInfo:
    """`decode`, for a caller that only reads: the remembered info itself, not a copy (a payment
    reads its challenge's macaroon four times). ChallengeError if it is not one."""
    if not isinstance(macaroon_b64, str) or len(macaroon_b64) > _CACHED_CHARS:
        return _decode(macaroon_b64)
    found = _remembered(macaroon_b64)
    if isinstance(found, tuple):
        message, name = found
        raise ChallengeError(message, field=name) from None
    return found


@functools.lru_cache(maxsize=256)
def _remembered(macaroon_b64: str) -> MacaroonInfo | tuple[str, str | None]:
    """`_decode`'s answer: the info, or the refusal's (message, field), so a token that is not a
    macaroon (an opaque token68) is also looked at once."""
    try:
        return _decode(macaroon_b64)
    except ChallengeError as exc:
        return str(exc), exc.field


def _uvarint(data: bytes, i: int) -> tuple[int, int] | None:
    """The unsigned varint at `i` and the index after it (pymacaroons' reading), or None at the end."""
    n = shift = 0
    while i < len(data):
        b = data[i]
        i += 1
        if b < 0x80:
            return n | b << shift, i
        n |= (b & 0x7F) << shift
        shift += 7
    return None


def _fields(data: bytes, i: int, *types: int) -> tuple[list[bytes], int] | None:
    """One v2 section at `i` holding exactly these field types in order, then its end marker."""
    out: list[bytes] = []
    for want in types:
        if i >= len(data) or data[i] != want:
            return None
        size = _uvarint(data, i + 1)
        if size is None or size[0] > len(data) - size[1]:
            return None
        out.append(data[size[1]:size[1] + size[0]])
        i = size[1] + size[0]
    if i >= len(data) or data[i] != 0:
        return None
    return out, i + 1


def _plain_v2(raw: bytes) -> tuple[bytes, str, list[bytes]] | None:
    """(identifier, location, caveat ids) of a v2 macaroon in its plain form: a header of [location]
    and identifier, first-party caveats of one identifier each, then the signature. Every input it
    reads, pymacaroons reads to the same values (tests/unit/test_read_once.py holds them to that);
    anything else (third-party caveats, odd field encodings, malformed input) is None and goes to
    pymacaroons, which reads or refuses it in its own words."""
    if raw[:1] != b"\x02":
        return None
    header = _fields(raw, 1, 1, 2) or _fields(raw, 1, 2)
    if header is None:
        return None
    found, i = header
    try:
        location = found[0].decode("utf-8") if len(found) == 2 else ""
    except UnicodeDecodeError:
        return None
    caveats: list[bytes] = []
    while i < len(raw) and raw[i] != 0:
        section = _fields(raw, i, 2)
        if section is None:
            return None
        caveats.append(section[0][0])
        i = section[1]
    if i + 1 >= len(raw) or raw[i + 1] != 6:  # the caveats' closing marker, then the signature field
        return None
    size = _uvarint(raw, i + 2)
    if size is None or size[0] > len(raw) - size[1]:
        return None
    return found[-1], location, caveats


def _decode(macaroon_b64: str) -> MacaroonInfo:
    raw = b64decode_any(macaroon_b64)
    plain = _plain_v2(raw) if len(raw) <= MAX_MACAROON_BYTES else None
    if plain is not None:  # pymacaroons' reading of the same bytes, at a fraction of its cost
        ident, location, caveat_ids = plain
        caveats = [c.decode("utf-8", "replace") for c in caveat_ids]
    else:
        m = _deserialize(raw)
        try:
            ident = bytes(m.identifier_bytes)  # type: ignore[attr-defined]
            caveats = [bytes(c.caveat_id_bytes).decode("utf-8", "replace") for c in m.caveats]  # type: ignore[attr-defined]
            location = str(m.location or "")  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - a half-decoded macaroon is still "not a macaroon"
            raise ChallengeError(f"the macaroon does not decode ({type(exc).__name__})", field="macaroon") from None
    version, payment_hash, token_id = _identifier(ident)
    services, caps, until = _apply_caveats(caveats)
    return MacaroonInfo(
        identifier_version=version,
        payment_hash=payment_hash,
        token_id=token_id,
        location=location,
        caveats=caveats,
        services=services,
        capabilities=caps,
        valid_until=min(until.values()) if until else None,
        valid_until_by_service=until,
    )


def mint(
    root_key: bytes,
    payment_hash: str,
    token_id: bytes | None = None,
    location: str = "httpay-demo",
    caveats: Iterable[str] = (),
) -> str:
    """A v2 macaroon with Aperture's identifier, as standard padded base64 (what servers send)."""
    from pymacaroons import MACAROON_V2, Macaroon

    if not isinstance(payment_hash, str) or not _HEX64.fullmatch(payment_hash):
        raise ChallengeError("payment_hash must be 64 hex characters", field="payment_hash")
    tid = os.urandom(32) if token_id is None else token_id
    if len(tid) != 32:
        raise ChallengeError(f"token_id must be 32 bytes, got {len(tid)}", field="token_id")
    ident = struct.pack(">H", 0) + bytes.fromhex(payment_hash) + tid
    m = Macaroon(location=location, identifier=ident, key=root_key, version=MACAROON_V2)
    for cav in caveats:
        m.add_first_party_caveat(cav)
    raw = base64.urlsafe_b64decode(m.serialize() + "=" * (-len(m.serialize()) % 4))
    return base64.b64encode(raw).decode("ascii")


def verify(root_key: bytes, macaroon_b64: str, preimage_hex: str | None = None, now: datetime | None = None) -> bool:
    """True when the macaroon was minted with `root_key`, no caveat has lapsed or is unknown, and
    (if given) the preimage hashes to the identifier's payment hash. Never raises on bad input."""
    from pymacaroons import Verifier

    now = now or datetime.now(UTC)
    try:
        m = _deserialize(b64decode_any(macaroon_b64))
        info = decode(macaroon_b64)
    except ChallengeError:
        return False
    if preimage_hex is not None:
        if info.payment_hash is None or not isinstance(preimage_hex, str) or not _HEX64.fullmatch(preimage_hex):
            return False
        digest = hashlib.sha256(bytes.fromhex(preimage_hex)).hexdigest()
        if not hmac.compare_digest(digest, info.payment_hash):
            return False

    def known(caveat: str) -> bool:
        key, sep, value = caveat.partition("=")
        key = key.strip()
        if not sep:
            return False
        if key.endswith("_valid_until") and len(key) > len("_valid_until"):
            try:
                return now < _utc(value, key)
            except ChallengeError:
                return False
        return key == "services" or (key.endswith("_capabilities") and len(key) > len("_capabilities"))

    v = Verifier()
    v.satisfy_general(known)
    try:
        return bool(v.verify(m, root_key))
    except Exception:  # noqa: BLE001 - pymacaroons raises on a bad signature or third-party caveat
        return False
