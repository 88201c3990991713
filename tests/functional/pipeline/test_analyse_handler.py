"""The analyse function on moto: real images in the raw bucket, derived images out, events on to process.

GIVEN a batch with a face capture, a corrupt image and a GIF smuggled past the API, WHEN the analyse
function handles it, THEN no record fails, every event goes on to the process queue with its analysis, and
S3 sees one read per image and one write per derived image.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

import boto3
import cv2
import numpy as np

from anfang.contracts import QueuedEvent, StoredImage, new_event_id, validate_event
from anfang.contracts.examples import example_events
from tests.pipeline_events import RECEIVED_AT
from tests.pipeline_fixtures import image_bytes
from tests.pipeline_stack import REGION, Stack, count_calls, drain, drive, load_handler

handler = load_handler("analyse")


def _queue_event(stack: Stack, event_type: str, images: dict[str, bytes], *, declared: str = "image/jpeg") -> str:
    event = example_events()[event_type]
    event["event_id"] = new_event_id()
    model = validate_event(event)
    s3 = stack.client("s3")
    stored = []
    for role, raw in images.items():
        key = f"raw/{model.event_id}/{role}"
        s3.put_object(Bucket=stack.env["RAW_IMAGE_BUCKET_NAME"], Key=key, Body=raw)
        stored.append(
            StoredImage(
                role=role,  # type: ignore[arg-type]
                content_type=declared,  # type: ignore[arg-type]
                sha256=hashlib.sha256(raw).hexdigest(),
                size_bytes=len(raw),
                width=1920 if role == "scene" else 316,
                height=1080 if role == "scene" else 390,
                ref=key,
            )
        )
    queued = QueuedEvent.of(model, received_at=RECEIVED_AT, key_id="k1", images=stored)
    stack.client("sqs").send_message(QueueUrl=stack.analyse_queue, MessageBody=queued.model_dump_json(by_alias=True))
    return model.event_id


def test_a_batch_with_corrupt_and_hostile_images_goes_on_whole(stack: Stack, monkeypatch: Any) -> None:
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    handler.analyser.cache_clear()
    face = image_bytes("face_crop.jpg")
    scene = image_bytes("scene_face_1920x1080.jpg")
    ids = {
        "face": _queue_event(stack, "face_capture", {"face": face, "scene": scene}),
        "truncated": _queue_event(stack, "alarm", {"scene": scene[: len(scene) // 2]}),
        "gif": _queue_event(stack, "alarm", {"scene": b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + b"\x00" * 32}),
    }
    calls: Counter[str] = Counter()
    # the handler builds its clients from boto3's default session: count there
    boto3.setup_default_session(region_name=REGION)
    count_calls(boto3.DEFAULT_SESSION, calls)
    sqs = stack.client("sqs")

    invocations = drive(sqs, stack.analyse_queue, lambda event: handler.lambda_handler(event, None))

    assert invocations == 1  # nothing retried
    out = {
        json.loads(m["Body"])["event_id"]: QueuedEvent.model_validate_json(m["Body"])
        for m in drain(sqs, stack.process_queue)
    }
    assert set(out) == set(ids.values())
    face_event = out[ids["face"]]
    face_image, scene_image = face_event.images
    assert face_image.analysis is not None and face_image.analysis.quality == "ok"
    assert face_image.analysis.faces
    assert scene_image.analysis is not None and len(scene_image.analysis.faces) >= 1
    # only what a policy sends is made and stored (DERIVED_IMAGES): no unblurred thumbnail nobody reads
    assert set(scene_image.derived) == {"thumbnail_faces_blurred"}
    for label, event_id in (("truncated", ids["truncated"]), ("unsupported_format", ids["gif"])):
        (image,) = out[event_id].images
        assert image.analysis is not None and image.analysis.quality == "error" and image.analysis.error == label
        assert image.derived == {}
    # one GetObject per image, one PutObject per derived image (2 images analysed x 1 derived)
    assert calls["s3.GetObject"] == 4
    assert calls["s3.PutObject"] == 2
    assert calls["sqs.SendMessageBatch"] == 1
    # the derived images are real JPEGs of at most 80 px (the face-blurred thumbnail's side)
    s3 = stack.client("s3")
    key = scene_image.derived["thumbnail_faces_blurred"]
    body = s3.get_object(Bucket=stack.env["IMAGE_BUCKET_NAME"], Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() in key
    thumb = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert thumb.shape[:2] == (45, 80)
    keys = stack.client("s3").list_objects_v2(Bucket=stack.env["IMAGE_BUCKET_NAME"])["Contents"]
    assert all(k["Key"].startswith("derived/thumbnail_faces_blurred/") for k in keys)


def test_a_missing_raw_image_is_retried_then_dead_lettered(stack: Stack, monkeypatch: Any) -> None:
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    handler.analyser.cache_clear()
    good = _queue_event(stack, "alarm", {"scene": image_bytes("scene_noface_1280x720.jpg")})
    lost = _queue_event(stack, "alarm", {"scene": image_bytes("face_crop.jpg")})
    stack.client("s3").delete_object(Bucket=stack.env["RAW_IMAGE_BUCKET_NAME"], Key=f"raw/{lost}/scene")
    sqs = stack.client("sqs")

    drive(sqs, stack.analyse_queue, lambda event: handler.lambda_handler(event, None))

    assert [json.loads(m["Body"])["event_id"] for m in drain(sqs, stack.process_queue)] == [good]
    assert [json.loads(m["Body"])["event_id"] for m in drain(sqs, stack.analyse_dlq)] == [lost]
