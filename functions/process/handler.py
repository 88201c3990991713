"""Process function: process queue → dedupe → enrich → redact → fan out to the destination topics.

Thin wiring; the logic is ``anfang.pipeline.process``. The whole SQS batch goes through each stage at once (batched
reads, one data key, PublishBatch), and the partial batch response names the messages to retry.
"""

from __future__ import annotations

import gc
import hmac
import json
import os
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path
from typing import Any, Self

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field, model_validator

from anfang.aws.delivered_events import DeliveredEvents
from anfang.aws.registry import DeviceRegistry
from anfang.contracts.types import TownCode
from anfang.health_codes.authority import CurrentHealthCodes
from anfang.health_codes.keys import load_pepper, person_key
from anfang.health_codes.table import HealthCodeTable
from anfang.pipeline.enrich import Enricher, HealthCodeLookup, SiteLookup
from anfang.pipeline.process import Incoming, ProcessDeps, Processor
from anfang.pipeline.redact import ImageBuckets, Redactor
from anfang.policies import DESTINATIONS, load_policy

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
    devices_table: str = Field(alias="DEVICES_TABLE_NAME", min_length=3)
    health_codes_enabled: bool = Field(default=True, alias="HEALTH_CODES_ENABLED")
    health_codes_table: str | None = Field(default=None, alias="HEALTH_CODES_TABLE_NAME", min_length=3)
    health_code_pepper_secret_arn: str | None = Field(default=None, alias="HEALTH_CODE_PEPPER_SECRET_ARN", min_length=1)
    health_code_stale_hours: int = Field(default=24, alias="HEALTH_CODE_STALE_HOURS", gt=0)

    @model_validator(mode="after")
    def _health_code_resources(self) -> Self:
        if self.health_codes_enabled and not (self.health_codes_table and self.health_code_pepper_secret_arn):
            raise ValueError("HEALTH_CODES_ENABLED needs HEALTH_CODES_TABLE_NAME and HEALTH_CODE_PEPPER_SECRET_ARN")
        return self


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


def _health_codes_off(id_number: str) -> str:
    raise RuntimeError("health codes are switched off for this town")


def lookups(
    settings: Settings, *, session: Any = None
) -> tuple[SiteLookup, HealthCodeLookup | None, Callable[[str], str]]:
    """The device registry, the health-code table under the authority rule, and the pepper-bound person key."""
    session = session or boto3.session.Session()
    dynamodb = session.client("dynamodb")
    sites = DeviceRegistry(dynamodb, settings.devices_table, town_code=settings.town_code)
    if (
        not settings.health_codes_enabled
        or not settings.health_codes_table
        or not settings.health_code_pepper_secret_arn
    ):
        return sites, None, _health_codes_off
    pepper = load_pepper(session.client("secretsmanager"), settings.health_code_pepper_secret_arn)
    health_codes = CurrentHealthCodes(HealthCodeTable(dynamodb, settings.health_codes_table))
    return sites, health_codes, partial(person_key, pepper)


@cache
def processor() -> Processor:
    settings = Settings.model_validate(dict(os.environ))
    sites, health_codes, person_key = lookups(settings)
    built = build_processor(settings, sites=sites, health_codes=health_codes, person_key=person_key)
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
