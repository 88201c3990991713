"""GA/T 1400 objects → v1 events: the conformance table of deviations, event ids, times, Digest vectors."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from anfang.contracts import event_id_time, validate_event, validate_event_id
from anfang_edge.config import Gat1400SourceConfig, default_fixtures_dir, parse_config
from anfang_edge.errors import ConfigError
from anfang_edge.sources.gat1400 import (
    Deviation,
    StatusCode,
    deterministic_event_id,
    digest_response,
    map_face,
    map_motor_vehicle,
    map_person,
)
from anfang_edge.sources.gat1400.digest import DigestAuth, DigestError, parse_authorization
from anfang_edge.sources.gat1400.mapping import ItemOutcome, loads, parse_viid_time

FIXTURES = default_fixtures_dir()
assert FIXTURES is not None
JPEG = (FIXTURES / "face_crop.jpg").read_bytes()
SCENE = (FIXTURES / "scene_face_1920x1080.jpg").read_bytes()
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
GIF = b"GIF89a" + b"\x00" * 64
DEVICE = "45010101491327000176"
FACE_ID = "450101014913270001760220231213173915001270600128"
VEHICLE_ID = "450101014913270001760220231214180257000640200065"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def sub(type_: str, data: str, file_format: str = "Jpeg", shot: str = "20231213173915") -> dict[str, Any]:
    return {"ImageID": FACE_ID[:41], "Type": type_, "FileFormat": file_format, "ShotTime": shot, "Data": data}


def face(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "FaceID": FACE_ID,
        "DeviceID": DEVICE,
        "LeftTopX": 658,
        "LeftTopY": 234,
        "RightBtmX": 718,
        "RightBtmY": 294,
        "FaceAppearTime": "20231213173915",
        "SubImageList": {"SubImageInfoObject": [sub("14", b64(SCENE)), sub("11", b64(JPEG))]},
    }
    for name, value in changes.items():
        if value is None:
            obj.pop(name, None)
        else:
            obj[name] = value
    return obj


def vehicle(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "MotorVehicleID": VEHICLE_ID,
        "DeviceID": DEVICE,
        "AppearTime": "20231214180257",
        "HasPlate": "1",
        "PlateClass": "02",
        "PlateNo": "京PM2N83",
        "PlateColor": "5",
        "VehicleClass": "K33",
        "VehicleColor": "2",
        "SubImageList": {"SubImageInfoObject": [sub("01", b64(SCENE)), sub("02", b64(JPEG))]},
    }
    for name, value in changes.items():
        if value is None:
            obj.pop(name, None)
        else:
            obj[name] = value
    return obj


def subs(*items: dict[str, Any]) -> dict[str, Any]:
    return {"SubImageInfoObject": list(items)}


def numeric_device(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as a device sends it with DeviceID as a JSON number, parsed like the server does."""
    text = json.dumps(obj).replace(f'"DeviceID": "{DEVICE}"', f'"DeviceID": {DEVICE}')
    parsed: dict[str, Any] = loads(text.encode())
    return parsed


Check = Callable[[dict[str, Any]], bool]
OK = "accepted"
DEV = "accepted_with_deviation"
REJ = "rejected"

