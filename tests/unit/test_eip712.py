"""httpay's own EIP-712 encoder signs exactly what eth-account signs, and leaves it every shape it
does not take (the full campaign: tools/fuzz.py --eip712-differential N)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("eth_account")

from eth_account import Account

import httpay
from httpay.dialects.x402 import AUTHORIZATION_TYPES, UPTO_TYPES
from httpay.errors import WalletError
from httpay.signers.eip712 import typed_data_digest
from httpay.signers.evm import _domain_fields

ROOT = Path(__file__).resolve().parents[2]
KEY = "0x" + "4f" * 32
PAYER = Account.from_key(KEY).address
USDC = {"name": "USD Coin", "version": "2", "chainId": 84532, "verifyingContract": "0x036CbD53842c5426634e7929541eC2318f3dCF7e"}
EXACT = {"from": PAYER, "to": "0x" + "11" * 20, "value": 10_000, "validAfter": 0, "validBefore": 1_900_000_000,
         "nonce": bytes(range(32))}
PERMIT2 = {"name": "Permit2", "chainId": 8453, "verifyingContract": "0x000000000022D473030F116dDEE9F6B43aC78BA3"}
UPTO = {"permitted": {"token": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "amount": 50_000},
        "spender": "0x" + "22" * 20, "nonce": 2**200 + 7, "deadline": 1_900_000_000,
        "witness": {"to": "0x" + "33" * 20, "facilitator": "0x" + "44" * 20, "validAfter": 0}}


def eth_account_signature(domain: dict[str, Any], types: dict[str, Any], primary: str, message: dict[str, Any]) -> bytes:
    full = {"types": {"EIP712Domain": _domain_fields(domain), **types}, "primaryType": primary, "domain": domain,
            "message": message}
    return bytes(Account.from_key(KEY).sign_typed_data(full_message=full).signature)


@pytest.mark.parametrize(("domain", "types", "primary", "message"), [
    (USDC, AUTHORIZATION_TYPES, "TransferWithAuthorization", EXACT),    # x402 exact, MPP's evm charge
    (PERMIT2, UPTO_TYPES, "PermitWitnessTransferFrom", UPTO),            # x402 upto (nested structs)
], ids=["eip3009", "permit2"])
def test_what_the_dialects_sign_takes_the_fast_path_and_is_the_same_signature(domain: Any, types: Any, primary: str,
                                                                              message: Any) -> None:
    signer = httpay.EvmSigner.from_key(KEY)
    assert signer.in_process
    assert typed_data_digest(domain, types, primary, message) is not None
    assert signer.sign_typed_data(domain, types, primary, message) == eth_account_signature(domain, types, primary,
                                                                                            message)


@pytest.mark.parametrize("change", [
    {"value": "10000"},                 # a numeric string: eth-account's own reading
    {"value": 2**256},                  # out of range for uint256
    {"nonce": "0x" + "00" * 32},        # a hex string for bytes32
    {"nonce": b"short"},                # the wrong length
    {"to": "0x" + "aB" * 20},           # mixed case with a wrong checksum
    {"from": None},
], ids=["numeric-string", "overflow", "hex-bytes", "short-bytes", "bad-checksum", "none"])
def test_other_shapes_are_left_to_eth_account_which_accepts_or_refuses_them_as_before(change: dict[str, Any]) -> None:
    message = {**EXACT, **change}
    assert typed_data_digest(USDC, AUTHORIZATION_TYPES, "TransferWithAuthorization", message) is None
    signer = httpay.EvmSigner.from_key(KEY)
    try:
        expected: bytes | None = eth_account_signature(USDC, AUTHORIZATION_TYPES, "TransferWithAuthorization", message)
    except Exception:  # noqa: BLE001 - eth-account refuses it: so must the signer, with its own error
        expected = None
    if expected is None:
        with pytest.raises(WalletError, match="could not sign the TransferWithAuthorization message") as info:
            signer.sign_typed_data(USDC, AUTHORIZATION_TYPES, "TransferWithAuthorization", message)
        assert KEY[2:] not in str(info.value)
    else:
        assert signer.sign_typed_data(USDC, AUTHORIZATION_TYPES, "TransferWithAuthorization", message) == expected


def test_a_signer_around_another_account_object_signs_with_it_and_is_not_in_process() -> None:
    calls: list[str] = []

    class Remote:
        address = PAYER

        def sign_typed_data(self, full_message: dict[str, Any]) -> Any:
            calls.append(full_message["primaryType"])
            return Account.from_key(KEY).sign_typed_data(full_message=full_message)

    signer = httpay.EvmSigner(Remote())
    assert not signer.in_process
    assert signer.sign_typed_data(USDC, AUTHORIZATION_TYPES, "TransferWithAuthorization", EXACT) == \
        eth_account_signature(USDC, AUTHORIZATION_TYPES, "TransferWithAuthorization", EXACT)
    assert calls == ["TransferWithAuthorization"]


def test_random_nonces_sign_alike() -> None:
    signer = httpay.EvmSigner.from_key(KEY)
    for _ in range(20):
        message = {**EXACT, "nonce": os.urandom(32), "value": int.from_bytes(os.urandom(4), "big")}
        assert signer.sign_typed_data(USDC, AUTHORIZATION_TYPES, "TransferWithAuthorization", message) == \
            eth_account_signature(USDC, AUTHORIZATION_TYPES, "TransferWithAuthorization", message)


def test_a_differential_smoke_of_the_eip712_campaign() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "fuzz.py"), "--eip712-differential", "3000",
                          "--seed", "smoke", "--workers", "1"], capture_output=True, text=True, timeout=600, cwd=ROOT,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 disagreements" in run.stdout and "3,000 inputs" in run.stdout
