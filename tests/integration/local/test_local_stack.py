"""The local stack as a newcomer meets it: template.yaml on a moto server, the functions in-process, the API
over real HTTP, the edge agent over loopback, the anfang CLI against the stack's outputs."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from anfang.contracts import (
    EventImage,
    Signer,
    find_mobiles,
    find_resident_ids,
    generate_private_key,
    key_id_for,
    new_event_id,
    private_key_to_pem,
    public_key_to_text,
)
from anfang.contracts.examples import example_events
from anfang_ops.cli import main as anfang
from anfang_ops.local import LocalStack
from anfang_ops.towns import load_towns

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "images"
TOWN = next(t for t in load_towns(ROOT / "infra" / "towns") if t.env == "gaoqing-tianzhen")
DEVICE = f"{TOWN.town.code}001320000001"  # division 8 + industry 00 + type 132 + network 0 + serial

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(ROOT, tmp_path_factory.mktemp("local"), town=TOWN)
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def aws(stack: LocalStack) -> Callable[[str], Any]:
    assert stack.info is not None
    session = boto3.session.Session(region_name=stack.info.region)
    return lambda name: session.client(name, endpoint_url=stack.info.aws_endpoint_url)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def device_key(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Signer:
    """A camera registered through the CLI, as ops would do it."""
    private = generate_private_key()
    key_file = tmp_path_factory.mktemp("keys") / "camera.pub"
    key_file.write_text(public_key_to_text(private.public_key()))
    assert stack.info is not None
    code = anfang(
        ["devices", "register", "--stack-name", stack.info.stack_name, "--device-id", DEVICE]
        + ["--public-key", str(key_file), "--site-id", "tianzhen-001", "--site-type", "residential_closed"]
        + ["--site-name", "Lakeside Garden"]
    )
    assert code == 0
    return Signer(key_id_for(private.public_key()), private)


def _post(stack: LocalStack, signer: Signer, events: list[dict[str, Any]]) -> requests.Response:
    assert stack.info is not None
    body = json.dumps({"events": events}).encode()
    headers = signer.sign("POST", "/v1/events", body)
    return requests.post(stack.info.api_url + "/v1/events", data=body, headers=headers, timeout=30)


def _drain(aws: Callable[[str], Any], queue_url: str, want: set[str], timeout_secs: float = 60) -> dict[str, Any]:
    """Read destination records until every event id in ``want`` arrived; deletes what it reads."""
    sqs = aws("sqs")
    found: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_secs
    while not want <= set(found) and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            record = json.loads(message["Body"])
            found[record["event_id"]] = record
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    assert want <= set(found), f"missing {sorted(want - set(found))}"
    return found


def test_stack_json_tells_how_to_reach_the_stack(stack: LocalStack) -> None:
    info = json.loads(stack.stack_json.read_text())
    assert {"api_url", "aws_endpoint_url", "region", "town", "stack_name"} <= set(info)
    assert info["town"] == TOWN.town.code
    assert info["GovCloudQueueUrl"] and info["PoliceVideoQueueUrl"] and info["DevicesTableName"]
    assert requests.get(info["api_url"] + "/v1/health", timeout=10).json() == {"status": "ok"}


def test_a_signed_batch_reaches_both_destinations_redacted(
    stack: LocalStack, aws: Callable[[str], Any], device_key: Signer, tmp_path: Path
) -> None:
    # GIVEN a face capture with a real JPEG and an access event with a named person
    examples = example_events()
    face = {**examples["face_capture"], "event_id": new_event_id(), "device_id": DEVICE}
    face["images"] = [EventImage.from_bytes("face", (FIXTURES / "face_crop.jpg").read_bytes()).model_dump()]
    face.pop("face")
    access = {**examples["access"], "event_id": new_event_id(), "device_id": DEVICE}
    # WHEN the camera posts them over HTTP
    answer = _post(stack, device_key, [face, access])
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == 2
    # THEN both destinations receive both events, each as its policy shapes it
    want = {face["event_id"], access["event_id"]}
    assert stack.info is not None
    gov = _drain(aws, stack.info.outputs["GovCloudQueueUrl"], want)
    police = _drain(aws, stack.info.outputs["PoliceVideoQueueUrl"], want)
    person = access["person"]
    gov_text = json.dumps(gov, ensure_ascii=False)
    assert not find_resident_ids(gov_text) and not find_mobiles(gov_text) and person["name"] not in gov_text
    assert {image["role"] for image in gov[face["event_id"]]["images"]} <= {"scene", "plate", "vehicle", "person"}
    assert all(i["role"] == "face" for i in police[face["event_id"]]["images"])
    assert gov[access["event_id"]]["site"]["site_type"] == "residential_closed"
    police_person = police[access["event_id"]]["person"]
    assert police_person["id_number"]["enc"] == "A256GCM"
    # AND the police side restores the encrypted fields with the CLI
    source, target = tmp_path / "police.ndjson", tmp_path / "plain.ndjson"
    source.write_text(json.dumps(police[access["event_id"]], ensure_ascii=False) + "\n")
    assert anfang(["decrypt", "--input", str(source), "--output", str(target)]) == 0
    plain = json.loads(target.read_text())
    assert plain["person"]["id_number"] == person["id_number"]
    assert plain["person"]["phone"] == person["phone"]


def test_a_poison_message_ends_in_the_dead_letter_queue(stack: LocalStack, aws: Callable[[str], Any]) -> None:
    assert stack.info is not None
    sqs = aws("sqs")
    sqs.send_message(QueueUrl=stack.info.outputs["ProcessQueueUrl"], MessageBody='{"not": "an event"}')
    dlq = stack.info.outputs["ProcessDeadLetterQueueUrl"]
    deadline = time.monotonic() + 60
    messages: list[dict[str, Any]] = []
    while not messages and time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages", [])
    assert messages and json.loads(messages[0]["Body"]) == {"not": "an event"}
    # and ops can move it back (it will fail again and return: the DLQ is where it belongs)
    sqs.change_message_visibility(QueueUrl=dlq, ReceiptHandle=messages[0]["ReceiptHandle"], VisibilityTimeout=0)
    assert anfang(["dlq", "redrive", "--stack-name", stack.info.stack_name, "process"]) == 0


def test_the_edge_agent_delivers_through_the_local_stack(
    stack: LocalStack, aws: Callable[[str], Any], tmp_path: Path
) -> None:
    # GIVEN a gateway key registered for the two simulated cameras of its site
    assert stack.info is not None
    private = generate_private_key()
    (tmp_path / "gateway.key").write_bytes(private_key_to_pem(private))
    (tmp_path / "gateway.key").chmod(0o600)  # the agent refuses a key its group or others can read
    (tmp_path / "gateway.pub").write_text(public_key_to_text(private.public_key()))
    prefix = f"{TOWN.town.code}001320"
    for serial in (1, 2):
        assert (
            anfang(
                ["devices", "register", "--stack-name", stack.info.stack_name, "--device-id", f"{prefix}{serial:06d}"]
                + ["--public-key", str(tmp_path / "gateway.pub"), "--site-id", "tianzhen-009", "--site-type", "rural"]
                + ["--site-name", "Meijiawu village"]
            )
            == 0
        )
    config = tmp_path / "agent.toml"
    config.write_text(
        f'api_url = "{stack.info.api_url}"\nkey_id = "{key_id_for(private.public_key())}"\n'
        f'private_key_file = "{tmp_path / "gateway.key"}"\nstate_dir = "{tmp_path / "state"}"\n'
        'linger_ms = 100\nwatchdog = false\n\n[[sources]]\ntype = "simulator"\ndevices = 2\n'
        f'device_id_prefix = "{prefix}"\nrate_per_sec = 200.0\nmax_events = 30\nseed = 7\n'
        f'fixtures_dir = "{FIXTURES}"\n'
    )
    # WHEN the real agent runs as a process against the local API
    agent = subprocess.Popen(
        [sys.executable, "-m", "anfang_edge.cli", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    )
    try:
        deadline = time.monotonic() + 90
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            out = subprocess.run(
                [sys.executable, "-m", "anfang_edge.cli", "status", "--json", "--config", str(config)],
                capture_output=True,
                text=True,
                check=False,
            )
            status = json.loads(out.stdout) if out.returncode == 0 else {}
            if status.get("counters", {}).get("sent", 0) >= 30 and status.get("depth") == 0:
                break
            time.sleep(0.5)
    finally:
        agent.terminate()
        agent.wait(timeout=30)
    # THEN all 30 events left the spool, none quarantined, and each reached both destinations
    assert status.get("depth") == 0 and status["counters"]["sent"] == 30, status
    assert status.get("quarantined", 0) == 0, status
    gov_url, police_url = stack.info.outputs["GovCloudQueueUrl"], stack.info.outputs["PoliceVideoQueueUrl"]
    sqs = aws("sqs")
    seen: dict[str, set[str]] = {"gov": set(), "police": set()}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (len(seen["gov"]) >= 30 and len(seen["police"]) >= 30):
        for name, url in (("gov", gov_url), ("police", police_url)):
            for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            ):
                record = json.loads(message["Body"])
                if record["device_id"].startswith(prefix) or record["device_id"].startswith("pn_"):
                    seen[name].add(record["event_id"])
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert len(seen["gov"]) == 30 and seen["gov"] == seen["police"]


def test_released_records_are_archived_and_a_replay_republishes_them_unchanged(
    stack: LocalStack, aws: Callable[[str], Any], device_key: Signer, tmp_path: Path
) -> None:
    import datetime as dt  # noqa: PLC0415
    import gzip  # noqa: PLC0415

    assert stack.info is not None
    outputs, name = stack.info.outputs, stack.info.stack_name
    # GIVEN two events through the API, delivered (and so released)
    examples = example_events()
    events = [{**examples[t], "event_id": new_event_id(), "device_id": DEVICE} for t in ("access", "alarm")]
    assert _post(stack, device_key, events).status_code == 202
    want = {e["event_id"] for e in events}
    _drain(aws, outputs["GovCloudQueueUrl"], want)
    # WHEN the archive function has written them: gzip NDJSON under gov_cloud/dt=…/hour=…/
    s3, bucket = aws("s3"), outputs["ArchiveBucketName"]
    archived: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 60
    while not want <= set(archived) and time.monotonic() < deadline:
        for item in s3.list_objects_v2(Bucket=bucket, Prefix="gov_cloud/dt=").get("Contents", []):
            assert item["Key"].split("/")[2].startswith("hour=") and item["Key"].endswith(".ndjson.gz")
            text = gzip.decompress(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()).decode()
            archived |= {json.loads(line)["event_id"]: json.loads(line) for line in text.splitlines()}
        time.sleep(0.5)
    assert want <= set(archived), f"not archived: {sorted(want - set(archived))}"
    # AND `anfang replay` of the hour around now re-publishes them with the same (device_id, event_id)
    now = dt.datetime.now(dt.UTC)
    since, until = (now - dt.timedelta(hours=1)).isoformat(), (now + dt.timedelta(hours=1)).isoformat()
    code = anfang(
        ["replay", "--stack-name", name, "--destination", "gov_cloud", "--since", since, "--until", until]
        + ["--event-type", "alarm"]
    )
    assert code == 0
    alarm = next(e for e in events if e["event_type"] == "alarm")
    replayed = _drain(aws, outputs["GovCloudQueueUrl"], {alarm["event_id"]})
    assert replayed[alarm["event_id"]] == archived[alarm["event_id"]]
    assert all(r["event_type"] == "alarm" for r in replayed.values())
    # THEN the replayed records still verify against the release log
    records = tmp_path / "replayed.ndjson"
    records.write_text("".join(json.dumps(r) + "\n" for r in replayed.values()))
    assert (
        anfang(["audit", "verify", "--stack-name", name, "--destination", "gov_cloud", "--records", str(records)]) == 0
    )


def test_a_restarted_api_cuts_requests_in_flight_refuses_while_down_and_comes_back_on_its_port(
    stack: LocalStack,
) -> None:
    assert stack.info is not None
    host, port = stack.info.api_url.removeprefix("http://").split(":")
    # GIVEN a request in flight: headers sent, the body still coming
    hanging = socket.create_connection((host, int(port)))
    hanging.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
    time.sleep(0.2)
    # WHEN the API is restarted (down for 2 s)
    restart = threading.Thread(target=stack.restart_api, kwargs={"down_secs": 2.0})
    restart.start()
    time.sleep(0.5)
    # THEN the request in flight was cut, and a new connection is refused while it is down
    hanging.settimeout(5)
    with contextlib.suppress(ConnectionResetError):  # closed or reset: either way, cut
        assert hanging.recv(1024) == b""
    with pytest.raises(requests.ConnectionError):
        requests.get(stack.info.api_url + "/v1/health", timeout=2)
    restart.join(timeout=60)
    # AND it answers again on the same address, after a cold start
    assert requests.get(stack.info.api_url + "/v1/health", timeout=10).status_code == 200
