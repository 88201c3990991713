"""The archive's key layout: hour partitions of received_at in UTC, and the prefixes a time range reads."""

from __future__ import annotations

import datetime as dt

import pytest

from anfang.aws.archive import archive_key, hour_prefixes, parse_instant


def test_a_key_is_the_utc_hour_of_received_at() -> None:
    at = parse_instant("2026-11-29T08:03:00+08:00")  # 00:03 UTC
    assert archive_key("police_video", at, "abc") == "police_video/dt=2026-11-29/hour=00/abc.ndjson.gz"


def test_a_range_reads_every_hour_it_overlaps_across_midnight() -> None:
    since, until = parse_instant("2026-11-29T22:30:00Z"), parse_instant("2026-11-30T01:00:00Z")
    assert hour_prefixes("gov_cloud", since, until) == [
        "gov_cloud/dt=2026-11-29/hour=22/",
        "gov_cloud/dt=2026-11-29/hour=23/",
        "gov_cloud/dt=2026-11-30/hour=00/",
    ]
    assert hour_prefixes("gov_cloud", until, until) == []


@pytest.mark.parametrize("text", ["2026-11-29T08:00:00", "yesterday", ""])
def test_a_time_without_a_zone_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text)


def test_z_and_offsets_are_the_same_instant() -> None:
    assert parse_instant("2026-11-29T00:00:00Z") == parse_instant("2026-11-29T08:00:00+08:00")
    assert parse_instant("2026-11-29T00:00:00Z").tzinfo == dt.UTC
