"""Moving a dead-letter queue's messages back to their source queue (``anfang dlq redrive``).

SQS has ``StartMessageMoveTask`` for this, and on AWS it is the better tool; it is not used here because
moto (the local stack) does not implement it and the same command must work on both. Moving is
receive → SendMessageBatch → DeleteMessageBatch, ten at a time, bodies and message attributes unchanged:
at least once, which is safe because every event is idempotent by (``device_id``, ``event_id``) downstream.
"""

from __future__ import annotations

from typing import Any

from anfang.aws.batch import Message, send_batches, sqs_sender

__all__ = ["RedriveError", "redrive"]


class RedriveError(Exception):
    """Some messages could not be sent back (they stay in the dead-letter queue)."""


def redrive(sqs: Any, dlq_url: str, target_url: str, *, max_messages: int | None = None) -> int:
    """Move messages from ``dlq_url`` to ``target_url`` until the DLQ looks empty; the number moved."""
    moved = 0
    send = sqs_sender(sqs, target_url)
    while max_messages is None or moved < max_messages:
        answer = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        )
        messages = answer.get("Messages", [])
        if not messages:
            return moved
        unsent = set(
            send_batches(send, [Message(m["MessageId"], m["Body"], m.get("MessageAttributes") or {}) for m in messages])
        )
        done = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
            for i, m in enumerate(messages)
            if m["MessageId"] not in unsent
        ]
        if done:
            sqs.delete_message_batch(QueueUrl=dlq_url, Entries=done)
        moved += len(done)
        if unsent:
            raise RedriveError(f"moved {moved}; {len(unsent)} messages could not be sent back and stay in the DLQ")
    return moved
