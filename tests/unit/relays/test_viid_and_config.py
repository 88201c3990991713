"""Records → GA/T 1400 objects (pure), the relay's TOML, the reader's parsing and the Digest challenge choice."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from anfang_ops.relays import (
    RecordMappingError,
    RelayConfigError,
    entry_of,
    load_gat1400_config,
    load_https_config,
    object_ids,
    to_viid_object,
)
from anfang_ops.relays.gat1400 import _algorithm_of
from anfang_ops.relays.https import parse_retry_after

JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 64


def _plate_record(**vehicle: Any) -> dict[str, Any]:
    return {
        "schema": "anfang.record.v1",
        "event_id": "019ace03-5c00-7000-8000-000000000003",
        "event_type": "plate_capture",
        "device_id": "33010600001190000001",
        "captured_at": "2026-11-29T00:03:00Z",
        "vehicle": {"plate": "浙A12345", "plate_color": "blue", **vehicle},
        "images": [
            {"role": "plate", "ref": "s3://b/k", "sha256": hashlib.sha256(JPEG).hexdigest(), "width": 1, "height": 1}
        ],
        "redaction": {"policy": "police_video@2"},
    }


def test_object_ids_are_deterministic_per_device_and_event() -> None:
    record = _plate_record()
    assert object_ids(record) == object_ids(dict(record))
    other = {**record, "event_id": "019ace03-5c00-7000-8000-000000000004"}
    assert object_ids(other)[1] != object_ids(record)[1]
    source, oid = object_ids(record)
    assert source.startswith("33010600001190000001" + "02" + "20261129080300") and oid[41:43] == "02"


def test_the_cameras_own_object_id_is_used_only_when_it_is_this_devices_and_kinds() -> None:
    record = _plate_record()
    derived_source, derived = object_ids(record)
    camera = "33010600001190000001" + "02" + "20261129080300" + "00007" + "02" + "00042"
    assert object_ids({**record, "source_ref": camera}) == (camera[:41], camera)
    # another device's id, a face id on a vehicle, a short or non-numeric ref: the derived ids, never the ref
    for bad in (
        "33010600001190000002" + camera[20:],
        camera[:41] + "06" + camera[43:],
        camera[:-1],
        "sim-17",
    ):
        assert object_ids({**record, "source_ref": bad}) == (derived_source, derived), bad


@pytest.mark.parametrize(
    ("vehicle", "expected"),
    [
        ({"plate_color": "yellow_green"}, {"PlateClass": "51"}),
        (
            {"vehicle_color": "grey", "vehicle_type": "K33"},
            {"PlateColor": "5", "VehicleColor": "3", "VehicleClass": "K33"},
        ),
    ],
)
def test_vehicle_codes(vehicle: dict[str, Any], expected: dict[str, str]) -> None:
    _, obj = to_viid_object(_plate_record(**vehicle), images={"plate": JPEG}, event_id_field="")
    assert {k: obj[k] for k in expected} == expected
    assert "AnfangEventID" not in obj
    assert obj["SubImageList"]["SubImageInfoObject"][0]["Type"] == "02"


def test_unmappable_records_are_typed_errors() -> None:
    with pytest.raises(RecordMappingError, match="no GA/T 1400 object"):
        to_viid_object({**_plate_record(), "event_type": "alarm"}, images={})
    with pytest.raises(RecordMappingError, match="was not fetched"):
        to_viid_object(_plate_record(), images={})
    record = _plate_record()
    del record["vehicle"]
    with pytest.raises(RecordMappingError, match=r"vehicle\.plate"):
        to_viid_object(record, images={"plate": JPEG})


def test_queue_bodies_that_are_not_records_are_recognised() -> None:
    assert entry_of('{"schema": "anfang.record.v1"}') is None
    assert entry_of("not json") is None
    inner = json.dumps({"schema": "anfang.record.v1", "event_id": "e", "device_id": "d", "event_type": "alarm"})
    entry = entry_of(json.dumps({"Type": "Notification", "Message": inner}))
    assert entry is not None and entry.key == ("d", "e")


def test_the_preferred_digest_challenge_is_read_from_its_algorithm() -> None:
    assert _algorithm_of('Digest realm="r", qop="auth", algorithm=SHA-256, nonce="n"') == "SHA-256"
    assert _algorithm_of('Digest realm="r", nonce="n"') == "MD5"


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("7", 0) == 7.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:00 GMT", 30.0) == 30.0
    assert parse_retry_after("soon", 0) is None


def test_config_errors_are_one_readable_line(tmp_path: Path) -> None:
    path = tmp_path / "gat1400.toml"
    path.write_text(
        'state_dir = "s"\n[queue]\nurl = "q"\n[upstream]\nurl = "ftp://x"\ndevice_id = "1"\nusername = "u"\n'
    )
    with pytest.raises(RelayConfigError, match=r"upstream\.url: Value error, must be an http"):
        load_gat1400_config(path)
    path.write_text(
        'state_dir = "s"\n[queue]\nurl = "q"\n[upstream]\nurl = "http://example.com"\nkey_id = "k"\n'
        'private_key_file = "k"\n'
    )
    with pytest.raises(RelayConfigError, match="must be https://"):
        load_https_config(path)


def test_the_example_configs_load(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3] / "ops" / "packaging"
    assert load_gat1400_config(root / "relay-gat1400.example.toml").upstream.event_id_field == "AnfangEventID"
    assert load_https_config(root / "relay-https.example.toml").upstream.url.startswith("https://")


def test_the_cli_reports_a_bad_config_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from anfang_ops.cli import main

    (tmp_path / "bad.toml").write_text("state_dir = [")
    assert main(["relay", "gat1400", "--config", str(tmp_path / "bad.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("anfang relay gat1400:") and "\n" not in err
