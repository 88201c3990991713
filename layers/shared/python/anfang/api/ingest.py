"""The ingest verb behind ``POST /v1/events``: verify → authorize → validate each → images → dedupe → enqueue.

A batch is never all-or-nothing: each event is validated on its own and gets its own result. That includes
authorisation: an event naming a device the key is not bound to is ``rejected`` with ``forbidden_device``
beside its accepted neighbours; only a batch whose every event is forbidden is refused as a whole (403). Images are
checked (CPU only) before the duplicate lookup but stored after it, so a retried batch does not upload the
images of events already accepted. 202 is answered only once every accepted event is on a queue; an event
whose image store or queue write failed gets ``retry_later`` and the whole answer becomes 503
(problem+json with the per-event results), so the edge retries and no event is ever reported ``accepted``
without being queued. Known events answer ``duplicate`` and are not enqueued again.

The idempotency key is (device_id, event_id) at every step (in-batch duplicates, the seen-events table,
raw-image keys, queue message keys): an event id is unique per device only, so an event id that another
device already used is a new event, never a ``duplicate`` of it (docs/api.md, "Events").

The devices of the batch's valid events are recorded as seen (``aws.last_seen``: one BatchWriteItem for the
devices this container has not written in the last ``min_interval_secs``, none when all were; fail open).

AWS calls for a 100-event batch without images, warm registry cache: 1 nonce PutItem, 1 BatchGetItem,
10 SendMessageBatch, 1 TransactWriteItems = 13 (0.13 per event), plus at most 1 BatchWriteItem of last-seen
times (0.14), made only when one of the batch's devices was not written by this container within the interval.

>>> ingest = EventIngest(verifier=verifier, images=store, seen=seen, analyse=analyse_q, process=process_q,
...                      metrics=MemoryMetrics())
>>> outcome = ingest.handle("POST", "/v1/events", headers, body)
>>> outcome.response.status
202
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import TypeAdapter, ValidationError

from anfang.api.authenticate import authenticate
from anfang.api.http import (
    HttpResponse,
    RequestError,
    error_response,
    json_response,
    parse_json,
    problem_response,
    require_json_content_type,
)
from anfang.api.images import CheckedImage, check_image
from anfang.aws.last_seen import LastSeenWriter
from anfang.aws.metrics import StageMetrics
from anfang.aws.queues import EventQueue
from anfang.aws.raw_images import RawImageStore
from anfang.aws.seen_events import SeenEvents
from anfang.contracts.events import (
    EVENT_MODELS,
    BatchResponse,
    EventBase,
    EventError,
    EventResult,
    event_error,
    rejected,
)
from anfang.contracts.events import validate_event as _validate_event
from anfang.contracts.limits import MAX_BODY_BYTES, MAX_EVENTS_PER_BATCH
from anfang.contracts.problems import ContractError, ErrorCode, ImageError, SignatureError
from anfang.contracts.records import QUEUED_SCHEMA, StoredImage
from anfang.contracts.signing import KeyInfo, Verifier, authorize
from anfang.contracts.types import EventKey

__all__ = ["EventIngest", "Outcome", "parse_batch", "queued_message"]

_log = logging.getLogger(__name__)
_NO_IMAGES: Final[set[str]] = {"images"}
_DATETIME: Final[TypeAdapter[datetime]] = TypeAdapter(datetime)
_RETRY: Final = EventError(code=ErrorCode.RETRY_LATER, detail="could not be stored or queued; send it again later")


@dataclass(slots=True)
class Outcome:
    """What a request came to: the response, and a summary that is safe to log (no payload values)."""

    response: HttpResponse
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Pending:
    index: int
    event: EventBase
    images: list[CheckedImage]
    stored: list[StoredImage] = field(default_factory=list)

    @property
    def key(self) -> EventKey:
        return (self.event.device_id, self.event.event_id)


@functools.lru_cache(maxsize=16)
def _queued_head(received_at: datetime, key_id: str) -> str:
    # the same for every event of a request: serialised once
    return json.dumps(
        {"schema": QUEUED_SCHEMA, "received_at": _DATETIME.dump_python(received_at, mode="json"), "key_id": key_id},
        ensure_ascii=False,
        separators=(",", ":"),
    )[:-1]


def queued_message(event: EventBase, *, received_at: datetime, key_id: str, images: list[StoredImage]) -> str:
    """The JSON text of ``QueuedEvent.of(event, ...)``, byte for byte, serialised without the round trip.

    ``QueuedEvent.of`` dumps the event to a dict, validates it again and dumps that dict with runtime type
    inference: about 4x the cost of dumping the already-validated event once. A unit test holds the two
    equal for every event type, with and without images.
    """
    head = _queued_head(received_at, key_id)
    body = event.model_dump_json(exclude=_NO_IMAGES, exclude_none=True)
    stored = ",".join(image.model_dump_json(exclude_none=True) for image in images)
    # event_id, device_id and event_type are pattern-validated: nothing in them needs escaping
    return (
        f'{head},"event_id":"{event.event_id}","device_id":"{event.device_id}",'
        f'"event_type":"{event.event_type}","event":{body},"images":[{stored}]}}'  # type: ignore[attr-defined]
    )


def parse_batch(body: bytes) -> list[Any]:
    """The raw event objects of a ``{"events": [...]}`` body; each is validated later on its own."""
    doc = parse_json(body, max_bytes=MAX_BODY_BYTES)
    if not isinstance(doc, dict) or set(doc) != {"events"} or not isinstance(doc["events"], list):
        raise RequestError('body must be {"events": [...]} and nothing else', code=ErrorCode.PAYLOAD_INVALID)
    events: list[Any] = doc["events"]
    if not events:
        raise RequestError("events is empty", code=ErrorCode.PAYLOAD_INVALID)
    if len(events) > MAX_EVENTS_PER_BATCH:
        raise RequestError(f"more than {MAX_EVENTS_PER_BATCH} events", code=ErrorCode.PAYLOAD_TOO_LARGE)
    return events


class EventIngest:
    """Handles signed event batches; every collaborator is injected (AWS clients live inside the adapters)."""

    def __init__(
        self,
        *,
        verifier: Verifier,
        images: RawImageStore,
        seen: SeenEvents,
        analyse: EventQueue,
        process: EventQueue,
        metrics: StageMetrics,
        executor: Executor | None = None,
        validate: Callable[[Any], EventBase] = _validate_event,
        clock: Callable[[], float] = time.time,
        last_seen: LastSeenWriter | None = None,
    ) -> None:
        self._verifier = verifier
        self._last_seen = last_seen
        self._images = images
        self._seen = seen
        self._analyse = analyse
        self._process = process
        self._metrics = metrics
        self._executor = executor
        self._validate = validate
        self._clock = clock

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Outcome:
        """One request, start to end; never raises for bad input (every failure is a problem response)."""
        summary: dict[str, Any] = {"body_bytes": len(body)}
        try:
            verified = authenticate(self._verifier, method, path, headers, body, role="device")
            summary["key_id"] = verified.key.key_id
            require_json_content_type(headers)
            raw_events = parse_batch(body)
            forbidden = self._authorize_devices(verified.key, raw_events)
            response = self._ingest(raw_events, key_id=verified.key.key_id, summary=summary, forbidden=forbidden)
        except ContractError as exc:
            summary["code"] = exc.code.value
            self._metrics.count("requests_rejected", reason=exc.code)
            return Outcome(error_response(exc), summary)
        return Outcome(response, summary)

    # ------------------------------------------------------------------------------------------------ stages

    @staticmethod
    def _authorize_devices(key: KeyInfo, raw_events: list[Any]) -> dict[int, SignatureError]:
        """The events naming a device the key may not send for, by index; when that is all of them, 403.

        Per event, so one misattributed event cannot hold back a gateway's whole batch (issue 14).
        """
        authorize(key, role="device")
        forbidden: dict[int, SignatureError] = {}
        for index, event in enumerate(raw_events):
            claimed = event.get("device_id") if isinstance(event, dict) else None
            if isinstance(claimed, str):
                try:
                    authorize(key, role="device", device_id=claimed)
                except SignatureError as exc:
                    forbidden[index] = exc
        if forbidden and len(forbidden) == len(raw_events):
            raise next(iter(forbidden.values()))
        return forbidden

    def _ingest(
        self,
        raw_events: list[Any],
        *,
        key_id: str,
        summary: dict[str, Any],
        forbidden: dict[int, SignatureError] | None = None,
    ) -> HttpResponse:
        results: list[EventResult | None] = [None] * len(raw_events)
        self._metrics.count("received", len(raw_events))
        for index, exc in (forbidden or {}).items():
            raw = raw_events[index]
            error = EventError(code=exc.code, detail=exc.detail, field="device_id")
            results[index] = rejected(raw.get("event_id") if isinstance(raw, dict) else None, error)
            self._metrics.count("rejected", reason=exc.code)
        pending = self._check(raw_events, results)
        self._record_seen({item.event.device_id for item in pending})
        pending = self._dedupe(pending, results)
        pending = self._store_images(pending, results)
        self._enqueue(pending, results, key_id=key_id)

        final = [result for result in results if result is not None]
        batch = BatchResponse.of(final)
        for name in ("accepted", "duplicate", "retry_later"):
            self._metrics.count(name, getattr(batch, name))
        summary.update(events=len(final), accepted=batch.accepted, duplicate=batch.duplicate, rejected=batch.rejected)
        if batch.retry_later:
            summary["retry_later"] = batch.retry_later
            return problem_response(
                ErrorCode.RETRY_LATER,
                f"{batch.retry_later} event(s) could not be queued; send them again",
                results=[result.model_dump(mode="json") for result in final],
            )
        return json_response(202, batch)

    def _check(self, raw_events: list[Any], results: list[EventResult | None]) -> list[_Pending]:
        """Validate each event and its images on its own; a bad one never touches its neighbours."""
        pending: list[_Pending] = []
        in_batch: set[EventKey] = set()
        for index, raw in enumerate(raw_events):
            if results[index] is not None:  # already decided (forbidden device)
                continue
            try:
                event = self._validate(raw)
            except ValidationError as exc:
                event_id = raw.get("event_id") if isinstance(raw, dict) else None
                error = _validation_error(exc)
                results[index] = rejected(event_id, error)
                self._metrics.count("rejected", reason=error.code)
                continue
            if (event.device_id, event.event_id) in in_batch:
                results[index] = EventResult(event_id=event.event_id, status="duplicate")
                continue
            try:
                checked = [self._check_image(n, image) for n, image in enumerate(event.images)]
            except _ImageRejectedError as exc:
                results[index] = rejected(event.event_id, exc.error)
                self._metrics.count("rejected", reason=exc.error.code)
                continue
            in_batch.add((event.device_id, event.event_id))
            pending.append(_Pending(index, event, checked))
        return pending

    @staticmethod
    def _check_image(n: int, image: Any) -> CheckedImage:
        try:
            return check_image(image)
        except ImageError as exc:
            error = EventError(code=exc.code, detail=f"images.{n}: {exc.detail}", field=f"images.{n}")
            raise _ImageRejectedError(error) from None

    def _record_seen(self, device_ids: set[str]) -> None:
        """The devices of valid events were heard from: one throttled write; a failure never fails the request."""
        if self._last_seen is None or not device_ids:
            return
        try:
            self._last_seen.touch(device_ids, at=self._clock())
        except (ClientError, BotoCoreError, RuntimeError) as exc:
            _log.warning("last-seen write failed: %s", type(exc).__name__)
            self._metrics.count("last_seen_failed")

    def _dedupe(self, pending: list[_Pending], results: list[EventResult | None]) -> list[_Pending]:
        if not pending:
            return pending
        try:
            known = self._seen.which_seen([item.key for item in pending])
        except (ClientError, BotoCoreError, RuntimeError) as exc:
            # Fail open: the event is enqueued again and the process function dedupes on (device_id, event_id).
            _log.warning("seen-events lookup failed: %s", type(exc).__name__)
            self._metrics.count("seen_lookup_failed")
            return pending
        fresh = []
        for item in pending:
            if item.key in known:
                results[item.index] = EventResult(event_id=item.event.event_id, status="duplicate")
            else:
                fresh.append(item)
        return fresh

    def _store_images(self, pending: list[_Pending], results: list[EventResult | None]) -> list[_Pending]:
        with_images = [item for item in pending if item.images]
        if not with_images:
            return pending

        def store(item: _Pending) -> bool:
            try:
                item.stored = [
                    self._images.put(item.event, c.image, c.raw, width=c.width, height=c.height) for c in item.images
                ]
            except (ClientError, BotoCoreError) as exc:
                _log.warning("raw image store failed: %s", type(exc).__name__)
                return False
            return True

        if self._executor is not None and len(with_images) > 1:
            stored = list(self._executor.map(store, with_images))
        else:
            stored = [store(item) for item in with_images]
        failed = {id(item) for item, ok in zip(with_images, stored, strict=True) if not ok}
        for item in with_images:
            if id(item) in failed:
                results[item.index] = EventResult(event_id=item.event.event_id, status="retry_later", error=_RETRY)
        return [item for item in pending if id(item) not in failed]

    def _enqueue(self, pending: list[_Pending], results: list[EventResult | None], *, key_id: str) -> None:
        if not pending:
            return
        received_at = datetime.fromtimestamp(self._clock(), UTC)
        to_analyse: dict[str, str] = {}
        to_process: dict[str, str] = {}
        for item in pending:
            message = queued_message(item.event, received_at=received_at, key_id=key_id, images=item.stored)
            (to_analyse if item.stored else to_process)[_message_key(item.key)] = message
        failed = self._analyse.send(to_analyse) if to_analyse else set()
        failed |= self._process.send(to_process) if to_process else set()
        queued: list[EventKey] = []
        for item in pending:
            event_id = item.event.event_id
            if _message_key(item.key) in failed:
                results[item.index] = EventResult(event_id=event_id, status="retry_later", error=_RETRY)
            else:
                results[item.index] = EventResult(event_id=event_id, status="accepted")
                queued.append(item.key)
        if queued:
            try:
                self._seen.record(queued, key_id=key_id)
            except (ClientError, BotoCoreError, RuntimeError) as exc:
                # The events are on the queue: they stay accepted; a later copy is deduped downstream.
                _log.warning("seen-events write failed: %s", type(exc).__name__)
                self._metrics.count("seen_record_failed")


def _message_key(key: EventKey) -> str:
    return f"{key[0]}/{key[1]}"


def _validation_error(exc: ValidationError) -> EventError:
    """The event's error; base64 image data past its length limit is ``image_too_large``, as after decoding."""
    error = event_error(exc)
    first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    loc = first["loc"][1:] if first["loc"] and first["loc"][0] in EVENT_MODELS else first["loc"]
    if first["type"] == "string_too_long" and len(loc) == 3 and loc[0] == "images" and loc[2] == "data":
        return EventError(code=ErrorCode.IMAGE_TOO_LARGE, detail=error.detail, field=error.field)
    return error


class _ImageRejectedError(Exception):
    def __init__(self, error: EventError) -> None:
        super().__init__(error.detail)
        self.error = error
