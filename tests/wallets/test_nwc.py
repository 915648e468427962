"""Nostr Wallet Connect beyond the conformance suite: every NIP-47 error code a wallet service answers, a
relay that is down, an answer that comes too late (outcome unknown, then the lookup finds the payment),
a NIP-04-only wallet service, receiving, and connection URIs that are wrong (a clear ConfigError that
never shows the secret). All of it through the real `nostr-relay` on loopback (tests/fixtures/nostr.py)
and a wallet service paying on the demo Lightning network.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nostr_sdk as ns
import pytest

from httpay.config import wallet_from_env
from httpay.demo.network import DemoNetwork
from httpay.errors import AlreadyPaid, ConfigError, InsufficientFunds, PaymentTimeout, WalletError, WalletUnreachable
from httpay.wallets.base import PaymentStatus
from httpay.wallets.nwc import NWCWallet, parse_nwc_uri
from tests.fixtures.nostr import NWCBackend, Relay, RelayProcess, nwc_backend_on

AMOUNT_MSAT = 21_000


@pytest.fixture
def wallet(nwc_backend: NWCBackend) -> Iterator[NWCWallet]:
    w = NWCWallet(nwc_backend.uri, network="regtest", timeout=10)
    yield w
    w.close()


@dataclass(frozen=True)
class PayError:
    """A NIP-47 error the wallet service answers to pay_invoice, and what the payer must make of it."""

    code: str
    error: type[WalletError]
    outcome_known: bool
    says: str  # what the message tells the person to do
    asks: tuple[str, ...]  # the requests the wallet service saw (a lookup where the error may hide a payment)


PAY_ERRORS = [
    PayError("INSUFFICIENT_BALANCE", InsufficientFunds, True, "nothing was paid", ("pay_invoice",)),
    PayError("RATE_LIMITED", WalletError, True, "retry in a few seconds", ("pay_invoice",)),
    PayError("QUOTA_EXCEEDED", WalletError, True, "spending budget in the wallet is used up", ("pay_invoice",)),
    PayError("RESTRICTED", WalletError, True, "grant it the permission", ("pay_invoice",)),
    PayError("UNAUTHORIZED", WalletError, True, "may be revoked", ("pay_invoice",)),
    PayError("NOT_IMPLEMENTED", WalletError, True, "does not offer this command", ("pay_invoice",)),
    PayError("PAYMENT_FAILED", WalletError, True, "did not pay (PAYMENT_FAILED: no route)",
             ("pay_invoice", "lookup_invoice")),
    PayError("INTERNAL", WalletError, True, "did not pay (INTERNAL: no route)", ("pay_invoice", "lookup_invoice")),
    PayError("SOMETHING_NEW", WalletError, True, "did not pay (SOMETHING_NEW", ("pay_invoice", "lookup_invoice")),
]


@pytest.mark.parametrize("case", PAY_ERRORS, ids=[c.code for c in PAY_ERRORS])
def test_each_pay_error_code_is_the_typed_error_it_means(case: PayError, nwc_backend: NWCBackend,
                                                         wallet: NWCWallet) -> None:
    before = wallet.balance_msat()
    nwc_backend.service.requests.clear()
    nwc_backend.service.errors["pay_invoice"] = (case.code, "no route")
    bolt11, payment_hash = nwc_backend.mint(AMOUNT_MSAT)
    with pytest.raises(case.error) as exc:
        wallet.pay_invoice(bolt11)
    assert type(exc.value) is case.error
    assert exc.value.outcome_known is case.outcome_known
    assert case.says in str(exc.value)
    assert tuple(nwc_backend.service.requests) == case.asks
    assert wallet.balance_msat() == before
    assert wallet.lookup(payment_hash) is None


def test_an_error_after_the_wallet_paid_hands_back_that_payment(nwc_backend: NWCBackend, wallet: NWCWallet) -> None:
    """A wallet service that paid and then answered an error: its own record (the lookup) has the proof, so
    the payment is returned (the money that left gets recorded) and nothing is paid again."""
    bolt11, payment_hash = nwc_backend.mint(AMOUNT_MSAT)
    wallet.pay_invoice(bolt11)
    after = wallet.balance_msat()
    nwc_backend.service.errors["pay_invoice"] = ("INTERNAL", "lost the answer")
    again = wallet.pay_invoice(bolt11)
    assert again.settled and again.proves(payment_hash) and again.amount_msat == AMOUNT_MSAT
    assert wallet.balance_msat() == after


def test_an_error_while_the_payment_is_in_flight_is_outcome_unknown(nwc_backend: NWCBackend, wallet: NWCWallet,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    bolt11, payment_hash = nwc_backend.mint(AMOUNT_MSAT)
    nwc_backend.service.errors["pay_invoice"] = ("PAYMENT_FAILED", "timed out")
    in_flight = {"type": "outgoing", "state": "pending", "payment_hash": payment_hash, "amount": AMOUNT_MSAT,
                 "fees_paid": 0, "created_at": 1}
    monkeypatch.setattr(nwc_backend.service, "_do", lambda method, params: in_flight)
    with pytest.raises(AlreadyPaid) as exc:
        wallet.pay_invoice(bolt11)
    assert exc.value.outcome_known is False and "in flight" in str(exc.value)
    found = wallet.lookup(payment_hash)
    assert found is not None and found.status is PaymentStatus.PENDING and found.preimage is None


@pytest.mark.parametrize(("method", "call"), [
    ("lookup_invoice", lambda w: w.lookup(os.urandom(32).hex())),
    ("get_balance", lambda w: w.balance_msat()),
    ("make_invoice", lambda w: w.create_receive_invoice(5_000)),
])
@pytest.mark.parametrize("code", ["RATE_LIMITED", "RESTRICTED", "INTERNAL"])
def test_errors_of_the_other_commands_are_wallet_errors_with_the_code(method: str, call: object, code: str,
                                                                      nwc_backend: NWCBackend,
                                                                      wallet: NWCWallet) -> None:
    nwc_backend.service.errors[method] = (code, "not now")
    with pytest.raises(WalletError) as exc:
        call(wallet)  # type: ignore[operator]
    assert f"{code}: not now" in str(exc.value)


def test_a_late_answer_is_a_timeout_with_unknown_outcome_then_the_lookup_finds_it(nwc_backend: NWCBackend) -> None:
    """The wallet service pays, but its answer comes after the client gave up: the payer must not assume
    either way, and the lookup (what reconcile does) finds the settled payment with its proof."""
    nwc_backend.service.delay_s = 1.0
    slow = NWCWallet(nwc_backend.uri, network="regtest", timeout=0.3)
    bolt11, payment_hash = nwc_backend.mint(AMOUNT_MSAT)
    nwc_backend.service.answered.clear()
    try:
        with pytest.raises(PaymentTimeout) as exc:
            slow.pay_invoice(bolt11)
        assert exc.value.outcome_known is False
        assert "may have gone out" in str(exc.value) and "look the payment up" in str(exc.value)
        assert nwc_backend.service.answered.wait(30)
        nwc_backend.service.delay_s = 0.0
        found = slow.lookup(payment_hash)
    finally:
        slow.close()
    assert found is not None and found.settled and found.proves(payment_hash)
    with NWCWallet(nwc_backend.uri, network="regtest", timeout=10) as w:
        assert w.balance_msat() == nwc_backend.funds_msat - AMOUNT_MSAT  # paid once


def test_a_wallet_service_that_never_answers(nwc_backend: NWCBackend) -> None:
    nwc_backend.service.silent = True
    with NWCWallet(nwc_backend.uri, network="regtest", timeout=0.3) as w:
        with pytest.raises(PaymentTimeout) as exc:
            w.pay_invoice(nwc_backend.mint(AMOUNT_MSAT)[0])
        assert exc.value.outcome_known is False
        with pytest.raises(WalletError, match="did not answer get_balance .*check that the wallet service is online"):
            w.balance_msat()
    assert nwc_backend.service.requests == ["pay_invoice", "get_balance"]


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_relay_that_is_down_is_a_wallet_error_with_nothing_sent(nwc_backend: NWCBackend) -> None:
    uri = nwc_backend.uri.replace(nwc_backend.service.relay_url.replace(":", "%3A").replace("/", "%2F"),
                                  f"ws%3A%2F%2F127.0.0.1%3A{_closed_port()}")
    assert uri != nwc_backend.uri
    with NWCWallet(uri, network="regtest", timeout=5, connect_timeout=2) as w:
        with pytest.raises(WalletError) as exc:
            w.pay_invoice(nwc_backend.mint(AMOUNT_MSAT)[0])
    assert type(exc.value) is WalletUnreachable and exc.value.outcome_known is True
    assert "cannot reach the NWC relay ws://127.0.0.1:" in str(exc.value) and "nothing was sent" in str(exc.value)
    assert nwc_backend.service.client_secret not in str(exc.value)
    assert nwc_backend.service.requests == []


def test_a_nip04_only_wallet_service_is_spoken_to_in_nip04(nostr_relay: Relay) -> None:
    backend = nwc_backend_on(nostr_relay, DemoNetwork(), encryption="nip04")
    try:
        with NWCWallet(backend.uri, network="regtest", timeout=10) as w:
            bolt11, payment_hash = backend.mint(AMOUNT_MSAT)
            assert w.pay_invoice(bolt11).proves(payment_hash)
            assert w.balance_msat() == backend.funds_msat - AMOUNT_MSAT
    finally:
        backend.service.close()


def test_receiving_makes_an_invoice_that_credits_this_wallet(nwc_backend: NWCBackend, wallet: NWCWallet) -> None:
    before = wallet.balance_msat()
    invoice = wallet.create_receive_invoice(5_000, description="refund")
    payer = nwc_backend.network.create_wallet(balance_sat=100)
    nwc_backend.network.pay(payer.key, invoice)
    assert wallet.balance_msat() == before + 5_000
    with pytest.raises(WalletError, match="positive amount"):
        wallet.create_receive_invoice(None)


def test_no_secret_in_logs_of_every_path(nwc_backend: NWCBackend, wallet: NWCWallet,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for code in ("PAYMENT_FAILED", "INSUFFICIENT_BALANCE"):
        nwc_backend.service.errors["pay_invoice"] = (code, "nope")
        with pytest.raises(WalletError):
            wallet.pay_invoice(nwc_backend.mint(AMOUNT_MSAT)[0])
    assert "nwc pay_invoice refused" in caplog.text
    assert nwc_backend.service.client_secret not in caplog.text + repr(wallet) + str(parse_nwc_uri(nwc_backend.uri))


SECRET = "5f" * 32
PUBKEY = "b889ff5b1513b641e2a139f661a661364979c5beee91842f8f0ef42ab558e9d4"
RELAY = "wss%3A%2F%2Frelay.example"
BAD_URIS = [
    ("", "is empty"),
    (f"https://{PUBKEY}?relay={RELAY}&secret={SECRET}", "must start with nostr+walletconnect:// (it starts with https:)"),
    (SECRET, "must start with nostr+walletconnect:// (it has no scheme)"),
    (f"nostr+walletconnect://{PUBKEY[:-2]}?relay={RELAY}&secret={SECRET}", "64 hex characters after nostr+walletconnect:// (found 62"),
    (f"nostr+walletconnect://{PUBKEY}?relay={RELAY}", "needs exactly one secret="),
    (f"nostr+walletconnect://{PUBKEY}?relay={RELAY}&secret={SECRET}&secret={SECRET}", "needs exactly one secret="),
    (f"nostr+walletconnect://{PUBKEY}?relay={RELAY}&secret={SECRET[:-1]}z", "must be 64 hex characters (it has 64"),
    (f"nostr+walletconnect://{PUBKEY}?relay={RELAY}&secret={SECRET}00", "must be 64 hex characters (it has 66"),
    (f"nostr+walletconnect://{PUBKEY}?secret={SECRET}", "names no relay="),
    (f"nostr+walletconnect://{PUBKEY}?relay=https%3A%2F%2Frelay.example%2F%3Ftoken%3Dabc&secret={SECRET}",
     "'https://relay.example/' must be a ws:// or wss:// URL"),
    (f"nostr+walletconnect://{PUBKEY}?relay={RELAY}&secret={'0' * 64}", "not a usable Nostr private key"),
    (f"nostr+walletconnect://{PUBKEY}?relay={RELAY}&secret={'f' * 64}", "not a usable Nostr private key"),
]


@pytest.mark.parametrize(("uri", "says"), BAD_URIS)
def test_a_malformed_uri_is_a_clear_config_error_without_the_secret(uri: str, says: str) -> None:
    with pytest.raises(ConfigError) as exc:
        NWCWallet(uri)
    assert says in str(exc.value)
    with pytest.raises(ConfigError) as from_env:
        wallet_from_env({"HTTPAY_WALLET": "nwc", "NWC_URI": uri})
    text = str(from_env.value)
    assert text.startswith("HTTPAY_WALLET=nwc needs the environment variable NWC_URI" if not uri else "NWC_URI: ")
    for secret in (SECRET, SECRET[:-1], "0" * 64, "f" * 64, "token=abc"):
        assert secret not in str(exc.value) and secret not in text


def test_wallet_from_env_builds_the_nwc_wallet(nwc_backend: NWCBackend) -> None:
    w = wallet_from_env({"HTTPAY_WALLET": "nwc", "NWC_URI": nwc_backend.uri, "NWC_NETWORK": "regtest",
                         "NWC_TIMEOUT": "10"})
    try:
        assert isinstance(w, NWCWallet) and w.network == "regtest" and w.timeout == 10
        assert w.balance_msat() == nwc_backend.funds_msat
        assert w.identity.startswith("nwc:") and w.identity == NWCWallet(nwc_backend.uri).identity
    finally:
        w.close()
    with pytest.raises(ConfigError, match="NWC_TIMEOUT must be a positive number of seconds"):
        wallet_from_env({"HTTPAY_WALLET": "nwc", "NWC_URI": nwc_backend.uri, "NWC_TIMEOUT": "soon"})


def test_threads_paying_at_once_through_one_connection_each_pay_once(nwc_backend: NWCBackend,
                                                                     wallet: NWCWallet) -> None:
    """The first calls race to connect; each answer goes back to the request it names."""
    from concurrent.futures import ThreadPoolExecutor

    invoices = [nwc_backend.mint(AMOUNT_MSAT + i * 1_000) for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        paid = list(pool.map(lambda inv: wallet.pay_invoice(inv[0]), invoices))
    assert [p.payment_hash for p in paid] == [h for _, h in invoices]
    assert all(p.proves(h) for p, (_, h) in zip(paid, invoices))
    assert wallet.balance_msat() == nwc_backend.funds_msat - sum(AMOUNT_MSAT + i * 1_000 for i in range(6))
    assert nwc_backend.service.requests.count("pay_invoice") == 6


def test_a_relay_that_goes_down_and_comes_back(tmp_path: Path) -> None:
    """Down between two calls: the payment is refused with nothing sent (the wallet service saw nothing, no
    money moved); back up on the same address: the same wallet object reconnects and pays."""
    process = RelayProcess(tmp_path)
    relay = process.start()
    backend = nwc_backend_on(relay, DemoNetwork())
    try:
        with NWCWallet(backend.uri, network="regtest", timeout=10, connect_timeout=2) as w:
            assert w.balance_msat() == backend.funds_msat
            process.stop()
            bolt11, payment_hash = backend.mint(AMOUNT_MSAT)
            with pytest.raises(WalletError) as exc:
                w.pay_invoice(bolt11)
            assert exc.value.outcome_known is True and "nothing was sent" in str(exc.value)
            assert backend.service.requests == ["get_balance"]
            assert backend.network.balance_msat(backend.service.wallet_key) == backend.funds_msat
            process.start()
            backend.service.wait_connected()
            paid = w.pay_invoice(bolt11)  # the wallet reconnects on its own within its connect timeout
            assert paid.proves(payment_hash)
            assert w.balance_msat() == backend.funds_msat - AMOUNT_MSAT
    finally:
        backend.service.close()
        process.stop()


def _with_result(**changes: object) -> Callable[[str, dict[str, Any]], object]:
    def tamper(method: str, honest: dict[str, Any]) -> object:
        return {**honest, "result": {**(honest.get("result") or {}), **changes}}
    return tamper


@dataclass(frozen=True)
class Hostile:
    """A wallet service that does the real thing (pays, or not) and answers something else."""

    name: str
    tamper: Callable[[str, dict[str, Any]], object] | None
    error: type[WalletError]
    outcome_known: bool
    says: str
    sign_as_another_key: bool = False
    timeout: float = 10.0
    pays: bool = True  # False: the service refuses (nothing paid) and answers the refusal its own way


HOSTILE = [
    Hostile("a preimage that does not prove the invoice", _with_result(preimage="11" * 32), WalletError, False,
            "its preimage does not prove it; do not pay again"),
    Hostile("a preimage that is not hex", _with_result(preimage="zz" * 32), WalletError, False,
            "does not prove it"),
    Hostile("no preimage", _with_result(preimage=None), WalletError, False, "without a preimage; look the payment up"),
    Hostile("not JSON", lambda m, a: "{not json", WalletError, False, "could not be decrypted or read"),
    Hostile("a JSON list", lambda m, a: [1, 2], WalletError, False, "a message of another kind"),
    Hostile("the answer of another command", lambda m, a: {**a, "result_type": "get_balance"}, WalletError, False,
            "a message of another kind"),
    Hostile("an answer signed by another key is not the wallet's", None, PaymentTimeout, False, "may have gone out",
            sign_as_another_key=True, timeout=1.0),
    Hostile("an error message that forges a log line", lambda m, a: {
        "result_type": m, "result": None, "error": {"code": "RATE_LIMITED\n", "message": "x\n[CRITICAL] paid 1 BTC" + "y" * 5000}},
        WalletError, True, "retry in a few seconds", pays=False),
    Hostile("an error that is a bare string", lambda m, a: {"result_type": m, "error": "boom\r\nforged", "result": None},
            WalletError, True, "did not pay (OTHER: boom\\r\\nforged)", pays=False),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[c.name for c in HOSTILE])
def test_a_hostile_wallet_service_answer_is_never_taken_for_proof(case: Hostile, nwc_backend: NWCBackend,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    service = nwc_backend.service
    tamper = case.tamper
    service.tamper = None if tamper is None else (lambda m, a: tamper(m, a) if m == "pay_invoice" else a)
    if not case.pays:
        service.errors["pay_invoice"] = ("OTHER", "refused")
    service.sign_as = ns.Keys.generate() if case.sign_as_another_key else None
    bolt11, payment_hash = nwc_backend.mint(AMOUNT_MSAT)
    with NWCWallet(nwc_backend.uri, network="regtest", timeout=case.timeout) as w:
        with pytest.raises(case.error) as exc:
            w.pay_invoice(bolt11)
    text = str(exc.value)
    assert type(exc.value) is case.error and exc.value.outcome_known is case.outcome_known
    assert case.says in text, text
    assert "\n" not in text and "\r" not in text and len(text) < 600
    assert "\n[CRITICAL]" not in caplog.text
    service.tamper, service.sign_as = None, None
    with NWCWallet(nwc_backend.uri, network="regtest", timeout=10) as w:  # what the wallet's own record says
        found = w.lookup(payment_hash)
    paid = found is not None and found.settled and found.proves(payment_hash)
    assert paid is case.pays  # the service really paid where it says so, and the payer never took it as known-unpaid
    assert not (case.pays and case.outcome_known)


@pytest.mark.parametrize(("method", "tamper", "says"), [
    ("get_balance", _with_result(balance=-5), "without a balance"),
    ("get_balance", _with_result(balance="1000"), "without a balance"),
    ("get_balance", _with_result(balance=True), "without a balance"),
    ("lookup_invoice", _with_result(payment_hash="22" * 32), "for another payment"),
    ("lookup_invoice", _with_result(preimage="33" * 32), "settled without a preimage that proves it"),
    ("make_invoice", _with_result(invoice=None), "without an invoice"),
])
def test_hostile_answers_to_the_other_commands(method: str, tamper: Callable[[str, dict[str, Any]], object], says: str,
                                               nwc_backend: NWCBackend, wallet: NWCWallet) -> None:
    bolt11, payment_hash = nwc_backend.mint(AMOUNT_MSAT)
    wallet.pay_invoice(bolt11)
    nwc_backend.service.tamper = lambda m, a: tamper(m, a) if m == method else a
    call = {"get_balance": wallet.balance_msat, "lookup_invoice": lambda: wallet.lookup(payment_hash),
            "make_invoice": lambda: wallet.create_receive_invoice(1_000)}[method]
    with pytest.raises(WalletError, match=says):
        call()


def test_a_fee_the_service_does_not_state_is_read_from_its_record(nwc_backend: NWCBackend, wallet: NWCWallet) -> None:
    nwc_backend.service.tamper = lambda m, a: _with_result(fees_paid=-1)(m, a) if m == "pay_invoice" else a
    bolt11, payment_hash = nwc_backend.mint(AMOUNT_MSAT)
    paid = wallet.pay_invoice(bolt11)
    assert paid.proves(payment_hash) and paid.fee_msat == 0
    assert nwc_backend.service.requests[-2:] == ["pay_invoice", "lookup_invoice"]


def test_a_command_the_info_event_does_not_list_is_refused_without_asking(nostr_relay: Relay) -> None:
    backend = nwc_backend_on(nostr_relay, DemoNetwork(), methods=("pay_invoice", "get_balance"))
    try:
        with NWCWallet(backend.uri, network="regtest", timeout=10) as w:
            bolt11, payment_hash = backend.mint(AMOUNT_MSAT)
            assert w.pay_invoice(bolt11).proves(payment_hash)
            with pytest.raises(WalletError, match="NOT_IMPLEMENTED.*does not offer this command"):
                w.lookup(payment_hash)
            with pytest.raises(WalletError, match="NOT_IMPLEMENTED"):
                w.create_receive_invoice(1_000)
        assert backend.service.requests == ["pay_invoice"]
    finally:
        backend.service.close()


def test_a_fee_above_the_cap_is_paid_recorded_and_warned_about(nwc_backend: NWCBackend, wallet: NWCWallet,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """NIP-47 carries no fee limit, so the wallet's own applies: what it took is what is reported."""
    nwc_backend.service.fee_msat = 1_500
    bolt11, payment_hash = nwc_backend.mint(AMOUNT_MSAT)
    with caplog.at_level(logging.WARNING, logger="httpay.wallet.nwc"):
        paid = wallet.pay_invoice(bolt11, max_fee_msat=1_000)
    assert paid.settled and paid.fee_msat == 1_500
    assert "paid fee 1500 msat above the limit 1000 msat (NIP-47 has no fee limit)" in caplog.text
    assert wallet.balance_msat() == nwc_backend.funds_msat - AMOUNT_MSAT - 1_500
    found = wallet.lookup(payment_hash)
    assert found is not None and found.fee_msat == 1_500


def test_each_request_expires_soon_after_the_client_stops_waiting(nwc_backend: NWCBackend) -> None:
    """So a relay that delivers a pay_invoice late (after httpay reported the outcome unknown) cannot have
    it paid minutes later: the wallet service ignores an expired request (NIP-47)."""
    from httpay.wallets.nwc import EXPIRY_MARGIN_S

    with NWCWallet(nwc_backend.uri, network="regtest", timeout=7) as w:
        before = time.time()
        w.pay_invoice(nwc_backend.mint(AMOUNT_MSAT)[0])
        after = time.time()
    [expiration] = nwc_backend.service.expirations
    assert expiration is not None
    assert int(before + 7 + EXPIRY_MARGIN_S) <= expiration <= after + 7 + EXPIRY_MARGIN_S
