"""Image analysis on the real fixture images (OpenCV, no mocks)."""

from __future__ import annotations

import importlib.metadata
import math
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

from anfang.contracts import Box
from anfang.pipeline import faces
from anfang.pipeline.analyse import THUMBNAIL_JPEG_QUALITY, THUMBNAIL_MAX_SIDE_PIXELS, analyse_image, image_size
from anfang.pipeline.faces import detect_faces
from anfang.pipeline.orientation import exif_orientation, upright_box
from anfang.pipeline.thumbnails import BLURRED_THUMBNAIL_MAX_SIDE_PIXELS, thumbnail_size
from tests.faces_dataset import with_exif_orientation
from tests.pipeline_fixtures import image_bytes


def _decode(raw: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def _jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


#: The astronaut's face in the 1080p scene fixture (checked by eye once, kept as a guard).
ASTRONAUT_CENTRE = (892, 262)


def _centre_inside(box: Box, point: tuple[float, float]) -> bool:
    return box.x <= point[0] <= box.x + box.w and box.y <= point[1] <= box.y + box.h


@pytest.mark.parametrize(("name", "role"), [("scene_face_1920x1080.jpg", "scene"), ("face_crop.jpg", "face")])
def test_face_images_yield_face_boxes_in_original_pixels(name: str, role: str) -> None:
    raw = image_bytes(name)
    _, width, height = image_size(raw)

    result = analyse_image(raw, role=role)  # type: ignore[arg-type]

    assert result.analysis.quality == "ok"
    assert (result.analysis.width, result.analysis.height) == (width, height)
    assert result.analysis.faces
    for box in result.analysis.faces:
        assert 0 <= box.x < box.x + box.w <= width
        assert 0 <= box.y < box.y + box.h <= height
    assert max(b.w for b in result.analysis.faces) >= 160  # scaled back from the reduced decode
    assert result.analysis.phash is not None and len(result.analysis.phash) == 16


def test_scene_face_box_is_where_the_astronaut_is() -> None:
    faces = analyse_image(image_bytes("scene_face_1920x1080.jpg"), role="scene").analysis.faces
    assert any(_centre_inside(b, ASTRONAUT_CENTRE) for b in faces), faces


def _iou(a: Box, b: Box) -> float:
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    return inter / (a.w * a.h + b.w * b.h - inter)


def test_scene_face_box_matches_the_detector_on_the_full_resolution_decode() -> None:
    # GIVEN the astronaut's face as the detector finds it on the full 1920x1080 decode
    raw = image_bytes("scene_face_1920x1080.jpg")
    full = detect_faces(cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR))
    reference = next(b for b in full if _centre_inside(b, ASTRONAUT_CENTRE))
    # WHEN the scene is analysed (decoded at 1/2 in the DCT, boxes scaled back)
    faces = analyse_image(raw, role="scene").analysis.faces
    # THEN the analysis has that face in full-resolution pixels
    assert max(_iou(box, reference) for box in faces) >= 0.7, (faces, reference)


def test_no_face_scene_yields_at_most_one_false_box() -> None:
    result = analyse_image(image_bytes("scene_noface_1280x720.jpg"), role="scene")
    assert len(result.analysis.faces) <= 1  # score 0.4 trades false boxes (a blurred patch) for recall
    assert result.analysis.quality == "ok"


@pytest.mark.parametrize("role", ["face", "person"])
def test_a_face_or_person_image_without_a_face_is_blurred_whole(role: str) -> None:
    # GIVEN a picture in which the detector finds no face (a flat grey-ish gradient with texture)
    rng = np.random.default_rng(1)
    picture = (np.linspace(60, 190, 640)[None, :, None] + rng.normal(0, 25, (480, 640, 3))).clip(0, 255)
    raw = _jpeg(picture.astype(np.uint8))
    result = analyse_image(raw, role=role)  # type: ignore[arg-type]
    assert result.analysis.faces == []
    assert result.analysis.quality == ("no_face" if role == "face" else "ok")
    # THEN every part of the face-blurred thumbnail is blurred: no 8x8 patch keeps the original's detail
    blurred = _decode(result.thumbnail_faces_blurred or b"")
    reference = cv2.resize(_decode(raw), (blurred.shape[1], blurred.shape[0]), interpolation=cv2.INTER_AREA)
    grey_b, grey_r = (cv2.cvtColor(a, cv2.COLOR_BGR2GRAY).astype(float) for a in (blurred, reference))
    assert cv2.Laplacian(grey_b, cv2.CV_64F).var() < cv2.Laplacian(grey_r, cv2.CV_64F).var() / 10


