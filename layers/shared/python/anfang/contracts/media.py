"""Image bytes on the wire: format sniffing by magic bytes and strict base64 decoding.

Only what needs no imaging library lives here (it is shared with the edge agent); reading dimensions
safely with Pillow is the cloud's ``anfang.api.images``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Final, Literal

from .limits import MAX_IMAGE_BASE64_CHARS, MAX_IMAGE_BYTES
from .problems import ErrorCode, ImageError

__all__ = ["JPEG", "PNG", "ImageContentType", "decode_image_data", "encode_image_data", "sniff_content_type"]

ImageContentType = Literal["image/jpeg", "image/png"]
JPEG: Final = "image/jpeg"
PNG: Final = "image/png"

# Formats we recognise only to reject them with a precise code.
_OTHER_MAGIC: Final = (
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF little endian
    b"MM\x00*",  # TIFF big endian
    b"BM",  # BMP
    b"RIFF",  # WebP and friends
    b"\x00\x00\x00\x0cjP",  # JPEG 2000
)


def sniff_content_type(raw: bytes) -> ImageContentType:
    """The content type of ``raw`` from its magic bytes: JPEG or PNG, else ``ImageError``."""
    if raw.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if raw.startswith(_OTHER_MAGIC) or raw[4:12] in (b"ftypheic", b"ftypavif"):
        raise ImageError("image format is not JPEG or PNG", code=ErrorCode.IMAGE_UNSUPPORTED)
    raise ImageError("image bytes are not a known image format", code=ErrorCode.IMAGE_INVALID)


def encode_image_data(raw: bytes) -> str:
    """Standard padded base64, as the ``data`` field carries it."""
    return base64.b64encode(raw).decode("ascii")


def decode_image_data(data: str, *, sha256: str | None = None, content_type: str | None = None) -> bytes:
    """Decode an image's ``data`` strictly and check it against its declared digest and content type.

    Raises ``ImageError`` with ``image_too_large``, ``image_invalid``, ``image_digest_mismatch``,
    ``image_unsupported`` or ``image_type_mismatch``.
    """
    if len(data) > MAX_IMAGE_BASE64_CHARS:
        raise ImageError("image is larger than 1 MiB", code=ErrorCode.IMAGE_TOO_LARGE)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError("image data is not valid base64", code=ErrorCode.IMAGE_INVALID) from exc
    if len(raw) > MAX_IMAGE_BYTES:
        raise ImageError("image is larger than 1 MiB", code=ErrorCode.IMAGE_TOO_LARGE)
    if sha256 is not None and not _digest_equal(hashlib.sha256(raw).hexdigest(), sha256):
        raise ImageError("image sha256 does not match its data", code=ErrorCode.IMAGE_DIGEST_MISMATCH)
    sniffed = sniff_content_type(raw)
    if content_type is not None and sniffed != content_type:
        raise ImageError(f"image bytes are {sniffed} but declared {content_type}", code=ErrorCode.IMAGE_TYPE_MISMATCH)
    return raw


def _digest_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.lower().encode())
