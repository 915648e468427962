"""The one rule every server httpay starts obeys: listen on loopback only.

The demo service hands out wallet keys, the dashboard approves payments and the MCP server's
tools spend money, all over plain HTTP: none of them may be reachable from another machine.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from httpay.errors import ConfigError, LoopbackOnly


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


def listen(host: str, port: int, what: str) -> socket.socket:
    """A listening socket for `what` on loopback `host`:`port` (0: any free port), bound before
    anything is announced, so a taken port is a ConfigError saying so rather than a server's
    traceback after its URL was already printed."""
    require_loopback(host, what)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = ("the port is in use (another server is running there)" if exc.errno == errno.EADDRINUSE
               else exc.strerror or str(exc))
        raise ConfigError(f"{what.split(' (')[0]} cannot listen on {host}:{port}: {why}; "
                          "pick another with --port N, or --port 0 for any free port") from None
    sock.listen(128)
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    """The http:// URL a client reaches a socket from `listen` at (the real port when 0 was asked)."""
    port = sock.getsockname()[1]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"
