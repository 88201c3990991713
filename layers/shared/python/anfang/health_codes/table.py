"""Health codes (DESIGN 4.6): keyed person ids, the health-code table, snapshots and the commission's routes.

``person_key`` = HMAC-SHA256(town pepper, normalised resident ID number), lowercase hex. The raw ID number
is turned into it on arrival and is never stored or logged.

Health-code table: partition key ``person_key`` (S); ``status`` (S: green/yellow/red), ``updated_at``
(S, RFC 3339 UTC), ``source_version`` (S: ``delta:<unix seconds of the signed request>`` or
``snapshot:<snapshot_id>``), TTL attribute ``expires_at`` (N, Unix seconds). Build items with
:func:`health_code_item`, read them with :meth:`HealthCodeTable.get`. Three kinds of item share the table:

- ``<person_key>``: the person's latest delta (``source_version = delta:...``), written by the API;
- ``<person_key>#<snapshot_id>``: the person's line of one imported snapshot (``snapshot:<snapshot_id>``),
  so a new import never overwrites what the authoritative snapshot says (:func:`snapshot_record_key`);
- ``snapshot#current``: the pointer to the authoritative snapshot, ``snapshot_id``, ``as_of`` (RFC 3339)
  and ``as_of_us`` (N, Unix microseconds, compared when the pointer moves); no TTL, purged with the rest.

Authority rule (what enrichment counts; :class:`anfang.healthcode_lookup.CurrentHealthCodes` applies it):
the current snapshot's line of a person, and the person's delta only if its ``updated_at`` is after the
current snapshot's ``as_of`` (the snapshot's ``created_at``); with no snapshot imported yet, every delta. Of
the two the newer wins. A person absent from the current snapshot has only deltas newer than it; records of
older or failed snapshots are ignored and expire by TTL. A snapshot line counts ``as_of`` the snapshot (the
commission vouched for it then), or its own ``updated_at`` if later.

Snapshots table: partition key ``snapshot_id`` (S); ``status``, ``created_at``, ``updated_at``,
``object_key``, ``key_id``, ``received``/``imported``/``rejected`` (N), ``error``, ``errors`` (S, JSON of the
first rejected lines: number, code, reason, never a value), TTL ``expires_at``.
Snapshot files go to ``snapshots/<snapshot_id>.ndjson`` in the snapshot bucket; the ``healthcode_import``
function reads them, calls :meth:`SnapshotStore.mark_importing` / :meth:`SnapshotStore.mark_done` /
:meth:`SnapshotStore.mark_failed`, and writes records with :meth:`HealthCodeTable.put_many`.

>>> pk = person_key(pepper, "11010519491231002x")   # same key as for "11010519491231002X"
>>> table = HealthCodeTable(dynamodb_client, "anfang-330106-health-codes")
>>> table.put_many([HealthCodeRecord(pk, "green", updated_at, "delta:1764405000")])
1
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import TypeAdapter, ValidationError

from anfang.contracts.events import event_error
from anfang.contracts.healthcodes import (
    MAX_REPORTED_ERRORS,
    DeltaRejection,
    HealthCodeDelta,
    HealthCodeDeltaResponse,
    LineRejection,
    PurgeResponse,
    SnapshotCounts,
    SnapshotCreated,
    SnapshotInfo,
    SnapshotStatus,
)
from anfang.contracts.identifiers import validate_resident_id
from anfang.contracts.limits import MAX_HEALTH_CODE_DELTAS
from anfang.contracts.problems import ContractError, ErrorCode
from anfang.contracts.signing import Verifier
from anfang.contracts.types import HealthCodeStatus
from anfang.dynamo import WRITE_ITEMS_PER_CALL, batch_get, batch_write, chunks
from anfang.gate import authenticate
from anfang.http import (
    HttpResponse,
    RequestError,
    error_response,
    json_response,
    parse_json,
    problem_response,
    require_json_content_type,
)
from anfang.observability import StageMetrics

__all__ = [
    "CURRENT_SNAPSHOT_KEY",
    "HEALTH_CODE_TTL_ATTRIBUTE",
    "MIN_PEPPER_BYTES",
    "SNAPSHOT_PREFIX",
    "CurrentSnapshot",
    "HealthCodeApi",
    "HealthCodeRecord",
    "HealthCodeTable",
    "SnapshotStore",
    "PepperError",
    "health_code_item",
    "load_pepper",
    "normalise_id_number",
    "person_key",
    "snapshot_record_key",
]

_log = logging.getLogger(__name__)

HEALTH_CODE_TTL_ATTRIBUTE: Final = "expires_at"
#: Shortest town pepper accepted (the stack generates 32 random bytes).
MIN_PEPPER_BYTES: Final = 16
SNAPSHOT_PREFIX: Final = "snapshots/"
#: The item holding the pointer to the authoritative snapshot (never a person key: those are 64 hex digits).
CURRENT_SNAPSHOT_KEY: Final = "snapshot#current"
_SNAPSHOT_ID_RE: Final = re.compile(r"[0-9a-f]{32}")
_REJECTIONS: Final = TypeAdapter(list[LineRejection])
_SNAPSHOT_RECORD_TTL_SECS: Final = 90 * 86_400


class PepperError(Exception):
    """The town pepper is missing or too short (the function must not start without it)."""


def load_pepper(secretsmanager: Any, secret_id: str) -> bytes:
    """The town pepper from Secrets Manager (Powertools parameters, cached per cold start)."""
    from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415 - cloud extra

    value = SecretsProvider(boto3_client=secretsmanager).get(secret_id, max_age=3600)
    if isinstance(value, str):
        pepper = value.encode("utf-8")
    elif isinstance(value, bytes):
        pepper = value
    else:
        raise PepperError(f"the pepper in {secret_id} is not a string")
    if len(pepper) < MIN_PEPPER_BYTES:
        raise PepperError(f"the pepper in {secret_id} must have at least {MIN_PEPPER_BYTES} bytes")
    return pepper


def normalise_id_number(id_number: str) -> str:
    """The canonical form of a resident ID number: trimmed, check character upper case; ``ValueError``."""
    return validate_resident_id(id_number.strip().upper())


def person_key(pepper: bytes, id_number: str) -> str:
    """HMAC-SHA256(pepper, normalised ID number) as lowercase hex: the only identity the table stores."""
    if len(pepper) < MIN_PEPPER_BYTES:
        raise ValueError(f"the town pepper must have at least {MIN_PEPPER_BYTES} bytes")
    return hmac.new(pepper, normalise_id_number(id_number).encode("ascii"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class HealthCodeRecord:
    person_key: str
    status: HealthCodeStatus
    updated_at: datetime
    source_version: str


@dataclass(frozen=True, slots=True)
class CurrentSnapshot:
    """The authoritative snapshot: its id and the time it speaks for (its ``created_at``)."""

    snapshot_id: str
    as_of: datetime


def snapshot_record_key(key: str, snapshot_id: str) -> str:
    """The table key of a person's line in one snapshot: ``<person_key>#<snapshot_id>``."""
    return f"{key}#{snapshot_id}"


