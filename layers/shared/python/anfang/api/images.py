"""Image checks of the ingest API: each image of an event checked safely before it is stored.

Checking needs no full decode: the bytes are decoded from base64 under the size limit and matched against
their declared digest and content type (``anfang.contracts.decode_image_data``), then Pillow, restricted to
JPEG and PNG, reads only the header for the dimensions, which must stay under the pixel cap (a
decompression bomb claims huge dimensions in a tiny file). A cheap structural check catches truncated
files (a JPEG must end with its EOI marker, a PNG's chunks must be complete with valid CRCs).

Checked images are stored by :class:`anfang.aws.raw_images.RawImageStore`. No AWS calls here.

>>> checked = check_image(event.images[0])
>>> checked.width, checked.height
(316, 390)
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Final

from PIL import Image, UnidentifiedImageError

from anfang.contracts.events import EventImage
from anfang.contracts.limits import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE_PIXELS
from anfang.contracts.media import decode_image_data
from anfang.contracts.problems import ErrorCode, ImageError

__all__ = ["CheckedImage", "check_image", "image_dimensions"]

_PIL_FORMATS: Final = {"image/jpeg": "JPEG", "image/png": "PNG"}
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
