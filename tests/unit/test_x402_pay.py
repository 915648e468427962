"""Paying x402 with an EVM signer: valuing offers, the signed authorization, and the flow's
ledger discipline (pending before signing, settled on the server's receipt, failed on refusal,
never paid twice), against a scripted x402 service."""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

import httpay
from httpay.amounts import MAX_MSAT
from httpay.core.flow import OFFER_EXTENSION
from httpay.core.payer import Payer
from httpay.core.quote import method_allowed
from httpay.dialects.x402 import (
    MAX_TIMEOUT_S,
    Valued,
    authorization,
    chain_id,
    payment_payload,
    to_challenge,
    typed_data,
)
from httpay.errors import ConfigError, PaymentOutcomeUnknown, PaymentRejected
from httpay.ledger import SQLiteLedger, Status
from httpay.protocols import x402
from httpay.signers import EvmSigner
from tests.helpers import FakeService, FakeWallet

USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"   # USDC on Base Sepolia
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
RATE = 100_000.0  # USD per BTC: $0.01 = 10,000 msat exactly
KEY = "0x" + "4c" * 32


def requirement(**over: Any) -> dict[str, Any]:
    r = {"scheme": "exact", "network": "eip155:84532", "amount": "10000", "asset": USDC, "payTo": PAY_TO,
         "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2"}}
    r.update(over)
    return r


def v2_challenge(*reqs: dict[str, Any]) -> dict[str, Any]:
    return {"x402Version": 2, "error": "Payment required", "resource": {"url": "http://svc/weather"},
            "accepts": list(reqs) or [requirement()]}


def b64(d: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(d).encode()).decode()


def unb64(s: str) -> Any:
    return json.loads(base64.b64decode(s))


class Service:
    """A scripted x402 server: 402 without a payment; with one, answer as told (settle, refuse, fail)."""

    def __init__(self, challenge: dict[str, Any] | None = None, *, answer: str = "settle") -> None:
        self.challenge = challenge or v2_challenge()
        self.answer = answer
        self.payments: list[dict[str, Any]] = []
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        header = request.headers.get("payment-signature") or request.headers.get("x-payment")
        v1 = self.challenge["x402Version"] == 1
        if header is None:
            if v1:
                return httpx.Response(402, json=self.challenge)
            return httpx.Response(402, json={}, headers={"PAYMENT-REQUIRED": b64(self.challenge)})
        self.payments.append(unb64(header))
        receipt_name = "X-PAYMENT-RESPONSE" if v1 else "PAYMENT-RESPONSE"
        if self.answer == "refuse":
            body = dict(self.challenge, error="invalid_exact_evm_payload_signature")
            return (httpx.Response(402, json=body) if v1 else
                    httpx.Response(402, json={}, headers={"PAYMENT-REQUIRED": b64(body)}))
        if self.answer == "fail_settle":
            return httpx.Response(200, json={"ok": 1}, headers={receipt_name: b64(
                {"success": False, "errorReason": "insufficient_funds", "transaction": "", "network": "eip155:84532"})})
        if self.answer == "settle_then_402":
            return httpx.Response(402, json={}, headers={"PAYMENT-REQUIRED": b64(self.challenge), "PAYMENT-RESPONSE": b64(
                {"success": True, "transaction": "0x" + "cd" * 32, "network": "eip155:84532"})})
        if self.answer == "raise":
            raise httpx.ReadTimeout("the server went quiet")
        return httpx.Response(200, json={"report": "sunny"}, headers={receipt_name: b64(
            {"success": True, "transaction": "0x" + "ab" * 32, "network": "eip155:84532", "payer": "0x"})})


class SpySigner:
    """An EvmSigner that records each signature and what the ledger held at that moment."""

    def __init__(self, ledger_path: Path, key: str = KEY) -> None:
        self.inner = EvmSigner.from_key(key)
        self.ledger_path = ledger_path
        self.signed: list[dict[str, Any]] = []
        self.rows_when_signing: list[list[tuple[str, str | None]]] = []

    address = property(lambda self: self.inner.address)
    name = property(lambda self: self.inner.name)

    def pays_on(self, network: str) -> bool:
        return self.inner.pays_on(network)

    def sign_typed_data(self, domain: Any, types: Any, primary_type: str, message: Any) -> bytes:
        with SQLiteLedger(self.ledger_path) as lg:
            self.rows_when_signing.append([(r.status.value, r.payment_hash) for r in lg.receipts()])
        self.signed.append(dict(message))
        return self.inner.sign_typed_data(domain, types, primary_type, message)


