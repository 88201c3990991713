"""The health commission's routes (docs/api.md, "Health codes"): deltas, snapshots, purge.

Every request is signed by a partner key.

The HTTP side of :mod:`anfang.health_codes`: authenticate, parse, answer problem+json; the table and the
snapshot store do the rest. AWS calls: a delta batch costs BatchWriteItem calls of 25 records; the others
one call each (a purge scans the table).

>>> api = HealthCodeApi(verifier=verifier, table=table, snapshots=snapshots, pepper=pepper, metrics=metrics)
>>> api.post_deltas("/v1/health-codes", headers, body).status
200
"""

import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from anfang.api.authenticate import authenticate
from anfang.api.http import (
    HttpResponse,
    RequestError,
    error_response,
    json_response,
    parse_json,
    problem_response,
    require_json_content_type,
)
from anfang.aws.metrics import StageMetrics
from anfang.contracts.events import event_error
from anfang.contracts.healthcodes import (
    MAX_REPORTED_ERRORS,
    DeltaRejection,
    HealthCodeDelta,
    HealthCodeDeltaResponse,
    PurgeResponse,
    SnapshotRequest,
)
from anfang.contracts.limits import MAX_HEALTH_CODE_DELTAS, MAX_SNAPSHOT_BYTES
from anfang.contracts.problems import ContractError, ErrorCode
from anfang.contracts.signing import Verifier
from anfang.health_codes.keys import person_key
from anfang.health_codes.snapshots import SnapshotStore
from anfang.health_codes.table import HealthCodeRecord, HealthCodeTable

__all__ = ["HealthCodeApi"]

_log = logging.getLogger(__name__)

_SNAPSHOT_BODY = 'body must be {"size_bytes": <the file\'s length>, "sha256": "<its SHA-256, 64 lowercase hex>"}'


