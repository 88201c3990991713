"""Import a health-code snapshot: an uploaded NDJSON file → the health-code table → the authoritative snapshot.

The S3 ObjectCreated event of ``snapshots/<snapshot_id>.ndjson`` starts it. The file is streamed in
chunks (never whole in memory); each line is a :class:`~anfang.contracts.healthcodes.HealthCodeDelta`,
validated on its own: an invalid line is counted and reported by line number and code, never by value,
and never fails the import. Raw ID numbers become person keys at once. Lines are written under
``<person_key>#<snapshot_id>`` (BatchWriteItem, 25 a call, unprocessed items retried) so the snapshot that
is authoritative now is never overwritten; a person listed twice keeps the newer line (``updated_at``, then
the more severe status), wherever the lines are in the file; when every line is in, the snapshot becomes the current one
(see the authority rule in :mod:`anfang.health_codes.table`).

- Bound to its content: the file must be exactly the ``size_bytes`` and ``sha256`` the commission declared
  when it created the snapshot. The importer hashes what it streams (it never trusts a checksum S3 stored)
  and compares both *before* the snapshot becomes the current one; a mismatch fails the snapshot with
  ``snapshot_size_mismatch`` / ``snapshot_digest_mismatch`` and nothing of it counts (its lines are keyed by
  the snapshot id and only the current snapshot's lines count).
- One object per snapshot: the first import pins the object's ETag on the snapshot record
  (:meth:`SnapshotStore.mark_importing`); an event for another object under the same key, or for a snapshot
  already imported or failed for good, is refused (``snapshot_replaced``) and leaves the record as it was.
- Idempotent: an S3 redelivery of an imported snapshot is skipped; a re-run of an unfinished one (same
  object) rewrites the same items and *sets* the counts, so nothing is counted twice.
- A file that is too large, is not NDJSON (a line longer than any record can be) or has no valid line
  fails the snapshot with a clear error (``SnapshotStore.mark_failed``); the previous snapshot stays
  authoritative. So does a snapshot created before the current one (it would roll codes back).
- An AWS error raises after recording the reason, so Lambda retries the invocation (then its on-failure
  destination).

>>> importer = SnapshotImporter(s3_client, table, snapshots, pepper=pepper, bucket_name="anfang-...-snapshots")
>>> importer.import_object("anfang-...-snapshots", "snapshots/0f3c....ndjson").outcome
'imported'
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast
from urllib.parse import unquote_plus

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from anfang.contracts.healthcodes import MAX_REPORTED_ERRORS, HealthCodeDelta, LineRejection
from anfang.contracts.limits import MAX_SNAPSHOT_BYTES
from anfang.contracts.problems import ErrorCode
from anfang.health_codes.keys import person_key
from anfang.health_codes.snapshots import SnapshotPinnedError, SnapshotStore
from anfang.health_codes.table import CurrentSnapshot, HealthCodeRecord, HealthCodeTable, snapshot_record_key

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_MAX_SNAPSHOT_BYTES",
    "ImportResult",
    "LineRejection",
    "SnapshotImportError",
    "SnapshotImporter",
    "s3_objects",
]

_log = logging.getLogger(__name__)

DEFAULT_MAX_SNAPSHOT_BYTES: Final = MAX_SNAPSHOT_BYTES
#: A valid line is under 200 bytes; a line this long means the file is not the NDJSON we expect.
DEFAULT_MAX_LINE_BYTES: Final = 4096
_CHUNK_BYTES: Final = 256 * 1024
_WRITE_RECORDS: Final = 2500  # records written at a time (25 BatchGetItem + 100 BatchWriteItem calls)

Outcome = Literal["imported", "skipped", "failed"]


class SnapshotImportError(Exception):
    """The snapshot cannot become authoritative; ``code`` is stable, the message has no record values."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ImportResult:
    """What one import did; counts are those stored on the snapshot record."""

    snapshot_id: str | None
    outcome: Outcome
    received: int = 0
    imported: int = 0
    rejected: int = 0
    rejections: list[LineRejection] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    error: str | None = None


