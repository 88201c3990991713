"""Stage plumbing without AWS: batching, retries of unprocessed items, partial publish failures, imports."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from botocore.exceptions import ClientError

from anfang.aws.batch import Message, string_attributes
from anfang.aws.delivered_events import DeliveredEvents
from anfang.aws.queues import EventQueue
from anfang.aws.topics import publish_batch


class FlakyDynamo:
    """Answers the first call of each kind with everything unprocessed, then processes it."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, int]] = []

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803 - boto3 names
        ((table, request),) = RequestItems.items()
        self.calls.append(("get", len(request["Keys"])))
        if len(self.calls) == 1:
            return {"Responses": {table: []}, "UnprocessedKeys": RequestItems}
        found = [
            self.items[(k["device_id"]["S"], k["event_id"]["S"])]
            for k in request["Keys"]
            if (k["device_id"]["S"], k["event_id"]["S"]) in self.items
        ]
        return {"Responses": {table: found}, "UnprocessedKeys": {}}

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        ((table, requests),) = RequestItems.items()
        first = not any(kind == "write" for kind, _ in self.calls)
        self.calls.append(("write", len(requests)))
        keep, rest = (requests[:1], requests[1:]) if first else (requests, [])
        for request in keep:
            item = request["PutRequest"]["Item"]
            self.items[(item["device_id"]["S"], item["event_id"]["S"])] = item
        return {"UnprocessedItems": {table: rest} if rest else {}}


def test_delivered_events_batches_and_retries_unprocessed() -> None:
    db = FlakyDynamo()
    delivered = DeliveredEvents(db, "t", ttl_secs=60, clock=lambda: 1000.0, sleep=lambda _: None)
    keys = [("d", f"e{i}") for i in range(30)]
    delivered.mark({key: ["gov_cloud", "police_video"] for key in keys})
    assert [n for kind, n in db.calls if kind == "write"] == [25, 24, 5]  # 25 a call, unprocessed retried
    assert len(db.items) == 30
    assert db.items[("d", "e0")]["expires_at"] == {"N": "1060"}
    db.calls.clear()
    seen = delivered.seen([*keys, ("d", "new"), *keys])
    assert seen == {key: frozenset({"gov_cloud", "police_video"}) for key in keys}
    assert db.calls == [("get", 31), ("get", 31)]  # unique keys, first answer all unprocessed, retried


class PartlyFailingSns:
    def __init__(self) -> None:
        self.calls = 0

    def publish_batch(self, TopicArn: str, PublishBatchRequestEntries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.calls += 1
        if self.calls == 2:
            raise ClientError({"Error": {"Code": "Throttling", "Message": "slow down"}}, "PublishBatch")
        entries = PublishBatchRequestEntries
        assert len(entries) <= 10
        assert all(e["MessageAttributes"] == {"town": {"DataType": "String", "StringValue": "330106"}} for e in entries)
        return {"Successful": [{"Id": e["Id"]} for e in entries[1:]], "Failed": [{"Id": entries[0]["Id"]}]}


def test_publish_batch_reports_failed_entries_and_failed_calls() -> None:
    sns = PartlyFailingSns()
    messages = [Message(f"m{i}", "{}", string_attributes({"town": "330106", "empty": ""})) for i in range(25)]
    failed = publish_batch(sns, "arn:topic", messages)
    assert sns.calls == 3
    assert failed == ["m0", *[f"m{i}" for i in range(10, 20)], "m20"]


class Sqs:
    def __init__(self) -> None:
        self.calls: list[list[dict[str, Any]]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.calls.append(Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


def test_event_queue_sends_everything_in_calls_of_ten() -> None:
    sqs = Sqs()
    assert EventQueue(sqs, "url").send({f"m{i}": "{}" for i in range(11)}) == set()
    assert [len(call) for call in sqs.calls] == [10, 1]


def test_only_the_analyse_stage_imports_opencv_or_numpy() -> None:
    # The API and process functions must not carry OpenCV (Lambda's 250 MB limit).
    code = (
        "import sys, anfang.pipeline.process, anfang.pipeline.redact, anfang.pipeline.enrich, "
        "anfang.pipeline.thumbnails, anfang.aws.delivered_events, anfang.aws.topics, anfang.policies, "
        "anfang_ops.decrypt, anfang_ops.schemas, anfang_ops.cli; "
        "bad = sorted(m for m in ('cv2', 'numpy') if m in sys.modules); print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_person_less_events_share_their_device_enrichment_and_persons_get_their_own() -> None:
    import datetime as dt

    from anfang.contracts import SiteView
    from anfang.pipeline.enrich import Enricher
    from tests.pipeline_events import DEVICE_ID, example_queued
    from tests.pipeline_stack import MemoryHealthCodes, MemorySites, person_key

    access = example_queued("access")
    now = dt.datetime.now(dt.UTC)
    codes = MemoryHealthCodes.of((access.event["person"]["id_number"], "green", now))
    site = SiteView(site_id="s1", site_type="rural")
    enricher = Enricher(MemorySites({DEVICE_ID: site}), codes, person_key=person_key, stale_after_secs=60)
    events = [example_queued("alarm"), example_queued("device_status"), access, example_queued("access")]
    out = enricher.enrich(events)
    alarm, status, first, second = (out[(e.device_id, e.event_id)] for e in events)
    # one enrichment (and one site JSON) per device for the events without a health code
    assert alarm is status and alarm.health_code is None and alarm.site is site
    # an event with a health code has its own, with its view
    assert first.health_code is not None and first.health_code.status == "green" and first is not alarm
    assert second.health_code == first.health_code and second is not first
