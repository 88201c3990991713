"""Wiring of the ingest API function: AWS clients made once per cold start and handed to the domain objects.

The Chalice app calls :func:`build_api` at import time (cold start); tests call it too, with moto-backed
sessions or endpoints, so the same wiring runs everywhere.

>>> services = build_api(ApiSettings.from_env(os.environ))
>>> services.ingest.handle("POST", "/v1/events", headers, body)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
from aws_lambda_powertools import Metrics
from botocore.config import Config

from anfang.api.health_codes import HealthCodeApi
from anfang.api.ingest import EventIngest
from anfang.api.rate_limit import KeyRateLimiter
from anfang.api.settings import ApiSettings
from anfang.aws.last_seen import LastSeenWriter
from anfang.aws.metrics import PowertoolsMetrics, StageMetrics
from anfang.aws.nonces import DynamoNonceStore
from anfang.aws.queues import EventQueue
from anfang.aws.raw_images import RawImageStore
from anfang.aws.registry import DeviceRegistry
from anfang.aws.seen_events import SeenEvents
from anfang.contracts.signing import Verifier
from anfang.health_codes.keys import load_pepper
from anfang.health_codes.snapshots import SnapshotStore
from anfang.health_codes.table import HealthCodeTable

__all__ = ["ApiServices", "build_api"]


@dataclass(frozen=True, slots=True)
class ApiServices:
    """Everything the routes call; ``health`` is None when the town switched health codes off."""

    settings: ApiSettings
    registry: DeviceRegistry
    ingest: EventIngest
    health: HealthCodeApi | None
    metrics: Any  # the Powertools Metrics object the app flushes after each request


def build_api(settings: ApiSettings, *, session: Any = None, metrics: Any = None) -> ApiServices:
    """Create the AWS clients once and wire the registry, nonce store, queues and stores into the verbs."""
    session = session or boto3.session.Session()
    config = Config(
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=2,
        read_timeout=5,
        max_pool_connections=max(10, settings.image_upload_concurrency * 2),
    )
    dynamodb = session.client("dynamodb", config=config)
    sqs = session.client("sqs", config=config)
    s3 = session.client("s3", config=config)
    executor = ThreadPoolExecutor(max_workers=settings.image_upload_concurrency, thread_name_prefix="anfang-io")

    powertools = metrics or Metrics(namespace=settings.metrics_namespace, service=settings.service_name)
    counters: StageMetrics = PowertoolsMetrics(
        powertools, namespace=settings.metrics_namespace, town_code=settings.town_code
    )
    registry = DeviceRegistry(
        dynamodb,
        settings.devices_table_name,
        town_code=settings.town_code,
        cache_ttl_secs=settings.registry_cache_ttl_secs,
    )
    # the per-key budget wraps the nonce store: counted only for requests whose signature verified
    nonces = KeyRateLimiter(
        DynamoNonceStore(dynamodb, settings.nonces_table_name),
        dynamodb,
        settings.nonces_table_name,
        limit=settings.key_rate_limit_requests,
        window_secs=settings.key_rate_window_secs,
    )
    verifier = Verifier(registry, nonces)
    ingest = EventIngest(
        verifier=verifier,
        images=RawImageStore(
            s3, settings.raw_image_bucket_name, town_code=settings.town_code, kms_key_id=settings.raw_image_kms_key_id
        ),
        seen=SeenEvents(dynamodb, settings.seen_events_table_name, ttl_days=settings.seen_events_ttl_days),
        analyse=EventQueue(sqs, settings.analyse_queue_url),
        process=EventQueue(sqs, settings.process_queue_url),
        metrics=counters,
        executor=executor,
        last_seen=LastSeenWriter(
            dynamodb, settings.last_seen_table_name, min_interval_secs=settings.last_seen_interval_secs
        ),
    )
    health = None
    if settings.health_codes_enabled:
        table_name, snapshots_table, bucket, pepper_secret = settings.require_health_codes()
        pepper = load_pepper(session.client("secretsmanager", config=config), pepper_secret)
        health = HealthCodeApi(
            verifier=verifier,
            table=HealthCodeTable(dynamodb, table_name, ttl_days=settings.health_code_ttl_days, executor=executor),
            snapshots=SnapshotStore(
                dynamodb,
                # SigV4 query signing: botocore's default for S3 in us-east-1 is still SigV2, which signs no header
                session.client("s3", config=config.merge(Config(signature_version="s3v4"))),
                table_name=snapshots_table,
                bucket_name=bucket,
                url_expires_secs=settings.snapshot_url_expires_secs,
            ),
            pepper=pepper,
            metrics=counters,
        )
    return ApiServices(settings=settings, registry=registry, ingest=ingest, health=health, metrics=powertools)
