"""The device watch: find registered devices that went silent and tell the police, once per silence.

A device is **silent** when no event of it reached the API for longer than its site type's threshold
(``DeviceWatchSettings.thresholds``), counted from its last-seen time (``aws.last_seen``, written by the API) or,
for a device never seen or registered again since, from its registration. Retired devices are never silent.

For each silence not reported before, the watch builds a v1 ``device_status`` event (state ``offline``, made by
the cloud, not by the device), turns it into the police record through the police redactor (so it is a valid
``police_video`` record under the police policy), and publishes it to the police topic. "Source cloud" is
carried in ``status.detail``, which starts with ``source=cloud;`` (``source_ref`` stays the camera's own object
id, which the GA/T 1400 relay passes on as one: a made-up value there would be taken for the device's).

Once per silence: after publishing, the silence is remembered (``since``, the event id); a later run sees the
same ``since`` and sends nothing. A device heard from again ends the silence; its next silence has a new
``since`` and is reported again. The event id is a UUIDv7 derived from (device, since): its time is the moment the
threshold was crossed and its random bits a hash, so a run that published but could not remember (or a retry)
sends the same (device_id, event_id) again, which every consumer deduplicates.

AWS calls per run: one Scan of the registry and one of the last-seen table (paginated), one PublishBatch per 10
new silences, one BatchWriteItem per 25 of them. The pseudonym secret is read once per cold start (wiring).

>>> watch = DeviceWatch(registry=registry, activity=LastSeenTable(dynamodb, table), thresholds=settings,
...                     town="370322", notifier=PoliceNotifier(redactor, sns, topic_arn, town="370322"))
>>> result = watch.run()
>>> result.counts["SilentDevices"], result.reported
(1, ['37032201001320000001'])
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from pydantic import ValidationError

from anfang.aws.batch import Message, string_attributes
from anfang.aws.last_seen import LastSeenTable, Silence
from anfang.aws.registry import DeviceRecord
from anfang.aws.topics import publish_batch
from anfang.contracts import RECORD_SCHEMA, QueuedEvent, SiteView
from anfang.contracts.events import validate_event
from anfang.pipeline.enrich import Enrichment
from anfang.pipeline.redact import DataKeys, RedactError, Redactor

__all__ = [
    "CLOUD_KEY_ID",
    "SEEN_WINDOW_SECS",
    "DeviceRegistryView",
    "DeviceState",
    "DeviceWatch",
    "PoliceNotifier",
    "Thresholds",
    "WatchResult",
    "silence_event_id",
]

logger = logging.getLogger(__name__)
#: The ``key_id`` of the queued events the cloud makes (no device key signed them).
CLOUD_KEY_ID: Final = "anfang-cloud"
#: "Devices seen in the last hour" (``DevicesSeen``).
SEEN_WINDOW_SECS: Final = 3600


class DeviceRegistryView(Protocol):
    def devices(self) -> list[DeviceRecord]:
        """Every registered device of the town, retired ones included."""
        ...


class Thresholds(Protocol):
    def silent_after_secs(self, site_type: str) -> int:
        """The silence after which a device at a site of ``site_type`` counts as offline."""
        ...


@dataclass(frozen=True, slots=True)
class DeviceState:
    """One registered, non-retired device as the watch sees it at ``now``."""

    device: DeviceRecord
    last_seen_at: int | None
    since: int  # last seen, or registered (whichever is later): where a silence starts
    silent_after_secs: int
    silent_secs: int
    reported: Silence | None  # the silence reported before, if it is this one

    @property
    def silent(self) -> bool:
        return self.silent_secs >= self.silent_after_secs


@dataclass
class WatchResult:
    """A run: every device's state, the silences reported now, and the counts it emits as metrics."""

    devices: list[DeviceState] = field(default_factory=list)
    reported: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def silent(self) -> list[DeviceState]:
        return [state for state in self.devices if state.silent]

    @property
    def online_rate(self) -> float | None:
        """The share of registered, non-retired devices not silent (None without devices)."""
        return (len(self.devices) - len(self.silent)) / len(self.devices) if self.devices else None


