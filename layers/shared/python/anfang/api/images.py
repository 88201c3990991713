"""Images of events (claim check): check each image safely, store it in the raw-image bucket, keep a reference.

Checking needs no full decode: the bytes are decoded from base64 under the size limit and matched against
their declared digest and content type (``anfang.contracts.decode_image_data``), then Pillow, restricted to
JPEG and PNG, reads only the header for the dimensions, which must stay under the pixel cap (a
decompression bomb claims huge dimensions in a tiny file). A cheap structural check catches truncated
files (a JPEG must end with its EOI marker, a PNG's chunks must be complete with valid CRCs).

Stored objects are encrypted with SSE-KMS under ``<town>/<yyyy>/<mm>/<dd>/<event_id>/<role>.<ext>``, the
date being the capture date in UTC, so a retried event overwrites the same object.

>>> checked = check_image(event.images[0])
>>> store = RawImageStore(s3_client, "anfang-330106-raw-images", town_code="330106")
>>> stored = store.put(event, checked)   # StoredImage(ref="330106/2026/11/29/019a.../face.jpg", ...)
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Final

from PIL import Image, UnidentifiedImageError

from anfang.contracts.events import EventBase, EventImage
from anfang.contracts.limits import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE_PIXELS
from anfang.contracts.media import decode_image_data
from anfang.contracts.problems import ErrorCode, ImageError
from anfang.contracts.records import StoredImage

__all__ = ["CheckedImage", "RawImageStore", "check_image", "image_dimensions", "image_key"]

_PIL_FORMATS: Final = {"image/jpeg": "JPEG", "image/png": "PNG"}
_EXTENSIONS: Final = {"image/jpeg": "jpg", "image/png": "png"}
_JPEG_EOI: Final = b"\xff\xd9"


@dataclass(frozen=True, slots=True)
class CheckedImage:
    """An image that passed every check, with its bytes (kept only until it is stored)."""

    image: EventImage
    raw: bytes
    width: int
    height: int


def image_dimensions(raw: bytes, content_type: str) -> tuple[int, int]:
    """Width and height from the header alone, Pillow restricted to the declared format; ``ImageError``."""
    pil_format = _PIL_FORMATS.get(content_type)
    if pil_format is None:
        raise ImageError("image format is not JPEG or PNG", code=ErrorCode.IMAGE_UNSUPPORTED)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw), formats=[pil_format]) as image:
                width, height = image.size
                if pil_format == "PNG":
                    image.verify()  # walks the chunks and their CRCs; decompresses nothing
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("image claims more pixels than allowed", code=ErrorCode.IMAGE_TOO_LARGE) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise ImageError("image cannot be read (corrupt or truncated)", code=ErrorCode.IMAGE_INVALID) from None
    if width <= 0 or height <= 0:
        raise ImageError("image has no pixels", code=ErrorCode.IMAGE_INVALID)
    if width * height > MAX_IMAGE_PIXELS or max(width, height) > MAX_IMAGE_SIDE_PIXELS:
        raise ImageError("image claims more pixels than allowed", code=ErrorCode.IMAGE_TOO_LARGE)
    if pil_format == "JPEG" and not raw.rstrip(b"\x00").endswith(_JPEG_EOI):
        raise ImageError("JPEG is truncated (no end-of-image marker)", code=ErrorCode.IMAGE_INVALID)
    return width, height


def check_image(image: EventImage) -> CheckedImage:
    """Decode and check one image of an event; raises ``ImageError`` with its stable code."""
    raw = decode_image_data(image.data, sha256=image.sha256, content_type=image.content_type)
    width, height = image_dimensions(raw, image.content_type)
    return CheckedImage(image=image, raw=raw, width=width, height=height)


def image_key(town_code: str, event: EventBase, image: EventImage) -> str:
    """The object key of an event's image: ``<town>/<yyyy>/<mm>/<dd>/<event_id>/<role>.<ext>``."""
    day = event.captured_at.astimezone(UTC)
    return f"{town_code}/{day:%Y/%m/%d}/{event.event_id}/{image.role}.{_EXTENSIONS[image.content_type]}"


class RawImageStore:
    """The raw-image bucket (S3, SSE-KMS); the client is injected."""

    def __init__(self, client: Any, bucket_name: str, *, town_code: str, kms_key_id: str | None = None) -> None:
        self._client = client
        self.bucket_name = bucket_name
        self._town = town_code
        self._kms_key_id = kms_key_id

    def put(self, event: EventBase, checked: CheckedImage) -> StoredImage:
        """Store one checked image and return its reference; AWS errors propagate."""
        key = image_key(self._town, event, checked.image)
        extra: dict[str, Any] = {"SSEKMSKeyId": self._kms_key_id} if self._kms_key_id else {}
        self._client.put_object(
            Bucket=self.bucket_name,
            Key=key,
            Body=checked.raw,
            ContentType=checked.image.content_type,
            ServerSideEncryption="aws:kms",
            Metadata={"sha256": checked.image.sha256, "event-id": event.event_id},
            **extra,
        )
        return StoredImage(
            role=checked.image.role,
            content_type=checked.image.content_type,
            sha256=checked.image.sha256,
            size_bytes=len(checked.raw),
            width=checked.width,
            height=checked.height,
            ref=key,
        )
