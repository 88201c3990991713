"""police_video records → GA/T 1400 objects (pure: the images are passed in, no I/O).

A ``face_capture`` becomes a ``FaceObject`` (face image Type 11, scene Type 14, ``face.box`` as
LeftTopX/LeftTopY/RightBtmX/RightBtmY), a ``plate_capture`` a ``MotorVehicleObject`` (vehicle Type 01, plate
Type 02, scene Type 14; plate, GA/T 543 colour codes, VehicleClass). Images are embedded as base64 in
``SubImageInfoObject.Data``, their ``FileFormat`` taken from their magic bytes.

Ids: a record that carries the camera's own object id (``source_ref``, kept by the police policy: a 48-digit
FaceID / MotorVehicleID of its device) is posted under it, so an upstream that already holds the object from
another path sees the same id. Otherwise the ids follow GA/T 1400's structure — DeviceID + ``02`` + capture time
+ serials — with serials derived from a hash of (device_id, event_id), so the same record always gets the same
object id and the upstream can deduplicate on it. The anfang event id also
travels in an extension field (``event_id_field``, default ``AnfangEventID``).

The vocabulary (image types, colour codes, id structure, time format) is ``anfang.contracts.gat1400``, the same
tables the edge agent reads cameras' objects with.

>>> path, obj = to_viid_object(record, images={"face": jpeg_bytes}, event_id_field="AnfangEventID")
>>> path, obj["FaceID"]
('/VIID/Faces', '330106000011900000010220231213173915…')
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from anfang.contracts import ImageError, sniff_content_type
from anfang.contracts.gat1400 import (
    IMAGE_TYPE_BY_ROLE,
    OBJECT_TYPE_CODES,
    PLATE_COLOR_CODES,
    VEHICLE_COLOR_CODES,
    ObjectKind,
    object_id,
    source_id,
    viid_time,
)

from .errors import RecordMappingError

__all__ = ["LISTS", "ViidList", "object_ids", "to_viid_object"]


@dataclass(frozen=True, slots=True)
class ViidList:
    """Where a kind of object is posted and how its list is wrapped."""

    path: str
    root: str
    key: str
    id_field: str
    kind: ObjectKind


#: event_type → the GA/T 1400 list it is posted in.
LISTS: Final[dict[str, ViidList]] = {
    "face_capture": ViidList("/VIID/Faces", "FaceListObject", "FaceObject", "FaceID", "face"),
    "plate_capture": ViidList(
        "/VIID/MotorVehicles", "MotorVehicleListObject", "MotorVehicleObject", "MotorVehicleID", "motor_vehicle"
    ),
}
_FILE_FORMATS: Final = {"image/jpeg": "Jpeg", "image/png": "Png"}
#: GA/T 1400 EventSort of the sub-images, as the published samples send them (10 face capture, 16 vehicle).
_EVENT_SORT: Final = {"face_capture": 10, "plate_capture": 16}
#: PlateClass 51: large new-energy vehicle plates, the class issued in yellow-green (no GA/T 543 colour code).
_YELLOW_GREEN_CLASS: Final = "51"


def _serials(device_id: str, event_id: str, salt: str = "") -> tuple[int, int]:
    digest = int.from_bytes(hashlib.sha256(f"anfang-gat1400\0{device_id}\0{event_id}\0{salt}".encode()).digest()[:8])
    return digest % 100_000, (digest // 100_000) % 100_000


def _captured(record: Mapping[str, Any]) -> dt.datetime:
    try:
        captured = dt.datetime.fromisoformat(str(record["captured_at"]))
    except (KeyError, ValueError) as exc:
        raise RecordMappingError("record has no RFC 3339 captured_at") from exc
    if captured.tzinfo is None:
        raise RecordMappingError("record's captured_at has no offset")
    return captured


def _camera_ids(record: Mapping[str, Any], kind: ObjectKind) -> tuple[str, str] | None:
    """The camera's own (SourceID, object id), when the record carries one (``source_ref``) that is a 48-digit
    GA/T 1400 id of this record's device and kind: the upstream may already hold that object."""
    ref = record.get("source_ref")
    device_id = str(record["device_id"])
    if not isinstance(ref, str) or len(ref) != 48 or not ref.isdigit() or not ref.startswith(device_id):
        return None
    if ref[41:43] != OBJECT_TYPE_CODES[kind]:
        return None
    return ref[:41], ref


def object_ids(record: Mapping[str, Any]) -> tuple[str, str]:
    """(SourceID, object id) of a record: the camera's own when it travelled (``source_ref``), otherwise derived
    deterministically from (device_id, event_id)."""
    event_type = str(record.get("event_type"))
    if event_type not in LISTS:
        raise RecordMappingError(f"{event_type} has no GA/T 1400 object")
    camera = _camera_ids(record, LISTS[event_type].kind)
    if camera is not None:
        return camera
    device_id, event_id = str(record["device_id"]), str(record["event_id"])
    source_serial, object_serial = _serials(device_id, event_id)
    try:
        source = source_id(device_id, viid_time(_captured(record)), source_serial)
    except ValueError as exc:
        raise RecordMappingError(f"device_id {device_id!r}: {exc}") from exc
    return source, object_id(source, LISTS[event_type].kind, object_serial)


