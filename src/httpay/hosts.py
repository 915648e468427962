"""One host, however a URL spells it: the key every per-host thing is kept under.

`stock.example`, `STOCK.example.`, `stock.example:8080`, `xn--bcher-kva.example` and
`bücher.example`, `[::1]` and `[0:0::1]` each name one host. `host_parts` reads a host as written
(as `host_of` records it, or as a person types it) into its name, the same for every spelling
(lower case, no trailing dot, an international name in its Unicode form as httpx gives it, an IPv6
literal compressed and in brackets), and its port, if it names one. A per-host budget is kept by
the name alone: one budget for the host on every port.
"""

from __future__ import annotations

import functools
import ipaddress

import idna


@functools.lru_cache(maxsize=1024)
def _name(text: str, *, bracketed: bool = False) -> str:
    """A host name (no port) in the one spelling every other spelling of it reads as."""
    name = text.strip().lower().rstrip(".")
    if ":" in name or bracketed:  # an IPv6 literal: compressed (one address, one spelling), in brackets
        try:
            return f"[{ipaddress.IPv6Address(name)}]"
        except ValueError:
            return f"[{name}]" if bracketed else name
    if not name:
        return name
    if name.isascii() and "xn--" not in name:
        return name
    try:  # as httpx hands it back: mapped (UTS 46), then in its Unicode form
        return str(idna.decode(idna.encode(name, uts46=True)))
    except (idna.IDNAError, UnicodeError, ValueError):
        return name  # (a name IDNA refuses matches only itself)


def host_parts(text: str) -> tuple[str, str | None]:
    """(name, port) of a host as written: 'stock.example:8080', '[::1]:9', 'Bücher.example.'. The
    name in its one spelling (`_name`), the port as digits (None: the host names none)."""
    t = text.strip()
    port: str | None = None
    if t.startswith("["):
        inside, _, rest = t[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = rest[1:]
        return _name(inside, bracketed=True), None if port is None else str(int(port))
    if t.count(":") == 1:
        name, _, given = t.partition(":")
        if given.isdigit() or not given:
            return _name(name), str(int(given)) if given else None
    return _name(t), None


def host_key(text: str) -> str:
    """The host as the ledger records it: its name in its one spelling, and its port if it names one
    ('stock.example:8080', '[::1]:9', 'bücher.example')."""
    name, port = host_parts(text)
    return f"{name}:{port}" if port is not None else name


def url_host(host: str, port: int | None) -> str:
    """`host_key` of a parsed URL's host and port (httpx's `URL.host`, an IPv6 literal without its brackets)."""
    return host_key((f"[{host}]" if ":" in host else host) + (f":{port}" if port else ""))


def host_name(text: str) -> str:
    """The host without its port, in its one spelling: what a per-host budget is kept by."""
    return host_parts(text)[0]
