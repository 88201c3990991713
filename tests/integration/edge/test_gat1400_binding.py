"""GA/T 1400 requests after Register are bound to the registration: per-request Digest (and its stickiness),
``request_digest = "required"``, ``allow_from`` and ``child_devices``, over real HTTP on loopback."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anfang_edge.config import Gat1400DeviceConfig, Gat1400SourceConfig
from anfang_edge.sources.gat1400 import Gat1400Source
from anfang_edge.spool import Spool

from .test_gat1400_source import GAT, IMAGES, authorization, challenge_params, with_images

FACES_DOC = json.loads((GAT / "easy1400_faces_listobject.json").read_bytes())

CAMERA = "45010101491327000176"
NVR = "45010101491327000100"
STRICT = "45010101491327000200"
PINNED = "45010101491327000300"
CHILD = "45010101491327000176"  # the sample faces name this device: here, a channel of the NVR


def _request(
    port: int, path: str, body: bytes, headers: dict[str, str], source: str = "127.0.0.1"
) -> tuple[int, dict[str, Any], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    conn.request("POST", path, body=body, headers={"Content-Type": "application/VIID+JSON", **headers})
    response = conn.getresponse()
    data = json.loads(response.read())
    conn.close()
    return response.status, data, response


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Gat1400Source]:
    devices = {
        NVR: Gat1400DeviceConfig(username="nvr", password="nvr-pw", child_devices=[CHILD]),
        STRICT: Gat1400DeviceConfig(username="strict", password="strict-pw", request_digest="required"),
        PINNED: Gat1400DeviceConfig(username="pinned", password="pinned-pw", allow_from=["127.0.0.5/32"]),
    }
    config = Gat1400SourceConfig(type="gat1400", listen_port=0, devices=devices)
    spool = Spool(tmp_path / "spool.sqlite3")
    src = Gat1400Source(config, spool)
    stop = threading.Event()
    thread = threading.Thread(target=src.run, args=(stop,))
    thread.start()
    yield src
    stop.set()
    thread.join(5)
    spool.close()


def _register(src: Gat1400Source, device_id: str, username: str, password: str, peer: str = "127.0.0.1") -> Any:
    """Register; returns (status, data, the SHA-256 challenge used) so later requests can reuse its nonce."""
    path = "/VIID/System/Register"
    body = json.dumps({"RegisterObject": {"DeviceID": device_id}}).encode()
    status, _, response = _request(src.port, path, body, {}, peer)
    assert status == 401
    challenge = challenge_params((response.headers.get_all("WWW-Authenticate") or [])[0])
    auth = authorization(challenge, username, password, path)
    status, data, _ = _request(src.port, path, body, {"Authorization": auth}, peer)
    return status, data, challenge


def _keepalive(src: Gat1400Source, device_id: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"KeepaliveObject": {"DeviceID": device_id}}).encode()
    status, data, _ = _request(src.port, "/VIID/System/Keepalive", body, {"User-Identify": device_id, **headers})
    return status, data


def test_per_request_digest_is_verified_and_once_sent_required(source: Gat1400Source) -> None:
    status, _, challenge = _register(source, NVR, "nvr", "nvr-pw")
    assert status == 200
    path = "/VIID/System/Keepalive"
    # WHEN the camera sends credentials with its keepalive (nc 2 on the registration's nonce) THEN accepted
    good = authorization(challenge, "nvr", "nvr-pw", path, nc=2)
    assert _keepalive(source, NVR, {"Authorization": good})[0] == 200
    # AND a replay of the same nonce count, a wrong password, another device's username: refused
    assert _keepalive(source, NVR, {"Authorization": good})[0] == 401
    assert _keepalive(source, NVR, {"Authorization": authorization(challenge, "nvr", "guess", path, nc=3)})[0] == 401
    assert (
        _keepalive(source, NVR, {"Authorization": authorization(challenge, "strict", "strict-pw", path, nc=4)})[0]
        == 401
    )
    # AND having once sent credentials, a request without them is refused (no downgrade by a spoofer)
    status, data = _keepalive(source, NVR, {})
    assert (status, data["ResponseStatusObject"]["StatusCode"]) == (401, 4)
    assert "Digest authentication required" in data["ResponseStatusObject"]["StatusString"]


def test_a_device_configured_to_require_digest_is_refused_without_it(source: Gat1400Source) -> None:
    status, _, challenge = _register(source, STRICT, "strict", "strict-pw")
    assert status == 200
    assert _keepalive(source, STRICT, {})[0] == 401
    auth = authorization(challenge, "strict", "strict-pw", "/VIID/System/Keepalive", nc=2)
    assert _keepalive(source, STRICT, {"Authorization": auth})[0] == 200


def test_a_pinned_camera_registers_only_from_its_address(source: Gat1400Source) -> None:
    status, data, _ = _register(source, PINNED, "pinned", "pinned-pw", peer="127.0.0.1")
    assert (status, data["ResponseStatusObject"]["StatusCode"]) == (403, 4)
    assert not source.is_online(PINNED)
    status, _, _ = _register(source, PINNED, "pinned", "pinned-pw", peer="127.0.0.5")
    assert status == 200 and source.is_online(PINNED)


def test_a_register_body_for_another_configured_device_is_refused(source: Gat1400Source) -> None:
    # the NVR's credentials, the strict device's DeviceID in the body
    path = "/VIID/System/Register"
    body = json.dumps({"RegisterObject": {"DeviceID": STRICT}}).encode()
    _, _, response = _request(source.port, path, body, {})
    challenge = challenge_params((response.headers.get_all("WWW-Authenticate") or [])[0])
    status, data, _ = _request(
        source.port, path, body, {"Authorization": authorization(challenge, "nvr", "nvr-pw", path)}
    )
    assert status == 403 and "does not match the credentials" in data["ResponseStatusObject"]["StatusString"]
    assert not source.is_online(STRICT) and not source.is_online(NVR)


def test_an_nvr_uploads_for_its_child_devices_and_nothing_else(source: Gat1400Source) -> None:
    assert _register(source, NVR, "nvr", "nvr-pw")[0] == 200
    doc = with_images(json.loads(json.dumps(FACES_DOC)), IMAGES)
    objects = doc["FaceListObject"]["FaceObject"]
    objects[1]["DeviceID"] = "45010101491327000999"  # not a channel of this NVR
    objects[2]["DeviceID"] = NVR
    status, data, _ = _request(source.port, "/VIID/Faces", json.dumps(doc).encode(), {"User-Identify": NVR})
    assert status == 200
    codes = [s["StatusCode"] for s in data["ResponseStatusListObject"]["ResponseStatusObject"]]
    assert codes == [0, 4, 0]
    assert sorted(json.loads(p.body)["device_id"] for p in source.spool.pending()) == sorted([CHILD, NVR])
    assert source.spool.stats().counters[f"gat1400.{NVR}.forbidden_device"] == 1
