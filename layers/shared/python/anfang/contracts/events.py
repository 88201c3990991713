"""Event models v1: what devices send to ``POST /v1/events`` (docs/api.md, "Events").

Every model forbids unknown fields, so a typo can never carry data past redaction. An event carries the
typed body of its own type and no other. Validate one event at a time with :func:`validate_event` so a bad
event never rejects its neighbours; :class:`EventBatch` is the whole-batch view used for the published
schema and by senders.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, ClassVar, Final, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, ValidationError, model_validator

from .limits import MAX_EVENTS_PER_BATCH, MAX_IMAGE_BASE64_CHARS, MAX_IMAGES_PER_EVENT
from .media import ImageContentType, encode_image_data, sniff_content_type
from .problems import ErrorCode
from .types import (
    EVENT_TYPES,
    AccessResult,
    AlarmKind,
    Credential,
    DeviceId,
    DeviceState,
    Direction,
    EventId,
    EventType,
    ImageRole,
    Label,
    Mobile,
    Plate,
    PlateColor,
    ResidentId,
    Severity,
    Sha256Hex,
    Text,
    Timestamp,
)

EVENTS_SCHEMA_VERSION: Final = "v1"


class WireModel(BaseModel):
    """Base of every wire model: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------------- parts


class EventImage(WireModel):
    """An image of an event, inline as base64; the API turns it into a reference (claim check)."""

    role: ImageRole
    content_type: ImageContentType
    data: str = Field(min_length=4, max_length=MAX_IMAGE_BASE64_CHARS, description="standard base64, padded")
    sha256: Sha256Hex = Field(description="lowercase hex SHA-256 of the decoded bytes")

    @classmethod
    def from_bytes(cls, role: ImageRole, raw: bytes) -> EventImage:
        """Build an image from its bytes: content type sniffed, digest computed."""
        return cls(
            role=role,
            content_type=sniff_content_type(raw),
            data=encode_image_data(raw),
            sha256=hashlib.sha256(raw).hexdigest(),
        )


class Box(WireModel):
    """A rectangle in image pixels, origin top left."""

    x: StrictInt = Field(ge=0)
    y: StrictInt = Field(ge=0)
    w: StrictInt = Field(gt=0)
    h: StrictInt = Field(gt=0)


class FaceInfo(WireModel):
    box: Box | None = Field(default=None, description="the face in the scene image")


class Vehicle(WireModel):
    plate: Plate
    plate_color: PlateColor
    vehicle_type: Label | None = None
    vehicle_color: Label | None = None


class Person(WireModel):
    """An identified person; every field is personal data and is redacted per destination."""

    name: Label | None = None
    id_number: ResidentId | None = None
    phone: Mobile | None = None
    resident_ref: Label | None = Field(default=None, description="the site's own reference of the resident")


class Access(WireModel):
    credential: Credential
    result: AccessResult
    door: Label


class Visit(WireModel):
    host_unit: Label
    purpose: Text
    visitor: Person


class Alarm(WireModel):
    kind: AlarmKind
    severity: Severity
    zone: Label


class DeviceStatus(WireModel):
    state: DeviceState
    detail: Text | None = None


# ---------------------------------------------------------------------------------------------------- events


class EventBase(WireModel):
    """Fields common to every event type."""

    event_id: EventId = Field(description="UUIDv7 made on the device at capture time; the idempotency key")
    device_id: DeviceId = Field(description="20-digit GB/T 28181 / GA/T 1400 device code")
    captured_at: Timestamp = Field(description="RFC 3339 with offset")
    direction: Direction = "unknown"
    source_ref: Label | None = Field(
        default=None, description="the source system's own id of the record (e.g. a GA/T 1400 FaceID)"
    )
    images: list[EventImage] = Field(default_factory=list, max_length=MAX_IMAGES_PER_EVENT)
    #: The role of an image that arrives without one (e.g. a camera's FTP upload); None: the type has no images.
    image_role: ClassVar[ImageRole | None] = None

    @model_validator(mode="after")
    def _one_image_per_role(self) -> Self:
        roles = [image.role for image in self.images]
        if len(roles) != len(set(roles)):
            raise ValueError("each image role may appear once per event")
        return self

    def image(self, role: ImageRole) -> EventImage | None:
        """The image with ``role``, if any."""
        return next((image for image in self.images if image.role == role), None)


class FaceCaptureEvent(EventBase):
    event_type: Literal["face_capture"]
    image_role: ClassVar[ImageRole | None] = "face"
    face: FaceInfo | None = None

    @model_validator(mode="after")
    def _needs_face_image(self) -> Self:
        if self.image("face") is None:
            raise ValueError("face_capture needs an image with role face")
        if self.face is not None and self.face.box is not None and self.image("scene") is None:
            raise ValueError("face.box locates the face in the scene image, which is missing")
        return self


class PlateCaptureEvent(EventBase):
    event_type: Literal["plate_capture"]
    image_role: ClassVar[ImageRole | None] = "vehicle"
    vehicle: Vehicle


