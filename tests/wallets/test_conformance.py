"""One contract every wallet adapter keeps, run against each backend: the demo server, a real LNbits,
the fakes of LND, Lightspark and Fewsats, and Nostr Wallet Connect through a real relay.

Pay -> settled with a proving preimage; pay again -> never a second debit; too little money ->
InsufficientFunds; a hanging backend -> PaymentTimeout with the outcome unknown; lookups; balance
down by exactly amount + fee; and no secret in a repr, an error or a DEBUG log line.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from httpay.errors import AlreadyPaid, InsufficientFunds, PaymentTimeout, WalletError
from httpay.wallets.base import Payment, Wallet

AMOUNT_MSAT = 21_000


@dataclass
class Case:
    """One adapter wired to its backend, with what the contract needs to drive and observe it."""

    wallet: Wallet
    mint: Callable[[int], tuple[str, str]]  # amount_msat -> (bolt11, payment hash)
    funds_msat: int
    balance: Callable[[], int]  # in the backend's own unit
    cost: Callable[[Payment, int], int]  # what one payment of amount_msat should take off `balance`
    hanging: Callable[[], Wallet]  # the same adapter against a backend that never answers in time
    secrets: list[str] = field(repr=False, default_factory=list)
    # False when the backend cannot tell "never paid" for a hash (Fewsats finds purchases by its own
    # id): lookup must then raise rather than answer None, which a reconciler reads as "not paid".
    knows_every_hash: bool = True
    closers: list[Callable[[], None]] = field(default_factory=list)


def _msat_cost(payment: Payment, amount_msat: int) -> int:
    return amount_msat + payment.fee_msat


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections (via the backlog) but never answers: a backend hung mid-request."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def _demo(request: pytest.FixtureRequest, silent_url: str) -> Case:
    from httpay.demo.runner import serve_in_thread
    from httpay.wallets.demo import DemoWallet

    running = serve_in_thread()
    server = running.__enter__()
    wallet = DemoWallet.create(server.url, balance_sat=1_000)
    network = server.app.state.demo.network

    def mint(amount_msat: int) -> tuple[str, str]:
        record = network.create_invoice(amount_msat, "conformance")
        return record.bolt11, record.payment_hash

    key = wallet._DemoWallet__key  # type: ignore[attr-defined]
    return Case(
        wallet, mint, 1_000_000, wallet.balance_msat, _msat_cost,
        lambda: DemoWallet(silent_url, "hang-key-0123456789abcdef", timeout=0.3),
        secrets=[key], closers=[wallet.close, lambda: running.__exit__(None, None, None)],
    )


def _lnbits(request: pytest.FixtureRequest, silent_url: str) -> Case:
    from httpay.wallets.lnbits import LNbitsWallet

    lnbits = request.getfixturevalue("lnbits")
    payer_keys = lnbits.new_wallet("conformance payer", balance_sat=1_000)
    payee_keys = lnbits.new_wallet("conformance payee")
    payer = LNbitsWallet(lnbits.url, payer_keys["adminkey"], invoice_key=payer_keys["inkey"])
    payee = LNbitsWallet(lnbits.url, payee_keys["adminkey"], invoice_key=payee_keys["inkey"])

    def mint(amount_msat: int) -> tuple[str, str]:
        import bolt11

        invoice = payee.create_invoice(amount_msat // 1000, "conformance")
        return invoice, bolt11.decode(invoice).payment_hash

    return Case(
        payer, mint, 1_000_000, payer.balance_msat, _msat_cost,
        lambda: LNbitsWallet(silent_url, "a" * 32, timeout=0.3),
        secrets=[payer_keys["adminkey"], payer_keys["inkey"]], closers=[payer.close, payee.close],
    )


def _lnd(request: pytest.FixtureRequest, silent_url: str) -> Case:
    from httpay.wallets.lnd import LNDWallet

    b = request.getfixturevalue("lnd_backend")
    wallet = LNDWallet(b.url, b.secret)

    def hanging() -> Wallet:
        b.account.delay_s = 1.0  # LND streams IN_FLIGHT, then nothing for a second
        return LNDWallet(b.url, b.secret, timeout=0.3)

    return Case(wallet, _minter(b.payee), b.account.balance_msat, wallet.balance_msat, _msat_cost, hanging,
                secrets=[b.secret], closers=[wallet.close])


def _lightspark(request: pytest.FixtureRequest, silent_url: str) -> Case:
    b = request.getfixturevalue("lightspark_backend")
    wallet = b.wallet()

    def hanging() -> Wallet:
        b.account.delay_s = 1.0  # the PayInvoice mutation answers only after a second
        return b.wallet(timeout=0.3)

    return Case(wallet, _minter(b.payee), b.account.balance_msat, wallet.balance_msat, _msat_cost, hanging,
                secrets=[b.secret, b.node_password], closers=[wallet.close])


def _fewsats(request: pytest.FixtureRequest, silent_url: str) -> Case:
    b = request.getfixturevalue("fewsats_backend")
    wallet = b.wallet()

    def hanging() -> Wallet:
        b.fake.delay_s = 1.0
        return b.wallet(timeout=0.3)

    funds_msat = b.fake.balance_cents * 10_000  # at 100k USD/BTC a cent buys 10 sat
    return Case(wallet, _minter(b.payee), funds_msat, wallet.balance_usd_cents,
                lambda p, amount: wallet.usd_cents_for(amount), hanging, secrets=[b.secret], knows_every_hash=False,
                closers=[wallet.close])


def _nwc(request: pytest.FixtureRequest, silent_url: str) -> Case:
    from httpay.wallets.nwc import NWCWallet

    b = request.getfixturevalue("nwc_backend")  # a real relay on loopback, a wallet service on the demo network
    b.service.fee_msat = 1_000
    wallet = NWCWallet(b.uri, network="regtest", timeout=10)

    def hanging() -> Wallet:
        b.service.delay_s = 1.0  # the wallet service pays, but answers only after a second
        return NWCWallet(b.uri, network="regtest", timeout=0.3)

    return Case(wallet, b.mint, b.funds_msat, wallet.balance_msat, _msat_cost, hanging,
                secrets=[b.service.client_secret], closers=[wallet.close])


def _minter(payee: object) -> Callable[[int], tuple[str, str]]:
    def mint(amount_msat: int) -> tuple[str, str]:
        inv = payee.mint(amount_msat)  # type: ignore[attr-defined]
        return inv.bolt11, inv.payment_hash

    return mint


ADAPTERS = {"demo": _demo, "lnbits": _lnbits, "lnd": _lnd, "lightspark": _lightspark, "fewsats": _fewsats, "nwc": _nwc}


@pytest.fixture(params=list(ADAPTERS))
def case(request: pytest.FixtureRequest, silent_url: str) -> Iterator[Case]:
    c = ADAPTERS[request.param](request, silent_url)
    yield c
    for close in c.closers:
        close()


def test_pay_returns_a_settled_payment_that_proves_the_invoice(case: Case) -> None:
    bolt11, payment_hash = case.mint(AMOUNT_MSAT)
    payment = case.wallet.pay_invoice(bolt11)
    assert payment.settled
    assert payment.proves(payment_hash)
    assert payment.payment_hash == payment_hash
    assert payment.amount_msat == AMOUNT_MSAT


def test_balance_goes_down_by_amount_plus_fee(case: Case) -> None:
    before = case.balance()
    bolt11, _ = case.mint(AMOUNT_MSAT)
    payment = case.wallet.pay_invoice(bolt11)
    assert before - case.balance() == case.cost(payment, AMOUNT_MSAT)


def test_paying_the_same_invoice_again_never_debits_twice(case: Case) -> None:
    bolt11, payment_hash = case.mint(AMOUNT_MSAT)
    case.wallet.pay_invoice(bolt11)
    after_first = case.balance()
    try:
        again = case.wallet.pay_invoice(bolt11)
    except AlreadyPaid as exc:
        assert exc.outcome_known
    else:  # some backends hand back the earlier payment instead
        assert again.settled and again.proves(payment_hash)
    assert case.balance() == after_first


def test_too_little_money_is_insufficient_funds(case: Case) -> None:
    before = case.balance()
    bolt11, _ = case.mint(case.funds_msat + 1_000_000)
    with pytest.raises(InsufficientFunds) as exc:
        case.wallet.pay_invoice(bolt11)
    assert exc.value.outcome_known
    assert case.balance() == before


def test_a_hanging_backend_is_a_timeout_with_unknown_outcome(case: Case) -> None:
    bolt11, _ = case.mint(AMOUNT_MSAT)
    wallet = case.hanging()
    try:
        with pytest.raises(PaymentTimeout) as exc:
            wallet.pay_invoice(bolt11)
    finally:
        wallet.close()
    assert exc.value.outcome_known is False
    assert "look" in str(exc.value) or "check" in str(exc.value)


def test_lookup_finds_the_paid_hash_and_nothing_for_an_unknown_one(case: Case) -> None:
    bolt11, payment_hash = case.mint(AMOUNT_MSAT)
    case.wallet.pay_invoice(bolt11)
    found = case.wallet.lookup(payment_hash)
    assert found is not None and found.settled and found.proves(payment_hash)
    unknown = os.urandom(32).hex()
    if case.knows_every_hash:
        assert case.wallet.lookup(unknown) is None
    else:
        with pytest.raises(WalletError, match="cannot look"):
            case.wallet.lookup(unknown)


def test_no_secret_in_repr_errors_or_debug_logs(case: Case, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    bolt11, payment_hash = case.mint(AMOUNT_MSAT)
    payment = case.wallet.pay_invoice(bolt11)
    case.wallet.lookup(payment_hash)
    case.balance()
    for bad in (bolt11, case.mint(case.funds_msat + 1_000_000)[0], "lnbcgarbage"):
        try:
            case.wallet.pay_invoice(bad)  # paying `bolt11` again may return the earlier payment instead
        except WalletError as exc:
            errors.append(exc)
    assert len(errors) >= 2
    texts = [repr(case.wallet), str(case.wallet), repr(payment), str(payment), caplog.text,
             *map(str, errors), *map(repr, errors)]
    for secret in case.secrets:
        assert secret and len(secret) >= 8
        for text in texts:
            assert secret not in text
