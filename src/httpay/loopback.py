"""The one rule every server httpay starts obeys: listen on loopback only.

The demo service hands out wallet keys, the dashboard approves payments and the MCP server's
tools spend money, all over plain HTTP: none of them may be reachable from another machine.
"""

from __future__ import annotations

import ipaddress

from httpay.errors import LoopbackOnly


def require_loopback(host: str, what: str) -> None:
    """Raise ConfigError (a ValueError too) unless `host` is a loopback address or `localhost`."""
    if host == "localhost":
        return
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise LoopbackOnly(f"{what} listens on loopback only (127.0.0.1, ::1 or localhost), not {host!r}")
