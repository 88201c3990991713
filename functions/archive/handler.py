"""Archive function: the destinations' archive queues → gzip NDJSON objects in the archive bucket.

Table of contents; the logic is ``anfang.pipeline.archive``, the wiring ``anfang.pipeline.archive_wiring``. One
object per destination and hour of the batch's records; the partial batch response names the messages to retry.
Emits ``Archived``, ``ArchiveFailed`` and ``ArchiveRejected``.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from anfang.pipeline.archive import ArchiveMessage, Archiver
from anfang.pipeline.archive_wiring import build_archiver
from anfang.pipeline.settings import ArchiveSettings as Settings

__all__ = ["Settings", "archiver", "handle", "lambda_handler"]

logger = Logger(service="archive")
metrics = Metrics(namespace="anfang", service="archive")


@cache
def archiver() -> Archiver:
    """Settings validated, the S3 client built: once per container."""
    return build_archiver(Settings.from_env(os.environ))


def handle(event: dict[str, Any], archiver: Archiver) -> dict[str, Any]:
    """Archive one Lambda SQS event; returns the partial batch response."""
    messages = [
        ArchiveMessage(record["messageId"], record["body"], record.get("eventSourceARN", ""))
        for record in event.get("Records", [])
    ]
    result = archiver.archive_batch(messages)
    for name, value in sorted(result.counts.items()):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    if result.counts:
        metrics.flush_metrics()
    return result.batch_response()


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, archiver())
