"""Wiring of the health-code import function: clients made once per cold start and handed to the importer.

Cold-start AWS calls: one ``GetSecretValue`` for the town pepper.

>>> importer = build_importer(ImportSettings.from_env(os.environ))
>>> importer.import_object(bucket, "snapshots/<snapshot_id>.ndjson").outcome
'imported'
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3

from anfang.health_codes.importer import SnapshotImporter
from anfang.health_codes.keys import load_pepper
from anfang.health_codes.settings import ImportSettings
from anfang.health_codes.snapshots import SnapshotStore
from anfang.health_codes.table import HealthCodeTable

__all__ = ["build_importer"]


def build_importer(settings: ImportSettings, *, session: Any = None) -> SnapshotImporter:
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
