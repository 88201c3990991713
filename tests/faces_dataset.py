"""The labeled face benchmark: 1920x1080 scenes with real faces pasted at known boxes, built at test time.

Faces come from packages, never from files copied into the repository: the 100 faces of the LFW subset that
scikit-image ships (``skimage/data/lfw_subset.npy``: 25x25 grey crops, rows 0-99 faces, 100-199 non-faces)
and the astronaut (``skimage/data/astronaut.png``); backgrounds are scikit-image's face-free sample photos.
scikit-image is installed without its dependencies (Makefile) and never imported: its files are located
with ``importlib.metadata``.

Every face is labeled with its box in the *upright* frame (after EXIF orientation) and its width as a share
of the scene's long side. Variations: sizes 3-20% of the long side, horizontal flips, brightness and
contrast per face, JPEG quality per scene (40-95), tilt up to +-30 degrees (the ``tilted`` scenes),
EXIF-rotated scenes (pixels stored rotated, orientation 3, 6 or 8 in an APP1 segment) and face-free scenes
(with the LFW non-face patches pasted the same way, so a detector cannot key on pasting seams).

The builder is deterministic for a seed: the same scenes, bytes for bytes, on every run.

>>> scenes = build_scenes(upright=2, tilted=0, exif=0, face_free=1)
>>> [(s.kind, len(s.faces)) for s in scenes]
[('upright', 8), ('upright', 8), ('face_free', 0)]
"""

from __future__ import annotations

import importlib.metadata
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final, Literal

import cv2
import numpy as np

SCENE_SIZE: Final = (1920, 1080)
FACES_PER_SCENE: Final = 8
#: Size bins: face width as a share of the long side, [edge, next edge); the last bin includes 20%.
SIZE_EDGES: Final = (0.03, 0.04, 0.05, 0.065, 0.08, 0.10, 0.15, 0.20)
SIZE_BINS: Final = tuple(zip(SIZE_EDGES[:-1], SIZE_EDGES[1:], strict=True))
MAX_TILT_DEGREES: Final = 30.0
#: EXIF orientation -> how the stored pixels are turned from the upright scene.
_STORE_ROTATION: Final = {
    3: cv2.ROTATE_180,
    6: cv2.ROTATE_90_COUNTERCLOCKWISE,  # orientation 6: display = stored turned 90 degrees clockwise
    8: cv2.ROTATE_90_CLOCKWISE,
}
#: scikit-image sample photos without a human face (the cat stays: a detector firing on it is a false one).
_BACKGROUNDS: Final = (
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "chelsea.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
)
#: The astronaut's face inside ``astronaut.png`` (x, y, w, h), cut like the LFW crops (brows to chin).
_ASTRONAUT_FACE: Final = (172, 62, 104, 118)
#: Pixels of replicated border around a 25x25 LFW crop: the blending ramp lies there, not on the face.
_RIM: Final = 3

SceneKind = Literal["upright", "tilted", "exif", "face_free"]


