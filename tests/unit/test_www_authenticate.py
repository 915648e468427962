"""WWW-Authenticate reading: RFC 9110 challenges as servers really send them."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from httpay.errors import ChallengeError
from httpay.protocols.www_authenticate import Challenge, format_challenge, header_values, parse_challenges

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKEN68 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"


def test_one_challenge_with_quoted_params() -> None:
    [c] = parse_challenges('L402 macaroon="AgEB+/==", invoice="lnbc1"')
    assert c.scheme == "L402"
    assert c.params == {"macaroon": "AgEB+/==", "invoice": "lnbc1"}
    assert c.token68 is None


def test_several_challenges_in_one_header_mixed_schemes() -> None:
    cs = parse_challenges('Payment id="abc", method="tempo", Bearer realm="api", L402 macaroon=m1, invoice=lnbc1, Cashu x')
    assert [c.scheme for c in cs] == ["Payment", "Bearer", "L402", "Cashu"]
    assert cs[0].params == {"id": "abc", "method": "tempo"}
    assert cs[1].params == {"realm": "api"}
    assert cs[2].params == {"macaroon": "m1", "invoice": "lnbc1"}
    assert cs[3].token68 == "x"


def test_several_headers_keep_their_order() -> None:
    cs = parse_challenges(['LSAT macaroon="a", invoice="b"', 'L402 macaroon="c", invoice="d"'])
    assert [(c.scheme, c.params["macaroon"]) for c in cs] == [("LSAT", "a"), ("L402", "c")]


def test_escapes_commas_and_equals_inside_quotes() -> None:
    [c, d] = parse_challenges(r'Basic realm="a \"quoted\", realm=x", charset="UTF-8", Bearer error="e\\f"')
    assert c.params == {"realm": 'a "quoted", realm=x', "charset": "UTF-8"}
    assert d.params == {"error": "e\\f"}


def test_scheme_and_param_names_are_case_insensitive() -> None:
    [c] = parse_challenges('l402 MACAROON="m", Invoice="i"')
    assert c.is_scheme("L402") and not c.is_scheme("LSAT")
    assert c.params == {"macaroon": "m", "invoice": "i"}


def test_token68_and_bare_scheme() -> None:
    cs = parse_challenges("Negotiate YIIB+w==, Basic, Foo a=")
    assert [(c.scheme, c.token68, c.params) for c in cs] == [
        ("Negotiate", "YIIB+w==", {}), ("Basic", None, {}), ("Foo", "a=", {}),
    ]


def test_missing_commas_and_odd_spacing_are_tolerated() -> None:
    """lsat-js's own fixtures omit the comma between macaroon and invoice."""
    [c] = parse_challenges('LSAT  macaroon = "m"   invoice="i"')
    assert c.params == {"macaroon": "m", "invoice": "i"}


def test_garbage_pieces_are_skipped_and_the_rest_kept() -> None:
    cs = parse_challenges('realm="orphan", ;;;, "junk", L402 macaroon="m", @@@, invoice="i", Bearer')
    assert [c.scheme for c in cs] == ["L402", "Bearer"]
    assert cs[0].params == {"macaroon": "m", "invoice": "i"}


def test_an_unterminated_quote_drops_only_that_parameter() -> None:
    [c] = parse_challenges('L402 version="0", invoice="i", macaroon="never closes, Bearer realm=x')
    assert c.params == {"version": "0", "invoice": "i"}


def test_first_of_repeated_params_wins() -> None:
    [c] = parse_challenges('L402 macaroon="first", macaroon="second"')
    assert c.params["macaroon"] == "first"


def test_bytes_values_and_empty_input() -> None:
    assert parse_challenges(b'Basic realm="x"')[0].params == {"realm": "x"}
    assert parse_challenges(None) == []
    assert parse_challenges("") == []
    assert parse_challenges(" , ,, ") == []


def test_non_text_and_absurd_input_is_a_typed_error() -> None:
    with pytest.raises(ChallengeError):
        parse_challenges([42])  # type: ignore[list-item]
    with pytest.raises(ChallengeError):
        parse_challenges("Basic realm=" + "x" * 300_000)


def test_header_values_from_every_container() -> None:
    pairs = [("WWW-Authenticate", "LSAT a=b"), ("www-authenticate", "L402 c=d"), ("Content-Type", "text/plain")]
    assert header_values(httpx.Headers(pairs), "www-authenticate") == ["LSAT a=b", "L402 c=d"]
    assert header_values(pairs, "WWW-Authenticate") == ["LSAT a=b", "L402 c=d"]
    assert header_values({"WWW-Authenticate": "x"}, "www-authenticate") == ["x"]
    assert header_values({"WWW-Authenticate": ["x", "y"]}, "www-authenticate") == ["x", "y"]
    assert header_values(None, "www-authenticate") == []
    with pytest.raises(ChallengeError):
        header_values(42, "www-authenticate")


tokens = st.text(alphabet=TCHARS, min_size=1, max_size=12)
values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
param_challenges = st.builds(
    lambda s, ps: Challenge(scheme=s, params=ps),
    tokens,
    st.dictionaries(tokens.map(str.lower), values, max_size=5),
)
token68_challenges = st.builds(
    lambda s, t, pad: Challenge(scheme=s, token68=t + "=" * pad),
    tokens, st.text(alphabet=TOKEN68, min_size=1, max_size=40), st.integers(0, 2),
)


@given(st.lists(st.one_of(param_challenges, token68_challenges), min_size=1, max_size=4), st.booleans())
@settings(max_examples=300)
def test_round_trip_header_text_gives_back_the_same_challenges(challenges: list[Challenge], split: bool) -> None:
    texts = [format_challenge(c) for c in challenges]
    got = parse_challenges(texts if split else ", ".join(texts))
    assert got == challenges


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), st.lists(st.text(max_size=80), max_size=4)))
@settings(max_examples=500)
def test_any_text_gives_challenges_or_a_typed_error(value: object) -> None:
    try:
        out = parse_challenges(value)  # type: ignore[arg-type]
    except ChallengeError:
        return
    assert all(isinstance(c, Challenge) and c.scheme for c in out)


@given(st.text(alphabet='L402SATmacroninvoe="\\, \t=abc', max_size=120))
@settings(max_examples=500)
def test_structured_noise_never_raises(value: str) -> None:
    for c in parse_challenges(value):
        assert isinstance(c.params, dict)