def client(ledger_path: Path, service: Service, signer: Any = None, **policy: Any) -> httpay.Client:
    pol = {"methods": ["lightning", "x402"], "usd_per_btc": RATE, "max_per_payment_usd": 0.05, **policy}
    return httpay.Client(wallet=FakeWallet(FakeService()), ledger=ledger_path, policy=httpay.Policy(**pol),
                         transport=httpx.MockTransport(service), x402_signer=signer)


def rows(ledger_path: Path) -> list[Any]:
    with SQLiteLedger(ledger_path) as lg:
        return lg.receipts()


# -- pure parts ---------------------------------------------------------------------------------
def test_policy_methods_name_x402_by_prefix() -> None:
    m = "x402:exact:eip155:84532"
    assert method_allowed(["x402"], m) and method_allowed(["x402:exact"], m) and method_allowed([m], m)
    assert not method_allowed(["lightning"], m) and not method_allowed(["x402:upto"], m)
    assert not method_allowed(["x402:exact:eip155:8453"], m)  # another chain is not this one
    assert not method_allowed(["x40"], m)


def test_networks_map_to_chain_ids() -> None:
    assert chain_id("eip155:8453") == 8453 and chain_id("base-sepolia") == 84532 and chain_id("base") == 8453
    assert chain_id("solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1") is None and chain_id("eip155:x") is None


@dataclass(frozen=True)
class Priced:
    """What the x402 dialect and the payer's capability make of one requirement."""

    valued: Valued
    usd: Fraction
    msat: int
    price: str

    @property
    def decimals(self) -> int:
        return self.valued.decimals

    @property
    def eip712_name(self) -> str:
        return self.valued.eip712_name

    @property
    def eip712_version(self) -> str:
        return self.valued.eip712_version


def priced(req: dict[str, Any], signer: Any = None, rate: float = RATE) -> Priced | str:
    """The requirement as the flow values it, or why it would not be paid."""
    ch = to_challenge(x402.X402Challenge.from_dict(v2_challenge(req)), "https://svc.example/x")
    offer = ch.offers[0]
    payer = Payer(wallet=None, policy=httpay.Policy(), ledger=None,  # type: ignore[arg-type]
                  signer=signer or EvmSigner.from_key(KEY))
    cannot = payer.cannot_pay(offer)
    if cannot is not None:
        return cannot[1]
    if offer.unpayable is not None:
        return offer.unpayable
    msat, usd = offer.price.in_msat(rate), offer.price.in_usd()
    assert msat is not None and usd is not None
    if msat > MAX_MSAT:
        return "the amount is too large to be a real price"
    return Priced(offer.payload, usd, msat, f"{offer.price} on {offer.network}")


def test_known_usdc_is_valued_in_usd_then_msat() -> None:
    p = priced(requirement())
    assert p.usd == Fraction(1, 100) and p.msat == 10_000 and p.decimals == 6
    assert p.price == "0.01 USDC on eip155:84532"


@pytest.mark.parametrize(("over", "why"), [
    ({"scheme": "deferred"}, "scheme"),
    ({"scheme": "upto"}, "facilitatorAddress"),  # upto is paid (issue 12), only bound to a named facilitator
    ({"network": "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"}, "not an EVM network"),
    ({"extra": {"name": "USDC", "version": "2", "assetTransferMethod": "permit2"}}, "EIP-3009"),
    ({"payTo": "not-an-address"}, "20-byte"),
    ({"payTo": "0x" + "00" * 20}, "zero address"),
    ({"extra": {"name": "USDC", "version": "2", "decimals": 18}}, "has 6"),  # may not understate a known price
    ({"asset": "0x" + "12" * 20, "extra": {"name": "Mystery", "version": "1"}}, "cannot be told"),
    ({"asset": "0x" + "12" * 20, "extra": {"name": "USD Token", "version": "1"}}, "cannot be told"),  # no decimals
    ({"asset": "0x" + "12" * 20, "extra": {"name": "Some USD", "decimals": 6}}, "cannot be told"),
    # a real token httpay does not know, claiming 18 decimals: $1,000 would look like a nanodollar
    ({"network": "eip155:10", "asset": "0x7f5c764cbc14f9669b88837ca1490cca17c31607", "amount": "1000000000",
      "extra": {"name": "USD Coin", "version": "2", "decimals": 18}}, "not a USDC deployment httpay knows"),
])
def test_offers_whose_value_or_shape_is_unsure_are_not_paid(over: dict[str, Any], why: str) -> None:
    p = priced(requirement(**over))
    assert isinstance(p, str) and why in p