# (name, mapper, object, outcome, deviation counted, rejection status fragment or check of the event)
CONFORMANCE: list[tuple[str, Callable[..., ItemOutcome], dict[str, Any], str, Deviation | None, str | Check]] = [
    ("standard face", map_face, face(), OK, None, lambda e: e["face"]["box"] == {"x": 658, "y": 234, "w": 60, "h": 60}),
    (
        "numeric DeviceID",
        map_face,
        numeric_device(face()),
        DEV,
        Deviation.NUMERIC_DEVICE_ID,
        lambda e: e["device_id"] == DEVICE,
    ),
    ("DeviceID of 18 digits", map_face, face(DeviceID=DEVICE[:18]), REJ, None, "DeviceID is not a 20-digit"),
    ("DeviceID with letters", map_face, face(DeviceID="4501010149132700017X"), REJ, None, "DeviceID is not a 20-digit"),
    (
        "DeviceID missing: the posting device",
        map_face,
        face(DeviceID=None),
        DEV,
        Deviation.MISSING_DEVICE_ID,
        lambda e: e["device_id"] == DEVICE,
    ),
    (
        "FileFormat Png over JPEG bytes",
        map_face,
        face(SubImageList=subs(sub("11", b64(JPEG), "Png"))),
        DEV,
        Deviation.FILE_FORMAT_MISMATCH,
        lambda e: e["images"][0]["content_type"] == "image/jpeg",
    ),
    (
        "FileFormat Jpeg over PNG bytes",
        map_face,
        face(SubImageList=subs(sub("11", b64(PNG)))),
        DEV,
        Deviation.FILE_FORMAT_MISMATCH,
        lambda e: e["images"][0]["content_type"] == "image/png",
    ),
    (
        "scene Data is a path: scene and box dropped",
        map_face,
        face(SubImageList=subs(sub("14", "data/2023121317/x.Jpeg"), sub("11", b64(JPEG)))),
        DEV,
        Deviation.IMAGE_DATA_NOT_BASE64,
        lambda e: [i["role"] for i in e["images"]] == ["face"] and "face" not in e,
    ),
    (
        "face Data is a path",
        map_face,
        face(SubImageList=subs(sub("14", b64(SCENE)), sub("11", "data/2023121317/45010101491327000176.Jpeg"))),
        REJ,
        Deviation.IMAGE_DATA_NOT_BASE64,
        "no usable face image",
    ),
    (
        "face Data is a URL",
        map_face,
        face(SubImageList=subs(sub("11", "http://10.0.0.9/pic/1.jpg"))),
        REJ,
        Deviation.IMAGE_DATA_NOT_BASE64,
        "no usable face image",
    ),
    (
        "face image is a GIF",
        map_face,
        face(SubImageList=subs(sub("11", b64(GIF)))),
        REJ,
        Deviation.IMAGE_UNUSABLE,
        "no usable face image",
    ),
    ("no SubImageList", map_face, face(SubImageList=None), REJ, None, "no usable face image"),
    (
        "data: URI prefix before base64",
        map_face,
        face(SubImageList=subs(sub("11", "data:image/jpeg;base64," + b64(JPEG)))),
        DEV,
        Deviation.DATA_URI_PREFIX,
        lambda e: e["images"][0]["role"] == "face",
    ),
    (
        "base64 with line breaks (MIME style)",
        map_face,
        face(SubImageList=subs(sub("11", base64.encodebytes(JPEG).decode()))),
        OK,
        None,
        lambda e: e["images"][0]["data"] == b64(JPEG),
    ),
    (
        "SubImageList as a bare list",
        map_face,
        face(SubImageList=[sub("11", b64(JPEG))]),
        DEV,
        Deviation.LIST_SHAPE,
        lambda e: len(e["images"]) == 1,
    ),
    (
        "two face images: the first wins",
        map_face,
        face(SubImageList=subs(sub("11", b64(JPEG)), sub("11", b64(PNG)))),
        DEV,
        Deviation.DUPLICATE_IMAGE_TYPE,
        lambda e: e["images"][0]["content_type"] == "image/jpeg",
    ),
    (
        "Type as a number",
        map_face,
        face(SubImageList=subs({**sub("11", b64(JPEG)), "Type": 11})),
        OK,
        None,
        lambda e: e["images"][0]["role"] == "face",
    ),
    (
        "no face time fields: ShotTime",
        map_face,
        face(FaceAppearTime=None),
        DEV,
        Deviation.CAPTURE_TIME_FALLBACK,
        lambda e: e["captured_at"] == "2023-12-13T17:39:15+08:00",
    ),
    (
        "no time at all: the time in the FaceID",
        map_face,
        face(FaceAppearTime=None, SubImageList=subs({"Type": "11", "Data": b64(JPEG)})),
        DEV,
        Deviation.CAPTURE_TIME_FALLBACK,
        lambda e: e["captured_at"] == "2023-12-13T17:39:15+08:00",
    ),
    (
        "time with milliseconds",
        map_face,
        face(FaceAppearTime="20231213173915123"),
        OK,
        None,
        lambda e: e["captured_at"] == "2023-12-13T17:39:15.123000+08:00",
    ),
    (
        "no box: no face.box",
        map_face,
        face(LeftTopX=None, LeftTopY=None, RightBtmX=None, RightBtmY=None),
        OK,
        None,
        lambda e: "face" not in e,
    ),
    (
        "box without a scene: dropped",
        map_face,
        face(SubImageList=subs(sub("11", b64(JPEG)))),
        OK,
        None,
        lambda e: "face" not in e,
    ),
    ("inverted box", map_face, face(RightBtmX=10), DEV, Deviation.INVALID_FACE_BOX, lambda e: "face" not in e),
    ("FaceID missing", map_face, face(FaceID=None), REJ, None, "FaceID is missing"),
    ("FaceID longer than 64", map_face, face(FaceID="1" * 65), REJ, None, "longer than 64"),
    (
        "standard vehicle",
        map_motor_vehicle,
        vehicle(),
        OK,
        None,
        lambda e: (
            e["vehicle"]
            == {"plate": "京PM2N83", "plate_color": "blue", "vehicle_type": "K33", "vehicle_color": "white"}
        ),
    ),
    (
        "PlateColor as Chinese name",
        map_motor_vehicle,
        vehicle(PlateColor="黄"),
        OK,
        None,
        lambda e: e["vehicle"]["plate_color"] == "yellow",
    ),
    (
        "PlateColor missing, PlateClass 02",
        map_motor_vehicle,
        vehicle(PlateColor=None),
        DEV,
        Deviation.PLATE_COLOR_INFERRED,
        lambda e: e["vehicle"]["plate_color"] == "blue",
    ),
    (
        "PlateColor missing, PlateClass 52 (new energy)",
        map_motor_vehicle,
        vehicle(PlateColor=None, PlateClass="52", PlateNo="粤BD12345"),
        DEV,
        Deviation.PLATE_COLOR_INFERRED,
        lambda e: e["vehicle"]["plate_color"] == "green",
    ),
    ("PlateColor unknown code", map_motor_vehicle, vehicle(PlateColor="99"), REJ, None, "PlateColor"),
    (
        "PlateColor and PlateClass missing",
        map_motor_vehicle,
        vehicle(PlateColor=None, PlateClass=None),
        REJ,
        None,
        "PlateColor",
    ),
    (
        "no plate (无车牌, HasPlate 0)",
        map_motor_vehicle,
        vehicle(PlateNo="无车牌", HasPlate="0"),
        REJ,
        None,
        "without a plate",
    ),
    ("PlateNo not a mainland plate", map_motor_vehicle, vehicle(PlateNo="AB12345"), REJ, None, "not a mainland plate"),
    (
        "vehicle images are paths",
        map_motor_vehicle,
        vehicle(SubImageList=subs(sub("01", "data/a.Jpeg"), sub("02", "data/b.Jpeg"))),
        DEV,
        Deviation.IMAGE_DATA_NOT_BASE64,
        lambda e: e["images"] == [],
    ),
    (
        "Type 09 close-up is the vehicle image",
        map_motor_vehicle,
        vehicle(SubImageList=subs(sub("09", b64(SCENE)))),
        OK,
        None,
        lambda e: [i["role"] for i in e["images"]] == ["vehicle"],
    ),
    (
        "no SubImageList on a vehicle",
        map_motor_vehicle,
        vehicle(SubImageList=None),
        OK,
        None,
        lambda e: e["images"] == [],
    ),
    (
        "numeric DeviceID on a vehicle",
        map_motor_vehicle,
        numeric_device(vehicle()),
        DEV,
        Deviation.NUMERIC_DEVICE_ID,
        lambda e: e["device_id"] == DEVICE,
    ),
    ("MotorVehicleID missing", map_motor_vehicle, vehicle(MotorVehicleID=None), REJ, None, "MotorVehicleID is missing"),
]


