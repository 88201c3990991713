"""Health-code snapshots: their records (DynamoDB) and upload files (S3, presigned PUT).

Snapshots table: partition key ``snapshot_id`` (S); ``status``, ``created_at``, ``updated_at``,
``object_key``, ``key_id``, ``size_bytes`` (N) and ``sha256`` (S, hex) as declared by the commission,
``object_etag`` (S, the ETag of the first object an import read), ``received``/``imported``/``rejected``
(N), ``error``, ``errors`` (S, JSON of the first rejected lines: number, code, reason, never a value), TTL
``expires_at``.
Snapshot files go to ``snapshots/<snapshot_id>.ndjson`` in the snapshot bucket through a presigned PUT
that signs ``Content-Length``, ``x-amz-checksum-sha256`` and ``If-None-Match: *`` (and ``Content-Type:
application/x-ndjson``): S3 stores only a body of the declared length and SHA-256, and only once. The
``healthcode_import`` function reads them (:mod:`anfang.health_codes.importer`), calls
:meth:`SnapshotStore.mark_importing` (which pins the object's ETag) / :meth:`SnapshotStore.mark_done` /
:meth:`SnapshotStore.mark_failed`. AWS calls: one ``PutItem`` and one
presign per snapshot created, one ``GetItem`` per status read, one ``UpdateItem`` per status change.

>>> store = SnapshotStore(dynamodb_client, s3_client, table_name="anfang-330106-snapshots", bucket_name=bucket)
>>> store.create(key_id="...", size_bytes=1234, sha256="9f86d0...").upload_headers["If-None-Match"]
'*'
"""

import base64
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast
from urllib.parse import parse_qs, urlsplit

from pydantic import TypeAdapter

from anfang.contracts.healthcodes import (
    MAX_REPORTED_ERRORS,
    SNAPSHOT_CONTENT_TYPE,
    LineRejection,
    SnapshotCounts,
    SnapshotCreated,
    SnapshotInfo,
    SnapshotStatus,
)

__all__ = ["SNAPSHOT_PREFIX", "SnapshotPinnedError", "SnapshotStore", "UnboundUploadUrlError", "upload_headers"]

SNAPSHOT_PREFIX: Final = "snapshots/"
_SNAPSHOT_ID_RE: Final = re.compile(r"[0-9a-f]{32}")
_REJECTIONS: Final = TypeAdapter(list[LineRejection])
_SNAPSHOT_RECORD_TTL_SECS: Final = 90 * 86_400
#: What the presigned PUT must sign (lowercase, as in ``X-Amz-SignedHeaders``).
_BOUND_HEADERS: Final = frozenset({"content-length", "content-type", "x-amz-checksum-sha256", "if-none-match"})


class UnboundUploadUrlError(RuntimeError):
    """The S3 client presigned a URL that does not sign the content binding (e.g. SigV2): never handed out."""

    code: Final = "upload_url_unbound"


class SnapshotPinnedError(Exception):
    """The snapshot's import is pinned to another object (or it is past ``importing``): a second upload."""

    code: Final = "snapshot_replaced"


