"""The record archive (S3): one gzip NDJSON object per destination, hour and batch.

Layout: ``<destination>/dt=YYYY-MM-DD/hour=HH/<batch id>.ndjson.gz``, partitioned by each record's
``received_at`` in UTC (not by the time it was archived: a range of the archive is then a range of events,
whatever the queues' delays, and a retried batch writes the same object again). Each line is a record's body
exactly as it was published (release included), so it still verifies. The archive function writes through
:meth:`RecordArchive.put`, ``anfang replay`` reads through :meth:`RecordArchive.keys` and
:meth:`RecordArchive.read`. AWS calls: one ``PutObject`` per object; one ``ListObjectsV2`` per hour prefix (per
1,000 keys) and one ``GetObject`` per object read.

>>> archive_key("gov_cloud", dt.datetime(2026, 11, 29, 8, 3, tzinfo=dt.UTC), "b1")
'gov_cloud/dt=2026-11-29/hour=08/b1.ndjson.gz'
"""

from __future__ import annotations

import datetime as dt
import gzip
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["ArchiveError", "RecordArchive", "archive_key", "hour_prefixes", "parse_instant"]


class ArchiveError(Exception):
    """An archive object could not be written or read (names the key, never record contents)."""


def parse_instant(value: str) -> dt.datetime:
    """An RFC 3339 time (``Z`` or an offset) as an aware UTC datetime; ValueError if it is none or naive."""
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return moment.astimezone(dt.UTC)


def _hour_prefix(destination: str, moment: dt.datetime) -> str:
    moment = moment.astimezone(dt.UTC)
    return f"{destination}/dt={moment:%Y-%m-%d}/hour={moment:%H}/"


def archive_key(destination: str, moment: dt.datetime, batch_id: str) -> str:
    """The key of a batch's object of the hour ``moment`` falls in (UTC)."""
    return f"{_hour_prefix(destination, moment)}{batch_id}.ndjson.gz"


def hour_prefixes(destination: str, since: dt.datetime, until: dt.datetime) -> list[str]:
    """The hour partitions that can hold records received in [since, until)."""
    start = since.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    prefixes = []
    while start < until:
        prefixes.append(_hour_prefix(destination, start))
        start += dt.timedelta(hours=1)
    return prefixes


class RecordArchive:
    """The archive bucket (SSE-KMS by the bucket's default encryption: the stack's data key)."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    def put(self, key: str, bodies: Sequence[str]) -> None:
        """Write ``bodies`` as one gzip NDJSON object (one body per line; bodies are compact JSON)."""
        data = gzip.compress("".join(body.rstrip("\n") + "\n" for body in bodies).encode("utf-8"), mtime=0)
        self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType="application/x-ndjson",
            ContentEncoding="gzip",
        )

    def keys(self, prefix: str) -> Iterator[str]:
        """The object keys under ``prefix``, in key order."""
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                params["ContinuationToken"] = token
            answer = self.s3.list_objects_v2(**params)
            yield from (item["Key"] for item in answer.get("Contents", []))
            if not answer.get("IsTruncated"):
                return
            token = answer["NextContinuationToken"]

    def read(self, key: str) -> list[str]:
        """The lines (record bodies) of one object."""
        data = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        try:
            text = gzip.decompress(data).decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise ArchiveError(f"{key}: not gzip NDJSON ({type(exc).__name__})") from None
        return [line for line in text.splitlines() if line.strip()]
