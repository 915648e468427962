"""DemoWallet against a real demo server on loopback, and against injected transports for failures."""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from collections.abc import Callable, Iterator

import bolt11
import httpx
import pytest

from httpay.demo import DemoNetwork, serve_in_thread
from httpay.demo.runner import RunningServer
from httpay.demo.state import DemoState
from httpay.errors import AlreadyPaid, InsufficientFunds, PaymentTimeout, WalletError
from httpay.wallets.base import PaymentStatus, Wallet
from httpay.wallets.demo import DemoWallet


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve_in_thread() as running:
        yield running


@pytest.fixture()
def wallet(server: RunningServer) -> Iterator[DemoWallet]:
    with DemoWallet.create(server.url, balance_sat=1_000) as w:
        yield w  # type: ignore[misc]


def state_of(server: RunningServer) -> DemoState:
    return server.app.state.demo


def mint(server: RunningServer, amount_msat: int | None = 5_000, **kwargs: object) -> str:
    return state_of(server).network.create_invoice(amount_msat, "test", **kwargs).bolt11  # type: ignore[arg-type]


def key_of(w: DemoWallet) -> str:
    return w._DemoWallet__key  # type: ignore[attr-defined]


def offline_wallet(handler: Callable[[httpx.Request], httpx.Response]) -> DemoWallet:
    """A wallet whose HTTP goes to `handler` instead of a server (for failures a server won't produce)."""
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return DemoWallet("http://127.0.0.1:9", "s3cret-key-0123456789abcdef", client=client)