@pytest.mark.parametrize("over", [
    {"extra": {"name": "USD Coin", "version": "2", "assetTransferMethod": "permit2"}},
    {"scheme": "deferred", "extra": {"name": "Totally Real Dollars", "version": "2"}},
    {"payTo": "0x" + "00" * 20},
    {"extra": {"name": "USDC", "version": "2", "decimals": 18}},
], ids=["permit2 exact", "unknown scheme, own name", "zero payTo", "claims 18 decimals"])
def test_a_known_usdc_refused_for_how_it_is_paid_still_shows_its_real_price(over: dict[str, Any]) -> None:
    """A person comparing offers sees the same 0.01 USDC for twins that differ only in how they are
    paid, and the known token's own symbol, never raw units under the name the server gave it."""
    accepts = x402.X402Challenge.from_dict(v2_challenge(requirement(), requirement(**over)))
    payable, refused = to_challenge(accepts, "https://svc.example/x").offers
    assert payable.unpayable is None and refused.unpayable is not None
    assert str(refused.price) == str(payable.price) == "0.01 USDC"
    assert refused.to_dict()["currency"] == "USDC" and refused.price.in_usd() == Fraction(1, 100)
    assert [o.currency for o in accepts.to_offers()] == ["USDC", "USDC"]


def test_an_offer_httpay_cannot_pay_is_refused_by_its_own_reason_before_the_policys_methods() -> None:
    """Allowing the method of an offer httpay cannot pay changes nothing, so that is never the advice."""
    from httpay.core.quote import quote

    accepts = x402.X402Challenge.from_dict(v2_challenge(requirement(extra={"assetTransferMethod": "permit2"})))
    ch = to_challenge(accepts, "https://svc.example/x")
    for methods in (["lightning"], ["x402"]):
        with pytest.raises(httpay.PaymentRefused) as err:
            quote(ch, httpay.Policy(methods=methods), url="https://svc.example/x", host="svc.example", usd_per_btc=RATE)
        assert err.value.rule == "x402" and "'permit2' is not supported" in str(err.value)
        assert "methods" not in err.value.render()


def test_an_unknown_token_is_named_by_its_address_not_by_the_name_the_server_gives_it() -> None:
    fake = "0x" + "12" * 20
    accepts = x402.X402Challenge.from_dict(v2_challenge(requirement(asset=fake, extra={"name": "USDC", "version": "2"})))
    [offer] = to_challenge(accepts, "https://svc.example/x").offers
    assert offer.unpayable is not None and "cannot be told" in offer.unpayable
    assert "USDC" not in str(offer.price) and fake in str(offer.price) and offer.price.in_usd() is None
    assert "USDC" not in str(accepts.accepts[0])


def test_known_usdc_needs_no_extra() -> None:
    p = priced(requirement(extra={}))
    assert not isinstance(p, str) and (p.eip712_name, p.eip712_version) == ("USDC", "2")


