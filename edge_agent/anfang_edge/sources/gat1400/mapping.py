"""GA/T 1400 list objects → v1 events (pure: no sockets, no spool).

Real devices deviate from the standard. What can be understood is mapped and the deviation is counted
(:class:`Deviation`); what cannot becomes a per-item rejection with a GA/T 1400 status code and a clear string.

>>> outcome = map_face(obj, posting_device="45010101491327000176")
>>> outcome.event, outcome.deviations, outcome.reject
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from anfang.contracts import ImageError, sniff_content_type, validate_device_id, validate_plate
from anfang.contracts.gat1400 import (
    CST,
    PLATE_CLASS_COLORS,
    PLATE_COLORS,
    ROLE_BY_IMAGE_TYPE,
    VEHICLE_COLORS,
    StatusCode,
    parse_viid_time,
)
from anfang.contracts.limits import MAX_IMAGE_BYTES

__all__ = [
    "CST",
    "Deviation",
    "ItemOutcome",
    "JsonInt",
    "Rejection",
    "StatusCode",
    "deterministic_event_id",
    "device_id_of",
    "loads",
    "map_face",
    "map_motor_vehicle",
    "map_person",
    "parse_viid_time",
]


class Deviation(StrEnum):
    """A departure from GA/T 1400 that was tolerated (counted per device, shown by ``anfang-edge status``)."""

    NUMERIC_DEVICE_ID = "numeric_device_id"
    MISSING_DEVICE_ID = "missing_device_id"
    FILE_FORMAT_MISMATCH = "file_format_mismatch"
    IMAGE_DATA_NOT_BASE64 = "image_data_not_base64"
    IMAGE_UNUSABLE = "image_unusable"
    DATA_URI_PREFIX = "data_uri_prefix"
    DUPLICATE_IMAGE_TYPE = "duplicate_image_type"
    LIST_SHAPE = "list_shape"
    CAPTURE_TIME_FALLBACK = "capture_time_fallback"
    INVALID_FACE_BOX = "invalid_face_box"
    PLATE_COLOR_INFERRED = "plate_color_inferred"
    REJECTED_ITEM = "rejected_item"
    #: Not a deviation but a refusal: an object naming a device the posting camera may not upload for.
    FORBIDDEN_DEVICE = "forbidden_device"


class JsonInt(str):
    """A JSON integer kept as its digits (``parse_int``), so a 20-digit DeviceID survives and is noticed."""

    __slots__ = ()


def loads(raw: bytes | bytearray) -> Any:
    """Parse a VIID+JSON body; integers stay exact as :class:`JsonInt` strings."""
    return json.loads(raw, parse_int=JsonInt)


@dataclass(frozen=True, slots=True)
class Rejection:
    code: StatusCode
    status: str


@dataclass(slots=True)
class ItemOutcome:
    """One list object: its id for the reply, the event (or why not), the deviations seen."""

    object_id: str
    device_id: str | None = None
    event: dict[str, Any] | None = None
    reject: Rejection | None = None
    deviations: Counter[Deviation] = field(default_factory=Counter)


class _RejectError(Exception):
    def __init__(self, code: StatusCode, status: str) -> None:
        super().__init__(status)
        self.rejection = Rejection(code, status)


# ------------------------------------------------------------------------------------------ identifiers


def device_id_of(value: Any, deviations: Counter[Deviation]) -> str:
    """The 20-digit DeviceID of ``value``; a JSON number is accepted (counted), anything else not 20 digits rejected."""
    if isinstance(value, JsonInt):
        deviations[Deviation.NUMERIC_DEVICE_ID] += 1
    if not isinstance(value, str) or not value:
        raise _RejectError(StatusCode.INVALID_JSON_CONTENT, "DeviceID is missing")
    try:
        return validate_device_id(value)
    except ValueError:
        raise _RejectError(
            StatusCode.INVALID_JSON_CONTENT, "DeviceID is not a 20-digit GA/T 1400 device code"
        ) from None


def checked_device_id(value: Any) -> tuple[str | None, Counter[Deviation], Rejection | None]:
    """``device_id_of`` for the System endpoints: (device id or None, deviations, rejection or None)."""
    deviations: Counter[Deviation] = Counter()
    try:
        return device_id_of(value, deviations), deviations, None
    except _RejectError as exc:
        return None, deviations, exc.rejection


def deterministic_event_id(device_id: str, object_id: str, captured: dt.datetime) -> str:
    """A valid UUIDv7 whose time is the capture time and whose random bits hash device + object id.

    A device retrying the same object yields the same event_id, so the retry is a duplicate end to end.
    """
    ms = int(captured.timestamp() * 1000)
    digest = int.from_bytes(hashlib.sha256(f"gat1400\0{device_id}\0{object_id}".encode()).digest()[:10], "big")
    rand_a = digest >> 68  # 12 bits
    rand_b = digest & ((1 << 62) - 1)  # 62 bits
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


# ------------------------------------------------------------------------------------------ time


def _capture_time(
    obj: dict[str, Any], fields: tuple[str, ...], images: list[dict[str, Any]], object_id: str, out: ItemOutcome
) -> dt.datetime:
    for name in fields:
        parsed = parse_viid_time(obj.get(name))
        if parsed is not None:
            return parsed
    out.deviations[Deviation.CAPTURE_TIME_FALLBACK] += 1
    for image in images:
        parsed = parse_viid_time(image.get("ShotTime"))
        if parsed is not None:
            return parsed
    # object ids embed the SourceID's time: DeviceID(20) + "02" + YYYYMMDDhhmmss
    parsed = parse_viid_time(object_id[22:36]) if len(object_id) >= 36 else None
    if parsed is not None:
        return parsed
    raise _RejectError(StatusCode.INVALID_JSON_CONTENT, "no capture time (YYYYMMDDhhmmss) in the object")


# ------------------------------------------------------------------------------------------ images

_ROLE_BY_TYPE: Final = ROLE_BY_IMAGE_TYPE
_FORMAT_TYPES: Final = {"jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png"}
_DATA_URI_RE: Final = re.compile(r"^data:image/[a-z]+;base64,", re.IGNORECASE)
_B64_RE: Final = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


def _as_list(value: Any, key: str, out: ItemOutcome) -> list[dict[str, Any]]:
    """``{"<key>": [...]}`` as the standard has it; a bare list or a single object is tolerated (counted)."""
    if value is None or value == "":
        return []
    inner = value.get(key) if isinstance(value, dict) and key in value else value
    if isinstance(value, list) or (isinstance(value, dict) and key not in value):
        out.deviations[Deviation.LIST_SHAPE] += 1
    if isinstance(inner, dict):
        if inner is not value:
            out.deviations[Deviation.LIST_SHAPE] += 1
        inner = [inner]
    return [item for item in inner if isinstance(item, dict)] if isinstance(inner, list) else []


def _type_code(value: Any) -> str:
    text = str(value).strip() if value is not None else ""
    return text.zfill(2) if text.isdigit() and len(text) < 2 else text


def _decode(sub: dict[str, Any], out: ItemOutcome) -> bytes | None:
    """The image bytes of a SubImageInfoObject, or None (counted) when its Data is unusable."""
    data = sub.get("Data")
    if not isinstance(data, str) or not data.strip():
        out.deviations[Deviation.IMAGE_DATA_NOT_BASE64] += 1
        return None
    text = "".join(data.split())
    prefix = _DATA_URI_RE.match(text)
    if prefix:
        out.deviations[Deviation.DATA_URI_PREFIX] += 1
        text = text[prefix.end() :]
    if len(text) % 4 or not _B64_RE.fullmatch(text):  # a path or URL where base64 should be
        out.deviations[Deviation.IMAGE_DATA_NOT_BASE64] += 1
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        out.deviations[Deviation.IMAGE_DATA_NOT_BASE64] += 1
        return None
    if len(raw) > MAX_IMAGE_BYTES:
        out.deviations[Deviation.IMAGE_UNUSABLE] += 1
        return None
    return raw


def _images(subs: list[dict[str, Any]], out: ItemOutcome) -> dict[str, dict[str, str]]:
    """Role → v1 image, from sub-images whose Type maps to a role; the first of a role wins."""
    images: dict[str, dict[str, str]] = {}
    for sub in subs:
        role = _ROLE_BY_TYPE.get(_type_code(sub.get("Type")))
        if role is None:
            continue
        if role in images:
            out.deviations[Deviation.DUPLICATE_IMAGE_TYPE] += 1
            continue
        raw = _decode(sub, out)
        if raw is None:
            continue
        try:
            content_type = sniff_content_type(raw)
        except ImageError:
            out.deviations[Deviation.IMAGE_UNUSABLE] += 1
            continue
        declared = _FORMAT_TYPES.get(str(sub.get("FileFormat") or "").strip().lower())
        if declared is not None and declared != content_type or declared is None and sub.get("FileFormat"):
            out.deviations[Deviation.FILE_FORMAT_MISMATCH] += 1  # trust the magic bytes
        images[role] = {
            "role": role,
            "content_type": content_type,
            "data": base64.b64encode(raw).decode("ascii"),
            "sha256": hashlib.sha256(raw).hexdigest(),
        }
    return images


# ------------------------------------------------------------------------------------------ objects


def _begin(obj: Any, id_field: str, posting_device: str) -> tuple[ItemOutcome, dict[str, Any]]:
    raw_id = obj.get(id_field) if isinstance(obj, dict) else None
    out = ItemOutcome(object_id=str(raw_id) if raw_id not in (None, "") else "")
    if not isinstance(obj, dict):
        raise _Early(out, Rejection(StatusCode.INVALID_JSON_CONTENT, "list item is not an object"))
    if not out.object_id:
        raise _Early(out, Rejection(StatusCode.INVALID_JSON_CONTENT, f"{id_field} is missing"))
    if len(out.object_id) > 64 or not out.object_id.isprintable():
        raise _Early(out, Rejection(StatusCode.INVALID_JSON_CONTENT, f"{id_field} is longer than 64 characters"))
    if obj.get("DeviceID") in (None, ""):
        out.deviations[Deviation.MISSING_DEVICE_ID] += 1
        out.device_id = posting_device
    else:
        try:
            out.device_id = device_id_of(obj["DeviceID"], out.deviations)
        except _RejectError as exc:
            raise _Early(out, exc.rejection) from None
    return out, obj


class _Early(Exception):
    def __init__(self, out: ItemOutcome, rejection: Rejection) -> None:
        super().__init__(rejection.status)
        out.reject = rejection
        self.out = out


def _box(obj: dict[str, Any], out: ItemOutcome) -> dict[str, int] | None:
    names = ("LeftTopX", "LeftTopY", "RightBtmX", "RightBtmY")
    values = [obj.get(name) for name in names]
    if all(v in (None, "") for v in values):
        return None
    try:
        left, top, right, bottom = (int(str(v)) for v in values)
    except ValueError:
        out.deviations[Deviation.INVALID_FACE_BOX] += 1
        return None
    if left < 0 or top < 0 or right <= left or bottom <= top:
        out.deviations[Deviation.INVALID_FACE_BOX] += 1
        return None
    return {"x": left, "y": top, "w": right - left, "h": bottom - top}


def map_face(obj: Any, *, posting_device: str) -> ItemOutcome:
    """A ``FaceObject`` → a ``face_capture`` event (Type 11 → face, 14 → scene, box when a scene is present)."""
    try:
        out, obj = _begin(obj, "FaceID", posting_device)
    except _Early as early:
        return _rejected(early.out)
    try:
        subs = _as_list(obj.get("SubImageList"), "SubImageInfoObject", out)
        images = _images(subs, out)
        if "face" not in images:
            raise _RejectError(StatusCode.INVALID_JSON_CONTENT, "no usable face image (SubImage Type 11, base64 Data)")
        captured = _capture_time(
            obj, ("FaceAppearTime", "LocationMarkTime", "FaceDisAppearTime"), subs, out.object_id, out
        )
        event: dict[str, Any] = _common("face_capture", out, captured)
        event["images"] = [images[r] for r in ("face", "scene") if r in images]
        box = _box(obj, out) if "scene" in images else None
        if box is not None:
            event["face"] = {"box": box}
        out.event = event
    except _RejectError as exc:
        out.reject = exc.rejection
        return _rejected(out)
    return out


def map_person(obj: Any, *, posting_device: str) -> ItemOutcome:
    """A ``PersonObject`` → a ``face_capture`` when it carries a face (Type 11); person (10) and scene (14) kept.

    v1 has no event type for a body-only capture, so a person without a usable face image is rejected per item.
    Its LeftTopX/... box is the body, not the face, so no ``face.box`` is made from it.
    """
    try:
        out, obj = _begin(obj, "PersonID", posting_device)
    except _Early as early:
        return _rejected(early.out)
    try:
        subs = _as_list(obj.get("SubImageList"), "SubImageInfoObject", out)
        images = _images(subs, out)
        if "face" not in images:
            raise _RejectError(
                StatusCode.INVALID_JSON_CONTENT, "person without a usable face image (Type 11): not forwarded"
            )
        captured = _capture_time(
            obj, ("PersonAppearTime", "LocationMarkTime", "PersonDisAppearTime"), subs, out.object_id, out
        )
        event = _common("face_capture", out, captured)
        event["images"] = [images[r] for r in ("face", "scene", "person") if r in images]
        out.event = event
    except _RejectError as exc:
        out.reject = exc.rejection
        return _rejected(out)
    return out


_PLATE_COLORS: Final = PLATE_COLORS
_CLASS_COLORS: Final = PLATE_CLASS_COLORS
_VEHICLE_COLORS: Final = VEHICLE_COLORS
_PLATE_V1_COLORS: Final = {"blue", "yellow", "green", "yellow_green", "white", "black"}


def _plate_color(obj: dict[str, Any], out: ItemOutcome) -> str:
    code = str(obj.get("PlateColor") or "").strip().lstrip("0") or str(obj.get("PlateColor") or "").strip()
    color = _PLATE_COLORS.get(code) or (code if code in _PLATE_V1_COLORS else None)
    if color is not None:
        return color
    inferred = _CLASS_COLORS.get(_type_code(obj.get("PlateClass")))
    if not code and inferred is not None:
        out.deviations[Deviation.PLATE_COLOR_INFERRED] += 1
        return inferred
    raise _RejectError(StatusCode.INVALID_JSON_CONTENT, "PlateColor is missing or not a plate colour code")


def map_motor_vehicle(obj: Any, *, posting_device: str) -> ItemOutcome:
    """A ``MotorVehicleObject`` → a ``plate_capture`` event (Type 01/09 → vehicle, 02 → plate)."""
    try:
        out, obj = _begin(obj, "MotorVehicleID", posting_device)
    except _Early as early:
        return _rejected(early.out)
    try:
        plate = str(obj.get("PlateNo") or "").strip()
        if str(obj.get("HasPlate", "1")).strip() == "0" or not plate:
            raise _RejectError(StatusCode.INVALID_JSON_CONTENT, "vehicle without a plate (HasPlate 0 or no PlateNo)")
        try:
            validate_plate(plate)
        except ValueError:
            raise _RejectError(StatusCode.INVALID_JSON_CONTENT, "PlateNo is not a mainland plate") from None
        vehicle: dict[str, Any] = {"plate": plate, "plate_color": _plate_color(obj, out)}
        vehicle_class = str(obj.get("VehicleClass") or "").strip()
        if vehicle_class and len(vehicle_class) <= 64 and vehicle_class.isprintable():
            vehicle["vehicle_type"] = vehicle_class
        color = _VEHICLE_COLORS.get(str(obj.get("VehicleColor") or "").strip().lstrip("0"))
        if color is not None:
            vehicle["vehicle_color"] = color
        subs = _as_list(obj.get("SubImageList"), "SubImageInfoObject", out)
        images = _images(subs, out)
        captured = _capture_time(obj, ("PassTime", "AppearTime", "MarkTime", "DisappearTime"), subs, out.object_id, out)
        event = _common("plate_capture", out, captured)
        event["vehicle"] = vehicle
        event["images"] = [images[r] for r in ("vehicle", "plate") if r in images]
        out.event = event
    except _RejectError as exc:
        out.reject = exc.rejection
        return _rejected(out)
    return out


def _common(event_type: str, out: ItemOutcome, captured: dt.datetime) -> dict[str, Any]:
    assert out.device_id is not None
    return {
        "event_id": deterministic_event_id(out.device_id, out.object_id, captured),
        "event_type": event_type,
        "device_id": out.device_id,
        "captured_at": captured.isoformat(),
        "source_ref": out.object_id,
    }


def _rejected(out: ItemOutcome) -> ItemOutcome:
    out.event = None
    out.deviations[Deviation.REJECTED_ITEM] += 1
    return out
