"""Cloud integrity (issue 15) attacked end to end on moto: the API, the analyse and the process functions.

An event id is unique per device only, so (device_id, event_id) is the idempotency key at every hop: a device
that sends another device's (predictable, GA/T 1400-derived) event id first must neither make the real event a
``duplicate`` nor replace its image.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from chalice.test import Client

from anfang.contracts import SiteView, new_event_id
from anfang.pipeline.process import Processor
from anfang.pipeline.process_wiring import build_processor
from anfang_ops.redrive import redrive
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
from tests.pipeline_events import DEVICE_ID, example_queued
from tests.pipeline_fixtures import image_bytes
from tests.pipeline_stack import (
    MemoryHealthCodes,
    MemorySites,
    Stack,
    drain,
    drive,
    lambda_sqs_event,
    load_handler,
    person_key,
    refuse_disabled_kms_keys,
)

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


# ------------------------------------------------------------------------------------ failure isolation

ENCRYPTING = ("access", "access", "access", "visitor", "visitor")  # police encrypt the person's fields
PLAIN = ("alarm", "device_status", "plate_capture", "face_capture", "alarm")  # nothing to encrypt
SITES = MemorySites({DEVICE_ID: SiteView(site_id="xihu-garden", site_type="residential_closed", name="Xihu Garden")})


def _processor(stack: Stack, **env: str) -> Processor:
    settings = process_handler.Settings.model_validate({**stack.env, **env})
    return build_processor(
        settings, sites=SITES, health_codes=MemoryHealthCodes(), person_key=person_key, session=stack.session
    )


def _attempts(stack: Stack, processor: Processor, *, max_attempts: int = 6) -> list[dict[str, int]]:
    """Invoke the function like its event source mapping until the queue is empty (a batch holds all ten
    events, so each invocation is one attempt of every message still owed), counting per attempt what
    each destination received and how many messages were reported for retry."""
    sqs = stack.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=stack.process_queue, AttributeNames=["QueueArn"])["Attributes"]
    attempts = []
    for _ in range(max_attempts):
        received = sqs.receive_message(QueueUrl=stack.process_queue, MaxNumberOfMessages=10).get("Messages", [])
        if not received:
            return attempts
        response = process_handler.handle(lambda_sqs_event(arn["QueueArn"], received), processor)
        retried = {item["itemIdentifier"] for item in response["batchItemFailures"]}
        done = [m for m in received if m["MessageId"] not in retried]
        if done:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)]
            sqs.delete_message_batch(QueueUrl=stack.process_queue, Entries=entries)
        attempts.append(
            {
                "messages": len(received),
                "gov_cloud": len(drain(sqs, stack.gov_queue)),
                "police_video": len(drain(sqs, stack.police_queue)),
                "retried": len(retried),
            }
        )
    raise AssertionError("the process queue did not drain")


def _queue_events(stack: Stack) -> list[tuple[str, str]]:
    events = [example_queued(t) for t in (*ENCRYPTING, *PLAIN)]
    stack.client("sqs").send_message_batch(
        QueueUrl=stack.process_queue,
        Entries=[{"Id": str(i), "MessageBody": e.model_dump_json(by_alias=True)} for i, e in enumerate(events)],
    )
    return [(e.device_id, e.event_id) for e in events]


def _redrive_and_collect(stack: Stack, processor: Processor) -> tuple[list[dict[str, int]], Counter[tuple[str, str]]]:
    sqs = stack.client("sqs")
    redrive(sqs, stack.process_dlq, stack.process_queue)
    attempts = []
    gov: list[dict[str, Any]] = []
    police: list[dict[str, Any]] = []
    for attempt in range(3):
        received = sqs.receive_message(QueueUrl=stack.process_queue, MaxNumberOfMessages=10).get("Messages", [])
        if not received:
            break
        arn = sqs.get_queue_attributes(QueueUrl=stack.process_queue, AttributeNames=["QueueArn"])["Attributes"]
        response = process_handler.handle(lambda_sqs_event(arn["QueueArn"], received), processor)
        assert response["batchItemFailures"] == [], f"attempt {attempt} after the redrive failed"
        sqs.delete_message_batch(
            QueueUrl=stack.process_queue,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)],
        )
        gov += [json.loads(m["Body"]) for m in drain(sqs, stack.gov_queue)]
        police += [json.loads(m["Body"]) for m in drain(sqs, stack.police_queue)]
        attempts.append({"messages": len(received), "gov_cloud": len(gov), "police_video": len(police)})
    assert gov == [], "a redrive re-published to gov_cloud, which already had every event"
    return attempts, Counter((r["device_id"], r["event_id"]) for r in police)


def test_a_disabled_police_key_fails_only_police_records_that_encrypt_and_a_redrive_delivers_them_once(
    stack: Stack,
) -> None:
    # GIVEN the police field key is disabled (KMS refuses GenerateDataKey as AWS does) and ten events are queued,
    # five of which carry a person whose fields the police policy encrypts
    refuse_disabled_kms_keys(stack.session)
    kms = stack.client("kms")
    police_key = stack.police_key.rpartition("/")[2]  # moto's DisableKey and EnableKey take the key id only
    kms.disable_key(KeyId=police_key)
    keys = _queue_events(stack)
    # WHEN the function handles the queue until SQS gives up (maxReceiveCount 3)
    attempts = _attempts(stack, _processor(stack))
    # THEN gov_cloud got all ten on the first attempt and police the five that need no key; only the five
    # that need the key were retried (for police only: gov_cloud never again) and then dead-lettered
    assert attempts == [
        {"messages": 10, "gov_cloud": 10, "police_video": 5, "retried": 5},
        {"messages": 5, "gov_cloud": 0, "police_video": 0, "retried": 5},
        {"messages": 5, "gov_cloud": 0, "police_video": 0, "retried": 5},
    ]
    sqs = stack.client("sqs")
    dead = sqs.get_queue_attributes(QueueUrl=stack.process_dlq, AttributeNames=["ApproximateNumberOfMessages"])
    assert dead["Attributes"]["ApproximateNumberOfMessages"] == "5"
    # WHEN the key is enabled again and the dead letters are redriven
    kms.enable_key(KeyId=police_key)
    after, police = _redrive_and_collect(stack, _processor(stack))
    # THEN each of the five police records is delivered exactly once, and gov_cloud gets nothing again
    assert after == [{"messages": 5, "gov_cloud": 0, "police_video": 5}]
    assert police == Counter(keys[: len(ENCRYPTING)])


def test_a_failing_police_topic_holds_back_no_gov_cloud_record_and_a_redrive_delivers_each_once(
    stack: Stack,
) -> None:
    # GIVEN the police topic refuses every publish (it does not exist for this processor)
    keys = _queue_events(stack)
    broken = _processor(stack, POLICE_VIDEO_TOPIC_ARN=stack.env["POLICE_VIDEO_TOPIC_ARN"] + "-gone")
    # WHEN the function handles the queue until SQS gives up
    attempts = _attempts(stack, broken)
    # THEN gov_cloud got every event on the first attempt; police_video alone was retried and dead-lettered
    assert attempts == [
        {"messages": 10, "gov_cloud": 10, "police_video": 0, "retried": 10},
        {"messages": 10, "gov_cloud": 0, "police_video": 0, "retried": 10},
        {"messages": 10, "gov_cloud": 0, "police_video": 0, "retried": 10},
    ]
    # WHEN the topic is back and the dead letters are redriven
    after, police = _redrive_and_collect(stack, _processor(stack))
    # THEN each police record is delivered exactly once, and gov_cloud gets nothing again
    assert after == [{"messages": 10, "gov_cloud": 0, "police_video": 10}]
    assert police == Counter(keys)
