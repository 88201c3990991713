"""What the relay tests share: an upstream view library, records in the police_video shape, a moto server.

The upstream is the edge agent's own GA/T 1400 receiver (``Gat1400Source``: real Digest, real registration,
real per-object answers, a real SQLite spool that deduplicates by event id), instrumented so a test can count
every object posted, answer chosen objects "Device Busy", hold a list request (to kill the relay mid-batch) and
forget every registration (a 401 mid-stream). Records are built from the published GA/T 1400 samples with the
fixture JPEGs, in the police_video record shape (checked against its published JSON Schema).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import io
import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from PIL import Image

from anfang_edge.config import Gat1400DeviceConfig, Gat1400SourceConfig
from anfang_edge.sources.gat1400 import Gat1400Source, StatusCode, map_face, map_motor_vehicle
from anfang_edge.sources.gat1400.mapping import ItemOutcome, Rejection, loads
from anfang_edge.sources.gat1400.server import Principal, Reply
from anfang_edge.spool import Spool

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "fixtures"
GAT = SHARED / "gat1400"
IMAGES = SHARED / "images"
RELAY_ID = "33010600005030000009"  # the relay as a lower view library (type 503)
RELAY_USER, RELAY_PASSWORD = "relay-330106", "relay-secret-0123456789"
BUCKET = "police-raw-images"
_LIST_PATHS = {
    "/VIID/Faces": ("FaceListObject", "FaceObject"),
    "/VIID/MotorVehicles": ("MotorVehicleListObject", "MotorVehicleObject"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ViewLibrary(Gat1400Source):
    """The upper library: the edge's receiver, counting and scriptable (the thing under test is the relay)."""

    def __init__(self, config: Gat1400SourceConfig, spool: Spool) -> None:
        super().__init__(config, spool)
        self.posted: Counter[str] = Counter()  # object id → how many times it was posted
        self.objects: dict[str, dict[str, Any]] = {}  # object id → the last object posted
        self.busy: dict[str, int] = {}  # object id → how many more times to answer Device Busy
        self.hold = False  # hold list requests until ``release`` is set
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.list_requests = 0
        self.registrations = 0
        self.algorithms_seen: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def authenticate(
        self, path: str, peer: str, *, authorization: str | None, user_identify: str | None
    ) -> Principal | Reply:
        if authorization and "algorithm=" in authorization:
            self.algorithms_seen[authorization.split("algorithm=", 1)[1].split(",", 1)[0].strip('" ')] += 1
        return super().authenticate(path, peer, authorization=authorization, user_identify=user_identify)

    def handle_post(self, path: str, raw: bytes | bytearray, principal: Principal) -> Reply:
        if path in _LIST_PATHS:
            root, key = _LIST_PATHS[path]
            objects = json.loads(raw)[root][key]
            with self._count_lock:
                self.list_requests += 1
                for obj in objects:
                    oid = obj.get("FaceID") or obj.get("MotorVehicleID")
                    self.posted[oid] += 1
                    self.objects[oid] = obj
            if self.hold:
                self.arrived.set()
                self.release.wait(60)
        elif path == "/VIID/System/Register":
            self.registrations += 1
        return super().handle_post(path, raw, principal)

    def _spool_outcomes(self, path: str, outcomes: list[ItemOutcome]) -> list[dict[str, Any]]:
        with self._count_lock:
            for outcome in outcomes:
                if self.busy.get(outcome.object_id, 0) > 0:
                    self.busy[outcome.object_id] -= 1
                    outcome.event = None
                    outcome.reject = Rejection(StatusCode.DEVICE_BUSY, "busy (scripted by the test)")
        return super()._spool_outcomes(path, outcomes)

    def forget_registrations(self) -> None:
        """As after a restart of the upper library: every later request is 401 until the relay registers."""
        with self._lock:
            self._states.clear()

    def delivered_events(self) -> dict[str, dict[str, Any]]:
        """The events the upper library kept (its spool), by source_ref (the object id)."""
        return {json.loads(p.body)["source_ref"]: json.loads(p.body) for p in self.spool.pending(limit=10_000)}


