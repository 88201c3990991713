"""Moving a dead-letter queue's messages back to their source queue (``anfang dlq redrive``).

SQS has ``StartMessageMoveTask`` for this, and on AWS it is the better tool; it is not used here because
moto (the local stack) does not implement it and the same command must work on both. Moving is
receive → SendMessageBatch → DeleteMessageBatch, ten at a time, bodies and message attributes unchanged:
at least once, which is safe because every event is idempotent by ``event_id`` downstream.
"""

from __future__ import annotations

from typing import Any

__all__ = ["redrive"]


def redrive(sqs: Any, dlq_url: str, target_url: str, *, max_messages: int | None = None) -> int:
    """Move messages from ``dlq_url`` to ``target_url`` until the DLQ looks empty; the number moved."""
    moved = 0
    while max_messages is None or moved < max_messages:
        answer = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        )
        messages = answer.get("Messages", [])
        if not messages:
            return moved
        entries = []
        for i, message in enumerate(messages):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": message["Body"]}
            if message.get("MessageAttributes"):
                entry["MessageAttributes"] = message["MessageAttributes"]
            entries.append(entry)
        sent = sqs.send_message_batch(QueueUrl=target_url, Entries=entries)
        ok = {item["Id"] for item in sent.get("Successful", [])}
        done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages) if str(i) in ok]
        if done:
            sqs.delete_message_batch(QueueUrl=dlq_url, Entries=done)
        moved += len(done)
        if len(done) < len(messages):
            failed = ", ".join(f"{f['Id']}: {f.get('Code', '?')}" for f in sent.get("Failed", []))
            raise RuntimeError(f"moved {moved}; some messages could not be sent back ({failed})")
    return moved
