"""Fuzzing the parsers a LAN intruder reaches first: the GA/T 1400 JSON mapping and the Digest parser.

The property: no input raises anything but the typed refusals the callers handle (``DigestError`` from the
Digest code; a pydantic ``ValidationError`` from validating a mapped event). ``make test`` runs a few hundred
cases per target; ``make fuzz`` runs 100,000 per target (``ANFANG_FUZZ_EXAMPLES``), bounded by hypothesis'
example count rather than by time.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from anfang.contracts import validate_event
from anfang_edge.sources.gat1400 import DigestAuth, DigestError, digest_response
from anfang_edge.sources.gat1400.digest import parse_authorization
from anfang_edge.sources.gat1400.mapping import ItemOutcome, JsonInt, loads, map_face, map_motor_vehicle, map_person

EXAMPLES = int(os.environ.get("ANFANG_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
POSTING = "45010101491327000176"
MAPPERS = (map_face, map_person, map_motor_vehicle)

# ------------------------------------------------------------------------------------------ GA/T 1400 objects

#: Field names the mapping looks at, so the fuzzer reaches past the first "missing field" refusal.
FIELDS = [
    "FaceID", "PersonID", "MotorVehicleID", "DeviceID", "SubImageList", "SubImageInfoObject", "Type", "Data",
    "FileFormat", "ShotTime", "LeftTopX", "LeftTopY", "RightBtmX", "RightBtmY", "FaceAppearTime",
    "PersonAppearTime", "PassTime", "AppearTime", "PlateNo", "PlateColor", "PlateClass", "VehicleClass",
    "VehicleColor", "HasPlate", "Name", "IDNumber",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["11", "14", "01", "02", "09", "10", "Jpeg", "Png", "20231213173915", "20231213173915123"]),
    st.sampled_from(
        [POSTING, "45010101491327000999", "4501", "京PM2N83", "无车牌", "1", "0", "蓝", "data:image/jpeg;base64,/9j/"]
    ),
    st.builds(JsonInt, st.from_regex(r"[0-9]{1,30}", fullmatch=True)),
    st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=10)), children, max_size=8),
    ),
    max_leaves=40,
)


def _check_outcome(outcome: ItemOutcome) -> None:
    assert isinstance(outcome, ItemOutcome)
    assert (outcome.event is None) != (outcome.reject is None)  # an event, or the reason why not
    if outcome.event is not None:
        with contextlib.suppress(ValidationError):  # refused per object with StatusCode 8 by the server
            validate_event(outcome.event)


@FUZZ
@given(obj=JSON, mapper=st.sampled_from(MAPPERS))
def test_the_gat1400_mapping_never_raises_on_any_json_value(obj: Any, mapper: Any) -> None:
    _check_outcome(mapper(obj, posting_device=POSTING))


@FUZZ
@given(obj=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=12), mapper=st.sampled_from(MAPPERS))
def test_the_gat1400_mapping_never_raises_on_objects_of_its_own_fields(obj: dict[str, Any], mapper: Any) -> None:
    _check_outcome(mapper(obj, posting_device=POSTING))


@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), JSON.map(lambda v: json.dumps(v, default=str).encode())))
def test_the_viid_json_loader_raises_only_what_the_server_catches(raw: bytes) -> None:
    with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):  # answered 400 / StatusCode 7
        loads(raw)


# ------------------------------------------------------------------------------------------ Digest

REALM = "anfang-edge"
PARAM_NAMES = ["username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce", "algorithm", "opaque"]
VALUES = st.one_of(st.text(max_size=30), st.sampled_from(["auth", "MD5", "SHA-256", "00000001", REALM, "/VIID/Faces"]))


@st.composite
def authorization_headers(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(st.text(max_size=300))
    params = draw(st.dictionaries(st.one_of(st.sampled_from(PARAM_NAMES), st.text(max_size=8)), VALUES, max_size=12))
    quote = draw(st.booleans())
    body = ", ".join(f'{k}="{v}"' if quote else f"{k}={v}" for k, v in params.items())
    return draw(st.sampled_from(["Digest ", "digest ", "Basic ", "Digest", ""])) + body


@FUZZ
@given(header=authorization_headers())
def test_the_digest_parser_raises_only_digest_error(header: str) -> None:
    try:
        params = parse_authorization(header)
    except DigestError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())


@FUZZ
@given(header=authorization_headers(), method=st.sampled_from(["POST", "GET", ""]))
def test_digest_verification_refuses_anything_forged_with_digest_error_only(header: str, method: str) -> None:
    auth = DigestAuth(realm=REALM)
    auth.challenges()
    try:
        username = auth.verify(method, "/VIID/Faces", header, lambda user: "pw" if user == "cam" else None)
    except DigestError:
        return
    raise AssertionError(f"forged credentials accepted for {username!r}")


def test_a_correct_response_still_verifies_so_the_fuzz_target_is_live() -> None:
    auth = DigestAuth(realm=REALM)
    nonce = auth.challenges()[0].split('nonce="')[1].split('"')[0]
    response = digest_response(
        "SHA-256", username="cam", realm=REALM, password="pw", method="POST", uri="/VIID/Faces", nonce=nonce,
        nc="00000001", cnonce="c",
    )  # fmt: skip
    header = (
        f'Digest username="cam", realm="{REALM}", nonce="{nonce}", uri="/VIID/Faces", algorithm=SHA-256,'
        f' qop=auth, nc=00000001, cnonce="c", response="{response}"'
    )
    assert auth.verify("POST", "/VIID/Faces", header, lambda user: "pw" if user == "cam" else None) == "cam"
