"""Health-code wire models v1: what the health commission sends and gets back (docs/api.md, "Health codes").

Deltas carry either the raw resident ID number (turned into a ``person_key`` by the API at once and never
stored or logged) or a ``person_key`` the commission computed itself with the town pepper. A snapshot file
is NDJSON with one :class:`HealthCodeDelta` per line, uploaded to a presigned URL that is bound to the
file's declared size and SHA-256 (:class:`SnapshotRequest`, since issue 15).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, Self

from pydantic import AwareDatetime, Field, StringConstraints, model_validator

from .events import WireModel
from .limits import MAX_HEALTH_CODE_DELTAS, MAX_SNAPSHOT_BYTES
from .problems import ErrorCode
from .types import HealthCodeStatus, Label, ResidentId, Timestamp

__all__ = [
    "MAX_REPORTED_ERRORS",
    "SNAPSHOT_CONTENT_TYPE",
    "DeltaRejection",
    "HealthCodeDelta",
    "HealthCodeDeltaBatch",
    "HealthCodeDeltaResponse",
    "LineRejection",
    "PersonKey",
    "PurgeResponse",
    "SnapshotCounts",
    "SnapshotCreated",
    "SnapshotInfo",
    "SnapshotRequest",
    "SnapshotStatus",
]

#: Rejected records listed in a delta response (the count is always complete).
MAX_REPORTED_ERRORS: Final = 100
SNAPSHOT_CONTENT_TYPE: Final = "application/x-ndjson"

PersonKey = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
SnapshotStatus = Literal["awaiting_upload", "importing", "imported", "failed"]
SnapshotId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class HealthCodeDelta(WireModel):
    """One person's current health code: ``id_number`` or ``person_key``, exactly one."""

    id_number: ResidentId | None = Field(default=None, description="GB 11643 resident ID; hashed on arrival")
    person_key: PersonKey | None = Field(default=None, description="HMAC-SHA256(town pepper, ID number), hex")
    status: HealthCodeStatus
    updated_at: Timestamp = Field(description="RFC 3339 with offset: when the commission set this status")

    @model_validator(mode="after")
    def _one_identity(self) -> Self:
        if (self.id_number is None) == (self.person_key is None):
            raise ValueError("give exactly one of id_number and person_key")
        return self


class HealthCodeDeltaBatch(WireModel):
    """The body of ``POST /v1/health-codes``; records are validated one by one (partial acceptance)."""

    deltas: list[HealthCodeDelta] = Field(min_length=1, max_length=MAX_HEALTH_CODE_DELTAS)


class DeltaRejection(WireModel):
    index: int = Field(ge=0, description="position of the record in deltas")
    code: ErrorCode
    detail: str
    field: str | None = None


class HealthCodeDeltaResponse(WireModel):
    """Applied, superseded and rejected counts; the first rejected records with their reasons (never values)."""

    applied: int = Field(ge=0, description="valid deltas written: newer than what was stored for the person")
    superseded: int = Field(
        default=0,
        ge=0,
        description="valid deltas not written: the person's stored record (or another delta of this request) is "
        "as new or newer (updated_at; on a tie the more severe status)",
    )
    rejected: int = Field(ge=0)
    errors: list[DeltaRejection] = Field(default_factory=list, max_length=MAX_REPORTED_ERRORS)


class SnapshotRequest(WireModel):
    """The body of ``POST /v1/health-codes/snapshots``: the exact file the commission will upload."""

    size_bytes: int = Field(ge=1, le=MAX_SNAPSHOT_BYTES, description="the file's exact length in bytes")
    sha256: Sha256Hex = Field(description="SHA-256 of the file's exact bytes, lowercase hex")


class SnapshotCreated(WireModel):
    """Where to upload a full snapshot (NDJSON of :class:`HealthCodeDelta`), with HTTP PUT before it expires.

    The URL is signed for the declared size and SHA-256: the PUT must carry ``upload_headers`` exactly, and
    only once (``If-None-Match: *``).
    """

    snapshot_id: SnapshotId
    status: SnapshotStatus
    size_bytes: int = Field(ge=1, le=MAX_SNAPSHOT_BYTES, description="as declared")
    sha256: Sha256Hex = Field(description="as declared")
    upload_url: str = Field(min_length=1, max_length=8192)
    upload_method: Literal["PUT"] = "PUT"
    upload_headers: dict[str, str] = Field(
        default_factory=dict, description="headers the PUT must carry, exactly: they are signed"
    )
    expires_at: AwareDatetime


class SnapshotCounts(WireModel):
    received: int = Field(default=0, ge=0)
    imported: int = Field(default=0, ge=0)
    rejected: int = Field(default=0, ge=0)


class LineRejection(WireModel):
    """A rejected line of a snapshot: where and why, never its value."""

    line: int = Field(ge=1, description="line number in the uploaded file, from 1 (blank lines count)")
    code: ErrorCode
    detail: str = Field(max_length=64, description="the validation error type, e.g. string_pattern_mismatch")
    field: str | None = Field(default=None, max_length=64, description="the field at fault, when one is")


class SnapshotInfo(WireModel):
    """Import status of a snapshot (``GET /v1/health-codes/snapshots/{id}``)."""

    snapshot_id: SnapshotId
    status: SnapshotStatus
    created_at: AwareDatetime
    updated_at: AwareDatetime
    counts: SnapshotCounts
    size_bytes: int | None = Field(default=None, description="declared at creation (absent on older snapshots)")
    sha256: Sha256Hex | None = Field(default=None, description="declared at creation (absent on older snapshots)")
    error: Label | None = None
    errors: list[LineRejection] = Field(
        default_factory=list,
        max_length=MAX_REPORTED_ERRORS,
        description="the first rejected lines of an imported snapshot, with their reasons (never their values)",
    )


class PurgeResponse(WireModel):
    """What ``DELETE /v1/health-codes`` removed."""

    deleted: int = Field(ge=0, description="health-code records deleted")
    snapshots_deleted: int = Field(ge=0, description="uploaded snapshot files deleted")
