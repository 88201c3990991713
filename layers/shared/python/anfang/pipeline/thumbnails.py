"""Derived images without an imaging library: their kinds, sizes and content-addressed keys.

Shared by the analyse stage (which makes the thumbnails) and the redact stage (which references them), so
the process function needs no OpenCV to describe a thumbnail.

Two kinds, each with its own size:

- ``thumbnail``: the picture as it is, long side at most 320 px, for destinations allowed to see faces;
- ``thumbnail_faces_blurred``: every found face blurred, long side at most 80 px. Privacy by resolution
  (DESIGN 5.1): the detector finds faces from ``RELIABLE_MIN_FACE_SHARE`` of the long side with recall
  >= 99% (``anfang.pipeline.faces``, docs/design-notes.md "Face detection"); a face below that size, which
  it may miss, is at most ``UNRECOGNISABLE_FACE_PIXELS`` wide at this side, so the thumbnail that goes where
  no face may go is small enough for a missed face not to be one. ``tests/unit/pipeline/test_faces.py``
  ties the two numbers.

>>> thumbnail_size(1920, 1080, THUMBNAIL_SIDES_PIXELS["thumbnail_faces_blurred"])
(80, 45)
>>> derived_key("thumbnail", "ab" * 32)
'derived/thumbnail/abab...ab.jpg'
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = [
    "BLURRED_THUMBNAIL_MAX_SIDE_PIXELS",
    "DEFAULT_DERIVED_KINDS",
    "DERIVED_KINDS",
    "THUMBNAIL_MAX_SIDE_PIXELS",
    "THUMBNAIL_SIDES_PIXELS",
    "UNRECOGNISABLE_FACE_PIXELS",
    "DerivedKind",
    "derived_key",
    "thumbnail_size",
]

DerivedKind = Literal["thumbnail", "thumbnail_faces_blurred"]
DERIVED_KINDS: Final[tuple[DerivedKind, ...]] = get_args(DerivedKind)
#: The kinds the default policies use (``DERIVED_IMAGES`` of the analyse and process functions): the analyse
#: stage makes and stores only these, and the process function refuses a policy that needs another.
DEFAULT_DERIVED_KINDS: Final[frozenset[DerivedKind]] = frozenset({"thumbnail_faces_blurred"})

#: Longest side of the unblurred thumbnail (only for destinations whose policy allows face images).
THUMBNAIL_MAX_SIDE_PIXELS: Final = 320
#: A face at most this wide is not recognisable (the 12 px rule of DESIGN 5.1).
UNRECOGNISABLE_FACE_PIXELS: Final = 12
#: Longest side of the face-blurred thumbnail: UNRECOGNISABLE_FACE_PIXELS / RELIABLE_MIN_FACE_SHARE (12 / 0.15).
BLURRED_THUMBNAIL_MAX_SIDE_PIXELS: Final = 80
THUMBNAIL_SIDES_PIXELS: Final[dict[DerivedKind, int]] = {
    "thumbnail": THUMBNAIL_MAX_SIDE_PIXELS,
    "thumbnail_faces_blurred": BLURRED_THUMBNAIL_MAX_SIDE_PIXELS,
}


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
