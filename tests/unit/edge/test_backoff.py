"""Backoff and Retry-After, pure functions."""

from __future__ import annotations

import random
from email.utils import formatdate

from anfang_edge.uploader import backoff_delay, parse_retry_after


def test_full_jitter_stays_under_a_doubling_cap_and_the_ceiling() -> None:
    rng = random.Random(1)
    for failures, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (10, 30.0), (200, 30.0)]:
        delays = [backoff_delay(failures, initial_secs=0.5, max_secs=30.0, rng=rng) for _ in range(500)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8  # full jitter spreads over the whole range
        assert min(delays) < cap * 0.2


def test_retry_after_seconds_and_http_date() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None, now=now) is None
