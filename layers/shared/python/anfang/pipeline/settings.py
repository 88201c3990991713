"""Environments of the analyse and process functions, validated once at cold start.

Only pydantic here: the analyse function (OpenCV layer, no ``cryptography``) imports this module too.
The process function's topics and field keys are read per destination from the one destination table
(:mod:`anfang.contracts.destinations`), so a new destination needs no new field here.

>>> ProcessSettings.from_env(os.environ).topic_arns["police_video"]
'arn:aws:sns:cn-north-1:123456789012:anfang-370322-police-video'
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Final, Self

from pydantic import BeforeValidator, Field, model_validator

from anfang.aws.environment import FunctionSettings
from anfang.contracts.destinations import DESTINATION_INFO, DestinationInfo
from anfang.contracts.types import SITE_TYPES, SiteType, TownCode
from anfang.pipeline.thumbnails import DEFAULT_DERIVED_KINDS, DerivedKind

__all__ = [
    "DEFAULT_SILENT_AFTER_SECS",
    "DEFAULT_SILENT_DEVICE_THRESHOLDS",
    "AnalyseSettings",
    "ArchiveSettings",
    "DerivedKinds",
    "DeviceWatchSettings",
    "ProcessSettings",
    "SiteThresholds",
    "SilentThresholds",
    "parse_thresholds",
]


def _comma_separated(value: Any) -> Any:
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


#: ``DERIVED_IMAGES``: the derived images the policies use, comma-separated (``thumbnail_faces_blurred`` by
#: default; add ``thumbnail`` only for a policy that sends the unblurred 320 px thumbnail). The analyse function
#: makes and stores only these; the process function refuses, at cold start, a policy that needs another.
DerivedKinds = Annotated[frozenset[DerivedKind], BeforeValidator(_comma_separated)]


def _every_destination(data: dict[str, Any], variable: Callable[[DestinationInfo], str], what: str) -> dict[str, str]:
    """Per destination, the value of its ``variable``; every destination must have one."""
    values: dict[str, str] = {
        d: data[variable(info)] for d, info in DESTINATION_INFO.items() if data.get(variable(info))
    }
    if len(values) < len(DESTINATION_INFO):
        missing = [variable(info) for d, info in DESTINATION_INFO.items() if d not in values]
        raise ValueError(f"missing {what} variables: " + ", ".join(missing))
    return values


class AnalyseSettings(FunctionSettings):
    """Environment of the analyse function (``functions/analyse``)."""

    raw_bucket: str = Field(alias="RAW_IMAGE_BUCKET_NAME", min_length=3)
    image_bucket: str = Field(alias="IMAGE_BUCKET_NAME", min_length=3)
    process_queue_url: str = Field(alias="PROCESS_QUEUE_URL", min_length=1)
    dark_brightness_max: float = Field(default=40.0, alias="DARK_BRIGHTNESS_MAX")
    overexposed_brightness_min: float = Field(default=220.0, alias="OVEREXPOSED_BRIGHTNESS_MIN")
    blurry_sharpness_max: float = Field(default=40.0, alias="BLURRY_SHARPNESS_MAX")
    derived_images: DerivedKinds = Field(default=DEFAULT_DERIVED_KINDS, alias="DERIVED_IMAGES")


class ProcessSettings(FunctionSettings):
    """Environment of the process function (``functions/process``)."""

    town_code: TownCode = Field(alias="TOWN_CODE")
    delivered_table: str = Field(alias="DELIVERED_EVENTS_TABLE_NAME", min_length=3)
    delivered_ttl_secs: int = Field(default=7 * 86400, alias="DELIVERED_EVENTS_TTL_SECS", gt=0)
    #: per destination, from ``<NAME>_TOPIC_ARN``; every destination must have one
    topic_arns: dict[str, str] = Field(alias="TOPIC_ARNS")
    #: per destination, from its field-key variable when set (a policy that encrypts needs one: see wiring)
    field_key_ids: dict[str, str] = Field(default_factory=dict, alias="FIELD_KEY_IDS")
    pseudonym_secrets_arn: str = Field(alias="PSEUDONYM_SECRET_ARN", min_length=1)
    raw_bucket: str = Field(alias="RAW_IMAGE_BUCKET_NAME", min_length=3)
    image_bucket: str = Field(alias="IMAGE_BUCKET_NAME", min_length=3)
    policy_dir: Path | None = Field(default=None, alias="POLICY_DIR", description="a town's own policies")
    derived_images: DerivedKinds = Field(default=DEFAULT_DERIVED_KINDS, alias="DERIVED_IMAGES")
    devices_table: str = Field(alias="DEVICES_TABLE_NAME", min_length=3)
    health_codes_enabled: bool = Field(default=True, alias="HEALTH_CODES_ENABLED")
    health_codes_table: str | None = Field(default=None, alias="HEALTH_CODES_TABLE_NAME", min_length=3)
    health_code_pepper_secret_arn: str | None = Field(default=None, alias="HEALTH_CODE_PEPPER_SECRET_ARN", min_length=1)
    health_code_stale_hours: int = Field(default=24, alias="HEALTH_CODE_STALE_HOURS", gt=0)
    release_log_table: str = Field(alias="RELEASE_LOG_TABLE_NAME", min_length=3)
    release_signing_key_arn: str = Field(alias="RELEASE_SIGNING_KEY_ARN", min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _per_destination(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "TOPIC_ARNS" in data:
            return data
        topics = _every_destination(data, lambda info: info.topic_env, "topic")
        keys = {
            d: data[info.field_key_env]
            for d, info in DESTINATION_INFO.items()
            if info.field_key_env and data.get(info.field_key_env)
        }
        return {**data, "TOPIC_ARNS": topics, "FIELD_KEY_IDS": keys}

    @model_validator(mode="after")
    def _health_code_resources(self) -> Self:
        if self.health_codes_enabled and not (self.health_codes_table and self.health_code_pepper_secret_arn):
            raise ValueError("HEALTH_CODES_ENABLED needs HEALTH_CODES_TABLE_NAME and HEALTH_CODE_PEPPER_SECRET_ARN")
        return self

    @classmethod
    def variables(cls) -> set[str]:
        """The variables read: the fields' and, per destination, its topic and field-key variables."""
        per_destination = {i.topic_env for i in DESTINATION_INFO.values()}
        per_destination |= {i.field_key_env for i in DESTINATION_INFO.values() if i.field_key_env}
        return (super().variables() - {"TOPIC_ARNS", "FIELD_KEY_IDS"}) | per_destination