def test_a_token_httpay_does_not_know_is_not_valued_by_the_decimals_it_claims() -> None:
    """The server's `extra.decimals` never prices a token: a USD-named token httpay does not know is
    unpayable, and a known one (Optimism's USDC) is priced by its real 6 decimals whatever is claimed."""
    p = priced(requirement(asset="0x" + "12" * 20, amount="2500000",
                           extra={"name": "Stable USD", "version": "1", "decimals": 6}))
    assert isinstance(p, str) and "cannot be told" in p
    op = priced(requirement(network="eip155:10", asset="0x0b2C639c533813f4Aa9D7837CAf62653d097Ff85", amount="2500000",
                            extra={"name": "USD Coin", "version": "2"}))
    assert not isinstance(op, str) and op.usd == Fraction(5, 2)
    lie = priced(requirement(network="eip155:10", asset="0x0b2C639c533813f4Aa9D7837CAf62653d097Ff85",
                             amount="1000000000", extra={"name": "USD Coin", "version": "2", "decimals": 18}))
    assert isinstance(lie, str) and "has 6" in lie


def test_a_signer_limited_to_networks_refuses_others() -> None:
    assert "not set to pay" in priced(requirement(), EvmSigner.from_key(KEY, networks=["eip155:8453"]))
    assert not isinstance(priced(requirement(), EvmSigner.from_key(KEY, networks=["eip155:84532"])), str)


@settings(max_examples=300, deadline=None)
@given(amount=st.integers(0, 10**24), rate=st.floats(1_000, 10_000_000))
def test_msat_never_understates_the_price(amount: int, rate: float) -> None:
    p = priced(requirement(amount=str(amount)), rate=rate)
    if isinstance(p, str):
        assert "too large" in p
        return
    exact = Fraction(amount, 10**6) * 10**11 / Fraction(str(rate))
    assert exact <= p.msat < exact + 1


@settings(max_examples=100, deadline=None)
@given(timeout=st.one_of(st.none(), st.integers(1, 10**9)), now=st.integers(1_600_000_000, 2_000_000_000),
       nonce=st.binary(min_size=32, max_size=32))
def test_authorization_is_for_the_chosen_requirement_and_expires(timeout: int | None, now: int, nonce: bytes) -> None:
    p = priced(requirement(maxTimeoutSeconds=timeout))
    auth = authorization(p.valued, "0x" + "aa" * 20, nonce=nonce, now=now)
    assert auth["to"] == PAY_TO and auth["value"] == "10000" and auth["nonce"] == "0x" + nonce.hex()
    assert now < int(auth["validBefore"]) <= now + MAX_TIMEOUT_S
    if timeout:
        assert int(auth["validBefore"]) == now + min(timeout, MAX_TIMEOUT_S)


def test_the_signature_recovers_to_the_signer() -> None:
    signer = EvmSigner.from_key(KEY)
    p = priced(requirement())
    auth = authorization(p.valued, signer.address, nonce=b"\x07" * 32, now=1_800_000_000)
    domain, types, primary, message = typed_data(p.valued, auth)
    sig = signer.sign_typed_data(domain, types, primary, message)
    full = {"types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                       {"name": "chainId", "type": "uint256"},
                                       {"name": "verifyingContract", "type": "address"}], **types},
            "primaryType": primary, "domain": domain, "message": message}
    assert Account.recover_message(encode_typed_data(full_message=full), signature=sig) == signer.address
    assert domain == {"name": "USDC", "version": "2", "chainId": 84532, "verifyingContract": USDC}


def test_payloads_have_each_versions_shape() -> None:
    ch2 = x402.X402Challenge.from_dict(v2_challenge())
    out2 = payment_payload(ch2, ch2.accepts[0], {"from": "0x1"}, b"\x01" * 65)
    assert out2["x402Version"] == 2 and out2["accepted"] == requirement() and out2["resource"] == {"url": "http://svc/weather"}
    ch1 = x402.X402Challenge.from_dict({"x402Version": 1, "accepts": [requirement(network="base-sepolia")]})
    out1 = payment_payload(ch1, ch1.accepts[0], {"from": "0x1"}, b"\x01" * 65)
    assert out1 == {"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
                    "payload": {"signature": "0x" + "01" * 65, "authorization": {"from": "0x1"}}}


# -- the signer keeps its key -----------------------------------------------------------------------
def test_the_key_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    import pickle

    signer = EvmSigner.from_key(KEY)
    secret = KEY[2:]
    assert secret not in repr(signer) and secret not in str(signer) and signer.address in repr(signer)
    with pytest.raises(ConfigError) as bad:
        EvmSigner.from_key(KEY[:-2])
    assert KEY[2:-2] not in str(bad.value)
    with pytest.raises(TypeError):
        pickle.dumps(signer)
    with pytest.raises(ConfigError):
        EvmSigner(object())


