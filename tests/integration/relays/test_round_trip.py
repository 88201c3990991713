"""The whole way round: a GA/T 1400 camera → the edge agent's gat1400 source → signed upload → the real pipeline
on the local stack (moto server, template.yaml) → the police_video queue → ``anfang relay gat1400`` → the upper
view library (the edge agent's own GA/T 1400 receiver). What comes out must be what went in: the same devices,
capture times, face box, plate and colours, and the same image bytes."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from anfang.contracts import generate_private_key, key_id_for, public_key_to_text
from anfang.contracts.gat1400 import object_id, source_id, viid_time
from anfang_edge.config import Gat1400DeviceConfig, Gat1400SourceConfig
from anfang_edge.sources.gat1400 import Gat1400Source
from anfang_edge.spool import Spool
from anfang_edge.uploader import Uploader, UploaderSettings
from anfang_ops.cli import main as anfang
from anfang_ops.local import LocalStack
from anfang_ops.relays import LISTS, Gat1400Relay, Gat1400RelayConfig, Outbox, QueueReader, S3Images, ViewLibraryClient
from anfang_ops.towns import load_towns
from tests.relays_support import (
    IMAGES,
    RELAY_ID,
    RELAY_PASSWORD,
    RELAY_USER,
    RunningLibrary,
    sample_objects,
    start_library,
)

from .conftest import wait_for

ROOT = Path(__file__).resolve().parents[3]
TOWN = next(t for t in load_towns(ROOT / "infra" / "towns") if t.env == "gaoqing-tianzhen")
CAMERA = f"{TOWN.town.code}001190000001"  # division 8 + industry 00 + type 119 + network 0 + serial
CAMERA_USER, CAMERA_PASSWORD = "cam-gate-1", "camera-secret-0123"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(ROOT, tmp_path_factory.mktemp("local"), town=TOWN)
    local.start()
    try:
        yield local
    finally:
        local.stop()


def _camera_objects(now: dt.datetime) -> list[tuple[str, dict[str, Any]]]:
    """One published face and one published vehicle, as this town's camera sends them now."""
    objects = []
    when = viid_time(now)
    for serial, (kind, published) in enumerate(
        next(o for o in sample_objects() if o[0] == kind_) for kind_ in ("face", "vehicle")
    ):
        obj = json.loads(json.dumps(published).replace(published["DeviceID"], CAMERA))
        source = source_id(CAMERA, when, serial + 1)
        id_field = "FaceID" if kind == "face" else "MotorVehicleID"
        obj[id_field] = object_id(source, "face" if kind == "face" else "motor_vehicle", serial + 1)
        obj["SourceID"] = source
        for name in (
            "FaceAppearTime",
            "LocationMarkTime",
            "FaceDisAppearTime",
            "AppearTime",
            "MarkTime",
            "DisappearTime",
        ):
            if name in obj:
                obj[name] = when
        for sub in obj["SubImageList"]["SubImageInfoObject"]:
            sub["ShotTime"] = when
        objects.append((kind, obj))
    return objects


