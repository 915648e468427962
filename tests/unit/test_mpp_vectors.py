"""httpay's MPP wire format (`httpay.protocols.mpp`) against every one of aperture's cross-implementation
vectors (tests/vectors/aperture_mpp_vectors.json, copied from lightninglabs/aperture mpp/testdata): JCS,
base64url, challenge headers and lists, HMAC challenge ids, credentials and receipts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from httpay.errors import ChallengeError
from httpay.protocols import mpp

VECTORS: dict[str, Any] = json.loads((Path(__file__).parents[1] / "vectors" / "aperture_mpp_vectors.json").read_text("utf-8"))
SECRET = bytes.fromhex(VECTORS["hmacSecretHex"])


def cases(kind: str, *, error: bool | None = None) -> list[Any]:
    chosen = [v for v in VECTORS[kind] if error is None or bool(v.get("error")) is error]
    return [pytest.param(v, id=v["name"]) for v in chosen]


def test_the_vectors_are_all_here() -> None:
    counts = {k: len(v) for k, v in VECTORS.items() if isinstance(v, list)}
    assert counts == {"canonicalization": 22, "base64url": 17, "challengeHeaders": 6, "challengeLists": 11,
                      "challengeIds": 4, "credentials": 11, "receipts": 8}
    assert SECRET == b"mpp-test-vector-secret"


@pytest.mark.parametrize("v", cases("canonicalization", error=False))
def test_canonical_json(v: dict[str, Any]) -> None:
    assert mpp.canonical_json(json.loads(v["input"])) == v["canonical"]


@pytest.mark.parametrize("v", cases("canonicalization", error=True))
def test_canonical_json_of_malformed_input(v: dict[str, Any]) -> None:
    with pytest.raises(ChallengeError, match="not base64url of JSON"):  # what reading such a request says
        mpp.decode_json(mpp.b64url_encode(v["input"].encode()), "request")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1: "x"}, {"a": object()}])
def test_canonical_json_refuses_what_json_cannot_hold(value: Any) -> None:
    with pytest.raises(ChallengeError, match="canonical JSON"):
        mpp.canonical_json(value)


@pytest.mark.parametrize("v", cases("base64url", error=False))
def test_base64url_decodes(v: dict[str, Any]) -> None:
    raw = mpp.b64url_decode(v["encoded"])
    assert raw.hex() == v.get("decodedHex", "")
    if v["canonical"]:
        assert mpp.b64url_encode(raw) == v["encoded"]
    else:
        assert mpp.b64url_encode(raw) == v["encoded"].rstrip("=")


@pytest.mark.parametrize("v", cases("base64url", error=True))
def test_base64url_refuses(v: dict[str, Any]) -> None:
    with pytest.raises(ChallengeError, match="base64url|stray bits"):
        mpp.b64url_decode(v["encoded"])


@pytest.mark.parametrize("v", cases("challengeHeaders"))
def test_challenge_header_reads_and_writes(v: dict[str, Any]) -> None:
    headers = httpx.Headers({"www-authenticate": v["header"].encode()})  # obs-text travels as UTF-8 bytes
    assert mpp.complete_params(headers) == [v["parsed"]]
    assert mpp.challenge_header(v["params"]) == v["header"]  # what a server built on httpay sends
    found = mpp.parse(402, headers)
    assert found is not None
    (ch,) = found
    assert (ch.id, ch.realm, ch.method, ch.intent) == tuple(v["parsed"][k] for k in ("id", "realm", "method", "intent"))
    assert ch.description == v["parsed"].get("description")
    assert ch.echo() == {k: v["parsed"][k] for k in mpp.ECHOED if k in v["parsed"]}
    assert dict(ch.request) == json.loads(mpp.b64url_decode(v["parsed"]["request"]))


@pytest.mark.parametrize("v", cases("challengeLists", error=False))
def test_challenge_lists_split(v: dict[str, Any]) -> None:
    assert mpp.complete_params(httpx.Headers({"www-authenticate": v["header"]})) == v["challenges"]


@pytest.mark.parametrize("v", cases("challengeLists", error=True))
def test_challenge_lists_without_a_complete_offer(v: dict[str, Any]) -> None:
    with pytest.raises(ChallengeError, match="Payment challenge"):
        mpp.complete_params(httpx.Headers({"www-authenticate": v["header"]}))


@pytest.mark.parametrize("v", cases("challengeIds"))
def test_hmac_challenge_id(v: dict[str, Any]) -> None:
    params = v["params"]
    assert "|".join(params.get(k, "") for k in mpp.HMAC_SLOTS) == v["hmacInput"]
    assert mpp.challenge_id(SECRET, params) == params["id"]
    changed = {**params, "description": "other"}  # description is not covered
    assert mpp.challenge_id(SECRET, changed) == params["id"]
    assert mpp.challenge_id(SECRET, {**params, "realm": params["realm"] + "x"}) != params["id"]


def test_make_challenge_ids_itself_by_the_formula() -> None:
    from datetime import UTC, datetime

    params = mpp.make_challenge(SECRET, realm="api.example.com", method="lightning", intent="session",
                                request={"amount": "3"}, expires=datetime(2026, 3, 15, 12, 5, tzinfo=UTC),
                                digest="sha-256=:X48E9q:", description="not covered by the HMAC",
                                opaque={"orderId": "123"})
    assert params == VECTORS["challengeIds"][1]["params"]


@pytest.mark.parametrize("v", cases("credentials", error=False))
def test_credentials_decode_and_encode(v: dict[str, Any]) -> None:
    doc = json.loads(v["credentialJson"])
    cred = mpp.parse_credential(v["header"])
    assert (dict(cred.challenge), dict(cred.payload), cred.source) == (doc["challenge"], doc["payload"], doc.get("source"))
    # the client side builds the identical header from the challenge it answers
    ch = mpp.MppChallenge(id=doc["challenge"]["id"], realm=doc["challenge"]["realm"], method=doc["challenge"]["method"],
                          intent=doc["challenge"]["intent"], request={}, params=doc["challenge"])
    built = ch.credential(doc["payload"], source=doc.get("source"))
    assert built.split(" ", 1)[1] == v["header"].split(" ", 1)[1]
    assert "preimage" not in repr(cred) and doc["payload"].get("preimage", "") not in repr(cred)


@pytest.mark.parametrize("v", cases("credentials", error=True))
def test_credentials_refused(v: dict[str, Any]) -> None:
    with pytest.raises(ChallengeError):
        mpp.parse_credential(v["header"])


@pytest.mark.parametrize("v", cases("receipts"))
def test_receipts(v: dict[str, Any]) -> None:
    doc = json.loads(v["receiptJson"])
    assert mpp.receipt_header(doc) == v["header"]
    assert mpp.decode_json(v["header"], "receipt") == doc  # integers beyond 2^53 kept exact
    headers = httpx.Headers({"payment-receipt": v["header"]})
    if "status" not in doc:  # the need-top-up SSE event's data: not a receipt
        with pytest.raises(ChallengeError, match="lacks status"):
            mpp.read_receipt(headers)
        return
    got = mpp.read_receipt(headers)
    assert got is not None and got.success
    assert (got.method, got.reference, got.timestamp, got.challenge_id) == (
        doc["method"], doc["reference"], doc["timestamp"], doc.get("challengeId"))
    assert dict(got.extra) == {k: doc[k] for k in ("refundSats", "refundStatus") if k in doc}
