"""``anfang relay https``: gov_cloud records to the county data platform, POSTed in signed batches.

Body: ``{"records": [<record>, ...]}`` with the records' bytes exactly as they came off the queue (never
re-serialised), signed with the devices' RFC 9421 Ed25519 profile (``anfang.contracts.signing.Signer``: covered
``"@method" "@path" "content-digest" "content-type"``, ``created``, ``keyid``, ``nonce``), so the platform
verifies the relay as the API verifies a device, with one public key. Every attempt is signed anew.

Answers:

| answer | what the relay does |
|---|---|
| 2xx | every record acknowledged; with ``results`` in the body (``[{event_id, device_id?, status}]``, as |
|     | the API answers) only ``accepted`` / ``duplicate`` ones, the others retried |
| 429, 503 | the whole relay waits ``Retry-After`` (seconds or an HTTP date), else its backoff |
| 413, 400, 422 | the batch is split in halves until the refused record is alone; it is retried with backoff |
| 401, 403 | the key is not (yet) registered or the clock is off: backoff, records kept |
| other 5xx, no connection | backoff, records kept |

Records are gov_cloud's view (pseudonymised, no face images): no decryption, no image fetching; image
references travel as they are.

>>> relay = HttpsRelay(config, outbox=outbox, reader=reader, signer=Signer(key_id, private_key))
>>> relay.run(stop)
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests

from anfang.contracts import Signer

from .base import Delivery, Relay, loop_settings
from .config import HttpsRelayConfig
from .errors import UpstreamAuthError, UpstreamError
from .outbox import Outbox, PendingRecord
from .reader import QueueReader

__all__ = ["HttpsRelay", "batch_body"]

log = logging.getLogger("anfang_ops.relays.https")
_SPLIT_STATUSES = frozenset({400, 413, 422})
_DONE = frozenset({"accepted", "duplicate"})


def batch_body(records: list[PendingRecord]) -> bytes:
    """``{"records":[...]}`` around the records' own bytes."""
    return b'{"records":[' + b",".join(r.body for r in records) + b"]}"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), None when absent or bad."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - now)


class HttpsRelay(Relay):
    """gov_cloud records → a signed HTTPS endpoint."""

    name = "https-relay"

    def __init__(
        self,
        config: HttpsRelayConfig,
        *,
        outbox: Outbox,
        reader: QueueReader | None,
        signer: Signer,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        upstream = config.upstream
        super().__init__(outbox=outbox, reader=reader, clock=clock, **loop_settings(config))
        self.config = config
        self.url = upstream.url
        self.path = urlsplit(upstream.url).path or "/"
        self.signer = signer
        self._session = session or requests.Session()

    def connect(self) -> None:
        """Nothing to open: every request carries its own signature."""

    def close(self) -> None:
        self._session.close()

    def _post(self, records: list[PendingRecord]) -> requests.Response:
        body = batch_body(records)
        headers = self.signer.sign("POST", self.path, body)
        try:
            return self._session.post(
                self.url, data=body, headers=headers, timeout=self.config.upstream.request_timeout_secs
            )
        except requests.RequestException as exc:
            raise UpstreamError(f"POST {self.url}: {type(exc).__name__}: {exc}") from exc

    def deliver(self, batch: list[PendingRecord]) -> Delivery:
        response = self._post(batch)
        status = response.status_code
        if 200 <= status < 300:
            return _per_record(batch, response)
        detail = f"HTTP {status} {_problem_code(response)}".strip()
        if status in (429, 503):
            raise UpstreamError(
                detail, retry_after_secs=parse_retry_after(response.headers.get("Retry-After"), time.time())
            )
        if status in (401, 403):
            raise UpstreamAuthError(f"{detail} (is the relay's key registered with the platform, the clock right?)")
        if status in _SPLIT_STATUSES:
            if len(batch) == 1:
                return {batch[0].key: detail}
            half = len(batch) // 2
            # find the refused record by halving; each half is a new signed request
            return {**self.deliver(batch[:half]), **self.deliver(batch[half:])}
        raise UpstreamError(detail)


def _problem_code(response: requests.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.reason or ""
    return str(doc.get("code", "")) if isinstance(doc, dict) else ""


def _per_record(batch: list[PendingRecord], response: requests.Response) -> Delivery:
    try:
        doc: Any = response.json()
    except ValueError:
        doc = None
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, list):
        return {record.key: None for record in batch}
    by_key: dict[tuple[str | None, str], str] = {}
    for item in results:
        if isinstance(item, dict) and isinstance(item.get("event_id"), str):
            by_key[(item.get("device_id"), item["event_id"])] = str(item.get("status", ""))
    outcome: Delivery = {}
    for record in batch:
        state = by_key.get((record.device_id, record.event_id), by_key.get((None, record.event_id)))
        if state in _DONE:
            outcome[record.key] = None
        else:
            outcome[record.key] = f"platform answered {state or 'nothing'} for this record"
    return outcome
