"""Derived images without an imaging library: thumbnail sizes and content-addressed keys.

Shared by the analyse stage (which makes the thumbnails) and the redact stage (which references them), so
the process function needs no OpenCV to describe a thumbnail.
"""

from __future__ import annotations

import re
from typing import Final, Literal

__all__ = ["THUMBNAIL_MAX_SIDE_PIXELS", "DerivedKind", "derived_key", "derived_sha256", "thumbnail_size"]

#: Longest side of a thumbnail.
THUMBNAIL_MAX_SIDE_PIXELS: Final = 320
DerivedKind = Literal["thumbnail", "thumbnail_faces_blurred"]
_KEY_RE: Final = re.compile(r"^derived/(thumbnail|thumbnail_faces_blurred)/([0-9a-f]{64})\.jpg$")


def thumbnail_size(width: int, height: int, side: int = THUMBNAIL_MAX_SIDE_PIXELS) -> tuple[int, int]:
    """(width, height) of the thumbnail of a ``width`` x ``height`` image: long side at most ``side``."""
    scale = side / max(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def derived_key(kind: DerivedKind, sha256: str) -> str:
    """Key of a derived image in the image bucket, addressed by the SHA-256 of its bytes."""
    return f"derived/{kind}/{sha256}.jpg"


def derived_sha256(key: str) -> str:
    """The SHA-256 a derived key is addressed by; raises ``ValueError`` for another key."""
    match = _KEY_RE.fullmatch(key)
    if match is None:
        raise ValueError(f"not a derived image key: {key!r}")
    return match.group(2)
