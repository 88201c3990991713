"""The GA/T 1400 relay over real loopback HTTP, real SQLite files and a moto server: the police queue is read
into the outbox, each record is posted to the edge agent's own GA/T 1400 receiver as the upper view library,
and the guarantees are attacked: the upstream down for a while, a 401 mid-stream, objects refused per item."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from anfang_edge.spool import Spool
from tests.relays_support import GAT, RunningLibrary, free_port, sample_objects, sample_records, start_library

from .conftest import Aws, relay_config, start_relay, wait_for

pytestmark = pytest.mark.slow


def _records() -> tuple[list[dict[str, Any]], dict[str, bytes], dict[str, dict[str, Any]]]:
    records, blobs, originals = [], {}, {}
    for record, record_blobs, obj in sample_records():
        records.append(record)
        blobs.update(record_blobs)
        originals[record["event_id"]] = obj
    return records, blobs, originals


def _sha(obj: dict[str, Any]) -> dict[str, str]:
    return {
        sub["Type"]: hashlib.sha256(base64.b64decode(sub["Data"])).hexdigest()
        for sub in obj["SubImageList"]["SubImageInfoObject"]
    }


def test_records_reach_the_view_library_as_the_published_objects(
    tmp_path: Path, aws: Aws, library: RunningLibrary
) -> None:
    # GIVEN the published faces and vehicles as police_video records on the queue, their images in S3
    records, blobs, originals = _records()
    queue = aws.new_queue()
    aws.send_records(queue, records, blobs)
    # WHEN the relay runs against the upper view library
    relay = start_relay(relay_config(tmp_path, aws, queue, library.library.port), aws)
    try:
        wait_for(lambda: len(library.library.delivered_events()) == len(records), what="every record upstream")
        wait_for(lambda: relay.relay.outbox.stats().pending == 0, what="outbox acknowledged")
    finally:
        relay.close()
    upstream = library.library
    # THEN each object was posted exactly once, registered with Digest SHA-256 (preferred over MD5)
    assert sorted(upstream.posted.values()) == [1] * len(records)
    assert upstream.registrations == 1 and set(upstream.algorithms_seen) == {"SHA-256"}
    assert aws.queue_depth(queue) == 0
    # AND each carries its event id and the same content as the camera's object: device, times, box, plate, images
    by_event = {obj["AnfangEventID"]: obj for obj in upstream.objects.values()}
    assert set(by_event) == {r["event_id"] for r in records}
    for event_id, original in originals.items():
        sent = by_event[event_id]
        assert sent["DeviceID"] == original["DeviceID"]
        if "FaceID" in original:
            assert len(sent["FaceID"]) == 48 and sent["FaceID"][40:42] != "" and sent["FaceID"][41:43] == "06"
            for name in ("LeftTopX", "LeftTopY", "RightBtmX", "RightBtmY", "FaceAppearTime"):
                assert sent[name] == original[name], name
            assert _sha(sent) == _sha(original)
        else:
            assert len(sent["MotorVehicleID"]) == 48 and sent["MotorVehicleID"][41:43] == "02"
            assert (sent["PlateNo"], sent["AppearTime"]) == (original["PlateNo"], original["AppearTime"])
            assert sent["VehicleClass"] == original["VehicleClass"]
            assert {t: s for t, s in _sha(sent).items() if t in ("01", "02")} == {
                t: s for t, s in _sha(original).items() if t in ("01", "02")
            }
        assert sent["SourceID"] == sent[("FaceID" if "FaceID" in sent else "MotorVehicleID")][:41]
    # AND the upper library understood them as the same events (its mapping is the edge agent's)
    events = upstream.delivered_events()
    for object_id, event in events.items():
        original = originals[upstream.objects[object_id]["AnfangEventID"]]
        assert event["device_id"] == original["DeviceID"]
        assert {i["sha256"] for i in event["images"]} <= {
            hashlib.sha256(base64.b64decode(s["Data"])).hexdigest()
            for s in original["SubImageList"]["SubImageInfoObject"]
        }


def test_objects_follow_the_published_shapes() -> None:
    # GIVEN the published samples' field names and types (hand-checked against GA/T 1400.3)
    from anfang_ops.relays import to_viid_object

    published = {
        "face": json.loads((GAT / "easy1400_faces_listobject.json").read_text())["FaceListObject"]["FaceObject"][0],
        "vehicle": json.loads((GAT / "easy1400_motorvehicles_listobject.json").read_text())["MotorVehicleListObject"][
            "MotorVehicleObject"
        ][0],
    }
    for record, blobs, _ in sample_records():
        images = {image["role"]: blobs[image["ref"].split("/", 3)[3]] for image in record["images"]}
        # WHEN a record is mapped
        target, obj = to_viid_object(record, images=images)
        sample = published["face" if target.kind == "face" else "vehicle"]
        # THEN every field it writes is one the samples have, with the samples' JSON type (AnfangEventID aside)
        for name, value in obj.items():
            if name in ("AnfangEventID", "PlateColor"):  # PlateColor: GA/T 1400.3, absent from the Easy1400 sample
                continue
            assert name in sample, name
            assert type(value) is type(sample[name]), (name, value, sample[name])
        sub_sample = sample["SubImageList"]["SubImageInfoObject"][0]
        for sub in obj["SubImageList"]["SubImageInfoObject"]:
            assert set(sub) <= set(sub_sample) and all(type(sub[k]) is type(sub_sample[k]) for k in sub)
            assert len(sub["ImageID"]) == 41 and sub["ImageID"].startswith(sub["DeviceID"] + "02")
        # AND the list wrapper and object ids follow the standard's structure
        assert target.path in ("/VIID/Faces", "/VIID/MotorVehicles")
        assert len(obj[target.id_field]) == 48 and obj[target.id_field].startswith(obj["DeviceID"] + "02")


def test_upstream_down_for_a_while_then_everything_arrives_once(
    tmp_path: Path, aws: Aws, upstream_spool: Spool
) -> None:
    # GIVEN records on the queue and no upper library listening
    records, blobs, _ = _records()
    queue = aws.new_queue()
    aws.send_records(queue, records, blobs)
    port = free_port()
    devices = sorted({obj["DeviceID"] for _, obj in sample_objects()})
    relay = start_relay(relay_config(tmp_path, aws, queue, port), aws)
    library = None
    try:
        # WHEN the relay has taken every record off the queue into its outbox while the upstream is down
        wait_for(lambda: relay.relay.outbox.stats().pending == len(records), what="records in the outbox")
        wait_for(lambda: aws.queue_depth(queue) == 0, what="queue drained")
        wait_for(lambda: relay.relay.outbox.stats().counters.get("upstream_errors", 0) >= 2, what="failed tries")
        # AND the upstream comes up
        library = start_library(port, upstream_spool, devices)
        # THEN every record arrives, each object posted once
        wait_for(lambda: relay.relay.outbox.stats().pending == 0, what="delivery after the outage")
        assert len(library.library.delivered_events()) == len(records)
        assert sorted(library.library.posted.values()) == [1] * len(records)
    finally:
        relay.close()
        if library is not None:
            library.close()


def test_a_401_mid_stream_registers_again_and_loses_nothing(tmp_path: Path, aws: Aws, library: RunningLibrary) -> None:
    records, blobs, _ = _records()
    queue = aws.new_queue()
    upstream = library.library
    relay = start_relay(relay_config(tmp_path, aws, queue, upstream.port), aws)
    try:
        # GIVEN the relay registered and delivering
        aws.send_records(queue, records[:3], blobs)
        wait_for(lambda: len(upstream.delivered_events()) == 3, what="first records")
        assert upstream.registrations == 1
        # WHEN the upper library forgets the registration (a restart) and more records come
        upstream.forget_registrations()
        aws.send_records(queue, records[3:], blobs)
        # THEN the relay's next list is refused with 401, it registers again and delivers the rest, once each
        wait_for(lambda: len(upstream.delivered_events()) == len(records), what="records after the 401")
        wait_for(lambda: relay.relay.outbox.stats().pending == 0, what="outbox empty")
        assert upstream.registrations == 2
        assert relay.relay.outbox.stats().counters.get("reauthenticated", 0) >= 1
        assert sorted(upstream.posted.values()) == [1] * len(records)
    finally:
        relay.close()


def test_objects_refused_per_item_are_retried_alone(tmp_path: Path, aws: Aws, library: RunningLibrary) -> None:
    from anfang_ops.relays import object_ids

    # GIVEN an upper library that answers Device Busy twice for two of the objects
    records, blobs, _ = _records()
    upstream = library.library
    flaky = [object_ids(records[0])[1], object_ids(records[4])[1]]
    upstream.busy = dict.fromkeys(flaky, 2)
    queue = aws.new_queue()
    aws.send_records(queue, records, blobs)
    # WHEN the relay delivers
    relay = start_relay(relay_config(tmp_path, aws, queue, upstream.port), aws)
    try:
        wait_for(lambda: relay.relay.outbox.stats().counters.get("sent", 0) == len(records), 60, "all acknowledged")
        failed = relay.relay.outbox.stats().counters["failed"]
    finally:
        relay.close()
    # THEN the two were posted three times (two refusals, one success), the others once, and all arrived once
    assert {oid: n for oid, n in upstream.posted.items() if n != 1} == dict.fromkeys(flaky, 3)
    assert len(upstream.delivered_events()) == len(records)
    assert failed == 4


def test_a_relay_that_only_accepts_md5_is_refused_by_a_sha256_library(
    tmp_path: Path, aws: Aws, upstream_spool: Spool
) -> None:
    from anfang_ops.relays import UpstreamAuthError, ViewLibraryClient
    from tests.relays_support import RELAY_ID, RELAY_PASSWORD, RELAY_USER

    running = start_library(0, upstream_spool, [], algorithms=["SHA-256"])
    try:
        md5_only = ViewLibraryClient(
            f"http://127.0.0.1:{running.library.port}",
            device_id=RELAY_ID,
            username=RELAY_USER,
            password=RELAY_PASSWORD,
            algorithms=["MD5"],
        )
        with pytest.raises(UpstreamAuthError, match="401"):
            md5_only.register()
        both = ViewLibraryClient(
            f"http://127.0.0.1:{running.library.port}", device_id=RELAY_ID, username=RELAY_USER, password=RELAY_PASSWORD
        )
        both.register()
        both.keepalive()
        assert running.library.is_online(RELAY_ID)
    finally:
        running.close()