class AccessEvent(EventBase):
    event_type: Literal["access"]
    image_role: ClassVar[ImageRole | None] = "face"
    access: Access
    person: Person | None = None


class VisitorEvent(EventBase):
    event_type: Literal["visitor"]
    image_role: ClassVar[ImageRole | None] = "person"
    visitor: Visit


class AlarmEvent(EventBase):
    event_type: Literal["alarm"]
    image_role: ClassVar[ImageRole | None] = "scene"
    alarm: Alarm


class DeviceStatusEvent(EventBase):
    event_type: Literal["device_status"]
    status: DeviceStatus
    images: list[EventImage] = Field(default_factory=list, max_length=0)


Event = Annotated[
    FaceCaptureEvent | PlateCaptureEvent | AccessEvent | VisitorEvent | AlarmEvent | DeviceStatusEvent,
    Field(discriminator="event_type"),
]

# ---------------------------------------------------------------------------------------------------- the table
# Everything per event type below is derived from the models in ``Event``: adding a type is a Literal value in
# ``types.EventType``, its model here, its example and its policy rules (docs/checklists.md).


def _event_type_of(model: type[EventBase]) -> EventType:
    value: EventType = get_args(model.model_fields["event_type"].annotation)[0]
    return value


def _person_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> tuple[tuple[str, ...], ...]:
    paths: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        for arg in (field.annotation, *get_args(field.annotation)):
            if arg is Person:
                paths.append((*prefix, name))
            elif isinstance(arg, type) and issubclass(arg, WireModel) and arg is not EventImage:
                paths.extend(_person_paths(arg, (*prefix, name)))
    return tuple(paths)


#: The model of every event type, in the order of ``EVENT_TYPES``.
EVENT_MODELS: Final[dict[EventType, type[EventBase]]] = {
    _event_type_of(model): model for model in get_args(get_args(Event)[0])
}
assert tuple(EVENT_MODELS) == EVENT_TYPES, "types.EventType and the Event union must name the same types"
#: Where an event type carries an identified person (``Person``), as key paths: what enrichment looks up.
PERSON_PATHS: Final[dict[EventType, tuple[tuple[str, ...], ...]]] = {
    event_type: _person_paths(model) for event_type, model in EVENT_MODELS.items()
}
#: The role of an image that arrives without one (a camera's FTP upload), per event type; None: no images.
DEFAULT_IMAGE_ROLES: Final[dict[str, ImageRole | None]] = {
    event_type: model.image_role for event_type, model in EVENT_MODELS.items()
}
EVENT_ADAPTER: Final[TypeAdapter[Event]] = TypeAdapter(Event)


class EventBatch(WireModel):
    """The body of ``POST /v1/events``."""

    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)


# ---------------------------------------------------------------------------------------------------- results

EventStatus = Literal["accepted", "duplicate", "rejected", "retry_later"]


class EventError(WireModel):
    """Why one event was rejected (or must be retried); never echoes payload values."""

    code: ErrorCode
    detail: str
    field: str | None = Field(default=None, description="dotted path of the first offending field")


class EventResult(WireModel):
    event_id: str | None = Field(description="the event's id as sent (null when it had none)")
    status: EventStatus
    error: EventError | None = None


class BatchResponse(WireModel):
    """The 202 body of ``POST /v1/events``: one result per event, in request order, and counts."""

    results: list[EventResult]
    accepted: int = Field(ge=0)
    duplicate: int = Field(ge=0)
    rejected: int = Field(ge=0)
    retry_later: int = Field(default=0, ge=0)

    @classmethod
    def of(cls, results: list[EventResult]) -> BatchResponse:
        """A response with its counts derived from ``results``."""
        counts = {"accepted": 0, "duplicate": 0, "rejected": 0, "retry_later": 0}
        for result in results:
            counts[result.status] += 1
        return cls(results=results, **counts)


# ---------------------------------------------------------------------------------------------------- helpers


def validate_event(obj: Any) -> Event:
    """Validate one decoded JSON event; raises ``pydantic.ValidationError``."""
    return EVENT_ADAPTER.validate_python(obj)


def event_error(exc: ValidationError) -> EventError:
    """The wire error of a failed event validation: the first problem, its field path, no input values."""
    first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):  # pydantic's message quotes the input
        return EventError(
            code=ErrorCode.PAYLOAD_INVALID,
            detail="event_type must be one of " + ", ".join(EVENT_MODELS),
            field="event_type",
        )
    loc = first["loc"]
    if loc and loc[0] in EVENT_MODELS:  # the discriminated union puts the tag first
        loc = loc[1:]
    path = ".".join(str(part) for part in loc)
    message = first["msg"].removeprefix("Value error, ")
    return EventError(
        code=ErrorCode.PAYLOAD_INVALID, detail=f"{path}: {message}" if path else message, field=path or None
    )


def rejected(event_id: Any, error: EventError) -> EventResult:
    """The result of a rejected event; the id is echoed only when it is a plausible string."""
    echoed = event_id if isinstance(event_id, str) and 0 < len(event_id) <= 64 else None
    return EventResult(event_id=echoed, status="rejected", error=error)
