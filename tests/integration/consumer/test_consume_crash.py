"""kill -9 of the real ``anfang consume`` process, again and again, while it drains a queue of a stack deployed
from template.yaml into a moto server: every released record ends in its NDJSON output exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from anfang.contracts import SiteView
from anfang.pipeline.process import Incoming
from anfang.pipeline.process_wiring import build_processor
from tests.pipeline_events import DEVICE_ID, example_queued
from tests.pipeline_stack import MemoryHealthCodes, MemorySites, load_handler, person_key
from tests.relays_support import free_port
from tests.template_stack import deploy_test_stack

pytestmark = pytest.mark.slow

REGION = "cn-north-1"
STACK = "anfang-consume"
RECORDS = 400
handler = load_handler("process")


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": url,
    }.items():
        monkeypatch.setenv(name, value)
    yield url
    server.stop()


def _release(session: Any) -> dict[str, str]:
    deployed = deploy_test_stack(session, STACK)
    settings = handler.Settings.model_validate(deployed.functions["ProcessFunction"].environment)
    sites = MemorySites({DEVICE_ID: SiteView(site_id="xihu-garden", site_type="residential_closed", name="Xihu")})
    processor = build_processor(
        settings, sites=sites, health_codes=MemoryHealthCodes(), person_key=person_key, session=session
    )
    types = ("access", "alarm", "plate_capture", "visitor", "device_status")
    for start in range(0, RECORDS, 100):
        messages = [
            Incoming(f"m{start + i}", example_queued(types[i % 5]).model_dump_json(by_alias=True)) for i in range(100)
        ]
        assert processor.process(messages).failed_message_ids == []
    return deployed.outputs


def _start(out: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "anfang_ops.cli", "consume", "--stack-name", STACK]
    command += ["--destination", "police_video", "--out", str(out), "--decrypt", "--wait-secs", "1", *extra]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))


def _lines(out: Path) -> list[dict[str, Any]]:
    path = out / "records.ndjson"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_kill_9_again_and_again_loses_and_doubles_nothing(endpoint: str, tmp_path: Path) -> None:
    # GIVEN 400 released police_video records on the queue (visibility timeout 30 s in the local stack)
    session = boto3.session.Session(region_name=REGION)
    outputs = _release(session)
    sqs = session.client("sqs")
    queue = outputs["PoliceVideoQueueUrl"]
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": "2"})  # redeliver soon after a kill
    out = tmp_path / "out"
    rng = random.Random(17)
    kills = 0
    written_at_kill: list[int] = []
    started = time.monotonic()
    # WHEN the consumer is killed with SIGKILL at random moments, 8 times, and restarted each time
    while kills < 8:
        consumer = _start(out)
        time.sleep(rng.uniform(0.8, 2.5))
        consumer.send_signal(signal.SIGKILL)
        consumer.wait(10)
        kills += 1
        written_at_kill.append(len(_lines(out)))
        if written_at_kill[-1] >= RECORDS:
            break
    # AND finally left to drain the queue
    consumer = _start(out, "--exit-when-idle")
    _, stderr = consumer.communicate(timeout=240)
    assert consumer.returncode == 0, stderr.decode()[-2000:]
    elapsed = time.monotonic() - started
    # THEN every record is in the output exactly once, decrypted, and the queue is empty
    lines = _lines(out)
    keys = [(line["device_id"], line["event_id"]) for line in lines]
    assert len(keys) == len(set(keys)) == RECORDS, f"{len(keys)} lines, {len(set(keys))} distinct after {kills} kills"
    assert all(isinstance(line["person"]["name"], str) for line in lines if line["event_type"] == "access")
    visible = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])
    assert visible["Attributes"]["ApproximateNumberOfMessages"] == "0"
    # (and the kills landed mid-drain, not only before the first record or after the last)
    assert any(0 < n < RECORDS for n in written_at_kill), written_at_kill
    print(f"consumer: {RECORDS} records through {kills} kill -9 in {elapsed:.1f} s; written at kills {written_at_kill}")
