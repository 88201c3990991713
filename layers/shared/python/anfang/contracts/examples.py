"""One valid example per event type: published in ``schemas/examples/`` and used by tests and docs."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Any, Final

from .identifiers import resident_id_check_char
from .types import EVENT_TYPES

# A 16x16 JPEG and PNG, small enough for a schema example; real images live in the test fixtures.
_JPEG: Final = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1RV19iZ2hnPk1xeXBk"
    "eFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2P/wAARCAAQABAD"
    "ASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKB"
    "kaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZ"
    "mqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQF"
    "BgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5"
    "OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX"
    "2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwCnRRRWJ0H/2Q=="
)
_PNG: Final = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAGUlEQVR4nGOUs4liIAUwkaR6VMOohiGlAQBZygDUo34dVwAAAABJRU5ErkJggg=="
)

EXAMPLE_DEVICE_ID: Final = "33010600001320000001"  # Hangzhou Xihu district centre, camera 000001


def _image(role: str, raw: bytes, content_type: str) -> dict[str, str]:
    return {
        "role": role,
        "content_type": content_type,
        "data": base64.b64encode(raw).decode("ascii"),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }


def _common(n: int) -> dict[str, Any]:
    return {
        "event_id": f"019ace{n:02x}-5c00-7000-8000-0000000000{n:02x}",
        "device_id": EXAMPLE_DEVICE_ID,
        "captured_at": f"2026-11-29T08:{n:02d}:00+08:00",
    }


def example_events() -> dict[str, dict[str, Any]]:
    """A valid JSON event of every type, keyed by event type (fresh dicts on every call)."""
    person = {"name": "张三", "id_number": "11010519491231002X", "phone": "13812345678", "resident_ref": "3-2-501"}
    examples: dict[str, dict[str, Any]] = {
        "face_capture": {
            **_common(1),
            "event_type": "face_capture",
            "direction": "in",
            "images": [_image("face", _JPEG, "image/jpeg"), _image("scene", _JPEG, "image/jpeg")],
            "face": {"box": {"x": 2, "y": 3, "w": 8, "h": 10}},
        },
        "plate_capture": {
            **_common(2),
            "event_type": "plate_capture",
            "direction": "out",
            "vehicle": {
                "plate": "浙AD12345",
                "plate_color": "green",
                "vehicle_type": "sedan",
                "vehicle_color": "white",
            },
            "images": [_image("plate", _PNG, "image/png")],
        },
        "access": {
            **_common(3),
            "event_type": "access",
            "direction": "in",
            "access": {"credential": "card", "result": "granted", "door": "north gate"},
            "person": person,
        },
        "visitor": {
            **_common(4),
            "event_type": "visitor",
            "visitor": {"host_unit": "3-2-501", "purpose": "family visit", "visitor": {**person, "name": "李四"}},
        },
        "alarm": {
            **_common(5),
            "event_type": "alarm",
            "alarm": {"kind": "perimeter_intrusion", "severity": "critical", "zone": "east fence"},
            "images": [_image("scene", _JPEG, "image/jpeg")],
        },
        "device_status": {
            **_common(6),
            "event_type": "device_status",
            "status": {"state": "online", "detail": "boot complete"},
        },
    }
    assert tuple(examples) == EVENT_TYPES
    return examples


_SURNAMES: Final = "王李张刘陈杨黄赵吴周"
_GIVEN: Final = ("伟", "芳", "娜", "敏", "静", "强", "磊", "洋", "艳", "勇")


def example_population(size: int = 50, *, division: str = "330106") -> list[dict[str, str]]:
    """The simulated residents: synthetic, checksum-valid ID numbers and mobile numbers, stable for ``size``.

    Deterministic, so a demo's health commission can upload health codes for the same people the simulated
    devices see.
    """
    people = []
    for n in range(size):
        born = dt.date(1950, 1, 1) + dt.timedelta(days=(n * 7919) % 20000)
        first17 = f"{division}{born:%Y%m%d}{n % 1000:03d}"
        people.append(
            {
                "name": _SURNAMES[n % 10] + _GIVEN[(n // 10) % 10],
                "id_number": first17 + resident_id_check_char(first17),
                "phone": f"13{n % 10}{(n * 7_654_321) % 100_000_000:08d}",
                "resident_ref": f"{1 + n % 8}-{1 + n % 5}-{101 + n % 1700}",
            }
        )
    return people
