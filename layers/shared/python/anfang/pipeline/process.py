"""The process stage: one SQS batch of queued events → dedupe → enrich → redact → fan out.

Batch-shaped on purpose: each stage makes one batched call (or a few) for the whole batch, so a batch of 100
events costs about 27 AWS calls (1 BatchGetItem, 1 GenerateDataKey, 2 x 10 PublishBatch, 4 BatchWriteItem, and
1 TransactWriteItems for the release log).

Release log: before a batch's records are published, they are entered in the release log (``aws.release_log``:
one signed entry per destination, all in one transaction) and each record gets its ``release`` member (entry id,
leaf index, audit path). A record is never published without its entry; an entry may cover a record whose
publish then failed (the log says "released or attempted"; the retry releases it under a later entry). When
the log cannot be written, nothing of the batch is published: the log is shared by the destinations, like the
delivered-events table, so its failure is batch-wide, while a destination's own key or topic still fails only
that destination.
Failures are per message and per destination: a message that does not parse is reported for retry
(``batchItemFailures``); a destination whose record of an event cannot be built (its policy, its KMS data
key) or published (its topic) fails only that destination's part of that event. The other destinations still
get the event in the same invocation and are recorded as reached (``aws.delivered_events``), so the retry
publishes to the failed destination only, and a message that keeps failing ends in the DLQ after the queue's
maxReceiveCount holding only what is still owed. One destination's broken key or topic never holds back
another's records, nor its own records that need no key.

>>> processor = Processor(deps)
>>> result = processor.process([Incoming("msg-1", body)])
>>> result.failed_message_ids
[]
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError

from anfang.aws.batch import Message, string_attributes
from anfang.aws.delivered_events import DedupeError, DeliveredEvents, EventKey
from anfang.aws.release_log import ReleaseLog, ReleaseLogError
from anfang.aws.topics import publish_batch
from anfang.contracts import RECORD_SCHEMA, QueuedEvent
from anfang.contracts.release import ReleaseRef, canonical_record, leaf_hash, tree
from anfang.pipeline.enrich import Enricher
from anfang.pipeline.redact import DataKeys, RedactError, Redactor

__all__ = ["Incoming", "ProcessDeps", "ProcessResult", "Processor"]

logger = logging.getLogger(__name__)
UNKNOWN: Final = "unknown"


@dataclass(frozen=True)
class Incoming:
    """One SQS message of the process queue."""

    message_id: str
    body: str


@dataclass(frozen=True)
class ProcessDeps:
    """Everything the process stage needs, built once per cold start."""

    town: str
    redactors: Mapping[str, Redactor]  # by destination
    topics: Mapping[str, str]  # destination → SNS topic ARN
    kms: Any
    kms_key_ids: Mapping[str, str]  # destination → KMS key id (only destinations that encrypt need one)
    sns: Any
    delivered: DeliveredEvents
    enricher: Enricher
    #: the signed release log; None only in benchmarks and tests of the stages before it
    release_log: ReleaseLog | None = None


@dataclass
class ProcessResult:
    """What happened to a batch: the messages to retry and counters per outcome."""

    failed_message_ids: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def batch_response(self) -> dict[str, list[dict[str, str]]]:
        """The Lambda SQS partial batch response."""
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in self.failed_message_ids]}


class Processor:
    """The process stage over one batch at a time."""

    def __init__(self, deps: ProcessDeps) -> None:
        self.deps = deps
        missing = set(deps.redactors) - set(deps.topics)
        if missing:
            raise ValueError(f"no topic for destinations {sorted(missing)}")

    def process(self, messages: Sequence[Incoming]) -> ProcessResult:
        """Process one batch; raises only when a batch-wide dependency (table, registry) is unavailable."""
        result = ProcessResult()
        result.counts["received"] = len(messages)
        failed: set[str] = set()
        primary, followers = self._parse(messages, result, failed)

        # dedupe against what was delivered before
        seen = self.deps.delivered.seen(primary)
        todo: dict[EventKey, tuple[str, QueuedEvent, tuple[str, ...]]] = {}
        for key, (message_id, event) in primary.items():
            remaining = tuple(d for d in self.deps.redactors if d not in seen.get(key, frozenset()))
            if remaining:
                todo[key] = (message_id, event, remaining)
            else:
                result.counts["duplicate"] += 1

        outgoing = self._records(todo, result, failed)
        reached = self._publish(outgoing, todo, seen, result, failed)

        newly = {key: dests for key, dests in reached.items() if dests - seen.get(key, frozenset())}
        try:
            self.deps.delivered.mark(newly)
        except DedupeError:
            # Already published: acknowledging risks a duplicate later (consumers dedupe on device_id + event_id),
            # failing would publish again now. Prefer the rarer duplicate.
            logger.error("delivered-events not recorded", extra={"events": len(newly)})
            result.counts["errored_mark"] += len(newly)

        for key, message_ids in followers.items():
            if primary[key][0] in failed:
                failed.update(message_ids)
        result.failed_message_ids = [m.message_id for m in messages if m.message_id in failed]
        return result

    @staticmethod
    def _parse(
        messages: Sequence[Incoming], result: ProcessResult, failed: set[str]
    ) -> tuple[dict[EventKey, tuple[str, QueuedEvent]], dict[EventKey, list[str]]]:
        """Parse; duplicates within the batch wait behind their first message and share its outcome."""
        primary: dict[EventKey, tuple[str, QueuedEvent]] = {}
        followers: dict[EventKey, list[str]] = {}
        for message in messages:
            try:
                event = QueuedEvent.model_validate_json(message.body)
            except ValidationError:
                logger.warning("unparseable message", extra={"message_id": message.message_id})
                result.counts["errored_invalid"] += 1
                failed.add(message.message_id)
                continue
            key = (event.device_id, event.event_id)
            if key in primary:
                followers.setdefault(key, []).append(message.message_id)
                result.counts["duplicate"] += 1
            else:
                primary[key] = (message.message_id, event)
        return primary, followers

    def _records(
        self,
        todo: Mapping[EventKey, tuple[str, QueuedEvent, tuple[str, ...]]],
        result: ProcessResult,
        failed: set[str],
    ) -> dict[str, list[tuple[EventKey, Message]]]:
        """Enrich and redact: the messages to publish per destination."""
        enrichments = self.deps.enricher.enrich([event for _, event, _ in todo.values()])
        keys = DataKeys(self.deps.kms, self.deps.kms_key_ids)  # a refused key fails its destination only
        outgoing: dict[str, list[tuple[EventKey, Message]]] = {d: [] for d in self.deps.redactors}
        for key, (message_id, event, remaining) in todo.items():
            enrichment = enrichments[key]
            attributes = string_attributes(
                {
                    "event_type": event.event_type,
                    "site_type": enrichment.site.site_type or UNKNOWN,
                    "town": self.deps.town,
                    "schema": RECORD_SCHEMA,
                }
            )
            for destination in remaining:
                try:
                    body = self.deps.redactors[destination].record_json(event, enrichment, keys)
                except (RedactError, ValidationError) as exc:
                    logger.error(
                        "record not built",
                        extra={
                            "device_id": event.device_id,
                            "event_id": event.event_id,
                            "destination": destination,
                            "error": type(exc).__name__,
                            "code": getattr(exc, "code", "record_invalid"),
                        },
                    )
                    result.counts[f"errored_redact_{destination}"] += 1
                    failed.add(message_id)
                    continue
                entry_id = f"e{len(outgoing[destination])}"
                outgoing[destination].append((key, Message(id=entry_id, body=body, attributes=attributes)))
        return outgoing

    def _publish(
        self,
        outgoing: Mapping[str, list[tuple[EventKey, Message]]],
        todo: Mapping[EventKey, tuple[str, QueuedEvent, tuple[str, ...]]],
        seen: Mapping[EventKey, frozenset[str]],
        result: ProcessResult,
        failed: set[str],
    ) -> dict[EventKey, set[str]]:
        """PublishBatch per destination; the destinations each event has now reached."""
        reached: dict[EventKey, set[str]] = {key: set(seen.get(key, frozenset())) for key in todo}
        for destination, entries in self._enter_in_log(outgoing, todo, result, failed).items():
            unsent = set(publish_batch(self.deps.sns, self.deps.topics[destination], [m for _, m in entries]))
            for key, message in entries:
                if message.id in unsent:
                    result.counts[f"errored_publish_{destination}"] += 1
                    failed.add(todo[key][0])
                else:
                    reached[key].add(destination)
                    result.counts[f"sent_{destination}"] += 1
        return reached

    def _enter_in_log(
        self,
        outgoing: Mapping[str, list[tuple[EventKey, Message]]],
        todo: Mapping[EventKey, tuple[str, QueuedEvent, tuple[str, ...]]],
        result: ProcessResult,
        failed: set[str],
    ) -> dict[str, list[tuple[EventKey, Message]]]:
        """One signed log entry per destination for this batch's records; the records with their ``release``.

        If the log cannot be appended to, nothing of the batch is published (its messages are retried).
        """
        log = self.deps.release_log
        if log is None:
            return dict(outgoing)
        leaves = {
            d: [leaf_hash(canonical_record(json.loads(m.body))) for _, m in entries]
            for d, entries in outgoing.items()
            if entries
        }
        if not leaves:
            return dict(outgoing)
        try:
            logged = log.append({d: (self.deps.redactors[d].policy.ref, ls) for d, ls in leaves.items()})
        except ReleaseLogError as exc:
            logger.error("release log not appended", extra={"destinations": sorted(leaves), "code": exc.code})
            for destination in leaves:
                for key, _ in outgoing[destination]:
                    result.counts[f"errored_release_{destination}"] += 1
                    failed.add(todo[key][0])
            return {}
        stamped: dict[str, list[tuple[EventKey, Message]]] = {}
        for destination, entry in logged.items():
            _, paths = tree(leaves[destination])
            stamped[destination] = []
            for index, (key, message) in enumerate(outgoing[destination]):
                ref = ReleaseRef(
                    entry_id=entry.entry_id, index=index, size=entry.size, proof=[n.hex() for n in paths[index]]
                )
                # the record is a JSON object: ``release`` goes in as its last member (not part of its leaf)
                body = message.body[:-1] + ',"release":' + ref.model_dump_json() + "}"
                stamped[destination].append((key, Message(id=message.id, body=body, attributes=message.attributes)))
        return stamped
