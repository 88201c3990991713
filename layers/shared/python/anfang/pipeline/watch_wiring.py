"""Wiring of the device watch: clients, the police redactor and the thresholds, built once per cold start.

The handler (``functions/device_watch/handler.py``) calls :func:`build_watch` once per container; the tests call
it with a moto-backed session and a clock of their own. Cold-start AWS calls: one ``GetSecretValue`` (the
pseudonym secret the police redactor is built with, as in the process function).

>>> watch = build_watch(DeviceWatchSettings.from_env(os.environ))
>>> watch.run().counts["SilentDevices"]
0
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import boto3

from anfang.aws.environment import SettingsError
from anfang.aws.last_seen import LastSeenTable
from anfang.aws.registry import DeviceRegistry
from anfang.pipeline.process_wiring import pseudonym_secrets
from anfang.pipeline.redact import ImageBuckets, Redactor
from anfang.pipeline.settings import DeviceWatchSettings
from anfang.pipeline.watch import DeviceWatch, PoliceNotifier
from anfang.policies import load_policy

__all__ = ["build_watch"]

DESTINATION = "police_video"


def build_watch(
    settings: DeviceWatchSettings, *, session: Any = None, clock: Callable[[], float] = time.time
) -> DeviceWatch:
    """The watch of this function. A police policy that does not keep ``device_status`` ``status.state`` and
    ``status.detail`` as they are (the record would not say offline, or from where), or encrypts one of its
    fields, fails the cold start."""
    session = session or boto3.session.Session()
    policy = load_policy(DESTINATION, settings.policy_dir)
    rules = policy.events.get("device_status")
    kept = {path for path, action in rules.fields.items() if action == "keep"} if rules is not None else set()
    if not {"status.state", "status.detail"} <= kept:
        raise SettingsError(f"policy {policy.ref} must keep device_status status.state and status.detail")
    actions = [*policy.common.values(), *(rules.fields.values() if rules is not None else ())]
    if "encrypt" in actions:  # the watch holds no field key: a record it cannot build must fail now, not each run
        raise SettingsError(f"policy {policy.ref} encrypts a device_status field: the device watch cannot")
    secret = pseudonym_secrets(session.client("secretsmanager"), settings.pseudonym_secrets_arn)[DESTINATION]
    redactor = Redactor(
        policy,
        secret=secret,
        town=settings.town_code,
        buckets=ImageBuckets(raw_bucket=settings.raw_bucket, image_bucket=settings.image_bucket),
    )
    dynamodb = session.client("dynamodb")
    return DeviceWatch(
        registry=DeviceRegistry(dynamodb, settings.devices_table, town_code=settings.town_code, cache_ttl_secs=0),
        activity=LastSeenTable(dynamodb, settings.last_seen_table),
        thresholds=settings,
        notifier=PoliceNotifier(redactor, session.client("sns"), settings.police_topic_arn, town=settings.town_code),
        clock=clock,
    )
