"""GA/T 1400 (视图库, VIID) vocabulary shared by both directions: the edge's receiver and the police relay.

Pure tables and formats, no I/O: status codes, the VIID time format (China Standard Time, no offset), the
SubImageInfoObject ``Type`` ↔ v1 image role table, the GA/T 543 colour codes, and the GA/T 1400 id structures.
The edge agent reads cameras' objects with them (``anfang_edge.sources.gat1400.mapping``); the police relay
writes objects with them (``anfang_ops.relays.gat1400``), so the two directions cannot drift apart.

ID structures (GA/T 1400.3): DeviceID (20 digits) = division 8 + industry 2 + type 3 + network 1 + serial 6;
SourceID / ImageID (41) = DeviceID + ``"02"`` + ``YYYYMMDDhhmmss`` + serial 5; FaceID / MotorVehicleID /
PersonID (48) = SourceID + object type (``06`` face, ``02`` motor vehicle, ``01`` person) + serial 5.

>>> viid_time(dt.datetime(2023, 12, 13, 9, 39, 15, tzinfo=dt.UTC))
'20231213173915'
>>> object_id(source_id("45010101491327000176", "20231213173915", 127), "face", 128)
'450101014913270001760220231213173915001270600128'
"""

from __future__ import annotations

import datetime as dt
import re
from enum import IntEnum
from typing import Final, Literal

__all__ = [
    "CONTENT_TYPE",
    "CST",
    "OBJECT_TYPE_CODES",
    "PLATE_CLASS_COLORS",
    "PLATE_COLORS",
    "PLATE_COLOR_CODES",
    "ROLE_BY_IMAGE_TYPE",
    "IMAGE_TYPE_BY_ROLE",
    "VEHICLE_COLORS",
    "VEHICLE_COLOR_CODES",
    "ObjectKind",
    "StatusCode",
    "object_id",
    "parse_viid_time",
    "source_id",
    "viid_time",
]

#: The media type of VIID JSON bodies.
CONTENT_TYPE: Final = "application/VIID+JSON"

#: GA/T 1400 times are local China Standard Time without an offset.
CST: Final = dt.timezone(dt.timedelta(hours=8))


class StatusCode(IntEnum):
    """GA/T 1400 ``ResponseStatusObject.StatusCode`` values."""

    OK = 0
    OTHER_ERROR = 1
    DEVICE_BUSY = 2
    DEVICE_ERROR = 3
    INVALID_OPERATION = 4
    INVALID_JSON_FORMAT = 7
    INVALID_JSON_CONTENT = 8


# ------------------------------------------------------------------------------------------ time

_TIME_RE: Final = re.compile(r"^(\d{14})(\d{3})?$")


def viid_time(when: dt.datetime | float) -> str:
    """``YYYYMMDDhhmmss`` in China Standard Time (of an aware datetime or a unix time)."""
    moment = when if isinstance(when, dt.datetime) else dt.datetime.fromtimestamp(when, CST)
    return moment.astimezone(CST).strftime("%Y%m%d%H%M%S")


def parse_viid_time(value: object) -> dt.datetime | None:
    """``YYYYMMDDhhmmss`` (optionally with 3 millisecond digits) in China Standard Time; None when unusable."""
    if not isinstance(value, str):
        return None
    match = _TIME_RE.fullmatch(value.strip())
    if match is None:
        return None
    try:
        parsed = dt.datetime.strptime(match.group(1), "%Y%m%d%H%M%S").replace(tzinfo=CST)
    except ValueError:
        return None
    if match.group(2):
        parsed += dt.timedelta(milliseconds=int(match.group(2)))
    return parsed


# ------------------------------------------------------------------------------------------ images

#: SubImageInfoObject.Type → v1 image role (01 vehicle, 09 vehicle close-up, 02 plate, 10 person, 11 face,
#: 14 scene); the types without a role (12 non-motor vehicle, 100 general) are not carried.
ROLE_BY_IMAGE_TYPE: Final = {
    "11": "face",
    "14": "scene",
    "01": "vehicle",
    "09": "vehicle",
    "02": "plate",
    "10": "person",
}
#: v1 image role → the Type a writer uses for it (01 for a vehicle: the whole-vehicle picture).
IMAGE_TYPE_BY_ROLE: Final = {"face": "11", "scene": "14", "vehicle": "01", "plate": "02", "person": "10"}

# ------------------------------------------------------------------------------------------ colours

#: GA/T 543 colour codes (DE00308) as devices send them in PlateColor, with the Chinese names some send instead.
PLATE_COLORS: Final = {
    "1": "black",
    "2": "white",
    "5": "blue",
    "6": "yellow",
    "9": "green",
    "黑": "black",
    "白": "white",
    "蓝": "blue",
    "黄": "yellow",
    "绿": "green",
    "黄绿": "yellow_green",
}
#: v1 plate colour → the PlateColor a writer sends. ``yellow_green`` has no GA/T 543 code: it is written as
#: PlateClass 51 (large new-energy vehicle plates, issued yellow-green) without a PlateColor.
PLATE_COLOR_CODES: Final = {"black": "1", "white": "2", "blue": "5", "yellow": "6", "green": "9"}
#: GA 24.7 plate classes → the colour the class is issued in (used when PlateColor is missing).
PLATE_CLASS_COLORS: Final = {
    "01": "yellow",
    "02": "blue",
    "06": "black",
    "23": "white",
    "51": "yellow_green",
    "52": "green",
}
#: GA/T 543 vehicle colour codes → v1 vehicle colour.
VEHICLE_COLORS: Final = {
    "1": "black",
    "2": "white",
    "3": "grey",
    "4": "red",
    "5": "blue",
    "6": "yellow",
    "7": "orange",
    "8": "brown",
    "9": "green",
    "10": "purple",
    "11": "cyan",
    "12": "pink",
}
VEHICLE_COLOR_CODES: Final = {name: code for code, name in VEHICLE_COLORS.items()}

# ------------------------------------------------------------------------------------------ identifiers

ObjectKind = Literal["person", "motor_vehicle", "face"]
#: The object type digits of a 48-digit object id.
OBJECT_TYPE_CODES: Final[dict[ObjectKind, str]] = {"person": "01", "motor_vehicle": "02", "face": "06"}
_DIGITS_RE: Final = re.compile(r"^\d+$")


def source_id(device_id: str, time_text: str, serial: int) -> str:
    """The 41-digit SourceID / ImageID: DeviceID + ``02`` + ``YYYYMMDDhhmmss`` + 5-digit serial."""
    if len(device_id) != 20 or not _DIGITS_RE.fullmatch(device_id):
        raise ValueError("DeviceID must be 20 digits")
    if len(time_text) != 14 or not _DIGITS_RE.fullmatch(time_text):
        raise ValueError("time must be YYYYMMDDhhmmss")
    if not 0 <= serial < 100_000:
        raise ValueError("serial must be 0..99999")
    return f"{device_id}02{time_text}{serial:05d}"


def object_id(source: str, kind: ObjectKind, serial: int) -> str:
    """The 48-digit FaceID / MotorVehicleID / PersonID: SourceID + object type + 5-digit serial."""
    if len(source) != 41 or not _DIGITS_RE.fullmatch(source):
        raise ValueError("SourceID must be 41 digits")
    if not 0 <= serial < 100_000:
        raise ValueError("serial must be 0..99999")
    return f"{source}{OBJECT_TYPE_CODES[kind]}{serial:05d}"
