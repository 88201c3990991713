"""`anfang local demo` at a small size: green summary, and its files name every event."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from anfang_ops.local.demo import DESTINATIONS, run_demo

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
