"""Health-code import function: S3 ObjectCreated on ``snapshots/`` → the health-code table.

Thin wiring; the logic is ``anfang.health_codes.importer``. Logs carry counts, line numbers and codes, never
a record (``POWERTOOLS_LOGGER_LOG_EVENT`` is off, and nothing here logs the event).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field

from anfang.contracts.types import TownCode
from anfang.health_codes.importer import DEFAULT_MAX_SNAPSHOT_BYTES, SnapshotImporter, s3_objects
from anfang.health_codes.keys import load_pepper
from anfang.health_codes.snapshots import SnapshotStore
from anfang.health_codes.table import HealthCodeTable

logger = Logger(service="healthcode_import")
metrics = Metrics(namespace="anfang", service="healthcode_import")


class Settings(BaseModel):
    """Environment of the function, validated at cold start."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    town_code: TownCode = Field(alias="TOWN_CODE")
    health_codes_table: str = Field(alias="HEALTH_CODES_TABLE_NAME", min_length=3)
    snapshots_table: str = Field(alias="HEALTH_CODE_SNAPSHOTS_TABLE_NAME", min_length=3)
    snapshot_bucket: str = Field(alias="HEALTH_CODE_SNAPSHOT_BUCKET_NAME", min_length=3)
    pepper_secret_arn: str = Field(alias="HEALTH_CODE_PEPPER_SECRET_ARN", min_length=1)
    health_code_ttl_days: int = Field(default=30, ge=1, le=3650, alias="HEALTH_CODE_TTL_DAYS")
    snapshot_max_bytes: int = Field(default=DEFAULT_MAX_SNAPSHOT_BYTES, gt=0, alias="SNAPSHOT_MAX_BYTES")
    write_concurrency: int = Field(default=4, ge=1, le=32, alias="HEALTH_CODE_WRITE_CONCURRENCY")


def build_importer(settings: Settings, *, session: Any = None) -> SnapshotImporter:
    """The importer of this function from its settings and a boto3 session."""
    session = session or boto3.session.Session()
    ddb = session.client("dynamodb")
    executor = ThreadPoolExecutor(settings.write_concurrency) if settings.write_concurrency > 1 else None
    table = HealthCodeTable(ddb, settings.health_codes_table, ttl_days=settings.health_code_ttl_days, executor=executor)
    s3 = session.client("s3")
    snapshots = SnapshotStore(ddb, s3, table_name=settings.snapshots_table, bucket_name=settings.snapshot_bucket)
    return SnapshotImporter(
        s3,
        table,
        snapshots,
        pepper=load_pepper(session.client("secretsmanager"), settings.pepper_secret_arn),
        bucket_name=settings.snapshot_bucket,
        max_snapshot_bytes=settings.snapshot_max_bytes,
    )


@cache
def importer() -> SnapshotImporter:
    return build_importer(Settings.model_validate(dict(os.environ)))


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
