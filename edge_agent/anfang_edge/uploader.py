"""The uploader (the agent's sink): drains the spool to ``POST /v1/events`` in signed batches.

Batches close on ``batch_max_events``, ``batch_max_bytes`` or ``linger_ms``; each request is signed when it
is sent (docs/api.md, "Authentication"). Failures back off with full jitter (``retry_initial_ms`` doubling up to
``retry_max_secs``); 429/503 ``Retry-After`` is honoured; a 401 ``signature_expired`` corrects the clock
offset from the response ``Date`` and retries at once. Per-event results: ``accepted``/``duplicate`` leave
the spool, ``rejected`` go to quarantine with their reason, ``retry_later`` stay. Network errors and 5xx are
retried until ``retention_hours``.

One bad event never stalls the site: a whole-request 4xx that names the content rather than the key
(``forbidden_device``, payload errors, any 4xx the uploader does not know) cannot be pinned on one event, so
the batch is split in halves at once (no backoff) until the culprit is alone, and that one is quarantined;
its neighbours go through in the meantime. Key-level refusals (401, ``forbidden_role``, 404, 405, 408, 429)
are retried with backoff: they need an operator, and quarantining events for them would lose the site's data.

>>> uploader = Uploader(spool, UploaderSettings.from_config(config), private_key)
>>> threading.Thread(target=uploader.run, args=(stop,)).start()
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from anfang.contracts import BatchResponse, Signer

from .config import AgentConfig
from .spool import PendingEvent, Spool

__all__ = ["EVENTS_PATH", "SendOutcome", "Uploader", "UploaderSettings", "backoff_delay", "parse_retry_after"]

log = logging.getLogger("anfang_edge.uploader")

EVENTS_PATH: Final = "/v1/events"
_EXPIRE_EVERY_SECS: Final = 60.0
#: Whole-request refusals about the key or the endpoint, not the events: retried, never split or quarantined.
_KEY_LEVEL_STATUSES: Final = frozenset({401, 404, 405, 407, 408, 429})
_KEY_LEVEL_CODES: Final = frozenset({"forbidden_role", "unknown_key", "key_revoked", "key_inactive"})


@dataclass(frozen=True, slots=True)
class UploaderSettings:
    api_url: str
    key_id: str
    batch_max_events: int = 100
    batch_max_bytes: int = 1024 * 1024
    linger_ms: int = 200
    retry_initial_ms: int = 500
    retry_max_secs: float = 300.0
    request_timeout_secs: float = 30.0
    retention_hours: float = 168.0
    quarantine_retention_hours: float = 720.0

    @classmethod
    def from_config(cls, config: AgentConfig) -> UploaderSettings:
        return cls(
            api_url=str(config.api_url),
            key_id=config.key_id,
            batch_max_events=config.batch_max_events,
            batch_max_bytes=config.batch_max_bytes,
            linger_ms=config.linger_ms,
            retry_initial_ms=config.retry_initial_ms,
            retry_max_secs=config.retry_max_secs,
            request_timeout_secs=config.request_timeout_secs,
            retention_hours=config.retention_hours,
            quarantine_retention_hours=config.quarantine_retention_hours,
        )


def backoff_delay(failures: int, *, initial_secs: float, max_secs: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, initial * 2**(failures-1))]."""
    cap = min(max_secs, initial_secs * (2 ** min(max(failures - 1, 0), 62)))
    return rng.uniform(0, cap)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What one request did; ``delay`` is how long to wait before the next one."""

    status: int | None
    delay: float
    sent: int = 0
    duplicate: int = 0
    rejected: int = 0
    kept: int = 0
    error: str | None = None


class Uploader:
    """Drains ``spool`` to the API. ``run`` until ``stop`` is set; ``drain_once`` sends one batch."""

    def __init__(
        self,
        spool: Spool,
        settings: UploaderSettings,
        private_key: Ed25519PrivateKey,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.spool = spool
        self.settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        #: Seconds to add to the local clock to get the server's (learnt from 401 signature_expired).
        self.clock_offset_secs = 0.0
        self._signer = Signer(settings.key_id, private_key, clock=lambda: self._clock() + self.clock_offset_secs)
        parts = urlsplit(settings.api_url)
        self._scheme = parts.scheme
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self._request_path = parts.path.rstrip("/") + EVENTS_PATH  # a stage prefix is called, not signed
        self._conn: http.client.HTTPConnection | None = None
        self._failures = 0
        self._batch_cap = settings.batch_max_events
        self._next_expire = 0.0
        self.last_outcome: SendOutcome | None = None

    # ------------------------------------------------------------------------------------------ loop

    def run(self, stop: threading.Event) -> None:
        """Send batches until ``stop`` is set; waits (never spins) while idle or backing off."""
        try:
            while not stop.is_set():
                outcome = self.drain_once(stop)
                if outcome is None:
                    continue
                self.last_outcome = outcome
                if outcome.delay > 0:
                    stop.wait(outcome.delay)
        finally:
            self.close()

    def drain_once(self, stop: threading.Event | None = None) -> SendOutcome | None:
        """Wait for a batch (linger), send it and apply the results; None when there was nothing to send."""
        now = self._clock()
        if now >= self._next_expire:
            self._next_expire = now + _EXPIRE_EVERY_SECS
            expired = self.spool.expire(now - self.settings.retention_hours * 3600)
            if expired:
                log.warning("quarantined %d events past retention", expired)
            purged = self.spool.purge(older_than=now - self.settings.quarantine_retention_hours * 3600)
            if purged:
                log.info("deleted %d quarantined events past quarantine_retention_hours", purged)
        batch = self._linger(stop)
        if not batch:
            return None
        return self.send(batch)

    def _linger(self, stop: threading.Event | None) -> list[PendingEvent]:
        linger = self.settings.linger_ms / 1000
        while True:
            batch = self.spool.next_batch(max_events=self._batch_cap, max_bytes=self.settings.batch_max_bytes)
            if stop is not None and stop.is_set():
                return []
            if not batch:
                self.spool.wait_for_events(1.0)
                return []
            if len(batch) >= self._batch_cap or linger <= 0:
                return batch
            body_bytes = sum(len(p.body) for p in batch)
            if body_bytes * 2 >= self.settings.batch_max_bytes:
                return batch
            waited = self._clock() - min(p.enqueued_at for p in batch)
            if waited >= linger:
                return batch
            self.spool.wait_for_events(min(linger - waited, linger))

    # ------------------------------------------------------------------------------------------ one request

    def send(self, batch: list[PendingEvent]) -> SendOutcome:
        """Sign and send one batch now, then settle each event by its result."""
        body = b'{"events":[' + b",".join(p.body for p in batch) + b"]}"
        ids = [p.event_id for p in batch]
        for attempt in range(2):  # a second attempt only after correcting the clock offset
            try:
                status, headers, payload = self._post(body)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                return self._failed(ids, f"network: {type(exc).__name__}: {exc}", None, None)
            if status == 202:
                return self._settle(batch, payload, headers)
            code = _problem_code(payload)
            if status == 401 and code == "signature_expired" and attempt == 0 and self._correct_clock(headers):
                continue
            if status in (429, 503):
                retry_after = parse_retry_after(headers.get("retry-after"), now=self._clock())
                return self._failed(ids, f"http {status} {code or ''}".strip(), status, retry_after)
            if 400 <= status < 500 and status not in _KEY_LEVEL_STATUSES and code not in _KEY_LEVEL_CODES:
                return self._payload_problem(batch, status, code, payload)
            return self._failed(ids, f"http {status} {code or ''}".strip(), status, None)
        return self._failed(ids, "http 401 signature_expired after clock correction", 401, None)

    def _post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        reused = self._conn is not None
        try:
            return self._post_once(body)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
            # the server closed an idle keep-alive connection: one fresh try (re-signed, new nonce) at once
            self.close()
            return self._post_once(body)

    def _post_once(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        headers = self._signer.sign("POST", EVENTS_PATH, body)
        headers["Content-Length"] = str(len(body))
        conn = self._connection()
        conn.request("POST", self._request_path, body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        received = {k.lower(): v for k, v in response.getheaders()}
        if received.get("connection", "").lower() == "close":
            self.close()
        return response.status, received, payload

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            timeout = self.settings.request_timeout_secs
            if self._scheme == "https":
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=ssl.create_default_context()
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _correct_clock(self, headers: dict[str, str]) -> bool:
        date = headers.get("date")
        if not date:
            return False
        try:
            server = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return False
        previous = self.clock_offset_secs
        self.clock_offset_secs = server - self._clock()
        log.warning("clock offset corrected from %+.0fs to %+.0fs", previous, self.clock_offset_secs)
        self.spool.bump({"clock_corrections": 1})
        return True

    # ------------------------------------------------------------------------------------------ results

    def _settle(self, batch: list[PendingEvent], payload: bytes, headers: dict[str, str]) -> SendOutcome:
        try:
            response = BatchResponse.model_validate_json(payload)
        except ValidationError:
            return self._failed([p.event_id for p in batch], "http 202 with an unreadable body", 202, None)
        accepted: list[str] = []
        duplicate: list[str] = []
        rejected: dict[str, tuple[str, str]] = {}
        kept = 0
        for index, pending in enumerate(batch):
            result = response.results[index] if index < len(response.results) else None
            if result is None or (result.event_id is not None and result.event_id != pending.event_id):
                # results are in request order; a mismatch means we cannot trust them, so keep the event
                kept += 1
            elif result.status == "accepted":
                accepted.append(pending.event_id)
            elif result.status == "duplicate":
                duplicate.append(pending.event_id)
            elif result.status == "rejected":
                error = result.error
                rejected[pending.event_id] = (
                    str(error.code) if error else "rejected",
                    error.detail if error else "rejected without a reason",
                )
            else:
                kept += 1
        self.spool.settle(accepted=accepted, duplicate=duplicate, rejected=rejected)
        if rejected:
            log.warning("%d events rejected by the API and quarantined", len(rejected))
        self._batch_cap = min(self.settings.batch_max_events, self._batch_cap * 2)
        delay = 0.0
        if kept:
            self._failures += 1
            retry_after = parse_retry_after(headers.get("retry-after"), now=self._clock())
            delay = self._delay(retry_after)
        else:
            self._failures = 0
        return SendOutcome(202, delay, len(accepted), len(duplicate), len(rejected), kept)

    def _payload_problem(self, batch: list[PendingEvent], status: int, code: str | None, payload: bytes) -> SendOutcome:
        """The whole request was refused for what it carries: split the batch until the culprit is alone."""
        if len(batch) > 1:
            self._batch_cap = max(1, len(batch) // 2)
            return SendOutcome(status, 0.0, error=f"http {status} {code}; batch cap now {self._batch_cap}")
        detail = _problem_detail(payload) or f"http {status}"
        self.spool.quarantine({batch[0].event_id: (code or f"http_{status}", detail)})
        return SendOutcome(status, 0.0, rejected=1)

    def _failed(self, ids: list[str], error: str, status: int | None, retry_after: float | None) -> SendOutcome:
        self._failures += 1
        self.spool.record_failure(ids, error)
        delay = self._delay(retry_after)
        # authentication and authorisation failures need an operator (key not registered, revoked, ...)
        level = logging.WARNING if status in (401, 403) else logging.INFO
        log.log(level, "send failed (%s); retrying in %.2fs", error, delay)
        return SendOutcome(status, delay, kept=len(ids), error=error)

    def _delay(self, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.settings.retry_max_secs)
        return backoff_delay(
            self._failures,
            initial_secs=self.settings.retry_initial_ms / 1000,
            max_secs=self.settings.retry_max_secs,
            rng=self._rng,
        )


def _problem(payload: bytes) -> dict[str, object]:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _problem_code(payload: bytes) -> str | None:
    code = _problem(payload).get("code")
    return code if isinstance(code, str) else None


def _problem_detail(payload: bytes) -> str | None:
    detail = _problem(payload).get("detail")
    return detail if isinstance(detail, str) else None
