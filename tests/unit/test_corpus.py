"""Every parser over every nasty real-world-shaped 402 in tests/corpus/.

Each file says which parsers should claim it (`expect`) and which should refuse it with a
ChallengeError (`errors`); every other parser must return None. Nothing may raise anything else.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from httpay.errors import ChallengeError
from httpay.protocols import l402_classic, l402_v02, macaroons, mpp, x402

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
FILES = sorted(CORPUS.glob("*.json"))
PARSERS: dict[str, Callable[[int, Any, Any], Any]] = {
    "l402_v02": l402_v02.parse, "l402_classic": l402_classic.parse, "x402": x402.parse, "mpp": mpp.parse,
}
MODELS = {"l402_v02": l402_v02.PaymentOffers, "l402_classic": l402_classic.L402Challenge, "x402": x402.X402Challenge,
          "mpp": mpp.MppChallenges}


def load(path: Path) -> tuple[dict[str, Any], httpx.Headers, bytes | None]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    headers = httpx.Headers([(k.encode(), v.encode("utf-8")) for k, v in doc["headers"]])
    if "body_b64" in doc:
        body: bytes | None = base64.b64decode(doc["body_b64"])
    else:
        body = None if doc["body"] is None else doc["body"].encode("utf-8")
    return doc, headers, body


def test_the_corpus_is_big_and_well_formed() -> None:
    assert len(FILES) >= 25
    for path in FILES:
        doc, _, _ = load(path)
        assert set(doc["expect"]) <= set(PARSERS), path.name
        assert set(doc["errors"]) <= set(PARSERS), path.name
        assert not set(doc["expect"]) & set(doc["errors"]), path.name
        assert doc["note"], path.name


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_each_parser_claims_refuses_or_ignores_as_expected(path: Path) -> None:
    doc, headers, body = load(path)
    for name, parse in PARSERS.items():
        try:
            out = parse(doc["status"], headers, body)
        except ChallengeError as exc:
            assert name in doc["errors"], f"{name} refused {path.name}: {exc}"
            assert str(exc), "a refusal says what was wrong"
            continue
        if name in doc["expect"]:
            assert isinstance(out, MODELS[name]), f"{name} did not claim {path.name}"
            assert str(out) and repr(out)
        else:
            assert out is None, f"{name} claimed {path.name}, which expects {doc['expect'] or 'nobody'}"
            assert name not in doc["errors"], f"{name} should have refused {path.name}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_the_same_answer_from_a_plain_mapping_and_string_body(path: Path) -> None:
    """Callers without httpx pass a dict and text; the verdict must not change."""
    doc, _headers, body = load(path)
    plain: dict[str, str] = {}
    for k, v in doc["headers"]:
        plain.setdefault(k, v)  # a dict keeps one value per name, as such callers would
    text = None if body is None else body.decode("utf-8", "replace")
    for name, parse in PARSERS.items():
        if len({k.lower() for k, _ in doc["headers"]}) != len(doc["headers"]) and name == "l402_classic":
            continue  # repeated headers can't live in a dict; the httpx test covers them
        try:
            out = parse(doc["status"], plain, text)
        except ChallengeError:
            assert name in doc["errors"], path.name
            continue
        assert (out is not None) == (name in doc["expect"]), (name, path.name)


def test_claimed_l402_challenges_carry_decodable_macaroons() -> None:
    for path in FILES:
        doc, headers, body = load(path)
        if "l402_classic" not in doc["expect"]:
            continue
        ch = l402_classic.parse(402, headers, body)
        assert ch is not None
        info = macaroons.decode(ch.macaroon)
        assert info.payment_hash is not None and len(info.payment_hash) == 64, path.name


def test_x402_corpus_offers_render() -> None:
    for path in FILES:
        doc, headers, body = load(path)
        if "x402" in doc["expect"]:
            ch = x402.parse(402, headers, body)
            assert ch is not None
            offers = ch.to_offers()
            assert offers and all(o.amount >= 0 and o.payment_methods[0].startswith("x402:") for o in offers)
