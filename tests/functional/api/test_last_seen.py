"""Last-seen times (issue 19): the API records each device it hears from, throttled per container, fail open."""

from __future__ import annotations

import time
from typing import Any

from chalice.test import Client

from anfang.aws.last_seen import LastSeenTable, LastSeenWriter
from tests.api_stack import OTHER_DEVICE_ID, Device, Stack, alarm_event, batch

from .test_events import post


def _table(aws: Any, stack: Stack) -> LastSeenTable:
    return LastSeenTable(aws.client("dynamodb"), stack.environment["LAST_SEEN_TABLE_NAME"])


def test_a_posted_batch_records_its_devices_last_seen_time_and_not_a_forbidden_devices(
    client: Client, device: Device, stack: Stack, aws: Any
) -> None:
    # GIVEN a batch naming the key's device and a device the key may not send for
    before = int(time.time())
    response = post(client, device, batch(alarm_event(), alarm_event(device_id=OTHER_DEVICE_ID)))
    assert response.status_code == 202, response.body
    # THEN the key's device is seen now; the other device is not
    seen = _table(aws, stack).read()
    assert set(seen) == {device.device_id}
    last = seen[device.device_id].last_seen_at
    assert last is not None and before <= last <= int(time.time())


def test_within_the_interval_a_container_does_not_write_the_same_device_again(
    client: Client, device: Device, stack: Stack, aws: Any
) -> None:
    # GIVEN the device's last-seen time written by a first request, then removed behind the API's back
    assert post(client, device, batch(alarm_event())).status_code == 202
    name = stack.environment["LAST_SEEN_TABLE_NAME"]
    aws.client("dynamodb").delete_item(
        TableName=name, Key={"device_id": {"S": device.device_id}, "item": {"S": "seen"}}
    )
    # WHEN the device posts again within LAST_SEEN_INTERVAL_SECS (60 s in the template)
    assert post(client, device, batch(alarm_event())).status_code == 202
    # THEN this container wrote nothing (the throttle held), so the table stays empty
    assert _table(aws, stack).read() == {}


def test_a_failing_last_seen_table_never_fails_the_request(
    client: Client, device: Device, stack: Stack, aws: Any
) -> None:
    # GIVEN the last-seen table gone
    aws.client("dynamodb").delete_table(TableName=stack.environment["LAST_SEEN_TABLE_NAME"])
    # WHEN the device posts
    event = alarm_event()
    response = post(client, device, batch(event))
    # THEN the event is accepted and queued all the same
    assert response.status_code == 202, response.body
    assert response.json_body["accepted"] == 1


def test_the_writer_writes_a_device_again_once_its_interval_has_passed(aws: Any, stack: Stack) -> None:
    dynamodb = aws.client("dynamodb")
    writer = LastSeenWriter(dynamodb, stack.environment["LAST_SEEN_TABLE_NAME"], min_interval_secs=60)
    assert writer.touch(["a", "b"], at=1000.0) == 2
    assert writer.touch(["a", "b"], at=1059.0) == 0  # within the interval: no call at all
    assert writer.touch(["a", "c"], at=1060.0) == 2  # a is due again, c is new; b is not
    seen = _table(aws, stack).read()
    assert {d: s.last_seen_at for d, s in seen.items()} == {"a": 1060, "b": 1000, "c": 1060}
