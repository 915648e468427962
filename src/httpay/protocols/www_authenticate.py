"""`WWW-Authenticate` header values read into challenges (RFC 9110 §11.6.1), without any I/O.

Servers put several challenges in one header, send several headers, mix schemes, quote or
don't quote values, and forget commas. The reader keeps every challenge it can make sense of
and skips the pieces it cannot, so one odd scheme never hides the L402 challenge beside it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from httpay.errors import ChallengeError

__all__ = ["Challenge", "format_challenge", "header_values", "may_name", "parse_challenges", "quote"]

# A header longer than this is not a challenge anyone meant to send; refuse rather than chew on it.
MAX_HEADER_CHARS = 256 * 1024
# Headers up to this size are parsed once and remembered (every dialect reads the same 402's
# headers); a longer one is parsed each time rather than held in memory.
_CACHED_CHARS = 16 * 1024

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_WS = " \t\r\n"
_QUOTED = re.compile(r'"((?:[^"\\]++|\\.)*+)"', re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_BARE = re.compile(r'[^,"\ \t\r\n]*')
_PIECE = re.compile(r'[^,"]*')


@dataclass(frozen=True)
class Challenge:
    """One challenge: the scheme as sent, its parameters (names lower-cased) or its token68."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str | None = None

    def is_scheme(self, *names: str) -> bool:
        """True when the scheme is one of `names`, compared case-insensitively as RFC 9110 says."""
        return self.scheme.casefold() in {n.casefold() for n in names}

    def __str__(self) -> str:
        return format_challenge(self)


def quote(value: str) -> str:
    """A quoted-string for `value`, escaping backslash and double quote."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_challenge(challenge: Challenge) -> str:
    """Header text for one challenge; `parse_challenges` reads it back to an equal challenge."""
    if challenge.token68 is not None:
        return f"{challenge.scheme} {challenge.token68}"
    if not challenge.params:
        return challenge.scheme
    return challenge.scheme + " " + ", ".join(f"{k}={quote(v)}" for k, v in challenge.params.items())


class _Reader:
    """A cursor over one header value; every step moves forward, so reading is linear."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.n = len(text)

    def skip_ws(self) -> None:
        while self.i < self.n and self.s[self.i] in _WS:
            self.i += 1

    def peek(self) -> str:
        return self.s[self.i] if self.i < self.n else ""

    def token(self) -> str:
        m = _TOKEN.match(self.s, self.i)
        if not m:
            return ""
        self.i = m.end()
        return m.group()

    def quoted(self) -> str | None:
        """Read a quoted-string starting at '"'; None (and the rest consumed) if it never closes."""
        m = _QUOTED.match(self.s, self.i)
        if not m:
            self.i = self.n
            return None
        self.i = m.end()
        body = m.group(1)
        return _ESCAPE.sub(r"\1", body) if "\\" in body else body

    def bare(self) -> str:
        """A value sent without quotes: everything up to a comma or whitespace (base64 included)."""
        m = _BARE.match(self.s, self.i)
        self.i = m.end()  # type: ignore[union-attr]  # `*` always matches
        return m.group()  # type: ignore[union-attr]

    def skip_piece(self) -> None:
        """Skip garbage up to the next comma outside a quoted string."""
        while self.i < self.n:
            self.i = _PIECE.match(self.s, self.i).end()  # type: ignore[union-attr]  # `*` always matches
            if self.i >= self.n or self.s[self.i] == ",":
                return
            self.quoted()

    def token68_here(self) -> str | None:
        """A token68 that fills the rest of this list element, if there is one at the cursor."""
        m = _TOKEN68.match(self.s, self.i)
        if not m:
            return None
        j = m.end()
        while j < self.n and self.s[j] in _WS:
            j += 1
        if j < self.n and self.s[j] != ",":
            return None
        self.i = j
        return m.group()

    def param_ahead(self) -> bool:
        """True when the cursor sits on `token BWS "="`: a parameter, not a new scheme."""
        m = _TOKEN.match(self.s, self.i)
        if not m:
            return False
        j = m.end()
        while j < self.n and self.s[j] in " \t":
            j += 1
        return j < self.n and self.s[j] == "="


