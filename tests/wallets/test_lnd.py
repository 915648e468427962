"""LNDWallet against a fake LND REST API on loopback (plus scripted answers for states the fake never reaches)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from httpay.errors import AlreadyPaid, PaymentTimeout, WalletError
from httpay.wallets.base import PaymentStatus
from httpay.wallets.lnd import LNDWallet
from tests.helpers import make_invoice
from tests.wallets import fake_lnd
from tests.wallets.conftest import FUNDS_MSAT, Backend
from tests.wallets.fakes import FakeAccount, Payee, self_signed_cert, serve


def test_pays_and_reports_amount_fee_and_proof(lnd_backend: Backend) -> None:
    inv = lnd_backend.payee.mint(50_000)
    with LNDWallet(lnd_backend.url, lnd_backend.secret) as wallet:
        payment = wallet.pay_invoice(inv.bolt11)
        assert payment.status is PaymentStatus.SETTLED
        assert payment.preimage == inv.preimage
        assert (payment.amount_msat, payment.fee_msat) == (50_000, 1_000)
        assert wallet.balance_msat() == FUNDS_MSAT - 51_000


def test_fee_limit_is_sent_and_respected(lnd_backend: Backend) -> None:
    inv = lnd_backend.payee.mint(10_000)
    with LNDWallet(lnd_backend.url, lnd_backend.secret) as wallet:
        with pytest.raises(WalletError) as exc:
            wallet.pay_invoice(inv.bolt11, max_fee_msat=999)  # the fake's route costs 1000 msat
        assert "NO_ROUTE" in str(exc.value) and exc.value.outcome_known
        assert wallet.balance_msat() == FUNDS_MSAT
        assert wallet.pay_invoice(inv.bolt11, max_fee_msat=1_000).settled


def test_invoice_the_payee_does_not_know_fails_cleanly(lnd_backend: Backend) -> None:
    stranger, _ = make_invoice(1_000, network="bitcoin")
    with LNDWallet(lnd_backend.url, lnd_backend.secret) as wallet, pytest.raises(WalletError) as exc:
        wallet.pay_invoice(stranger)
    assert "INCORRECT_PAYMENT_DETAILS" in str(exc.value)
    assert exc.value.outcome_known


def test_garbage_invoice_is_a_wallet_error(lnd_backend: Backend) -> None:
    with LNDWallet(lnd_backend.url, lnd_backend.secret) as wallet, pytest.raises(WalletError) as exc:
        wallet.pay_invoice("lnbcgarbage")
    assert type(exc.value) is WalletError
    assert "bech32" in str(exc.value)


def test_wrong_macaroon_is_named_without_leaking(lnd_backend: Backend) -> None:
    wrong = "ab" * 40
    with LNDWallet(lnd_backend.url, wrong) as wallet:
        with pytest.raises(WalletError) as exc:
            wallet.pay_invoice(lnd_backend.payee.mint().bolt11)
        with pytest.raises(WalletError, match="macaroon"):
            wallet.balance_msat()
    assert "macaroon" in str(exc.value)
    assert wrong not in str(exc.value)
    assert lnd_backend.account.balance_msat == FUNDS_MSAT


def test_macaroon_from_file(lnd_backend: Backend, tmp_path: Path) -> None:
    path = tmp_path / "admin.macaroon"
    path.write_bytes(bytes.fromhex(lnd_backend.secret))
    with LNDWallet(lnd_backend.url, macaroon_path=path) as wallet:
        assert wallet.balance_msat() == FUNDS_MSAT


@pytest.mark.parametrize("kwargs", [{}, {"macaroon_hex": "00", "macaroon_path": "x"}, {"macaroon_hex": "not hex"},
                                    {"macaroon_path": "/nonexistent/admin.macaroon"}])
def test_macaroon_must_be_given_once_and_readable(kwargs: dict[str, str]) -> None:
    with pytest.raises(WalletError, match="macaroon"):
        LNDWallet("https://127.0.0.1:8080", **kwargs)  # type: ignore[arg-type]


def test_tls_is_verified_against_lnds_own_certificate(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    payee = Payee("bitcoin")
    account = FakeAccount(payee)
    macaroon = "cd" * 32
    with serve(fake_lnd.create_app(account, macaroon), certfile=cert, keyfile=key) as url:
        with LNDWallet(url, macaroon, tls_cert_path=cert) as wallet:
            assert wallet.pay_invoice(payee.mint(2_000).bolt11).settled
        # System CAs do not know lnd's self-signed certificate.
        with LNDWallet(url, macaroon) as untrusting, pytest.raises(WalletError) as exc:
            untrusting.pay_invoice(payee.mint(2_000).bolt11)
    assert exc.value.outcome_known and "nothing was paid" in str(exc.value)
    assert len(account.sent) == 1


def test_payment_still_in_flight_at_the_deadline_is_found_later(lnd_backend: Backend) -> None:
    inv = lnd_backend.payee.mint(5_000)
    lnd_backend.account.delay_s = 1.5
    with LNDWallet(lnd_backend.url, lnd_backend.secret, timeout=0.4) as wallet:
        with pytest.raises(PaymentTimeout) as exc:
            wallet.pay_invoice(inv.bolt11)
        assert not exc.value.outcome_known
        assert "in flight" in str(exc.value)
        found = wallet.lookup(inv.payment_hash)
    assert found is not None and found.settled and found.proves(inv.payment_hash)


# --- answers the fake does not produce: scripted with httpx.MockTransport ---------------------------

_PRE = "11" * 32
_HASH = "02d449a31fbb267c8f352e9968a79e3e5fc95c1bbeaa502fd6454ebde5a4bedc"  # sha256(0x11 * 32)


def _scripted(handler: Callable[[httpx.Request], httpx.Response], **kwargs: float) -> LNDWallet:
    client = httpx.Client(base_url="https://lnd.invalid", transport=httpx.MockTransport(handler))
    return LNDWallet("https://lnd.invalid", "ee" * 32, client=client, **kwargs)


def _stream(*objs: dict[str, object], status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    return lambda r: httpx.Response(status, content="".join(json.dumps(o) + "\n" for o in objs).encode())


def test_payment_in_transition_is_already_paid_with_unknown_outcome() -> None:
    wallet = _scripted(_stream({"error": {"code": 6, "message": "payment is in transition", "details": []}}, status=409))
    with pytest.raises(AlreadyPaid) as exc:
        wallet.pay_invoice("lnbc1whatever")
    assert not exc.value.outcome_known


def test_lnd_giving_up_on_routing_is_a_timeout_that_paid_nothing() -> None:
    failed = {"payment_hash": _HASH, "status": "FAILED", "failure_reason": "FAILURE_REASON_TIMEOUT", "value_msat": "1000"}
    wallet = _scripted(_stream({"result": {**failed, "status": "IN_FLIGHT"}}, {"result": failed}))
    with pytest.raises(PaymentTimeout) as exc:
        wallet.pay_invoice("lnbc1whatever")
    assert exc.value.outcome_known
    assert "nothing was paid" in str(exc.value)


def test_base64_preimage_is_converted_to_hex() -> None:
    b64 = base64.b64encode(bytes.fromhex(_PRE)).decode()
    ok = {"payment_hash": _HASH, "status": "SUCCEEDED", "payment_preimage": b64, "value_msat": "1000", "fee_msat": "0"}
    payment = _scripted(_stream({"result": ok})).pay_invoice("lnbc1whatever")
    assert payment.preimage == _PRE and payment.proves(_HASH)


def test_success_without_valid_proof_is_not_trusted() -> None:
    lying = {"payment_hash": _HASH, "status": "SUCCEEDED", "payment_preimage": "22" * 32, "value_msat": "1000"}
    with pytest.raises(WalletError) as exc:
        _scripted(_stream({"result": lying})).pay_invoice("lnbc1whatever")
    assert not exc.value.outcome_known and "does not prove" in str(exc.value)


def test_stream_that_breaks_off_mid_payment_leaves_outcome_unknown() -> None:
    wallet = _scripted(_stream({"result": {"payment_hash": _HASH, "status": "IN_FLIGHT"}}))
    with pytest.raises(PaymentTimeout) as exc:
        wallet.pay_invoice("lnbc1whatever")
    assert not exc.value.outcome_known


def test_lookup_reads_the_first_update_of_the_track_stream() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return _stream({"result": {"payment_hash": _HASH, "status": "IN_FLIGHT", "value_msat": "1000"}})(request)

    found = _scripted(handler).lookup(_HASH)
    assert found is not None and found.status is PaymentStatus.PENDING and found.preimage is None
    assert seen == ["/v2/router/track/" + base64.urlsafe_b64encode(bytes.fromhex(_HASH)).decode()]
