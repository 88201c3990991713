"""Environment of the health-code import function (``functions/healthcode_import``), validated at cold start.

>>> ImportSettings.from_env(os.environ).snapshot_max_bytes
1073741824
"""

from __future__ import annotations

from pydantic import Field

from anfang.aws.environment import FunctionSettings
from anfang.contracts.types import TownCode
from anfang.health_codes.importer import DEFAULT_MAX_SNAPSHOT_BYTES

__all__ = ["ImportSettings"]


class ImportSettings(FunctionSettings):
    """Environment of the health-code import function."""

    town_code: TownCode = Field(alias="TOWN_CODE")
    health_codes_table: str = Field(alias="HEALTH_CODES_TABLE_NAME", min_length=3)
    snapshots_table: str = Field(alias="HEALTH_CODE_SNAPSHOTS_TABLE_NAME", min_length=3)
    snapshot_bucket: str = Field(alias="HEALTH_CODE_SNAPSHOT_BUCKET_NAME", min_length=3)
    pepper_secret_arn: str = Field(alias="HEALTH_CODE_PEPPER_SECRET_ARN", min_length=1)
    health_code_ttl_days: int = Field(default=30, ge=1, le=3650, alias="HEALTH_CODE_TTL_DAYS")
    snapshot_max_bytes: int = Field(default=DEFAULT_MAX_SNAPSHOT_BYTES, gt=0, alias="SNAPSHOT_MAX_BYTES")
    write_concurrency: int = Field(default=4, ge=1, le=32, alias="HEALTH_CODE_WRITE_CONCURRENCY")