def _sub_images(
    record: Mapping[str, Any], images: Mapping[str, bytes], roles: tuple[str, ...], shot_time: str
) -> list[dict[str, Any]]:
    device_id, event_id = str(record["device_id"]), str(record["event_id"])
    subs: list[dict[str, Any]] = []
    for image in record.get("images") or []:
        role = image.get("role")
        if role not in roles:
            continue
        raw = images.get(role)
        if raw is None:
            raise RecordMappingError(f"image {role} of {event_id} was not fetched")
        try:
            content_type = sniff_content_type(raw)
        except ImageError as exc:
            raise RecordMappingError(f"image {role} of {event_id} is not JPEG or PNG") from exc
        serial, _ = _serials(device_id, event_id, role)
        subs.append(
            {
                "ImageID": source_id(device_id, shot_time, serial),
                "EventSort": _EVENT_SORT[str(record["event_type"])],
                "DeviceID": device_id,
                "StoragePath": "",
                "Type": IMAGE_TYPE_BY_ROLE[role],
                "FileFormat": _FILE_FORMATS[content_type],
                "ShotTime": shot_time,
                "Width": int(image.get("width") or 0),
                "Height": int(image.get("height") or 0),
                "Data": base64.b64encode(raw).decode("ascii"),
            }
        )
    return subs


def _face(record: Mapping[str, Any], images: Mapping[str, bytes], source: str, oid: str) -> dict[str, Any]:
    when = viid_time(_captured(record))
    if not any(image.get("role") == "face" for image in record.get("images") or []):
        raise RecordMappingError("face capture without a face image (the policy must send face: original)")
    obj: dict[str, Any] = {
        "FaceID": oid,
        "InfoKind": 1,  # automatic capture
        "SourceID": source,
        "DeviceID": record["device_id"],
    }
    box = (record.get("face") or {}).get("box")
    if isinstance(box, dict):
        x, y, w, h = (int(box[k]) for k in ("x", "y", "w", "h"))
        obj.update({"LeftTopX": x, "LeftTopY": y, "RightBtmX": x + w, "RightBtmY": y + h})
    obj.update({"LocationMarkTime": when, "FaceAppearTime": when, "FaceDisAppearTime": when})
    # "是否" fields GA/T 1400.3 requires; 2 = unknown, as the published samples send them
    for flag in ("IsDriver", "IsForeigner", "IsSuspectedTerrorist", "IsCriminalInvolved", "IsDetainees"):
        obj[flag] = 2
    obj.update({"IsVictim": 2, "IsSuspiciousPerson": 2})
    obj["SubImageList"] = {"SubImageInfoObject": _sub_images(record, images, ("face", "scene"), when)}
    return obj


def _motor_vehicle(record: Mapping[str, Any], images: Mapping[str, bytes], source: str, oid: str) -> dict[str, Any]:
    when = viid_time(_captured(record))
    vehicle = record.get("vehicle")
    if not isinstance(vehicle, dict) or not isinstance(vehicle.get("plate"), str):
        raise RecordMappingError("plate capture without vehicle.plate (the policy must keep it)")
    obj: dict[str, Any] = {
        "MotorVehicleID": oid,
        "InfoKind": 1,
        "SourceID": source,
        "DeviceID": record["device_id"],
        "MarkTime": when,
        "AppearTime": when,
        "DisappearTime": when,
        "HasPlate": "1",
        "PlateNo": vehicle["plate"],
    }
    color = vehicle.get("plate_color")
    if color in PLATE_COLOR_CODES:
        obj["PlateColor"] = PLATE_COLOR_CODES[color]
    elif color == "yellow_green":
        obj["PlateClass"] = _YELLOW_GREEN_CLASS
    if isinstance(vehicle.get("vehicle_type"), str):
        obj["VehicleClass"] = vehicle["vehicle_type"]
    if vehicle.get("vehicle_color") in VEHICLE_COLOR_CODES:
        obj["VehicleColor"] = VEHICLE_COLOR_CODES[vehicle["vehicle_color"]]
    obj["SubImageList"] = {"SubImageInfoObject": _sub_images(record, images, ("vehicle", "plate", "scene"), when)}
    return obj


def to_viid_object(
    record: Mapping[str, Any], *, images: Mapping[str, bytes], event_id_field: str = "AnfangEventID"
) -> tuple[ViidList, dict[str, Any]]:
    """The GA/T 1400 list and object of a (decrypted) police_video record; ``images`` by role."""
    source, oid = object_ids(record)
    target = LISTS[str(record["event_type"])]
    build = _face if target.kind == "face" else _motor_vehicle
    obj = build(record, images, source, oid)
    if event_id_field:
        obj[event_id_field] = record["event_id"]
    return target, obj
