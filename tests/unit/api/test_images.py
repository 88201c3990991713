"""Image checks without AWS: dimensions from the header only, formats pinned, object keys."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from anfang.api.images import image_dimensions
from anfang.aws.raw_images import image_key
from anfang.contracts import ImageError, validate_event
from anfang.contracts.examples import example_events
from tests.api_stack import fixture_image


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, format="PNG")
    return out.getvalue()


def test_dimensions_of_the_real_fixtures() -> None:
    assert image_dimensions(fixture_image("scene_face_1920x1080.jpg"), "image/jpeg") == (1920, 1080)
    assert image_dimensions(_png(33, 7), "image/png") == (33, 7)


def test_the_declared_format_is_the_only_one_tried() -> None:
    with pytest.raises(ImageError) as caught:
        image_dimensions(_png(8, 8), "image/jpeg")
    assert caught.value.code == "image_invalid"
    with pytest.raises(ImageError) as caught:
        image_dimensions(b"GIF89a....", "image/gif")
    assert caught.value.code == "image_unsupported"


def test_object_key_is_town_capture_day_device_event_and_role() -> None:
    event = validate_event(example_events()["alarm"])
    key = image_key("330106", event, event.images[0])
    assert key == f"330106/2026/11/29/{event.device_id}/{event.event_id}/scene.jpg"
    # the same event id from another device is another object (an event id is unique per device only)
    other = event.model_copy(update={"device_id": "33010600001320000002"})
    assert image_key("330106", other, other.images[0]) != key