class HealthCodeApi:
    """The health commission's routes: deltas, snapshots, purge. Every request is signed by a partner key."""

    def __init__(
        self,
        *,
        verifier: Verifier,
        table: HealthCodeTable,
        snapshots: SnapshotStore,
        pepper: bytes,
        metrics: StageMetrics,
    ) -> None:
        self._verifier = verifier
        self._table = table
        self._snapshots = snapshots
        self._pepper = pepper
        self._metrics = metrics

    def post_deltas(self, path: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        """``POST /v1/health-codes``: validate each record, hash ID numbers at once, write the valid ones."""

        def run() -> HttpResponse:
            verified = authenticate(self._verifier, "POST", path, headers, body, role="health_commission")
            require_json_content_type(headers)
            records, rejected, errors = self._read_deltas(parse_json(body), source=f"delta:{verified.created}")
            applied = self._table.put_many(records) if records else 0  # only what is newer than stored
            self._metrics.count("health_code_applied", applied)
            self._metrics.count("health_code_superseded", len(records) - applied)
            self._metrics.count("health_code_rejected", rejected, reason=ErrorCode.PAYLOAD_INVALID)
            return json_response(
                200,
                HealthCodeDeltaResponse(
                    applied=applied, superseded=len(records) - applied, rejected=rejected, errors=errors
                ),
            )

        return self._guard(run)

    def create_snapshot(self, path: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        """``POST /v1/health-codes/snapshots`` with the file's ``size_bytes`` and ``sha256``: a snapshot id and a
        presigned PUT URL bound to them (201)."""

        def run() -> HttpResponse:
            verified = authenticate(self._verifier, "POST", path, headers, body, role="health_commission")
            require_json_content_type(headers)
            if not body.strip():  # the body of the old contract (before issue 15): say what is needed now
                raise RequestError(_SNAPSHOT_BODY, code=ErrorCode.PAYLOAD_INVALID)
            request = self._read_snapshot_request(parse_json(body))
            created = self._snapshots.create(
                key_id=verified.key.key_id, size_bytes=request.size_bytes, sha256=request.sha256
            )
            return json_response(201, created)

        return self._guard(run)

    def get_snapshot(self, path: str, headers: Mapping[str, str], body: bytes, snapshot_id: str) -> HttpResponse:
        """``GET /v1/health-codes/snapshots/{id}``: import status and counts."""

        def run() -> HttpResponse:
            authenticate(self._verifier, "GET", path, headers, body, role="health_commission")
            info = self._snapshots.get(snapshot_id)
            if info is None:
                raise RequestError("no such snapshot", code=ErrorCode.NOT_FOUND)
            return json_response(200, info)

        return self._guard(run)

    def purge(self, path: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        """``DELETE /v1/health-codes``: delete every health-code record and snapshot file of the town."""

        def run() -> HttpResponse:
            authenticate(self._verifier, "DELETE", path, headers, body, role="health_commission")
            deleted = self._table.purge()
            files = self._snapshots.purge_uploads()
            self._metrics.count("health_code_purged", deleted)
            return json_response(200, PurgeResponse(deleted=deleted, snapshots_deleted=files))

        return self._guard(run)

    @staticmethod
    def _read_snapshot_request(doc: Any) -> SnapshotRequest:
        if isinstance(doc, dict) and isinstance(doc.get("size_bytes"), int) and doc["size_bytes"] > MAX_SNAPSHOT_BYTES:
            raise RequestError(f"size_bytes is more than {MAX_SNAPSHOT_BYTES}", code=ErrorCode.PAYLOAD_TOO_LARGE)
        try:
            return SnapshotRequest.model_validate(doc, strict=True)
        except ValidationError as exc:
            error = event_error(exc)  # path and message only
            raise RequestError(f"{_SNAPSHOT_BODY}: {error.detail}", code=ErrorCode.PAYLOAD_INVALID) from None

    def _read_deltas(self, doc: Any, *, source: str) -> tuple[list[HealthCodeRecord], int, list[DeltaRejection]]:
        if not isinstance(doc, dict) or set(doc) != {"deltas"} or not isinstance(doc["deltas"], list):
            raise RequestError('body must be {"deltas": [...]} and nothing else', code=ErrorCode.PAYLOAD_INVALID)
        raw: list[Any] = doc.pop("deltas")
        if not raw:
            raise RequestError("deltas is empty", code=ErrorCode.PAYLOAD_INVALID)
        if len(raw) > MAX_HEALTH_CODE_DELTAS:
            raise RequestError(f"more than {MAX_HEALTH_CODE_DELTAS} deltas", code=ErrorCode.PAYLOAD_TOO_LARGE)
        records: list[HealthCodeRecord] = []
        errors: list[DeltaRejection] = []
        rejected = 0
        for index, item in enumerate(raw):
            raw[index] = None  # let go of the raw ID number as soon as it is read
            try:
                delta = HealthCodeDelta.model_validate(item)
            except ValidationError as exc:
                rejected += 1
                if len(errors) < MAX_REPORTED_ERRORS:
                    error = event_error(exc)  # path and message only, never the input value
                    errors.append(DeltaRejection(index=index, code=error.code, detail=error.detail, field=error.field))
                continue
            key = delta.person_key or person_key(self._pepper, cast(str, delta.id_number))
            records.append(HealthCodeRecord(key, delta.status, delta.updated_at, source))
        return records, rejected, errors

    def _guard(self, run: Callable[[], HttpResponse]) -> HttpResponse:
        try:
            return run()
        except ContractError as exc:
            self._metrics.count("requests_rejected", reason=exc.code)
            return error_response(exc)
        except (ClientError, BotoCoreError, RuntimeError) as exc:
            _log.warning("health-code storage failed: %s", type(exc).__name__)
            self._metrics.count("requests_rejected", reason=ErrorCode.RETRY_LATER)
            return problem_response(ErrorCode.RETRY_LATER, "storage unavailable; retry later")
