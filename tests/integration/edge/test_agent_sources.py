"""The whole agent as a real process: watch_dir and http sources feeding the spool, the uploader draining it."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from pathlib import Path

from anfang.contracts import new_event_id
from anfang.contracts.examples import example_events

from .receiver import EdgeReceiver
from .support import (
    DEVICE_SECRET,
    EXAMPLE_DEVICE,
    FIXTURES,
    KeyPair,
    rss_kib,
    signed_headers,
    start_agent,
    stop_agent,
    wait_for,
    write_config,
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_given_camera_uploads_and_device_pushes_when_the_agent_runs_then_all_reach_the_api_with_images(
    tmp_path: Path, key: KeyPair, receiver: EdgeReceiver
) -> None:
    assert FIXTURES is not None
    # GIVEN a camera folder with three complete pairs and one bad sidecar
    ftp = tmp_path / "ftp"
    ftp.mkdir()
    old = time.time() - 10
    for n in range(3):
        (ftp / f"cam-{n}.jpg").write_bytes((FIXTURES / "face_crop.jpg").read_bytes())
        sidecar = {"event_type": "face_capture", "device_id": "33010600001320000101", "source_ref": f"ftp-{n}"}
        (ftp / f"cam-{n}.json").write_text(json.dumps(sidecar))
    (ftp / "broken.json").write_text("{")
    for path in ftp.iterdir():
        os.utime(path, (old, old))
    port = _free_port()
    config = write_config(
        tmp_path,
        key,
        receiver.url,
        sources=[
            {"type": "watch_dir", "path": str(ftp), "poll_ms": 50, "settle_ms": 500},
            {"type": "http", "listen_port": port, "devices": {EXAMPLE_DEVICE: {"secret": DEVICE_SECRET}}},
        ],
    )
    proc = start_agent(config, tmp_path / "agent.log")
    try:
        # AND a device pushing every example event to the gateway
        pushed = [{**event, "event_id": new_event_id()} for event in example_events().values()]
        assert wait_for(lambda: _reachable(port), timeout=15)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        body = json.dumps({"events": pushed}).encode()
        conn.request("POST", "/v1/events", body, signed_headers(body))
        response = conn.getresponse()
        assert response.status == 202
        assert json.loads(response.read())["accepted"] == 6
        # THEN everything arrives at the API, images included, and the folder is tidied up
        assert wait_for(lambda: len(receiver.accepted) >= 9, timeout=20)
        rss_mb = rss_kib(proc.pid) / 1024
    finally:
        assert stop_agent(proc) == 0
    refs = {e["source_ref"] for e in receiver.accepted.values()}
    assert {"ftp-0", "ftp-1", "ftp-2"} <= refs
    assert all(e["images"] == 1 for e in receiver.accepted.values() if str(e["source_ref"]).startswith("ftp-"))
    assert sorted(p.name for p in (ftp / "done").iterdir()) == sorted(
        [f"cam-{n}.{ext}" for n in range(3) for ext in ("jpg", "json")]
    )
    assert (ftp / "failed" / "broken.reason.txt").exists()
    assert rss_mb < 60


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_given_the_gateway_clock_ten_minutes_behind_when_the_agent_runs_then_events_still_arrive(
    tmp_path: Path, key: KeyPair
) -> None:
    # GIVEN an API whose clock is 10 minutes ahead of the gateway's (the gateway's clock is behind)
    with EdgeReceiver([key.private_key.public_key()], clock=lambda: time.time() + 600) as receiver:
        config = write_config(
            tmp_path,
            key,
            receiver.url,
            sources=[{"type": "simulator", "rate_per_sec": 100.0, "max_events": 30, "images": False}],
        )
        proc = start_agent(config, tmp_path / "agent.log")
        try:
            # WHEN the agent runs THEN one 401 signature_expired teaches it the offset and everything arrives
            assert wait_for(lambda: len(receiver.accepted) >= 30, timeout=20)
        finally:
            assert stop_agent(proc) == 0
    assert receiver.auth_failures["signature_expired"] == 1
    assert "clock offset corrected" in (tmp_path / "agent.log").read_text()
