"""The GA/T 1400 vocabulary both directions share: ids, times and the code tables read back what they write."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from anfang.contracts.gat1400 import (
    IMAGE_TYPE_BY_ROLE,
    PLATE_CLASS_COLORS,
    PLATE_COLOR_CODES,
    PLATE_COLORS,
    ROLE_BY_IMAGE_TYPE,
    VEHICLE_COLOR_CODES,
    VEHICLE_COLORS,
    object_id,
    parse_viid_time,
    source_id,
    viid_time,
)

GAT = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "gat1400"


def test_ids_follow_the_published_structures() -> None:
    # GIVEN the published face sample's ids
    face = json.loads((GAT / "easy1400_faces_listobject.json").read_text())["FaceListObject"]["FaceObject"][0]
    # WHEN they are rebuilt from their parts
    source = source_id(face["DeviceID"], face["FaceAppearTime"], int(face["SourceID"][-5:]))
    # THEN they are the same digits
    assert source == face["SourceID"]
    assert object_id(source, "face", int(face["FaceID"][-5:])) == face["FaceID"]


@pytest.mark.parametrize(
    ("device_id", "time_text", "serial"),
    [
        ("1234", "20231213173915", 1),
        ("45010101491327000176", "2023121317391", 1),
        ("45010101491327000176", "20231213173915", 100_000),
    ],
)
def test_malformed_id_parts_are_refused(device_id: str, time_text: str, serial: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        source_id(device_id, time_text, serial)


def test_times_are_china_standard_time_both_ways() -> None:
    moment = dt.datetime(2023, 12, 13, 9, 39, 15, tzinfo=dt.UTC)
    assert viid_time(moment) == "20231213173915"
    assert parse_viid_time(viid_time(moment)) == moment
    assert parse_viid_time("20231213173915123") == moment + dt.timedelta(milliseconds=123)
    assert parse_viid_time("2023-12-13") is None


def test_every_written_code_reads_back_as_what_was_written() -> None:
    assert all(ROLE_BY_IMAGE_TYPE[code] == role for role, code in IMAGE_TYPE_BY_ROLE.items())
    assert all(PLATE_COLORS[code] == name for name, code in PLATE_COLOR_CODES.items())
    assert PLATE_CLASS_COLORS["51"] == "yellow_green" and "yellow_green" not in PLATE_COLOR_CODES
    assert all(VEHICLE_COLORS[code] == name for name, code in VEHICLE_COLOR_CODES.items())
