"""The process function on moto: duplicates fan out once, a poison message ends in the DLQ, health codes.

Driven like Lambda drives it: real ReceiveMessage results turned into SQS events, ``batchItemFailures``
honoured, failed messages retried until the queue's redrive policy moves them to the DLQ.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from typing import Any

import pytest

from anfang.aws.environment import SettingsError
from anfang.contracts import SiteView, new_event_id
from anfang.pipeline.process import Processor
from anfang.pipeline.process_wiring import build_processor
from tests.pipeline_events import DEVICE_ID, example_queued, planted_event, queued
from tests.pipeline_stack import (
    MemoryHealthCodes,
    MemorySites,
    Stack,
    count_calls,
    drain,
    drive,
    load_handler,
    person_key,
)

handler = load_handler("process")
SITES = MemorySites({DEVICE_ID: SiteView(site_id="xihu-garden", site_type="residential_closed", name="Xihu Garden")})


def _processor(stack: Stack, *, health_codes: MemoryHealthCodes | None = None, **env: str) -> Processor:
    settings = handler.Settings.model_validate({**stack.env, **env})
    return build_processor(
        settings,
        sites=SITES,
        health_codes=health_codes or MemoryHealthCodes(),
        person_key=person_key,
        session=stack.session,
    )


def _send(stack: Stack, bodies: list[str]) -> None:
    sqs = stack.client("sqs")
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])]
        sqs.send_message_batch(QueueUrl=stack.process_queue, Entries=entries)


def _run(stack: Stack, processor: Processor) -> int:
    return drive(stack.client("sqs"), stack.process_queue, lambda event: handler.handle(event, processor))


def _ids(messages: list[dict[str, Any]]) -> Counter[str]:
    return Counter(json.loads(m["Body"])["event_id"] for m in messages)


def test_the_same_event_delivered_twice_is_fanned_out_once(stack: Stack) -> None:
    # GIVEN an access event queued twice in one batch, and once more in a later batch
    processor = _processor(stack)
    body = example_queued("access").model_dump_json(by_alias=True)
    others = [example_queued(t).model_dump_json(by_alias=True) for t in ("alarm", "plate_capture")]
    _send(stack, [body, body, *others])
    _run(stack, processor)
    _send(stack, [body])
    _run(stack, processor)
    # THEN each destination received every event exactly once
    sqs = stack.client("sqs")
    for queue_url in (stack.gov_queue, stack.police_queue):
        assert sorted(_ids(drain(sqs, queue_url)).values()) == [1, 1, 1]
    assert drain(sqs, stack.process_dlq) == []


def test_records_carry_the_filter_attributes(stack: Stack) -> None:
    _send(stack, [example_queued("plate_capture").model_dump_json(by_alias=True)])
    _run(stack, _processor(stack))
    (message,) = drain(stack.client("sqs"), stack.gov_queue)
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attributes == {
        "event_type": "plate_capture",
        "site_type": "residential_closed",
        "town": "330106",
        "schema": "anfang.record.v1",
    }
    record = json.loads(message["Body"])
    assert record["vehicle"]["plate"] == "浙" and record["site"]["name"] == "Xihu Garden"


def test_poison_message_ends_in_the_dlq_and_its_neighbours_are_delivered_once(stack: Stack) -> None:
    # GIVEN a batch with a message that fails every time between good events
    poison = ["this is not a queued event", json.dumps({"schema": "anfang.queued.v1", "event_id": "x"})]
    good = [example_queued(t).model_dump_json(by_alias=True) for t in ("access", "visitor", "alarm", "device_status")]
    _send(stack, [good[0], poison[0], good[1], poison[1], good[2], good[3]])
    # WHEN the function drains the queue, retried messages coming back after their visibility timeout
    invocations = _run(stack, _processor(stack))
    # THEN the poison messages are in the DLQ after maxReceiveCount (3) attempts ...
    sqs = stack.client("sqs")
    dead = drain(sqs, stack.process_dlq)
    assert sorted(m["Body"] for m in dead) == sorted(poison)
    assert invocations >= 3
    # ... and every neighbour reached each destination exactly once
    expected = Counter(json.loads(b)["event_id"] for b in good)
    assert _ids(drain(sqs, stack.gov_queue)) == expected
    assert _ids(drain(sqs, stack.police_queue)) == expected


def test_an_event_that_reached_one_destination_is_retried_for_the_other_only(stack: Stack) -> None:
    # GIVEN the police topic is gone for a first attempt (publish fails) ...
    processor = _processor(stack, POLICE_VIDEO_TOPIC_ARN=stack.env["POLICE_VIDEO_TOPIC_ARN"] + "-missing")
    event = example_queued("alarm").model_dump_json(by_alias=True)
    sqs = stack.client("sqs")
    _send(stack, [event])
    received = sqs.receive_message(QueueUrl=stack.process_queue, AttributeNames=["All"])["Messages"]
    from tests.pipeline_stack import lambda_sqs_event

    response = handler.handle(lambda_sqs_event("arn:aws-cn:sqs:cn-north-1:123456789012:process", received), processor)
    assert response == {"batchItemFailures": [{"itemIdentifier": received[0]["MessageId"]}]}
    # ... WHEN it is back and the message is retried
    _run(stack, _processor(stack))
    # THEN gov cloud got the event once, police once
    assert len(drain(sqs, stack.gov_queue)) == 1
    assert len(drain(sqs, stack.police_queue)) == 1


def test_health_codes_are_added_with_a_stale_flag_and_not_when_switched_off(stack: Stack) -> None:
    fresh, old = planted_event("access", _planted()), planted_event("visitor", _planted())
    old["visitor"]["visitor"]["id_number"] = "440305199002020031"
    now = dt.datetime.now(dt.UTC)
    codes = MemoryHealthCodes.of(
        (fresh["person"]["id_number"], "yellow", now - dt.timedelta(hours=1)),
        ("440305199002020031", "red", now - dt.timedelta(days=3)),
    )
    bodies = [queued(e).model_dump_json(by_alias=True) for e in (fresh, old)]
    bodies.append(example_queued("alarm").model_dump_json(by_alias=True))  # no identified person
    _send(stack, bodies)
    _run(stack, _processor(stack, health_codes=codes))
    sqs = stack.client("sqs")
    gov = {json.loads(m["Body"])["event_type"]: json.loads(m["Body"]) for m in drain(sqs, stack.gov_queue)}
    assert gov["access"]["health_code"]["status"] == "yellow" and gov["access"]["health_code"]["stale"] is False
    assert gov["visitor"]["health_code"]["status"] == "red" and gov["visitor"]["health_code"]["stale"] is True
    assert "health_code" not in gov["alarm"]
    assert codes.calls == 1  # one lookup for the batch
    police = [json.loads(m["Body"]) for m in drain(sqs, stack.police_queue)]
    assert all("health_code" not in record for record in police)  # the police policy does not name it

    # WHEN the town switches health codes off, nothing is looked up or added
    codes.calls = 0
    again = planted_event("access", _planted())
    again["person"]["id_number"] = fresh["person"]["id_number"]
    _send(stack, [queued(again).model_dump_json(by_alias=True)])
    _run(stack, _processor(stack, health_codes=codes, HEALTH_CODES_ENABLED="false"))
    (record,) = [json.loads(m["Body"]) for m in drain(sqs, stack.gov_queue)]
    assert "health_code" not in record and codes.calls == 0


def _planted() -> Any:
    from tests.pipeline_events import sample_planted

    return sample_planted(canary=f"canary-{new_event_id()[-12:]}")


def test_aws_calls_per_event_stay_within_budget(stack: Stack) -> None:
    # GIVEN a full batch of 100 events (the process queue's batch size with a batching window)
    calls: Counter[str] = Counter()
    count_calls(stack.session, calls)
    processor = _processor(stack)
    from anfang.pipeline.process import Incoming

    messages = [
        Incoming(f"m{i}", example_queued(("access", "alarm")[i % 2]).model_dump_json(by_alias=True)) for i in range(100)
    ]
    # WHEN the batch is processed (the release log's heads and signing certificate were read at cold start)
    calls.clear()
    result = processor.process(messages)
    # THEN it costs at most 0.3 AWS calls per event, all batched: one signed release-log entry per destination
    assert result.failed_message_ids == []
    assert calls == {
        "dynamodb.BatchGetItem": 1,
        "kms.GenerateDataKey": 1,
        "sns.PublishBatch": 20,
        "dynamodb.BatchWriteItem": 4,
        "dynamodb.TransactWriteItems": 1,
    }
    assert sum(calls.values()) / 100 <= 0.3


@pytest.mark.parametrize("missing", ["TOWN_CODE", "DELIVERED_EVENTS_TABLE_NAME", "POLICE_VIDEO_TOPIC_ARN"])
def test_settings_are_validated_at_cold_start(stack: Stack, missing: str) -> None:
    env = {k: v for k, v in stack.env.items() if k != missing}
    with pytest.raises(SettingsError, match=missing):
        handler.Settings.from_env(env)


def test_a_policy_that_encrypts_needs_its_field_key_at_cold_start(stack: Stack) -> None:
    # GIVEN the police policy encrypts names and ID numbers WHEN its KMS key is not configured
    settings = handler.Settings.from_env({k: v for k, v in stack.env.items() if k != "POLICE_FIELD_KEY_ARN"})
    # THEN the function does not start (rather than dead-lettering every record that carries a person)
    with pytest.raises(SettingsError, match="police_video@.* encrypts fields: set POLICE_FIELD_KEY_ARN"):
        build_processor(settings, SITES, MemoryHealthCodes(), person_key, session=stack.session)
