"""A moto server for the relay tests: the destination queues and the image bucket the relays read."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from anfang_edge.spool import Spool
from anfang_ops.relays import Gat1400Relay, Gat1400RelayConfig, Outbox, QueueReader, S3Images
from tests.relays_support import BUCKET, RELAY_ID, RELAY_PASSWORD, RELAY_USER, RunningLibrary, free_port, start_library

REGION = "cn-north-1"


@dataclass
class Aws:
    endpoint: str

    def client(self, name: str) -> Any:
        return boto3.session.Session(
            region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
        ).client(name, endpoint_url=self.endpoint)

    def new_queue(self) -> str:
        url: str = self.client("sqs").create_queue(
            QueueName=f"police-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": "5"}
        )["QueueUrl"]
        return url

    def send_records(self, queue_url: str, records: list[dict[str, Any]], blobs: dict[str, bytes]) -> None:
        s3, sqs = self.client("s3"), self.client("sqs")
        for key, raw in blobs.items():
            s3.put_object(Bucket=BUCKET, Key=key, Body=raw)
        for start in range(0, len(records), 10):
            entries = [
                {"Id": str(i), "MessageBody": json.dumps(r, ensure_ascii=False)}
                for i, r in enumerate(records[start : start + 10])
            ]
            assert not sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed")

    def queue_depth(self, queue_url: str) -> int:
        attrs = self.client("sqs").get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


@pytest.fixture(scope="package")
def aws() -> Iterator[Aws]:
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = Aws(f"http://{host}:{port}")
    env.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    yield env
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def relay_config(tmp: Path, aws: Aws, queue_url: str, upstream_port: int, **upstream: Any) -> Gat1400RelayConfig:
    return Gat1400RelayConfig.model_validate(
        {
            "state_dir": str(tmp / "relay"),
            "queue": {"url": queue_url, "region": REGION, "endpoint_url": aws.endpoint, "wait_time_secs": 1},
            "retry": {"initial_secs": 0.2, "max_secs": 1.0},
            "upstream": {
                "url": f"http://127.0.0.1:{upstream_port}",
                "device_id": RELAY_ID,
                "username": RELAY_USER,
                "password": RELAY_PASSWORD,
                "request_timeout_secs": 10,
                "batch_max_records": 4,
                **upstream,
            },
        }
    )


@dataclass
class RunningRelay:
    relay: Gat1400Relay
    stop: threading.Event
    thread: threading.Thread

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)
        self.relay.outbox.close()


def start_relay(config: Gat1400RelayConfig, aws: Aws) -> RunningRelay:
    outbox = Outbox(config.outbox_path)
    reader = QueueReader(aws.client("sqs"), config.queue.url, carries=list(config.event_types), wait_time_secs=1)
    relay = Gat1400Relay(config, outbox=outbox, reader=reader, images=S3Images(aws.client("s3")))
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    return RunningRelay(relay, stop, thread)


def wait_for(condition: Callable[[], bool], timeout_secs: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def upstream_spool(tmp_path: Path) -> Iterator[Spool]:
    spool = Spool(tmp_path / "upstream" / "spool.sqlite3", max_bytes=256 << 20)
    yield spool
    spool.close()


@pytest.fixture
def library(upstream_spool: Spool) -> Iterator[RunningLibrary]:
    from tests.relays_support import sample_objects

    devices = sorted({obj["DeviceID"] for _, obj in sample_objects()})
    running = start_library(0, upstream_spool, devices)
    yield running
    running.library.release.set()
    running.close()
