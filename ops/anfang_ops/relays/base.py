"""What both relays share: the intake thread (queue → outbox) and the delivery loop (outbox → upstream).

A relay subclass says how to open a session with its upstream (:meth:`Relay.connect`), how to keep it
(:meth:`Relay.tick`) and how to deliver a batch (:meth:`Relay.deliver`, answering per record). The loop:

- records are acknowledged in the outbox only on the upstream's per-record success;
- a record the upstream refused is retried with its own full-jitter backoff (never dropped, never blocking
  its neighbours); the upstream being unreachable (``UpstreamError``) backs the whole relay off instead, and a
  ``Retry-After`` the upstream gave is honoured;
- ``UpstreamAuthError`` (a 401) makes the relay open its session again (GA/T 1400: register again) before
  the batch is retried.

Why a hand-written backoff and not urllib3's ``Retry``: a retry here must survive a restart (it is state in
the outbox, per record), and a signed request must be re-signed (a new nonce) on every attempt.

>>> relay = Gat1400Relay(config, outbox=outbox, reader=reader, ...)
>>> relay.run(stop)     # until stop is set
"""

from __future__ import annotations

import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from .config import Gat1400RelayConfig, HttpsRelayConfig, RetryConfig
from .errors import UpstreamAuthError, UpstreamError
from .outbox import Key, Outbox, PendingRecord
from .reader import QueueReader

__all__ = ["Backoff", "Delivery", "Relay"]

log = logging.getLogger("anfang_ops.relays")

#: Per record: None when the upstream acknowledged it, else why it failed. Records absent were not attempted.
Delivery = dict[Key, str | None]


class Backoff:
    """Full-jitter exponential backoff: uniform(0, min(max, initial * 2**(n-1)))."""

    def __init__(self, retry: RetryConfig, rng: random.Random | None = None) -> None:
        self.retry = retry
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        cap = min(self.retry.max_secs, self.retry.initial_secs * 2 ** max(0, min(attempt - 1, 30)))
        return self._rng.uniform(0, cap)


def loop_settings(config: Gat1400RelayConfig | HttpsRelayConfig) -> dict[str, Any]:
    """The settings of :class:`Relay`'s loops from a relay's config (both configs name them the same way)."""
    return {
        "retry": config.retry,
        "batch_max_records": config.upstream.batch_max_records,
        "batch_max_bytes": int(config.upstream.batch_max_megabytes * 2**20),
        "dedupe_window_secs": config.dedupe_window_hours * 3600,
        "event_types": config.event_types,
    }


class Relay(ABC):
    """The intake thread and the delivery loop around an upstream-specific :meth:`deliver`."""

    name = "relay"

    def __init__(
        self,
        *,
        outbox: Outbox,
        reader: QueueReader | None,
        retry: RetryConfig,
        batch_max_records: int,
        batch_max_bytes: int,
        dedupe_window_secs: float,
        event_types: Sequence[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.reader = reader
        self.retry = retry
        self.backoff = Backoff(retry)
        self.batch_max_records = batch_max_records
        self.batch_max_bytes = batch_max_bytes
        self.dedupe_window_secs = dedupe_window_secs
        self.event_types = None if event_types is None else list(event_types)
        self._clock = clock
        self._upstream_failures = 0
        self._connected = False

    # ------------------------------------------------------------------------------------------ upstream

    @abstractmethod
    def connect(self) -> None:
        """Open the upstream session (GA/T 1400: register); raises UpstreamError."""

    def tick(self) -> None:  # noqa: B027 - optional hook: most upstreams keep no session
        """Keep the session (GA/T 1400: keepalive when due); raises UpstreamError."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """End the session politely (GA/T 1400: unregister); errors are ignored."""

    @abstractmethod
    def deliver(self, batch: list[PendingRecord]) -> Delivery:
        """Send ``batch``; per record None (acknowledged) or the failure. Raises UpstreamError for the whole."""

    # ------------------------------------------------------------------------------------------ loops

    def _intake(self, stop: threading.Event) -> None:
        assert self.reader is not None
        failures = 0
        while not stop.is_set():
            try:
                self.reader.poll_once(self.outbox)
                failures = 0
            except Exception as exc:  # the queue or its credentials: back off, keep what we have
                failures += 1
                log.warning("%s: reading the queue failed (%s); retrying", self.name, exc)
                self.outbox.bump({"queue_errors": 1})
                stop.wait(self.backoff.delay(failures))

    def _upstream_down(self, stop: threading.Event, exc: UpstreamError) -> None:
        self._upstream_failures += 1
        self.outbox.bump({"upstream_errors": 1})
        delay = self.backoff.delay(self._upstream_failures)
        if exc.retry_after_secs is not None:
            delay = min(max(delay, exc.retry_after_secs), self.retry.retry_after_max_secs)
        log.warning("%s: upstream: %s; next try in %.1f s", self.name, exc, delay)
        stop.wait(delay)

    def step(self, stop: threading.Event, *, idle_wait_secs: float = 1.0) -> int:
        """One round of the delivery loop; returns how many records were acknowledged."""
        try:
            if not self._connected:
                self.connect()
                self._connected = True
            self.tick()
        except UpstreamAuthError as exc:
            self._connected = False
            self._upstream_down(stop, exc)
            return 0
        except UpstreamError as exc:
            self._upstream_down(stop, exc)
            return 0
        batch = self.outbox.due(
            max_records=self.batch_max_records, max_bytes=self.batch_max_bytes, event_types=self.event_types
        )
        if not batch:
            due = self.outbox.next_due_at()
            wait = idle_wait_secs if due is None else min(idle_wait_secs, max(0.0, due - self._clock()))
            self.outbox.wait(max(wait, 0.01))
            return 0
        try:
            outcome = self.deliver(batch)
        except UpstreamAuthError as exc:
            # 401: the upstream forgot us (restart) or the session lapsed: open it again, then retry the batch
            log.info("%s: upstream refused the session (%s); connecting again", self.name, exc)
            self._connected = False
            self.outbox.bump({"reauthenticated": 1})
            if self._upstream_failures:
                self._upstream_down(stop, exc)
            self._upstream_failures += 1
            return 0
        except UpstreamError as exc:
            self._upstream_down(stop, exc)
            return 0
        self._upstream_failures = 0
        delivered = [key for key, error in outcome.items() if error is None]
        failed = {key: error for key, error in outcome.items() if error is not None}
        done = self.outbox.ack(delivered) if delivered else 0
        if failed:
            log.info("%s: %d record(s) refused, retried later: %s", self.name, len(failed), next(iter(failed.values())))
            self.outbox.retry(failed, self.backoff.delay)
        return done

    def run(self, stop: threading.Event) -> None:
        """Read and deliver until ``stop`` is set; the outbox carries everything over a restart."""
        intake = None
        if self.reader is not None:
            intake = threading.Thread(target=self._intake, args=(stop,), name=f"{self.name}-intake", daemon=True)
            intake.start()
        last_sweep = 0.0
        try:
            while not stop.is_set():
                self.step(stop)
                if self._clock() - last_sweep > 3600:
                    last_sweep = self._clock()
                    self.outbox.forget_delivered(self.dedupe_window_secs)
        finally:
            self.outbox.wake()
            if intake is not None:
                intake.join(timeout=(self.reader.wait_time_secs if self.reader else 0) + 5)
            if self._connected:
                self.close()
