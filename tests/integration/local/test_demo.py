"""`anfang local demo` at a small size: green summary, and its files name every event."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from anfang_ops.local.demo import DESTINATIONS, DemoError, run_demo

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.slow


def test_the_demo_delivers_every_event_to_both_destinations_and_reports_them(tmp_path: Path) -> None:
    # GIVEN a fresh local stack, WHEN 4 simulated devices at 2 sites send 200 events through real edge agents
    stream = io.StringIO()
    result = run_demo(ROOT, tmp_path, events=200, devices=4, timeout_secs=240, stream=stream)
    # THEN every accepted event reached both destinations, nothing is dead-lettered, the snapshot imported
    assert result.ok, result.summary() + "\n" + stream.getvalue()
    assert result.sent == result.accepted == 200
    assert result.delivered == {"gov_cloud": 200, "police_video": 200}
    assert set(result.dead_letters.values()) == {0}
    assert result.snapshot["status"] == "imported"
    # AND the records and the report name every event
    ids = {d: {json.loads(line)["event_id"] for line in (tmp_path / f"{d}.ndjson").open()} for d in DESTINATIONS}
    assert len(ids["gov_cloud"]) == 200 and ids["gov_cloud"] == ids["police_video"]
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert all(event_id in report for event_id in ids["gov_cloud"])
    assert "data:image/jpeg;base64," in report  # thumbnails and originals are embedded
    # AND the gov cloud got health codes for identified people, from the commission's snapshot and deltas
    gov = [json.loads(line) for line in (tmp_path / "gov_cloud.ndjson").open()]
    assert any(record.get("health_code") for record in gov if record["event_type"] in ("access", "visitor"))
    # AND the summary says where the time went: each delivered event in each stage it passed through
    with_images = sum(1 for record in gov if record["event_type"] != "device_status")
    assert {k: len(v) for k, v in result.stage_secs.items()} == {
        "edge → API": 200,
        "analyse (events with images)": with_images,
        "process": 200,
        "delivery": 200,
    }
    assert all(x >= 0 for v in result.stage_secs.values() for x in v)
    assert "analyse (events with images) p50 / p95" in result.summary()


def test_the_demo_run_twice_in_the_same_folder_passes_twice_and_counts_only_its_own_events(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    first = run_demo(ROOT, out, events=30, devices=2, timeout_secs=120, stream=io.StringIO())
    assert first.ok, first.summary()
    first_ids = {json.loads(line)["event_id"] for line in (out / "police_video.ndjson").open()}
    # WHEN the demo runs again in the same folder (a newcomer's second `make demo`)
    stream = io.StringIO()
    second = run_demo(ROOT, out, events=30, devices=2, timeout_secs=120, stream=stream)
    # THEN it passes too, with its own 30 events and none of the first run's
    assert second.ok, second.summary() + "\n" + stream.getvalue()
    assert second.sent == second.accepted == 30
    assert second.delivered == {"gov_cloud": 30, "police_video": 30}
    second_ids = {json.loads(line)["event_id"] for line in (out / "police_video.ndjson").open()}
    assert len(second_ids) == 30 and not second_ids & first_ids


def test_the_demo_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(DemoError, match="thesis.tex"):
        run_demo(ROOT, tmp_path, events=1, devices=1, stream=io.StringIO())
    assert (tmp_path / "thesis.tex").read_text() == "mine"