def upload_headers(size_bytes: int, sha256_hex: str) -> dict[str, str]:
    """The headers a presigned snapshot PUT must carry: each of them is signed into the URL."""
    return {
        "Content-Type": SNAPSHOT_CONTENT_TYPE,
        "Content-Length": str(size_bytes),
        "x-amz-checksum-sha256": base64.b64encode(bytes.fromhex(sha256_hex)).decode(),
        "If-None-Match": "*",
    }


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

    def create(self, *, key_id: str, size_bytes: int, sha256: str) -> SnapshotCreated:
        """A new snapshot awaiting its upload of exactly ``size_bytes`` bytes hashing to ``sha256`` (hex), and
        the presigned PUT URL bound to them (length, checksum and "create only" are signed headers)."""
        snapshot_id = uuid.uuid4().hex
        now = self._now()
        key = self.object_key(snapshot_id)
        headers = upload_headers(size_bytes, sha256)
        url = self._s3.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self.bucket_name,
                "Key": key,
                "ContentLength": size_bytes,
                "ContentType": SNAPSHOT_CONTENT_TYPE,
                "ChecksumSHA256": headers["x-amz-checksum-sha256"],
                "IfNoneMatch": headers["If-None-Match"],
            },
            ExpiresIn=self._url_expires_secs,
            HttpMethod="PUT",
        )
        signed = parse_qs(urlsplit(url).query).get("X-Amz-SignedHeaders", [""])[0].split(";")
        if not set(signed) >= _BOUND_HEADERS:
            raise UnboundUploadUrlError("the S3 client must presign with SigV4 (signature_version='s3v4')")
        self._ddb.put_item(
            TableName=self._table,
            Item={
                "snapshot_id": {"S": snapshot_id},
                "status": {"S": "awaiting_upload"},
                "created_at": {"S": now.isoformat()},
                "updated_at": {"S": now.isoformat()},
                "object_key": {"S": key},
                "key_id": {"S": key_id},
                "size_bytes": {"N": str(size_bytes)},
                "sha256": {"S": sha256},
                "expires_at": {"N": str(int(now.timestamp()) + _SNAPSHOT_RECORD_TTL_SECS)},
            },
        )
        return SnapshotCreated(
            snapshot_id=snapshot_id,
            status="awaiting_upload",
            size_bytes=size_bytes,
            sha256=sha256,
            upload_url=url,
            upload_headers=headers,
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
            size_bytes=int(item["size_bytes"]["N"]) if "size_bytes" in item else None,
            sha256=item["sha256"]["S"] if "sha256" in item else None,
            error=item["error"]["S"] if "error" in item else None,
            errors=_REJECTIONS.validate_json(item["errors"]["S"]) if "errors" in item else [],
        )

    def mark_importing(self, snapshot_id: str, *, etag: str) -> None:
        """The import function started on the uploaded object ``etag``, and pins the snapshot to it.

        Allowed from ``awaiting_upload`` (the first import), or to resume an interrupted import of the same
        object (``importing``, or ``failed`` with ``retry_later``). Anything else is a second object for the
        snapshot id (a re-upload, another version) or a finished snapshot: :class:`SnapshotPinnedError`.
        """
        try:
            self._update(
                snapshot_id,
                "importing",
                {"object_etag": etag},
                condition="#s = :awaiting OR ((attribute_not_exists(object_etag) OR object_etag = :etag)"
                " AND (#s = :importing OR (#s = :failed AND begins_with(#e, :retry))))",
                condition_values={
                    ":awaiting": {"S": "awaiting_upload"},
                    ":importing": {"S": "importing"},
                    ":failed": {"S": "failed"},
                    ":etag": {"S": etag},
                    ":retry": {"S": "retry_later"},
                },
                condition_names={"#e": "error"},
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            raise SnapshotPinnedError("another object was imported for this snapshot, or it is finished") from None

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

    def _update(
        self,
        snapshot_id: str,
        status: SnapshotStatus,
        values: Mapping[str, int | str],
        *,
        condition: str | None = None,
        condition_values: Mapping[str, Any] | None = None,
        condition_names: Mapping[str, str] | None = None,
    ) -> None:
        names = {"#s": "status", **(condition_names or {})}
        attrs: dict[str, Any] = {":s": {"S": status}, ":u": {"S": self._now().isoformat()}, **(condition_values or {})}
        sets = ["#s = :s", "updated_at = :u"]
        for n, (name, value) in enumerate(values.items()):
            names[f"#a{n}"] = name
            attrs[f":a{n}"] = {"N": str(value)} if isinstance(value, int) else {"S": value}
            sets.append(f"#a{n} = :a{n}")
        self._ddb.update_item(
            TableName=self._table,
            Key={"snapshot_id": {"S": snapshot_id}},
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression="attribute_exists(snapshot_id)" + (f" AND ({condition})" if condition else ""),
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
