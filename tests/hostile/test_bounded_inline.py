"""A paid request's deadline, kept in the caller's thread.

On the transports httpx builds, `httpay.Client` bounds every read and write of a paid request by its
payment deadline in the calling thread (`httpay.core.bounded`): no helper thread per send. These
cases hold that (1) a service dribbling its *headers* a byte at a time on a kept-alive connection
is still cut at the deadline, nothing paid, no row; (2) the ordinary paid request hands nothing to
a helper thread; (3) a transport httpx did not build (a custom one) still gets its deadline from a
helper thread; (4) a payment endpoint on another port (a new connection, made in a helper thread
under the deadline) is paid normally; (5) one whose TLS handshake dribbles is cut at the deadline.
Both drivers run each service.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest

import httpay
from httpay.core import bounded
from httpay.core.deadline import Deadline
from tests.helpers import NOTEBOOK_OFFERS
from tests.hostile.harness import CountingWallet, HostileService, RawServer, hostile_service, run

POLICY = httpay.Policy(budget_sat=1_000, usd_per_btc=100_000)


class RawV02(RawServer):
    """A v0.2 paywall over raw sockets, one kept-alive connection per client: its 402 is sound, and
    its payment endpoint answers as `behaviour` says: "dribble-head" (the status line and headers a
    byte every 20 ms, for ever)."""

    def __init__(self, svc: HostileService, behaviour: str) -> None:
        self.svc, self.behaviour = svc, behaviour
        self.stop = threading.Event()
        super().__init__("raw-v02")
        self.url = self.base

    def _request(self, conn: socket.socket, pending: bytes) -> tuple[str, bytes] | None:
        data = pending
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        length = next((int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                       if k.strip().lower() == "content-length"), 0)
        while len(rest) < length:
            rest += conn.recv(65536)
        return lines[0], rest[length:]

    def _one(self, conn: socket.socket) -> None:
        with conn:
            pending = b""
            while not self.stop.is_set():
                got = self._request(conn, pending)
                if got is None:
                    return
                line, pending = got
                if line.startswith("GET"):
                    body = json.dumps({"version": "0.2.2", "payment_request_url": self.url + "/pay",
                                       "payment_context_token": "ctx", "offers": NOTEBOOK_OFFERS}).encode()
                    conn.sendall(b"HTTP/1.1 402 Payment Required\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                elif self.behaviour == "dribble-head":
                    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
                        if self.stop.is_set():
                            return
                        conn.sendall(bytes([byte]))
                        time.sleep(0.02)
                    return

    def close(self) -> None:
        self.stop.set()
        super().close()


@pytest.fixture
def raw(svc: HostileService) -> Iterator[RawV02]:
    server = RawV02(svc, "dribble-head")
    yield server
    server.close()


def test_headers_dribbled_on_a_kept_alive_connection_are_cut_at_the_deadline(
        raw: RawV02, wallet: CountingWallet, ledger: Path, mode: str) -> None:
    start = time.monotonic()
    out = run(mode, raw.url + "/gate", wallet=wallet, ledger=ledger, policy=POLICY, payment_deadline=0.5)
    took = time.monotonic() - start
    assert isinstance(out.error, httpay.PaymentDeadlineExceeded), repr(out.error)
    assert out.error.stage.startswith("the POST to 127.0.0.1")
    assert took < 10  # a byte every 20 ms, 10,000 of them: 200 s had nothing cut it
    assert raw.connections == 1  # the 402 and the payment request shared one connection
    assert out.wallet_calls == 0 and out.receipts == [] and out.spent_msat == 0


@dataclass
class Counted:
    """The deadline's jobs handed to a helper thread; apart, the one writing a payment down beside its retry."""

    submitted: int = 0
    records: int = 0


@pytest.fixture
def helper_threads(monkeypatch: pytest.MonkeyPatch) -> Counted:
    """How many jobs the deadline's helper threads are handed."""
    counted, submit = Counted(), bounded.WORKERS.submit

    def counting(job: Any) -> None:
        if "_aside_job" in job.__qualname__:
            counted.records += 1
        else:
            counted.submitted += 1
        submit(job)
    monkeypatch.setattr(bounded.WORKERS, "submit", counting)
    return counted


