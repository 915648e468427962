"""What an offer tells a person before they say yes (helper-38's real-world pass): who is paid and in
which token, what a session costs to open, and a rail that is never called EVM when it is not.

Before, `offers --json` and the table named neither the x402 `payTo` nor the token contract (nor an
MPP recipient), a lightning session showed its per-request price in another unit than the charge
beside it and hid the deposit that opening it pays, and a Solana offer said `rail='evm'`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
from rich.console import Console

import httpay
from httpay.apps.display import offers_table
from httpay.core.payer import Payer
from httpay.core.quote import quote
from httpay.dialects import mpp as mpp_dialect
from httpay.dialects import x402 as x402_dialect
from httpay.protocols import mpp, x402
from httpay.signers import EvmSigner
from tests.helpers import make_invoice

PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"  # the x402 v2 spec's example (transports-v2/http.md)
USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"    # USDC on Base Sepolia
SOLANA = {"scheme": "exact", "network": "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", "amount": "1000",
          "asset": "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", "payTo": "2wKupLR9q6wXYppw8Gr2NvWxKBUqm4PPJKkQfoxHDBg4",
          "maxTimeoutSeconds": 300, "extra": {"feePayer": "EwWqGE4ZFKLofuestmU4LDdK7XM1N4ALgdZccwYugwGd"}}
BASE = {"scheme": "exact", "network": "eip155:84532", "amount": "10000", "asset": USDC, "payTo": PAY_TO,
        "maxTimeoutSeconds": 60, "extra": {"name": "USDC", "version": "2"}}


def _b64(d: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")


def _x402(*accepts: dict[str, Any]) -> httpay.Challenge:
    doc = {"x402Version": 2, "resource": {"url": "https://api.example.com/weather"}, "accepts": list(accepts)}
    return x402_dialect.to_challenge(x402.X402Challenge.from_dict(doc), "https://api.example.com/weather")


def _mpp(*headers: str) -> httpay.Challenge:
    found = mpp.parse(402, httpx.Headers([("www-authenticate", h) for h in headers]))
    assert found is not None
    return mpp_dialect.to_challenge(found, "https://api.example.com/x")


def test_an_x402_offer_names_who_is_paid_and_in_which_token() -> None:
    (offer,) = _x402(BASE).offers
    shown = offer.to_dict()
    assert (shown["pay_to"], shown["asset"], shown["network"]) == (PAY_TO, USDC, "eip155:84532")
    wide = Console(width=160, record=True)
    wide.print(offers_table([offer]))
    text = wide.export_text()
    assert "pays" in text and "0x2096…287C" in text
    narrow = Console(width=80, record=True)  # an 80-column terminal keeps what a choice turns on
    narrow.print(offers_table([offer]))
    assert "0x2096" not in narrow.export_text()


def test_an_mpp_evm_charge_names_its_recipient_and_token_and_a_lightning_one_its_payee() -> None:
    evm = {"amount": "10000", "currency": USDC, "recipient": PAY_TO,
           "methodDetails": {"chainId": 84532, "credentialTypes": ["authorization"]}}
    bolt11, _ = make_invoice(10_000)
    charge = {"amount": "10", "currency": "sat", "methodDetails": {"invoice": bolt11, "network": "regtest"}}
    on_chain, lightning = _mpp(f'Payment id="e", realm="r", method="evm", intent="charge", request="{_b64(evm)}"',
                               f'Payment id="l", realm="r", method="lightning", intent="charge", '
                               f'request="{_b64(charge)}"').offers
    assert (on_chain.to_dict()["pay_to"], on_chain.to_dict()["asset"]) == (PAY_TO, USDC)
    from httpay.lightning import decode_invoice

    assert lightning.to_dict()["pay_to"] == decode_invoice(bolt11).payee and "asset" not in lightning.to_dict()


def test_a_lightning_session_shows_its_price_per_request_in_the_charges_unit_and_the_deposit_it_opens_with() -> None:
    """Aperture's session challenge (auth/mpp_session_authenticator.go): `amount` per unit, a deposit
    of twenty times it, and the deposit's invoice; beside a charge of the same price."""
    deposit, _ = make_invoice(2_000_000)
    bolt11, _ = make_invoice(100_000)
    session = {"amount": "100", "currency": "sat", "depositInvoice": deposit, "paymentHash": "ab" * 32,
               "depositAmount": "2000", "idleTimeout": "300"}
    no_amount = {k: v for k, v in session.items() if k != "depositAmount"}
    charge = {"amount": "100", "currency": "sat", "methodDetails": {"invoice": bolt11, "network": "regtest"}}
    paid, opened, from_invoice = _mpp(
        f'Payment id="c", realm="r", method="lightning", intent="charge", request="{_b64(charge)}"',
        f'Payment id="s", realm="r", method="lightning", intent="session", request="{_b64(session)}"',
        f'Payment id="t", realm="r", method="lightning", intent="session", request="{_b64(no_amount)}"').offers
    assert (opened.amount, opened.currency, str(opened.price)) == (paid.amount, paid.currency, str(paid.price))
    assert "100 sat per request" in opened.title and "a deposit of 2,000 sat" in opened.title
    assert "a deposit of 2,000 sat" in from_invoice.title  # the deposit invoice's own amount, when not stated
    assert opened.unpayable is not None and "MppSession" in opened.unpayable


def test_a_solana_offer_is_never_called_evm_and_is_refused_in_its_own_words() -> None:
    ch = _x402(SOLANA)
    (offer,) = ch.offers
    assert offer.rail == "solana" and offer.unpayable is not None and "not an EVM network" in offer.unpayable
    payer = Payer(wallet=None, policy=httpay.Policy(methods=["x402"]), ledger=None,  # type: ignore[arg-type]
                  signer=EvmSigner.from_key("0x" + "5e" * 32))
    assert payer.cannot_pay(offer) == ("rail", offer.unpayable)  # never "the signer is not set to pay on solana"
    try:
        quote(ch, payer.policy, url=ch.url, host="api.example.com", usd_per_btc=100_000.0, spent_msat=0,
              cannot_pay=payer.cannot_pay)
    except httpay.PaymentRefused as exc:
        assert "not an EVM network" in str(exc) and exc.rule == "x402"
    else:
        raise AssertionError("a Solana offer was quoted")
    (v1,) = _x402({**BASE, "network": "base-sepolia"}).offers  # a v1 name of an EVM chain stays EVM
    assert v1.rail == "evm"
