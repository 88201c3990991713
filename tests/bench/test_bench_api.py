"""Benchmarks of the ingest path (``make bench``): signed 100-event batches, with and without a face crop each.

AWS calls go to a moto server in its own process on 127.0.0.1. Every client method is wrapped to count
calls per operation and to time them (the SDK's serialisation and parsing plus the round trip), so "our"
time is the CPU time of the thread running ``EventIngest.handle`` minus the CPU time spent inside AWS
calls. CPU time, not wall time: the machine is shared, and a descheduled moment is nobody's cost. The
image upload runs serially here (``executor=None``) so that subtraction is exact. The figures land in
``bench/results.json`` (``extra_info``) and ``tests/bench/report.py`` prints them.
"""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import fastjsonschema
import pytest
from aws_lambda_powertools.utilities.validation import validate as powertools_validate

from anfang.api.ingest import EventIngest
from anfang.aws.last_seen import LastSeenWriter
from anfang.aws.metrics import MemoryMetrics
from anfang.aws.nonces import DynamoNonceStore
from anfang.aws.queues import EventQueue
from anfang.aws.raw_images import RawImageStore
from anfang.aws.registry import DeviceRegistry
from anfang.aws.seen_events import SeenEvents
from anfang.contracts import Verifier, new_event_id, validate_event
from anfang.contracts.examples import example_events
from tests.api_stack import (
    DEVICE_ID,
    REGION,
    ROOT,
    Device,
    Stack,
    create_stack,
    face_event,
    register_device,
    signed,
)
from tests.template_stack import TOWN

EVENTS_PER_BATCH = 100
ROUNDS = 15
SEEN_TABLE: dict[str, Any] = {
    "KeySchema": [{"AttributeName": "event_id", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "event_id", "AttributeType": "S"}],
    "BillingMode": "PAY_PER_REQUEST",
}


@dataclass
class AwsMeter:
    """Counts AWS calls per operation and their CPU time (SDK serialisation + moto + parsing), per thread."""

    calls: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def attach(self, client: Any) -> Any:
        return _MeteredClient(client, self)

    def reset(self) -> None:
        self.calls.clear()
        self.seconds = 0.0


class _MeteredClient:
    """A boto3 client whose API methods are timed and counted; everything else passes through."""

    def __init__(self, client: Any, meter: AwsMeter) -> None:
        self._client = client
        self._meter = meter
        self._operations = client.meta.method_to_api_mapping

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        operation = self._operations.get(name)
        if operation is None:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return attr(*args, **kwargs)
            finally:
                self._meter.seconds += time.thread_time() - started
                self._meter.calls[operation] += 1

        return call


@dataclass
class Bench:
    stack: Stack
    ingest: EventIngest
    ingest_last_seen_due: EventIngest  # its last-seen writer has no interval: every batch writes its devices
    device: Device
    meter: AwsMeter
    sqs: Any
    ddb: Any


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto server in its own process on 127.0.0.1, so its work never lands in our thread's CPU time."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def bench(moto_endpoint: str) -> Iterator[Bench]:
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": moto_endpoint,
        }.items():
            env.setenv(name, value)
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        session = boto3.session.Session(region_name=REGION)
        stack = create_stack(session, prefix="anfang-bench")
        meter = AwsMeter()
        ddb, sqs, s3 = (meter.attach(session.client(name)) for name in ("dynamodb", "sqs", "s3"))
        registry = DeviceRegistry(ddb, stack.names["devices"], town_code=TOWN, cache_ttl_secs=300)
        device = register_device(registry)

        def ingest(last_seen_interval_secs: float) -> EventIngest:
            return EventIngest(
                verifier=Verifier(registry, DynamoNonceStore(ddb, stack.names["nonces"])),
                images=RawImageStore(s3, stack.names["raw_bucket"], town_code=TOWN, kms_key_id=stack.names["kms_key"]),
                seen=SeenEvents(ddb, stack.names["seen"]),
                analyse=EventQueue(sqs, stack.names["analyse_queue"]),
                process=EventQueue(sqs, stack.names["process_queue"]),
                metrics=MemoryMetrics(),
                last_seen=LastSeenWriter(
                    ddb, stack.environment["LAST_SEEN_TABLE_NAME"], min_interval_secs=last_seen_interval_secs
                ),
            )

        # bench.ingest: the throttle's steady state (the device was written within the interval, 60 s in the template;
        # an hour here so that a slow run never crosses it mid-way); ingest_last_seen_due: its worst case
        yield Bench(stack, ingest(3600), ingest(0), device, meter, session.client("sqs"), session.client("dynamodb"))


def plain_events(n: int) -> list[dict[str, Any]]:
    """A realistic mix without images: access (with a person), alarm, plate, visitor, device status."""
    examples = example_events()
    kinds = ["access", "alarm", "plate_capture", "visitor", "device_status"]
    out = []
    for i in range(n):
        event = json.loads(json.dumps(examples[kinds[i % len(kinds)]]))
        event.update(event_id=new_event_id(), device_id=DEVICE_ID, images=[])
        out.append(event)
    return out


def face_events(n: int) -> list[dict[str, Any]]:
    return [face_event() for _ in range(n)]


