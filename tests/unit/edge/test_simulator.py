"""The simulator: all six event types, real fixture images under the limits, resumable progress."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

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


def test_a_rate_profile_integrates_its_steps() -> None:
    config = SimulatorSourceConfig(type="simulator", rate_per_sec=2, rate_steps=[(10, 8), (15, 0), (20, 2)])
    assert config.due(5) == 10
    assert config.due(10) == 20
    assert config.due(12.5) == 40  # 20 + 2.5 s at 8/s
    assert config.due(18) == 60  # the peak ended at 15 s; nothing while the rate is 0
    assert config.due(21) == 62


def test_a_profile_refuses_steps_out_of_order() -> None:
    with pytest.raises(ValidationError, match="ascending"):
        SimulatorSourceConfig(type="simulator", rate_steps=[(10, 1), (5, 2)])


def test_an_anchored_profile_catches_up_after_a_restart_without_remaking_events(tmp_path: Path) -> None:
    # the profile began 3 s ago at 40 events/s: 120 are due; an earlier run of this agent made 50 of them
    config = SimulatorSourceConfig(
        type="simulator", rate_per_sec=40, started_at=time.time() - 3, max_events=120, images=False
    )
    with Spool(tmp_path / "s.sqlite3") as spool:
        first = Simulator(config.model_copy(update={"max_events": 50}), spool)
        first.run(threading.Event())
        restarted = Simulator(config, spool)
        assert restarted.next_seq() == 50
        restarted.run(threading.Event())  # the 70 still due come at once, then max_events stops it
        refs = sorted(int(json.loads(p.body)["source_ref"].split("-")[1]) for p in spool.pending(1000))
    assert refs == list(range(120))


def test_a_broken_camera_sends_a_truncated_jpeg_every_nth_event(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.sqlite3") as spool:
        config = SimulatorSourceConfig(type="simulator", devices=2, seed=3, broken_every=5)
        items = Simulator(config, spool).make_items(0, 30)
    events = [validate_event(json.loads(i.body)) for i in items]
    for seq, event in enumerate(events):
        if not event.images:
            continue
        data = base64.b64decode(event.images[0].data)
        assert data.startswith(b"\xff\xd8")
        assert data.endswith(b"\xff\xd9") is (seq % 5 != 4), seq  # the 5th, 10th, ...: no end-of-image marker