def _parse_one(text: str, out: list[tuple[str, dict[str, str], str | None]]) -> None:
    r = _Reader(text)
    current: tuple[str, dict[str, str], str | None] | None = None
    while True:
        r.skip_ws()
        while r.peek() == ",":
            r.i += 1
            r.skip_ws()
        if r.i >= r.n:
            return
        if current is not None and r.param_ahead():
            name = r.token().lower()
            r.skip_ws()
            r.i += 1  # the "="
            r.skip_ws()
            if r.peek() == '"':
                value = r.quoted()
                if value is None:  # an unterminated quote swallows the rest: drop just this parameter
                    return
            else:
                value = r.bare()
            current[1].setdefault(name, value)
            continue
        scheme = r.token()
        if not scheme:
            r.skip_piece()
            continue
        after = r.i
        r.skip_ws()
        if current is None and r.peek() == "=":
            r.skip_piece()  # a parameter with no scheme before it: nothing to attach it to
            continue
        token68 = None
        if r.i > after and r.i < r.n and r.peek() != ",":
            token68 = r.token68_here()  # None unless the whole element is a token68
        current = (scheme, {}, token68)
        out.append(current)


def parse_challenges(values: str | bytes | Iterable[str | bytes] | None) -> list[Challenge]:
    """Every challenge in one or more `WWW-Authenticate` values, in the order sent.

    Unreadable pieces are skipped; only input that is not header text at all (or is absurdly
    long) raises ChallengeError.
    """
    if values is None:
        return []
    if isinstance(values, str | bytes):
        values = [values]
    elif not isinstance(values, list | tuple) and not isinstance(values, Iterable):
        raise ChallengeError(f"WWW-Authenticate must be text, got {type(values).__name__}", field="www-authenticate")
    texts: list[str] = []
    total = 0
    for v in values:
        if isinstance(v, bytes):
            v = v.decode("latin-1")
        if not isinstance(v, str):
            raise ChallengeError(f"WWW-Authenticate must be text, got {type(v).__name__}", field="www-authenticate")
        total += len(v)
        if total > MAX_HEADER_CHARS:
            raise ChallengeError(
                f"WWW-Authenticate is over {MAX_HEADER_CHARS} characters; no real challenge is that long",
                field="www-authenticate",
            )
        texts.append(v)
    key = tuple(texts)
    parsed = _parsed(key) if total <= _CACHED_CHARS else _parse_all(key)
    return [Challenge(scheme=s, params=dict(p), token68=t) for s, p, t in parsed]


_Parsed = tuple[tuple[str, tuple[tuple[str, str], ...], str | None], ...]


def _parse_all(texts: tuple[str, ...]) -> _Parsed:
    """The challenges of these header values, as immutable tuples (scheme, params, token68)."""
    raw: list[tuple[str, dict[str, str], str | None]] = []
    for text in texts:
        _parse_one(text, raw)
    return tuple((s, tuple(p.items()), t) for s, p, t in raw)


# Keyed by the header values themselves: the same text always reads the same, a changed header is
# another key, and every caller gets new Challenge objects (with their own params dicts) built
# from the immutable tuples, so no caller can change what the next one reads.
_parsed = functools.lru_cache(maxsize=256)(_parse_all)


def may_name(values: Iterable[str], schemes: Iterable[str]) -> bool:
    """False only when no challenge of these schemes can be in these header values: no value
    holds any scheme's name in any case (a scheme is an ASCII token, written as sent). A dialect
    whose scheme is absent then returns at once, without parsing."""
    wanted = [s.lower() for s in schemes]
    return any(w in v.lower() for v in values for w in wanted)


def header_values(headers: Any, name: str) -> list[str]:
    """All values of header `name` from an httpx.Headers, a mapping, or a list of (name, value) pairs."""
    if headers is None:
        return []
    want = name.lower()
    get_list = getattr(headers, "get_list", None)
    if callable(get_list):
        try:
            return [_text(v) for v in get_list(name)]
        except Exception as exc:  # noqa: BLE001 - an odd header container is bad input, typed as such
            raise ChallengeError(f"could not read the {name} headers ({type(exc).__name__})", field=want) from None
    if isinstance(headers, Mapping):
        items: Iterable[Any] = headers.items()
    elif isinstance(headers, Iterable) and not isinstance(headers, str | bytes):
        items = headers
    else:
        raise ChallengeError(f"headers must be a mapping or (name, value) pairs, got {type(headers).__name__}", field=None)
    out: list[str] = []
    for item in items:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise ChallengeError("headers must be (name, value) pairs", field=None)
        k, v = item
        if isinstance(k, bytes):
            k = k.decode("latin-1")
        if not isinstance(k, str) or k.lower() != want:
            continue
        if isinstance(v, list | tuple):
            out.extend(_text(x) for x in v)
        else:
            out.append(_text(v))
    return out


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, str):
        return v
    raise ChallengeError(f"a header value must be text, got {type(v).__name__}", field=None)