def raising(exc: type[httpx.HTTPError]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("simulated", request=request)

    return handler


# -- the whole flow ----------------------------------------------------------------------------


def test_is_a_regtest_wallet(wallet: DemoWallet) -> None:
    assert isinstance(wallet, Wallet)
    assert (wallet.network, wallet.name) == ("regtest", "demo")
    assert wallet.balance_msat() == 1_000_000


def test_paying_an_offer_unlocks_the_resource(server: RunningServer, wallet: DemoWallet) -> None:
    with httpx.Client(base_url=server.url) as c:
        account_id = c.get("/signup").json()["id"]
        headers = {"Authorization": f"Bearer {account_id}"}
        assert c.get("/ticker/NVDA", headers=headers).status_code == 200
        challenge = c.get("/ticker/NVDA", headers=headers)
        assert challenge.status_code == 402
        body = {"offer_id": "offer_c668e0c0", "payment_method": "lightning", "payment_context_token": challenge.json()["payment_context_token"]}
        invoice = c.post(challenge.json()["payment_request_url"], json=body).json()["payment_request"]["lightning_invoice"]

        payment = wallet.pay_invoice(invoice, max_fee_msat=100)

        expected_hash = bolt11.decode(invoice).payment_hash
        assert payment.status is PaymentStatus.SETTLED and payment.settled
        assert payment.payment_hash == expected_hash and payment.proves(expected_hash)
        assert hashlib.sha256(bytes.fromhex(payment.preimage or "")).hexdigest() == expected_hash
        assert (payment.amount_msat, payment.fee_msat) == (10_000, 0)
        assert wallet.balance_msat() == 990_000
        assert c.get("/ticker/NVDA", headers=headers).status_code == 200

        with pytest.raises(AlreadyPaid) as info:
            wallet.pay_invoice(invoice)
        assert info.value.outcome_known
        assert wallet.balance_msat() == 990_000


def test_invoice_paid_by_another_wallet_is_already_paid(server: RunningServer, wallet: DemoWallet) -> None:
    invoice = mint(server)
    with DemoWallet.create(server.url) as other:
        other.pay_invoice(invoice)
    with pytest.raises(AlreadyPaid):
        wallet.pay_invoice(invoice)


def test_insufficient_funds(server: RunningServer) -> None:
    with DemoWallet.create(server.url, balance_sat=0) as poor:
        with pytest.raises(InsufficientFunds) as info:
            poor.pay_invoice(mint(server, 10_000))
        assert info.value.outcome_known
        assert poor.balance_msat() == 0


@pytest.mark.parametrize(
    ("make_invoice", "fragment"),
    [
        (lambda s: mint(s, date=int(time.time()) - 7200, expiry=60), "expired"),
        (lambda s: DemoNetwork().create_invoice(5_000, "elsewhere").bolt11, "not issued by this demo network"),
        (lambda s: mint(s, None), "no amount"),
        (lambda s: "lnbcrt1qqqq", "not valid BOLT11"),
    ],
    ids=["expired", "foreign", "no-amount", "garbage"],
)
def test_refused_invoices_raise_wallet_error(server: RunningServer, wallet: DemoWallet, make_invoice: Callable[[RunningServer], str], fragment: str) -> None:
    with pytest.raises(WalletError) as info:
        wallet.pay_invoice(make_invoice(server))
    assert type(info.value) is WalletError and info.value.outcome_known
    assert fragment in str(info.value)
    assert wallet.balance_msat() == 1_000_000


def test_lookup(server: RunningServer, wallet: DemoWallet) -> None:
    paid = wallet.pay_invoice(mint(server, 3_000))
    found = wallet.lookup(paid.payment_hash)
    assert found is not None
    assert (found.payment_hash, found.preimage, found.amount_msat, found.status) == (paid.payment_hash, paid.preimage, 3_000, PaymentStatus.SETTLED)
    assert wallet.lookup(paid.payment_hash.upper()) is not None
    assert wallet.lookup("00" * 32) is None
    with DemoWallet.create(server.url) as other:
        assert other.lookup(paid.payment_hash) is None


# -- secrets stay secret -----------------------------------------------------------------------


def test_key_is_never_shown(server: RunningServer, wallet: DemoWallet, caplog: pytest.LogCaptureFixture) -> None:
    key = key_of(wallet)
    caplog.set_level(logging.DEBUG, logger="httpay.wallet.demo")
    assert key not in repr(wallet) and key not in str(wallet)
    assert repr(wallet) == f"DemoWallet(url={server.url!r}, wallet_id={wallet.wallet_id!r})"
    errors: list[Exception] = []
    for invoice in (mint(server, 10**12), "garbage"):
        with pytest.raises(WalletError) as info:
            wallet.pay_invoice(invoice)
        errors.append(info.value)
    wallet.pay_invoice(mint(server))
    wallet.balance_msat()
    assert caplog.records, "expected debug lines"
    assert all(key not in str(e) and key not in repr(e) for e in errors)
    assert key not in caplog.text


def test_wrong_key_is_rejected_without_echoing_it(server: RunningServer) -> None:
    bad_key = "not-the-key-5f2a9c"
    with DemoWallet(server.url, bad_key) as stranger:
        for call in (lambda: stranger.pay_invoice(mint(server)), stranger.balance_msat, lambda: stranger.lookup("00" * 32)):
            with pytest.raises(WalletError) as info:
                call()
            assert bad_key not in str(info.value)
            assert not isinstance(info.value, (AlreadyPaid, InsufficientFunds, PaymentTimeout))


def test_empty_key_is_refused() -> None:
    with pytest.raises(WalletError):
        DemoWallet("http://127.0.0.1:9", "")


# -- transport failures ------------------------------------------------------------------------


def test_timeout_while_paying_leaves_the_outcome_unknown() -> None:
    with offline_wallet(raising(httpx.ReadTimeout)) as w, pytest.raises(PaymentTimeout) as info:
        w.pay_invoice("lnbcrt1anything")
    assert info.value.outcome_known is False
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("exc", [httpx.ConnectError, httpx.ConnectTimeout])
def test_failing_to_connect_means_nothing_was_paid(exc: type[httpx.HTTPError]) -> None:
    with offline_wallet(raising(exc)) as w, pytest.raises(WalletError) as info:
        w.pay_invoice("lnbcrt1anything")
    assert not isinstance(info.value, PaymentTimeout)
    assert info.value.outcome_known is True


def test_dropped_connection_after_sending_leaves_the_outcome_unknown() -> None:
    with offline_wallet(raising(httpx.RemoteProtocolError)) as w, pytest.raises(WalletError) as info:
        w.pay_invoice("lnbcrt1anything")
    assert info.value.outcome_known is False


def test_real_refused_connection() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with DemoWallet(f"http://127.0.0.1:{port}", "k" * 32, timeout=5) as w, pytest.raises(WalletError) as info:
        w.pay_invoice("lnbcrt1anything")
    assert info.value.outcome_known is True and not isinstance(info.value, PaymentTimeout)
    with pytest.raises(WalletError):
        DemoWallet.create(f"http://127.0.0.1:{port}")


def test_server_error_leaves_the_outcome_unknown() -> None:
    with offline_wallet(lambda r: httpx.Response(500, json={"error": "boom"})) as w:
        with pytest.raises(WalletError) as info:
            w.pay_invoice("lnbcrt1anything")
    assert info.value.outcome_known is False and "boom" in str(info.value)


def test_a_preimage_that_proves_nothing_is_rejected() -> None:
    fake = {"payment_hash": "ab" * 32, "preimage": "cd" * 32, "amount_msat": 1, "fee_msat": 0, "status": "settled"}
    with offline_wallet(lambda r: httpx.Response(200, json=fake)) as w:
        with pytest.raises(WalletError, match="preimage"):
            w.pay_invoice("lnbcrt1anything")


def test_an_answer_for_another_invoice_is_rejected(server: RunningServer) -> None:
    other_pre = bytes(32)
    answer = {"payment_hash": hashlib.sha256(other_pre).hexdigest(), "preimage": other_pre.hex(), "amount_msat": 5_000, "status": "settled"}
    with offline_wallet(lambda r: httpx.Response(200, json=answer)) as w:
        with pytest.raises(WalletError, match="different payment hash"):
            w.pay_invoice(mint(server))


def test_malformed_answers_are_wallet_errors() -> None:
    with offline_wallet(lambda r: httpx.Response(200, text="<html>")) as w:
        with pytest.raises(WalletError):
            w.pay_invoice("lnbcrt1anything")
        with pytest.raises(WalletError):
            w.balance_msat()
        with pytest.raises(WalletError):
            w.lookup("00" * 32)
