"""Image analysis (the analyse stage): thumbnail, quality, face boxes, perceptual hash, face-blurred thumbnail.

The only module of ``anfang`` that imports OpenCV and numpy; it is attached only to the analyse function
(Lambda's 250 MB limit). Faces are *located* (boxes) so they can be blurred: there is no recognition and no
demographic inference anywhere.

Bad input never raises: :func:`analyse_image` returns an analysis with ``quality="error"`` and an ``error``
label from :data:`ERROR_LABELS`, so one corrupt image never fails its batch.

>>> result = analyse_image(Path("face.jpg").read_bytes(), role="face")
>>> result.analysis.quality, result.analysis.faces, len(result.thumbnail or b"")
('ok', [Box(x=88, y=61, w=180, h=180)], 9120)
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, Literal

import cv2
import numpy as np

from anfang.contracts import (
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE_PIXELS,
    Box,
    ImageAnalysis,
    ImageError,
    ImageRole,
    QueuedEvent,
    sniff_content_type,
)
from anfang.contracts.records import Quality
from anfang.pipeline.thumbnails import THUMBNAIL_MAX_SIDE_PIXELS, derived_key, thumbnail_size

__all__ = [
    "ERROR_LABELS",
    "THUMBNAIL_MAX_SIDE_PIXELS",
    "Analysed",
    "Thresholds",
    "analyse_event",
    "analyse_image",
    "blur_boxes",
    "image_size",
    "phash",
]

#: Face detection runs on an image whose long side is at most this (Haar cascades need ~24 px faces).
DETECT_MAX_SIDE_PIXELS: Final = 480
#: Smallest face looked for, in detection pixels: 24 px at 480 is 5% of the long side, i.e. a face of 16 px
#: in the 320 px thumbnail. Raising it is the main lever on detection time (the cost grows with the square
#: of long side / smallest face), but every face below it reaches the gov cloud's thumbnail unblurred.
DETECT_MIN_FACE_PIXELS: Final = 24
#: Pyramid step of the Haar cascade: 1.25 scans ~25% fewer windows than 1.2 and finds the same faces on the
#: fixtures (tests/unit/pipeline/test_analyse.py compares the 1080p box with a fine full-resolution search).
DETECT_SCALE_FACTOR: Final = 1.25
DETECT_MIN_NEIGHBORS: Final = 4
#: Metrics (sharpness, brightness, contrast) are measured at this long side, so they compare across sizes.
METRICS_SIDE_PIXELS: Final = 480
#: Margin around a face box that is blurred too, as a fraction of the box size on each side.
FACE_MARGIN_FRACTION: Final = 0.25
#: A blurred face keeps at most this many blocks across its (margined) box: far below recognisability.
FACE_PIXELATE_BLOCKS: Final = 6
THUMBNAIL_JPEG_QUALITY: Final = 80

#: Why an analysis failed (``ImageAnalysis.error``), a small fixed set.
ERROR_LABELS: Final = frozenset(
    {"unsupported_format", "invalid_image", "too_many_pixels", "truncated", "decode_failed", "analysis_failed"}
)


@dataclass(frozen=True)
class Thresholds:
    """Quality verdict thresholds; sharpness is the Laplacian variance at ``METRICS_SIDE_PIXELS``."""

    dark_brightness_max: float = 40.0
    overexposed_brightness_min: float = 220.0
    blurry_sharpness_max: float = 40.0


@dataclass(frozen=True)
class Analysed:
    """The analysis of one image and its derived JPEGs (``None`` when analysis failed)."""

    analysis: ImageAnalysis
    thumbnail: bytes | None = None
    thumbnail_faces_blurred: bytes | None = None


def analyse_image(
    raw: bytes,
    *,
    role: ImageRole,
    known_faces: tuple[Box, ...] = (),
    thresholds: Thresholds = Thresholds(),  # noqa: B008 - frozen dataclass, immutable default
    max_pixels: int = MAX_IMAGE_PIXELS,
    detect_faces: bool = True,
) -> Analysed:
    """Analyse one image's bytes; never raises for bad input (``quality="error"`` instead).

    ``known_faces`` are boxes the device reported (``face.box`` of a face capture, in original pixels); they
    are blurred as well as the detected ones. A ``face`` image where no face was found is blurred whole.
    ``detect_faces=False`` measures and makes the thumbnail only (no boxes, no blurred thumbnail).
    """
    try:
        return _analyse(
            raw,
            role=role,
            known_faces=known_faces,
            thresholds=thresholds,
            max_pixels=max_pixels,
            detect_faces=detect_faces,
        )
    except _AnalysisError as exc:
        return Analysed(ImageAnalysis(quality="error", error=exc.label))
    except (cv2.error, ValueError, MemoryError):
        return Analysed(ImageAnalysis(quality="error", error="analysis_failed"))


# ---------------------------------------------------------------------------------------------------- safe open


class _AnalysisError(Exception):
    def __init__(self, label: str) -> None:
        super().__init__(label)
        self.label = label


_SOF_MARKERS: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS: Final = frozenset({0x01, *range(0xD0, 0xD8)})


def image_size(raw: bytes) -> tuple[str, int, int]:
    """Content type, width and height read from the header alone (no decode); raises ``ValueError``."""
    try:
        content_type = sniff_content_type(raw)
    except ImageError as exc:
        raise ValueError(exc.code.value) from exc
    if content_type == "image/png":
        if len(raw) < 24 or raw[12:16] != b"IHDR":
            raise ValueError("png has no IHDR")
        width, height = struct.unpack(">II", raw[16:24])
        return content_type, width, height
    return content_type, *_jpeg_size(raw)


def _jpeg_size(raw: bytes) -> tuple[int, int]:
    i, n = 2, len(raw)
    while i + 4 <= n:
        if raw[i] != 0xFF:
            raise ValueError("jpeg marker expected")
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE_MARKERS:
            i += 2
            continue
        (length,) = struct.unpack(">H", raw[i + 2 : i + 4])
        if marker in _SOF_MARKERS:
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", raw[i + 5 : i + 9])
            return width, height
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            break
        i += 2 + length
    raise ValueError("jpeg has no frame header")


def _complete(raw: bytes, content_type: str) -> bool:
    # libjpeg and libpng fill a truncated image with grey and only warn; refuse it instead of measuring grey.
    # Entropy-coded JPEG data stuffs every 0xFF, so an EOI after the last start-of-scan means the image ends
    # (trailing bytes after EOI, which some cameras append, are fine; an EXIF thumbnail's EOI is not enough).
    if content_type == "image/png":
        return raw.rfind(b"IEND") > raw.rfind(b"IDAT") > 0
    return raw.rfind(b"\xff\xd9") > raw.rfind(b"\xff\xda") > 0


def _reduce_flag(content_type: str, long_side: int) -> tuple[int, int]:
    """The imread flag and scale: JPEG decodes at 1/2, 1/4 or 1/8 in the DCT when that still leaves detail."""
    if content_type == "image/jpeg":
        for scale, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4)):
            if long_side // scale >= DETECT_MAX_SIDE_PIXELS:
                return flag, scale
        if long_side // 2 >= DETECT_MAX_SIDE_PIXELS:
            return cv2.IMREAD_REDUCED_COLOR_2, 2
    return cv2.IMREAD_COLOR, 1


def _decode(raw: bytes, max_pixels: int) -> tuple[Any, int, int]:
    try:
        content_type, width, height = image_size(raw)
    except ValueError as exc:
        label = "unsupported_format" if str(exc) == "image_unsupported" else "invalid_image"
        raise _AnalysisError(label) from exc
    if width <= 0 or height <= 0:
        raise _AnalysisError("invalid_image")
    if width * height > max_pixels or max(width, height) > MAX_IMAGE_SIDE_PIXELS:
        raise _AnalysisError("too_many_pixels")
    if not _complete(raw, content_type):
        raise _AnalysisError("truncated")
    flag, _ = _reduce_flag(content_type, max(width, height))
    image = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), flag)
    if image is None or image.ndim != 3 or image.shape[0] == 0:
        raise _AnalysisError("decode_failed")
    return image, width, height


# ---------------------------------------------------------------------------------------------------- measures


def _resize_long_side(image: Any, side: int) -> Any:
    h, w = image.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@cache
def _cascade() -> Any:
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():  # pragma: no cover - a broken OpenCV install
        raise RuntimeError(f"cannot load the Haar cascade {path}")
    return cascade


def _faces(detect: Any, width: int, height: int, *, crop: bool) -> list[Box]:
    """Face boxes in original pixels, found on ``detect`` (grey, long side at most ``DETECT_MAX_SIDE_PIXELS``)."""
    # A face crop (role face) is mostly face: looking only for large faces there is several times cheaper.
    min_side = max(DETECT_MIN_FACE_PIXELS, min(detect.shape[:2]) // 4) if crop else DETECT_MIN_FACE_PIXELS
    fx, fy = width / detect.shape[1], height / detect.shape[0]
    found = _cascade().detectMultiScale(
        cv2.equalizeHist(detect),
        scaleFactor=DETECT_SCALE_FACTOR,
        minNeighbors=DETECT_MIN_NEIGHBORS,
        minSize=(min_side, min_side),
    )
    boxes = []
    for x, y, w, h in found:
        bx, by = min(width - 1, round(x * fx)), min(height - 1, round(y * fy))
        boxes.append(
            Box(x=bx, y=by, w=max(1, min(width - bx, round(w * fx))), h=max(1, min(height - by, round(h * fy))))
        )
    return sorted(boxes, key=lambda b: (b.x, b.y))


def phash(gray: Any) -> str:
    """64-bit DCT perceptual hash of a grey image, 16 hex digits."""
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return f"{int(''.join('1' if bit else '0' for bit in bits), 2):016x}"


def blur_boxes(image: Any, boxes: list[tuple[int, int, int, int]]) -> Any:
    """A copy of ``image`` with every box (plus margin) pixelated to a few blocks and blurred."""
    out = image.copy()
    h, w = out.shape[:2]
    for x, y, bw, bh in boxes:
        mx, my = round(bw * FACE_MARGIN_FRACTION), round(bh * FACE_MARGIN_FRACTION)
        x0, y0, x1, y1 = max(0, x - mx), max(0, y - my), min(w, x + bw + mx), min(h, y + bh + my)
        if x1 <= x0 or y1 <= y0:
            continue
        region = out[y0:y1, x0:x1]
        blocks = (min(FACE_PIXELATE_BLOCKS, x1 - x0), min(FACE_PIXELATE_BLOCKS, y1 - y0))
        coarse = cv2.resize(region, blocks, interpolation=cv2.INTER_AREA)
        region[:] = cv2.resize(coarse, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
        k = max(3, (min(x1 - x0, y1 - y0) // 4) | 1)
        region[:] = cv2.GaussianBlur(region, (k, k), 0)
    return out


def _jpeg(image: Any) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, THUMBNAIL_JPEG_QUALITY])
    if not ok:  # pragma: no cover - encoding a valid array does not fail
        raise _AnalysisError("analysis_failed")
    return bytes(buf.tobytes())


def _analyse(
    raw: bytes,
    *,
    role: ImageRole,
    known_faces: tuple[Box, ...],
    thresholds: Thresholds,
    max_pixels: int,
    detect_faces: bool,
) -> Analysed:
    image, width, height = _decode(raw, max_pixels)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)

    # One reduced grey image serves the metrics and the detector (the same side; a 1080p JPEG decodes
    # straight to it in the DCT, so usually there is nothing to resize).
    metrics = _resize_long_side(gray, METRICS_SIDE_PIXELS)
    # Laplacian of 8-bit input fits int16 exactly; meanStdDev's variance equals numpy's var() of the float
    # Laplacian without a float64 copy of the image.
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(metrics, cv2.CV_16S))
    sharpness = float(lap_std[0][0]) ** 2
    mean, std = cv2.meanStdDev(metrics)
    brightness, contrast = float(mean[0][0]), float(std[0][0])
    detect = (
        metrics if DETECT_MAX_SIDE_PIXELS == METRICS_SIDE_PIXELS else _resize_long_side(gray, DETECT_MAX_SIDE_PIXELS)
    )
    faces = _faces(detect, width, height, crop=role == "face") if detect_faces else []

    quality: Quality
    if brightness < thresholds.dark_brightness_max:
        quality = "dark"
    elif brightness > thresholds.overexposed_brightness_min:
        quality = "overexposed"
    elif sharpness < thresholds.blurry_sharpness_max:
        quality = "blurry"
    elif role == "face" and detect_faces and not faces:
        quality = "no_face"
    else:
        quality = "ok"

    size = thumbnail_size(width, height)
    thumb = image if (image.shape[1], image.shape[0]) == size else cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    tx, ty = thumb.shape[1] / width, thumb.shape[0] / height
    to_blur = [*faces, *known_faces]
    if role == "face" and not faces:  # a face crop is a face even when the detector misses it
        to_blur.append(Box(x=0, y=0, w=width, h=height))
    thumb_boxes = [(int(b.x * tx), int(b.y * ty), max(1, round(b.w * tx)), max(1, round(b.h * ty))) for b in to_blur]
    analysis = ImageAnalysis(
        quality=quality,
        sharpness=round(sharpness, 2),
        brightness=round(min(255.0, max(0.0, brightness)), 2),
        contrast=round(max(0.0, contrast), 2),
        faces=faces,
        phash=phash(gray),
    )
    if not detect_faces:
        return Analysed(analysis, thumbnail=_jpeg(thumb))
    return Analysed(analysis, thumbnail=_jpeg(thumb), thumbnail_faces_blurred=_jpeg(blur_boxes(thumb, thumb_boxes)))


# ---------------------------------------------------------------------------------------------------- per event


def analyse_event(
    queued: QueuedEvent,
    *,
    s3: Any,
    raw_bucket: str,
    image_bucket: str,
    thresholds: Thresholds = Thresholds(),  # noqa: B008 - frozen dataclass, immutable default
) -> QueuedEvent:
    """Analyse every image of a queued event: one GetObject per image, one PutObject per derived image.

    A corrupt image yields an ``error`` analysis and no derived images; the event always goes on. S3 errors
    propagate, so the message is retried (and ends in the DLQ if it keeps failing).
    """
    box = (queued.event.get("face") or {}).get("box")
    images = []
    for stored in queued.images:
        version = {"VersionId": stored.version_id} if stored.version_id else {}  # the bytes the API checked
        raw = s3.get_object(Bucket=raw_bucket, Key=stored.ref, **version)["Body"].read()
        known = (Box.model_validate(box),) if box and stored.role == "scene" else ()
        result = analyse_image(raw, role=stored.role, known_faces=known, thresholds=thresholds)
        derived: dict[Literal["thumbnail", "thumbnail_faces_blurred"], str] = {}
        for kind, body in (
            ("thumbnail", result.thumbnail),
            ("thumbnail_faces_blurred", result.thumbnail_faces_blurred),
        ):
            if body is None:
                continue
            key = derived_key(kind, hashlib.sha256(body).hexdigest())  # type: ignore[arg-type]
            s3.put_object(Bucket=image_bucket, Key=key, Body=body, ContentType="image/jpeg")
            derived[kind] = key  # type: ignore[index]
        images.append(stored.model_copy(update={"analysis": result.analysis, "derived": derived}))
    return queued.model_copy(update={"images": images})
