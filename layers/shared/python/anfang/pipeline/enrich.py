"""The enrich stage: site facts from the device registry and health codes of identified persons.

Both sources are injected as small protocols, so the stage is tested with in-memory fakes and wired to the
real adapters (``anfang.aws.registry``, ``anfang.health_codes.table``) by the function. One call to each per batch:
``sites_of`` with every device of the batch, ``batch_get`` with every person key (the adapter splits it
into BatchGetItem calls of at most 100 keys).

Events without an identified person get no health code: the system never identifies people from faces.

>>> enricher = Enricher(sites, health_codes, person_key=keyer, stale_after_secs=86400)
>>> enrichments = enricher.enrich(batch)      # {(device_id, event_id): Enrichment}
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from anfang.contracts import PERSON_PATHS, EventType, HealthCodeView, QueuedEvent, SiteView
from anfang.contracts.types import EventKey
from anfang.health_codes.table import HealthCodeRecord

__all__ = ["Enricher", "Enrichment", "HealthCodeLookup", "SiteLookup", "person_id_number"]


class SiteLookup(Protocol):
    """Site facts per device (the device registry)."""

    def sites_of(self, device_ids: Iterable[str]) -> Mapping[str, SiteView]: ...


@dataclass(frozen=True)
class Enrichment:
    """What the enrich stage adds to an event (the enricher shares one per device among the events without a
    health code)."""

    site: SiteView
    health_code: HealthCodeView | None = None

    @functools.cached_property
    def site_json(self) -> dict[str, Any]:
        """The site as JSON, made once per enrichment (records never mutate it; JSON dumps share it)."""
        # SiteView holds only optional strings: its JSON dump is its non-None attributes
        return {k: v for k, v in self.site.__dict__.items() if v is not None}


class HealthCodeLookup(Protocol):
    """Health codes per person key (the health-code table)."""

    def batch_get(self, person_keys: Sequence[str]) -> Mapping[str, HealthCodeRecord]: ...


def person_id_number(event_type: EventType, event: Mapping[str, Any]) -> str | None:
    """The resident ID number of the identified person of an event, if it has one (``PERSON_PATHS``)."""
    for path in PERSON_PATHS[event_type]:
        node: Any = event
        for part in path:
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and isinstance(node.get("id_number"), str):
            return str(node["id_number"])
    return None


class Enricher:
    """Adds site facts and health codes to a batch of events."""

    def __init__(
        self,
        sites: SiteLookup,
        health_codes: HealthCodeLookup | None,
        *,
        person_key: Callable[[str], str],
        stale_after_secs: int,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._sites = sites
        self._health_codes = health_codes  # None: the town has health codes switched off
        self._person_key = person_key
        self._stale_after = dt.timedelta(seconds=stale_after_secs)
        self._clock = clock

    def enrich(self, events: Sequence[QueuedEvent]) -> dict[EventKey, Enrichment]:
        """The enrichment of every event, by (device_id, event_id)."""
        sites = self._sites.sites_of(sorted({e.device_id for e in events})) if events else {}
        keys: dict[EventKey, str] = {}
        if self._health_codes is not None:
            for event in events:
                id_number = person_id_number(event.event_type, event.event)
                if id_number is not None:
                    keys[(event.device_id, event.event_id)] = self._person_key(id_number)
        codes = self._health_codes.batch_get(sorted(set(keys.values()))) if keys and self._health_codes else {}
        now = self._clock()
        out: dict[EventKey, Enrichment] = {}
        # events without a health code share their device's enrichment (its site JSON is then made once)
        plain: dict[str, Enrichment] = {}
        for event in events:
            key = (event.device_id, event.event_id)
            code = codes.get(keys.get(key, ""))
            if code is None:
                shared = plain.get(event.device_id)
                if shared is None:
                    shared = plain[event.device_id] = Enrichment(site=sites.get(event.device_id, SiteView()))
                out[key] = shared
                continue
            view = HealthCodeView(
                status=code.status, as_of=code.updated_at, stale=now - code.updated_at > self._stale_after
            )
            out[key] = Enrichment(site=sites.get(event.device_id, SiteView()), health_code=view)
        return out
