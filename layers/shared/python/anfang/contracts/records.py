"""Destination records (docs/records.md) and the internal queue message between the API and the pipeline.

A destination record is one destination's view of an event, built by its redaction policy. This module
describes the envelope every destination shares; the exact per-destination shape is published as
``schemas/records/v1/<destination>.schema.json`` once the policies exist.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, Field, StringConstraints, field_validator

from .events import Box, EventBase, WireModel
from .media import ImageContentType
from .release import ReleaseRef
from .types import (
    DeviceId,
    Direction,
    EventId,
    EventType,
    HealthCodeStatus,
    ImageRole,
    Label,
    Sha256Hex,
    SiteType,
    TownCode,
)

RECORD_SCHEMA: Final = "anfang.record.v1"
QUEUED_SCHEMA: Final = "anfang.queued.v1"

Quality = Literal["ok", "blurry", "dark", "overexposed", "no_face", "error"]
#: Key of a derived image in the image bucket, addressed by the SHA-256 of its bytes (see anfang.pipeline.thumbnails).
DerivedKey = Annotated[
    str, StringConstraints(pattern=r"^derived/(thumbnail|thumbnail_faces_blurred)/[0-9a-f]{64}\.jpg$")
]
Base64 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]*={0,2}$")]
PolicyRef = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*@[0-9]+$")]


class ImageMeasures(WireModel):
    """What the analyse function measured on one image, without its hash: what goes with a face-blurred image.

    No identity, no demographics: boxes only. Boxes and sizes are in the upright picture (EXIF orientation
    applied) at full resolution.
    """

    quality: Quality
    sharpness: float | None = Field(default=None, description="variance of the Laplacian")
    brightness: float | None = Field(default=None, ge=0, le=255, description="mean luma")
    contrast: float | None = Field(default=None, ge=0, description="standard deviation of luma")
    width: int | None = Field(default=None, gt=0, description="width of the upright image analysed, in pixels")
    height: int | None = Field(default=None, gt=0, description="height of the upright image analysed, in pixels")
    faces: list[Box] = Field(
        default_factory=list, description="face boxes in the pixels of the upright image (width x height)"
    )
    error: Label | None = Field(default=None, description="why analysis failed (quality is then error)")


class ImageAnalysis(ImageMeasures):
    """What the analyse function measured on one image, with the perceptual hash of the image as sent.

    The hash is of the unblurred picture: a record carries it only with an image it releases unblurred
    (``original``, ``thumbnail``), never with a face-blurred one (:class:`BlurredRecordImage`).
    """

    phash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")] | None = Field(
        default=None, description="64-bit perceptual hash of the unblurred image, hex"
    )


class Envelope(WireModel):
    """A field encrypted for one destination: AES-256-GCM under a KMS data key.

    One data key serves a whole batch of one destination, so the KMS encryption context of the data key is
    ``{"destination"}`` and the per-field context ``{"destination", "event_id", "field"}`` is bound as the
    AES-GCM associated data (canonical JSON, sorted keys): an envelope cannot be moved to another event,
    field or destination and still decrypt.
    """

    enc: Literal["A256GCM"] = "A256GCM"
    kid: str = Field(min_length=1, max_length=2048, description="KMS key id or ARN that wraps the data key")
    edk: Base64 = Field(description="the encrypted data key (KMS CiphertextBlob)")
    iv: Base64 = Field(description="96-bit nonce")
    ct: Base64 = Field(description="ciphertext with the 128-bit tag appended")
    field: Label = Field(description="dotted path of the field, part of the encryption context")


#: A redacted field: kept or transformed scalar, an encrypted envelope, or a nested object of those.
RedactedValue = str | int | float | bool | Envelope | None
RedactedBody = dict[str, RedactedValue | dict[str, RedactedValue]]


class SiteView(WireModel):
    site_id: Label | None = None
    site_type: SiteType | None = None
    name: Label | None = None


class HealthCodeView(WireModel):
    status: HealthCodeStatus
    as_of: AwareDatetime
    stale: bool


class _RecordImageBase(WireModel):
    role: ImageRole
    ref: str = Field(min_length=1, max_length=1024, description="object reference (claim check), never bytes")
    sha256: Sha256Hex = Field(description="SHA-256 of the object the reference points at")
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)


class RecordImage(_RecordImageBase):
    """An image of a destination that may see faces: the analysis may carry the unblurred image's hash."""

    analysis: ImageAnalysis | None = None


