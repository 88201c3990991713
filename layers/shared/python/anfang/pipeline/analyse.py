"""Image analysis (the analyse stage): quality, face boxes, perceptual hash, thumbnails, face-blurred thumbnail.

With :mod:`anfang.pipeline.faces` (the detector), the only modules of ``anfang`` that import OpenCV and numpy;
they are attached only to the analyse function (Lambda's 250 MB limit). Faces are *located* (boxes) so they can
be blurred: there is no recognition and no demographic inference anywhere.

One picture, one orientation: a JPEG is decoded with its EXIF orientation ignored and turned upright here with
the value :mod:`.orientation` reads, so the metrics, the face search, both thumbnails, the sizes reported and
the device-reported face boxes (turned with the picture) all agree.

Fails closed: :func:`analyse_image` never raises. Bad input, a missing face model or any other failure gives
an analysis with ``quality="error"``, an ``error`` label from :data:`ERROR_LABELS` and *no* derived image, so a
destination that may only see face-blurred images gets no image of that event (the redactor never falls back
to a less redacted one), and one corrupt image never fails its batch. A ``face`` or ``person`` image in which
no face is found is blurred whole.

Cost (1080p JPEG, one core): decode at 1/2 in the DCT ~5 ms, faces ~15 ms, the rest ~2 ms; no AWS calls here,
one GetObject per image and one PutObject per derived image in :func:`analyse_event`.

>>> result = analyse_image(Path("face.jpg").read_bytes(), role="face")
>>> result.analysis.quality, result.analysis.faces, len(result.thumbnail_faces_blurred or b"")
('ok', [Box(x=88, y=61, w=180, h=180)], 1420)
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Any, Final

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
from anfang.pipeline import faces as face_detector
from anfang.pipeline.orientation import exif_orientation, upright_box, upright_size
from anfang.pipeline.thumbnails import (
    DEFAULT_DERIVED_KINDS,
    DERIVED_KINDS,
    THUMBNAIL_MAX_SIDE_PIXELS,
    THUMBNAIL_SIDES_PIXELS,
    DerivedKind,
    derived_key,
    thumbnail_size,
)

__all__ = [
    "ERROR_LABELS",
    "THUMBNAIL_MAX_SIDE_PIXELS",
    "WHOLE_BLUR_ROLES",
    "Analysed",
    "Thresholds",
    "analyse_event",
    "analyse_image",
    "blur_boxes",
    "image_size",
    "phash",
]

#: A JPEG is decoded at the smallest DCT reduction (1/2, 1/4, 1/8) that keeps its long side at least this:
#: the detector's fine pass (672 px), so a 1080p scene decodes at 960x540 and nothing is upscaled for it.
DECODE_MIN_SIDE_PIXELS: Final = max(face_detector.PASS_SIDES_PIXELS)
#: Metrics (sharpness, brightness, contrast) and the perceptual hash are measured at this long side, so they
#: compare across sizes.
METRICS_SIDE_PIXELS: Final = 480
#: A face crop (role ``face``) is mostly face: the detector's coarse pass finds it, and the fine pass for small
#: faces would double the cost of a crop for nothing (and no policy may send a face crop where faces may not go).
CROP_PASS_SIDES_PIXELS: Final = face_detector.PASS_SIDES_PIXELS[:1]
#: Margin around a face box that is blurred too, as a fraction of the box size on each side.
FACE_MARGIN_FRACTION: Final = 0.25
#: A blurred face keeps at most this many blocks across its (margined) box: far below recognisability.
FACE_PIXELATE_BLOCKS: Final = 6
THUMBNAIL_JPEG_QUALITY: Final = 80
#: Roles whose picture is of a person: when no face is found in one, the whole picture is blurred (a face
#: crop or a person capture shows a face even when the detector misses it).
WHOLE_BLUR_ROLES: Final[frozenset[ImageRole]] = frozenset({"face", "person"})

#: Why an analysis failed (``ImageAnalysis.error``), a small fixed set.
ERROR_LABELS: Final = frozenset(
    {
        "unsupported_format",
        "invalid_image",
        "too_many_pixels",
        "truncated",
        "decode_failed",
        "face_model_missing",
        "analysis_failed",
    }
)


@dataclass(frozen=True)
class Thresholds:
    """Quality verdict thresholds; sharpness is the Laplacian variance at ``METRICS_SIDE_PIXELS``."""

    dark_brightness_max: float = 40.0
    overexposed_brightness_min: float = 220.0
    blurry_sharpness_max: float = 40.0


@dataclass(frozen=True)
class Analysed:
    """The analysis of one image and its derived JPEGs (``None`` when not asked for or when analysis failed)."""

    analysis: ImageAnalysis
    thumbnail: bytes | None = None
    thumbnail_faces_blurred: bytes | None = None

    @property
    def derived(self) -> dict[DerivedKind, bytes]:
        """The derived JPEGs made, by kind."""
        made = {"thumbnail": self.thumbnail, "thumbnail_faces_blurred": self.thumbnail_faces_blurred}
        return {kind: body for kind, body in made.items() if body is not None}  # type: ignore[misc]


def analyse_image(
    raw: bytes,
    *,
    role: ImageRole,
    known_faces: tuple[Box, ...] = (),
    thresholds: Thresholds = Thresholds(),  # noqa: B008 - frozen dataclass, immutable default
    max_pixels: int = MAX_IMAGE_PIXELS,
    kinds: frozenset[DerivedKind] | tuple[DerivedKind, ...] = DERIVED_KINDS,
    detect_faces: bool = True,
) -> Analysed:
    """Analyse one image's bytes and make the derived images of ``kinds``; never raises (fails closed).

    ``known_faces`` are boxes the device reported (``face.box`` of a face capture, in the pixels of the image as
    stored: turned upright with it); they are blurred as well as the detected ones. A ``face`` or ``person``
    image where no face was found is blurred whole. ``detect_faces=False`` (benchmarks) measures and makes the
    unblurred thumbnail only.
    """
    try:
        return _analyse(
            raw,
            role=role,
            known_faces=known_faces,
            thresholds=thresholds,
            max_pixels=max_pixels,
            kinds=frozenset(kinds),
            detect_faces=detect_faces,
        )
    except _AnalysisError as exc:
        return Analysed(ImageAnalysis(quality="error", error=exc.label))
    except face_detector.FaceModelMissingError:
        return Analysed(ImageAnalysis(quality="error", error="face_model_missing"))
    except Exception:  # fail closed on anything: no derived image rather than a possibly unblurred one
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


def _reduce_flag(content_type: str, long_side: int, min_side: int) -> int:
    """The imdecode flag: a JPEG decodes at 1/8, 1/4 or 1/2 in the DCT when its long side stays at least
    ``min_side``. The EXIF orientation is always ignored by OpenCV and applied by :func:`_upright`."""
    flag = cv2.IMREAD_COLOR
    if content_type == "image/jpeg":
        for scale, reduced in (
            (8, cv2.IMREAD_REDUCED_COLOR_8),
            (4, cv2.IMREAD_REDUCED_COLOR_4),
            (2, cv2.IMREAD_REDUCED_COLOR_2),
        ):
            if long_side // scale >= min_side:
                flag = reduced
                break
    return flag | cv2.IMREAD_IGNORE_ORIENTATION


def _upright(image: Any, orientation: int) -> Any:
    """The stored pixels turned as EXIF ``orientation`` says (the inverse of how the camera stored them)."""
    if orientation == 2:
        return cv2.flip(image, 1)
    if orientation == 3:
        return cv2.rotate(image, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(image, 0)
    if orientation == 5:
        return cv2.transpose(image)
    if orientation == 6:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.flip(cv2.transpose(image), -1)
    if orientation == 8:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image


@dataclass(frozen=True)
class _Decoded:
    image: Any  # upright BGR, reduced
    width: int  # upright size at full resolution
    height: int
    stored_width: int  # as the header says (the frame of device-reported boxes)
    stored_height: int
    orientation: int


def _decode(raw: bytes, max_pixels: int, min_side: int = DECODE_MIN_SIDE_PIXELS) -> _Decoded:
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
    image = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), _reduce_flag(content_type, max(width, height), min_side))
    if image is None or image.ndim != 3 or image.shape[0] == 0:
        raise _AnalysisError("decode_failed")
    orientation = exif_orientation(raw) if content_type == "image/jpeg" else 1
    upright_width, upright_height = upright_size(width, height, orientation)
    return _Decoded(_upright(image, orientation), upright_width, upright_height, width, height, orientation)


# ---------------------------------------------------------------------------------------------------- measures


def _resize(image: Any, size: tuple[int, int]) -> Any:
    if (image.shape[1], image.shape[0]) == size:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _resize_long_side(image: Any, side: int) -> Any:
    h, w = image.shape[:2]
    return _resize(image, thumbnail_size(w, h, side))


def _scaled(box: Box, fx: float, fy: float, width: int, height: int) -> Box | None:
    """``box`` scaled by (fx, fy) and clipped to width x height."""
    x0, y0 = max(0, round(box.x * fx)), max(0, round(box.y * fy))
    x1, y1 = min(width, round((box.x + box.w) * fx)), min(height, round((box.y + box.h) * fy))
    return Box(x=x0, y=y0, w=x1 - x0, h=y1 - y0) if x1 > x0 and y1 > y0 else None


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


def _thumbnail_source(image: Any, reduced: Any, size: tuple[int, int]) -> Any:
    """The metrics' copy (long side ``METRICS_SIDE_PIXELS``) when it is no smaller than the thumbnail: a 1080p
    scene's 320 and 80 px thumbnails cost ~0.2 ms from it, ~0.8 ms from the 960 px decode."""
    return reduced if reduced.shape[1] >= size[0] and reduced.shape[0] >= size[1] else image


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
    kinds: frozenset[DerivedKind],
    detect_faces: bool,
) -> Analysed:
    passes = CROP_PASS_SIDES_PIXELS if role == "face" else face_detector.PASS_SIDES_PIXELS
    # decoded no smaller than the detector's largest pass needs (without detection: the metrics' side)
    decoded = _decode(raw, max_pixels, max((METRICS_SIDE_PIXELS, *passes)) if detect_faces else METRICS_SIDE_PIXELS)
    image, width, height = decoded.image, decoded.width, decoded.height

    reduced = _resize_long_side(image, METRICS_SIDE_PIXELS)  # colour: the thumbnails are made from it too
    metrics = cv2.cvtColor(reduced, cv2.COLOR_BGR2GRAY)
    # Laplacian of 8-bit input fits int16 exactly; meanStdDev's variance equals numpy's var() of the float
    # Laplacian without a float64 copy of the image.
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(metrics, cv2.CV_16S))
    sharpness = float(lap_std[0][0]) ** 2
    mean, std = cv2.meanStdDev(metrics)
    brightness, contrast = float(mean[0][0]), float(std[0][0])

    # Faces on the upright reduced decode, scaled to the upright picture at full resolution.
    fx, fy = width / image.shape[1], height / image.shape[0]
    found = face_detector.detect_faces(image, passes=passes) if detect_faces else []
    detected = [b for b in (_scaled(box, fx, fy, width, height) for box in found) if b is not None]

    quality: Quality
    if brightness < thresholds.dark_brightness_max:
        quality = "dark"
    elif brightness > thresholds.overexposed_brightness_min:
        quality = "overexposed"
    elif sharpness < thresholds.blurry_sharpness_max:
        quality = "blurry"
    elif role == "face" and detect_faces and not detected:
        quality = "no_face"
    else:
        quality = "ok"
    analysis = ImageAnalysis(
        quality=quality,
        sharpness=round(sharpness, 2),
        brightness=round(min(255.0, max(0.0, brightness)), 2),
        contrast=round(max(0.0, contrast), 2),
        width=width,
        height=height,
        faces=sorted(detected, key=lambda b: (b.x, b.y)),
        phash=phash(metrics),
    )

    made: dict[DerivedKind, bytes] = {}
    if "thumbnail" in kinds:
        size = thumbnail_size(width, height, THUMBNAIL_SIDES_PIXELS["thumbnail"])
        made["thumbnail"] = _jpeg(_resize(_thumbnail_source(image, reduced, size), size))
    if "thumbnail_faces_blurred" in kinds and detect_faces:
        to_blur = list(detected)
        for box in known_faces:  # in the stored frame: turned upright with the picture
            turned = upright_box(box, decoded.orientation, width=decoded.stored_width, height=decoded.stored_height)
            if turned is not None:
                to_blur.append(turned)
        if role in WHOLE_BLUR_ROLES and not detected:
            to_blur.append(Box(x=0, y=0, w=width, h=height))
        size = thumbnail_size(width, height, THUMBNAIL_SIDES_PIXELS["thumbnail_faces_blurred"])
        thumb = _resize(_thumbnail_source(image, reduced, size), size)
        tx, ty = size[0] / width, size[1] / height
        # boxes grown outward to whole thumbnail pixels: a partly covered pixel is blurred too
        thumb_boxes = []
        for b in to_blur:
            x0, y0 = math.floor(b.x * tx), math.floor(b.y * ty)
            x1, y1 = math.ceil((b.x + b.w) * tx), math.ceil((b.y + b.h) * ty)
            thumb_boxes.append((x0, y0, max(1, x1 - x0), max(1, y1 - y0)))
        made["thumbnail_faces_blurred"] = _jpeg(blur_boxes(thumb, thumb_boxes))
    return Analysed(analysis, made.get("thumbnail"), made.get("thumbnail_faces_blurred"))


