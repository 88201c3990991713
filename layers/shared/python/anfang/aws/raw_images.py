"""The raw-image bucket (claim check): an event's checked images stored once, referenced by key.

Objects are encrypted with SSE-KMS under ``<town>/<yyyy>/<mm>/<dd>/<device_id>/<event_id>/<role>.<ext>``, the
date being the capture date in UTC. The device is part of the key because an event id is unique per device
only: a device that sends another device's event id writes under its own prefix and can never replace the
other device's image. A retry of the same device's event writes the same key; the bucket is versioned, and
the reference carries the version the API wrote (``StoredImage.version_id``), so the analyse stage reads
exactly the bytes that were checked. AWS calls: one ``PutObject`` per image.

>>> store = RawImageStore(s3_client, "anfang-330106-raw-images", town_code="330106")
>>> stored = store.put(event, image, raw, width=316, height=390)   # StoredImage(ref="330106/2026/11/29/...")
"""

from __future__ import annotations

from datetime import UTC
from typing import Any, Final

from anfang.contracts.events import EventBase, EventImage
from anfang.contracts.records import StoredImage

__all__ = ["RawImageStore", "image_key"]

_EXTENSIONS: Final = {"image/jpeg": "jpg", "image/png": "png"}


def image_key(town_code: str, event: EventBase, image: EventImage) -> str:
    """The object key of an event's image: ``<town>/<yyyy>/<mm>/<dd>/<device_id>/<event_id>/<role>.<ext>``."""
    day = event.captured_at.astimezone(UTC)
    return (
        f"{town_code}/{day:%Y/%m/%d}/{event.device_id}/{event.event_id}/{image.role}.{_EXTENSIONS[image.content_type]}"
    )


class RawImageStore:
    """The raw-image bucket (S3, SSE-KMS); the client is injected."""

    def __init__(self, client: Any, bucket_name: str, *, town_code: str, kms_key_id: str | None = None) -> None:
        self._client = client
        self.bucket_name = bucket_name
        self._town = town_code
        self._kms_key_id = kms_key_id

    def put(self, event: EventBase, image: EventImage, raw: bytes, *, width: int, height: int) -> StoredImage:
        """Store one checked image (its decoded bytes and dimensions) and return its reference; AWS errors propagate."""
        key = image_key(self._town, event, image)
        extra: dict[str, Any] = {"SSEKMSKeyId": self._kms_key_id} if self._kms_key_id else {}
        answer = self._client.put_object(
            Bucket=self.bucket_name,
            Key=key,
            Body=raw,
            ContentType=image.content_type,
            ServerSideEncryption="aws:kms",
            Metadata={"sha256": image.sha256, "device-id": event.device_id, "event-id": event.event_id},
            **extra,
        )
        return StoredImage(
            role=image.role,
            content_type=image.content_type,
            sha256=image.sha256,
            size_bytes=len(raw),
            width=width,
            height=height,
            ref=key,
            version_id=answer.get("VersionId"),
        )