class BlurredRecordImage(_RecordImageBase):
    """An image of a destination that may not see faces (face-blurred thumbnails only): no hash of anything
    unblurred, so ``analysis`` has no ``phash`` (a record with one does not validate)."""

    analysis: ImageMeasures | None = None


class Redaction(WireModel):
    policy: PolicyRef = Field(description="<policy name>@<version>")


class DestinationRecord(WireModel):
    """One destination's view of one event (``schema`` = ``anfang.record.v1``)."""

    schema_id: Literal["anfang.record.v1"] = Field(default=RECORD_SCHEMA, alias="schema")
    event_id: EventId
    event_type: EventType
    town: TownCode
    device_id: str = Field(min_length=1, max_length=64, description="the device id, or its pseudonym")
    site: SiteView
    captured_at: AwareDatetime
    received_at: AwareDatetime
    direction: Direction | None = Field(default=None, description="in / out / unknown, when the policy keeps it")
    health_code: HealthCodeView | None = None
    face: RedactedBody | None = None
    vehicle: RedactedBody | None = None
    access: RedactedBody | None = None
    person: RedactedBody | None = None
    visitor: RedactedBody | None = None
    alarm: RedactedBody | None = None
    status: RedactedBody | None = None
    images: list[RecordImage] = Field(default_factory=list)
    redaction: Redaction
    release: ReleaseRef | None = Field(
        default=None, description="where the release log holds this record (docs/records.md, 'Release log')"
    )

    model_config = {**WireModel.model_config, "populate_by_name": True}


# ---------------------------------------------------------------------------------------------------- internal


class StoredImage(WireModel):
    """An accepted image after the API stored it: a reference into the raw-image bucket."""

    role: ImageRole
    content_type: ImageContentType
    sha256: Sha256Hex
    size_bytes: int = Field(gt=0)
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    ref: str = Field(min_length=1, max_length=1024, description="key in the raw-image bucket")
    version_id: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = Field(
        default=None, description="the object version the API wrote (the raw-image bucket is versioned)"
    )
    analysis: ImageAnalysis | None = None
    derived: dict[Literal["thumbnail", "thumbnail_faces_blurred"], DerivedKey] = Field(
        default_factory=dict,
        description="keys of derived images in the image bucket, each under its own kind's prefix",
    )

    @field_validator("derived")
    @classmethod
    def _kind_matches_key(cls, derived: dict[str, str]) -> dict[str, str]:
        # A blurred thumbnail's entry must point at a blurred thumbnail: a swapped entry would send faces out.
        for kind, key in derived.items():
            if not key.startswith(f"derived/{kind}/"):
                raise ValueError(f"derived {kind} points at another kind of image")
        return derived


class QueuedEvent(WireModel):
    """The message on the analyse and process queues: the validated event without image bytes."""

    schema_id: Literal["anfang.queued.v1"] = Field(default=QUEUED_SCHEMA, alias="schema")
    received_at: AwareDatetime
    key_id: Label
    event_id: EventId
    device_id: DeviceId
    event_type: EventType
    event: dict[str, Any] = Field(description="the validated event as JSON, with images removed")
    images: list[StoredImage] = Field(default_factory=list)

    model_config = {**WireModel.model_config, "populate_by_name": True}

    @classmethod
    def of(cls, event: EventBase, *, received_at: AwareDatetime, key_id: str, images: list[StoredImage]) -> QueuedEvent:
        """The queue message of a validated event whose images were stored as ``images``."""
        body = event.model_dump(mode="json", exclude={"images"}, exclude_none=True)
        return cls(
            received_at=received_at,
            key_id=key_id,
            event_id=event.event_id,
            device_id=event.device_id,
            event_type=body["event_type"],
            event=body,
            images=images,
        )
