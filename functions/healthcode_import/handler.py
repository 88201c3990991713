"""Health-code import function: S3 ObjectCreated on ``snapshots/`` → the health-code table.

Table of contents; the logic is ``anfang.health_codes.importer``, the wiring ``anfang.health_codes.wiring``.
Logs carry counts, line numbers and codes, never a record (``POWERTOOLS_LOGGER_LOG_EVENT`` is off, and
nothing here logs the event).
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from anfang.health_codes.importer import SnapshotImporter, s3_objects
from anfang.health_codes.settings import ImportSettings as Settings
from anfang.health_codes.wiring import build_importer

__all__ = ["Settings", "handle", "importer", "lambda_handler"]

logger = Logger(service="healthcode_import")
metrics = Metrics(namespace="anfang", service="healthcode_import")


@cache
def importer() -> SnapshotImporter:
    """Settings validated, clients and pepper loaded: once per container."""
    return build_importer(Settings.from_env(os.environ))


def handle(event: dict[str, Any], importer: SnapshotImporter) -> dict[str, Any]:
    """Import every snapshot object of one S3 event; a summary per object (ids, outcomes and counts only)."""
    results = [importer.import_object(bucket, key) for bucket, key in s3_objects(event)]
    for result in results:
        metrics.add_metric(name=f"snapshot_{result.outcome}", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="lines_received", unit=MetricUnit.Count, value=result.received)
        metrics.add_metric(name="lines_imported", unit=MetricUnit.Count, value=result.imported)
        metrics.add_metric(name="lines_rejected", unit=MetricUnit.Count, value=result.rejected)
    metrics.flush_metrics()
    return {
        "snapshots": [
            {
                "snapshot_id": r.snapshot_id,
                "outcome": r.outcome,
                "received": r.received,
                "imported": r.imported,
                "rejected": r.rejected,
                "error": r.error,
            }
            for r in results
        ]
    }


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, importer())
