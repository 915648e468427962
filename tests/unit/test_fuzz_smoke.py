"""The fuzz campaign in small, plus the bugs it found, so they stay fixed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bech32 import CHARSET, bech32_decode, bech32_encode

from httpay.errors import ChallengeError, InvoiceError
from httpay.lightning import decode_invoice
from httpay.protocols import l402_v02
from tests.helpers import make_invoice

ROOT = Path(__file__).resolve().parents[2]


LABELS = {"body": "402 body", "l402": "WWW-Authenticate/L402", "x402": "x402 header", "invoice": "invoice decode"}


@pytest.mark.parametrize("engine", ["atheris", "random"])
def test_five_thousand_fuzz_inputs_reach_every_target_and_raise_nothing_unhandled(engine: str) -> None:
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "fuzz.py"), "--engine", engine, "--count", "5000",
                          "--seed", "smoke"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith(f"httpay fuzz: engine {engine},"), run.stdout
    rows = {line.rsplit(maxsplit=3)[0]: [int(n.replace(",", "")) for n in line.rsplit(maxsplit=3)[1:]]
            for line in run.stdout.splitlines()[2:] if line and not line.startswith(("rate", " "))}
    for target, label in LABELS.items():
        (row,) = [counts for name, counts in rows.items() if name.startswith(label)]
        assert row[0] > 0, f"{target} got no inputs\n{run.stdout}"
        assert row[2] == 0, run.stdout
    inputs, _, unhandled = rows["total"]
    assert inputs >= 5000, run.stdout
    assert unhandled == 0, run.stdout
    assert "UNHANDLED" not in run.stdout


def test_an_invoice_without_a_payment_hash_is_an_invoice_error() -> None:
    """Found by the fuzzer: bolt11 raised its own exception from the `payment_hash` property."""
    inv, _ = make_invoice(1000)
    hrp, data = bech32_decode(inv)
    assert hrp is not None and data is not None and CHARSET[data[7]] == "p"
    data = list(data)
    data[7] = CHARSET.index("2")  # the payment-hash tag becomes an unknown tag, which decoders skip
    with pytest.raises(InvoiceError) as err:
        decode_invoice(bech32_encode(hrp, data))
    assert err.value.check == "decode"


@pytest.mark.parametrize("balance", ["1e999", "-1e999", "NaN"])
def test_a_non_finite_balance_is_a_challenge_error(balance: str) -> None:
    """Found by the fuzzer: int(inf) escaped as OverflowError."""
    body = ('{"payment_request_url": "https://x.example/pr", "offers": [{"offer_id": "o", "amount": 1, '
            f'"balance": {balance}, "currency": "USD", "payment_methods": ["lightning"]}}]}}')
    with pytest.raises(ChallengeError) as err:
        l402_v02.parse(402, {"content-type": "application/json"}, body)
    assert err.value.field == "balance"
