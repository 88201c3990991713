"""The gat1400 source over real HTTP: the published GA/T 1400 payloads register (with a real Digest exchange),
keep alive, push faces and motor vehicles, are answered per item after the spool commit, and are delivered by
the real uploader to the signing test receiver."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from anfang.contracts import validate_event
from anfang_edge.config import Gat1400DeviceConfig, Gat1400SourceConfig
from anfang_edge.sources import build_source
from anfang_edge.sources.gat1400 import Gat1400Source
from anfang_edge.spool import Spool
from anfang_edge.uploader import Uploader, UploaderSettings

from .receiver import EdgeReceiver
from .support import FIXTURES, KeyPair

assert FIXTURES is not None
GAT = FIXTURES.parent / "gat1400"
CAMERA = "45010101491327000176"  # the faces and motor vehicles samples
REGISTER_DEVICE = "44020000001190000114"  # easy1400_register_request.json
KEEPALIVE_DEVICE = "41000000005030312222"  # simulator_keepalive_request.json
CASCADE_DEVICE = "53260199001200000000"  # easy1400_cascade_register_request.json (a JSON number)
PASSWORDS = {CAMERA: "cam-secret", REGISTER_DEVICE: "reg-secret", KEEPALIVE_DEVICE: "ka-secret", CASCADE_DEVICE: "c-s"}


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Env:
    source: Gat1400Source
    spool: Spool
    clock: Clock

    @property
    def port(self) -> int:
        return self.source.port


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    password_file = tmp_path / "camera.pw"
    password_file.write_text(PASSWORDS[CAMERA] + "\n")
    password_file.chmod(0o600)
    devices = {
        device_id: Gat1400DeviceConfig(username=f"user{device_id[-4:]}", password=password)
        for device_id, password in PASSWORDS.items()
        if device_id != CAMERA
    }
    devices[CAMERA] = Gat1400DeviceConfig(username="camera", password_file=password_file)
    config = Gat1400SourceConfig(
        type="gat1400", listen_port=0, keepalive_timeout_secs=60, nonce_ttl_secs=30, devices=devices
    )
    spool = Spool(tmp_path / "spool.sqlite3", max_bytes=64 << 20)
    clock = Clock()
    source = Gat1400Source(config, spool, clock=clock)
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(stop,))
    thread.start()
    yield Env(source, spool, clock)
    stop.set()
    thread.join(5)
    spool.close()


# ------------------------------------------------------------------------------------------ a device's side


def request(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body or None, headers={"Content-Type": "application/VIID+JSON", **(headers or {})})
    response = conn.getresponse()
    data = json.loads(response.read())
    conn.close()
    return response.status, data, response


def challenge_params(value: str) -> dict[str, str]:
    """Parse one WWW-Authenticate Digest challenge (the test's own parser, not the product's)."""
    assert value.startswith("Digest ")
    params = {}
    for part in value[len("Digest ") :].split(", "):
        name, _, raw = part.partition("=")
        params[name.strip()] = raw.strip('"')
    return params


def h(algorithm: str, text: str) -> str:
    return hashlib.new("md5" if algorithm == "MD5" else "sha256", text.encode()).hexdigest()


def authorization(
    challenge: dict[str, str], username: str, password: str, path: str, nc: int = 1, method: str = "POST"
) -> str:
    """RFC 7616 3.4.1 for qop=auth: response = H(H(A1):nonce:nc:cnonce:qop:H(A2))."""
    algorithm = challenge["algorithm"]
    cnonce = secrets.token_hex(8)
    ha1 = h(algorithm, f"{username}:{challenge['realm']}:{password}")
    ha2 = h(algorithm, f"{method}:{path}")
    response = h(algorithm, f"{ha1}:{challenge['nonce']}:{nc:08x}:{cnonce}:auth:{ha2}")
    return (
        f'Digest username="{username}", realm="{challenge["realm"]}", nonce="{challenge["nonce"]}", uri="{path}",'
        f' algorithm={algorithm}, qop=auth, nc={nc:08x}, cnonce="{cnonce}", response="{response}",'
        f' opaque="{challenge["opaque"]}"'
    )


def challenges(port: int, path: str, body: bytes) -> dict[str, dict[str, str]]:
    status, data, response = request(port, "POST", path, body)
    assert status == 401
    assert data["ResponseStatusObject"]["StatusCode"] == 4
    return {p["algorithm"]: p for p in map(challenge_params, response.headers.get_all("WWW-Authenticate") or [])}


def register(
    env: Env, body: bytes, username: str, password: str, algorithm: str = "SHA-256", path: str = "/VIID/System/Register"
) -> tuple[int, dict[str, Any]]:
    challenge = challenges(env.port, path, body)[algorithm]
    status, data, _ = request(
        env.port, "POST", path, body, {"Authorization": authorization(challenge, username, password, path)}
    )
    return status, data


def register_device(env: Env, device_id: str) -> None:
    username = "camera" if device_id == CAMERA else f"user{device_id[-4:]}"
    body = json.dumps({"RegisterObject": {"DeviceID": device_id}}).encode()
    status, data = register(env, body, username, PASSWORDS[device_id])
    assert (status, data["ResponseStatusObject"]["StatusCode"]) == (200, 0), data


def post(env: Env, path: str, doc: dict[str, Any], device_id: str = CAMERA) -> tuple[int, dict[str, Any]]:
    status, data, _ = request(env.port, "POST", path, json.dumps(doc).encode(), {"User-Identify": device_id})
    return status, data


def with_images(doc: Any, images: dict[str, bytes]) -> Any:
    """The sample with base64 of real JPEGs where it holds paths (by SubImage Type)."""
    if isinstance(doc, dict):
        if "Data" in doc and "Type" in doc:
            return {**doc, "Data": base64.b64encode(images[doc["Type"]]).decode()}
        return {k: with_images(v, images) for k, v in doc.items()}
    if isinstance(doc, list):
        return [with_images(v, images) for v in doc]
    return doc


FACE = (FIXTURES / "face_crop.jpg").read_bytes()
SCENE = (FIXTURES / "scene_face_1920x1080.jpg").read_bytes()
STREET = (FIXTURES / "scene_noface_1280x720.jpg").read_bytes()
IMAGES = {"11": FACE, "14": SCENE, "01": STREET, "09": STREET, "02": FACE}


def statuses(data: dict[str, Any]) -> list[tuple[str, int]]:
    return [(s["Id"], s["StatusCode"]) for s in data["ResponseStatusListObject"]["ResponseStatusObject"]]


def counters(spool: Spool) -> dict[str, int]:
    return spool.stats().counters


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_given_the_register_sample_when_the_device_answers_the_digest_challenge_then_it_is_registered(
    env: Env, algorithm: str
) -> None:
    body = (GAT / "easy1400_register_request.json").read_bytes()
    # WHEN the device posts without credentials, then with the response to the challenge
    status, data = register(env, body, "user0114", PASSWORDS[REGISTER_DEVICE], algorithm)
    # THEN it is registered, the reply names it
    assert status == 200
    reply = data["ResponseStatusObject"]
    assert (reply["Id"], reply["StatusCode"], reply["RequestURL"]) == (REGISTER_DEVICE, 0, "/VIID/System/Register")
    assert len(reply["LocalTime"]) == 14
    assert env.source.is_online(REGISTER_DEVICE)


def test_given_wrong_credentials_or_a_stale_nonce_then_registration_is_refused_with_a_new_challenge(env: Env) -> None:
    body = (GAT / "easy1400_register_request.json").read_bytes()
    path = "/VIID/System/Register"
    status, data = register(env, body, "user0114", "wrong")
    assert status == 401 and "Digest authentication failed" in data["ResponseStatusObject"]["StatusString"]
    status, _ = register(env, body, "someone-else", PASSWORDS[REGISTER_DEVICE])
    assert status == 401
    # GIVEN a challenge answered after the nonce expired
    challenge = challenges(env.port, path, body)["SHA-256"]
    env.clock.offset += 31
    auth = authorization(challenge, "user0114", PASSWORDS[REGISTER_DEVICE], path)
    status, _, response = request(env.port, "POST", path, body, {"Authorization": auth})
    # THEN 401 with stale=true, so the device retries with the new nonce and the same password
    assert status == 401
    fresh = [challenge_params(v) for v in response.headers.get_all("WWW-Authenticate") or []]
    assert fresh and all(c.get("stale") == "true" and c["nonce"] != challenge["nonce"] for c in fresh)
    auth = authorization(fresh[0], "user0114", PASSWORDS[REGISTER_DEVICE], path)
    assert request(env.port, "POST", path, body, {"Authorization": auth})[0] == 200
    # AND the same nonce count is not accepted twice
    status, _, _ = request(env.port, "POST", path, body, {"Authorization": auth})
    assert status == 401
    assert not env.source.is_online(KEEPALIVE_DEVICE)


def test_given_the_cascade_register_with_a_numeric_device_id_then_it_registers_and_the_deviation_is_counted(
    env: Env,
) -> None:
    body = (GAT / "easy1400_cascade_register_request.json").read_bytes()
    assert b'"DeviceID": 53260199001200000000' in body  # a JSON number beyond 2**64
    status, data = register(env, body, "user0000", PASSWORDS[CASCADE_DEVICE])
    assert (status, data["ResponseStatusObject"]["Id"]) == (200, CASCADE_DEVICE)
    assert counters(env.spool)[f"gat1400.{CASCADE_DEVICE}.numeric_device_id"] >= 1


def test_given_a_device_id_that_is_not_20_digits_then_register_is_rejected_with_a_clear_status(env: Env) -> None:
    body = b'{"RegisterObject": {"DeviceID": "4402000000119000011"}}'
    status, data = register(env, body, "user0114", PASSWORDS[REGISTER_DEVICE])
    assert status == 400
    reply = data["ResponseStatusObject"]
    assert reply["StatusCode"] == 8 and "not a 20-digit" in reply["StatusString"]
    body = b'{"RegisterObject": {"DeviceID": "44020000001190009999"}}'
    status, data = register(env, body, "user0114", PASSWORDS[REGISTER_DEVICE])
    assert status == 403 and "not configured" in data["ResponseStatusObject"]["StatusString"]


def test_given_the_keepalive_sample_then_only_a_registered_device_is_kept_alive(env: Env) -> None:
    body = (GAT / "simulator_keepalive_request.json").read_bytes()
    headers = {"User-Identify": KEEPALIVE_DEVICE}
    status, data, _ = request(env.port, "POST", "/VIID/System/Keepalive", body, headers)
    assert status == 401 and data["ResponseStatusObject"]["Id"] == KEEPALIVE_DEVICE
    register_device(env, KEEPALIVE_DEVICE)
    status, data, _ = request(env.port, "POST", "/VIID/System/Keepalive", body, headers)
    assert (status, data["ResponseStatusObject"]["StatusCode"]) == (200, 0)
    # the sample itself has no User-Identify: the one registration from this address is the sender
    status, data, _ = request(env.port, "POST", "/VIID/System/Keepalive", body)
    assert (status, data["ResponseStatusObject"]["Id"]) == (200, KEEPALIVE_DEVICE)


def test_system_time_answers_in_china_standard_time(env: Env) -> None:
    status, data, response = request(env.port, "GET", "/VIID/System/Time")
    assert status == 200 and response.headers["Content-Type"].startswith("application/VIID+JSON")
    expected = time.strftime("%Y%m%d%H", time.gmtime(time.time() + 8 * 3600))
    assert data["SystemTimeObject"]["LocalTime"].startswith(expected)


def test_given_an_unregistered_device_when_it_posts_then_it_gets_the_standard_error_reply(env: Env) -> None:
    doc = with_images(json.loads((GAT / "easy1400_faces_listobject.json").read_bytes()), IMAGES)
    status, data = post(env, "/VIID/Faces", doc)
    assert status == 401
    assert data["ResponseStatusObject"]["Id"] == CAMERA
    assert "not registered" in data["ResponseStatusObject"]["StatusString"]
    status, data = post(env, "/VIID/Faces", doc, device_id="123")
    assert status == 401
    assert env.spool.depth() == 0


def test_given_the_published_lists_then_each_object_is_an_event_spooled_answered_and_delivered(
    env: Env, key: KeyPair, receiver: EdgeReceiver
) -> None:
    register_device(env, CAMERA)
    faces_doc = with_images(json.loads((GAT / "easy1400_faces_listobject.json").read_bytes()), IMAGES)
    vehicles_doc = with_images(json.loads((GAT / "easy1400_motorvehicles_listobject.json").read_bytes()), IMAGES)
    face_ids = [o["FaceID"] for o in faces_doc["FaceListObject"]["FaceObject"]]
    vehicles = vehicles_doc["MotorVehicleListObject"]["MotorVehicleObject"]

    # WHEN the camera pushes the faces list
    status, data = post(env, "/VIID/Faces", faces_doc)
    # THEN one OK per face, in order, after the commit
    assert status == 200
    assert statuses(data) == [(face_id, 0) for face_id in face_ids]
    assert all(s["RequestURL"] == "/VIID/Faces" for s in data["ResponseStatusListObject"]["ResponseStatusObject"])
    assert env.spool.depth() == 3

    # WHEN it pushes the motor vehicles list: 6 with plates, 4 "无车牌" (no plate)
    status, data = post(env, "/VIID/MotorVehicles", vehicles_doc)
    assert status == 200
    expected = [(v["MotorVehicleID"], 0 if v["HasPlate"] == "1" else 8) for v in vehicles]
    assert statuses(data) == expected
    rejected = [s for s in data["ResponseStatusListObject"]["ResponseStatusObject"] if s["StatusCode"]]
    assert all("without a plate" in s["StatusString"] for s in rejected) and len(rejected) == 4
    assert env.spool.depth() == 9

    # AND the spooled events are the expected v1 events
    pending = {p.event_id: json.loads(p.body) for p in env.spool.pending()}
    by_ref = {e["source_ref"]: e for e in pending.values()}
    first_face = by_ref[face_ids[0]]
    assert validate_event(first_face).event_type == "face_capture"
    assert first_face["device_id"] == CAMERA
    assert first_face["captured_at"] == "2023-12-13T17:39:15+08:00"
    assert first_face["face"] == {"box": {"x": 658, "y": 234, "w": 60, "h": 60}}
    images = {i["role"]: base64.b64decode(i["data"]) for i in first_face["images"]}
    assert images == {"face": FACE, "scene": SCENE}
    first_vehicle = by_ref[vehicles[0]["MotorVehicleID"]]
    assert first_vehicle["event_type"] == "plate_capture"
    assert first_vehicle["vehicle"] == {
        "plate": "京PM2N83",
        "plate_color": "blue",
        "vehicle_type": "K33",
        "vehicle_color": "white",
    }
    assert first_vehicle["captured_at"] == "2023-12-14T18:02:57+08:00"
    assert {i["role"] for i in first_vehicle["images"]} == {"vehicle", "plate"}
    assert by_ref[vehicles[3]["MotorVehicleID"]]["vehicle"]["plate_color"] == "yellow"  # PlateClass 01
    # the sample omits PlateColor: inferred from PlateClass and counted, as are the rejected items
    stats = counters(env.spool)
    assert stats[f"gat1400.{CAMERA}.plate_color_inferred"] == 6
    assert stats[f"gat1400.{CAMERA}.rejected_item"] == 4

    # WHEN the camera retries the faces list (no reply seen, say)
    status, data = post(env, "/VIID/Faces", faces_doc)
    # THEN the same answers, and the retries are duplicates, not new events
    assert statuses(data) == [(face_id, 0) for face_id in face_ids]
    assert env.spool.depth() == 9 and counters(env.spool)["duplicate_received"] == 3

    # WHEN the real uploader drains the spool to the signing receiver
    uploader = Uploader(
        env.spool,
        UploaderSettings(api_url=receiver.url, key_id=key.key_id, linger_ms=0, request_timeout_secs=5),
        key.private_key,
    )
    for _ in range(20):
        if env.spool.depth() == 0:
            break
        uploader.drain_once()
    uploader.close()
    # THEN all nine arrived signed, with their GA/T 1400 ids as source references
    assert env.spool.depth() == 0
    assert sorted(e["source_ref"] for e in receiver.accepted.values()) == sorted(by_ref)
    assert {e["event_type"] for e in receiver.accepted.values()} == {"face_capture", "plate_capture"}
    assert set(receiver.accepted) == set(pending)


def test_given_a_device_silent_past_the_timeout_then_offline_then_online_when_it_registers_again(env: Env) -> None:
    register_device(env, KEEPALIVE_DEVICE)
    # WHEN it stays silent past keepalive_timeout_secs
    env.clock.offset += 61
    env.source.check_keepalives()
    # THEN a device_status offline event is spooled and its posts are refused until it registers again
    events = [json.loads(p.body) for p in env.spool.pending()]
    assert [(e["event_type"], e["status"]["state"], e["device_id"]) for e in events] == [
        ("device_status", "offline", KEEPALIVE_DEVICE)
    ]
    body = (GAT / "simulator_keepalive_request.json").read_bytes()
    assert request(env.port, "POST", "/VIID/System/Keepalive", body)[0] == 401
    doc = {"FaceListObject": {"FaceObject": [{"FaceID": "1"}]}}
    assert post(env, "/VIID/Faces", doc, device_id=KEEPALIVE_DEVICE)[0] == 401
    # WHEN it registers again THEN online
    register_device(env, KEEPALIVE_DEVICE)
    states = [json.loads(p.body)["status"]["state"] for p in env.spool.pending()]
    assert states == ["offline", "online"]
    env.source.check_keepalives()
    assert env.spool.depth() == 2  # no second offline while it keeps alive


def test_unregister_ends_the_session(env: Env) -> None:
    register_device(env, CAMERA)
    body = json.dumps({"UnRegisterObject": {"DeviceID": CAMERA}}).encode()
    status, data = register(env, body, "camera", PASSWORDS[CAMERA], path="/VIID/System/UnRegister")
    assert (status, data["ResponseStatusObject"]["StatusCode"]) == (200, 0)
    assert not env.source.is_online(CAMERA)


def test_given_deviating_objects_in_one_list_then_each_gets_its_own_status_and_deviations_are_counted(
    env: Env,
) -> None:
    register_device(env, CAMERA)
    good = with_images(json.loads((GAT / "easy1400_faces_listobject.json").read_bytes()), IMAGES)
    objects = good["FaceListObject"]["FaceObject"]
    objects[1]["SubImageList"]["SubImageInfoObject"][1]["Data"] = "data/2023121317/face.Jpeg"  # face lost
    objects[2]["SubImageList"]["SubImageInfoObject"][0]["FileFormat"] = "Png"  # scene bytes are JPEG
    objects[2]["DeviceID"] = 1234  # not 20 digits
    status, data = post(env, "/VIID/Faces", good)
    assert status == 200
    codes = [s["StatusCode"] for s in data["ResponseStatusListObject"]["ResponseStatusObject"]]
    assert codes == [0, 8, 8]
    stats = counters(env.spool)
    assert stats[f"gat1400.{CAMERA}.image_data_not_base64"] == 1
    assert stats[f"gat1400.{CAMERA}.rejected_item"] == 2
    assert env.spool.depth() == 1
    # AND malformed bodies get a whole-request status
    status, data, _ = request(env.port, "POST", "/VIID/Faces", b"{nope", {"User-Identify": CAMERA})
    assert (status, data["ResponseStatusObject"]["StatusCode"]) == (400, 7)


def test_given_a_persons_list_then_a_person_with_a_face_is_spooled_and_a_body_only_one_rejected(env: Env) -> None:
    register_device(env, CAMERA)
    base = "45010101491327000176022023121317391500127"
    doc = {
        "PersonListObject": {
            "PersonObject": [
                {
                    "PersonID": base + "0100001",
                    "DeviceID": CAMERA,
                    "PersonAppearTime": "20231213173915",
                    "SubImageList": {"SubImageInfoObject": [{"Type": "11", "FileFormat": "Jpeg", "Data": "x"}]},
                },
                {"PersonID": base + "0100002", "DeviceID": CAMERA, "PersonAppearTime": "20231213173916"},
            ]
        }
    }
    doc = with_images(doc, IMAGES)
    status, data = post(env, "/VIID/Persons", doc)
    assert status == 200
    assert [code for _, code in statuses(data)] == [0, 8]
    assert [json.loads(p.body)["event_type"] for p in env.spool.pending()] == ["face_capture"]


def test_the_agent_builds_the_gat1400_source_from_its_config(tmp_path: Path) -> None:
    config = Gat1400SourceConfig(type="gat1400", listen_port=0)
    with Spool(tmp_path / "s.sqlite3") as spool:
        source = build_source(config, spool, index=2)
        assert isinstance(source, Gat1400Source) and source.name == "gat14002"
        stop = threading.Event()
        stop.set()
        source.run(stop)  # starts and stops cleanly
