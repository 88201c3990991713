"""Wiring of the process function: AWS clients made once per cold start and handed to the stages.

The handler (``functions/process/handler.py``) calls :func:`build_processor` once per container; the tests
call it too, with moto-backed sessions, so the same wiring runs everywhere. Cold-start AWS calls: one
``GetSecretValue`` for the pseudonym secret and, with health codes on, one for the town pepper.

>>> settings = ProcessSettings.from_env(os.environ)
>>> processor = build_processor(settings, *lookups(settings))
>>> processor.process([Incoming(message_id, body)]).batch_response()
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from functools import partial
from typing import Any

import boto3

from anfang.aws.delivered_events import DeliveredEvents
from anfang.aws.environment import SettingsError
from anfang.aws.registry import DeviceRegistry
from anfang.aws.release_log import ReleaseLog, ReleaseSigner
from anfang.contracts.destinations import DESTINATION_INFO, DESTINATIONS
from anfang.health_codes.authority import CurrentHealthCodes
from anfang.health_codes.keys import load_pepper, person_key
from anfang.health_codes.table import HealthCodeTable
from anfang.pipeline.enrich import Enricher, HealthCodeLookup, SiteLookup
from anfang.pipeline.process import ProcessDeps, Processor
from anfang.pipeline.redact import ImageBuckets, Redactor
from anfang.pipeline.settings import ProcessSettings
from anfang.policies import Policy, load_policy

__all__ = ["build_processor", "derived_kinds_used", "lookups", "pseudonym_secrets"]


def pseudonym_secrets(secretsmanager: Any, arn: str) -> dict[str, bytes]:
    """The per-destination pseudonym secrets, derived from the stack's generated secret.

    The secret is JSON ``{"master": "<random text>"}`` (CloudFormation generates one value per secret);
    each destination's key is HMAC-SHA256(master, "anfang-pseudonym:<destination>"), so destinations never
    share tokens and one secret serves all of them.
    """
    raw = json.loads(secretsmanager.get_secret_value(SecretId=arn)["SecretString"])
    master = str(raw["master"]).encode()
    return {name: hmac.digest(master, f"anfang-pseudonym:{name}".encode(), "sha256") for name in DESTINATIONS}


def _encrypts(policy: Policy) -> bool:
    return any(action == "encrypt" for rules in policy.events.values() for action in rules.fields.values())


def derived_kinds_used(policy: Policy) -> set[str]:
    """The derived images (``thumbnail``, ``thumbnail_faces_blurred``) a policy sends."""
    return {a for rules in policy.events.values() for a in rules.images.values() if a not in ("original", "none")}


def build_processor(
    settings: ProcessSettings,
    sites: SiteLookup,
    health_codes: HealthCodeLookup | None,
    person_key: Callable[[str], str],
    *,
    session: Any = None,
) -> Processor:
    """The processor of this function from its settings, its lookups and a boto3 session.

    A destination whose policy encrypts a field needs its field key, and one that sends a derived image needs
    the analyse function to make it (``DERIVED_IMAGES``): ``SettingsError`` at cold start otherwise.
    """
    session = session or boto3.session.Session()
    secrets = pseudonym_secrets(session.client("secretsmanager"), settings.pseudonym_secrets_arn)
    buckets = ImageBuckets(raw_bucket=settings.raw_bucket, image_bucket=settings.image_bucket)
    policies = {name: load_policy(name, settings.policy_dir) for name in DESTINATIONS}
    for name, policy in policies.items():
        if _encrypts(policy) and name not in settings.field_key_ids:
            raise SettingsError(f"policy {policy.ref} encrypts fields: set {DESTINATION_INFO[name].field_key_env}")
        if missing := derived_kinds_used(policy) - settings.derived_images:
            raise SettingsError(f"policy {policy.ref} sends {', '.join(sorted(missing))}: add it to DERIVED_IMAGES")
    redactors: dict[str, Redactor] = {
        name: Redactor(policy, secret=secrets[name], town=settings.town_code, buckets=buckets)
        for name, policy in policies.items()
    }
    kms = session.client("kms")
    dynamodb = session.client("dynamodb")
    release_log = ReleaseLog(
        dynamodb, settings.release_log_table, signer=ReleaseSigner(kms, settings.release_signing_key_arn)
    )
    release_log.warm(DESTINATIONS)
    return Processor(
        ProcessDeps(
            town=settings.town_code,
            redactors=redactors,
            topics=dict(settings.topic_arns),
            kms=kms,
            kms_key_ids=dict(settings.field_key_ids),
            sns=session.client("sns"),
            delivered=DeliveredEvents(dynamodb, settings.delivered_table, ttl_secs=settings.delivered_ttl_secs),
            enricher=Enricher(
                sites,
                health_codes if settings.health_codes_enabled else None,
                person_key=person_key,
                stale_after_secs=settings.health_code_stale_hours * 3600,
            ),
            release_log=release_log,
        )
    )


def _health_codes_off(id_number: str) -> str:
    raise RuntimeError("health codes are switched off for this town")


def lookups(
    settings: ProcessSettings, *, session: Any = None
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
