"""`anfang status` against the local stack: the dashboard's numbers come from what the functions really emitted."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from anfang.aws.registry import DeviceRegistry, Site
from anfang.contracts import Signer, generate_private_key, new_event_id
from anfang_ops.cli import main as anfang
from anfang_ops.local import LocalStack
from anfang_ops.towns import find_town

ROOT = Path(__file__).resolve().parents[3]
TOWN = find_town(ROOT / "infra" / "towns", "gaoqing-luhu")

pytestmark = pytest.mark.slow


def _status(capsys: pytest.CaptureFixture[str], stack_name: str) -> dict[str, dict[str, Any]]:
    capsys.readouterr()
    assert anfang(["status", "--stack-name", stack_name, "--json"]) == 0
    text = capsys.readouterr().out
    panels = json.loads(text[text.index("[\n") :])
    return {p["title"]: {s["label"]: s["total"] for s in p["series"]} for p in panels}


def test_status_shows_what_the_api_and_the_pipeline_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with LocalStack(ROOT, tmp_path / "local", town=TOWN) as stack:
        info = stack.info
        assert info is not None
        session = boto3.session.Session(region_name=info.region)
        registry = DeviceRegistry(
            session.client("dynamodb", endpoint_url=info.aws_endpoint_url),
            info.outputs["DevicesTableName"],
            town_code=info.town,
            cache_ttl_secs=0,
        )
        device_id = f"{info.town}001320000001"
        registry.register_device(device_id, Site("luhu-001", "residential_open", "Old town"))
        private = generate_private_key()
        key = registry.add_key(private.public_key(), role="device", device_ids=[device_id])
        # GIVEN a batch of 3 good events and 1 with a state no schema knows
        events = [
            {
                "event_id": new_event_id(),
                "event_type": "device_status",
                "device_id": device_id,
                "captured_at": "2026-01-05T08:00:00+08:00",
                "status": {"state": state},
            }
            for state in ("online", "online", "tamper", "exploded")
        ]
        body = json.dumps({"events": events}).encode()
        headers = Signer(key.key_id, private).sign("POST", "/v1/events", body)
        answer = requests.post(info.api_url + "/v1/events", data=body, headers=headers, timeout=30)
        assert answer.json()["accepted"] == 3 and answer.json()["rejected"] == 1
        # WHEN ops look at the status once the pipeline delivered them
        deadline = time.monotonic() + 60
        numbers: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            numbers = _status(capsys, info.stack_name)
            if all(numbers["Delivered per destination"].get(d) == 3 for d in ("gov_cloud", "police_video")):
                break
            time.sleep(1)
        # AND the device watch has run on its schedule (run now rather than wait a minute)
        assert stack.run_schedule("DeviceWatchFunction")["counts"]["DevicesSeen"] == 1
        while time.monotonic() < deadline:
            numbers = _status(capsys, info.stack_name)
            if numbers["Devices seen in the last hour"].get("devices seen") == 1:
                break
            time.sleep(1)
        # THEN the API's counters, the rejection by code and the deliveries per destination are the real ones
        assert numbers["Events at the API"] == {"received": 4, "accepted": 3, "duplicate": None, "rejected": 1}
        assert numbers["Rejected at the API, by code"] == {"payload_invalid": 1}
        assert numbers["Delivered per destination"] == {"gov_cloud": 3, "police_video": 3}
        assert set(numbers["Dead letters"].values()) == {0}
        # AND the devices seen in the last hour: the one device that posted (DevicesSeen, from the device watch)
        assert numbers["Devices seen in the last hour"] == {"devices seen": 1}
        # AND the text form has a row per series with a sparkline
        capsys.readouterr()
        assert anfang(["status", "--stack-name", info.stack_name]) == 0
        text = [line for line in capsys.readouterr().out.splitlines() if not line.startswith('{"')]
        received = next(line for line in text if line.strip().startswith("received"))
        assert received.split()[1] == "4" and received.split()[2][-1] in "▁▂▃▄▅▆▇█"
        assert "Devices seen in the last hour" in text
        # AND an unknown stack is one line
        assert anfang(["status", "--stack-name", "anfang-00000000"]) == 2
        assert capsys.readouterr().err.count("\n") == 1