def s3_objects(event: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(bucket, key) of each record of an S3 event notification; keys arrive URL-encoded (``+`` for space)."""
    out = []
    for record in event.get("Records", []):
        s3 = record.get("s3", {})
        out.append((str(s3["bucket"]["name"]), unquote_plus(str(s3["object"]["key"]))))
    return out


class _Digest:
    """SHA-256 and length of a streaming body, taken as it is read; never more than ``max_bytes`` are read."""

    def __init__(self, body: Any, max_bytes: int) -> None:
        self._body = body
        self._max = max_bytes
        self.size = 0
        self.sha256 = hashlib.sha256()

    def chunks(self) -> Iterator[bytes]:
        for chunk in self._body.iter_chunks(_CHUNK_BYTES):
            self.size += len(chunk)
            if self.size > self._max:  # longer than declared: stop reading, whatever S3 said its length was
                self._body.close()
                raise SnapshotImportError("snapshot_size_mismatch", f"more than the declared {self._max} bytes")
            self.sha256.update(chunk)
            yield chunk


def _lines(chunks: Iterator[bytes], max_line_bytes: int) -> Iterator[bytes]:
    """The lines of a streaming body, like ``StreamingBody.iter_lines`` but with a bound on a line's length.

    ``iter_lines`` buffers until it sees a newline, so a file without newlines would be read into memory.
    """
    pending = b""
    line_number = 0
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            line_number += 1
            if len(line) > max_line_bytes:
                raise SnapshotImportError(
                    "snapshot_corrupt", f"line {line_number} is longer than {max_line_bytes} bytes"
                )
            yield line
        if len(pending) > max_line_bytes:
            raise SnapshotImportError(
                "snapshot_corrupt", f"line {line_number + 1} is longer than {max_line_bytes} bytes"
            )
    if pending:
        yield pending


def _rejection(line: int, exc: ValidationError) -> LineRejection:
    first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    kind = str(first["type"])
    code = ErrorCode.MALFORMED_JSON if kind.startswith("json_") else ErrorCode.PAYLOAD_INVALID
    path = ".".join(str(part) for part in first["loc"]) or None
    return LineRejection(line=line, code=code, detail=kind[:64], field=path[:64] if path else None)


class SnapshotImporter:
    """Imports uploaded snapshot files; the S3 client, table and snapshot store are injected."""

    def __init__(
        self,
        s3: Any,
        table: HealthCodeTable,
        snapshots: SnapshotStore,
        *,
        pepper: bytes,
        bucket_name: str,
        max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        self._s3 = s3
        self._table = table
        self._snapshots = snapshots
        self._pepper = pepper
        self.bucket_name = bucket_name
        self._max_bytes = max_snapshot_bytes
        self._max_line = max_line_bytes

    def import_object(self, bucket: str, key: str) -> ImportResult:
        """Import one uploaded object; skips objects that are not a pending snapshot of this stack."""
        snapshot_id = SnapshotStore.snapshot_id_of(key)
        if bucket != self.bucket_name or snapshot_id is None:
            _log.warning("not a snapshot upload; ignored")
            return ImportResult(None, "skipped", error="not a snapshot upload")
        info = self._snapshots.get(snapshot_id)
        if info is None:
            _log.warning("unknown snapshot; ignored", extra={"snapshot_id": snapshot_id})
            return ImportResult(snapshot_id, "skipped", error="unknown snapshot")
        if info.status == "imported":  # an S3 redelivery: counted once already
            _log.info("snapshot imported already; skipped", extra={"snapshot_id": snapshot_id})
            counts = info.counts
            return ImportResult(snapshot_id, "skipped", counts.received, counts.imported, counts.rejected)
        snapshot = CurrentSnapshot(snapshot_id, info.created_at)
        try:
            if info.size_bytes is None or info.sha256 is None:
                raise SnapshotImportError("snapshot_unbound", "created without a declared size and sha256")
            current = self._table.current_snapshot()
            if current is not None and current.snapshot_id != snapshot_id and current.as_of >= snapshot.as_of:
                raise SnapshotImportError("snapshot_superseded", "a newer snapshot is authoritative")
            result = self._import(bucket, key, snapshot_id, size_bytes=info.size_bytes, sha256=info.sha256)
            if result.imported == 0:
                raise SnapshotImportError("snapshot_empty", "no valid line")
            if not self._table.set_current_snapshot(snapshot):
                raise SnapshotImportError("snapshot_superseded", "a newer snapshot is authoritative")
        except SnapshotPinnedError as exc:
            # a second object for this snapshot id: the record stays what the first object made it
            _log.error("snapshot object refused", extra={"snapshot_id": snapshot_id, "code": exc.code})
            return ImportResult(snapshot_id, "skipped", error=f"{exc.code}: {exc}")
        except SnapshotImportError as exc:
            _log.error("snapshot failed", extra={"snapshot_id": snapshot_id, "code": exc.code, "error": str(exc)})
            self._snapshots.mark_failed(snapshot_id, error=f"{exc.code}: {exc}")
            return ImportResult(snapshot_id, "failed", error=f"{exc.code}: {exc}")
        except (ClientError, BotoCoreError, RuntimeError) as exc:
            # Worth a retry (throttling, a broken stream): record why, then let Lambda invoke again.
            _log.warning("snapshot import interrupted", extra={"snapshot_id": snapshot_id, "error": type(exc).__name__})
            self._snapshots.mark_failed(snapshot_id, error=f"retry_later: {type(exc).__name__}")
            raise
        self._snapshots.mark_done(
            snapshot_id,
            received=result.received,
            imported=result.imported,
            rejected=result.rejected,
            errors=result.rejections,
        )
        _log.info(
            "snapshot imported",
            extra={
                "snapshot_id": snapshot_id,
                "received": result.received,
                "imported": result.imported,
                "rejected": result.rejected,
                "reasons": dict(result.reasons),
            },
        )
        return result

    def _import(self, bucket: str, key: str, snapshot_id: str, *, size_bytes: int, sha256: str) -> ImportResult:
        """Stream, validate and write the lines of one object; its size and SHA-256 must be those declared."""
        obj = self._s3.get_object(Bucket=bucket, Key=key)
        try:
            self._snapshots.mark_importing(snapshot_id, etag=str(obj["ETag"]))  # pins this object, or refuses it
        except SnapshotPinnedError:
            obj["Body"].close()
            raise
        size = int(obj.get("ContentLength", 0))
        if size > self._max_bytes:
            obj["Body"].close()
            raise SnapshotImportError("snapshot_too_large", f"{size} bytes, more than {self._max_bytes}")
        if size != size_bytes:
            obj["Body"].close()
            raise SnapshotImportError("snapshot_size_mismatch", f"{size} bytes, declared {size_bytes}")
        digest = _Digest(obj["Body"], size_bytes)
        result = ImportResult(snapshot_id, "imported")
        source = f"snapshot:{snapshot_id}"
        pending: list[HealthCodeRecord] = []
        for line_number, raw in enumerate(_lines(digest.chunks(), self._max_line), start=1):
            if not raw.strip():
                continue  # blank lines (a trailing newline, CRLF files) are not records
            result.received += 1
            try:
                delta = HealthCodeDelta.model_validate_json(raw)
            except ValidationError as exc:
                rejection = _rejection(line_number, exc)
                result.rejected += 1
                result.reasons[rejection.detail] += 1
                if len(result.rejections) < MAX_REPORTED_ERRORS:
                    result.rejections.append(rejection)
                    _log.info(
                        "line rejected",
                        extra={
                            "line": rejection.line,
                            "code": rejection.code,
                            "reason": rejection.detail,
                            "field": rejection.field,
                        },
                    )
                continue
            # the raw ID number goes no further than this line
            pk = delta.person_key or person_key(self._pepper, cast(str, delta.id_number))
            pending.append(
                HealthCodeRecord(snapshot_record_key(pk, snapshot_id), delta.status, delta.updated_at, source)
            )
            result.imported += 1
            if len(pending) >= _WRITE_RECORDS:
                self._table.put_single_writer(pending)
                pending = []
        if pending:
            self._table.put_single_writer(pending)
        # Lines written so far are keyed by this snapshot and count only once it is current: check first.
        if digest.size != size_bytes:
            raise SnapshotImportError("snapshot_size_mismatch", f"{digest.size} bytes read, declared {size_bytes}")
        if digest.sha256.hexdigest() != sha256:
            raise SnapshotImportError("snapshot_digest_mismatch", "the file's SHA-256 is not the declared one")
        return result
