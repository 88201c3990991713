"""Pure parts of the snapshot import: S3 event keys, the bounded line reader, the authority rule."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from anfang.contracts.types import HealthCodeStatus
from anfang.health_codes.authority import CurrentHealthCodes
from anfang.health_codes.importer import SnapshotImportError, _Digest, _lines, s3_objects
from anfang.health_codes.table import (
    CURRENT_SNAPSHOT_KEY,
    CurrentSnapshot,
    HealthCodeRecord,
    health_code_item,
    snapshot_record_key,
)


class Body:
    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size = data, size

    def iter_chunks(self, chunk_size: int) -> Iterator[bytes]:
        for start in range(0, len(self.data), self.size):
            yield self.data[start : start + self.size]


def test_s3_keys_are_url_decoded() -> None:
    event = {"Records": [{"s3": {"bucket": {"name": "b"}, "object": {"key": "snapshots/a+b%2Bc.ndjson"}}}]}
    assert s3_objects(event) == [("b", "snapshots/a b+c.ndjson")]


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_lines_split_across_chunks_with_or_without_a_final_newline(size: int) -> None:
    assert list(_lines(Body(b'{"a":1}\r\n\n{"b":2}\n{"c":3}', size).iter_chunks(size), 100)) == [
        b'{"a":1}\r',
        b"",
        b'{"b":2}',
        b'{"c":3}',
    ]


@pytest.mark.parametrize("size", [1, 64, 10_000])
def test_a_line_longer_than_the_bound_is_a_corrupt_file_with_its_line_number(size: int) -> None:
    with pytest.raises(SnapshotImportError, match="line 3 is longer than 16 bytes") as info:
        list(_lines(Body(b"{}\n{}\n" + b"x" * 40 + b"\n{}\n", size).iter_chunks(size), 16))
    assert info.value.code == "snapshot_corrupt"


@pytest.mark.parametrize("size", [1, 5, 1000])
def test_the_digest_is_of_every_byte_read_and_never_more_than_declared_is_read(size: int) -> None:
    data = b'{"a":1}\n{"b":2}\n'
    digest = _Digest(Body(data, size), len(data))
    assert b"".join(digest.chunks()) == data
    assert (digest.size, digest.sha256.hexdigest()) == (len(data), hashlib.sha256(data).hexdigest())
    # a body longer than declared (whatever its Content-Length said) stops being read at the first extra chunk
    closed: list[bool] = []
    body = Body(data + b"x" * 5000, size)
    body.close = lambda: closed.append(True)  # type: ignore[attr-defined]
    longer = _Digest(body, len(data))
    with pytest.raises(SnapshotImportError) as info:
        list(longer.chunks())
    assert info.value.code == "snapshot_size_mismatch" and closed == [True]
    assert longer.size <= len(data) + size


class FakeTable:
    """Items by key, as HealthCodeTable.get_many returns them."""

    def __init__(self, items: dict[str, dict[str, Any]]) -> None:
        self.items = items
        self.reads: list[list[str]] = []

    def current_snapshot(self) -> CurrentSnapshot | None:
        item = self.items.get(CURRENT_SNAPSHOT_KEY)
        return None if item is None else CurrentSnapshot(item["snapshot_id"], item["as_of"])

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        self.reads.append(list(keys))
        return {k: self.items[k] for k in keys if k in self.items}


T0 = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)


def _item(status: HealthCodeStatus, updated_at: dt.datetime) -> dict[str, Any]:
    # the item as the table stores it (the person key is the table key; the rule reads the rest)
    return health_code_item(HealthCodeRecord("p", status, updated_at, "delta:1"), expires_at=0)


def test_the_authority_rule() -> None:
    s = "a" * 32
    table = FakeTable(
        {
            CURRENT_SNAPSHOT_KEY: {"snapshot_id": s, "as_of": T0},
            snapshot_record_key("p1", s): _item("green", T0 - dt.timedelta(days=9)),  # vouched for as of T0
            "p1": _item("red", T0 - dt.timedelta(hours=1)),  # an older delta: superseded by the snapshot
            snapshot_record_key("p2", s): _item("green", T0 - dt.timedelta(days=9)),
            "p2": _item("yellow", T0 + dt.timedelta(hours=1)),  # a newer delta wins
            "p3": _item("red", T0 - dt.timedelta(hours=1)),  # absent from the snapshot, older delta: nothing
            "p4": _item("red", T0 + dt.timedelta(hours=2)),  # absent from the snapshot, newer delta
            snapshot_record_key("p5", "b" * 32): _item("red", T0),  # another snapshot's line: ignored
        }
    )
    clock = [0.0]
    codes = CurrentHealthCodes(table, pointer_cache_secs=60, clock=lambda: clock[0])  # type: ignore[arg-type]
    got = codes.batch_get(["p1", "p2", "p3", "p4", "p5"])
    assert {k: (v.status, v.updated_at) for k, v in got.items()} == {
        "p1": ("green", T0),
        "p2": ("yellow", T0 + dt.timedelta(hours=1)),
        "p4": ("red", T0 + dt.timedelta(hours=2)),
    }
    # the pointer is cached: the next batch reads person keys only
    codes.batch_get(["p1"])
    assert table.reads[-1] == ["p1", snapshot_record_key("p1", s)]
    # with no snapshot imported, every delta counts
    del table.items[CURRENT_SNAPSHOT_KEY]
    clock[0] = 61
    assert {k: v.status for k, v in codes.batch_get(["p1", "p3"]).items()} == {"p1": "red", "p3": "red"}
