"""The wire contracts of anfang: models, identifiers, limits, errors and the request-signing profile.

Shared by the cloud functions and the edge agent; imports nothing from AWS.

>>> from anfang.contracts import EventBatch, Signer, validate_event
>>> event = validate_event({"event_type": "alarm", "event_id": new_event_id(), ...})

The signing profile and the key helpers need ``cryptography``; they are imported on first use, so a
function that only needs the models (the analyse function, whose OpenCV layer leaves no room for
``cryptography`` within Lambda's 250 MB) can import ``anfang.contracts`` without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .events import (
    DEFAULT_IMAGE_ROLES,
    EVENT_ADAPTER,
    EVENT_MODELS,
    PERSON_PATHS,
    Access,
    AccessEvent,
    Alarm,
    AlarmEvent,
    BatchResponse,
    Box,
    DeviceStatus,
    DeviceStatusEvent,
    Event,
    EventBase,
    EventBatch,
    EventError,
    EventImage,
    EventResult,
    EventStatus,
    FaceCaptureEvent,
    FaceInfo,
    Person,
    PlateCaptureEvent,
    Vehicle,
    Visit,
    VisitorEvent,
    WireModel,
    event_error,
    rejected,
    validate_event,
)
from .identifiers import (
    DeviceIdParts,
    event_id_time,
    find_device_ids,
    find_event_ids,
    find_mobiles,
    find_plates,
    find_resident_ids,
    is_valid_resident_id,
    new_event_id,
    parse_device_id,
    plate_province,
    resident_id_check_char,
    validate_device_id,
    validate_event_id,
    validate_mobile,
    validate_plate,
    validate_resident_id,
    validate_town_code,
)
from .limits import (
    MAX_BODY_BYTES,
    MAX_EVENTS_PER_BATCH,
    MAX_HEALTH_CODE_DELTAS,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE_PIXELS,
    MAX_IMAGES_PER_EVENT,
    MAX_JSON_DEPTH,
    NONCE_TTL_SECS,
    SIGNATURE_MAX_AGE_SECS,
    SIGNATURE_MAX_SKEW_SECS,
)
from .media import decode_image_data, encode_image_data, sniff_content_type
from .problems import PROBLEM_CONTENT_TYPE, ContractError, ErrorCode, ImageError, Problem, SignatureError
from .records import (
    QUEUED_SCHEMA,
    RECORD_SCHEMA,
    DestinationRecord,
    Envelope,
    HealthCodeView,
    ImageAnalysis,
    QueuedEvent,
    RecordImage,
    Redaction,
    SiteView,
    StoredImage,
)
from .types import EVENT_TYPES, IMAGE_ROLES, SITE_TYPES, EventType, HealthCodeStatus, ImageRole, Role, SiteType

if TYPE_CHECKING:
    from .keys import (
        generate_private_key,
        key_id_for,
        load_private_key,
        load_public_key,
        private_key_to_pem,
        public_key_to_pem,
        public_key_to_text,
    )
    from .signing import (
        COVERED_COMPONENTS,
        SIGNATURE_LABEL,
        KeyInfo,
        KeyResolver,
        MemoryNonceStore,
        NonceStore,
        Signer,
        VerifiedRequest,
        Verifier,
        authorize,
        content_digest,
    )

_LAZY = {
    **dict.fromkeys(
        (
            "generate_private_key",
            "key_id_for",
            "load_private_key",
            "load_public_key",
            "private_key_to_pem",
            "public_key_to_pem",
            "public_key_to_text",
        ),
        "keys",
    ),
    **dict.fromkeys(
        (
            "COVERED_COMPONENTS",
            "SIGNATURE_LABEL",
            "KeyInfo",
            "KeyResolver",
            "MemoryNonceStore",
            "NonceStore",
            "Signer",
            "VerifiedRequest",
            "Verifier",
            "authorize",
            "content_digest",
        ),
        "signing",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "COVERED_COMPONENTS",
    "EVENT_ADAPTER",
    "DEFAULT_IMAGE_ROLES",
    "EVENT_MODELS",
    "PERSON_PATHS",
    "EVENT_TYPES",
    "IMAGE_ROLES",
    "MAX_BODY_BYTES",
    "MAX_EVENTS_PER_BATCH",
    "MAX_HEALTH_CODE_DELTAS",
    "MAX_IMAGES_PER_EVENT",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE_PIXELS",
    "MAX_JSON_DEPTH",
    "NONCE_TTL_SECS",
    "PROBLEM_CONTENT_TYPE",
    "QUEUED_SCHEMA",
    "RECORD_SCHEMA",
    "SIGNATURE_LABEL",
    "SIGNATURE_MAX_AGE_SECS",
    "SIGNATURE_MAX_SKEW_SECS",
    "SITE_TYPES",
    "Access",
    "AccessEvent",
    "Alarm",
    "AlarmEvent",
    "BatchResponse",
    "Box",
    "ContractError",
    "DestinationRecord",
    "DeviceIdParts",
    "DeviceStatus",
    "DeviceStatusEvent",
    "Envelope",
    "ErrorCode",
    "Event",
    "EventBase",
    "EventBatch",
    "EventError",
    "EventImage",
    "EventResult",
    "EventStatus",
    "EventType",
    "FaceCaptureEvent",
    "FaceInfo",
    "HealthCodeStatus",
    "HealthCodeView",
    "ImageAnalysis",
    "ImageError",
    "ImageRole",
    "KeyInfo",
    "KeyResolver",
    "MemoryNonceStore",
    "NonceStore",
    "Person",
    "PlateCaptureEvent",
    "Problem",
    "QueuedEvent",
    "RecordImage",
    "Redaction",
    "Role",
    "SignatureError",
    "Signer",
    "SiteType",
    "SiteView",
    "StoredImage",
    "Vehicle",
    "VerifiedRequest",
    "Verifier",
    "Visit",
    "VisitorEvent",
    "WireModel",
    "authorize",
    "content_digest",
    "decode_image_data",
    "encode_image_data",
    "event_error",
    "event_id_time",
    "find_device_ids",
    "find_event_ids",
    "find_mobiles",
    "find_plates",
    "find_resident_ids",
    "generate_private_key",
    "is_valid_resident_id",
    "key_id_for",
    "load_private_key",
    "load_public_key",
    "new_event_id",
    "parse_device_id",
    "plate_province",
    "private_key_to_pem",
    "public_key_to_pem",
    "public_key_to_text",
    "rejected",
    "resident_id_check_char",
    "sniff_content_type",
    "validate_device_id",
    "validate_event",
    "validate_event_id",
    "validate_mobile",
    "validate_plate",
    "validate_resident_id",
    "validate_town_code",
]
