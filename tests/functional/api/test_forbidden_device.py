"""A batch mixing permitted and forbidden devices (issue 14): the forbidden events are rejected one by one.

Before, one event naming a device the key is not bound to failed the whole request with 403, and an edge
gateway sending oldest first stalled behind it. Now each such event gets ``rejected`` / ``forbidden_device``
inside the 202, and its neighbours are accepted and queued; a batch of forbidden events only is still a 403.
"""

from __future__ import annotations

from typing import Any

from chalice.test import Client

from tests.api_stack import OTHER_DEVICE_ID, Device, Stack, alarm_event, batch

from .test_events import drain, post


def test_given_a_batch_mixing_permitted_and_forbidden_devices_then_only_the_forbidden_events_are_rejected(
    client: Client, device: Device, stack: Stack, aws: Any
) -> None:
    # GIVEN a batch: permitted, forbidden, permitted
    first, stranger, last = alarm_event(), alarm_event(device_id=OTHER_DEVICE_ID), alarm_event()
    # WHEN it is posted with the device's key
    response = post(client, device, batch(first, stranger, last))
    # THEN 202 with a per-event answer, in request order
    assert response.status_code == 202, response.body
    body = response.json_body
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted"]
    assert (body["accepted"], body["rejected"]) == (2, 1)
    error = body["results"][1]["error"]
    assert body["results"][1]["event_id"] == stranger["event_id"]
    assert (error["code"], error["field"]) == ("forbidden_device", "device_id")
    # AND only the permitted events are queued
    queued = drain(aws, stack.names["process_queue"])
    assert sorted(m["event_id"] for m in queued) == sorted([first["event_id"], last["event_id"]])


def test_given_a_forbidden_event_resent_alone_then_it_is_forbidden_and_never_queued(
    client: Client, device: Device, stack: Stack, aws: Any
) -> None:
    stranger = alarm_event(device_id=OTHER_DEVICE_ID)
    response = post(client, device, batch(stranger, alarm_event(device_id=OTHER_DEVICE_ID)))
    assert response.status_code == 403 and response.json_body["code"] == "forbidden_device"
    assert drain(aws, stack.names["process_queue"]) == []
