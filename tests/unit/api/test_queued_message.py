"""The fast queue-message serialiser is byte-for-byte ``QueuedEvent.of(...).model_dump_json``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from anfang.api.ingest import queued_message
from anfang.contracts import QueuedEvent, StoredImage, validate_event
from anfang.contracts.examples import example_events

STORED = StoredImage(
    role="face", content_type="image/jpeg", sha256="a" * 64, size_bytes=10, width=16, height=16, ref="330106/x/face.jpg"
)


@pytest.mark.parametrize("event_type", list(example_events()))
@pytest.mark.parametrize("images", [[], [STORED]])
def test_queued_message_equals_the_contract_model(event_type: str, images: list[StoredImage]) -> None:
    event = validate_event(example_events()[event_type])
    received_at = datetime(2026, 11, 29, 0, 30, 1, 123456, tzinfo=UTC)
    expected = QueuedEvent.of(event, received_at=received_at, key_id='k"ey\\1', images=images).model_dump_json(
        by_alias=True, exclude_none=True
    )
    fast = queued_message(event, received_at=received_at, key_id='k"ey\\1', images=images)
    assert fast == expected
    assert QueuedEvent.model_validate_json(fast).event_id == event.event_id
