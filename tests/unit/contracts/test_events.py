"""Event models v1: every type validates its own body and nothing else; errors are typed and leak nothing."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from anfang.contracts import (
    EVENT_MODELS,
    EVENT_TYPES,
    MAX_EVENTS_PER_BATCH,
    BatchResponse,
    ErrorCode,
    EventBatch,
    EventImage,
    EventResult,
    FaceCaptureEvent,
    ImageError,
    QueuedEvent,
    decode_image_data,
    event_error,
    rejected,
    validate_event,
)
from anfang.contracts.examples import example_events

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "images"


def _event(event_type: str, /, **changes: Any) -> dict[str, Any]:
    event = example_events()[event_type]
    event.update(changes)
    return event


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_example_validates_as_its_own_type(event_type: str) -> None:
    event = validate_event(example_events()[event_type])
    assert type(event) is EVENT_MODELS[event_type]
    # a round trip through JSON gives the same event
    assert validate_event(event.model_dump(mode="json")) == event


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_unknown_fields_are_rejected_at_every_level(event_type: str) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        validate_event(_event(event_type, nickname="x"))


def test_a_typed_body_of_another_type_is_rejected() -> None:
    # GIVEN an alarm that also carries an access body (a way to smuggle data past redaction)
    event = _event("alarm", access={"credential": "card", "result": "granted", "door": "gate"})
    with pytest.raises(ValidationError) as info:
        validate_event(event)
    assert event_error(info.value).field == "access"


def test_nested_unknown_field_is_rejected() -> None:
    event = _event("access")
    event["person"]["nickname"] = "小王"
    with pytest.raises(ValidationError) as info:
        validate_event(event)
    assert event_error(info.value).field == "person.nickname"


@pytest.mark.parametrize(
    ("event_type", "change", "field"),
    [
        ("alarm", {"event_type": "fire"}, "event_type"),
        ("alarm", {"event_id": "019ace05-5c00-4000-8000-000000000005"}, "event_id"),
        ("alarm", {"device_id": "3301060000132000001"}, "device_id"),
        ("alarm", {"captured_at": "2026-11-29T08:00:00"}, "captured_at"),  # no offset
        ("alarm", {"captured_at": 1795910794}, "captured_at"),  # Unix time is not RFC 3339
        ("alarm", {"captured_at": "2026-11-29 08:00:00+08:00"}, "captured_at"),
        ("alarm", {"direction": "sideways"}, "direction"),
        ("alarm", {"alarm": {"kind": "fire", "severity": "info", "zone": "a"}}, "alarm.kind"),
        ("alarm", {"alarm": {"kind": "other", "severity": "info", "zone": "a\x1b[31m"}}, "alarm.zone"),
        ("access", {"access": {"credential": "card", "result": "maybe", "door": "a"}}, "access.result"),
        ("plate_capture", {"vehicle": {"plate": "京A1234", "plate_color": "blue"}}, "vehicle.plate"),
        ("plate_capture", {"vehicle": {"plate": "京A12345", "plate_color": "pink"}}, "vehicle.plate_color"),
        ("device_status", {"status": {"state": "sleeping"}}, "status.state"),
    ],
)
def test_field_errors_name_the_field(event_type: str, change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_event(_event(event_type, **change))
    error = event_error(info.value)
    assert error.code is ErrorCode.PAYLOAD_INVALID
    assert error.field == field


def test_person_identifiers_are_checked_and_errors_do_not_echo_them() -> None:
    event = _event("access")
    event["person"]["id_number"] = "110105194912310021"  # bad check character
    with pytest.raises(ValidationError) as info:
        validate_event(event)
    error = event_error(info.value)
    assert error.field == "person.id_number"
    assert "check character" in error.detail
    assert "110105194912310021" not in error.model_dump_json()


def test_person_identifiers_are_normalised() -> None:
    event = _event("access")
    event["person"]["id_number"] = "11010519491231002x"
    event["person"]["phone"] = "+8613812345678"
    person = validate_event(event).person  # type: ignore[union-attr]
    assert person is not None
    assert person.id_number == "11010519491231002X"
    assert person.phone == "13812345678"


def test_face_capture_needs_a_face_image() -> None:
    event = _event("face_capture")
    event["images"] = [image for image in event["images"] if image["role"] != "face"]
    event.pop("face")
    with pytest.raises(ValidationError, match="role face"):
        validate_event(event)


def test_face_box_needs_the_scene_image() -> None:
    event = _event("face_capture")
    event["images"] = [image for image in event["images"] if image["role"] == "face"]
    with pytest.raises(ValidationError, match="scene image"):
        validate_event(event)


def test_image_roles_are_unique_per_event() -> None:
    event = _event("face_capture")
    event["images"].append(copy.deepcopy(event["images"][0]))
    with pytest.raises(ValidationError, match="once per event"):
        validate_event(event)


def test_device_status_carries_no_images() -> None:
    event = _event("device_status", images=example_events()["alarm"]["images"])
    with pytest.raises(ValidationError) as info:
        validate_event(event)
    assert event_error(info.value).field == "images"


def test_batch_holds_1_to_500_events() -> None:
    alarm = example_events()["alarm"]
    assert len(EventBatch.model_validate({"events": [alarm] * MAX_EVENTS_PER_BATCH}).events) == 500
    with pytest.raises(ValidationError, match="at most 500"):
        EventBatch.model_validate({"events": [alarm] * (MAX_EVENTS_PER_BATCH + 1)})
    with pytest.raises(ValidationError, match="at least 1"):
        EventBatch.model_validate({"events": []})


def test_batch_response_counts_its_results() -> None:
    results = [
        EventResult(event_id="a", status="accepted"),
        EventResult(event_id="b", status="accepted"),
        EventResult(event_id="c", status="duplicate"),
        rejected(12, event_error(_validation_error())),
    ]
    response = BatchResponse.of(results)
    assert (response.accepted, response.duplicate, response.rejected, response.retry_later) == (2, 1, 1, 0)
    assert response.results[3].event_id is None  # a non-string id is not echoed


def _validation_error() -> ValidationError:
    try:
        validate_event({"event_type": "alarm"})
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a validation error")


# ---------------------------------------------------------------------------------------------------- images


def test_image_from_real_jpeg_bytes_round_trips() -> None:
    raw = (FIXTURES / "face_crop.jpg").read_bytes()
    image = EventImage.from_bytes("face", raw)
    assert image.content_type == "image/jpeg"
    assert image.sha256 == hashlib.sha256(raw).hexdigest()
    assert decode_image_data(image.data, sha256=image.sha256, content_type=image.content_type) == raw


@pytest.mark.parametrize(
    ("data", "declared", "code"),
    [
        ("not base64!", "image/jpeg", ErrorCode.IMAGE_INVALID),
        ("R0lGODlhAQABAAAAACw=", "image/jpeg", ErrorCode.IMAGE_UNSUPPORTED),  # GIF
        ("SUkqAAgAAAA=", "image/jpeg", ErrorCode.IMAGE_UNSUPPORTED),  # TIFF
        ("iVBORw0KGgoAAAANSUhEUgAAAAE=", "image/jpeg", ErrorCode.IMAGE_TYPE_MISMATCH),  # PNG declared as JPEG
        ("aGVsbG8gd29ybGQ=", "image/jpeg", ErrorCode.IMAGE_INVALID),  # text
        ("A" * 1_500_000, "image/jpeg", ErrorCode.IMAGE_TOO_LARGE),
    ],
)
def test_image_data_errors_are_typed(data: str, declared: str, code: ErrorCode) -> None:
    with pytest.raises(ImageError) as info:
        decode_image_data(data, content_type=declared)
    assert info.value.code is code


def test_image_digest_mismatch_is_typed() -> None:
    image = EventImage.from_bytes("face", (FIXTURES / "face_crop.jpg").read_bytes())
    with pytest.raises(ImageError) as info:
        decode_image_data(image.data, sha256="0" * 64)
    assert info.value.code is ErrorCode.IMAGE_DIGEST_MISMATCH
    assert info.value.to_problem().status == 422


# ---------------------------------------------------------------------------------------------------- queue message


def test_queued_event_carries_references_not_bytes() -> None:
    event = validate_event(example_events()["face_capture"])
    assert isinstance(event, FaceCaptureEvent)
    queued = QueuedEvent.of(event, received_at=event.captured_at, key_id="k1", images=[])
    wire = queued.model_dump_json(by_alias=True)
    assert '"schema":"anfang.queued.v1"' in wire
    assert event.images[0].data not in wire
    assert "images" not in queued.event


def test_a_stored_image_names_each_derived_image_under_its_own_kind() -> None:
    from anfang.contracts import StoredImage

    digest, other = "ab" * 32, "cd" * 32
    base = {
        "role": "scene",
        "content_type": "image/jpeg",
        "sha256": digest,
        "size_bytes": 10,
        "width": 1920,
        "height": 1080,
        "ref": "raw/x.jpg",
    }
    good = {
        "thumbnail": f"derived/thumbnail/{digest}.jpg",
        "thumbnail_faces_blurred": f"derived/thumbnail_faces_blurred/{other}.jpg",
    }
    assert StoredImage.model_validate({**base, "derived": good}).derived == good
    for derived in (
        # swapped: the blurred entry points at the plain thumbnail (it would send faces to the gov cloud)
        {"thumbnail_faces_blurred": f"derived/thumbnail/{digest}.jpg"},
        {"thumbnail": f"derived/thumbnail_faces_blurred/{digest}.jpg"},
        {"thumbnail": f"raw/{digest}.jpg"},  # not a derived image
        {"thumbnail": f"derived/thumbnail/{digest[:-1]}.jpg"},  # not a SHA-256
    ):
        with pytest.raises(ValidationError):
            StoredImage.model_validate({**base, "derived": derived})
