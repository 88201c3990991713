"""The archive stage: an SQS batch of released records → one gzip NDJSON object per destination and hour.

Each destination's topic delivers to its archive queue (raw message delivery, so a message body is the
published record, ``release`` included); which destination a message belongs to is told by the queue it came
from. Records are grouped by (destination, hour of ``received_at`` in UTC) and each group is written as one
object whose name is a digest of its message ids, so a retried batch writes the same objects again. A message
that is not a record (not JSON, no ``received_at``, from an unknown queue) and every message of a group whose
write failed are reported as partial batch failures: SQS retries them and, after ``maxReceiveCount``, moves
them to the archive's dead-letter queue.

>>> archiver.archive_batch([ArchiveMessage("m1", body, queue_arn)]).failed_message_ids
[]
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from anfang.aws.archive import RecordArchive, archive_key, parse_instant

__all__ = ["ArchiveMessage", "ArchiveResult", "Archiver"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ArchiveMessage:
    """One SQS message of the batch: its id, body and the ARN of the queue it came from."""

    id: str
    body: str
    source_arn: str


@dataclass
class ArchiveResult:
    failed_message_ids: list[str] = field(default_factory=list)
    written_keys: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def batch_response(self) -> dict[str, list[dict[str, str]]]:
        """The Lambda partial batch response."""
        return {"batchItemFailures": [{"itemIdentifier": m} for m in self.failed_message_ids]}


class Archiver:
    """Writes batches of records to the archive; ``queue_destinations`` maps an archive queue's ARN to its
    destination."""

    def __init__(self, archive: RecordArchive, queue_destinations: Mapping[str, str]) -> None:
        self.archive = archive
        self.queue_destinations = dict(queue_destinations)

    def archive_batch(self, messages: Sequence[ArchiveMessage]) -> ArchiveResult:
        result = ArchiveResult()
        groups: dict[tuple[str, str], tuple[dt.datetime, list[ArchiveMessage]]] = {}
        for message in messages:
            destination = self.queue_destinations.get(message.source_arn)
            moment = _received_at(message.body)
            if destination is None or moment is None:
                _log.warning("message %s is not an archivable record (queue known: %s)", message.id, bool(destination))
                result.failed_message_ids.append(message.id)
                result.counts["ArchiveRejected"] += 1
                continue
            hour = moment.strftime("%Y-%m-%dT%H")
            groups.setdefault((destination, hour), (moment, []))[1].append(message)
        for (destination, _), (moment, group) in sorted(groups.items()):
            batch_id = hashlib.sha256("\n".join(sorted(m.id for m in group)).encode()).hexdigest()[:32]
            key = archive_key(destination, moment, batch_id)
            try:
                self.archive.put(key, [m.body for m in group])
            except (ClientError, BotoCoreError) as exc:
                _log.warning("archive write of %d records failed: %s", len(group), type(exc).__name__)
                result.failed_message_ids.extend(m.id for m in group)
                result.counts["ArchiveFailed"] += len(group)
                continue
            result.written_keys.append(key)
            result.counts["Archived"] += len(group)
        return result


def _received_at(body: str) -> dt.datetime | None:
    try:
        record = json.loads(body)
        return parse_instant(str(record["received_at"]))
    except (ValueError, KeyError, TypeError):
        return None
