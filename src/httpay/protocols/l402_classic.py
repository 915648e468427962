"""Classic L402 (formerly LSAT): the macaroon-and-invoice challenge and its credential, without I/O.

A 402 carries `WWW-Authenticate: L402 macaroon="<base64>", invoice="<bolt11>"` (or `token=` and
`version=` in the current spec, or the legacy scheme `LSAT`). After paying the invoice the
client presents `Authorization: L402 <macaroon>:<preimage hex>`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from httpay.errors import ChallengeError
from httpay.protocols.www_authenticate import (
    Challenge,
    header_values,
    parse_challenges,
    quote,
)

__all__ = ["SCHEMES", "L402Challenge", "L402Credential", "credential", "from_challenges", "parse", "parse_credential"]

PROTOCOL = "l402-classic"
SCHEMES = ("L402", "LSAT")

# token68 (RFC 7235): base64 macaroons, and the opaque `token`s of the current spec (getalby's are `b64url.hex`).
_B64 = re.compile(r"[A-Za-z0-9+/_.~-]+=*")
_INVOICE = re.compile(r"(lightning:)?ln[a-z0-9]+1[02-9ac-hj-np-z]+", re.IGNORECASE)
_PREIMAGE = re.compile(r"[0-9a-fA-F]{64}")
MAX_MACAROON_CHARS = 64 * 1024
MAX_INVOICE_CHARS = 8 * 1024


def _shorten(text: str, keep: int) -> str:
    return text if len(text) <= keep else f"{text[:keep]}…({len(text)} chars)"


@dataclass(frozen=True)
class L402Challenge:
    """What a classic L402 402 asks: pay `invoice`, then present `macaroon` with the preimage.

    The macaroon becomes a bearer credential once paid, so neither repr nor str shows it whole.
    """

    macaroon: str = field(repr=False)
    invoice: str = field(repr=False)
    version: str | None = None
    scheme: str = "L402"
    protocol: str = PROTOCOL

    def __repr__(self) -> str:
        return (
            f"L402Challenge(scheme={self.scheme!r}, version={self.version!r}, "
            f"macaroon={_shorten(self.macaroon, 12)!r}, invoice={_shorten(self.invoice, 24)!r})"
        )

    def __str__(self) -> str:
        v = f" v{self.version}" if self.version is not None else ""
        return f"{self.scheme}{v} challenge: pay invoice {_shorten(self.invoice, 24)}, token {_shorten(self.macaroon, 12)}"

    def credential(self, preimage_hex: str) -> str:
        """The Authorization value once `invoice` is paid: `<scheme> <macaroon>:<preimage>`."""
        return credential(self.macaroon, preimage_hex, scheme=self.scheme)

    def macaroon_info(self) -> Any:
        """The decoded macaroon (payment hash, caveats); see httpay.protocols.macaroons."""
        from httpay.protocols.macaroons import decode

        return decode(self.macaroon)

    def to_header(self) -> str:
        """This challenge as a `WWW-Authenticate` value (what a server would send)."""
        parts = [] if self.version is None else [f"version={quote(self.version)}"]
        parts += [f"macaroon={quote(self.macaroon)}", f"invoice={quote(self.invoice)}"]
        return f"{self.scheme} " + ", ".join(parts)


def _normalize_scheme(scheme: str) -> str:
    up = scheme.upper()
    if up not in SCHEMES:
        raise ChallengeError(f"scheme must be L402 or LSAT, got {scheme[:20]!r}", field="scheme")
    return up


def _check_macaroon(mac: str, where: str) -> str:
    mac = mac.strip()
    if not mac:
        raise ChallengeError(f"{where}: the macaroon is empty", field="macaroon")
    if len(mac) > MAX_MACAROON_CHARS:
        raise ChallengeError(f"{where}: the macaroon is over {MAX_MACAROON_CHARS} characters", field="macaroon")
    if not _B64.fullmatch(mac):
        raise ChallengeError(f"{where}: the macaroon is not base64 (token68) text", field="macaroon")
    return mac


def _from_one(ch: Challenge) -> L402Challenge:
    where = f"{ch.scheme} challenge"
    mac = ch.params.get("macaroon")
    if mac is None:
        mac = ch.params.get("token")
    if mac is None:
        raise ChallengeError(f"{where}: parameter 'macaroon' (or 'token') is missing", field="macaroon")
    invoice = ch.params.get("invoice")
    if invoice is None:
        raise ChallengeError(f"{where}: parameter 'invoice' is missing", field="invoice")
    invoice = invoice.strip()
    if len(invoice) > MAX_INVOICE_CHARS or not _INVOICE.fullmatch(invoice):
        raise ChallengeError(
            f"{where}: parameter 'invoice' is not a BOLT11 invoice: {_shorten(invoice, 24)!r}", field="invoice"
        )
    return L402Challenge(
        macaroon=_check_macaroon(mac, where),
        invoice=invoice,
        version=ch.params.get("version"),
        scheme=ch.scheme.upper(),
    )


def from_challenges(challenges: Sequence[Challenge]) -> L402Challenge | None:
    """The L402 challenge among `challenges`, preferring `L402` over the legacy `LSAT`.

    None when there is none; ChallengeError when every L402/LSAT challenge is unusable.
    """
    ours = [c for c in challenges if c.is_scheme(*SCHEMES)]
    ours.sort(key=lambda c: 0 if c.is_scheme("L402") else 1)  # stable: server order kept within a scheme
    first_error: ChallengeError | None = None
    for ch in ours:
        try:
            return _from_one(ch)
        except ChallengeError as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    return None


def parse(status: int, headers: Any, body: bytes | str | None = None) -> L402Challenge | None:
    """Read a response into an `L402Challenge`, or None when it carries no L402/LSAT challenge.

    The body is ignored (Aperture sends plain text there). A 402 whose L402 challenge is
    broken raises ChallengeError naming the parameter.
    """
    if status != 402:
        return None
    return from_challenges(parse_challenges(header_values(headers, "www-authenticate")))


def credential(macaroons: str | Sequence[str], preimage_hex: str, scheme: str = "L402") -> str:
    """The `Authorization` value `L402 <mac>[,<mac>...]:<preimage>` (preimage as 64 lowercase hex).

    Error messages never repeat the preimage.
    """
    macs = [macaroons] if isinstance(macaroons, str) else list(macaroons)
    if not macs:
        raise ChallengeError("credential needs at least one macaroon", field="macaroon")
    checked = [_check_macaroon(m if isinstance(m, str) else "", "credential") for m in macs]
    if not isinstance(preimage_hex, str) or not _PREIMAGE.fullmatch(preimage_hex.strip()):
        size = len(preimage_hex) if isinstance(preimage_hex, str) else type(preimage_hex).__name__
        raise ChallengeError(
            f"the preimage must be 64 hex characters (32 bytes); got {size} "
            "that are not (check the wallet returned the preimage, not the payment hash in another encoding)",
            field="preimage",
        )
    return f"{_normalize_scheme(scheme)} {','.join(checked)}:{preimage_hex.strip().lower()}"


@dataclass(frozen=True)
class L402Credential:
    """A parsed `Authorization: L402 ...` value (what a server reads); repr hides the secrets."""

    scheme: str
    macaroons: tuple[str, ...] = field(repr=False)
    preimage: str = field(repr=False)

    def __repr__(self) -> str:
        macs = ", ".join(_shorten(m, 12) for m in self.macaroons)
        return f"L402Credential(scheme={self.scheme!r}, macaroons=[{macs}], preimage=<hidden>)"


def parse_credential(value: str) -> L402Credential:
    """Read an `Authorization` value built by `credential`; ChallengeError if it is not one."""
    if not isinstance(value, str):
        raise ChallengeError("the Authorization value must be text", field="authorization")
    scheme, _, rest = value.strip().partition(" ")
    scheme = _normalize_scheme(scheme)
    macs_text, sep, pre = rest.strip().rpartition(":")
    if not sep:
        raise ChallengeError("the credential must be '<macaroon>:<preimage>'", field="authorization")
    macs = tuple(_check_macaroon(m, "credential") for m in macs_text.split(","))
    if not _PREIMAGE.fullmatch(pre.strip()):
        raise ChallengeError("the credential's preimage must be 64 hex characters", field="preimage")
    return L402Credential(scheme=scheme, macaroons=macs, preimage=pre.strip().lower())