@dataclass
class RunningLibrary:
    library: ViewLibrary
    stop: threading.Event
    thread: threading.Thread

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def library_config(port: int, child_devices: list[str], algorithms: list[str] | None = None) -> Gat1400SourceConfig:
    device = Gat1400DeviceConfig(username=RELAY_USER, password=RELAY_PASSWORD, child_devices=child_devices)
    return Gat1400SourceConfig(
        type="gat1400",
        listen_port=port,
        keepalive_timeout_secs=120,
        digest_algorithms=algorithms or ["SHA-256", "MD5"],  # type: ignore[arg-type]
        devices={RELAY_ID: device},
    )


def start_library(
    port: int, spool: Spool, child_devices: list[str], algorithms: list[str] | None = None
) -> RunningLibrary:
    library = ViewLibrary(library_config(port, child_devices, algorithms), spool)
    stop = threading.Event()
    thread = threading.Thread(target=library.run, args=(stop,), daemon=True)
    thread.start()
    return RunningLibrary(library, stop, thread)


# ------------------------------------------------------------------------------------------ records


def _size(raw: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(raw)) as image:
        return image.size


def sample_objects() -> list[tuple[str, dict[str, Any]]]:
    """The published faces and vehicles (those with a plate), with real JPEGs in place of their paths."""
    face_jpeg = (IMAGES / "face_crop.jpg").read_bytes()
    scene_jpeg = (IMAGES / "scene_face_1920x1080.jpg").read_bytes()
    vehicle_jpeg = (IMAGES / "scene_noface_1280x720.jpg").read_bytes()
    by_type = {"11": face_jpeg, "14": scene_jpeg, "01": vehicle_jpeg, "02": face_jpeg}
    out: list[tuple[str, dict[str, Any]]] = []
    faces = json.loads((GAT / "easy1400_faces_listobject.json").read_text())["FaceListObject"]["FaceObject"]
    vehicles = json.loads((GAT / "easy1400_motorvehicles_listobject.json").read_text())
    for kind, objects in (("face", faces), ("vehicle", vehicles["MotorVehicleListObject"]["MotorVehicleObject"])):
        for published in objects:
            obj = copy.deepcopy(published)
            if kind == "vehicle" and obj.get("HasPlate") == "0":
                continue
            for sub in obj["SubImageList"]["SubImageInfoObject"]:
                raw = by_type.get(sub["Type"], vehicle_jpeg)
                sub["Data"] = base64.b64encode(raw).decode()
                sub["Width"], sub["Height"] = _size(raw)
            out.append((kind, obj))
    return out


def police_record(event: dict[str, Any], *, bucket: str = BUCKET) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The police_video record of a v1 event (police_video@2: boxes, vehicle and original images kept).

    Returns the record and its image objects (S3 key → bytes) to put in the bucket.
    """
    images: list[dict[str, Any]] = []
    blobs: dict[str, bytes] = {}
    for image in event.get("images", []):
        raw = base64.b64decode(image["data"])
        key = f"raw/{event['device_id']}/{event['event_id']}/{image['role']}"
        blobs[key] = raw
        width, height = _size(raw)
        images.append(
            {
                "role": image["role"],
                "ref": f"s3://{bucket}/{key}",
                "sha256": hashlib.sha256(raw).hexdigest(),
                "width": width,
                "height": height,
            }
        )
    record: dict[str, Any] = {
        "schema": "anfang.record.v1",
        "event_id": event["event_id"],
        "event_type": event["event_type"],
        "town": "330106",
        "device_id": event["device_id"],
        "site": {"site_id": "xihu-001", "site_type": "residential_closed", "name": "Lakeside Garden"},
        "captured_at": event["captured_at"],
        "received_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        "direction": "unknown",
        "images": images,
        "redaction": {"policy": "police_video@2"},
    }
    for body in ("face", "vehicle"):
        if body in event:
            record[body] = event[body]
    schema = json.loads((ROOT / "schemas" / "records" / "v1" / "police_video.schema.json").read_text())
    jsonschema.validate(record, schema)
    return record, blobs


def sample_records() -> Iterator[tuple[dict[str, Any], dict[str, bytes], dict[str, Any]]]:
    """(record, image blobs, the original GA/T 1400 object) for every usable published sample."""
    for kind, obj in sample_objects():
        mapper = map_face if kind == "face" else map_motor_vehicle
        outcome = mapper(loads(json.dumps(obj).encode()), posting_device=obj["DeviceID"])
        assert outcome.event is not None, outcome.reject
        record, blobs = police_record(outcome.event)
        yield record, blobs, obj
