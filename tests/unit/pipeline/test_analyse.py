"""Image analysis on the real fixture images (OpenCV, no mocks)."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from anfang.pipeline.analyse import THUMBNAIL_MAX_SIDE_PIXELS, analyse_image, image_size
from tests.pipeline_fixtures import image_bytes


def _decode(raw: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def _jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(("name", "role"), [("scene_face_1920x1080.jpg", "scene"), ("face_crop.jpg", "face")])
def test_face_images_yield_a_face_box_in_original_pixels(name: str, role: str) -> None:
    raw = image_bytes(name)
    _, width, height = image_size(raw)

    result = analyse_image(raw, role=role)  # type: ignore[arg-type]

    assert result.analysis.quality == "ok"
    assert len(result.analysis.faces) == 1
    box = result.analysis.faces[0]
    assert 0 <= box.x < box.x + box.w <= width
    assert 0 <= box.y < box.y + box.h <= height
    assert box.w >= 64  # scaled back from the reduced decode, not left in reduced pixels
    assert result.analysis.phash is not None and len(result.analysis.phash) == 16


def test_scene_face_box_is_where_the_astronaut_is() -> None:
    box = analyse_image(image_bytes("scene_face_1920x1080.jpg"), role="scene").analysis.faces[0]
    # The 1080p scene puts the astronaut's face near the top centre (checked by eye once, kept as a guard).
    assert 700 < box.x < 900 and 80 < box.y < 250


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_scene_face_box_overlaps_the_face_found_at_full_resolution() -> None:
    # GIVEN the face the same cascade finds in a fine search (scale step 1.1) of the full 1920x1080 decode
    raw = image_bytes("scene_face_1920x1080.jpg")
    full = cv2.equalizeHist(cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_GRAYSCALE))
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]
    reference = cv2.CascadeClassifier(path).detectMultiScale(full, scaleFactor=1.1, minNeighbors=4, minSize=(96, 96))
    reference_boxes = [tuple(int(v) for v in box) for box in reference]
    # WHEN the scene is analysed with the production parameters (reduced decode, coarser pyramid)
    faces = analyse_image(raw, role="scene").analysis.faces
    # THEN it finds one face, and that face is one of the full-resolution ones
    assert len(faces) == 1
    box = (faces[0].x, faces[0].y, faces[0].w, faces[0].h)
    assert max(_iou(box, ref) for ref in reference_boxes) >= 0.7, (box, reference_boxes)  # type: ignore[arg-type]


def test_no_face_scene_yields_no_box() -> None:
    result = analyse_image(image_bytes("scene_noface_1280x720.jpg"), role="scene")
    assert result.analysis.faces == []
    assert result.analysis.quality == "ok"


def test_face_role_without_a_face_is_no_face_and_blurred_whole() -> None:
    result = analyse_image(image_bytes("scene_noface_1280x720.jpg"), role="face")
    assert result.analysis.quality == "no_face"
    thumb, blurred = _decode(result.thumbnail or b""), _decode(result.thumbnail_faces_blurred or b"")
    assert np.abs(thumb.astype(int) - blurred.astype(int)).mean() > 5


def test_blurred_copy_is_blurry() -> None:
    image = _decode(image_bytes("scene_face_1920x1080.jpg"))
    result = analyse_image(_jpeg(cv2.GaussianBlur(image, (0, 0), 6)), role="scene")
    assert result.analysis.quality == "blurry"


def test_dark_copy_is_dark() -> None:
    image = _decode(image_bytes("face_crop.jpg"))
    result = analyse_image(_jpeg((image * 0.12).astype(np.uint8)), role="face")
    assert result.analysis.quality == "dark"


def test_overexposed_copy_is_overexposed() -> None:
    image = _decode(image_bytes("scene_noface_1280x720.jpg"))
    assert analyse_image(_jpeg(cv2.add(image, 200)), role="scene").analysis.quality == "overexposed"


def test_thumbnail_fits_320_and_keeps_aspect() -> None:
    result = analyse_image(image_bytes("scene_face_1920x1080.jpg"), role="scene")
    thumb = _decode(result.thumbnail or b"")
    assert max(thumb.shape[:2]) == THUMBNAIL_MAX_SIDE_PIXELS
    assert thumb.shape[:2] == (180, 320)


def test_blurred_thumbnail_differs_inside_the_face_box_and_matches_outside() -> None:
    # GIVEN the 1080p scene with one face
    raw = image_bytes("scene_face_1920x1080.jpg")
    # WHEN it is analysed
    result = analyse_image(raw, role="scene")
    thumb = _decode(result.thumbnail or b"").astype(int)
    blurred = _decode(result.thumbnail_faces_blurred or b"").astype(int)
    # THEN inside the face box (in thumbnail pixels) the blurred thumbnail is far from the original ...
    scale = thumb.shape[1] / 1920
    box = result.analysis.faces[0]
    x0, y0 = int(box.x * scale), int(box.y * scale)
    x1, y1 = int((box.x + box.w) * scale), int((box.y + box.h) * scale)
    inside = np.abs(thumb[y0:y1, x0:x1] - blurred[y0:y1, x0:x1])
    assert inside.mean() > 10
    # ... and its detail is gone: the face region's Laplacian variance collapses
    face_gray = cv2.cvtColor(blurred[y0:y1, x0:x1].astype(np.uint8), cv2.COLOR_BGR2GRAY)
    orig_gray = cv2.cvtColor(thumb[y0:y1, x0:x1].astype(np.uint8), cv2.COLOR_BGR2GRAY)
    assert cv2.Laplacian(face_gray, cv2.CV_64F).var() < cv2.Laplacian(orig_gray, cv2.CV_64F).var() / 10
    # AND outside the box plus its margin (and one JPEG block) the two thumbnails are the same picture
    pad = int(box.w * scale * 0.25) + 16
    mask = np.ones(thumb.shape[:2], dtype=bool)
    mask[max(0, y0 - pad) : y1 + pad, max(0, x0 - pad) : x1 + pad] = False
    outside = np.abs(thumb - blurred)[mask]
    assert outside.mean() < 0.5
    assert np.percentile(outside, 99.9) <= 8


def test_device_reported_face_box_is_blurred_too() -> None:
    from anfang.contracts import Box

    raw = image_bytes("scene_noface_1280x720.jpg")
    result = analyse_image(raw, role="scene", known_faces=(Box(x=0, y=0, w=320, h=320),))
    thumb, blurred = _decode(result.thumbnail or b"").astype(int), _decode(result.thumbnail_faces_blurred or b"")
    assert np.abs(thumb[:60, :60] - blurred.astype(int)[:60, :60]).mean() > 3
    assert result.analysis.faces == []


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def _jpeg_bomb_header(width: int, height: int) -> bytes:
    # SOI, then a baseline frame header claiming width x height, then nothing useful.
    sof = struct.pack(">BBHBHHB", 0xFF, 0xC0, 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + sof + b"\xff\xd9"


def _bad_precision() -> bytes:
    raw = bytearray(image_bytes("face_crop.jpg"))
    sof = raw.find(b"\xff\xc0")
    raw[sof + 4] = 7  # sample precision libjpeg does not support: the decoder gives up
    return bytes(raw)


HOSTILE = {
    "truncated_jpeg": ("truncated", lambda: image_bytes("face_crop.jpg")[:9000]),
    "truncated_png": ("truncated", lambda: _png_header(64, 64) + b"\x00" * 40),
    "jpeg_bomb": ("too_many_pixels", lambda: _jpeg_bomb_header(60000, 60000)),
    "png_bomb": ("too_many_pixels", lambda: _png_header(50000, 50000) + b"IEND\xaeB`\x82"),
    "gif": ("unsupported_format", lambda: b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + b"\x00" * 20),
    "garbage": ("invalid_image", lambda: b"not an image at all"),
    "empty": ("invalid_image", lambda: b""),
    "jpeg_no_frame": ("invalid_image", lambda: b"\xff\xd8\xff\xe0\x00\x04ab\xff\xd9"),
    "jpeg_without_scan": ("truncated", lambda: _jpeg_bomb_header(64, 64)),
    "jpeg_bad_precision": ("decode_failed", _bad_precision),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_corrupt_and_hostile_images_are_an_error_analysis_not_an_exception(name: str) -> None:
    label, make = HOSTILE[name]
    result = analyse_image(make(), role="scene")
    assert result.analysis.quality == "error"
    assert result.analysis.error == label
    assert result.thumbnail is None and result.thumbnail_faces_blurred is None


def test_png_is_analysed() -> None:
    image = _decode(image_bytes("face_crop.jpg"))
    ok, buf = cv2.imencode(".png", image)
    assert ok
    result = analyse_image(buf.tobytes(), role="face")
    assert result.analysis.quality == "ok" and len(result.analysis.faces) == 1


def test_phash_is_stable_under_re_encoding_and_differs_between_scenes() -> None:
    raw = image_bytes("scene_face_1920x1080.jpg")
    again = _jpeg(cv2.resize(_decode(raw), (960, 540)))
    a = int(analyse_image(raw, role="scene").analysis.phash or "0", 16)
    b = int(analyse_image(again, role="scene").analysis.phash or "0", 16)
    c = int(analyse_image(image_bytes("scene_noface_1280x720.jpg"), role="scene").analysis.phash or "0", 16)
    assert bin(a ^ b).count("1") <= 6
    assert bin(a ^ c).count("1") >= 16


def test_trailing_bytes_after_the_end_of_image_are_fine() -> None:
    raw = image_bytes("face_crop.jpg") + b"\x00vendor trailer\x00" * 10
    assert analyse_image(raw, role="face").analysis.quality == "ok"


def test_a_truncated_image_is_caught_even_with_an_earlier_end_marker() -> None:
    # GIVEN a JPEG whose EXIF-like APP1 segment carries a complete tiny JPEG (its own SOS and EOI) ...
    inner = _jpeg(np.zeros((8, 8, 3), np.uint8))
    app1 = b"\xff\xe1" + struct.pack(">H", len(inner) + 2) + inner
    raw = image_bytes("face_crop.jpg")
    with_thumb = raw[:2] + app1 + raw[2:]
    assert analyse_image(with_thumb, role="face").analysis.quality == "ok"
    # ... WHEN the main image is cut off THEN it is still truncated
    assert analyse_image(with_thumb[: len(with_thumb) // 2], role="face").analysis.error == "truncated"
