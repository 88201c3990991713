"""Pure edges of the API: JSON depth counting, parsing limits, problem responses, content types."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anfang.api.http import RequestError, json_depth, parse_json, problem_response, require_json_content_type
from anfang.contracts import ErrorCode

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\x'), inner, max_size=3),
    max_leaves=20,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@given(JSON)
def test_json_depth_matches_the_parsed_structure(value: object) -> None:
    assert json_depth(json.dumps(value).encode(), limit=1000) == _depth(value)


def test_depth_counting_stops_past_the_limit() -> None:
    assert json_depth(b"[" * 1_000_000, limit=16) == 17


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{", ErrorCode.MALFORMED_JSON),
        (b'{"a": NaN}', ErrorCode.MALFORMED_JSON),
        (b"\xff\xfe{}", ErrorCode.MALFORMED_JSON),
        (b"[" * 17 + b"]" * 17, ErrorCode.PAYLOAD_TOO_LARGE),
        (b"1" * 101, ErrorCode.PAYLOAD_TOO_LARGE),
    ],
)
def test_parse_json_errors(body: bytes, code: ErrorCode) -> None:
    with pytest.raises(RequestError) as caught:
        parse_json(body, max_bytes=100)
    assert caught.value.code == code


def test_strings_with_brackets_do_not_nest() -> None:
    assert parse_json(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[\\"]]]"}') == {"a": '[[[[[[[[[[[[[[[[[[[[[[[["]]]'}


def test_problem_response_has_date_and_stable_fields() -> None:
    response = problem_response(ErrorCode.SIGNATURE_EXPIRED, "too old")
    assert response.status == 401
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["Date"].endswith("GMT")
    assert json.loads(response.body) == {
        "type": "urn:anfang:problem:signature_expired",
        "title": "Signature is outside its freshness window",
        "status": 401,
        "code": "signature_expired",
        "detail": "too old",
    }


@pytest.mark.parametrize("value", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_json_content_types_accepted(value: str) -> None:
    require_json_content_type({"content-type": value})


@pytest.mark.parametrize("value", ["", "text/plain", "application/json; charset=latin-1", "application/jsonx"])
def test_other_content_types_refused(value: str) -> None:
    with pytest.raises(RequestError):
        require_json_content_type({"Content-Type": value})
