"""The reference consumer on moto: verified records written once, police fields decrypted, images fetched and
checked, forged records left on the queue, and a crash between write and commit repaired on restart."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from anfang.contracts import SiteView
from anfang.pipeline.process import Incoming, Processor
from anfang.pipeline.process_wiring import build_processor
from anfang_ops.consume import ConsumeError, Consumer, ConsumerClients, ConsumerConfig
from tests.pipeline_events import DEVICE_ID, example_events, queued
from tests.pipeline_stack import MemoryHealthCodes, MemorySites, Stack, drain, load_handler, person_key

handler = load_handler("process")
SITES = MemorySites({DEVICE_ID: SiteView(site_id="xihu-garden", site_type="residential_closed", name="Xihu Garden")})
JPEG = b"\xff\xd8\xff\xe0" + b"not really a jpeg, but bytes with a digest" * 3


def _processor(stack: Stack) -> Processor:
    settings = handler.Settings.model_validate(stack.env)
    return build_processor(
        settings, sites=SITES, health_codes=MemoryHealthCodes(), person_key=person_key, session=stack.session
    )


def _event_with_image(stack: Stack, n: int) -> str:
    """An access event whose scene image is really in the raw bucket (its sha256 the digest of the bytes)."""
    event = example_events()["access"]
    event["event_id"] = f"019ace03-5c00-7000-8000-{n:012d}"
    message = queued(event, roles=("scene",))
    body = JPEG + str(n).encode()
    image = message.images[0].model_copy(
        update={"sha256": hashlib.sha256(body).hexdigest(), "ref": f"330106/{event['event_id']}/scene"}
    )
    stack.client("s3").put_object(Bucket=stack.env["RAW_IMAGE_BUCKET_NAME"], Key=image.ref, Body=body)
    return message.model_copy(update={"images": [image]}).model_dump_json(by_alias=True)


def _consumer(stack: Stack, out: Path, destination: str = "police_video", **config: Any) -> Consumer:
    queue = stack.police_queue if destination == "police_video" else stack.gov_queue
    clients = ConsumerClients(
        sqs=stack.client("sqs"),
        s3=stack.client("s3"),
        kms=stack.client("kms"),
        dynamodb=stack.client("dynamodb"),
        queue_url=queue,
        log_table=stack.env["RELEASE_LOG_TABLE_NAME"],
        signing_key_arn=stack.env["RELEASE_SIGNING_KEY_ARN"],
    )
    options = {"wait_time_secs": 0, "exit_when_idle": True, **config}
    return Consumer(ConsumerConfig(out_dir=out, destination=destination, **options), clients)


def _lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "records.ndjson").read_text(encoding="utf-8").splitlines()]


def test_records_are_verified_decrypted_written_once_with_their_images(stack: Stack, tmp_path: Path) -> None:
    # GIVEN six access events with a real scene image, one of them delivered twice by the queue
    bodies = [_event_with_image(stack, n) for n in range(6)]
    processor = _processor(stack)
    assert processor.process([Incoming(f"m{i}", b) for i, b in enumerate(bodies)]).failed_message_ids == []
    sqs = stack.client("sqs")
    duplicate = sqs.receive_message(QueueUrl=stack.police_queue, MaxNumberOfMessages=1)["Messages"][0]
    sqs.send_message(QueueUrl=stack.police_queue, MessageBody=duplicate["Body"])
    sqs.change_message_visibility(
        QueueUrl=stack.police_queue, ReceiptHandle=duplicate["ReceiptHandle"], VisibilityTimeout=0
    )
    # WHEN the consumer drains the police queue with --decrypt --images
    consumer = _consumer(stack, tmp_path, decrypt=True, images=True)
    counts = consumer.run(threading.Event())
    consumer.close()
    # THEN each event is written once, decrypted, with its image stored under its digest; the queue is empty
    lines = _lines(tmp_path)
    assert len(lines) == 6 and len({line["event_id"] for line in lines}) == 6
    assert counts["duplicate"] == 1 and counts["written"] == 6
    assert all(isinstance(line["person"]["name"], str) for line in lines)  # no envelope left
    for line in lines:
        (image,) = line["images"]
        stored = tmp_path / "images" / f"{image['sha256']}.jpg"
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == image["sha256"]
    assert drain(sqs, stack.police_queue) == []


def test_a_forged_record_is_not_written_nor_deleted(stack: Stack, tmp_path: Path) -> None:
    processor = _processor(stack)
    event = example_events()["alarm"]
    event["event_id"] = "019ace03-5c00-7000-8000-000000000777"
    body = queued(event, roles=()).model_dump_json(by_alias=True)
    assert processor.process([Incoming("m1", body)]).failed_message_ids == []
    sqs = stack.client("sqs")
    (real,) = drain(sqs, stack.gov_queue)
    forged = json.loads(real["Body"])
    forged["alarm"]["severity"] = "info" if forged["alarm"]["severity"] != "info" else "critical"
    sqs.send_message(QueueUrl=stack.gov_queue, MessageBody=json.dumps(forged))
    sqs.send_message(QueueUrl=stack.gov_queue, MessageBody=real["Body"])
    consumer = _consumer(stack, tmp_path, destination="gov_cloud", max_messages=2)
    counts = consumer.run(threading.Event())
    consumer.close()
    assert counts["rejected_unverified"] == 1 and counts["written"] == 1
    assert _lines(tmp_path) == [json.loads(real["Body"])]
    # the forged one is still on the queue (it will reach the DLQ after maxReceiveCount)
    assert [json.loads(m["Body"]) for m in drain(sqs, stack.gov_queue)] == [forged]


def test_a_crash_between_write_and_commit_is_repaired_on_restart(stack: Stack, tmp_path: Path) -> None:
    # GIVEN records written to the NDJSON file by a consumer that died before committing (and deleting)
    processor = _processor(stack)
    event = example_events()["device_status"]
    bodies = []
    for n in range(3):
        event["event_id"] = f"019ace03-5c00-7000-8000-00000000080{n}"
        bodies.append(queued(event).model_dump_json(by_alias=True))
    assert processor.process([Incoming(f"m{i}", b) for i, b in enumerate(bodies)]).failed_message_ids == []
    with (tmp_path / "records.ndjson").open("w", encoding="utf-8") as out:  # what the dead consumer left
        out.write('{"event_id": "written-but-not-committed"}\n{"partial line')
    # WHEN a consumer starts on the same folder and drains the queue
    consumer = _consumer(stack, tmp_path, destination="gov_cloud")
    consumer.run(threading.Event())
    consumer.close()
    # THEN the uncommitted tail is gone and every record is there once
    lines = _lines(tmp_path)
    assert sorted(line["event_id"] for line in lines) == sorted(json.loads(b)["event_id"] for b in bodies)


def test_a_broken_log_stops_the_consumer(stack: Stack, tmp_path: Path) -> None:
    processor = _processor(stack)
    event = example_events()["alarm"]
    event["event_id"] = "019ace03-5c00-7000-8000-000000000901"
    assert processor.process([Incoming("m1", queued(event, roles=()).model_dump_json(by_alias=True))])
    dynamodb = stack.client("dynamodb")
    table = stack.env["RELEASE_LOG_TABLE_NAME"]
    item = dynamodb.get_item(TableName=table, Key={"destination": {"S": "gov_cloud"}, "seq": {"N": "1"}})["Item"]
    entry = json.loads(item["entry"]["S"])
    entry["policy"] = "gov_cloud@1"  # a rewritten history
    item["entry"] = {"S": json.dumps(entry)}
    dynamodb.put_item(TableName=table, Item=item)
    with pytest.raises(ConsumeError, match="entry signature invalid"):
        _consumer(stack, tmp_path, destination="gov_cloud").run(threading.Event())