def _micros(value: datetime) -> int:
    return int(value.timestamp()) * 1_000_000 + value.microsecond


def health_code_item(record: HealthCodeRecord, *, expires_at: int) -> dict[str, Any]:
    """The DynamoDB item (low-level attribute values) of a health-code record."""
    return {
        "person_key": {"S": record.person_key},
        "status": {"S": record.status},
        "updated_at": {"S": record.updated_at.astimezone(UTC).isoformat()},
        "source_version": {"S": record.source_version},
        HEALTH_CODE_TTL_ATTRIBUTE: {"N": str(expires_at)},
    }


class HealthCodeTable:
    """The health-code table (DynamoDB client injected); TTL ``ttl_days`` after each write."""

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        ttl_days: int = 30,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self.table_name = table_name
        self._ttl_secs = ttl_days * 86_400
        self._executor = executor
        self._clock = clock

    def get(self, key: str) -> HealthCodeRecord | None:
        """The record of a person_key, or None (what enrichment reads)."""
        item = self._client.get_item(TableName=self.table_name, Key={"person_key": {"S": key}}).get("Item")
        if item is None:
            return None
        return HealthCodeRecord(
            person_key=key,
            status=cast(HealthCodeStatus, item["status"]["S"]),
            updated_at=datetime.fromisoformat(item["updated_at"]["S"]),
            source_version=item["source_version"]["S"],
        )

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Items by key with BatchGetItem (100 keys a call, unprocessed keys retried); absent keys left out."""
        requested = [{"person_key": {"S": k}} for k in sorted(set(keys))]
        return {item["person_key"]["S"]: item for item in batch_get(self._client, self.table_name, requested)}

    def current_snapshot(self) -> CurrentSnapshot | None:
        """The pointer to the authoritative snapshot, or None when no snapshot was imported (or after a purge).

        Read with BatchGetItem, the only read the process function's role allows on this table.
        """
        item = self.get_many([CURRENT_SNAPSHOT_KEY]).get(CURRENT_SNAPSHOT_KEY)
        if item is None:
            return None
        return CurrentSnapshot(item["snapshot_id"]["S"], datetime.fromisoformat(item["as_of"]["S"]))

    def set_current_snapshot(self, snapshot: CurrentSnapshot) -> bool:
        """Make ``snapshot`` authoritative unless a newer one is; False when a newer snapshot is current."""
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key={"person_key": {"S": CURRENT_SNAPSHOT_KEY}},
                UpdateExpression="SET snapshot_id = :id, as_of = :as_of, as_of_us = :us, updated_at = :now",
                ConditionExpression="attribute_not_exists(person_key) OR as_of_us < :us OR snapshot_id = :id",
                ExpressionAttributeValues={
                    ":id": {"S": snapshot.snapshot_id},
                    ":as_of": {"S": snapshot.as_of.astimezone(UTC).isoformat()},
                    ":us": {"N": str(_micros(snapshot.as_of))},
                    ":now": {"S": datetime.fromtimestamp(self._clock(), UTC).isoformat()},
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def put_many(self, records: Sequence[HealthCodeRecord]) -> int:
        """Write records with BatchWriteItem (25 a call, in parallel when an executor is given); the count.

        Within one call the newest ``updated_at`` per person wins; across calls the last write wins.
        """
        newest: dict[str, HealthCodeRecord] = {}
        for record in records:
            known = newest.get(record.person_key)
            if known is None or record.updated_at >= known.updated_at:
                newest[record.person_key] = record
        expires = int(self._clock()) + self._ttl_secs
        items = [{"PutRequest": {"Item": health_code_item(r, expires_at=expires)}} for r in newest.values()]
        self._write_all(items)
        return len(newest)

    def purge(self) -> int:
        """Delete every record of the table (one town per stack); the number deleted."""
        deleted = 0
        kwargs: dict[str, Any] = {"TableName": self.table_name, "ProjectionExpression": "person_key"}
        while True:
            page = self._client.scan(**kwargs)
            keys = [{"DeleteRequest": {"Key": {"person_key": item["person_key"]}}} for item in page.get("Items", [])]
            self._write_all(keys)
            deleted += len(keys)
            if "LastEvaluatedKey" not in page:
                return deleted
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _write_all(self, requests: Sequence[dict[str, Any]]) -> None:
        parts = list(chunks(requests, WRITE_ITEMS_PER_CALL))
        if self._executor is not None and len(parts) > 1:
            list(self._executor.map(self._write_part, parts))
        else:
            for part in parts:
                self._write_part(part)

    def _write_part(self, part: Sequence[dict[str, Any]]) -> None:
        batch_write(self._client, self.table_name, part)


class SnapshotStore:
    """Snapshot records (DynamoDB) and their upload files (S3, presigned PUT); clients injected."""

    def __init__(
        self,
        dynamodb: Any,
        s3: Any,
        *,
        table_name: str,
        bucket_name: str,
        url_expires_secs: int = 900,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._ddb = dynamodb
        self._s3 = s3
        self._table = table_name
        self.bucket_name = bucket_name
        self._url_expires_secs = url_expires_secs
        self._now = now

    @staticmethod
    def object_key(snapshot_id: str) -> str:
        return f"{SNAPSHOT_PREFIX}{snapshot_id}.ndjson"

    @staticmethod
    def snapshot_id_of(object_key: str) -> str | None:
        """The snapshot id of an uploaded object key (for the import function), or None."""
        name = object_key.removeprefix(SNAPSHOT_PREFIX).removesuffix(".ndjson")
        return name if object_key.startswith(SNAPSHOT_PREFIX) and _SNAPSHOT_ID_RE.fullmatch(name) else None

    def create(self, *, key_id: str) -> SnapshotCreated:
        """A new snapshot awaiting its upload, and the presigned PUT URL for it."""
        snapshot_id = uuid.uuid4().hex
        now = self._now()
        key = self.object_key(snapshot_id)
        self._ddb.put_item(
            TableName=self._table,
            Item={
                "snapshot_id": {"S": snapshot_id},
                "status": {"S": "awaiting_upload"},
                "created_at": {"S": now.isoformat()},
                "updated_at": {"S": now.isoformat()},
                "object_key": {"S": key},
                "key_id": {"S": key_id},
                "expires_at": {"N": str(int(now.timestamp()) + _SNAPSHOT_RECORD_TTL_SECS)},
            },
        )
        url = self._s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket_name, "Key": key},
            ExpiresIn=self._url_expires_secs,
            HttpMethod="PUT",
        )
        return SnapshotCreated(
            snapshot_id=snapshot_id,
            status="awaiting_upload",
            upload_url=url,
            expires_at=now + timedelta(seconds=self._url_expires_secs),
        )

    def get(self, snapshot_id: str) -> SnapshotInfo | None:
        """The status and counts of a snapshot, or None."""
        if not _SNAPSHOT_ID_RE.fullmatch(snapshot_id):
            return None
        item = self._ddb.get_item(TableName=self._table, Key={"snapshot_id": {"S": snapshot_id}}).get("Item")
        if item is None:
            return None
        return SnapshotInfo(
            snapshot_id=snapshot_id,
            status=cast(SnapshotStatus, item["status"]["S"]),
            created_at=datetime.fromisoformat(item["created_at"]["S"]),
            updated_at=datetime.fromisoformat(item["updated_at"]["S"]),
            counts=SnapshotCounts(
                received=int(item.get("received", {}).get("N", 0)),
                imported=int(item.get("imported", {}).get("N", 0)),
                rejected=int(item.get("rejected", {}).get("N", 0)),
            ),
            error=item["error"]["S"] if "error" in item else None,
            errors=_REJECTIONS.validate_json(item["errors"]["S"]) if "errors" in item else [],
        )

    def mark_importing(self, snapshot_id: str) -> None:
        """The import function started on the uploaded file."""
        self._update(snapshot_id, "importing", {})

    def mark_done(
        self,
        snapshot_id: str,
        *,
        received: int,
        imported: int,
        rejected: int,
        errors: Sequence[LineRejection] = (),
    ) -> None:
        """The import finished: how many lines it read, wrote and rejected, and the first rejected lines."""
        values: dict[str, int | str] = {"received": received, "imported": imported, "rejected": rejected}
        if errors:  # a few kB at most (MAX_REPORTED_ERRORS small entries), far below DynamoDB's 400 KB item
            values["errors"] = _REJECTIONS.dump_json(list(errors[:MAX_REPORTED_ERRORS]), exclude_none=True).decode()
        self._update(snapshot_id, "imported", values)

    def mark_failed(self, snapshot_id: str, *, error: str) -> None:
        """The import gave up; ``error`` is a short reason without record values."""
        self._update(snapshot_id, "failed", {"error": error[:64]})

    def _update(self, snapshot_id: str, status: SnapshotStatus, values: Mapping[str, int | str]) -> None:
        names = {"#s": "status"}
        attrs: dict[str, Any] = {":s": {"S": status}, ":u": {"S": self._now().isoformat()}}
        sets = ["#s = :s", "updated_at = :u"]
        for n, (name, value) in enumerate(values.items()):
            names[f"#a{n}"] = name
            attrs[f":a{n}"] = {"N": str(value)} if isinstance(value, int) else {"S": value}
            sets.append(f"#a{n} = :a{n}")
        self._ddb.update_item(
            TableName=self._table,
            Key={"snapshot_id": {"S": snapshot_id}},
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression="attribute_exists(snapshot_id)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=attrs,
        )

    def purge_uploads(self) -> int:
        """Delete every uploaded snapshot file (they may hold raw ID numbers); the number deleted."""
        deleted = 0
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket_name, Prefix=SNAPSHOT_PREFIX):
            objects = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if objects:
                self._s3.delete_objects(Bucket=self.bucket_name, Delete={"Objects": objects, "Quiet": True})
                deleted += len(objects)
        return deleted


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
            applied = self._table.put_many(records) if records else 0
            self._metrics.count("health_code_applied", applied)
            self._metrics.count("health_code_rejected", rejected, reason=ErrorCode.PAYLOAD_INVALID)
            return json_response(200, HealthCodeDeltaResponse(applied=applied, rejected=rejected, errors=errors))

        return self._guard(run)

    def create_snapshot(self, path: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        """``POST /v1/health-codes/snapshots``: a snapshot id and a presigned PUT URL (201)."""

        def run() -> HttpResponse:
            verified = authenticate(self._verifier, "POST", path, headers, body, role="health_commission")
            if body.strip() not in (b"", b"{}"):
                raise RequestError("body must be empty or {}", code=ErrorCode.PAYLOAD_INVALID)
            return json_response(201, self._snapshots.create(key_id=verified.key.key_id))

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
