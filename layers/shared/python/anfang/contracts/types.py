"""Annotated field types shared by the wire models; validation runs in pydantic-core where a pattern can say it."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, StringConstraints

from .identifiers import (
    EVENT_ID_PATTERN,
    MOBILE_PATTERN,
    PLATE_PATTERN,
    RESIDENT_ID_PATTERN,
    TOWN_CODE_PATTERN,
    validate_mobile,
    validate_resident_id,
)
from .limits import MAX_LABEL_CHARS, MAX_TEXT_CHARS

# Printable text: no C0/C1 control characters (log injection, invisible smuggling).
_PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]*$"
_RFC3339_RE: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339_string(value: Any) -> Any:
    # pydantic's lax mode would also take Unix numbers and a space separator; the contract is RFC 3339 text.
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or not _RFC3339_RE.fullmatch(value):
        raise ValueError("must be an RFC 3339 timestamp with an offset, e.g. 2026-11-29T08:30:00+08:00")
    return value


DeviceId = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{19}$")]
TownCode = Annotated[str, StringConstraints(pattern=TOWN_CODE_PATTERN)]
EventId = Annotated[str, StringConstraints(pattern=EVENT_ID_PATTERN)]
ResidentId = Annotated[str, StringConstraints(pattern=RESIDENT_ID_PATTERN), AfterValidator(validate_resident_id)]
Mobile = Annotated[str, StringConstraints(pattern=MOBILE_PATTERN), AfterValidator(validate_mobile)]
Plate = Annotated[str, StringConstraints(pattern=PLATE_PATTERN)]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_CHARS, pattern=_PRINTABLE)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS, pattern=_PRINTABLE)]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_string)]
#: The idempotency key of an event end to end: (device_id, event_id). An event id is unique per device only
#: (a device cannot know, or must not be able to claim, another device's ids), so no hop keys on it alone.
EventKey = tuple[str, str]

#: The event types of v1: adding one starts here (docs/checklists.md); the tuples below follow the Literals.
EventType = Literal["face_capture", "plate_capture", "access", "visitor", "alarm", "device_status"]
EVENT_TYPES: Final[tuple[EventType, ...]] = get_args(EventType)
Direction = Literal["in", "out", "unknown"]
ImageRole = Literal["face", "scene", "plate", "vehicle", "person"]
IMAGE_ROLES: Final[tuple[ImageRole, ...]] = get_args(ImageRole)
SiteType = Literal[
    "residential_new",
    "residential_closed",
    "residential_open",
    "rural",
    "enterprise_institution",
    "apartment_office",
    "key_site",
]
SITE_TYPES: Final[tuple[SiteType, ...]] = get_args(SiteType)
Credential = Literal["card", "face", "qr", "id_card", "password", "visitor_code", "remote"]
AccessResult = Literal["granted", "denied"]
AlarmKind = Literal[
    "perimeter_intrusion", "patrol_missed", "behaviour_anomaly", "loitering", "crowding", "tamper", "other"
]
Severity = Literal["info", "warning", "critical"]
PlateColor = Literal["blue", "yellow", "green", "yellow_green", "white", "black"]
DeviceState = Literal["online", "offline", "tamper", "error", "patrol_checkin"]
HealthCodeStatus = Literal["green", "yellow", "red"]
Role = Literal["device", "health_commission"]
