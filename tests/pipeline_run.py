"""Real images through the real pipeline on moto: raw bucket → analyse handler → process handler → both
destination queues, and the derived images fetched back from the image bucket.

For the tests that attack the gov cloud's images (tests/functional/pipeline/test_gov_cloud_images.py,
test_privacy.py): nothing between the raw image and the record is replaced.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pytest

from anfang.contracts import QueuedEvent, SiteView, StoredImage, new_event_id, validate_event
from anfang.contracts.examples import example_events
from anfang.pipeline.analyse import image_size
from anfang.pipeline.process_wiring import build_processor
from tests.pipeline_events import DEVICE_ID, RECEIVED_AT
from tests.pipeline_stack import MemoryHealthCodes, MemorySites, Stack, drain, drive, load_handler, person_key

analyse_handler = load_handler("analyse")
process_handler = load_handler("process")
SITES = MemorySites({DEVICE_ID: SiteView(site_id="xihu-garden", site_type="residential_closed", name="Xihu Garden")})


@dataclass(frozen=True)
class Delivered:
    """What each destination received for one event, and the raw images that went in."""

    event_id: str
    raw: dict[str, bytes]
    gov_cloud: dict[str, Any]
    police_video: dict[str, Any]

    def gov_image(self, role: str) -> dict[str, Any] | None:
        return next((image for image in self.gov_cloud["images"] if image["role"] == role), None)


def queue_for_analysis(
    stack: Stack, event_type: str, images: dict[str, bytes], *, face_box: dict[str, int] | None = None
) -> str:
    """Store ``images`` in the raw bucket as the API would and queue the event for the analyse function."""
    event = example_events()[event_type]
    event["event_id"] = new_event_id()
    event["device_id"] = DEVICE_ID
    event["images"] = [
        {
            "role": role,
            "content_type": "image/jpeg",
            "data": base64.b64encode(raw).decode(),
            "sha256": hashlib.sha256(raw).hexdigest(),
        }
        for role, raw in images.items()
    ]
    if face_box is not None:
        event["face"] = {"box": face_box}
    else:
        event.pop("face", None)
    model = validate_event(event)
    s3 = stack.client("s3")
    stored = []
    for role, raw in images.items():
        key = f"raw/{model.event_id}/{role}"
        s3.put_object(Bucket=stack.env["RAW_IMAGE_BUCKET_NAME"], Key=key, Body=raw)
        try:
            content_type, width, height = image_size(raw)
        except ValueError:  # a corrupt image that got past the API: what it declared
            content_type, width, height = "image/jpeg", 1280, 720
        stored.append(
            StoredImage(
                role=role,  # type: ignore[arg-type]
                content_type=content_type,  # type: ignore[arg-type]
                sha256=hashlib.sha256(raw).hexdigest(),
                size_bytes=len(raw),
                width=width,
                height=height,
                ref=key,
            )
        )
    queued = QueuedEvent.of(model, received_at=RECEIVED_AT, key_id="k1", images=stored)
    stack.client("sqs").send_message(QueueUrl=stack.analyse_queue, MessageBody=queued.model_dump_json(by_alias=True))
    return model.event_id


def run_pipeline(
    stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
    events: list[tuple[str, dict[str, bytes], dict[str, int] | None]],
    **analyse_env: str,
) -> dict[str, Delivered]:
    """Each (event type, images by role, device face box) through the analyse and process functions."""
    for name, value in {**stack.env, **analyse_env}.items():
        monkeypatch.setenv(name, value)
    analyse_handler.analyser.cache_clear()
    raws = {}
    for event_type, images, box in events:
        raws[queue_for_analysis(stack, event_type, images, face_box=box)] = images
    sqs = stack.client("sqs")
    drive(sqs, stack.analyse_queue, lambda event: analyse_handler.lambda_handler(event, None))
    settings = process_handler.Settings.model_validate(stack.env)
    processor = build_processor(
        settings, sites=SITES, health_codes=MemoryHealthCodes(), person_key=person_key, session=stack.session
    )
    drive(sqs, stack.process_queue, lambda event: process_handler.handle(event, processor))
    assert drain(sqs, stack.analyse_dlq) == [] and drain(sqs, stack.process_dlq) == []
    records: dict[str, dict[str, dict[str, Any]]] = {}
    for destination, url in (("gov_cloud", stack.gov_queue), ("police_video", stack.police_queue)):
        for message in drain(sqs, url):
            record = json.loads(message["Body"])
            records.setdefault(record["event_id"], {})[destination] = record
    return {
        event_id: Delivered(event_id, raw, records[event_id]["gov_cloud"], records[event_id]["police_video"])
        for event_id, raw in raws.items()
    }


def fetch(stack: Stack, ref: str) -> bytes:
    """The object an ``s3://bucket/key`` reference points at."""
    bucket, key = ref.removeprefix("s3://").split("/", 1)
    return bytes(stack.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def decode(raw: bytes) -> Any:
    """A JPEG as OpenCV shows it (EXIF orientation applied)."""
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def jpeg(image: Any, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return bytes(buf.tobytes())
