"""Outage: the API is down for a while, then back."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from anfang_edge.spool import Spool

from .receiver import EdgeReceiver
from .support import make_key, start_agent, stop_agent, wait_for, write_config

EVENTS = 400
OUTAGE_SECS = 4.0


def _cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime in clock ticks (USER_HZ = 100)


def test_given_api_down_when_it_comes_back_then_backlog_drains_in_capture_order_without_busy_looping(
    tmp_path: Path,
) -> None:
    # GIVEN the API is down (connections accepted and dropped) while devices keep producing
    key = make_key(tmp_path)
    receiver = EdgeReceiver([key.private_key.public_key()])
    receiver.start_outage()
    config = write_config(
        tmp_path,
        key,
        receiver.url,
        retry_initial_ms=100,
        retry_max_secs=1.0,
        batch_max_events=50,
        sources=[{"type": "simulator", "devices": 4, "rate_per_sec": 200.0, "max_events": EVENTS, "images": False}],
    )
    proc = start_agent(config, tmp_path / "agent.log")
    try:
        time.sleep(1.0)  # start-up
        cpu_before = _cpu_secs(proc.pid)
        attempts_before = receiver.outage_connections
        time.sleep(OUTAGE_SECS)
        attempts = receiver.outage_connections - attempts_before
        cpu = _cpu_secs(proc.pid) - cpu_before
        with Spool(tmp_path / "state" / "spool.sqlite3", readonly=True) as spool:
            backlog = spool.depth()

        # WHEN the API comes back
        receiver.start()
        assert wait_for(lambda: len(receiver.accepted) >= EVENTS, timeout=30)
    finally:
        assert stop_agent(proc) == 0
        receiver.stop()

    # THEN it retried with backoff, not in a loop: full jitter capped at 1 s makes ~2 tries a second
    assert 2 <= attempts <= 40, f"{attempts} connection attempts in {OUTAGE_SECS}s"
    assert cpu < 0.5 * OUTAGE_SECS, f"agent used {cpu:.2f}s CPU while waiting"
    assert backlog == EVENTS
    # AND the backlog arrived in capture order within each device
    per_device: dict[str, list[int]] = defaultdict(list)
    for event_id in receiver.order:
        event = receiver.accepted[event_id]
        per_device[event["device_id"]].append(int(event["source_ref"].removeprefix("sim-")))
    assert len(per_device) == 4
    for seqs in per_device.values():
        assert seqs == sorted(seqs)
    times = defaultdict(list)
    for event_id in receiver.order:
        event = receiver.accepted[event_id]
        times[event["device_id"]].append(event["captured_at"])
    for captured in times.values():
        assert captured == sorted(captured)
    print(f"\noutage: {attempts} connection attempts and {cpu:.2f}s CPU in {OUTAGE_SECS}s; backlog {backlog}")
