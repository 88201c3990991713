"""Device watch function: on a schedule, silent devices → ``device_status`` offline records → police topic.

Table of contents; the logic is ``anfang.pipeline.watch``, the wiring ``anfang.pipeline.watch_wiring``. Each run
emits ``DevicesSeen`` (devices seen in the last hour), ``SilentDevices``, ``DevicesRegistered``,
``OfflineReported`` and ``OfflineErrored`` with the ``town`` dimension only. A run that fails is the next run's
work: a silence not yet remembered is found and sent again (same event id).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger

from anfang.aws.metrics import emit_town_metrics
from anfang.pipeline.settings import DeviceWatchSettings as Settings
from anfang.pipeline.watch import DeviceWatch
from anfang.pipeline.watch_wiring import build_watch

__all__ = ["Settings", "handle", "lambda_handler", "settings", "watch"]

logger = Logger(service="device_watch")


@cache
def settings() -> Settings:
    """The environment, validated once per container."""
    return Settings.from_env(os.environ)


@cache
def watch(clock: Callable[[], float] = time.time) -> DeviceWatch:
    """Clients and the police redactor built: once per container (and per clock: tests bring their own)."""
    return build_watch(settings(), clock=clock)


def handle(event: dict[str, Any], watch: DeviceWatch, *, town_code: str, namespace: str = "anfang") -> dict[str, Any]:
    """One scheduled run; a summary of counts and device ids (no payloads)."""
    result = watch.run()
    emit_town_metrics(result.counts, namespace=namespace, town_code=town_code)
    return {"counts": dict(sorted(result.counts.items())), "reported": result.reported, "failed": result.failed}


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, watch(), town_code=settings().town_code, namespace=settings().metrics_namespace)