@pytest.mark.parametrize(
    ("name", "mapper", "obj", "outcome", "deviation", "expect"), CONFORMANCE, ids=[c[0] for c in CONFORMANCE]
)
def test_conformance(
    name: str,
    mapper: Callable[..., ItemOutcome],
    obj: dict[str, Any],
    outcome: str,
    deviation: Deviation | None,
    expect: str | Check,
) -> None:
    # WHEN a device's object is mapped
    result = mapper(obj, posting_device=DEVICE)
    # THEN the documented outcome, with the deviation counted when there is one
    if deviation is not None:
        assert result.deviations[deviation] >= 1, result.deviations
    if outcome == REJ:
        assert result.event is None and result.reject is not None
        assert result.reject.code == StatusCode.INVALID_JSON_CONTENT
        assert isinstance(expect, str) and expect in result.reject.status
        assert result.deviations[Deviation.REJECTED_ITEM] == 1
        return
    assert result.reject is None and result.event is not None, result.reject
    event = validate_event(result.event).model_dump(mode="json", exclude_none=True)
    assert event["source_ref"] == result.object_id
    tolerated = {k: n for k, n in result.deviations.items() if n}
    if outcome == OK:
        assert tolerated == {}
    else:
        assert deviation in tolerated
    assert callable(expect) and expect(result.event), result.event


