"""Event builders for edge unit tests."""

from __future__ import annotations

from typing import Any

from anfang.contracts import new_event_id, validate_event
from anfang.contracts.examples import example_events
from anfang_edge.spool import SpoolItem, item_from_event


def event(n: int, event_type: str = "alarm", **fields: Any) -> dict[str, Any]:
    """Example event ``n`` of ``event_type``, captured n seconds after a base time."""
    obj = example_events()[event_type]
    obj["event_id"] = new_event_id(1_764_000_000_000 + n * 1000)
    obj["captured_at"] = f"2026-11-29T08:{n // 60 % 60:02d}:{n % 60:02d}+08:00"
    obj.update(fields)
    return obj


def item(n: int, event_type: str = "alarm", **fields: Any) -> SpoolItem:
    return item_from_event(validate_event(event(n, event_type, **fields)))