# ---------------------------------------------------------------------------------------------------- per event


def analyse_event(
    queued: QueuedEvent,
    *,
    s3: Any,
    raw_bucket: str,
    image_bucket: str,
    thresholds: Thresholds = Thresholds(),  # noqa: B008 - frozen dataclass, immutable default
    kinds: frozenset[DerivedKind] = DEFAULT_DERIVED_KINDS,
) -> QueuedEvent:
    """Analyse every image of a queued event: one GetObject per image, one PutObject per derived image of
    ``kinds`` (only the kinds a destination's policy uses: an unblurred thumbnail nobody reads is not kept).

    A corrupt image yields an ``error`` analysis and no derived images; the event always goes on. S3 errors
    propagate, so the message is retried (and ends in the DLQ if it keeps failing).
    """
    box = (queued.event.get("face") or {}).get("box")
    images = []
    for stored in queued.images:
        version = {"VersionId": stored.version_id} if stored.version_id else {}  # the bytes the API checked
        raw = s3.get_object(Bucket=raw_bucket, Key=stored.ref, **version)["Body"].read()
        known = (Box.model_validate(box),) if box and stored.role == "scene" else ()
        result = analyse_image(raw, role=stored.role, known_faces=known, thresholds=thresholds, kinds=kinds)
        derived: dict[DerivedKind, str] = {}
        for kind, body in result.derived.items():
            key = derived_key(kind, hashlib.sha256(body).hexdigest())
            s3.put_object(Bucket=image_bucket, Key=key, Body=body, ContentType="image/jpeg")
            derived[kind] = key
        images.append(stored.model_copy(update={"analysis": result.analysis, "derived": derived}))
    return queued.model_copy(update={"images": images})