#: Seconds without an event after which a device of a site type not named in ``SILENT_DEVICE_THRESHOLDS`` is silent.
DEFAULT_SILENT_AFTER_SECS: Final = 3600
#: The template parameter ``SilentDeviceThresholds``' default: compounds and key sites report often (30 min),
#: enterprises and office buildings less at night (1 h), villages' links are the least steady (2 h).
DEFAULT_SILENT_DEVICE_THRESHOLDS: Final = (
    "residential_new=1800,residential_closed=1800,residential_open=1800,rural=7200,"
    "enterprise_institution=3600,apartment_office=3600,key_site=1800"
)


def parse_thresholds(value: Any) -> Any:
    """``site_type=seconds,...`` as a dict; a site type outside the enumeration or a bad number is refused."""
    if not isinstance(value, str):
        return value
    out: dict[str, int] = {}
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        site_type, sep, seconds = part.partition("=")
        if not sep or site_type.strip() not in SITE_TYPES or not seconds.strip().isdigit():
            raise ValueError(f"expected site_type=seconds with a site type of {', '.join(SITE_TYPES)}")
        out[site_type.strip()] = int(seconds)
    return out


#: ``SILENT_DEVICE_THRESHOLDS``: seconds of silence per site type (``residential_closed=1800,rural=7200``).
SilentThresholds = Annotated[dict[SiteType, Annotated[int, Field(ge=60)]], BeforeValidator(parse_thresholds)]


class SiteThresholds:
    """Silence thresholds per site type, from ``SILENT_DEVICE_THRESHOLDS`` text (what the CLI reads from a stack).

    >>> SiteThresholds.parse("rural=7200").silent_after_secs("rural")
    7200
    """

    def __init__(self, by_type: dict[str, int]) -> None:
        self.by_type = dict(by_type)

    @classmethod
    def parse(cls, text: str) -> SiteThresholds:
        """Raises ``ValueError`` on a site type outside the enumeration or a bad number."""
        return cls(parse_thresholds(text))

    def silent_after_secs(self, site_type: str) -> int:
        """The silence after which a device at a site of ``site_type`` counts as offline."""
        return self.by_type.get(site_type, DEFAULT_SILENT_AFTER_SECS)


class DeviceWatchSettings(FunctionSettings):
    """Environment of the device watch (``functions/device_watch``)."""

    town_code: TownCode = Field(alias="TOWN_CODE")
    devices_table: str = Field(alias="DEVICES_TABLE_NAME", min_length=3)
    last_seen_table: str = Field(alias="LAST_SEEN_TABLE_NAME", min_length=3)
    police_topic_arn: str = Field(alias="POLICE_VIDEO_TOPIC_ARN", min_length=1)
    pseudonym_secrets_arn: str = Field(alias="PSEUDONYM_SECRET_ARN", min_length=1)
    raw_bucket: str = Field(alias="RAW_IMAGE_BUCKET_NAME", min_length=3)
    image_bucket: str = Field(alias="IMAGE_BUCKET_NAME", min_length=3)
    policy_dir: Path | None = Field(default=None, alias="POLICY_DIR", description="a town's own policies")
    metrics_namespace: str = Field(default="anfang", alias="POWERTOOLS_METRICS_NAMESPACE")
    thresholds: SilentThresholds = Field(
        default_factory=lambda: parse_thresholds(DEFAULT_SILENT_DEVICE_THRESHOLDS), alias="SILENT_DEVICE_THRESHOLDS"
    )

    def silent_after_secs(self, site_type: str) -> int:
        """The silence after which a device at a site of ``site_type`` counts as offline."""
        return next((secs for kind, secs in self.thresholds.items() if kind == site_type), DEFAULT_SILENT_AFTER_SECS)


class ArchiveSettings(FunctionSettings):
    """Environment of the archive function (``functions/archive``): the bucket and, per destination, the ARN of
    its archive queue (``<NAME>_ARCHIVE_QUEUE_ARN``), which tells a message's destination."""

    archive_bucket: str = Field(alias="ARCHIVE_BUCKET_NAME", min_length=3)
    #: per destination, its archive queue's ARN
    archive_queue_arns: dict[str, str] = Field(alias="ARCHIVE_QUEUE_ARNS")

    @model_validator(mode="before")
    @classmethod
    def _per_destination(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "ARCHIVE_QUEUE_ARNS" in data:
            return data
        queues = _every_destination(data, lambda info: info.archive_queue_env, "archive queue")
        return {**data, "ARCHIVE_QUEUE_ARNS": queues}

    @classmethod
    def variables(cls) -> set[str]:
        """The variables read: the fields' and, per destination, its archive queue variable."""
        return (super().variables() - {"ARCHIVE_QUEUE_ARNS"}) | {i.archive_queue_env for i in DESTINATION_INFO.values()}

    def queue_destinations(self) -> dict[str, str]:
        """Archive queue ARN → destination."""
        return {arn: destination for destination, arn in self.archive_queue_arns.items()}
