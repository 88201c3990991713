"""Identifiers of the contract: device IDs, event IDs, resident ID numbers, mobile numbers and plates.

Each identifier has a ``validate_*`` function (returns the normalised value or raises ``ValueError``, so it
plugs into pydantic) and a ``find_*`` function that returns every valid occurrence in a string. The finders
are what the privacy tests use to look for leaks, so they find the same values the validators accept.
"""

from __future__ import annotations

import datetime as dt
import operator
import os
import re
import time
import uuid
from typing import Final, NamedTuple

__all__ = [
    "DeviceIdParts",
    "event_id_time",
    "find_device_ids",
    "find_event_ids",
    "find_mobiles",
    "find_plates",
    "find_resident_ids",
    "is_valid_resident_id",
    "new_event_id",
    "parse_device_id",
    "plate_province",
    "resident_id_check_char",
    "validate_device_id",
    "validate_event_id",
    "validate_mobile",
    "validate_plate",
    "validate_resident_id",
    "validate_town_code",
]

# ---------------------------------------------------------------------------------------------------- device ID

DEVICE_ID_PATTERN: Final = r"^[0-9]{20}$"
TOWN_CODE_PATTERN: Final = r"^[1-9][0-9]{5}([0-9]{2})?$"
_DEVICE_ID_RE: Final = re.compile(r"[0-9]{20}")
_DEVICE_ID_FIND_RE: Final = re.compile(r"(?<![0-9])[0-9]{20}(?![0-9])")
_TOWN_CODE_RE: Final = re.compile(TOWN_CODE_PATTERN)


class DeviceIdParts(NamedTuple):
    """The five fields of a GB/T 28181 / GA/T 1400 device ID."""

    division: str  # administrative division of the centre, 8 digits
    industry: str  # industry code, 2 digits
    type: str  # device or platform type, 3 digits
    network: str  # network identifier, 1 digit (0-4 video private network, 5 police, 6 gov, 7 Internet, 8 social)
    serial: str  # serial number, 6 digits


def validate_device_id(value: str) -> str:
    """A 20-digit device ID, unchanged; raises ``ValueError`` otherwise."""
    if not _DEVICE_ID_RE.fullmatch(value):
        raise ValueError("device_id must be 20 ASCII digits")
    if value[0] == "0":
        raise ValueError("device_id division code cannot start with 0")
    return value


def parse_device_id(value: str) -> DeviceIdParts:
    """Split a valid device ID into its five fields."""
    validate_device_id(value)
    return DeviceIdParts(value[0:8], value[8:10], value[10:13], value[13:14], value[14:20])


def find_device_ids(text: str) -> list[str]:
    """Every 20-digit run in ``text`` that is a device ID."""
    return [m.group(0) for m in _DEVICE_ID_FIND_RE.finditer(text) if m.group(0)[0] != "0"]


def validate_town_code(value: str) -> str:
    """A town's administrative-division code: 6 (county) or 8 (grassroots centre) digits."""
    if not _TOWN_CODE_RE.fullmatch(value):
        raise ValueError("town code must be 6 or 8 digits, not starting with 0")
    return value


# ---------------------------------------------------------------------------------------------------- event ID

EVENT_ID_PATTERN: Final = r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
_EVENT_ID_RE: Final = re.compile(EVENT_ID_PATTERN[1:-1])
_EVENT_ID_FIND_RE: Final = re.compile(r"(?<![0-9a-f-])" + EVENT_ID_PATTERN[1:-1] + r"(?![0-9a-f-])")


def validate_event_id(value: str) -> str:
    """A UUIDv7 in canonical form (lowercase, hyphenated); the idempotency key end to end."""
    if not _EVENT_ID_RE.fullmatch(value):
        raise ValueError("event_id must be a lowercase canonical UUIDv7")
    return value


def find_event_ids(text: str) -> list[str]:
    """Every canonical UUIDv7 in ``text``."""
    return _EVENT_ID_FIND_RE.findall(text)


def new_event_id(unix_ms: int | None = None) -> str:
    """A new UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then 74 random bits.

    Python 3.11 has no ``uuid.uuid7`` (it arrives in 3.14), so it is built here.
    """
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    if not 0 <= ms < 1 << 48:
        raise ValueError("timestamp out of range for UUIDv7")
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def event_id_time(value: str) -> dt.datetime:
    """The creation time embedded in a UUIDv7 event ID (UTC, millisecond precision)."""
    validate_event_id(value)
    ms = uuid.UUID(value).int >> 80
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


# ---------------------------------------------------------------------------------------------------- resident ID

