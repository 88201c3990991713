"""Cloud integrity (issue 15) attacked end to end on moto: the API, the analyse and the process functions.

An event id is unique per device only, so (device_id, event_id) is the idempotency key at every hop: a device
that sends another device's (predictable, GA/T 1400-derived) event id first must neither make the real event a
``duplicate`` nor replace its image.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from chalice.test import Client

from anfang.contracts import new_event_id
from tests.api_stack import (
    APP_DIR,
    TEST_ENVIRONMENT,
    Device,
    batch,
    face_event,
    image,
    load_app,
    register_device,
    signed,
)
from tests.pipeline_fixtures import image_bytes
from tests.pipeline_stack import Stack, drain, drive, load_handler

analyse_handler = load_handler("analyse")
process_handler = load_handler("process")
CAMERA_A = "33010600001320000001"
INTRUDER_X = "33010600001320000002"


@pytest.fixture
def api(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The API function cold-started on the same stack as the pipeline functions."""
    for name, value in {**stack.api_env, **TEST_ENVIRONMENT}.items():
        monkeypatch.setenv(name, value)
    module = load_app("anfang_api_app_integrity")
    for name, value in stack.env.items():  # the pipeline functions' (same resource names)
        monkeypatch.setenv(name, value)
    analyse_handler.analyser.cache_clear()
    process_handler.processor.cache_clear()
    yield module
    analyse_handler.analyser.cache_clear()
    process_handler.processor.cache_clear()
    gc.unfreeze()


def _post(client: Client, device: Device, *events: dict[str, Any]) -> list[str]:
    body = batch(*events)
    response = client.http.post("/v1/events", headers=signed(device.signer, "POST", "/v1/events", body), body=body)
    assert response.status_code == 202, response.body
    return [r["status"] for r in response.json_body["results"]]


def _run_pipeline(stack: Stack) -> None:
    sqs = stack.client("sqs")
    drive(sqs, stack.analyse_queue, lambda event: analyse_handler.lambda_handler(event, None))
    drive(sqs, stack.process_queue, lambda event: process_handler.lambda_handler(event, None))


def _s3_bytes(stack: Stack, ref: str) -> bytes:
    bucket, _, key = ref.removeprefix("s3://").partition("/")
    return stack.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]


def test_an_intruder_pre_sending_a_cameras_event_id_neither_drops_nor_replaces_its_event(
    stack: Stack, api: ModuleType
) -> None:
    registry = api.services.registry
    camera, intruder = register_device(registry, CAMERA_A), register_device(registry, INTRUDER_X)
    real_image, squat_image = image_bytes("face_crop.jpg"), image_bytes("astronaut_512.jpg")
    event_id = new_event_id()  # camera A's next id: predictable from its device, object id and capture time
    real_scene = image_bytes("scene_noface_1280x720.jpg")
    real = face_event(device_id=CAMERA_A, event_id=event_id, images=[image(real_image), image(real_scene, "scene")])
    squat = face_event(
        device_id=INTRUDER_X, event_id=event_id, images=[image(squat_image), image(squat_image, "scene")]
    )
    with Client(api.app, stage_name="test", project_dir=str(APP_DIR)) as client:
        # GIVEN intruder X sent camera A's event id first, with its own image
        assert _post(client, intruder, squat) == ["accepted"]
        # WHEN camera A sends its real event
        statuses = _post(client, camera, real)
        # THEN it is accepted, not a duplicate; and each device's retry is a duplicate of its own event only
        assert statuses == ["accepted"]
        assert _post(client, camera, real) == ["duplicate"]
        assert _post(client, intruder, squat) == ["duplicate"]
    # ... the raw bucket holds both images, each under its own device
    s3 = stack.client("s3")
    raw_bucket = stack.env["RAW_IMAGE_BUCKET_NAME"]
    assert s3.get_bucket_versioning(Bucket=raw_bucket)["Status"] == "Enabled"
    listed = s3.list_objects_v2(Bucket=raw_bucket)["Contents"]
    stored = {tuple(o["Key"].split("/")[4:]): _s3_bytes(stack, f"s3://{raw_bucket}/{o['Key']}") for o in listed}
    assert stored == {
        (CAMERA_A, event_id, "face.jpg"): real_image,
        (CAMERA_A, event_id, "scene.jpg"): real_scene,
        (INTRUDER_X, event_id, "face.jpg"): squat_image,
        (INTRUDER_X, event_id, "scene.jpg"): squat_image,
    }

    # WHEN the pipeline runs
    _run_pipeline(stack)
    # THEN both events reach each destination exactly once, each with its own image
    sqs = stack.client("sqs")
    police = [json.loads(m["Body"]) for m in drain(sqs, stack.police_queue)]
    gov = [json.loads(m["Body"]) for m in drain(sqs, stack.gov_queue)]
    expected = sorted([(CAMERA_A, event_id), (INTRUDER_X, event_id)])
    assert sorted((r["device_id"], r["event_id"]) for r in police) == expected
    assert sorted((r["device_id"], r["event_id"]) for r in gov) == expected
    sent = {CAMERA_A: real_image, INTRUDER_X: squat_image}
    for record in police:  # police get the original: the very bytes its own device sent
        (face,) = [image for image in record["images"] if image["role"] == "face"]
        assert _s3_bytes(stack, face["ref"]) == sent[record["device_id"]]
        assert face["sha256"] == hashlib.sha256(sent[record["device_id"]]).hexdigest()
    # gov_cloud gets the face-blurred thumbnail of each device's own scene (content-addressed: two pictures)
    thumbnails = {r["device_id"]: [(i["role"], i["ref"]) for i in r["images"]] for r in gov}
    assert [role for role, _ in thumbnails[CAMERA_A]] == [role for role, _ in thumbnails[INTRUDER_X]] == ["scene"]
    assert thumbnails[CAMERA_A] != thumbnails[INTRUDER_X]
    assert drain(sqs, stack.process_dlq) == [] and drain(sqs, stack.analyse_dlq) == []
