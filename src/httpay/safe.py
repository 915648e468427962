"""Untrusted input made harmless in one place: text a server wrote, and JSON a server sent.

Servers choose offer titles, descriptions, error bodies, URLs and invoice descriptions. None of
that may steer what a person sees or what a log holds, so every view and every log line passes
server text through `clean` (one line, no control or invisible characters, bounded) and, where
the text goes to rich as markup, through `markup` (its brackets are shown, never obeyed). JSON from a server
is read with `loads`, which refuses absurd nesting before the parser recurses, whatever the
interpreter's recursion limit.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import unicodedata
from typing import Any

__all__ = [
    "MAX_ESCAPE",
    "MAX_JSON_DEPTH",
    "MAX_LINE",
    "MAX_TEXT",
    "CleanLogRecords",
    "JSONTooDeep",
    "clean",
    "get_logger",
    "loads",
    "markup",
    "mask_urls",
    "may_hold_key",
    "parses",
    "plain",
    "safe_url",
    "short_url",
]

MAX_TEXT = 200            # characters of one piece of server text in a view or a log line
MAX_LINE = 2_000          # characters of a whole log line or error message
MAX_JSON_DEPTH = 64       # no real 402 body, payment request answer or receipt nests deeper
MAX_ESCAPE = 10           # characters one hidden character shows as, at most ("\\U000e0041")
MAX_INT_DIGITS = 4_000    # a longer integer in JSON is not a number anyone meant (int<->str limit is 4300)

# What a view never shows raw, because it is invisible or moves other text: C0 and C1 controls and
# DEL (Cc), format characters (Cf: zero-width spaces and joiners, LRM/RLM/ALM, bidi embeddings,
# overrides and isolates, the soft hyphen, BOM, tag characters), line and paragraph separators
# (Zl, Zp), lone surrogates (Cs, which also break printing), private-use and unassigned code
# points (Co, Cn: no meaning a reader can check), and the few invisible ones filed elsewhere.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_HIDDEN_OTHERS = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u2800\u3164\uffa0")
_ASCII_CONTROL = re.compile("[\x00-\x1f\x7f]")
_NOT_PRINTABLE_ASCII = re.compile("[^\x20-\x7e]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": " "}


def _selector(ch: str) -> bool:
    return "\ufe00" <= ch <= "\ufe0f" or "\U000e0100" <= ch <= "\U000e01ef"


def _hidden(ch: str) -> bool:
    return ch in _HIDDEN_OTHERS or unicodedata.category(ch) in _HIDDEN_CATEGORIES


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    n = ord(ch)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def _visible(m: re.Match[str]) -> str:
    """The matched character itself when a reader sees it for what it is, else its escape. A
    variation selector is kept only right after a visible non-ASCII character (the emoji it styles):
    a run of them, or one after plain text, is how text is hidden inside a string."""
    ch = m.group()
    if ch.isascii():
        return _escape(ch)
    if _selector(ch):
        at = m.start()
        before = m.string[at - 1] if at else "a"
        return _escape(ch) if before.isascii() or _selector(before) or _hidden(before) else ch
    return _escape(ch) if _hidden(ch) else ch


def clean(value: object, limit: int = MAX_TEXT) -> str:
    """`value` as one harmless line: control, format and other invisible characters shown as
    escapes (so a `\\n` in a title cannot forge a second log line, nor a zero-width space or an RLM
    make two different titles look the same or reorder them), at most `limit` characters, with an ellipsis
    when cut. Works on any object (its str), and in time bounded by `limit`, not by its size."""
    text = value if isinstance(value, str) else _str(value)
    head = text[: limit + 1]
    out = (_ASCII_CONTROL if head.isascii() else _NOT_PRINTABLE_ASCII).sub(_visible, head)
    if len(out) > limit or len(text) > limit:
        return out[: max(limit - 1, 0)] + "…"
    return out


def _str(value: object) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - an object that cannot say what it is is shown by its type
        return f"<{type(value).__name__}>"


def markup(value: object, limit: int = MAX_TEXT) -> str:
    """`clean(value)` escaped for rich markup: `[bold red]x` is shown as typed, not drawn red.

    Use it for every piece of text put inside a markup string, our own included (a hint such as
    `pip install 'httpay[lightspark]'` keeps its brackets)."""
    from rich.markup import escape

    return escape(clean(value, limit))


def plain(value: object, limit: int = MAX_TEXT, style: str = "") -> Any:
    """`clean(value)` as a rich `Text`: a table cell or a line that is never parsed as markup."""
    from rich.text import Text

    return Text(clean(value, limit), style=style)


# Query keys whose values are credentials, by a word in their name ("api_key", "X-Token", "sig").
SECRET_WORDS = ("token", "key", "secret", "pass", "pwd", "auth", "sig", "session", "bearer", "macaroon",
                "preimage", "credential", "jwt", "l402", "lsat", "code", "hmac")
# A query value that looks like a credential whatever its key is called: long, opaque, letters and digits.
_OPAQUE = re.compile(r"(?=[^\s]*[0-9])(?=[^\s]*[A-Za-z])[A-Za-z0-9_\-.~+/=%]{24,}")


def _masked(key: str, value: str) -> bool:
    return any(w in key.lower() for w in SECRET_WORDS) or _OPAQUE.fullmatch(value) is not None


def safe_url(url: str) -> str:
    """The URL as a person may see it: user info and fragment dropped, credential-looking query
    values (by their key's name, or by looking like a long opaque token) shown as `***`."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(str(url))
        netloc = parts.netloc.rpartition("@")[2]
        query = [(k, "***" if _masked(k, v) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*/:,"), ""))
    except ValueError:
        return "<unreadable URL>"


URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


_TRAILING = re.compile(r"[:;,.)!?]+$")  # the sentence's punctuation after a URL in text ("402 from URL: ..."), not the URL's


def _masked_in_text(match: re.Match[str]) -> str:
    url, tail = match.group(), ""
    if (end := _TRAILING.search(url)) is not None:  # kept after the masked URL, not swallowed by its last value
        url, tail = url[:end.start()], end.group()
    return _masked_url(url) + tail


def _masked_url(url: str) -> str:
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return "<unreadable URL>"
    netloc, query = parts.netloc, parts.query
    user, at, host = netloc.rpartition("@")
    if at:  # the user is kept (it says which account), the password never; a token given as the user is masked
        name, colon, _ = user.partition(":")
        netloc = f"{name}:***@{host}" if colon else (f"***@{host}" if _OPAQUE.fullmatch(name) else netloc)
    if any(_masked(k, v) for k, v in pairs):
        query = urlencode([(k, "***" if _masked(k, v) else v) for k, v in pairs], safe="*/:,")
    if netloc == parts.netloc and query == parts.query:
        return url  # a URL with nothing to hide is left exactly as written
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_urls(text: str) -> str:
    """`text` with every URL in it shown as `safe_url` shows it, where it holds a secret (user info,
    a credential in its query): for log lines, error messages and events, which anyone may read."""
    return URL_IN_TEXT.sub(_masked_in_text, text) if "://" in text else text


def short_url(url: str, limit: int = 60) -> str:
    """`safe_url(url)` short enough for a table cell: no scheme, the host and the end of the path
    kept (what tells two URLs apart), the middle and a long query cut with an ellipsis."""
    full = safe_url(url)
    text = full.split("://", 1)[-1]
    if len(text) <= limit:
        return clean(text, limit)
    base, _, query = text.partition("?")
    host, _, path = base.partition("/")
    tail = "/" + path.rsplit("/", 1)[-1] if path else ""
    head = host + ("/…" if path.count("/") else "") + tail
    if len(head) > limit - 2:  # a long last segment: keep its start
        head = head[: limit - 2] + "…"
    room = limit - len(head) - 2
    if query and room > 4:
        head += "?" + (query if len(query) <= room else query[: room - 1] + "…")
    elif query:
        head += "?…"
    return clean(head, limit + 2)


class CleanLogRecords(logging.Filter):
    """Every record of an httpay logger becomes one bounded line before any handler sees it:
    server text in its arguments cannot add lines, move the cursor or fill a disk."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logged as what it was
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = clean(mask_urls(message), MAX_LINE), None
        return True


_CLEAN = CleanLogRecords()


def get_logger(name: str) -> logging.Logger:
    """`logging.getLogger(name)` with `CleanLogRecords` attached: what every httpay module logs with."""
    logger = logging.getLogger(name)
    if _CLEAN not in logger.filters:
        logger.addFilter(_CLEAN)
    return logger


class NoHeaderValues(logging.Filter):
    """httpcore's DEBUG trace writes every response header it receives, and a service may echo the
    paid credential (a preimage in `L402 mac:preimage`) or set a session cookie there: the trace
    keeps the step's name and drops what it returned. Everything else passes as httpcore wrote it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "headers" in message and (" return_value=" in message or " exception=" in message):
            # what it returned, or the error it raised (which quotes the header line it could not read)
            record.msg, record.args = message.split(" ", 1)[0] + " (headers not logged)", None
        return True


# Loggers of the libraries httpay sends through: httpx's request lines have their URLs masked (a
# query's api_key), httpcore's header traces lose their values. Installed once, on import.
get_logger("httpx")
for _name in ("httpcore.http11", "httpcore.http2"):
    logging.getLogger(_name).addFilter(NoHeaderValues())


class JSONTooDeep(ValueError):
    """JSON nested deeper than `MAX_JSON_DEPTH`: refused before parsing (so never a RecursionError)."""


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SQUARE = bytes.maketrans(b"{}", b"[]")


def _depth_ok(raw: bytes, limit: int) -> bool:
    """True when no array/object nests deeper than `limit` (brackets inside strings ignored).

    Each pass deletes every innermost `[]` pair, one nesting level, at C speed; a document that
    is not empty after `limit` passes nests deeper than `limit`."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return True  # cannot nest deeper than it has brackets: the common case costs two counts
    brackets = _STRINGS.sub(b"", raw).translate(_SQUARE, _NOT_BRACKETS)
    for _ in range(limit):
        shorter = brackets.replace(b"[]", b"")
        if not shorter or shorter == brackets:
            return True  # all nesting undone, or unbalanced (the parser will say so)
        brackets = shorter
    return False


def _parse_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS + 1:
        raise ValueError(f"an integer of {len(text)} digits is not a real number")
    return int(text)


def loads(data: bytes | bytearray | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` for server input: ValueError (JSONTooDeep) on nesting beyond `max_depth` or an
    integer of thousands of digits, checked before the parser runs; UnicodeDecodeError for bytes
    that are not text. Never RecursionError."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if not _depth_ok(raw, max_depth):
        raise JSONTooDeep(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(data, parse_int=_parse_int)
    except RecursionError:  # unreachable after the depth check; kept so no stray error escapes
        raise JSONTooDeep(f"JSON nested deeper than {max_depth} levels") from None


def may_hold_key(body: bytes | bytearray | str, keys: tuple[str, ...]) -> bool:
    """False only when `body` cannot be a JSON object with any of `keys` (ASCII names), decided
    without parsing: none of them is written in it, and it has no backslash (an escape could spell
    one) and no NUL byte (UTF-16/32 text, which `json.loads` also reads, could hide one). A reader
    that does not apply to a body then returns at once; True means "parse and see"."""
    if isinstance(body, str):
        return "\\" in body or any(k in body for k in keys)
    return b"\\" in body or b"\x00" in body or any(k.encode("ascii") in body for k in keys)


_REMEMBERED_JSON = 4 * 1024  # bodies up to this size have their verdict remembered (a service sends the same 402 body)


def parses(body: bytes | bytearray | str) -> bool:
    """True when `loads(body)` reads `body` (it is JSON within the limits); remembered for small
    bodies, so a reader that only needs to know whether a JSON-labelled body is JSON pays once."""
    if isinstance(body, bytes | str) and len(body) <= _REMEMBERED_JSON:
        return _parses(body)
    return _parses.__wrapped__(body)


@functools.lru_cache(maxsize=64)
def _parses(body: bytes | bytearray | str) -> bool:
    try:
        loads(body)
    except ValueError:
        return False
    return True


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110: what a field name may be
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e]*")          # visible ASCII, space and tab: no CR, LF or NUL


def header_problem(name: object, value: object) -> str | None:
    """What is wrong with a request header a person or a model gave (None: nothing), said so they can
    fix it, before httpx or h11 raise something of their own from deep inside."""
    if not isinstance(name, str) or not isinstance(value, str):
        return f"a header's name and value are text, got {type(name).__name__} and {type(value).__name__}"
    shown = clean(repr(name), 40)
    if not _TOKEN.fullmatch(name):
        return f"{shown} is not a header name (letters, digits and !#$%&'*+-.^_`|~, no spaces or colons)"
    if not _FIELD_VALUE.fullmatch(value):
        if not value.isascii():
            return f"header {shown} is not ASCII text; encode anything else (e.g. percent-encoding) first"
        return f"header {shown} holds a line break or a control character, which a header cannot carry"
    return None


def digits(value: object, max_len: int) -> int | None:
    """A whole number written as ASCII digits, at most `max_len` of them; None for anything else.
    `str.isdigit` also takes '²' and '٣' (the first then fails `int()`, the second reads as 3): a
    number a service writes is read only from 0-9."""
    if not isinstance(value, str) or not 0 < len(value) <= max_len or not value.isascii() or not value.isdigit():
        return None
    return int(value)

