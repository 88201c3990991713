"""Edge agent benchmarks (make bench): events/s spooled, events/s drained to a local API, RSS while draining.

Targets (issue 7): >= 5,000 events/s spooled (synchronous=FULL, batched commits), >= 2,000 events/s drained
without images, agent RSS <= 60 MB while draining.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from anfang.contracts import validate_event
from anfang_edge.config import SimulatorSourceConfig
from anfang_edge.sources.simulator import Simulator
from anfang_edge.spool import Spool, SpoolItem
from tests.integration.edge.receiver import EdgeReceiver
from tests.integration.edge.support import make_key, rss_kib, start_agent, stop_agent, wait_for, write_config

SPOOL_EVENTS = 10_000
PUT_BATCH = 100
DRAIN_EVENTS = 10_000


def _items(tmp_path: Path, count: int) -> list[SpoolItem]:
    with Spool(tmp_path / "scratch.sqlite3") as scratch:
        simulator = Simulator(SimulatorSourceConfig(type="simulator", devices=16, images=False, seed=3), scratch)
        return simulator.make_items(0, count)


def test_bench_spool_put_events_per_sec(tmp_path: Path, benchmark: Any) -> None:
    items = _items(tmp_path, SPOOL_EVENTS)
    runs = iter(range(100))

    def setup() -> tuple[tuple[Spool], dict[str, Any]]:
        return (Spool(tmp_path / f"bench-{next(runs)}.sqlite3"),), {}

    def put_all(spool: Spool) -> None:
        for start in range(0, len(items), PUT_BATCH):
            spool.put_many(items[start : start + PUT_BATCH])
        spool.close()

    benchmark.pedantic(put_all, setup=setup, rounds=3, iterations=1)
    rate = SPOOL_EVENTS / benchmark.stats.stats.mean
    benchmark.extra_info.update({"events_per_round": SPOOL_EVENTS, "put_batch": PUT_BATCH})
    assert rate >= 5000, f"{rate:.0f} events/s spooled"


def test_bench_drain_events_per_sec_and_agent_rss(tmp_path: Path, benchmark: Any) -> None:
    key = make_key(tmp_path)
    receiver = EdgeReceiver([key.private_key.public_key()]).start()
    config = write_config(tmp_path, key, receiver.url, batch_max_events=500, linger_ms=50)
    items = _items(tmp_path, DRAIN_EVENTS)
    with Spool(tmp_path / "state" / "spool.sqlite3") as spool:
        for start in range(0, len(items), 1000):
            spool.put_many(items[start : start + 1000])
    assert validate_event(json.loads(items[0].body))  # what we drain is valid wire JSON
    samples: list[int] = []

    def drain() -> float:
        proc = start_agent(config, tmp_path / "agent.log")
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set() and proc.poll() is None:
                if receiver.requests:
                    samples.append(rss_kib(proc.pid))
                stop.wait(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            assert wait_for(lambda: receiver.requests > 0, timeout=30, interval=0.005)
            first = time.perf_counter()
            assert wait_for(lambda: len(receiver.accepted) >= DRAIN_EVENTS, timeout=60, interval=0.005)
            return time.perf_counter() - first
        finally:
            stop.set()
            sampler.join()
            assert stop_agent(proc) == 0

    elapsed = benchmark.pedantic(drain, rounds=1, iterations=1)
    receiver.stop()
    rate = DRAIN_EVENTS / elapsed
    rss_mb = max(samples) / 1024
    benchmark.extra_info.update(
        {
            # per second in the table counts the agent's start-up too; events_per_sec is from its first request
            "events_per_round": DRAIN_EVENTS,
            "batch_max_events": 500,
            "events_per_sec": round(rate),
            "agent_rss_max_mb": round(rss_mb, 1),
        }
    )
    assert rate >= 2000, f"{rate:.0f} events/s drained"
    assert rss_mb <= 60, f"agent RSS {rss_mb:.1f} MB while draining"


def test_bench_drain_with_images_agent_rss(tmp_path: Path, benchmark: Any) -> None:
    """The same drain with the fixture JPEGs inline and the default batch_max_bytes (1 MiB)."""
    events = 1200
    key = make_key(tmp_path)
    receiver = EdgeReceiver([key.private_key.public_key()]).start()
    config = write_config(tmp_path, key, receiver.url, batch_max_events=100)
    with Spool(tmp_path / "state" / "spool.sqlite3") as spool:
        simulator = Simulator(SimulatorSourceConfig(type="simulator", devices=4, images=True, seed=5), spool)
        for start in range(0, events, 100):
            spool.put_many(simulator.make_items(start, 100))
    samples: list[int] = []

    def drain() -> None:
        proc = start_agent(config, tmp_path / "agent.log")
        try:
            started = time.perf_counter()
            while len(receiver.accepted) < events and time.perf_counter() - started < 60:
                samples.append(rss_kib(proc.pid))
                time.sleep(0.02)
        finally:
            assert stop_agent(proc) == 0

    benchmark.pedantic(drain, rounds=1, iterations=1)
    receiver.stop()
    rss_mb = max(samples) / 1024
    benchmark.extra_info.update({"events_per_round": events, "agent_rss_max_mb": round(rss_mb, 1)})
    assert len(receiver.accepted) == events
    assert rss_mb <= 60, f"agent RSS {rss_mb:.1f} MB while draining images"
