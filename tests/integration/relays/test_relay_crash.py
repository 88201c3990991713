"""kill -9 of the real ``anfang relay gat1400`` process in the middle of a batch: nothing is lost, and only the
batch in flight is posted again (same object ids, so the upper library keeps each once)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from anfang_ops.relays import Outbox
from tests.relays_support import RELAY_ID, RELAY_PASSWORD, RELAY_USER, RunningLibrary

from .conftest import REGION, Aws, wait_for
from .test_gat1400_relay import _records

pytestmark = pytest.mark.slow


def _config(tmp: Path, aws: Aws, queue: str, port: int) -> Path:
    path = tmp / "gat1400.toml"
    path.write_text(
        f'state_dir = "{tmp / "state"}"\n\n'
        f'[queue]\nurl = "{queue}"\nregion = "{REGION}"\nendpoint_url = "{aws.endpoint}"\nwait_time_secs = 1\n\n'
        "[retry]\ninitial_secs = 0.2\nmax_secs = 1.0\n\n"
        f'[upstream]\nurl = "http://127.0.0.1:{port}"\ndevice_id = "{RELAY_ID}"\nusername = "{RELAY_USER}"\n'
        f'password = "{RELAY_PASSWORD}"\nbatch_max_records = 4\nrequest_timeout_secs = 30\n'
    )
    return path


def _start(config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    return subprocess.Popen(
        [sys.executable, "-m", "anfang_ops.cli", "relay", "gat1400", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


def test_kill_9_mid_batch_loses_nothing_and_resends_only_the_batch_in_flight(
    tmp_path: Path, aws: Aws, library: RunningLibrary
) -> None:
    # GIVEN records on the police queue and an upper library that holds the first list it receives
    records, blobs, _ = _records()
    queue = aws.new_queue()
    aws.send_records(queue, records, blobs)
    upstream = library.library
    upstream.hold = True
    config = _config(tmp_path, aws, queue, upstream.port)
    relay = _start(config)
    try:
        # WHEN the relay process is killed with SIGKILL while its first batch is on the wire
        assert upstream.arrived.wait(60), "the relay never posted"
        in_flight = {oid for oid, n in upstream.posted.items() if n}
        relay.send_signal(signal.SIGKILL)
        relay.wait(10)
        # AND the upper library then takes that batch (the relay will never hear its answer)
        upstream.hold = False
        upstream.release.set()
        wait_for(lambda: len(upstream.delivered_events()) == len(in_flight), what="the held batch spooled upstream")
        # AND the relay is started again
        relay = _start(config)
        # THEN every record reaches the upper library, which keeps each once
        wait_for(lambda: len(upstream.delivered_events()) == len(records), timeout_secs=60, what="every record")
        wait_for(lambda: aws.queue_depth(queue) == 0, timeout_secs=30, what="the queue emptied")
    finally:
        relay.send_signal(signal.SIGTERM)
        _, stderr = relay.communicate(timeout=30)
    assert relay.returncode == 0, stderr.decode()[-2000:]
    # AND only the batch in flight at the kill was posted twice; every other object once
    assert in_flight and len(in_flight) <= 4
    # (the relay never heard the answer, so it must not have acknowledged them: they were posted again)
    assert {oid for oid, n in upstream.posted.items() if n > 1} == in_flight
    assert all(n <= 2 for n in upstream.posted.values())
    assert set(upstream.posted) == set(upstream.delivered_events())
    # AND the outbox holds nothing undelivered
    with Outbox(tmp_path / "state" / "gat1400-outbox.sqlite3") as outbox:
        stats = outbox.stats()
    assert stats.pending == 0 and stats.delivered_kept == len(records)
