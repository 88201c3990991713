"""A moto-backed slice of the town stack for the pipeline tests: queues with DLQs, topics, table, key, buckets.

Also the Lambda-shaped SQS driver: receive real messages, hand them to a handler as an SQS event, delete the
ones it did not report in ``batchItemFailures`` (the others come back after their visibility timeout and
move to the DLQ after maxReceiveCount, as SQS does).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import importlib.util
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3

from anfang.contracts import SiteView
from anfang.enrich import HealthCodeRecord

ROOT = Path(__file__).resolve().parents[1]
REGION = "cn-north-1"
TOWN = "330106"
PEPPER = b"town-pepper-for-tests-0123456789"


def load_handler(name: str) -> ModuleType:
    """Import ``functions/<name>/handler.py`` as Lambda would (it is not a package)."""
    path = ROOT / "functions" / name / "handler.py"
    spec = importlib.util.spec_from_file_location(f"anfang_fn_{name}_handler", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


class MemorySites:
    """In-memory device registry view (the real adapter is the ingest API's ``anfang.registry``)."""

    def __init__(self, sites: Mapping[str, SiteView]) -> None:
        self.sites = dict(sites)
        self.calls = 0

    def sites_of(self, device_ids: Iterable[str]) -> dict[str, SiteView]:
        self.calls += 1
        return {d: self.sites[d] for d in device_ids if d in self.sites}


class MemoryHealthCodes:
    """In-memory health-code table by person key (the real adapter is ``anfang.healthcodes``)."""

    def __init__(self, codes: Mapping[str, HealthCodeRecord] | None = None) -> None:
        self.codes = dict(codes or {})
        self.calls = 0

    def batch_get(self, person_keys: Sequence[str]) -> dict[str, HealthCodeRecord]:
        self.calls += 1
        assert len(person_keys) <= 100 or True  # the real adapter splits; the fake takes any size
        return {k: self.codes[k] for k in person_keys if k in self.codes}


def person_key(id_number: str) -> str:
    return hmac.new(PEPPER, id_number.upper().encode(), hashlib.sha256).hexdigest()


@dataclass
class Stack:
    session: Any
    env: dict[str, str]
    process_queue: str
    process_dlq: str
    analyse_queue: str
    gov_queue: str
    police_queue: str
    police_key: str
    calls: Counter[str] = field(default_factory=Counter)

    def client(self, service: str) -> Any:
        return self.session.client(service)


def create_stack(*, max_receive_count: int = 3) -> Stack:
    """Create the resources in the active moto mock and return their names (as the template would output)."""
    session = boto3.session.Session(region_name=REGION)
    sqs, sns, ddb, kms, s3, sm = (session.client(s) for s in ("sqs", "sns", "dynamodb", "kms", "s3", "secretsmanager"))

    def queue(name: str, dlq_arn: str | None = None) -> str:
        attributes = {"VisibilityTimeout": "0"}
        if dlq_arn:
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}
            )
        return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])

    def arn(url: str) -> str:
        return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])

    process_dlq = queue("process-dlq")
    process_queue = queue("process", arn(process_dlq))
    analyse_queue = queue("analyse", arn(queue("analyse-dlq")))
    topics, consumer_queues = {}, {}
    for destination in ("gov_cloud", "police_video"):
        topic = sns.create_topic(Name=f"anfang-{TOWN}-{destination}")["TopicArn"]
        url = queue(f"{destination}-consumer")
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn(url), Attributes={"RawMessageDelivery": "true"})
        topics[destination], consumer_queues[destination] = topic, url
    ddb.create_table(
        TableName="delivered",
        KeySchema=[
            {"AttributeName": "device_id", "KeyType": "HASH"},
            {"AttributeName": "event_id", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "device_id", "AttributeType": "S"},
            {"AttributeName": "event_id", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for name, key in (("devices", "pk"), ("health-codes", "person_key")):
        ddb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    pepper = sm.create_secret(Name="health-code-pepper", SecretString=PEPPER.decode())["ARN"]
    police_key = kms.create_key(Description="police_video")["KeyMetadata"]["Arn"]
    for bucket in ("anfang-raw", "anfang-images"):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    secret = sm.create_secret(
        Name="pseudonym-secrets",
        SecretString=json.dumps({"master": "local-pseudonym-master-0123456789abcdef"}),
    )["ARN"]
    env = {
        "TOWN_CODE": TOWN,
        "DELIVERED_EVENTS_TABLE_NAME": "delivered",
        "GOV_CLOUD_TOPIC_ARN": topics["gov_cloud"],
        "POLICE_VIDEO_TOPIC_ARN": topics["police_video"],
        "POLICE_FIELD_KEY_ARN": police_key,
        "PSEUDONYM_SECRET_ARN": secret,
        "RAW_IMAGE_BUCKET_NAME": "anfang-raw",
        "IMAGE_BUCKET_NAME": "anfang-images",
        "PROCESS_QUEUE_URL": process_queue,
        "DEVICES_TABLE_NAME": "devices",
        "HEALTH_CODES_TABLE_NAME": "health-codes",
        "HEALTH_CODE_PEPPER_SECRET_ARN": pepper,
    }
    stack = Stack(
        session=session,
        env=env,
        process_queue=process_queue,
        process_dlq=process_dlq,
        analyse_queue=analyse_queue,
        gov_queue=consumer_queues["gov_cloud"],
        police_queue=consumer_queues["police_video"],
        police_key=police_key,
    )
    return stack


def count_calls(session: Any, calls: Counter[str]) -> None:
    """Count every AWS API call made through ``session``'s clients, per service and operation."""

    def hook(model: Any, **_: Any) -> None:
        calls[f"{model.service_model.service_name}.{model.name}"] += 1

    session.events.register("before-call.*.*", hook)


def lambda_sqs_event(queue_arn: str, messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A Lambda SQS event built from real ReceiveMessage results."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


def drive(
    sqs: Any, queue_url: str, handler: Callable[[dict[str, Any]], dict[str, Any]], *, max_rounds: int = 50
) -> int:
    """Poll ``queue_url`` like the Lambda event source mapping until it is empty; returns handler invocations."""
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for invocations in range(max_rounds):
        received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
            "Messages", []
        )
        if not received:
            return invocations
        response = handler(lambda_sqs_event(queue_arn, received))
        failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        done = [m for m in received if m["MessageId"] not in failed]
        if done:
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
    raise AssertionError(f"{queue_url} did not drain in {max_rounds} rounds")


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message on a queue (received and deleted), with attributes."""
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]).get(
            "Messages", []
        )
        if not got:
            return out
        out.extend(got)
        sqs.delete_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
        )


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
