"""EXIF orientation: read from a JPEG's header, and the turn it asks for applied to boxes.

Cameras mounted on their side store the pixels as the sensor reads them and say in the EXIF Orientation tag
(0x0112) how to turn them for display. The analyse stage decodes with OpenCV told to *ignore* the tag, reads
it here and turns the pixels itself with the same value, so the pixels it measures, searches for faces and
thumbnails, the sizes it reports and the device-reported face boxes it blurs are all turned by one reading of
one tag (never OpenCV's for the pixels and another for the boxes). Pure Python: no OpenCV, no AWS calls.

A missing, unreadable or out-of-range tag is orientation 1 (as stored). The pixels searched are the pixels
blurred whatever the value, so a wrong value can turn a thumbnail but never leave a found face unblurred.

>>> exif_orientation(jpeg_stored_sideways)
6
>>> upright_box(Box(x=10, y=20, w=30, h=40), 6, width=1920, height=1080)
Box(x=1020, y=10, w=40, h=30)
"""

from __future__ import annotations

import struct
from typing import Final

from anfang.contracts import Box

__all__ = ["SWAPS_SIDES", "exif_orientation", "upright_box", "upright_size"]

#: Orientations 5-8 turn the picture by 90 degrees: width and height swap.
SWAPS_SIDES: Final = frozenset({5, 6, 7, 8})
_TAG_ORIENTATION: Final = 0x0112
_TYPE_SHORT: Final = 3
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})
#: Stop looking after this many header bytes: EXIF sits in the first segments.
_MAX_HEADER_BYTES: Final = 256 * 1024


def exif_orientation(raw: bytes) -> int:
    """The EXIF orientation (1-8) of a JPEG, from the first APP1 ``Exif`` segment before the scan; 1 if none."""
    if raw[:2] != b"\xff\xd8":
        return 1
    i, n = 2, min(len(raw), _MAX_HEADER_BYTES)
    while i + 4 <= n:
        if raw[i] != 0xFF:
            return 1
        marker = raw[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker == 0xDA:  # start of scan: no EXIF after it
            return 1
        (length,) = struct.unpack(">H", raw[i + 2 : i + 4])
        if length < 2:
            return 1
        if marker == 0xE1 and raw[i + 4 : i + 10] == b"Exif\x00\x00":
            return _tiff_orientation(raw[i + 10 : i + 2 + length])
        i += 2 + length
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
    for k in range(count):
        entry = ifd + 2 + 12 * k
        if entry + 12 > len(tiff):
            return 1
        tag, kind, items = struct.unpack(order + "HHI", tiff[entry : entry + 8])
        if tag == _TAG_ORIENTATION:
            if kind != _TYPE_SHORT or items != 1:
                return 1
            (value,) = struct.unpack(order + "H", tiff[entry + 8 : entry + 10])
            return value if 1 <= value <= 8 else 1
    return 1


def upright_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """(width, height) of a ``width`` x ``height`` stored picture once turned upright."""
    return (height, width) if orientation in SWAPS_SIDES else (width, height)


def _turn(x: int, y: int, orientation: int, width: int, height: int) -> tuple[int, int]:
    """A corner point (pixel edges, 0..width, 0..height) of the stored frame in the upright frame."""
    return {
        1: (x, y),
        2: (width - x, y),
        3: (width - x, height - y),
        4: (x, height - y),
        5: (y, x),
        6: (height - y, x),
        7: (height - y, width - x),
        8: (y, width - x),
    }[orientation]


def upright_box(box: Box, orientation: int, *, width: int, height: int) -> Box | None:
    """``box`` (in the stored ``width`` x ``height`` frame) turned upright and clipped to the picture.

    ``None`` when nothing of it lies inside the picture.
    """
    x0, y0 = max(0, box.x), max(0, box.y)
    x1, y1 = min(width, box.x + box.w), min(height, box.y + box.h)
    if x1 <= x0 or y1 <= y0:
        return None
    (ax, ay), (bx, by) = _turn(x0, y0, orientation, width, height), _turn(x1, y1, orientation, width, height)
    return Box(x=min(ax, bx), y=min(ay, by), w=abs(bx - ax), h=abs(by - ay))
