"""402s taken from the specs and peers (tests/vectors/spec_402s/, each naming its source): an offer
the spec says cannot be checked is never the one chosen, and a refusal gives the real reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import httpay
from httpay.core.model import Challenge
from httpay.core.quote import quote
from httpay.errors import ChallengeError

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "spec_402s"
URL, HOST = "https://api.example.com/x", "api.example.com"


def case(prefix: str) -> dict[str, Any]:
    (path,) = VECTORS.glob(f"{prefix}_*.json")
    return dict(json.loads(path.read_text()))


def read(*prefixes: str) -> tuple[Challenge, ...]:
    """The challenges of one 402 carrying the WWW-Authenticate headers of the named cases."""
    headers = httpx.Headers([tuple(h) for p in prefixes for h in case(p)["headers"]])
    return tuple(httpay.read_challenge(402, headers, b"", url=URL))


def pick(challenges: tuple[Challenge, ...]) -> httpay.Quote:
    return quote(challenges, httpay.Policy(methods=["lightning"]), url=URL, host=HOST, usd_per_btc=60_000)


def test_an_amountless_l402_invoice_is_read_unpayable_and_never_chosen_over_a_priced_one() -> None:
    (alone,) = read("011")
    assert alone.offers[0].unpayable == "its invoice names no amount, so there is no price to check"
    with pytest.raises(httpay.PaymentRefused, match="its invoice names no amount"):
        pick((alone,))
    chosen = pick(read("011", "076"))  # beside aperture's LSAT + L402 + Payment 402 at 150 sat
    assert chosen.price_msat == 150_000 and chosen.offer.unpayable is None


def test_an_mpp_lightning_charge_whose_amount_is_not_its_invoices_is_never_chosen() -> None:
    (lying,) = read("077")
    assert lying.offers[0].unpayable == "its amount (15 sat) is not its invoice's (150 sat)"
    chosen = pick(read("077", "076"))
    assert chosen.price_msat == 150_000 and chosen.offer.unpayable is None


def test_the_spec_example_priced_in_btc_is_refused_for_what_it_is() -> None:
    with pytest.raises(httpay.PaymentRefused) as err:
        pick(read("052"))
    assert "priced in 'BTC', not sat" in str(err.value)
    assert "allow one of the service's methods" not in str(err.value)  # the method is allowed: it is the price


def test_an_x402_requirement_with_no_time_to_pay_is_refused_not_given_300_s() -> None:
    doc = case("078")
    with pytest.raises(ChallengeError, match="maxTimeoutSeconds' must be a positive whole number"):
        httpay.read_challenge(402, httpx.Headers([tuple(h) for h in doc["headers"]]), doc["body"].encode(), url=URL)


@pytest.mark.parametrize("prefix", ["071", "072"])
def test_a_payment_method_id_outside_the_grammar_is_refused(prefix: str) -> None:
    """payment-method-id = 1*LOWERALPHA; pympp refuses these too."""
    doc = case(prefix)
    headers = httpx.Headers([tuple(h) for h in doc["headers"]])
    assert not any(c.dialect == "mpp" and c.offers for c in _read_or_none(headers))


def _read_or_none(headers: httpx.Headers) -> list[Challenge]:
    try:
        return list(httpay.read_challenge(402, headers, b"", url=URL))
    except ChallengeError:
        return []
