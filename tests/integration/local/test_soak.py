"""The soak, small: two minutes of load from three real edge agents with every kind of fault, then the audit.

This is ``anfang local soak`` as ``make soak`` runs it, shortened for ``make test``: the local stack on moto, the
agents as processes behind uplinks that go down, AWS errors on the functions' clients, workers and an agent
killed with SIGKILL, the API restarted, a broken camera. The test then checks the soak's report and, apart from
it, reads the agents' spools and the consumers' files itself: nothing lost, nothing twice.
"""

from __future__ import annotations

import io
import json
import sqlite3
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from anfang_ops.local.soak import SoakConfig, run_soak

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.slow


def _spool(path: Path) -> tuple[int, list[str]]:
    """(events made, source_refs of the quarantined) read straight from an agent's SQLite spool."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        made = int(db.execute("SELECT value FROM meta WHERE key = 'simulator0.next_seq'").fetchone()[0])
        refs = [json.loads(body)["source_ref"] for (body,) in db.execute("SELECT body FROM quarantine")]
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0  # drained
    finally:
        db.close()
    return made, refs


def test_a_short_soak_with_every_fault_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    config = SoakConfig(
        duration_secs=75,
        agents=3,
        devices_per_agent=3,
        rate_per_sec=4,
        peak_factor=3,
        outage_secs=15,
        agent_kills=1,
        worker_kills=2,
        api_restarts=1,
        aws_error_rate=0.02,
        aws_storm_secs=8,
        broken_every=25,
        visibility_timeout_secs=10,
        drain_timeout_secs=180,
        sample_secs=2,
    )
    screen = io.StringIO()
    report = run_soak(ROOT, out, config, stream=screen)

    # THE REPORT: the verdict, the accounting
    assert report["ok"], report["problems"]
    totals = report["totals"]
    assert totals["lost"] == {"gov_cloud": 0, "police_video": 0}
    assert totals["duplicates_after_dedupe"] == {"gov_cloud": 0, "police_video": 0}
    assert totals["made"] >= 0.9 * totals["planned"]
    assert set(totals["rejected_by_code"]) == {"image_invalid"} and totals["rejected"] > 0
    for destination in ("gov_cloud", "police_video"):
        assert totals["delivered"][destination] == totals["made"] - totals["rejected"] - totals["dead_lettered"]
    assert "OK: every event made was delivered once" in screen.getvalue()

    # EVERY FAULT HAPPENED, as planned
    faults = report["faults"]
    assert faults["aws_total"] > 0
    assert {service.split()[0] for service in faults["aws"]} >= {"dynamodb", "s3", "sqs"}
    assert faults["workers_replaced"] == {"AnalyseFunction": 1, "ProcessFunction": 1}
    assert faults["lost_worker_batches"] == 2
    kinds = Counter(h["kind"] for h in report["happenings"])
    assert kinds["uplink cut"] == 3 and kinds["uplink restored"] == 3 and kinds["API restarted"] == 1
    assert kinds["AWS error storm"] == 1 and kinds["worker killed (SIGKILL) mid-batch"] == 2
    (killed,) = [h for h in report["happenings"] if h["kind"] == "edge agent killed (SIGKILL)"]
    assert killed["bytes_sent_of_flush"] > 0 or 0 < killed["left_in_spool"] < killed["backlog"]  # mid-flush

    # APART FROM THE REPORT: the agents' spools against the consumers' files
    made: dict[str, int] = {}
    rejected: set[tuple[str, str]] = set()
    for home in sorted((out / "agents").iterdir()):
        count, refs = _spool(home / "state" / "spool.sqlite3")
        made[home.name] = count
        rejected |= {(home.name, ref) for ref in refs}
    assert sum(made.values()) == totals["made"]
    prefix_site = {
        tomllib.loads((home / "agent.toml").read_text())["sources"][0]["device_id_prefix"]: home.name
        for home in (out / "agents").iterdir()
    }
    for destination in ("gov_cloud", "police_video"):
        lines = (out / "consumers" / destination / "records.ndjson").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        pairs = Counter((r["device_id"], r["event_id"]) for r in records)
        assert max(pairs.values()) == 1  # once each
        assert len(pairs) == sum(made.values()) - len(rejected)
        if destination == "police_video":  # police keep source_ref: every sequence of every agent, bar the rejected
            delivered = {(prefix_site[r["device_id"][:14]], r["source_ref"]) for r in records}
            every = {(site, f"sim-{seq}") for site, count in made.items() for seq in range(count)}
            assert delivered == every - rejected
        else:  # the gov cloud never gets source_ref
            assert all("source_ref" not in r for r in records)

    # THE PAGE: time series to look at
    page = (out / "soak.html").read_text()
    assert page.count("<svg") == 4 and "uplink cut" in page
    assert json.loads((out / "soak.json").read_text())["series"]
