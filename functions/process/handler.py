"""Process function: process queue → dedupe → enrich → redact → fan out to the destination topics.

Table of contents; the logic is ``anfang.pipeline.process``, the wiring ``anfang.pipeline.process_wiring``.
The whole SQS batch goes through each stage at once (batched reads, one data key, PublishBatch), and the
partial batch response names the messages to retry.
"""

from __future__ import annotations

import gc
import os
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from anfang.pipeline.process import Incoming, Processor
from anfang.pipeline.process_wiring import build_processor, lookups
from anfang.pipeline.settings import ProcessSettings as Settings

__all__ = ["Settings", "handle", "lambda_handler", "processor"]

logger = Logger(service="process")
metrics = Metrics(namespace="anfang", service="process")


@cache
def processor() -> Processor:
    """Settings validated, clients and lookups built: once per container."""
    settings = Settings.from_env(os.environ)
    built = build_processor(settings, *lookups(settings))
    # What the cold start built (clients, compiled policies, schemas) lives as long as the container: keep it
    # out of the scans of the collections that a batch's many small dicts trigger.
    gc.freeze()
    return built


def handle(event: dict[str, Any], processor: Processor) -> dict[str, Any]:
    """Process one Lambda SQS event; returns the partial batch response."""
    messages = [Incoming(record["messageId"], record["body"]) for record in event.get("Records", [])]
    result = processor.process(messages)
    for name, value in sorted(result.counts.items()):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    metrics.flush_metrics()
    return result.batch_response()


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, processor())
