"""Derived images without an imaging library: thumbnail sizes and content-addressed keys.

Shared by the analyse stage (which makes the thumbnails) and the redact stage (which references them), so
the process function needs no OpenCV to describe a thumbnail.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["THUMBNAIL_MAX_SIDE_PIXELS", "DerivedKind", "derived_key", "thumbnail_size"]

#: Longest side of a thumbnail.
THUMBNAIL_MAX_SIDE_PIXELS: Final = 320
DerivedKind = Literal["thumbnail", "thumbnail_faces_blurred"]


def thumbnail_size(width: int, height: int, side: int = THUMBNAIL_MAX_SIDE_PIXELS) -> tuple[int, int]:
    """(width, height) of the thumbnail of a ``width`` x ``height`` image: long side at most ``side``."""
    scale = side / max(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def derived_key(kind: DerivedKind, sha256: str) -> str:
    """Key of a derived image in the image bucket, addressed by the SHA-256 of its bytes (the queued message
    checks its shape: ``anfang.contracts.records.DerivedKey``)."""
    return f"derived/{kind}/{sha256}.jpg"
