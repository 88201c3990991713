"""Adapters against moto: registry rules and read API, nonce and seen-event TTLs, metrics and logs."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from chalice.test import Client
from pydantic import ValidationError

from anfang.aws.registry import DeviceOutsideTownError, DeviceRegistry, KeyExistsError, Site, UnknownDeviceError
from anfang.contracts import generate_private_key
from tests.api_stack import DEVICE_ID, Device, Stack, batch, signed


def test_registry_refuses_devices_outside_the_town(registry: DeviceRegistry) -> None:
    with pytest.raises(DeviceOutsideTownError):
        registry.register_device("11010500001320000001", Site("bj-1", "rural", "elsewhere"))
    with pytest.raises(DeviceOutsideTownError):
        registry.add_key(generate_private_key().public_key(), role="device", device_ids=["11010500001320000001"])


def test_registry_refuses_keys_for_unknown_devices_and_twice_the_same_key(registry: DeviceRegistry) -> None:
    key = generate_private_key().public_key()
    with pytest.raises(UnknownDeviceError):
        registry.add_key(key, role="device", device_ids=[DEVICE_ID])
    registry.register_device(DEVICE_ID, Site("xihu-001", "residential_closed", "Lakeside Garden"))
    registry.add_key(key, role="device", device_ids=[DEVICE_ID])
    with pytest.raises(KeyExistsError):
        registry.add_key(key, role="device", device_ids=[DEVICE_ID])


def test_registry_read_api_for_enrichment(registry: DeviceRegistry, device: Device) -> None:
    assert registry.site_of(DEVICE_ID) == Site("xihu-001", "residential_closed", "Lakeside Garden")
    assert registry.site_of("33010600001320009999") is None
    record = registry.device(DEVICE_ID)
    assert record is not None and record.town == "330106"
    resolved = registry.resolve(device.info.key_id)
    assert resolved is not None and resolved.device_ids == {DEVICE_ID} and resolved.role == "device"
    assert registry.resolve("no-such-key") is None


def test_nonce_and_seen_items_carry_their_ttls(client: Client, device: Device, stack: Stack, aws: Any) -> None:
    from tests.api_stack import alarm_event

    body = batch(alarm_event())
    assert client.http.post("/v1/events", headers=signed(device.signer, "POST", "/v1/events", body), body=body)
    ddb = aws.client("dynamodb")
    now = time.time()
    items = ddb.scan(TableName=stack.names["nonces"])["Items"]
    (nonce,) = [item for item in items if not item["pk"]["S"].startswith("rate#")]
    assert 590 <= int(nonce["expires_at"]["N"]) - now <= 610
    # the key's request counter of this 10 s window goes a minute after the window
    (counter,) = [item for item in items if item["pk"]["S"].startswith(f"rate#{device.info.key_id}#")]
    window_start = int(counter["pk"]["S"].rsplit("#", 1)[1])
    assert window_start % 10 == 0 and window_start <= now < window_start + 11
    assert counter["requests"]["N"] == "1" and int(counter["expires_at"]["N"]) == window_start + 10 + 60
    (seen,) = ddb.scan(TableName=stack.names["seen"])["Items"]
    assert int(seen["expires_at"]["N"]) - now >= 30 * 86_400
    assert seen["key_id"]["S"] == device.info.key_id


def test_metrics_are_emf_with_town_and_reason_and_logs_carry_no_payload(
    client: Client, device: Device, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from tests.api_stack import alarm_event

    secret = "11010519491231002X"
    good = alarm_event()
    bad = alarm_event(alarm={"kind": "loitering", "severity": "info", "zone": secret, "extra": secret})
    body = batch(good, bad)
    client.http.post("/v1/events", headers=signed(device.signer, "POST", "/v1/events", body), body=body)

    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines() if line.startswith("{")]
    emf = [line for line in lines if "_aws" in line]
    assert any(line.get("received") == [2.0] and line["town"] == "330106" for line in emf)
    assert any(line.get("reason") == "payload_invalid" and "rejected" in line for line in emf)
    records = [vars(record) for record in caplog.records]
    assert any(r["msg"] == "events handled" and r.get("accepted") == 1 for r in records)
    everything = out.out + out.err + json.dumps(records, default=str)
    assert secret not in everything
    assert good["event_id"] not in everything


def test_a_gateway_key_sends_for_every_device_behind_it(registry: DeviceRegistry, client: Client) -> None:
    from anfang.contracts import Signer, key_id_for
    from tests.api_stack import alarm_event

    # GIVEN a site gateway's key bound to two cameras, then to a third added later
    cameras = [f"3301060000132000{n:04d}" for n in (11, 12, 13)]
    for camera in cameras:
        registry.register_device(camera, Site("xihu-002", "residential_open", "Old Town Lane"))
    private = generate_private_key()
    info = registry.add_key(private.public_key(), role="device", device_ids=cameras[:2])
    assert registry.bind(info.key_id, cameras[2]).device_ids == set(cameras)
    assert all(info.key_id in {k.key_id for k in registry.keys_of(camera)} for camera in cameras)
    # WHEN it signs one batch with events of all three cameras and of a camera it is not bound to
    signer = Signer(key_id_for(private.public_key()), private)
    stranger = "33010600001320009999"
    body = batch(*(alarm_event(device_id=c) for c in cameras))
    answer = client.http.post("/v1/events", headers=signed(signer, "POST", "/v1/events", body), body=body)
    # THEN the three are accepted; an event naming another device is rejected on its own (issue 14)
    assert answer.status_code == 202, answer.body
    assert json.loads(answer.body)["accepted"] == 3
    body = batch(alarm_event(device_id=cameras[0]), alarm_event(device_id=stranger))
    answer = client.http.post("/v1/events", headers=signed(signer, "POST", "/v1/events", body), body=body)
    assert answer.status_code == 202, answer.body
    results = json.loads(answer.body)["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected"]
    assert results[1]["error"]["code"] == "forbidden_device"


@pytest.mark.parametrize("status", ["revoked", "Revoked", "suspended", "disabled", "ACTIVE", " active", ""])
def test_only_a_key_whose_status_is_exactly_active_may_sign(
    status: str, client: Client, device: Device, stack: Stack, aws: Any
) -> None:
    from tests.api_stack import alarm_event

    # GIVEN an operator (or a script) set the key's status to anything but "active"
    aws.client("dynamodb").update_item(
        TableName=stack.names["devices"],
        Key={"pk": {"S": f"key#{device.info.key_id}"}},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": status}},
    )
    # WHEN the device signs a request with it THEN it is refused as revoked
    body = batch(alarm_event())
    response = client.http.post("/v1/events", headers=signed(device.signer, "POST", "/v1/events", body), body=body)
    assert response.status_code == 401 and json.loads(response.body)["code"] == "key_revoked"


def test_a_revoked_key_is_refused_at_most_the_registry_cache_ttl_after_its_revocation(
    registry: DeviceRegistry, device: Device, stack: Stack, aws: Any
) -> None:
    # GIVEN an API container whose registry cache (30 s) resolved the key just before it was revoked
    now = [1000.0]
    container = DeviceRegistry(
        aws.client("dynamodb"), stack.names["devices"], town_code="330106", cache_ttl_secs=30, clock=lambda: now[0]
    )
    before = container.resolve(device.info.key_id)
    assert before is not None and before.status == "active"
    # WHEN an operator revokes it (another process: the CLI)
    registry.revoke_key(device.info.key_id)
    # THEN the container may accept it until 30 s after its read, never longer
    for elapsed, expected in [(0.0, "active"), (29.9, "active"), (30.0, "revoked"), (30.1, "revoked")]:
        now[0] = 1000.0 + elapsed
        resolved = container.resolve(device.info.key_id)
        assert resolved is not None and resolved.status == expected, elapsed
    # ... and the bound is a setting the API refuses to raise past 300 s
    from anfang.api.settings import ApiSettings

    with pytest.raises(ValidationError):
        ApiSettings.model_validate({**stack.env(), "REGISTRY_CACHE_TTL_SECS": "301"})