@dataclass(frozen=True)
class LabeledFace:
    """A pasted face: its box in upright scene pixels, width share of the long side, tilt in degrees."""

    box: tuple[int, int, int, int]
    share: float
    tilt: float = 0.0

    @property
    def centre(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2, y + h / 2

    @property
    def size_bin(self) -> int:
        """Index into :data:`SIZE_BINS`."""
        return max(i for i, (low, _) in enumerate(SIZE_BINS) if self.share >= low - 1e-9)


@dataclass(frozen=True)
class Scene:
    """One labeled scene: the JPEG a camera would send and its faces in the upright frame."""

    name: str
    kind: SceneKind
    jpeg: bytes
    faces: tuple[LabeledFace, ...]
    orientation: int = 1


# ---------------------------------------------------------------------------------------------------- sources


def skimage_data(name: str) -> Path:
    """Path of a file in scikit-image's ``skimage/data`` (installed, not imported)."""
    try:
        path = Path(str(importlib.metadata.distribution("scikit-image").locate_file(f"skimage/data/{name}")))
    except importlib.metadata.PackageNotFoundError as exc:  # pragma: no cover - make venv installs it
        raise FileNotFoundError("scikit-image is not installed (make venv installs it without deps)") from exc
    if not path.exists():  # pragma: no cover
        raise FileNotFoundError(path)
    return path


@cache
def _lfw() -> Any:
    return np.load(skimage_data("lfw_subset.npy"))


@cache
def face_sources() -> tuple[tuple[Any, tuple[int, int, int, int]], ...]:
    """(BGR patch, face box in the patch) for the 100 LFW faces and the astronaut (with hair and collar)."""
    sources: list[tuple[Any, tuple[int, int, int, int]]] = []
    for grey in _lfw()[:100]:
        patch = cv2.cvtColor(np.round(grey * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        # the crop is all face: a replicated rim takes the feathering, so the face's outline stays whole
        patch = cv2.copyMakeBorder(patch, _RIM, _RIM, _RIM, _RIM, cv2.BORDER_REPLICATE)
        sources.append((patch, (_RIM, _RIM, 25, 25)))
    astronaut = cv2.imread(str(skimage_data("astronaut.png")), cv2.IMREAD_COLOR)
    x, y, w, h = _ASTRONAUT_FACE
    mx, my = w // 3, h // 3
    patch = astronaut[y - my : y + h + my, x - mx : x + w + mx].copy()
    sources.append((patch, (mx, my, w, h)))
    return tuple(sources)


@cache
def non_face_sources() -> tuple[Any, ...]:
    """The 100 LFW non-face patches, as BGR."""
    return tuple(cv2.cvtColor(np.round(g * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR) for g in _lfw()[100:])


@cache
def _background_photo(name: str) -> Any:
    image = cv2.imread(str(skimage_data(name)), cv2.IMREAD_COLOR)
    if image is None:  # pragma: no cover
        raise FileNotFoundError(name)
    return image


def _background(rng: np.random.Generator) -> Any:
    """A 1920x1080 background: a random crop of a sample photo scaled to cover the scene, flipped at random."""
    width, height = SCENE_SIZE
    photo = _background_photo(_BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))])
    ph, pw = photo.shape[:2]
    scale = max(width / pw, height / ph) * float(rng.uniform(1.0, 1.6))
    big = cv2.resize(photo, (round(pw * scale) + 1, round(ph * scale) + 1), interpolation=cv2.INTER_CUBIC)
    x0 = int(rng.integers(0, big.shape[1] - width + 1))
    y0 = int(rng.integers(0, big.shape[0] - height + 1))
    out = big[y0 : y0 + height, x0 : x0 + width]
    return cv2.flip(out, 1) if rng.random() < 0.5 else out.copy()


# ---------------------------------------------------------------------------------------------------- pasting


def _feather(h: int, w: int, border: float) -> Any:
    """An alpha mask of 1 inside and a linear ramp to 0 over ``border`` of the size at each edge."""
    ramp_y = np.clip(np.minimum(np.arange(h) + 0.5, h - np.arange(h) - 0.5) / max(1.0, h * border), 0, 1)
    ramp_x = np.clip(np.minimum(np.arange(w) + 0.5, w - np.arange(w) - 0.5) / max(1.0, w * border), 0, 1)
    return np.outer(ramp_y, ramp_x).astype(np.float32)


def _paste(
    scene: Any,
    patch: Any,
    face: tuple[int, int, int, int],
    centre: tuple[float, float],
    face_width: int,
    *,
    tilt: float,
    gain: float,
    bias: float,
) -> None:
    """Blend ``patch`` into ``scene`` so that its ``face`` box is ``face_width`` wide and centred at ``centre``."""
    fx, fy, fw, fh = face
    scale = face_width / fw
    ph, pw = patch.shape[:2]
    size = (max(1, round(pw * scale)), max(1, round(ph * scale)))
    interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    big = cv2.resize(patch, size, interpolation=interpolation).astype(np.float32) * gain + bias
    alpha = _feather(size[1], size[0], 0.1)
    # where the face centre lands inside the scaled patch
    cx, cy = (fx + fw / 2) * scale, (fy + fh / 2) * scale
    matrix = cv2.getRotationMatrix2D((cx, cy), tilt, 1.0)
    radius = int(np.ceil(np.hypot(size[0], size[1])))
    matrix[0, 2] += centre[0] - cx
    matrix[1, 2] += centre[1] - cy
    x0, y0 = max(0, int(centre[0]) - radius), max(0, int(centre[1]) - radius)
    x1, y1 = min(scene.shape[1], int(centre[0]) + radius), min(scene.shape[0], int(centre[1]) + radius)
    matrix[0, 2] -= x0
    matrix[1, 2] -= y0
    region = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(big, matrix, region, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpAffine(alpha, matrix, region, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[..., None]
    target = scene[y0:y1, x0:x1].astype(np.float32)
    scene[y0:y1, x0:x1] = np.clip(target * (1 - mask) + warped * mask, 0, 255).astype(np.uint8)


def paste_face(scene: Any, width: int, centre: tuple[float, float], *, tilt: float = 0.0) -> LabeledFace:
    """Paste the astronaut's face (with hair and collar) into ``scene`` in place, ``width`` px wide, centred at
    ``centre`` and tilted by ``tilt`` degrees; returns its label (box in ``scene``'s pixels)."""
    patch, box = face_sources()[-1]
    _paste(scene, patch, box, centre, width, tilt=tilt, gain=1.0, bias=0.0)
    height = round(width * box[3] / box[2])
    x, y = round(centre[0] - width / 2), round(centre[1] - height / 2)
    return LabeledFace((x, y, width, height), share=width / max(scene.shape[:2]), tilt=tilt)


def _place(rng: np.random.Generator, widths: list[int], aspect: float = 1.25) -> list[tuple[float, float]] | None:
    """Centres for faces of these widths, apart from each other and inside the scene (None if it fails)."""
    width, height = SCENE_SIZE
    placed: list[tuple[float, float, float]] = []
    for w in widths:
        r = w * aspect * 0.75 + 6  # keep faces and their pasted context apart
        for _ in range(400):
            cx = float(rng.uniform(r, width - r))
            cy = float(rng.uniform(r, height - r)) if height > 2 * r else height / 2
            if all(np.hypot(cx - px, cy - py) > r + pr for px, py, pr in placed):
                placed.append((cx, cy, r))
                break
        else:
            return None
    return [(x, y) for x, y, _ in placed]


# ---------------------------------------------------------------------------------------------------- scenes


def _compose(rng: np.random.Generator, *, tilted: bool, with_faces: bool) -> tuple[Any, list[LabeledFace]]:
    width, _ = SCENE_SIZE
    scene = _background(rng)
    # one face per size bin (sizes uniform within it) and one more from a random bin: every bin gets faces
    bins = [*range(len(SIZE_BINS)), int(rng.integers(len(SIZE_BINS)))]
    shares = [float(rng.uniform(*SIZE_BINS[b])) for b in bins]
    widths = sorted((max(8, round(s * width)) for s in shares), reverse=True)
    for _ in range(20):
        centres = _place(rng, widths)
        if centres is not None:
            break
    else:  # pragma: no cover - 8 faces always fit in 1920x1080
        raise RuntimeError("cannot place the faces")
    faces: list[LabeledFace] = []
    sources = face_sources() if with_faces else tuple((p, (0, 0, 25, 25)) for p in non_face_sources())
    for w, (cx, cy) in zip(widths, centres, strict=True):
        patch, box = sources[int(rng.integers(len(sources)))]
        if rng.random() < 0.5:
            patch = cv2.flip(patch, 1)
            box = (patch.shape[1] - box[0] - box[2], box[1], box[2], box[3])
        tilt = float(rng.uniform(-MAX_TILT_DEGREES, MAX_TILT_DEGREES)) if tilted else 0.0
        gain, bias = float(rng.uniform(0.6, 1.3)), float(rng.uniform(-25, 25))
        _paste(scene, patch, box, (cx, cy), w, tilt=tilt, gain=gain, bias=bias)
        h = round(w * box[3] / box[2])
        if with_faces:
            faces.append(LabeledFace((round(cx - w / 2), round(cy - h / 2), w, h), share=w / width, tilt=tilt))
    return scene, faces


def _encode(image: Any, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover
        raise RuntimeError("jpeg encoding failed")
    return bytes(buf.tobytes())


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an APP1 Exif segment holding only the orientation tag (0x0112), right after SOI."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def build_scenes(
    *, upright: int = 40, tilted: int = 16, exif: int = 12, face_free: int = 20, seed: int = 13
) -> list[Scene]:
    """The labeled scenes, in this order: upright, tilted (+-30 degrees), EXIF-rotated, face-free."""
    rng = np.random.default_rng(seed)
    scenes: list[Scene] = []
    plan: list[SceneKind] = ["upright"] * upright + ["tilted"] * tilted + ["exif"] * exif + ["face_free"] * face_free
    for i, kind in enumerate(plan):
        image, faces = _compose(rng, tilted=kind == "tilted", with_faces=kind != "face_free")
        quality = int(rng.integers(40, 96))
        if kind == "exif":
            orientation = (3, 6, 8)[i % 3]
            jpeg = with_exif_orientation(_encode(cv2.rotate(image, _STORE_ROTATION[orientation]), quality), orientation)
        else:
            orientation, jpeg = 1, _encode(image, quality)
        scenes.append(Scene(f"{kind}-{i:03d}", kind, jpeg, tuple(faces), orientation))
    return scenes


# ---------------------------------------------------------------------------------------------------- scoring

#: A detector under test: a scene in, face boxes (x, y, w, h) in the upright frame and seconds spent out.
Detector = Callable[[Scene], tuple[list[tuple[float, float, float, float]], float]]


@dataclass
class Score:
    """What a detector found on a set of scenes: a face counts as found if its centre is inside a detection."""

    found: list[int]
    total: list[int]
    tilted: tuple[int, int] = (0, 0)
    exif: tuple[int, int] = (0, 0)
    false_per_face_free_scene: float = 0.0
    false_per_face_scene: float = 0.0
    ms_per_scene: float = 0.0
    ms_per_scene_median: float = 0.0

    def recall(self, size_bin: int) -> float:
        return self.found[size_bin] / self.total[size_bin] if self.total[size_bin] else float("nan")

    def recall_from(self, share: float) -> float:
        """Recall over every upright face of at least this share of the long side (by bin lower edge)."""
        bins = [i for i, (low, _) in enumerate(SIZE_BINS) if low >= share - 1e-9]
        total = sum(self.total[i] for i in bins)
        return sum(self.found[i] for i in bins) / total if total else float("nan")

    def smallest_reliable_share(self, floor: float = 0.99) -> float | None:
        """The lower edge of the smallest size bin from which every bin has recall >= ``floor``."""
        smallest = None
        for i in reversed(range(len(SIZE_BINS))):
            if self.recall(i) < floor:
                break
            smallest = SIZE_BINS[i][0]
        return smallest

    def row(self, name: str) -> str:
        """A markdown table row: name, ms/scene, recall per bin, tilted, EXIF, false detections."""
        cells = [f"{f}/{t}" for f, t in zip(self.found, self.total, strict=True)]
        return (
            f"| {name} | {self.ms_per_scene_median:.1f} | "
            + " | ".join(cells)
            + f" | {self.tilted[0]}/{self.tilted[1]} | {self.exif[0]}/{self.exif[1]}"
            + f" | {self.false_per_face_free_scene:.2f} | {self.false_per_face_scene:.2f} |"
        )


def table_header() -> str:
    bins = " | ".join(f"{low * 100:g}-{high * 100:g}%" for low, high in SIZE_BINS)
    cols = len(SIZE_BINS) + 6
    return (
        f"| detector | ms/scene | {bins} | tilted +-30 | EXIF-rotated | false / face-free scene | "
        "false / face scene |\n" + "|---" * cols + "|"
    )


def _contains(box: tuple[float, float, float, float], point: tuple[float, float]) -> bool:
    x, y, w, h = box
    return x <= point[0] <= x + w and y <= point[1] <= y + h


def score(scenes: list[Scene], detect: Detector) -> Score:
    """Run ``detect`` on every scene and score it against the labels."""
    found, total = [0] * len(SIZE_BINS), [0] * len(SIZE_BINS)
    tilted, exif = [0, 0], [0, 0]
    false_free = false_faces = free_scenes = face_scenes = 0
    times = []
    for scene in scenes:
        boxes, seconds = detect(scene)
        times.append(seconds)
        for face in scene.faces:
            hit = any(_contains(b, face.centre) for b in boxes)
            if scene.kind == "upright":
                found[face.size_bin] += hit
                total[face.size_bin] += 1
            else:
                counter = tilted if scene.kind == "tilted" else exif
                counter[0] += hit
                counter[1] += 1
        false = sum(1 for b in boxes if not any(_contains(b, f.centre) for f in scene.faces))
        if scene.kind == "face_free":
            false_free += false
            free_scenes += 1
        else:
            false_faces += false
            face_scenes += 1
    return Score(
        found=found,
        total=total,
        tilted=(tilted[0], tilted[1]),
        exif=(exif[0], exif[1]),
        false_per_face_free_scene=false_free / max(1, free_scenes),
        false_per_face_scene=false_faces / max(1, face_scenes),
        ms_per_scene=1000 * sum(times) / max(1, len(times)),
        ms_per_scene_median=1000 * float(np.median(times)) if times else 0.0,
    )
