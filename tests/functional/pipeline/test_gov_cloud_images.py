"""The gov cloud never receives a face: real pictures through the real analyse and process functions on moto.

GIVEN scenes with a real face pasted at a known place (upright, tilted, stored sideways with EXIF orientation
6, at sizes around the smallest the detector finds reliably), a person picture whose face the detector misses,
a corrupt picture and a missing face model, WHEN they go through the pipeline, THEN the gov cloud's thumbnail
has every face region blurred (or, below the reliable size, at most 12 px wide), a person picture without a
found face is blurred whole, a failed analysis sends the gov cloud no image at all, and the police still get
their originals.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

from anfang.pipeline import faces
from anfang.pipeline.thumbnails import (
    BLURRED_THUMBNAIL_MAX_SIDE_PIXELS,
    UNRECOGNISABLE_FACE_PIXELS,
    thumbnail_size,
)
from tests.faces_dataset import LabeledFace, paste_face, with_exif_orientation
from tests.pipeline_fixtures import image_bytes
from tests.pipeline_run import Delivered, decode, fetch, jpeg, run_pipeline
from tests.pipeline_stack import Stack

#: Where the face goes in the 1280x720 face-free fixture (away from the one false box the detector finds there).
CENTRE = (900.0, 380.0)


def _scene_with_face(share: float, *, tilt: float = 0.0) -> tuple[Any, LabeledFace]:
    scene = decode(image_bytes("scene_noface_1280x720.jpg"))
    face = paste_face(scene, round(share * 1280), CENTRE, tilt=tilt)
    return scene, face


def _thumbnail(stack: Stack, delivered: Delivered, role: str) -> Any:
    image = delivered.gov_image(role)
    assert image is not None, delivered.gov_cloud
    body = fetch(stack, image["ref"])
    assert hashlib.sha256(body).hexdigest() == image["sha256"]
    thumb = decode(body)
    assert (thumb.shape[1], thumb.shape[0]) == (image["width"], image["height"])
    assert max(thumb.shape[:2]) <= BLURRED_THUMBNAIL_MAX_SIDE_PIXELS
    return thumb


def _region(box: tuple[int, int, int, int], scale: float) -> tuple[slice, slice]:
    x, y, w, h = box
    return slice(int(y * scale), int(np.ceil((y + h) * scale))), slice(int(x * scale), int(np.ceil((x + w) * scale)))


def _changed_inside(thumb: Any, upright: Any, face: LabeledFace) -> tuple[float, float]:
    """Mean absolute difference from the unblurred picture at thumbnail size, inside the face's box and outside
    it (and its 25% margin, plus 3 px)."""
    reference = cv2.resize(upright, (thumb.shape[1], thumb.shape[0]), interpolation=cv2.INTER_AREA).astype(float)
    diff = np.abs(thumb.astype(float) - reference)
    scale = thumb.shape[1] / upright.shape[1]
    rows, cols = _region(face.box, scale)
    x, y, w, h = face.box
    grown = _region((x - w // 4, y - h // 4, w + w // 2, h + h // 2), scale)
    mask = np.ones(thumb.shape[:2], bool)
    mask[max(0, grown[0].start - 3) : grown[0].stop + 3, max(0, grown[1].start - 3) : grown[1].stop + 3] = False
    return float(diff[rows, cols].mean()), float(diff[mask].mean())


CASES = {
    # share of the long side, tilt, EXIF orientation the camera stored it with
    "upright, just above the reliable size": (0.16, 0.0, 1),
    "tilted 25 degrees": (0.18, 25.0, 1),
    "tilted -25 degrees": (0.18, -25.0, 1),
    "stored sideways, EXIF orientation 6": (0.18, 0.0, 6),
    "stored upside down, EXIF orientation 3": (0.18, 0.0, 3),
}


def test_faces_in_the_gov_cloud_thumbnail_are_blurred(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN alarm events whose scene has a real face pasted at a known place, upright, tilted or stored turned
    scenes = {}
    events = []
    for name, (share, tilt, orientation) in CASES.items():
        upright, face = _scene_with_face(share, tilt=tilt)
        stored = {
            1: upright,
            6: cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE),
            3: cv2.rotate(upright, cv2.ROTATE_180),
        }
        raw = with_exif_orientation(jpeg(stored[orientation]), orientation) if orientation != 1 else jpeg(upright)
        scenes[name] = (upright, face)
        events.append(("alarm", {"scene": raw}, None))
    # WHEN they go through the analyse and process functions
    delivered = list(run_pipeline(stack, monkeypatch, events).values())
    # THEN for each, the gov cloud's thumbnail is the upright picture at <= 80 px with the face region blurred
    for (name, (upright, face)), event in zip(scenes.items(), delivered, strict=True):
        image = event.gov_image("scene")
        assert image is not None, name
        analysis = image["analysis"]
        assert (analysis["width"], analysis["height"]) == (1280, 720), name
        assert (image["width"], image["height"]) == thumbnail_size(1280, 720, BLURRED_THUMBNAIL_MAX_SIDE_PIXELS)
        cx, cy = face.centre
        assert any(b["x"] <= cx <= b["x"] + b["w"] and b["y"] <= cy <= b["y"] + b["h"] for b in analysis["faces"]), (
            name,
            analysis["faces"],
        )
        inside, outside = _changed_inside(_thumbnail(stack, event, "scene"), upright, face)
        assert inside > 12 and inside > 3 * outside, (name, inside, outside)
        # the police get the original as the camera stored it
        (police,) = event.police_video["images"]
        assert police["sha256"] == hashlib.sha256(event.raw["scene"]).hexdigest()


def test_a_face_below_the_reliable_size_is_at_most_12_px_wide_in_the_gov_cloud_thumbnail(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a face just below the smallest size the detector finds reliably, in a 1080p-wide scene
    width = round(faces.RELIABLE_MIN_FACE_SHARE * 1280) - 1
    upright = decode(image_bytes("scene_noface_1280x720.jpg"))
    paste_face(upright, width, CENTRE)
    # WHEN it goes through the pipeline
    (event,) = run_pipeline(stack, monkeypatch, [("alarm", {"scene": jpeg(upright)}, None)]).values()
    # THEN found or not, it is at most 12 px wide in what the gov cloud gets (privacy by resolution)
    thumb = _thumbnail(stack, event, "scene")
    assert width * thumb.shape[1] / 1280 <= UNRECOGNISABLE_FACE_PIXELS


def _motion_blurred_face() -> bytes:
    """The face crop smeared by 35 px of horizontal motion: plainly a face, and one the detector misses."""
    picture = decode(image_bytes("face_crop.jpg"))
    kernel = np.zeros((35, 35), np.float32)
    kernel[17, :] = 1 / 35
    return jpeg(cv2.filter2D(picture, -1, kernel))


def test_a_person_picture_whose_face_is_not_found_is_blurred_whole(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an access event with a person picture in which the detector finds no face
    raw = _motion_blurred_face()
    assert faces.detect_faces(decode(raw)) == []
    # WHEN it goes through the pipeline
    (event,) = run_pipeline(stack, monkeypatch, [("access", {"person": raw}, None)]).values()
    # THEN the gov cloud's thumbnail of it is blurred whole: no part keeps the picture's detail
    image = event.gov_image("person")
    assert image is not None and image["analysis"]["faces"] == []
    thumb = _thumbnail(stack, event, "person").astype(float)
    reference = cv2.resize(decode(raw), (thumb.shape[1], thumb.shape[0]), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(thumb - reference).mean() > 10
    for rows in (slice(0, thumb.shape[0] // 2), slice(thumb.shape[0] // 2, None)):
        for cols in (slice(0, thumb.shape[1] // 2), slice(thumb.shape[1] // 2, None)):
            lap = [
                cv2.Laplacian(cv2.cvtColor(a[rows, cols].astype(np.uint8), cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
                for a in (thumb, reference)
            ]
            assert lap[0] < lap[1] / 3, lap


@pytest.fixture
def face_model_uninstalled(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The face model's package as if the imaging layer had been built without it."""

    def missing(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    faces._model.cache_clear()
    faces._net.cache_clear()
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    yield
    monkeypatch.setattr(importlib.metadata, "distribution", importlib.metadata.distribution)
    faces._model.cache_clear()
    faces._net.cache_clear()


def _gov_gets_no_image_and_police_the_original(event: Delivered, error: str) -> None:
    assert event.gov_cloud["images"] == [], event.gov_cloud
    (police,) = event.police_video["images"]
    assert police["sha256"] == hashlib.sha256(event.raw["scene"]).hexdigest()
    assert police["analysis"]["quality"] == "error" and police["analysis"]["error"] == error


def test_a_corrupt_picture_gives_the_gov_cloud_no_image(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    scene = image_bytes("scene_face_1920x1080.jpg")
    (event,) = run_pipeline(stack, monkeypatch, [("alarm", {"scene": scene[: len(scene) // 2]}, None)]).values()
    _gov_gets_no_image_and_police_the_original(event, "truncated")


def test_without_the_face_model_the_gov_cloud_gets_no_image(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, face_model_uninstalled: None
) -> None:
    # GIVEN the face model is missing from the analyse function's layer
    # WHEN a face capture goes through the pipeline
    events = [("alarm", {"scene": image_bytes("scene_face_1920x1080.jpg")}, None)]
    (event,) = run_pipeline(stack, monkeypatch, events).values()
    # THEN the event is delivered to both, the gov cloud without any image and the police with the original
    _gov_gets_no_image_and_police_the_original(event, "face_model_missing")