def test_a_signer_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPAY_EVM_KEY", KEY)
    assert EvmSigner.from_env().address == EvmSigner.from_key(KEY).address
    monkeypatch.delenv("HTTPAY_EVM_KEY")
    with pytest.raises(ConfigError, match="HTTPAY_EVM_KEY"):
        EvmSigner.from_env()


# -- the flow -------------------------------------------------------------------------------------
def test_pays_and_records_one_settled_x402_payment(ledger_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    svc = Service()
    spy = SpySigner(ledger_path)
    with client(ledger_path, svc, spy) as c:
        r = c.get("http://svc/weather")
    assert r.status_code == 200 and r.json() == {"report": "sunny"}
    [paid] = rows(ledger_path)
    assert (paid.status, paid.protocol, paid.method) == (Status.SETTLED, "x402", "x402:exact:eip155:84532")
    assert paid.amount_msat == 10_000 and (paid.offer_amount, paid.offer_currency) == (10_000, "USDC")
    assert paid.wallet == spy.name and "0x" + "ab" * 32 in (paid.reason or "")
    [payment] = svc.payments
    nonce = payment["payload"]["authorization"]["nonce"]
    assert paid.payment_hash == nonce[2:]  # one authorization, one row
    assert payment["accepted"] == requirement() and payment["payload"]["authorization"]["from"] == spy.address
    # written down, pending, before anything was signed
    assert spy.rows_when_signing == [[("pending", nonce[2:])]]
    assert httpay.receipt_of(r) == paid
    assert KEY[2:] not in caplog.text and payment["payload"]["signature"][2:] not in caplog.text
    assert KEY[2:].encode() not in ledger_path.read_bytes()


def test_v1_challenges_are_paid_with_x_payment(ledger_path: Path) -> None:
    ch = {"x402Version": 1, "error": "X-PAYMENT header is required",
          "accepts": [requirement(network="base-sepolia", maxAmountRequired="20000", amount=None)]}
    ch["accepts"][0].pop("amount")
    svc = Service(ch)
    with client(ledger_path, svc, SpySigner(ledger_path)) as c:
        assert c.get("http://svc/weather").status_code == 200
    [payment] = svc.payments
    assert payment["x402Version"] == 1 and payment["network"] == "base-sepolia"
    assert payment["payload"]["authorization"]["value"] == "20000"
    assert [(r.status, r.method, r.amount_msat) for r in rows(ledger_path)] == [
        (Status.SETTLED, "x402:exact:base-sepolia", 20_000)]


def test_no_signer_still_refuses_naming_price_and_network(ledger_path: Path) -> None:
    svc = Service()
    with client(ledger_path, svc) as c, pytest.raises(httpay.PaymentRefused) as err:
        c.get("http://svc/weather")
    assert err.value.rule == "no_signer" and "eip155:84532" in str(err.value) and "0.01 USDC" in str(err.value)
    assert svc.payments == [] and rows(ledger_path) == []


@pytest.mark.parametrize(("policy", "rule"), [
    ({"methods": ["lightning"]}, "methods"),
    ({"usd_per_btc": None}, "exchange_rate"),
    ({"max_per_payment_usd": 0.005}, "max_per_payment"),
    ({"budget_usd": 0.005}, "budget"),
    ({"denied_hosts": ["svc"]}, "denied_host"),
])
def test_the_policy_refuses_before_anything_is_signed(ledger_path: Path, policy: dict[str, Any], rule: str) -> None:
    svc, spy = Service(), SpySigner(ledger_path)
    with client(ledger_path, svc, spy, **policy) as c, pytest.raises(httpay.PaymentRefused) as err:
        c.get("http://svc/weather")
    assert err.value.rule == rule and spy.signed == [] and svc.payments == [] and rows(ledger_path) == []
    assert err.value.offers is not None and err.value.response is not None


def test_budgets_count_x402_spending(ledger_path: Path) -> None:
    """$0.025 of budget: two $0.01 payments go through, the third is refused (the ledger's budgets hold)."""
    svc, spy = Service(), SpySigner(ledger_path)
    with client(ledger_path, svc, spy, budget_usd=0.025) as c:
        assert c.get("http://svc/weather").status_code == 200
        assert c.get("http://svc/weather").status_code == 200
        with pytest.raises(httpay.PaymentRefused) as err:
            c.get("http://svc/weather")
    assert err.value.rule == "budget" and len(spy.signed) == 2 and len(svc.payments) == 2


def test_an_asset_of_unknown_value_is_refused(ledger_path: Path) -> None:
    svc, spy = Service(v2_challenge(requirement(asset="0x" + "12" * 20, extra={"name": "GOLD", "version": "1"}))), None
    spy = SpySigner(ledger_path)
    with client(ledger_path, svc, spy) as c, pytest.raises(httpay.PaymentRefused) as err:
        c.get("http://svc/weather")
    assert err.value.rule == "x402" and "cannot be told" in str(err.value) and spy.signed == []


def test_a_refused_payment_stays_counted_and_is_never_repeated(ledger_path: Path) -> None:
    """A 402 to a signed payment is the service's word only: it holds the signature and could still
    settle it, so the row stays pending and every budget counts it (a service answering 402 to each
    signature it takes runs into the budget, not past it)."""
    svc, spy = Service(answer="refuse"), SpySigner(ledger_path)
    with client(ledger_path, svc, spy) as c, pytest.raises(PaymentRejected) as err:
        c.get("http://svc/weather")
    assert "invalid_exact_evm_payload_signature" in str(err.value)
    assert svc.requests == 2 and len(spy.signed) == 1
    [row] = rows(ledger_path)
    assert row.status is Status.PENDING and "invalid_exact_evm_payload_signature" in (row.reason or "")
    with SQLiteLedger(ledger_path) as lg:
        assert lg.spent_msat() == row.amount_msat


def test_a_service_that_keeps_every_signature_runs_into_the_budget(ledger_path: Path) -> None:
    """A hostile service answering 402 to each signed payment it takes: each signature it holds is
    counted, so the budget stops the signing (before, each row was failed on its word and a client
    with a $0.05 budget signed without end)."""
    svc, spy = Service(answer="refuse"), SpySigner(ledger_path)
    with client(ledger_path, svc, spy, budget_usd=0.05) as c:
        for _ in range(5):
            with pytest.raises(PaymentRejected):
                c.get("http://svc/weather")
        with pytest.raises(httpay.PaymentRefused) as over:
            c.get("http://svc/weather")
    assert over.value.rule == "budget" and len(spy.signed) == 5
    assert [r.status for r in rows(ledger_path)] == [Status.PENDING] * 5



def test_a_service_serving_with_failed_receipts_runs_into_the_budget(ledger_path: Path) -> None:
    """Served with HTTP 200 and a receipt saying the settlement failed, request after request: each
    signature it holds is counted, so the budget stops the signing."""
    svc, spy = Service(answer="fail_settle"), SpySigner(ledger_path)
    with client(ledger_path, svc, spy, budget_usd=0.05) as c:
        for _ in range(5):
            assert c.get("http://svc/weather").status_code == 200
        with pytest.raises(httpay.PaymentRefused) as over:
            c.get("http://svc/weather")
    assert over.value.rule == "budget" and len(spy.signed) == 5


def test_settled_but_still_402_is_recorded_as_paid(ledger_path: Path) -> None:
    """A receipt saying the money moved is believed even on a 402: the ledger tells the truth, and nothing is re-paid."""
    from httpay.errors import PaymentNotHonored

    svc = Service(answer="settle_then_402")
    with client(ledger_path, svc, SpySigner(ledger_path)) as c, pytest.raises(PaymentNotHonored):
        c.get("http://svc/weather")
    [row] = rows(ledger_path)
    assert row.status is Status.SETTLED and "cd" * 32 in (row.reason or "") and svc.requests == 2


def test_a_settlement_the_service_says_failed_stays_counted(ledger_path: Path) -> None:
    """Served, with a receipt saying the settlement failed: the service's word only, and it holds the
    signature, so the row stays pending and counted (a service serving every request this way would
    otherwise take a signature per request past every budget)."""
    with client(ledger_path, Service(answer="fail_settle"), SpySigner(ledger_path)) as c:
        r = c.get("http://svc/weather")
    [row] = rows(ledger_path)
    assert r.status_code == 200 and row.status is Status.PENDING and "insufficient_funds" in (row.reason or "")
    with SQLiteLedger(ledger_path) as lg:
        assert lg.spent_msat() == row.amount_msat


def test_a_lost_answer_leaves_the_payment_pending(ledger_path: Path) -> None:
    svc = Service(answer="raise")
    with client(ledger_path, svc, SpySigner(ledger_path)) as c, pytest.raises(PaymentOutcomeUnknown):
        c.get("http://svc/weather")
    [row] = rows(ledger_path)
    assert row.status is Status.PENDING and "outcome unknown" in (row.reason or "")
    # a restart does not let the Lightning wallet's reconciliation fail (and so re-pay) it
    with httpay.Client(wallet=FakeWallet(FakeService()), ledger=ledger_path, reconcile_grace_s=0):
        pass
    assert rows(ledger_path)[0].status is Status.PENDING


def test_the_cheapest_payable_offer_is_chosen(ledger_path: Path) -> None:
    cheap_elsewhere = requirement(amount="5000", network="eip155:8453", asset="0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
                                  extra={"name": "USD Coin", "version": "2"})
    svc = Service(v2_challenge(requirement(amount="20000"), cheap_elsewhere, requirement(amount="15000")))
    spy = SpySigner(ledger_path)
    with client(ledger_path, svc, spy) as c:
        assert c.get("http://svc/weather").status_code == 200
    assert svc.payments[0]["accepted"]["amount"] == "5000"
    # a signer kept to Base Sepolia takes the cheapest offer there
    svc2 = Service(svc.challenge)
    with client(ledger_path, svc2, EvmSigner.from_key(KEY, networks=["eip155:84532"])) as c:
        assert c.get("http://svc/weather").status_code == 200
    assert svc2.payments[0]["accepted"]["amount"] == "15000"


def test_a_pinned_offer_and_the_approver_are_respected(ledger_path: Path) -> None:
    ch = v2_challenge(requirement(amount="5000"), requirement(amount="20000", payTo="0x" + "cd" * 20))
    offers = x402.X402Challenge.from_dict(ch).to_offers()
    svc = Service(ch)
    with client(ledger_path, svc, SpySigner(ledger_path)) as c:
        c.get("http://svc/weather", extensions={OFFER_EXTENSION: offers[1].offer_id})
    assert svc.payments[-1]["accepted"]["amount"] == "20000"
    asked: list[Any] = []
    spy = SpySigner(ledger_path)
    with client(ledger_path, svc, spy, approve=lambda d: asked.append(d) or False) as c, \
            pytest.raises(httpay.PaymentRefused) as err:
        c.get("http://svc/weather")
    assert err.value.rule == "approval" and spy.signed == [] and asked[0].price_msat == 5_000
    with client(ledger_path, svc, spy, approve=lambda d: offers[1]) as c:
        c.get("http://svc/weather")
    assert svc.payments[-1]["accepted"]["payTo"] == "0x" + "cd" * 20


async def test_the_async_client_pays_the_same_way(ledger_path: Path) -> None:
    svc = Service()
    async with httpay.AsyncClient(
        wallet=FakeWallet(FakeService()), ledger=ledger_path, x402_signer=EvmSigner.from_key(KEY),
        policy=httpay.Policy(methods=["x402"], usd_per_btc=RATE, max_per_payment_usd=0.05),
        transport=httpx.MockTransport(svc),
    ) as c:
        r = await c.get("http://svc/weather")
    assert r.status_code == 200 and [x.status for x in rows(ledger_path)] == [Status.SETTLED]


def test_the_client_checks_what_it_is_given(ledger_path: Path) -> None:
    with pytest.raises(ConfigError, match="x402_signer"):
        httpay.Client(wallet=FakeWallet(FakeService()), ledger=ledger_path, x402_signer="0x" + "11" * 32)
