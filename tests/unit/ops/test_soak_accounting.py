"""The soak's reconciliation: every event made is delivered, rejected or dead-lettered; anything else is caught.

Each test plants one thing a broken pipeline would do (drop a record, deliver to one destination only, invent a
record) and shows the accounting names it.
"""

from __future__ import annotations

from typing import Any

import pytest

from anfang_ops.local.soak import SoakConfig, SoakError, account, plan
from anfang_ops.local.soak_report import percentiles

DEVICES = {"dev-a1": 0, "dev-a2": 0, "dev-b1": 1}


def _delivered(made: list[int]) -> dict[str, dict[tuple[str, str], int | None]]:
    """Both destinations got every event: police with its seq (source_ref kept), gov without."""
    police: dict[tuple[str, str], int | None] = {}
    gov: dict[tuple[str, str], int | None] = {}
    devices = {0: ["dev-a1", "dev-a2"], 1: ["dev-b1"]}
    for agent, count in enumerate(made):
        for seq in range(count):
            key = (devices[agent][seq % len(devices[agent])], f"ev-{agent}-{seq}")
            police[key] = seq
            gov[key] = None
    return {"gov_cloud": gov, "police_video": police}


def test_everything_delivered_adds_up() -> None:
    result = account([5, 3], set(), _delivered([5, 3]), DEVICES, [])
    assert result.lost == {"gov_cloud": [], "police_video": []}
    assert result.problems == []


def test_a_record_missing_from_one_destination_is_lost_there_only() -> None:
    records = _delivered([5, 3])
    del records["gov_cloud"][("dev-b1", "ev-1-2")]
    result = account([5, 3], set(), records, DEVICES, [])
    assert result.lost == {"gov_cloud": [(1, 2)], "police_video": []}


def test_an_event_missing_everywhere_is_lost_everywhere_even_though_gov_records_carry_no_seq() -> None:
    records = _delivered([5, 3])
    for got in records.values():
        del got[("dev-a2", "ev-0-3")]
    result = account([5, 3], set(), records, DEVICES, [])
    assert result.lost == {"gov_cloud": [(0, 3)], "police_video": [(0, 3)]}


def test_an_event_made_after_the_last_delivery_is_lost() -> None:
    # the agent's spool says it made 6: the sixth never arrived
    result = account([6, 3], set(), _delivered([5, 3]), DEVICES, [])
    assert result.lost["police_video"] == [(0, 5)] and result.lost["gov_cloud"] == [(0, 5)]


def test_rejected_and_dead_lettered_events_are_accounted_for_not_lost() -> None:
    records = _delivered([5, 3])
    for got in records.values():
        del got[("dev-a1", "ev-0-0")]  # rejected by the API (in the agent's quarantine)
        del got[("dev-b1", "ev-1-1")]  # dead-lettered by the process function
    dead: list[dict[str, Any]] = [{"device_id": "dev-b1", "event_id": "ev-1-1", "seq": 1}]
    result = account([5, 3], {(0, 0)}, records, DEVICES, dead)
    assert result.lost == {"gov_cloud": [], "police_video": []}
    assert result.problems == []


def test_a_record_of_no_event_the_soak_made_is_a_problem() -> None:
    records = _delivered([5, 3])
    records["gov_cloud"][("dev-zz", "ev-x")] = None  # a device outside the fleet
    records["police_video"][("dev-a1", "ev-forged")] = None  # a police record without its source_ref
    result = account([5, 3], set(), records, DEVICES, [])
    assert [problem.split(" (")[0] for problem in result.problems] == [
        "gov_cloud received 1 record(s) matching no event made",
        "police_video received 1 record(s) matching no event made",
    ]


def test_the_profile_and_the_fault_plan() -> None:
    config = SoakConfig(duration_secs=600, agents=4, rate_per_sec=4, peak_factor=3, worker_kills=5, api_restarts=2)
    # one agent's share: 1/s, 3/s during the peak (a sixth of the run, from 30%), nothing after the end
    assert config.rate_steps() == [(180.0, 3.0), (280.0, 1.0), (600.0, 0.0)]
    assert config.planned_events() == 4 * (500 + 300)
    actions = plan(config)
    kinds = [a.kind for a in actions]
    assert kinds.count("outage") == 4 and kinds.count("kill_worker") == 5 and kinds.count("restart_api") == 2
    assert {a.target for a in actions if a.kind == "kill_worker"} == {"AnalyseFunction", "ProcessFunction"}
    assert all(60 <= a.at <= 540 for a in actions)  # nothing in the first or last tenth
    outages = [a.at for a in actions if a.kind == "outage"]
    assert outages == sorted(outages) and outages[-1] + config.outage_secs <= 0.8 * 600


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"duration_secs": 5}, "duration of 10 s"),
        ({"agents": 2, "agent_kills": 3}, "more than the 2 agents"),
        ({"outage_secs": 0, "agent_kills": 1}, "set --outage-secs"),
        ({"duration_secs": 60, "outage_secs": 50}, "at most 60%"),
    ],
)
def test_a_soak_refuses_settings_it_cannot_run(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SoakError, match=message):
        SoakConfig(**changes)


def test_percentiles_by_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentiles(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0, "count": 100}
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None, "max": None, "count": 0}