def test_camera_to_view_library_through_the_cloud_gives_back_the_same_objects(  # noqa: PLR0915 - one story
    stack: LocalStack, tmp_path: Path
) -> None:
    assert stack.info is not None
    info = stack.info
    session = boto3.session.Session(region_name=info.region)
    # GIVEN the site gateway's key registered for the camera, as ops would do it
    gateway_key = generate_private_key()
    (tmp_path / "gateway.pub").write_text(public_key_to_text(gateway_key.public_key()))
    assert (
        anfang(
            ["devices", "register", "--stack-name", info.stack_name, "--device-id", CAMERA]
            + ["--public-key", str(tmp_path / "gateway.pub"), "--site-id", "tianzhen-001"]
            + ["--site-type", "residential_closed", "--site-name", "Lakeside Garden"]
        )
        == 0
    )
    # AND the edge agent's GA/T 1400 source on the gateway, with its spool and uploader
    edge_spool = Spool(tmp_path / "edge" / "spool.sqlite3", max_bytes=64 << 20)
    edge = Gat1400Source(
        Gat1400SourceConfig(
            type="gat1400",
            listen_port=0,
            devices={CAMERA: Gat1400DeviceConfig(username=CAMERA_USER, password=CAMERA_PASSWORD)},
        ),
        edge_spool,
    )
    edge_stop = threading.Event()
    edge_thread = threading.Thread(target=edge.run, args=(edge_stop,), daemon=True)
    edge_thread.start()
    # AND the upper view library in the police network
    library_spool = Spool(tmp_path / "library" / "spool.sqlite3", max_bytes=64 << 20)
    library: RunningLibrary = start_library(0, library_spool, [CAMERA])
    relay_stop = threading.Event()
    relay_thread: threading.Thread | None = None
    outbox: Outbox | None = None
    try:
        # WHEN the camera pushes a face and a vehicle with GA/T 1400, as any camera would
        camera = ViewLibraryClient(
            f"http://127.0.0.1:{edge.port}", device_id=CAMERA, username=CAMERA_USER, password=CAMERA_PASSWORD
        )
        camera.register()
        sent = _camera_objects(dt.datetime.now(dt.UTC).replace(microsecond=0))
        for kind, obj in sent:
            answers = camera.post_objects(LISTS["face_capture" if kind == "face" else "plate_capture"], [obj])
            assert [code for code, _ in answers.values()] == [0], answers
        camera.close()
        originals = {json.loads(p.body)["event_id"]: json.loads(p.body) for p in edge_spool.pending()}
        assert len(originals) == 2
        # AND the edge agent uploads them, signed, to the town's API
        uploader = Uploader(
            edge_spool,
            UploaderSettings(api_url=info.api_url, key_id=key_id_for(gateway_key.public_key()), linger_ms=0),
            gateway_key,
        )
        for _ in range(20):
            if edge_spool.depth() == 0:
                break
            uploader.drain_once()
        uploader.close()
        assert edge_spool.depth() == 0
        # AND the relay reads the police queue into the view library
        config = Gat1400RelayConfig.model_validate(
            {
                "state_dir": str(tmp_path / "relay"),
                "queue": {"url": info.outputs["PoliceVideoQueueUrl"], "region": info.region, "wait_time_secs": 1},
                "retry": {"initial_secs": 0.2, "max_secs": 1.0},
                "upstream": {
                    "url": f"http://127.0.0.1:{library.library.port}",
                    "device_id": RELAY_ID,
                    "username": RELAY_USER,
                    "password": RELAY_PASSWORD,
                },
            }
        )
        endpoint = info.aws_endpoint_url
        outbox = Outbox(config.outbox_path)
        relay = Gat1400Relay(
            config,
            outbox=outbox,
            reader=QueueReader(session.client("sqs", endpoint_url=endpoint), config.queue.url, wait_time_secs=1),
            images=S3Images(session.client("s3", endpoint_url=endpoint)),
            kms=session.client("kms", endpoint_url=endpoint),
        )
        relay_thread = threading.Thread(target=relay.run, args=(relay_stop,), daemon=True)
        relay_thread.start()
        wait_for(lambda: len(library.library.delivered_events()) == 2, timeout_secs=120, what="both in the library")
    finally:
        relay_stop.set()
        if relay_thread is not None:
            relay_thread.join(15)
        if outbox is not None:
            outbox.close()
        library.close()
        edge_stop.set()
        edge_thread.join(5)
        edge_spool.close()
    # THEN the view library has the camera's two objects back: same device, time, box, plate, colours, images
    by_event = {obj["AnfangEventID"]: obj for obj in library.library.objects.values()}
    assert set(by_event) == set(originals)
    camera_objects = {"face_capture" if kind == "face" else "plate_capture": o for kind, o in sent}
    for event_id, original in originals.items():
        relayed = by_event[event_id]
        camera_object = camera_objects[original["event_type"]]
        assert relayed["DeviceID"] == camera_object["DeviceID"] == CAMERA
        # the camera's own object and source ids travelled (source_ref, kept by police_video@2)
        id_field = "FaceID" if original["event_type"] == "face_capture" else "MotorVehicleID"
        assert (relayed[id_field], relayed["SourceID"]) == (camera_object[id_field], camera_object["SourceID"])
        shas = {
            s["Type"]: hashlib.sha256(base64.b64decode(s["Data"])).hexdigest()
            for s in relayed["SubImageList"]["SubImageInfoObject"]
        }
        assert {i["sha256"] for i in original["images"]} == set(shas.values())
        if original["event_type"] == "face_capture":
            for name in ("LeftTopX", "LeftTopY", "RightBtmX", "RightBtmY"):
                assert relayed[name] == camera_object[name], name
            assert shas["11"] == hashlib.sha256((IMAGES / "face_crop.jpg").read_bytes()).hexdigest()
        else:
            assert (relayed["PlateNo"], relayed["VehicleClass"], relayed["VehicleColor"]) == (
                camera_object["PlateNo"],
                camera_object["VehicleClass"],
                camera_object["VehicleColor"],
            )
    # AND the view library's own reading of them is the edge's first reading
    for event in library.library.delivered_events().values():
        original = originals[library.library.objects[event["source_ref"]]["AnfangEventID"]]
        for name in ("device_id", "event_type", "captured_at", "face", "vehicle"):
            assert event.get(name) == original.get(name), name
        assert [i["sha256"] for i in event["images"]] == [i["sha256"] for i in original["images"]]
    library_spool.close()
