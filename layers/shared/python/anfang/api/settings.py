"""Environment of the ingest API function (``functions/api``), validated once at cold start.

Resource names come from the stack (``template.yaml`` sets them); names carry their unit where they have one.

>>> settings = ApiSettings.from_env(os.environ)
>>> settings.devices_table_name
'anfang-330106-devices'
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, field_validator

from anfang.aws.environment import FunctionSettings, SettingsError
from anfang.contracts.identifiers import validate_town_code

__all__ = ["ApiSettings", "SettingsError"]


class ApiSettings(FunctionSettings):
    """Environment of the ingest API function (``functions/api``)."""

    town_code: str = Field(alias="TOWN_CODE", description="administrative-division code of the stack's town")
    devices_table_name: str = Field(alias="DEVICES_TABLE_NAME", min_length=3)
    nonces_table_name: str = Field(alias="NONCES_TABLE_NAME", min_length=3)
    seen_events_table_name: str = Field(alias="SEEN_EVENTS_TABLE_NAME", min_length=3)
    raw_image_bucket_name: str = Field(alias="RAW_IMAGE_BUCKET_NAME", min_length=3)
    raw_image_kms_key_id: str | None = Field(
        default=None, alias="RAW_IMAGE_KMS_KEY_ID", description="KMS key for SSE-KMS; the bucket default if unset"
    )
    last_seen_table_name: str = Field(alias="LAST_SEEN_TABLE_NAME", min_length=3)
    last_seen_interval_secs: int = Field(
        default=60,
        ge=1,
        le=3600,
        alias="LAST_SEEN_INTERVAL_SECS",
        description="a device's last-seen time is written at most once per this many seconds per container",
    )
    analyse_queue_url: str = Field(alias="ANALYSE_QUEUE_URL", min_length=8)
    process_queue_url: str = Field(alias="PROCESS_QUEUE_URL", min_length=8)

    health_codes_enabled: bool = Field(default=True, alias="HEALTH_CODES_ENABLED")
    health_codes_table_name: str | None = Field(default=None, alias="HEALTH_CODES_TABLE_NAME")
    health_code_snapshots_table_name: str | None = Field(default=None, alias="HEALTH_CODE_SNAPSHOTS_TABLE_NAME")
    health_code_snapshot_bucket_name: str | None = Field(default=None, alias="HEALTH_CODE_SNAPSHOT_BUCKET_NAME")
    health_code_pepper_secret_arn: str | None = Field(
        default=None, alias="HEALTH_CODE_PEPPER_SECRET_ARN", description="Secrets Manager secret: the town pepper"
    )
    health_code_ttl_days: int = Field(default=30, ge=1, le=3650, alias="HEALTH_CODE_TTL_DAYS")
    snapshot_url_expires_secs: int = Field(default=900, ge=60, le=43_200, alias="SNAPSHOT_URL_EXPIRES_SECS")

    registry_cache_ttl_secs: float = Field(
        default=30.0,
        ge=0,
        le=300,
        alias="REGISTRY_CACHE_TTL_SECS",
        description="the revocation delay: a revoked key is refused at most this long after its revocation",
    )
    seen_events_ttl_days: int = Field(default=35, ge=30, le=366, alias="SEEN_EVENTS_TTL_DAYS")
    image_upload_concurrency: int = Field(default=8, ge=1, le=64, alias="IMAGE_UPLOAD_CONCURRENCY")
    key_rate_limit_requests: int = Field(
        default=0, ge=0, alias="KEY_RATE_LIMIT_REQUESTS", description="per signing key and window; 0: no budget"
    )
    key_rate_window_secs: int = Field(default=10, ge=1, le=3600, alias="KEY_RATE_WINDOW_SECS")
    metrics_namespace: str = Field(default="anfang", alias="POWERTOOLS_METRICS_NAMESPACE")
    service_name: str = Field(default="anfang-api", alias="POWERTOOLS_SERVICE_NAME")

    @field_validator("town_code")
    @classmethod
    def _town(cls, value: str) -> str:
        return validate_town_code(value)

    def require_health_codes(self) -> tuple[str, str, str, str]:
        """The health-code resource names; ``SettingsError`` when the feature is on but one is missing."""
        names = (
            self.health_codes_table_name,
            self.health_code_snapshots_table_name,
            self.health_code_snapshot_bucket_name,
            self.health_code_pepper_secret_arn,
        )
        if any(not name for name in names):
            raise SettingsError(
                "HEALTH_CODES_ENABLED needs HEALTH_CODES_TABLE_NAME, HEALTH_CODE_SNAPSHOTS_TABLE_NAME, "
                "HEALTH_CODE_SNAPSHOT_BUCKET_NAME and HEALTH_CODE_PEPPER_SECRET_ARN"
            )
        return names  # type: ignore[return-value]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ApiSettings:
        """Validate the environment; ``SettingsError`` names the bad variables (never their values)."""
        settings = super().from_env(environ)
        if settings.health_codes_enabled:
            settings.require_health_codes()
        return settings
