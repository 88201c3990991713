"""POST /v1/events end to end in moto: signatures, partial acceptance, images, duplicates, queue failures."""

from __future__ import annotations

import json
from typing import Any

from chalice.test import Client

from tests.api_stack import (
    OTHER_DEVICE_ID,
    Device,
    Stack,
    alarm_event,
    batch,
    face_event,
    register_device,
    signed,
)


def post(client: Client, device: Device, body: bytes, **sign: Any) -> Any:
    headers = signed(device.signer, "POST", "/v1/events", body, **sign)
    return client.http.post("/v1/events", headers=headers, body=body)


def drain(aws: Any, url: str) -> list[dict[str, Any]]:
    sqs = aws.client("sqs")
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return out
        out.extend(json.loads(m["Body"]) for m in got)


def test_given_a_signed_mixed_batch_when_posted_then_each_event_is_queued_by_kind(
    client: Client, device: Device, stack: Stack, aws: Any
) -> None:
    alarm, face = alarm_event(), face_event()
    response = post(client, device, batch(alarm, face))

    assert response.status_code == 202, response.body
    body = response.json_body
    assert [r["status"] for r in body["results"]] == ["accepted", "accepted"]
    assert body["accepted"] == 2
    processed = drain(aws, stack.names["process_queue"])
    analysed = drain(aws, stack.names["analyse_queue"])
    assert [m["event_id"] for m in processed] == [alarm["event_id"]]
    assert [m["event_id"] for m in analysed] == [face["event_id"]]
    stored = analysed[0]["images"][0]
    assert stored["width"] > 0 and stored["height"] > 0 and "data" not in json.dumps(analysed[0]["event"])
    head = aws.client("s3").head_object(Bucket=stack.names["raw_bucket"], Key=stored["ref"])
    assert head["ServerSideEncryption"] == "aws:kms"
    assert stored["ref"].startswith("330106/")


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.body
    assert response.headers["Content-Type"] == "application/problem+json"
    body = json.loads(response.body)
    assert body["code"] == code, body
    return body  # type: ignore[no-any-return]


def test_health_is_open_and_says_nothing_more(client: Client) -> None:
    response = client.http.get("/v1/health")
    assert response.status_code == 200
    assert response.json_body == {"status": "ok"}


def test_given_good_and_bad_events_in_one_batch_then_only_the_bad_ones_are_rejected(
    client: Client, device: Device, stack: Stack, aws: Any
) -> None:
    good = alarm_event()
    typo = alarm_event(alarm={"kind": "loitering", "severity": "info", "zone": "gate", "colour": "red"})
    wrong_type = alarm_event(event_type="teleport")
    response = post(client, device, batch(good, typo, wrong_type, "not an object", {}))  # type: ignore[arg-type]

    assert response.status_code == 202
    body = response.json_body
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "rejected", "rejected", "rejected"]
    assert body["results"][1]["error"]["field"] == "alarm.colour"
    assert body["results"][1]["event_id"] == typo["event_id"]
    assert {r["error"]["code"] for r in body["results"][1:]} == {"payload_invalid"}
    assert (body["accepted"], body["rejected"]) == (1, 4)
    assert [m["event_id"] for m in drain(aws, stack.names["process_queue"])] == [good["event_id"]]


def test_given_only_events_of_another_device_then_the_request_is_forbidden(
    client: Client, device: Device, stack: Stack, aws: Any
) -> None:
    # a batch mixing permitted and forbidden devices is answered per event: test_forbidden_device.py
    response = post(client, device, batch(alarm_event(device_id=OTHER_DEVICE_ID)))
    problem(response, 403, "forbidden_device")
    assert drain(aws, stack.names["process_queue"]) == []


def test_a_partner_key_may_not_post_events(client: Client, partner: Device) -> None:
    problem(post(client, partner, batch(alarm_event())), 403, "forbidden_role")


def test_given_key_rotation_then_old_and_new_keys_work_until_the_old_one_is_revoked(
    client: Client, device: Device, registry: Any
) -> None:
    new = register_device(registry, new_device=False)
    assert post(client, device, batch(alarm_event())).status_code == 202
    assert post(client, new, batch(alarm_event())).status_code == 202
    assert {k.key_id for k in registry.keys_of(device.device_id)} == {device.info.key_id, new.info.key_id}

    registry.revoke_key(device.info.key_id)

    body = problem(post(client, device, batch(alarm_event())), 401, "key_revoked")
    assert body["title"]
    assert post(client, new, batch(alarm_event())).status_code == 202


