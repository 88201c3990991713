"""The one batch-send loop of SQS ``SendMessageBatch`` and SNS ``PublishBatch``, with partial failures.

Both calls take at most 10 entries and 256 KiB of bodies, and answer per entry; a sink acknowledges only what
was delivered, so :func:`send_batches` returns the ids of the messages that were *not* taken: an entry in
``Failed``, or every entry of a call that raised. The queues (:mod:`.queues`), the topics (:mod:`.topics`) and
``anfang dlq redrive`` all send through it. AWS calls: one per 10 messages (fewer when bodies are large).

>>> unsent = send_batches(sqs_sender(sqs, queue_url), [Message("e1", '{"schema": ...}')])
>>> unsent
[]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_ENTRIES",
    "Message",
    "Sender",
    "send_batches",
    "sns_sender",
    "sqs_sender",
    "string_attributes",
]

#: Entries per SendMessageBatch / PublishBatch call (the AWS maximum).
MAX_BATCH_ENTRIES: Final = 10
#: Payload limit of both calls (sum of bodies); kept at the classic 256 KiB so it holds in every region.
MAX_BATCH_BYTES: Final = 256 * 1024

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    """One message: ``id`` names it in the answer; ``attributes`` are ``MessageAttributes`` as SQS and SNS take
    them (``{name: {"DataType": ..., "StringValue": ...}}``; see :func:`string_attributes`)."""

    id: str
    body: str
    attributes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


#: Sends one call's entries (``Id`` = the entry's index in the call) and returns the service's answer.
Sender = Callable[[list[dict[str, Any]]], Mapping[str, Any]]


def string_attributes(attributes: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """String message attributes in the wire shape; empty values are left out (SNS rejects them)."""
    return {name: {"DataType": "String", "StringValue": value} for name, value in attributes.items() if value}


def sqs_sender(sqs: Any, queue_url: str) -> Sender:
    """A :data:`Sender` of ``SendMessageBatch`` to one queue."""

    def send(entries: list[dict[str, Any]]) -> Mapping[str, Any]:
        return sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[no-any-return]

    return send


def sns_sender(sns: Any, topic_arn: str) -> Sender:
    """A :data:`Sender` of ``PublishBatch`` to one topic."""

    def send(entries: list[dict[str, Any]]) -> Mapping[str, Any]:
        for entry in entries:
            entry["Message"] = entry.pop("MessageBody")
        return sns.publish_batch(TopicArn=topic_arn, PublishBatchRequestEntries=entries)  # type: ignore[no-any-return]

    return send


def send_batches(send: Sender, messages: Sequence[Message]) -> list[str]:
    """Send every message in calls of at most 10 entries and 256 KiB; the ids of those NOT taken, in order."""
    failed: list[str] = []
    for part in _parts(messages):
        entries = []
        for n, message in enumerate(part):
            entry: dict[str, Any] = {"Id": str(n), "MessageBody": message.body}
            if message.attributes:
                entry["MessageAttributes"] = message.attributes
            entries.append(entry)
        try:
            answer = send(entries)
        except (ClientError, BotoCoreError) as exc:
            _log.warning("batch send failed for %d messages: %s", len(part), type(exc).__name__)
            failed.extend(m.id for m in part)
            continue
        failed.extend(part[int(entry["Id"])].id for entry in answer.get("Failed", []))
    return failed


def _parts(messages: Sequence[Message]) -> Iterator[list[Message]]:
    part: list[Message] = []
    size = 0
    for message in messages:
        length = len(message.body.encode("utf-8"))
        if part and (len(part) == MAX_BATCH_ENTRIES or size + length > MAX_BATCH_BYTES):
            yield part
            part, size = [], 0
        part.append(message)
        size += length
    if part:
        yield part
