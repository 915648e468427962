"""Fixtures that put httpay face to face with peers' real code, on loopback.

The JavaScript peers (lsat-js, @getalby/lightning-tools) are installed by scripts/npm-interop.sh
into tests/interop/node/node_modules (Node.js itself from Debian when missing); the Python peers
(`l402`, `l402-requests`) come from the `test` extra. Nothing here skips: a peer that cannot be
installed or started fails the run with its log.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from httpay.demo.runner import RunningServer, serve_in_thread
from httpay.demo.server import create_app

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = REPO_ROOT / "tests" / "interop" / "node"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "npm-interop.sh"
INSTALL_TIMEOUT_S = 900.0
START_TIMEOUT_S = 20.0
RUN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Node:
    """The `node` that runs the interop scripts, with the peers installed beside them."""

    path: str

    def run(self, script: str, *args: str, stdin: Any = None, env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run tests/interop/node/<script> and return the JSON it prints; fail loudly otherwise."""
        proc = subprocess.run(
            [self.path, str(NODE_DIR / script), *args], check=False, cwd=NODE_DIR, capture_output=True, text=True,
            input=None if stdin is None else json.dumps(stdin), timeout=RUN_TIMEOUT_S,
            env={**os.environ, **(env or {})},
        )
        if proc.returncode != 0 or not proc.stdout.strip():
            pytest.fail(f"node {script} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass
class PeerServer:
    """A peer's server script listening on 127.0.0.1 (its stderr is kept for failure messages)."""

    url: str
    proc: subprocess.Popen[str] = field(repr=False)
    stderr: list[str] = field(default_factory=list, repr=False)

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/stats", timeout=5).json()


@pytest.fixture(scope="session")
def node() -> Node:
    """Install the JavaScript peers once per session (fast when already installed)."""
    try:
        proc = subprocess.run(["bash", str(INSTALL_SCRIPT), "node"], check=False, cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"scripts/npm-interop.sh did not finish in {INSTALL_TIMEOUT_S:.0f} s")
    if proc.returncode != 0:
        pytest.fail(f"scripts/npm-interop.sh failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return Node(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def interop_demo() -> Iterator[RunningServer]:
    """One demo service (with its regtest Lightning network) shared by the interop tests."""
    with serve_in_thread(create_app()) as server:
        yield server


def _start(node: Node, script: str, demo: RunningServer) -> Iterator[PeerServer]:
    proc = subprocess.Popen([node.path, str(NODE_DIR / script), "--demo", demo.url], cwd=NODE_DIR,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server = PeerServer(url="", proc=proc)
    assert proc.stderr is not None and proc.stdout is not None
    threading.Thread(target=lambda: server.stderr.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(START_TIMEOUT_S)
    try:
        if not first or not first[0].strip():
            pytest.fail(f"node {script} did not start within {START_TIMEOUT_S:g} s:\n{''.join(server.stderr)[-3000:]}")
        server.url = f"http://127.0.0.1:{json.loads(first[0])['port']}"
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def lsat_server(node: Node, interop_demo: RunningServer) -> Iterator[PeerServer]:
    """An LSAT service made of lsat-js 2.0.6, charging 10 sat through the demo network."""
    yield from _start(node, "lsat_server.mjs", interop_demo)


@pytest.fixture(scope="session")
def alby_server(node: Node, interop_demo: RunningServer) -> Iterator[PeerServer]:
    """An L402 service made of @getalby/lightning-tools's server helpers, charging 10 sat."""
    yield from _start(node, "alby_server.mjs", interop_demo)


@pytest.fixture
def demo_wallet_key(interop_demo: RunningServer) -> str:
    """A fresh demo wallet holding 1,000 sat; its key is what a peer's wallet shim pays with."""
    r = httpx.post(f"{interop_demo.url}/ln/wallets", json={"balance_sat": 1_000}, timeout=5)
    assert r.status_code == 201
    return str(r.json()["key"])


def balance_msat(demo: RunningServer, key: str) -> int:
    r = httpx.get(f"{demo.url}/ln/balance", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    return int(r.json()["balance_msat"])


@pytest.fixture(scope="session")
def mppx_evm_server(node: Node, interop_demo: RunningServer) -> Iterator[PeerServer]:
    """An MPP service made of mppx 0.11.0: its evm charge (base-sepolia USDC, 0.01) with a settle hook."""
    yield from _start(node, "mppx_evm_server.mjs", interop_demo)