def test_a_scene_without_a_face_is_not_blurred_whole() -> None:
    # a scene or vehicle picture is not a picture of a person: only found and reported faces are blurred
    rng = np.random.default_rng(1)
    picture = (np.linspace(60, 190, 640)[None, :, None] + rng.normal(0, 25, (480, 640, 3))).clip(0, 255)
    raw = _jpeg(picture.astype(np.uint8))
    result = analyse_image(raw, role="scene")
    blurred = _decode(result.thumbnail_faces_blurred or b"")
    reference = cv2.resize(_decode(raw), (blurred.shape[1], blurred.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(blurred.astype(int) - reference.astype(int)).mean() < 6


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


def test_thumbnails_fit_their_sides_and_keep_aspect() -> None:
    result = analyse_image(image_bytes("scene_face_1920x1080.jpg"), role="scene")
    assert _decode(result.thumbnail or b"").shape[:2] == (180, THUMBNAIL_MAX_SIDE_PIXELS)
    assert _decode(result.thumbnail_faces_blurred or b"").shape[:2] == (45, BLURRED_THUMBNAIL_MAX_SIDE_PIXELS)


def test_without_face_detection_the_unblurred_thumbnail_and_the_measures_are_made() -> None:
    # the benchmarks' path (thumbnail + metrics): decoded at 480 px, no boxes, no face-blurred thumbnail
    result = analyse_image(image_bytes("scene_face_1920x1080.jpg"), role="scene", detect_faces=False)
    assert result.analysis.quality == "ok" and result.analysis.faces == [] and result.analysis.phash
    assert _decode(result.thumbnail or b"").shape[:2] == (180, THUMBNAIL_MAX_SIDE_PIXELS)
    assert result.thumbnail_faces_blurred is None


def test_only_the_kinds_asked_for_are_made() -> None:
    raw = image_bytes("scene_face_1920x1080.jpg")
    blurred_only = analyse_image(raw, role="scene", kinds=frozenset({"thumbnail_faces_blurred"}))
    assert blurred_only.thumbnail is None and blurred_only.thumbnail_faces_blurred
    assert set(blurred_only.derived) == {"thumbnail_faces_blurred"}


def _reference_thumbnail(raw: bytes, size: tuple[int, int]) -> np.ndarray:
    """What the analysis thumbnails before blurring: the upright 1/2 decode, area-resized."""
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_REDUCED_COLOR_2)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _region(box: Box, scale: float, grow: float = 0.0) -> tuple[slice, slice]:
    pad = box.w * grow
    x0, y0 = math.floor((box.x - pad) * scale), math.floor((box.y - pad) * scale)
    x1, y1 = math.ceil((box.x + box.w + pad) * scale), math.ceil((box.y + box.h + pad) * scale)
    return slice(max(0, y0), y1), slice(max(0, x0), x1)


def test_blurred_thumbnail_differs_inside_the_face_boxes_and_matches_outside() -> None:
    # GIVEN the 1080p scene with the astronaut's face
    raw = image_bytes("scene_face_1920x1080.jpg")
    # WHEN it is analysed
    result = analyse_image(raw, role="scene")
    blurred = _decode(result.thumbnail_faces_blurred or b"").astype(int)
    thumb = _reference_thumbnail(raw, (blurred.shape[1], blurred.shape[0])).astype(int)
    scale = blurred.shape[1] / 1920
    face = next(b for b in result.analysis.faces if _centre_inside(b, ASTRONAUT_CENTRE))
    rows, cols = _region(face, scale)
    # THEN inside her face box the blurred thumbnail is far from the picture and its detail is gone
    assert np.abs(thumb[rows, cols] - blurred[rows, cols]).mean() > 10
    lap = [
        cv2.Laplacian(cv2.cvtColor(a[rows, cols].astype(np.uint8), cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
        for a in (blurred, thumb)
    ]
    assert lap[0] < lap[1] / 5, lap
    # AND outside every box plus its margin (and a JPEG block) the two are the same picture
    mask = np.ones(blurred.shape[:2], dtype=bool)
    for box in result.analysis.faces:
        grown = _region(box, scale, grow=0.25)
        mask[max(0, grown[0].start - 4) : grown[0].stop + 4, max(0, grown[1].start - 4) : grown[1].stop + 4] = False
    assert mask.sum() > 0.4 * mask.size
    # (as close as the unblurred thumbnail's own JPEG encoding at the same quality is)
    ok, own = cv2.imencode(".jpg", thumb.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, THUMBNAIL_JPEG_QUALITY])
    assert ok
    encoding_error = np.abs(thumb - _decode(own.tobytes()).astype(int))[mask].mean()
    assert np.abs(thumb - blurred)[mask].mean() <= encoding_error + 1.0


def test_device_reported_face_box_is_blurred_too() -> None:
    raw = image_bytes("scene_noface_1280x720.jpg")
    plain = analyse_image(raw, role="scene")
    result = analyse_image(raw, role="scene", known_faces=(Box(x=0, y=0, w=320, h=320),))
    before, after = (
        _decode(plain.thumbnail_faces_blurred or b"").astype(int),
        _decode(result.thumbnail_faces_blurred or b""),
    )
    # 320 px of 1280 is a quarter of the 80 px thumbnail: its top-left 20x20 is blurred, the rest is not touched
    assert np.abs(before[:15, :15] - after.astype(int)[:15, :15]).mean() > 3
    assert result.analysis.faces == plain.analysis.faces  # a reported box is blurred, not reported as found


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
    assert result.analysis.quality == "ok" and result.analysis.faces


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


# ---------------------------------------------------------------------------------------------------- orientation


def _textured_patch_picture(box: Box) -> np.ndarray:
    """A smooth 1280x720 gradient (the stored frame) with a checkerboard of 40 px squares at ``box`` (coarse
    enough to survive the 80 px thumbnail, so blurring it shows)."""
    picture = np.tile(np.linspace(40, 200, 1280, dtype=np.float32)[None, :, None], (720, 1, 3))
    ys, xs = np.mgrid[0 : box.h, 0 : box.w]
    picture[box.y : box.y + box.h, box.x : box.x + box.w] = (((ys // 40 + xs // 40) % 2) * 255)[..., None]
    return picture.astype(np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_pixels_sizes_and_device_boxes_agree_on_every_exif_orientation(orientation: int) -> None:
    # GIVEN a picture stored with an EXIF orientation, and a device-reported box (in the stored frame) on a patch
    box = Box(x=100, y=200, w=300, h=150)
    raw = with_exif_orientation(_jpeg(_textured_patch_picture(box)), orientation)
    # WHEN it is analysed with that box as a known face
    result = analyse_image(raw, role="scene", known_faces=(box,))
    # THEN the sizes are those of the picture as OpenCV turns it for display ...
    shown = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    assert (result.analysis.width, result.analysis.height) == (shown.shape[1], shown.shape[0])
    # ... the box turned upright lies on the patch in that picture ...
    turned = upright_box(box, orientation, width=1280, height=720)
    assert turned is not None
    patch = shown[turned.y : turned.y + turned.h, turned.x : turned.x + turned.w]
    assert patch.std() > 50 and patch.shape[:2] == (turned.h, turned.w)
    # ... and the face-blurred thumbnail has the patch blurred there
    blurred = _decode(result.thumbnail_faces_blurred or b"").astype(float)
    size = thumbnail_size(shown.shape[1], shown.shape[0], BLURRED_THUMBNAIL_MAX_SIDE_PIXELS)
    assert blurred.shape[:2] == size[::-1]
    unblurred = cv2.resize(shown, size, interpolation=cv2.INTER_AREA).astype(float)
    rows, cols = _region(turned, blurred.shape[1] / shown.shape[1])
    assert blurred[rows, cols].std() < unblurred[rows, cols].std() / 3


def _exif_little_endian(jpeg: bytes, orientation: int) -> bytes:
    tiff = b"II\x2a\x00" + struct.pack("<I", 8) + struct.pack("<H", 2)
    tiff += struct.pack("<HHI4s", 0x010F, 2, 4, b"cam\x00")  # Make, before the orientation
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_orientation_is_read_in_both_byte_orders(orientation: int) -> None:
    jpeg = _jpeg(np.zeros((16, 16, 3), np.uint8))
    assert exif_orientation(with_exif_orientation(jpeg, orientation)) == orientation
    assert exif_orientation(_exif_little_endian(jpeg, orientation)) == orientation


@pytest.mark.parametrize(
    "make",
    [
        lambda j: j,  # no EXIF
        lambda j: with_exif_orientation(j, 0),  # out of range
        lambda j: with_exif_orientation(j, 9),
        lambda j: j[:2] + b"\xff\xe1\x00\x0aExif\x00\x00MM" + j[2:],  # cut short
        lambda j: j[:2] + b"\xff\xe1\x00\x10Exif\x00\x00MM\x00\x2a\xff\xff\xff\xff" + j[2:],  # IFD past the end
    ],
)
def test_a_missing_or_broken_orientation_is_as_stored(make: Any) -> None:
    jpeg = _jpeg(np.zeros((16, 16, 3), np.uint8))
    assert exif_orientation(make(jpeg)) == 1


def test_the_rotated_scene_fixture_has_its_face_where_the_upright_one_has_it() -> None:
    # GIVEN the 1080p scene stored turned (orientation 6: the camera was on its side)
    upright = _decode(image_bytes("scene_face_1920x1080.jpg"))
    raw = with_exif_orientation(_jpeg(cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE)), 6)
    # WHEN it is analysed
    analysis = analyse_image(raw, role="scene").analysis
    # THEN sizes and boxes are in the upright frame: the astronaut's face is where it is in the upright scene
    assert (analysis.width, analysis.height) == (1920, 1080)
    assert any(_centre_inside(b, ASTRONAUT_CENTRE) for b in analysis.faces), analysis.faces


# ---------------------------------------------------------------------------------------------------- fail closed


@pytest.fixture
def face_model_uninstalled(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The face model's package as if not installed (the layer built without it)."""

    def missing(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    faces._model.cache_clear()
    faces._net.cache_clear()
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    yield
    monkeypatch.undo()
    faces._model.cache_clear()
    faces._net.cache_clear()


@pytest.mark.parametrize("role", ["scene", "face", "person"])
def test_without_the_face_model_the_analysis_fails_closed(face_model_uninstalled: None, role: str) -> None:
    result = analyse_image(image_bytes("scene_face_1920x1080.jpg"), role=role)  # type: ignore[arg-type]
    assert result.analysis.quality == "error" and result.analysis.error == "face_model_missing"
    assert result.thumbnail is None and result.thumbnail_faces_blurred is None and result.derived == {}