def test_the_event_id_is_a_uuidv7_at_capture_time_and_stable_for_a_retry() -> None:
    captured = dt.datetime(2023, 12, 13, 17, 39, 15, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    first = deterministic_event_id(DEVICE, FACE_ID, captured)
    assert validate_event_id(first) == first
    assert uuid.UUID(first).version == 7
    assert event_id_time(first) == captured
    assert deterministic_event_id(DEVICE, FACE_ID, captured) == first
    assert deterministic_event_id(DEVICE, FACE_ID[:-1] + "9", captured) != first
    assert deterministic_event_id("45010101491327000177", FACE_ID, captured) != first


def test_viid_times_are_china_standard_time() -> None:
    parsed = parse_viid_time("20231213173915")
    assert parsed is not None and parsed.isoformat() == "2023-12-13T17:39:15+08:00"
    assert parse_viid_time("2023-12-13 17:39:15") is None
    assert parse_viid_time("20231313173915") is None
    assert parse_viid_time(20231213173915) is None


def test_big_json_integers_survive_parsing() -> None:
    doc = loads(b'{"RegisterObject": {"DeviceID": 53260199001200000000123}}')
    assert doc["RegisterObject"]["DeviceID"] == "53260199001200000000123"


# RFC 7616 section 3.9.1 example (MD5 and SHA-256 over the same challenge)
RFC = {
    "username": "Mufasa",
    "realm": "http-auth@example.org",
    "password": "Circle of Life",
    "method": "GET",
    "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "nc": "00000001",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
}


def test_digest_response_matches_the_rfc_7616_examples() -> None:
    assert digest_response("MD5", **RFC) == "8ca523f5e9506fed4657c9700eebdbec"
    assert digest_response("SHA-256", **RFC) == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_digest_nonces_expire_as_stale_and_counts_cannot_be_replayed() -> None:
    now = [1000.0]
    auth = DigestAuth(realm="r", algorithms=("SHA-256",), nonce_ttl_secs=60, clock=lambda: now[0])
    challenge = parse_authorization(auth.challenges()[0])
    assert challenge["algorithm"] == "SHA-256" and challenge["qop"] == "auth"

    def header(nc: str, password: str = "pw") -> str:
        params = {**RFC, "username": "cam", "realm": "r", "password": password, "method": "POST"}
        params.update(uri="/VIID/System/Register", nonce=challenge["nonce"], nc=nc)
        response = digest_response("SHA-256", **params)
        return (
            f'Digest username="cam", realm="r", nonce="{challenge["nonce"]}", uri="/VIID/System/Register",'
            f' algorithm=SHA-256, qop=auth, nc={nc}, cnonce="{RFC["cnonce"]}", response="{response}",'
            f' opaque="{challenge["opaque"]}"'
        )

    def password_of(user: str) -> str | None:
        return "pw" if user == "cam" else None

    assert auth.verify("POST", "/VIID/System/Register", header("00000001"), password_of) == "cam"
    with pytest.raises(DigestError, match="reused"):
        auth.verify("POST", "/VIID/System/Register", header("00000001"), password_of)
    with pytest.raises(DigestError, match="password") as wrong:
        auth.verify("POST", "/VIID/System/Register", header("00000002", "nope"), password_of)
    assert not wrong.value.stale
    with pytest.raises(DigestError, match="uri"):
        auth.verify("POST", "/VIID/Faces", header("00000002"), password_of)
    now[0] += 61
    with pytest.raises(DigestError, match="expired") as expired:
        auth.verify("POST", "/VIID/System/Register", header("00000003"), password_of)
    assert expired.value.stale


def test_an_event_that_maps_but_fails_the_contract_is_caught_by_validation() -> None:
    result = map_face(face(), posting_device=DEVICE)
    assert result.event is not None
    with pytest.raises(ValidationError):
        validate_event({**result.event, "unexpected": 1})


def test_fixture_files_parse(tmp_path: Path) -> None:
    assert FIXTURES is not None
    gat = FIXTURES.parent / "gat1400"
    faces = loads((gat / "easy1400_faces_listobject.json").read_bytes())["FaceListObject"]["FaceObject"]
    # the published sample holds paths: every face is rejected for want of a face image, nothing crashes
    outcomes = [map_face(obj, posting_device=DEVICE) for obj in faces]
    assert all(o.reject is not None and "no usable face image" in o.reject.status for o in outcomes)


def person(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "PersonID": FACE_ID[:-8] + "01000001",
        "DeviceID": DEVICE,
        "LeftTopX": 10,
        "LeftTopY": 10,
        "RightBtmX": 200,
        "RightBtmY": 600,
        "PersonAppearTime": "20231213173915",
        "SubImageList": {"SubImageInfoObject": [sub("10", b64(JPEG)), sub("14", b64(SCENE)), sub("11", b64(JPEG))]},
    }
    obj.update(changes)
    return obj


def test_a_person_with_a_face_is_a_face_capture_and_a_body_only_person_is_rejected() -> None:
    result = map_person(person(), posting_device=DEVICE)
    assert result.event is not None
    event = validate_event(result.event)
    assert event.event_type == "face_capture"
    assert [i.role for i in event.images] == ["face", "scene", "person"]
    assert "face" not in result.event  # the person box is the body, not the face
    body_only = map_person(person(SubImageList=subs(sub("10", b64(JPEG)))), posting_device=DEVICE)
    assert body_only.event is None and body_only.reject is not None
    assert "without a usable face image" in body_only.reject.status


def test_the_gat1400_source_config(tmp_path: Path) -> None:
    text = (
        'api_url = "https://api.example"\nkey_id = "k1"\nprivate_key_file = "agent.key"\n'
        '[[sources]]\ntype = "gat1400"\nlisten_host = "192.168.1.10"\nkeepalive_timeout_secs = 90\n'
        f'[sources.devices.{DEVICE}]\nusername = "cam1"\npassword_file = "{tmp_path / "pw"}"\n'
    )
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "pw").chmod(0o600)
    source = parse_config(text).sources[0]
    assert isinstance(source, Gat1400SourceConfig)
    assert source.listen_port == 1400 and source.digest_algorithms == ["SHA-256", "MD5"]
    assert source.devices[DEVICE].resolve_password() == "s3cret"
    with pytest.raises(ConfigError, match="exactly one"):
        parse_config(text.replace("password_file", "password = 'x'\npassword_file"))
    with pytest.raises(ConfigError, match="20 ASCII digits"):
        parse_config(text.replace(f"devices.{DEVICE}", "devices.4501"))
