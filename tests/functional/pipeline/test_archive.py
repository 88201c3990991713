"""The archive and ``anfang replay`` on moto, deployed from template.yaml: records released by the real process
stage reach the archive queues through the topics' subscriptions, the archive function writes them as gzip
NDJSON per destination and hour of ``received_at``, and a replay of a time range re-publishes exactly those
records, unchanged, so they still verify."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from anfang.contracts import SiteView
from anfang.pipeline.process import Incoming
from anfang.pipeline.process_wiring import build_processor
from anfang_ops.cli import main as anfang
from tests.pipeline_events import DEVICE_ID, example_events, queued
from tests.pipeline_stack import (
    MemoryHealthCodes,
    MemorySites,
    Stack,
    drain,
    lambda_sqs_event,
    load_handler,
    person_key,
)

process_handler = load_handler("process")
archive_handler = load_handler("archive")
SITES = MemorySites({DEVICE_ID: SiteView(site_id="xihu-garden", site_type="residential_closed", name="Xihu Garden")})
HOUR_8 = dt.datetime(2026, 11, 29, 8, 10, tzinfo=dt.UTC)
HOUR_9 = dt.datetime(2026, 11, 29, 9, 40, tzinfo=dt.UTC)
STACK_NAME = "anfang-test"


def _release(stack: Stack, events: Sequence[tuple[str, int, dt.datetime]]) -> None:
    """Process (event type, number, received_at) events with the real process stage: records to both topics."""
    settings = process_handler.Settings.model_validate(stack.env)
    processor = build_processor(
        settings, sites=SITES, health_codes=MemoryHealthCodes(), person_key=person_key, session=stack.session
    )
    bodies = []
    for event_type, n, received_at in events:
        event = example_events()[event_type]
        event["event_id"] = f"019ace03-5c00-7000-8000-{n:012d}"
        message = queued(event, roles=()).model_copy(update={"received_at": received_at})
        bodies.append(message.model_dump_json(by_alias=True))
    result = processor.process([Incoming(f"m{i}", body) for i, body in enumerate(bodies)])
    assert result.failed_message_ids == []


def _archive(stack: Stack) -> list[str]:
    """Run the archive function over everything on both archive queues, as the event source mapping would."""
    sqs = stack.client("sqs")
    failed: list[str] = []
    for destination in ("gov_cloud", "police_video"):
        arn = stack.functions["ArchiveFunction"][f"{destination.upper()}_ARCHIVE_QUEUE_ARN"]
        url = sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[1])["QueueUrl"]
        messages = drain(sqs, url)
        answer = archive_handler.handle(lambda_sqs_event(arn, messages), archive_handler.archiver())
        failed += [item["itemIdentifier"] for item in answer["batchItemFailures"]]
    return failed


def _objects(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    s3, bucket = stack.client("s3"), stack.functions["ArchiveFunction"]["ARCHIVE_BUCKET_NAME"]
    objects = {}
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        data = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        objects[item["Key"]] = [json.loads(line) for line in gzip.decompress(data).decode().splitlines()]
    return objects


@pytest.fixture
def archived(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """Four events in hour 08 and two in hour 09 released and archived; the consumer queues emptied."""
    for variable, value in stack.functions["ArchiveFunction"].items():
        monkeypatch.setenv(variable, value)
    archive_handler.archiver.cache_clear()
    _release(
        stack,
        [("access", 1, HOUR_8), ("alarm", 2, HOUR_8), ("access", 3, HOUR_8), ("device_status", 4, HOUR_8)]
        + [("access", 5, HOUR_9), ("alarm", 6, HOUR_9)],
    )
    assert _archive(stack) == []
    sqs = stack.client("sqs")
    drain(sqs, stack.gov_queue), drain(sqs, stack.police_queue)
    return stack


def _replay(*args: str) -> int:
    return anfang(["replay", "--stack-name", STACK_NAME, "--destination", "gov_cloud", *args])


def test_records_are_archived_as_gzip_ndjson_per_destination_and_hour(archived: Stack) -> None:
    objects = _objects(archived)
    hours = {key.rsplit("/", 1)[0] for key in objects}
    assert hours == {f"{d}/dt=2026-11-29/hour={h}" for d in ("gov_cloud", "police_video") for h in ("08", "09")}, (
        sorted(objects)
    )
    assert all(key.endswith(".ndjson.gz") for key in objects)
    gov_8 = [
        r for key, records in objects.items() if key.startswith("gov_cloud/dt=2026-11-29/hour=08/") for r in records
    ]
    assert sorted(r["event_id"][-1] for r in gov_8) == ["1", "2", "3", "4"]
    assert all("release" in r for records in objects.values() for r in records)  # published bodies, unchanged
    bucket = archived.functions["ArchiveFunction"]["ARCHIVE_BUCKET_NAME"]
    head = archived.client("s3").head_object(Bucket=bucket, Key=next(iter(objects)))
    assert head["ContentEncoding"] == "gzip"


def test_a_batch_with_a_message_that_is_not_a_record_fails_only_that_message(archived: Stack) -> None:
    arn = archived.functions["ArchiveFunction"]["GOV_CLOUD_ARCHIVE_QUEUE_ARN"]
    good = next(r for rs in _objects(archived).values() for r in rs)
    messages = [
        {"MessageId": "ok", "ReceiptHandle": "r1", "Body": json.dumps(good), "MD5OfBody": ""},
        {"MessageId": "bad", "ReceiptHandle": "r2", "Body": "not json", "MD5OfBody": ""},
    ]
    answer = archive_handler.handle(lambda_sqs_event(arn, messages), archive_handler.archiver())
    assert answer == {"batchItemFailures": [{"itemIdentifier": "bad"}]}


def test_replay_of_a_range_republishes_exactly_its_records_and_they_still_verify(
    archived: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # WHEN hour 08 of gov_cloud is replayed
    assert _replay("--since", "2026-11-29T08:00:00Z", "--until", "2026-11-29T09:00:00Z") == 0
    # THEN the consumer queue receives exactly those four records, the bodies as archived, with their attributes
    sqs = archived.client("sqs")
    received = drain(sqs, archived.gov_queue)
    records = [json.loads(m["Body"]) for m in received]
    assert sorted((r["device_id"], r["event_id"][-1]) for r in records) == [(DEVICE_ID, n) for n in "1234"]
    archived_8 = {
        json.dumps(r, sort_keys=True)
        for key, rs in _objects(archived).items()
        if key.startswith("gov_cloud/dt=2026-11-29/hour=08/")
        for r in rs
    }
    assert {json.dumps(r, sort_keys=True) for r in records} == archived_8
    attributes = received[0]["MessageAttributes"]
    assert {"event_type", "site_type", "town", "schema"} <= set(attributes)
    assert "read 4, matched 4, published 4, failed 0" in capsys.readouterr().out
    # AND they still pass `anfang audit verify --records`
    out = tmp_path / "replayed.ndjson"
    out.write_text("".join(m["Body"] + "\n" for m in received), encoding="utf-8")
    kms = archived.client("kms")
    assert anfang(["audit", "verify", "--stack-name", STACK_NAME, "--records", str(out)], kms=kms) == 0
    assert "verified" in capsys.readouterr().out
    # AND the replayed records reach the archive again: a second replay still publishes each one once
    assert _archive(archived) == []
    assert _replay("--since", "2026-11-29T08:00:00Z", "--until", "2026-11-29T09:00:00Z") == 0
    assert len(drain(sqs, archived.gov_queue)) == 4
    assert "duplicates 4" in capsys.readouterr().out


def test_replay_filters_by_event_type_and_caps(archived: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    sqs = archived.client("sqs")
    since, until = "2026-11-29T08:00:00Z", "2026-11-29T10:00:00Z"
    assert _replay("--since", since, "--until", until, "--event-type", "alarm") == 0
    assert sorted(json.loads(m["Body"])["event_id"][-1] for m in drain(sqs, archived.gov_queue)) == ["2", "6"]
    assert _replay("--since", since, "--until", until, "--event-type", "access", "--max-records", "2") == 0
    assert len(drain(sqs, archived.gov_queue)) == 2
    assert "stopped at --max-records 2" in capsys.readouterr().out
    assert _replay("--since", since, "--until", until, "--dry-run") == 0
    assert drain(sqs, archived.gov_queue) == []
    assert "matched 6, published 0" in capsys.readouterr().out


def test_an_empty_range_publishes_nothing(archived: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    # a range in hour 08 before any record was received (08:00-08:05) and a range of hours with no objects
    assert _replay("--since", "2026-11-29T08:00:00Z", "--until", "2026-11-29T08:05:00Z") == 0
    assert _replay("--since", "2026-11-30T00:00:00Z", "--until", "2026-11-30T03:00:00Z") == 0
    assert drain(archived.client("sqs"), archived.gov_queue) == []
    out = capsys.readouterr().out
    assert "read 4, matched 0, published 0" in out and "read 0, matched 0, published 0" in out


def test_bad_ranges_are_one_line_errors(archived: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert _replay("--since", "2026-11-29T09:00:00Z", "--until", "2026-11-29T08:00:00Z") == 2
    assert _replay("--since", "2026-11-29T08:00:00", "--until", "2026-11-29T09:00:00Z") == 2
    elsewhere = ["--stack-name", "no-such-stack", "--destination", "gov_cloud"]
    assert anfang(["replay", *elsewhere, "--since", "2026-11-29T08:00:00Z", "--until", "2026-11-29T09:00:00Z"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("anfang replay: ") for line in errors)