def test_given_an_event_sent_twice_then_the_second_copy_is_a_duplicate_and_not_queued_again(
    client: Client, device: Device, stack: Stack, aws: Any
) -> None:
    event = alarm_event()
    first = post(client, device, batch(event, event))
    second = post(client, device, batch(event, alarm_event()))

    assert [r["status"] for r in first.json_body["results"]] == ["accepted", "duplicate"]
    assert [r["status"] for r in second.json_body["results"]] == ["duplicate", "accepted"]
    queued = [m["event_id"] for m in drain(aws, stack.names["process_queue"])]
    assert queued.count(event["event_id"]) == 1 and len(queued) == 2


def test_given_two_devices_of_one_gateway_using_the_same_event_id_then_both_events_are_accepted_once(
    client: Client, registry: Any, stack: Stack, aws: Any
) -> None:
    # GIVEN a site gateway's key for two cameras whose (per-device) event ids happen to collide
    from anfang.aws.registry import Site
    from anfang.contracts import generate_private_key
    from tests.api_stack import DEVICE_ID

    site = Site("xihu-001", "residential_closed", "Lakeside Garden")
    for device_id in (DEVICE_ID, OTHER_DEVICE_ID):
        registry.register_device(device_id, site)
    private = generate_private_key()
    info = registry.add_key(private.public_key(), role="device", device_ids=[DEVICE_ID, OTHER_DEVICE_ID])
    gateway = Device(DEVICE_ID, private, info)
    first, second = alarm_event(DEVICE_ID), alarm_event(OTHER_DEVICE_ID)
    second["event_id"] = first["event_id"]
    # WHEN both are sent in one batch, then again
    answer = post(client, gateway, batch(first, second, first)).json_body["results"]
    again = post(client, gateway, batch(second, first)).json_body["results"]
    # THEN each is its own event: accepted once, a duplicate only of itself
    assert [r["status"] for r in answer] == ["accepted", "accepted", "duplicate"]
    assert [r["status"] for r in again] == ["duplicate", "duplicate"]
    queued = sorted((m["device_id"], m["event_id"]) for m in drain(aws, stack.names["process_queue"]))
    assert queued == sorted([(DEVICE_ID, first["event_id"]), (OTHER_DEVICE_ID, first["event_id"])])


def test_given_a_queue_that_fails_then_503_retry_later_and_nothing_is_falsely_accepted(
    client: Client, device: Device, stack: Stack, aws: Any
) -> None:
    sqs = aws.client("sqs")
    sqs.delete_queue(QueueUrl=stack.names["process_queue"])  # the queue write fails at the AWS boundary
    alarm, face = alarm_event(), face_event()

    response = post(client, device, batch(alarm, face))

    body = problem(response, 503, "retry_later")
    statuses = {r["event_id"]: r["status"] for r in body["results"]}
    assert statuses == {alarm["event_id"]: "retry_later", face["event_id"]: "accepted"}
    assert body["results"][0]["error"]["code"] == "retry_later"

    # GIVEN the queue is back WHEN the edge retries THEN the failed event is accepted, the other a duplicate
    sqs.create_queue(QueueName=stack.names["process_queue"].rsplit("/", 1)[1])
    retry = post(client, device, batch(alarm, face))
    assert [r["status"] for r in retry.json_body["results"]] == ["accepted", "duplicate"]


def test_given_the_nonce_store_is_down_then_503_retry_later(
    client: Client, device: Device, stack: Stack, aws: Any
) -> None:
    aws.client("dynamodb").delete_table(TableName=stack.names["nonces"])
    problem(post(client, device, batch(alarm_event())), 503, "retry_later")


# ---------------------------------------------------------------------------------------------------- auth errors


def test_unsigned_request_is_401_with_a_date_header(client: Client) -> None:
    response = client.http.post("/v1/events", headers={"Content-Type": "application/json"}, body=batch(alarm_event()))
    problem(response, 401, "signature_missing")
    assert response.headers["Date"].endswith("GMT")


def test_tampered_signature_is_invalid(client: Client, device: Device) -> None:
    body = batch(alarm_event())
    headers = signed(device.signer, "POST", "/v1/events", body)
    headers["Signature"] = "sig1=:" + "A" * 86 + "==:"
    problem(client.http.post("/v1/events", headers=headers, body=body), 401, "signature_invalid")


