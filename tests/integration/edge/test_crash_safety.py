"""Crash safety: the agent as a real process, SIGKILLed at random moments during a 5,000-event burst.

GIVEN a real local receiver (signatures verified, events validated, dedup by event_id)
WHEN the agent is killed with SIGKILL at least 20 times while its simulator produces 5,000 events,
     and restarted each time
THEN every event arrives, none twice after the receiver's dedup, and the spool ends empty.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from pathlib import Path

import pytest

from anfang_edge.spool import Spool

from .receiver import EdgeReceiver
from .support import make_key, start_agent, stop_agent, wait_for, write_config

TOTAL_EVENTS = 5000
MIN_KILLS = 20
MAX_KILLS = 60


def _cursor(spool_path: Path) -> int:
    if not spool_path.exists():
        return 0
    with sqlite3.connect(f"file:{spool_path}?mode=ro", uri=True, timeout=10) as db:
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'simulator0.next_seq'").fetchone()
        except sqlite3.OperationalError:  # schema not created yet
            return 0
    return int(row[0]) if row else 0


@pytest.mark.slow
def test_given_random_sigkills_during_a_burst_when_restarted_then_every_event_arrives_exactly_once(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("EDGE_CRASH_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    key = make_key(tmp_path)
    receiver = EdgeReceiver([key.private_key.public_key()]).start()
    config = write_config(
        tmp_path,
        key,
        receiver.url,
        batch_max_events=100,
        sources=[
            {
                "type": "simulator",
                "devices": 8,
                "rate_per_sec": 500.0,
                "max_events": TOTAL_EVENTS,
                "images": False,
                "seed": seed,
            }
        ],
    )
    spool_path = tmp_path / "state" / "spool.sqlite3"
    log = tmp_path / "agent.log"
    kills = mid_burst_kills = startup_kills = 0
    started = time.monotonic()
    try:
        # WHEN: kill -9 at random moments spread over the burst; every fifth kill lands during start-up
        # (imports, WAL recovery), the others at a random moment after the simulator made progress again
        while kills < MAX_KILLS and _cursor(spool_path) < TOTAL_EVENTS:
            before = _cursor(spool_path)
            proc = start_agent(config, log)
            if kills % 5 == 4:
                time.sleep(rng.uniform(0.05, 0.8))
                startup_kills += 1
            else:
                wait_for(lambda before=before: _cursor(spool_path) > before, timeout=15, interval=0.02)
                time.sleep(rng.uniform(0.0, 0.6))
            proc.kill()
            proc.wait(10)
            kills += 1
            if 0 < _cursor(spool_path) < TOTAL_EVENTS:
                mid_burst_kills += 1
        produced_during_kills = _cursor(spool_path)

        # THEN: one last run finishes the burst and drains the spool
        runs_before = log.read_text().count("anfang-edge running")
        proc = start_agent(config, log)
        try:
            assert wait_for(lambda: log.read_text().count("anfang-edge running") > runs_before, timeout=30)
            assert wait_for(lambda: len(receiver.accepted) >= TOTAL_EVENTS, timeout=60, interval=0.2), (
                f"only {len(receiver.accepted)} of {TOTAL_EVENTS} arrived (seed {seed})"
            )
            with Spool(spool_path, readonly=True) as spool:
                assert wait_for(lambda: spool.depth() == 0, timeout=10)
        finally:
            assert stop_agent(proc) == 0
    finally:
        receiver.stop()

    elapsed = time.monotonic() - started
    refs = {event["source_ref"] for event in receiver.accepted.values()}
    assert mid_burst_kills >= MIN_KILLS, f"{mid_burst_kills} kills landed mid-burst (seed {seed})"
    assert len(receiver.order) == TOTAL_EVENTS  # accepted once each: none twice after dedup
    assert refs == {f"sim-{i}" for i in range(TOTAL_EVENTS)}  # every event arrived
    with Spool(spool_path, readonly=True) as spool:
        assert spool.depth() == 0
        assert spool.integrity_ok()
        stats = spool.stats()
    assert stats.counters.get("spooled") == TOTAL_EVENTS
    print(
        f"\ncrash harness: seed={seed} kills={kills} mid_burst_kills={mid_burst_kills} startup_kills={startup_kills} "
        f"produced_during_kills={produced_during_kills} events={len(receiver.order)} "
        f"redeliveries_deduped={receiver.duplicates} requests={receiver.requests} elapsed={elapsed:.1f}s"
    )
