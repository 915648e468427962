"""Run the demo service: in a background thread (tests, examples) or in the foreground (`httpay demo-server`).

The demo only ever listens on loopback: it hands out wallet keys and bearer ids in plain HTTP.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette

from httpay.loopback import listen, require_loopback, url_of

STARTUP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class RunningServer:
    """A demo server started by `serve_in_thread`: where it listens and the app (for `app.state.demo`)."""

    url: str
    app: Starlette
    host: str
    port: int


def _require_loopback(host: str) -> None:
    require_loopback(host, "the demo server (it hands out keys over plain HTTP)")


def _default_app() -> Starlette:
    from httpay.demo.server import create_app

    return create_app()


@contextmanager
def serve_in_thread(app: Starlette | None = None, host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningServer]:
    """Serve `app` (a fresh demo app by default) with uvicorn in a daemon thread until the block ends.

    `port=0` picks a free port; the real one is in the yielded `.url`.
    """
    _require_loopback(host)
    app = app if app is not None else _default_app()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="httpay-demo-server", daemon=True)
    thread.start()
    try:
        _wait_started(server, thread)
        bound = _bound_port(server)
        shown = f"[{host}]" if ":" in host else host
        yield RunningServer(url=f"http://{shown}:{bound}", app=app, host=host, port=bound)
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT_S)


def _wait_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the demo server stopped while starting (is the port taken?)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the demo server did not start within {STARTUP_TIMEOUT_S:g} s")
        time.sleep(0.01)


def _bound_port(server: uvicorn.Server) -> int:
    for listener in server.servers:
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    raise RuntimeError("the demo server started but has no listening socket")


def run(host: str = "127.0.0.1", port: int = 8402, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve a fresh demo app in the foreground until interrupted (for `httpay demo-server`);
    `on_ready` gets its URL once the port is held (a taken port is a ConfigError before it)."""
    sock = listen(host, port, "the demo server (it hands out keys over plain HTTP)")
    try:
        app = _default_app()
        if on_ready is not None:
            on_ready(url_of(sock, host))
        uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])
    finally:
        sock.close()