def test_signature_for_another_path_is_invalid(client: Client, device: Device) -> None:
    body = batch(alarm_event())
    headers = signed(device.signer, "POST", "/v1/health-codes", body)
    problem(client.http.post("/v1/events", headers=headers, body=body), 401, "signature_invalid")


def test_old_signature_is_expired(client: Client, device: Device) -> None:
    import time

    problem(post(client, device, batch(alarm_event()), created=int(time.time()) - 301), 401, "signature_expired")


def test_replayed_nonce_is_refused(client: Client, device: Device) -> None:
    body = batch(alarm_event())
    headers = signed(device.signer, "POST", "/v1/events", body)
    assert client.http.post("/v1/events", headers=headers, body=body).status_code == 202
    problem(client.http.post("/v1/events", headers=headers, body=body), 401, "signature_replayed")


def test_body_changed_after_signing_is_a_digest_mismatch(client: Client, device: Device) -> None:
    body = batch(alarm_event())
    headers = signed(device.signer, "POST", "/v1/events", body)
    problem(client.http.post("/v1/events", headers=headers, body=batch(alarm_event())), 401, "digest_mismatch")


def test_unregistered_key_is_unknown(client: Client) -> None:
    from anfang.contracts import Signer, generate_private_key, key_id_for

    private = generate_private_key()
    stranger = Signer(key_id_for(private.public_key()), private)
    body = batch(alarm_event())
    problem(
        client.http.post("/v1/events", headers=signed(stranger, "POST", "/v1/events", body), body=body),
        401,
        "unknown_key",
    )


def test_key_outside_its_validity_window_is_inactive(client: Client, device: Device, registry: Any) -> None:
    from datetime import UTC, datetime, timedelta

    from anfang.contracts import generate_private_key
    from tests.api_stack import Device as Dev

    private = generate_private_key()
    info = registry.add_key(
        private.public_key(),
        role="device",
        device_ids=[device.device_id],
        not_after=datetime.now(UTC) - timedelta(days=1),
    )
    problem(post(client, Dev(device.device_id, private, info), batch(alarm_event())), 401, "key_inactive")


# ---------------------------------------------------------------------------------------------------- payload errors


def test_malformed_json_is_400(client: Client, device: Device) -> None:
    problem(post(client, device, b'{"events": [}'), 400, "malformed_json")


def test_invalid_utf8_is_malformed_json(client: Client, device: Device) -> None:
    problem(post(client, device, b'{"events": ["\xff"]}'), 400, "malformed_json")


def test_wrong_content_type_is_415(client: Client, device: Device) -> None:
    problem(post(client, device, batch(alarm_event()), content_type="text/plain"), 415, "unsupported_media_type")


def test_body_that_is_not_a_batch_is_422(client: Client, device: Device) -> None:
    problem(post(client, device, b'{"events": [], "extra": 1}'), 422, "payload_invalid")
    problem(post(client, device, b'{"events": []}'), 422, "payload_invalid")
    problem(post(client, device, b"[1, 2]"), 422, "payload_invalid")


def test_501_events_are_too_many(client: Client, device: Device) -> None:
    event = alarm_event()
    problem(post(client, device, batch(*[event] * 501)), 413, "payload_too_large")


def test_nesting_bomb_is_refused_before_parsing(client: Client, device: Device) -> None:
    problem(post(client, device, b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), 413, "payload_too_large")


def test_body_over_5_mib_is_413_before_anything_else(client: Client) -> None:
    body = b'{"events": ["' + b"x" * (5 * 1024 * 1024) + b'"]}'
    response = client.http.post("/v1/events", headers={"Content-Type": "application/json"}, body=body)
    problem(response, 413, "payload_too_large")


def test_given_the_image_bucket_fails_then_only_events_with_images_are_retry_later(
    client: Client, device: Device, stack: Stack, aws: Any
) -> None:
    aws.client("s3").delete_bucket(Bucket=stack.names["raw_bucket"])
    alarm, face = alarm_event(), face_event()
    body = problem(post(client, device, batch(alarm, face)), 503, "retry_later")
    assert {r["event_id"]: r["status"] for r in body["results"]} == {
        alarm["event_id"]: "accepted",
        face["event_id"]: "retry_later",
    }
    assert drain(aws, stack.names["analyse_queue"]) == []