def silence_event_id(device_id: str, since: int, crossed_at: int) -> str:
    """The UUIDv7 of the record of one silence: time ``crossed_at`` (s), random bits from (device, since)."""
    digest = int.from_bytes(hashlib.sha256(f"anfang-silence:{device_id}:{since}".encode()).digest()[:10], "big")
    rand_a, rand_b = digest >> 68, digest & ((1 << 62) - 1)
    value = ((crossed_at * 1000) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def _iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")


class PoliceNotifier:
    """Builds each silence's police record through the police redactor and publishes it (PublishBatch)."""

    def __init__(self, redactor: Redactor, sns: Any, topic_arn: str, *, town: str) -> None:
        self._redactor = redactor
        self._sns = sns
        self._topic = topic_arn
        self._town = town
        self._keys = DataKeys(None, {})  # a device_status record has nothing to encrypt (checked at cold start)

    def record(self, state: DeviceState, *, now: int) -> tuple[str, str]:
        """The event id and record JSON of the ``offline`` device_status of ``state``'s silence."""
        device_id = state.device.device_id
        crossed_at = state.since + state.silent_after_secs
        event_id = silence_event_id(device_id, state.since, crossed_at)
        last = _iso(state.last_seen_at) if state.last_seen_at is not None else "never"
        detail = (
            f"source=cloud; no event for {state.silent_secs} s (threshold {state.silent_after_secs} s "
            f"for {state.device.site.site_type}); last seen {last}"
        )
        event = validate_event(
            {
                "event_id": event_id,
                "event_type": "device_status",
                "device_id": device_id,
                "captured_at": _iso(crossed_at),
                "status": {"state": "offline", "detail": detail},
            }
        )
        queued = QueuedEvent.of(
            event, received_at=dt.datetime.fromtimestamp(now, dt.UTC), key_id=CLOUD_KEY_ID, images=[]
        )
        site = state.device.site
        enrichment = Enrichment(site=SiteView(site_id=site.site_id, site_type=site.site_type, name=site.name))
        return event_id, self._redactor.record_json(queued, enrichment, self._keys)

    def publish(self, states: Sequence[DeviceState], *, now: int) -> dict[str, str]:
        """Publish the records of ``states``; the event id of each device whose record was published."""
        messages: list[Message] = []
        event_ids: dict[str, tuple[str, str]] = {}
        for n, state in enumerate(states):
            try:
                event_id, body = self.record(state, now=now)
            except (RedactError, ValidationError) as exc:  # one device's record never holds back the others'
                logger.error("offline record not built", extra={"device_id": state.device.device_id, "error": str(exc)})
                continue
            attributes = string_attributes(
                {
                    "event_type": "device_status",
                    "site_type": state.device.site.site_type,
                    "town": self._town,
                    "schema": RECORD_SCHEMA,
                }
            )
            messages.append(Message(id=f"s{n}", body=body, attributes=attributes))
            event_ids[f"s{n}"] = (state.device.device_id, event_id)
        unsent = set(publish_batch(self._sns, self._topic, messages)) if messages else set()
        return {device_id: event_id for mid, (device_id, event_id) in event_ids.items() if mid not in unsent}


class DeviceWatch:
    """One run over the town's devices; every collaborator is injected."""

    def __init__(
        self,
        *,
        registry: DeviceRegistryView,
        activity: LastSeenTable,
        thresholds: Thresholds,
        notifier: PoliceNotifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._activity = activity
        self._thresholds = thresholds
        self._notifier = notifier
        self._clock = clock

    def survey(self) -> WatchResult:
        """Every registered, non-retired device's state now (two Scans); sends nothing."""
        now = int(self._clock())
        activity = self._activity.read()
        result = WatchResult()
        for device in self._registry.devices():
            if device.retired_at is not None:
                continue
            seen = activity.get(device.device_id)
            last = seen.last_seen_at if seen is not None else None
            registered = int(device.registered_at.timestamp())
            since = max(last, registered) if last is not None else registered
            previous = seen.silence if seen is not None else None
            result.devices.append(
                DeviceState(
                    device=device,
                    last_seen_at=last,
                    since=since,
                    silent_after_secs=self._thresholds.silent_after_secs(device.site.site_type),
                    silent_secs=max(0, now - since),
                    reported=previous if previous is not None and previous.since == since else None,
                )
            )
        result.counts["DevicesRegistered"] = len(result.devices)
        result.counts["DevicesSeen"] = sum(
            1 for s in result.devices if s.last_seen_at is not None and now - s.last_seen_at <= SEEN_WINDOW_SECS
        )
        result.counts["SilentDevices"] = len(result.silent)
        return result

    def run(self) -> WatchResult:
        """Survey, then report each silence not reported before (needs a notifier) and remember it."""
        if self._notifier is None:
            raise ValueError("a watch without a notifier can only survey")
        result = self.survey()
        now = int(self._clock())
        new = [state for state in result.silent if state.reported is None]
        published = self._notifier.publish(new, now=now)
        result.reported = sorted(published)
        result.failed = sorted(s.device.device_id for s in new if s.device.device_id not in published)
        result.counts["OfflineReported"] = len(result.reported)
        result.counts["OfflineErrored"] = len(result.failed)
        if result.failed:
            logger.error("offline records not published", extra={"devices": len(result.failed)})
        remembered = {
            state.device.device_id: Silence(state.since, published[state.device.device_id], now)
            for state in new
            if state.device.device_id in published
        }
        # Published but not remembered (this write failing) means the next run publishes the same event id again.
        self._activity.mark_reported(remembered)
        return result
