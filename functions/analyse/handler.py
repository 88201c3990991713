"""Analyse function: analyse queue → image analysis → derived images in the image bucket → process queue.

Table of contents; the logic is ``anfang.pipeline.analyse``, the wiring ``anfang.pipeline.analyse_wiring``.
Partial batch failures: a record whose images cannot be read or whose message cannot be sent is reported in
``batchItemFailures`` and retried by SQS; a corrupt image is not a failure (its analysis says ``error`` and
the event goes on).
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from anfang.contracts import QueuedEvent
from anfang.pipeline.analyse_wiring import Analyser, build_analyser
from anfang.pipeline.settings import AnalyseSettings as Settings

__all__ = ["Settings", "analyser", "lambda_handler"]

logger = Logger(service="analyse")
metrics = Metrics(namespace="anfang", service="analyse")


@cache
def analyser() -> Analyser:
    """Settings validated and clients built: once per container."""
    return build_analyser(Settings.from_env(os.environ))


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    stage = analyser()
    outgoing: dict[str, str] = {}  # message id -> the analysed event for the process queue

    def record_handler(record: SQSRecord) -> None:
        analysed = stage.analyse(QueuedEvent.model_validate_json(record.body))
        errors = sum(1 for image in analysed.images if image.analysis and image.analysis.quality == "error")
        metrics.add_metric(name="ImagesAnalysed", unit=MetricUnit.Count, value=len(analysed.images))
        metrics.add_metric(name="ImagesErrored", unit=MetricUnit.Count, value=errors)
        faces = sum(len(image.analysis.faces) for image in analysed.images if image.analysis)  # each one blurred
        metrics.add_metric(name="FacesBlurred", unit=MetricUnit.Count, value=faces)
        outgoing[record.message_id] = analysed.model_dump_json(by_alias=True)

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    with processor(records=event["Records"], handler=record_handler):
        processor.process()
    response = processor.response()
    unsent = stage.queue.send(outgoing)
    response["batchItemFailures"].extend({"itemIdentifier": message_id} for message_id in unsent)
    metrics.add_metric(name="EventsSent", unit=MetricUnit.Count, value=len(outgoing) - len(unsent))
    metrics.add_metric(name="EventsErrored", unit=MetricUnit.Count, value=len(response["batchItemFailures"]))
    metrics.flush_metrics()
    return dict(response)
