"""Every town of infra/towns/ gets a working local stack: `anfang local up --town` for each, one signed event
through the API to both destinations. (The first town is what `anfang local up` starts without --town.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import pytest
import requests

from anfang.aws.registry import DeviceRegistry, Site
from anfang.contracts import Signer, generate_private_key, new_event_id
from anfang.contracts.destinations import DESTINATION_INFO, DESTINATIONS
from anfang_ops.local import LocalStack
from anfang_ops.towns import TownConfig, find_town, load_towns

ROOT = Path(__file__).resolve().parents[3]
TOWNS = load_towns(ROOT / "infra" / "towns")

pytestmark = pytest.mark.slow


def test_the_default_town_is_the_first_town_file() -> None:
    assert find_town(ROOT / "infra" / "towns", None) == TOWNS[0]


@pytest.mark.parametrize("town", TOWNS, ids=lambda t: t.env)
def test_the_local_stack_of_every_town_carries_a_signed_event(town: TownConfig, tmp_path: Path) -> None:
    # GIVEN the town's local stack, started the way `anfang local up --town <file>` starts it
    with LocalStack(
        ROOT, tmp_path / "local", town=find_town(ROOT, str(ROOT / "infra" / "towns" / f"{town.env}.toml"))
    ) as stack:
        info = stack.info
        assert info is not None and info.town == town.town.code and info.region == town.town.region
        session = boto3.session.Session(region_name=info.region)
        dynamodb = session.client("dynamodb", endpoint_url=info.aws_endpoint_url)
        registry = DeviceRegistry(dynamodb, info.outputs["DevicesTableName"], town_code=info.town, cache_ttl_secs=0)
        device_id = f"{town.town.code}001320000001"  # the town's code, then industry 00, type 132, net 0, serial
        registry.register_device(device_id, Site("site-001", "rural", "village committee"))
        private = generate_private_key()
        key = registry.add_key(private.public_key(), role="device", device_ids=[device_id])
        event = {
            "event_id": new_event_id(),
            "event_type": "device_status",
            "device_id": device_id,
            "captured_at": "2026-01-05T08:00:00+08:00",
            "status": {"state": "online"},
        }
        # WHEN a device posts one signed event
        body = json.dumps({"events": [event]}).encode()
        answer = requests.post(
            info.api_url + "/v1/events",
            data=body,
            headers=Signer(key.key_id, private).sign("POST", "/v1/events", body),
            timeout=30,
        )
        assert answer.status_code == 202 and answer.json()["accepted"] == 1, answer.text
        # THEN each destination's queue receives its record, with the town's code
        sqs = session.client("sqs", endpoint_url=info.aws_endpoint_url)
        for destination in DESTINATIONS:
            url = info.outputs[DESTINATION_INFO[destination].queue_output]
            deadline, records = time.monotonic() + 30, []
            while not records and time.monotonic() < deadline:
                records = [
                    json.loads(m["Body"])
                    for m in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
                ]
            assert records, f"{town.env}: nothing reached {destination}"
            assert records[0]["event_id"] == event["event_id"] and records[0]["town"] == town.town.code
