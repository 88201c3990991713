"""The simulator: all six event types, real fixture images under the limits, resumable progress."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from anfang.contracts import EVENT_TYPES, MAX_IMAGE_BYTES, validate_event
from anfang_edge.config import SimulatorSourceConfig
from anfang_edge.sources.simulator import Simulator
from anfang_edge.spool import Spool


def test_produces_all_six_types_with_real_images(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.sqlite3") as spool:
        simulator = Simulator(SimulatorSourceConfig(type="simulator", devices=3, seed=1), spool)
        items = simulator.make_items(0, 12)
    events = [validate_event(json.loads(i.body)) for i in items]
    assert {e.event_type for e in events} == set(EVENT_TYPES)
    assert {e.device_id for e in events} == {f"33010600001320{n:06d}" for n in (1, 2, 3)}
    with_images = [e for e in events if e.images]
    assert {e.event_type for e in with_images} == set(EVENT_TYPES) - {"device_status"}
    for event in with_images:
        for image in event.images:
            assert image.content_type == "image/jpeg"
            assert len(image.data) * 3 // 4 <= MAX_IMAGE_BYTES


def test_progress_commits_with_the_events_so_a_restart_resumes(tmp_path: Path) -> None:
    config = SimulatorSourceConfig(type="simulator", rate_per_sec=5000, max_events=120, images=False)
    with Spool(tmp_path / "s.sqlite3") as spool:
        Simulator(config, spool).run(threading.Event())
        assert spool.depth() == 120
        again = Simulator(config.model_copy(update={"max_events": 150}), spool)
        assert again.next_seq() == 120
        again.run(threading.Event())
        refs = sorted(int(json.loads(p.body)["source_ref"].split("-")[1]) for p in spool.pending(1000))
    assert refs == list(range(150))