def _run(
    benchmark: Any, bench: Bench, make_events: Any, label: str, ingest: EventIngest | None = None
) -> dict[str, Any]:
    ingest = ingest or bench.ingest
    own_seconds: list[float] = []
    calls: list[Counter[str]] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        for queue in ("analyse_queue", "process_queue"):  # moto's SQS slows as a queue grows: start empty
            url = bench.stack.names[queue]
            bench.sqs.delete_queue(QueueUrl=url)
            # same account and name: moto's CloudFormation writes the queue's AWS URL, a create on the server
            # answers with the server's host; both reach the same queue
            name = url.rsplit("/", 1)[1]
            assert bench.sqs.create_queue(QueueName=name)["QueueUrl"].rsplit("/", 2)[1:] == url.rsplit("/", 2)[1:]
        # moto deep-copies a whole table on TransactWriteItems: keep the seen-events table small
        bench.ddb.delete_table(TableName=bench.stack.names["seen"])
        bench.ddb.create_table(**SEEN_TABLE, TableName=bench.stack.names["seen"])
        gc.collect()
        gc.freeze()  # as the API does after its cold start: long-lived objects leave the collector's scans
        body = json.dumps({"events": make_events(EVENTS_PER_BATCH)}).encode()
        headers = signed(bench.device.signer, "POST", "/v1/events", body)
        bench.meter.reset()
        return ("POST", "/v1/events", headers, body), {}

    def handle(*args: Any) -> None:
        started = time.thread_time()
        outcome = ingest.handle(*args)
        wall = time.thread_time() - started
        assert outcome.response.status == 202, outcome.response.body
        assert json.loads(outcome.response.body)["accepted"] == EVENTS_PER_BATCH
        own_seconds.append(wall - bench.meter.seconds)
        calls.append(Counter(bench.meter.calls))

    benchmark.pedantic(handle, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    del own_seconds[0], calls[0]  # the warm-up round (it also fills the registry cache: one GetItem more)
    own = sorted(own_seconds)[len(own_seconds) // 2]
    best = min(own_seconds)
    per_type = calls[-1]
    assert all(c == per_type for c in calls), "every batch makes the same AWS calls"
    info = {
        "case": label,
        "events_per_batch": EVENTS_PER_BATCH,
        "own_cpu_seconds_per_batch_median": round(own, 6),
        "own_cpu_seconds_per_batch_min": round(best, 6),
        "own_events_per_second_per_core_median": round(EVENTS_PER_BATCH / own),
        "own_events_per_second_per_core_best": round(EVENTS_PER_BATCH / best),
        "aws_calls_per_batch": dict(sorted(per_type.items())),
        "aws_calls_per_event": round(sum(per_type.values()) / EVENTS_PER_BATCH, 3),
    }
    benchmark.extra_info.update(info)
    print(json.dumps(info))
    return info


def test_bench_ingest_100_events_without_images(benchmark: Any, bench: Bench) -> None:
    info = _run(benchmark, bench, plain_events, "100 events, no images")
    assert info["aws_calls_per_event"] <= 0.15
    assert info["aws_calls_per_batch"]["SendMessageBatch"] == 10


def test_bench_ingest_100_events_without_images_last_seen_due_every_batch(benchmark: Any, bench: Bench) -> None:
    # the worst case of the last-seen throttle: the batch's device is due on every request (one BatchWriteItem)
    info = _run(benchmark, bench, plain_events, "100 events, no images, last-seen due", bench.ingest_last_seen_due)
    assert info["aws_calls_per_event"] <= 0.15
    assert info["aws_calls_per_batch"]["BatchWriteItem"] == 1


def test_bench_ingest_100_events_with_a_face_crop_each(benchmark: Any, bench: Bench) -> None:
    info = _run(benchmark, bench, face_events, "100 events, one face crop each")
    assert info["aws_calls_per_batch"]["PutObject"] == EVENTS_PER_BATCH


# ---------------------------------------------------------------------------------------------------- validation


BATCH_SCHEMA = json.loads((ROOT / "schemas" / "events" / "v1" / "batch.schema.json").read_text(encoding="utf-8"))


def test_bench_validation_ours_vs_powertools(benchmark: Any) -> None:
    """Our per-event pydantic validation against the Powertools Validation utility on the same batch.

    Powertools' ``validate`` compiles the JSON Schema with fastjsonschema on every call; the precompiled
    fastjsonschema validator is also timed, as the best that engine can do.
    """
    doc = {"events": plain_events(EVENTS_PER_BATCH)}

    def ours() -> None:
        for event in doc["events"]:
            validate_event(event)

    def timed(fn: Any, repeat: int) -> float:
        fn()
        best = float("inf")
        for _ in range(3):
            started = time.thread_time()
            for _ in range(repeat):
                fn()
            best = min(best, (time.thread_time() - started) / repeat)
        return best

    compiled = fastjsonschema.compile(BATCH_SCHEMA)
    ours_s = timed(ours, 20)
    powertools_s = timed(lambda: powertools_validate(event=doc, schema=BATCH_SCHEMA), 3)
    compiled_s = timed(lambda: compiled(doc), 20)
    benchmark.pedantic(ours, rounds=10, iterations=1)
    info = {
        "case": "validate 100 events",
        "ours_seconds": round(ours_s, 6),
        "powertools_validate_seconds": round(powertools_s, 6),
        "fastjsonschema_precompiled_seconds": round(compiled_s, 6),
        "speedup_vs_powertools": round(powertools_s / ours_s, 2),
        "speedup_vs_precompiled": round(compiled_s / ours_s, 2),
    }
    benchmark.extra_info.update(info)
    print(json.dumps(info))
    assert info["speedup_vs_powertools"] >= 1.5
