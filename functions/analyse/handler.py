"""Analyse function: analyse queue → image analysis → derived images in the image bucket → process queue.

Thin wiring; the logic is ``anfang.pipeline.analyse``. Partial batch failures: a record whose images cannot be read
or whose message cannot be sent is reported in ``batchItemFailures`` and retried by SQS; a corrupt image is
not a failure (its analysis says ``error`` and the event goes on).
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import BaseModel, ConfigDict, Field

from anfang.aws.queues import EventQueue
from anfang.contracts import QueuedEvent
from anfang.pipeline.analyse import Thresholds, analyse_event

logger = Logger(service="analyse")
metrics = Metrics(namespace="anfang", service="analyse")


class Settings(BaseModel):
    """Environment of the function, validated at cold start."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    raw_bucket: str = Field(alias="RAW_IMAGE_BUCKET_NAME", min_length=3)
    image_bucket: str = Field(alias="IMAGE_BUCKET_NAME", min_length=3)
    process_queue_url: str = Field(alias="PROCESS_QUEUE_URL", min_length=1)
    dark_brightness_max: float = Field(default=40.0, alias="DARK_BRIGHTNESS_MAX")
    overexposed_brightness_min: float = Field(default=220.0, alias="OVEREXPOSED_BRIGHTNESS_MIN")
    blurry_sharpness_max: float = Field(default=40.0, alias="BLURRY_SHARPNESS_MAX")


@cache
def settings() -> Settings:
    return Settings.model_validate(dict(os.environ))


@cache
def clients() -> tuple[Any, Any]:
    """(s3, sqs), built once per cold start; ``AWS_ENDPOINT_URL`` is honoured by botocore."""
    return boto3.client("s3"), boto3.client("sqs")


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    cfg = settings()
    s3, sqs = clients()
    thresholds = Thresholds(cfg.dark_brightness_max, cfg.overexposed_brightness_min, cfg.blurry_sharpness_max)
    outgoing: dict[str, str] = {}  # message id -> the analysed event for the process queue

    def record_handler(record: SQSRecord) -> None:
        queued = QueuedEvent.model_validate_json(record.body)
        analysed = analyse_event(
            queued, s3=s3, raw_bucket=cfg.raw_bucket, image_bucket=cfg.image_bucket, thresholds=thresholds
        )
        errors = sum(1 for image in analysed.images if image.analysis and image.analysis.quality == "error")
        metrics.add_metric(name="ImagesAnalysed", unit=MetricUnit.Count, value=len(analysed.images))
        metrics.add_metric(name="ImagesErrored", unit=MetricUnit.Count, value=errors)
        outgoing[record.message_id] = analysed.model_dump_json(by_alias=True)

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    with processor(records=event["Records"], handler=record_handler):
        processor.process()
    response = processor.response()
    unsent = EventQueue(sqs, cfg.process_queue_url).send(outgoing)
    response["batchItemFailures"].extend({"itemIdentifier": message_id} for message_id in unsent)
    metrics.add_metric(name="EventsSent", unit=MetricUnit.Count, value=len(outgoing) - len(unsent))
    metrics.add_metric(name="EventsErrored", unit=MetricUnit.Count, value=len(response["batchItemFailures"]))
    metrics.flush_metrics()
    return dict(response)