# GB 11643-1999: 6-digit address code, 8-digit date of birth, 3-digit sequence, ISO 7064 MOD 11-2 check char.
RESIDENT_ID_PATTERN: Final = r"^[1-9][0-9]{5}(18|19|20)[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]$"
_RESIDENT_ID_RE: Final = re.compile(RESIDENT_ID_PATTERN[1:-1])
_RESIDENT_ID_FIND_RE: Final = re.compile(r"(?<![0-9A-Za-z])" + RESIDENT_ID_PATTERN[1:-1] + r"(?![0-9A-Za-z])")
_ID_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CHARS: Final = "10X98765432"


_ID_ZERO_OFFSET: Final = ord("0") * sum(_ID_WEIGHTS)


def resident_id_check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of the first 17 digits of a resident ID number."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("need the first 17 digits")
    # the weighted sum over the ASCII codes in C (map/mul), less the weighted code of "0" at every position
    total = sum(map(operator.mul, first17.encode(), _ID_WEIGHTS)) - _ID_ZERO_OFFSET
    return _ID_CHECK_CHARS[total % 11]


def _resident_id_problem(value: str) -> str | None:
    if not _RESIDENT_ID_RE.fullmatch(value):
        return "id_number must be 18 characters: 17 digits and a check digit or X"
    try:
        born = dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return "id_number date of birth is not a real date"
    if born > dt.datetime.now(dt.UTC).date():
        return "id_number date of birth is in the future"
    if resident_id_check_char(value[:17]) != value[17].upper():
        return "id_number check character does not match"
    return None


def is_valid_resident_id(value: str) -> bool:
    """Whether ``value`` is a valid resident ID number (any case of the check X)."""
    return _resident_id_problem(value) is None


def validate_resident_id(value: str) -> str:
    """A resident ID number (GB 11643), normalised to an upper-case check character."""
    problem = _resident_id_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value.upper()


def find_resident_ids(text: str) -> list[str]:
    """Every valid resident ID number in ``text``, as written."""
    return [m.group(0) for m in _RESIDENT_ID_FIND_RE.finditer(text) if is_valid_resident_id(m.group(0))]


# ---------------------------------------------------------------------------------------------------- mobile

MOBILE_PATTERN: Final = r"^(\+?86)?1[3-9][0-9]{9}$"
_MOBILE_RE: Final = re.compile(MOBILE_PATTERN[1:-1])
_MOBILE_FIND_RE: Final = re.compile(r"(?<![0-9])(?:\+?86[- ]?)?(1[3-9][0-9]{9})(?![0-9])")


def validate_mobile(value: str) -> str:
    """A mainland mobile number (11 digits starting 13-19, optional +86), normalised to its 11 digits."""
    if not _MOBILE_RE.fullmatch(value):
        raise ValueError("phone must be a mainland mobile number: 11 digits starting 13 to 19")
    return value[-11:]


def find_mobiles(text: str) -> list[str]:
    """Every mainland mobile number in ``text``, normalised to 11 digits."""
    return [m.group(1) for m in _MOBILE_FIND_RE.finditer(text)]


# ---------------------------------------------------------------------------------------------------- plates

PROVINCES: Final = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
# GA 36-2018. Letters I and O are not used in serials; the issuing-authority letter skips I.
_AUTH = "A-HJ-Z"
_SER = "A-HJ-NP-Z0-9"
_NEV = "ABCDEFGHJK"  # new-energy class letters (D/A/B/C/E pure electric, F/G/H/J/K other)
PLATE_PATTERN: Final = (
    rf"^[{PROVINCES}][{_AUTH}]"
    rf"(?:[{_SER}]{{4}}[{_SER}挂学警港澳]"  # ordinary, 7 characters
    rf"|[{_NEV}][{_SER}][0-9]{{4}}"  # small new-energy, 8 characters
    rf"|[0-9]{{5}}[{_NEV}])$"  # large new-energy, 8 characters
)
_PLATE_RE: Final = re.compile(PLATE_PATTERN[1:-1])
_PLATE_FIND_RE: Final = re.compile(
    rf"(?<![{_SER}])"
    + rf"[{PROVINCES}][{_AUTH}](?:[{_NEV}][{_SER}][0-9]{{4}}|[0-9]{{5}}[{_NEV}]|[{_SER}]{{4}}[{_SER}挂学警港澳])"
    + rf"(?![{_SER}])"
)


def validate_plate(value: str) -> str:
    """A mainland plate: ordinary (7 characters) or new-energy (8 characters), upper case, no separators."""
    if not _PLATE_RE.fullmatch(value):
        raise ValueError("plate must be a mainland plate: province, letter and 5 (or 6 for new energy) characters")
    return value


def find_plates(text: str) -> list[str]:
    """Every mainland plate in ``text`` (the 8-character form wins where both would match)."""
    return _PLATE_FIND_RE.findall(text)


def plate_province(value: str) -> str:
    """The province character of a plate (``京``): what ``generalize`` keeps of it."""
    validate_plate(value)
    return value[0]
