"""Process function: process queue → dedupe → enrich → redact → fan out to the destination topics.

Thin wiring; the logic is ``anfang.process``. The whole SQS batch goes through each stage at once (batched
reads, one data key, PublishBatch), and the partial batch response names the messages to retry.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field

from anfang.contracts.types import TownCode
from anfang.dedupe import DeliveredEvents
from anfang.enrich import Enricher, HealthCodeLookup, SiteLookup
from anfang.policies import DESTINATIONS, load_policy
from anfang.process import Incoming, ProcessDeps, Processor
from anfang.redact import ImageBuckets, Redactor

logger = Logger(service="process")
metrics = Metrics(namespace="anfang", service="process")


class Settings(BaseModel):
    """Environment of the function, validated at cold start."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    town_code: TownCode = Field(alias="TOWN_CODE")
    delivered_table: str = Field(alias="DELIVERED_EVENTS_TABLE_NAME", min_length=3)
    delivered_ttl_secs: int = Field(default=7 * 86400, alias="DELIVERED_EVENTS_TTL_SECS", gt=0)
    gov_cloud_topic_arn: str = Field(alias="GOV_CLOUD_TOPIC_ARN", min_length=1)
    police_video_topic_arn: str = Field(alias="POLICE_VIDEO_TOPIC_ARN", min_length=1)
    police_video_kms_key_id: str = Field(alias="POLICE_FIELD_KEY_ARN", min_length=1)
    gov_cloud_kms_key_id: str | None = Field(default=None, alias="GOV_CLOUD_KMS_KEY_ID")
    pseudonym_secrets_arn: str = Field(alias="PSEUDONYM_SECRET_ARN", min_length=1)
    raw_bucket: str = Field(alias="RAW_IMAGE_BUCKET_NAME", min_length=3)
    image_bucket: str = Field(alias="IMAGE_BUCKET_NAME", min_length=3)
    policy_dir: Path | None = Field(default=None, alias="POLICY_DIR", description="a town's own policies")
    health_codes_enabled: bool = Field(default=True, alias="HEALTH_CODES_ENABLED")
    health_code_stale_hours: int = Field(default=24, alias="HEALTH_CODE_STALE_HOURS", gt=0)


def pseudonym_secrets(secretsmanager: Any, arn: str) -> dict[str, bytes]:
    """The per-destination pseudonym secrets, derived from the stack's generated secret.

    The secret is JSON ``{"master": "<random text>"}`` (CloudFormation generates one value per secret);
    each destination's key is HMAC-SHA256(master, "anfang-pseudonym:<destination>"), so destinations never
    share tokens and one secret serves all of them.
    """
    raw = json.loads(secretsmanager.get_secret_value(SecretId=arn)["SecretString"])
    master = str(raw["master"]).encode()
    return {name: hmac.digest(master, f"anfang-pseudonym:{name}".encode(), "sha256") for name in DESTINATIONS}


def build_processor(
    settings: Settings,
    *,
    sites: SiteLookup,
    health_codes: HealthCodeLookup | None,
    person_key: Callable[[str], str],
    session: Any = None,
) -> Processor:
    """The processor of this function from its settings, its lookups and a boto3 session."""
    session = session or boto3.session.Session()
    secrets = pseudonym_secrets(session.client("secretsmanager"), settings.pseudonym_secrets_arn)
    buckets = ImageBuckets(raw_bucket=settings.raw_bucket, image_bucket=settings.image_bucket)
    redactors = {
        name: Redactor(
            load_policy(name, settings.policy_dir), secret=secrets[name], town=settings.town_code, buckets=buckets
        )
        for name in DESTINATIONS
    }
    key_ids = {"police_video": settings.police_video_kms_key_id}
    if settings.gov_cloud_kms_key_id:
        key_ids["gov_cloud"] = settings.gov_cloud_kms_key_id
    return Processor(
        ProcessDeps(
            town=settings.town_code,
            redactors=redactors,
            topics={"gov_cloud": settings.gov_cloud_topic_arn, "police_video": settings.police_video_topic_arn},
            kms=session.client("kms"),
            kms_key_ids=key_ids,
            sns=session.client("sns"),
            delivered=DeliveredEvents(
                session.client("dynamodb"), settings.delivered_table, ttl_secs=settings.delivered_ttl_secs
            ),
            enricher=Enricher(
                sites,
                health_codes if settings.health_codes_enabled else None,
                person_key=person_key,
                stale_after_secs=settings.health_code_stale_hours * 3600,
            ),
        )
    )


def lookups(settings: Settings) -> tuple[SiteLookup, HealthCodeLookup | None, Callable[[str], str]]:
    """The device-registry and health-code adapters (``anfang.registry``, ``anfang.healthcodes``, issue 3).

    Wired by the integrator once those modules land; the pipeline only depends on the protocols.
    """
    raise NotImplementedError("process function: wire anfang.registry and anfang.healthcodes here")


@cache
def processor() -> Processor:
    settings = Settings.model_validate(dict(os.environ))
    sites, health_codes, person_key = lookups(settings)
    return build_processor(settings, sites=sites, health_codes=health_codes, person_key=person_key)


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