class Forwarding(httpx.BaseTransport):
    """A transport httpx did not build: every request forwarded to a real one."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_a_paid_request_hands_nothing_to_a_helper_thread(svc: HostileService, wallet: CountingWallet, ledger: Path,
                                                         helper_threads: Counted) -> None:
    url = svc.v02("/v02")
    with httpay.Client(wallet=wallet, ledger=ledger, policy=POLICY) as client:
        assert client.get(url).status_code == 200
    assert wallet.paid == 1
    assert helper_threads.submitted == 0
    assert helper_threads.records == 1  # the one job: the payment written down while its retry goes out


def test_a_transport_httpx_did_not_build_keeps_its_deadline_in_a_helper_thread(
        svc: HostileService, wallet: CountingWallet, ledger: Path, helper_threads: Counted) -> None:
    url = svc.v02("/v02")
    with httpay.Client(wallet=wallet, ledger=ledger, policy=POLICY, transport=Forwarding()) as client:
        assert client.get(url).status_code == 200
    assert wallet.paid == 1
    assert helper_threads.submitted >= 2  # the 402's body, the payment request, the retry


def test_a_new_connection_under_the_deadline_is_made_in_a_helper_thread_and_paid(
        svc: HostileService, wallet: CountingWallet, ledger: Path, helper_threads: Counted) -> None:
    with hostile_service() as other:  # the payment endpoint on another port: a connection the 402's did not open
        url = svc.v02("/v02", pr_url=other.url + "/pay")
        other.route("/pay", svc.handlers["/pay"])  # the first service's own endpoint: it mints and credits
        with httpay.Client(wallet=wallet, ledger=ledger, policy=POLICY) as client:
            assert client.get(url).status_code == 200
    assert wallet.paid == 1
    assert helper_threads.submitted == 1  # the connect to the other port, and nothing else
    assert helper_threads.records == 1


class DribblingTLS(RawServer):
    """A "TLS" payment endpoint whose handshake never ends: the opening of a 16 KB handshake record,
    then a byte every 20 ms, each well within any read timeout."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        super().__init__("dribbling-tls")

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)  # the ClientHello
            conn.sendall(b"\x16\x03\x03\x40\x00")
            while not self.stop.wait(0.02):
                try:
                    conn.sendall(b"\x00")
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        super().close()


def test_a_tls_handshake_dribbled_on_a_new_connection_is_cut_at_the_deadline(
        svc: HostileService, wallet: CountingWallet, ledger: Path, mode: str) -> None:
    """The payment endpoint is another port over https (a new connection under the deadline): its
    handshake is bounded as a whole, though each byte comes within the read timeout."""
    tls = DribblingTLS()
    try:
        url = svc.v02("/v02", pr_url=tls.base.replace("http://", "https://") + "/pay")
        start = time.monotonic()
        out = run(mode, url, wallet=wallet, ledger=ledger, policy=POLICY, payment_deadline=0.5, timeout=30)
        took = time.monotonic() - start
    finally:
        tls.close()
    assert isinstance(out.error, httpay.PaymentDeadlineExceeded), repr(out.error)
    if mode == "sync":
        assert out.error.stage == "the TLS handshake with 127.0.0.1"
    assert took < 10  # 16 KB at a byte every 20 ms: over 5 minutes had nothing cut it
    assert tls.connections == 1
    assert out.wallet_calls == 0 and out.receipts == [] and out.spent_msat == 0



@pytest.mark.parametrize("timeout", [httpcore.ConnectTimeout("timed out"), httpx.ConnectTimeout("timed out")],
                         ids=["httpcore", "httpx"])
def test_a_timeout_the_deadline_caused_names_the_stage_it_cut(timeout: Exception) -> None:
    """A socket timeout cut to what was left of the deadline may fire inside httpcore (a handshake
    on a loaded machine) before the caller's own wait ends: it is still the deadline's, reported
    with the stage it cut, not passed on as a timeout of the POST that made the connection."""
    def handshake(abandoned: threading.Event) -> None:
        raise timeout

    with pytest.raises(httpay.PaymentDeadlineExceeded) as caught:
        bounded.within(Deadline(0.04), "the TLS handshake with 127.0.0.1", handshake, lambda late: None)
    assert caught.value.stage == "the TLS handshake with 127.0.0.1"
