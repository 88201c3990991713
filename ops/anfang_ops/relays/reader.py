"""The relays' source: a destination's SQS queue, long-polled, into the outbox, then deleted.

A message is deleted only after its record is durably in the outbox (``Outbox.put_many`` returns after the
fsync), so kill -9 between the two leaves the message on the queue, and its redelivery is a duplicate the
outbox recognises by (device_id, event_id). Records of types the relay does not carry are deleted and counted
(``skipped.<event_type>``, an intentional drop). A message that is not a record is left alone: SQS moves it to
the dead-letter queue after ``maxReceiveCount`` (counted ``invalid``).

AWS calls: one ReceiveMessage (long poll, up to 10 messages) and at most one DeleteMessageBatch per poll.

>>> reader = QueueReader(boto3.client("sqs"), queue_url, carries={"face_capture", "plate_capture"})
>>> reader.poll_once(outbox)   # → records kept
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from typing import Any

from .outbox import Outbox, OutboxEntry

__all__ = ["QueueReader", "entry_of"]

log = logging.getLogger("anfang_ops.relays")
_SCHEMA = "anfang.record.v1"


def entry_of(body: str | bytes) -> OutboxEntry | None:
    """The outbox entry of a queue message body (an ``anfang.record.v1``), or None when it is not one."""
    try:
        record = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(record, dict) and record.get("Type") == "Notification" and isinstance(record.get("Message"), str):
        return entry_of(record["Message"])  # a subscription without raw delivery: the SNS envelope
    if not isinstance(record, dict) or record.get("schema") != _SCHEMA:
        return None
    device_id, event_id, event_type = record.get("device_id"), record.get("event_id"), record.get("event_type")
    if not all(isinstance(v, str) and v for v in (device_id, event_id, event_type)):
        return None
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return OutboxEntry(str(device_id), str(event_id), str(event_type), raw)


class QueueReader:
    """Moves records from one SQS queue into an outbox."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        *,
        carries: Collection[str] | None = None,
        wait_time_secs: int = 20,
        max_messages: int = 10,
        visibility_timeout_secs: int | None = None,
    ) -> None:
        self._sqs = sqs
        self.queue_url = queue_url
        self.carries = None if carries is None else frozenset(carries)
        self.wait_time_secs = wait_time_secs
        self.max_messages = max_messages
        self.visibility_timeout_secs = visibility_timeout_secs

    def poll_once(self, outbox: Outbox) -> int:
        """One long poll; returns how many records were newly kept."""
        params: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": self.max_messages,
            "WaitTimeSeconds": self.wait_time_secs,
        }
        if self.visibility_timeout_secs is not None:
            params["VisibilityTimeout"] = self.visibility_timeout_secs
        messages = self._sqs.receive_message(**params).get("Messages", [])
        if not messages:
            return 0
        keep: list[OutboxEntry] = []
        handled: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        for message in messages:
            entry = entry_of(message.get("Body", ""))
            if entry is None:
                counts["invalid"] = counts.get("invalid", 0) + 1
                log.warning("relay: message %s is not an anfang record; left for the DLQ", message.get("MessageId"))
                continue
            handled.append(message)
            if self.carries is not None and entry.event_type not in self.carries:
                name = f"skipped.{entry.event_type}"
                counts[name] = counts.get(name, 0) + 1
                continue
            keep.append(entry)
        # durable first (fsync), then the queue may forget them
        result = outbox.put_many(keep, counts=counts)
        if handled:
            self._delete(handled)
        return len(result.added)

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        answer = self._sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        for failed in answer.get("Failed", []):
            # harmless: the message comes back after its visibility timeout and is a duplicate in the outbox
            log.info("relay: could not delete message %s: %s", failed.get("Id"), failed.get("Message"))
