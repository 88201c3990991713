"""Health codes on moto: snapshot import (real NDJSON objects, real tables), the authority rule, and the
process function enriching with the real adapters (device registry, health-code table).

The import is driven like S3 drives it: an ObjectCreated event with a URL-encoded key, handed to the
function's ``handle`` with the importer its cold start builds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import pytest
from botocore.exceptions import ClientError

from anfang.aws.environment import SettingsError
from anfang.aws.registry import DeviceRegistry, Site
from anfang.contracts import find_resident_ids, resident_id_check_char
from anfang.health_codes.authority import CurrentHealthCodes
from anfang.health_codes.importer import SnapshotImporter
from anfang.health_codes.keys import person_key as keyed
from anfang.health_codes.snapshots import SnapshotStore
from anfang.health_codes.table import CURRENT_SNAPSHOT_KEY, HealthCodeRecord, HealthCodeTable
from anfang.health_codes.wiring import build_importer
from anfang.pipeline.process import Incoming, Processor
from anfang.pipeline.process_wiring import build_processor, lookups
from tests.pipeline_events import DEVICE_ID, example_queued, planted_event, queued, sample_planted
from tests.pipeline_stack import PEPPER, Stack, count_calls, drain, drive, load_handler

import_handler = load_handler("healthcode_import")
process_handler = load_handler("process")


@dataclass
class HealthCodes:
    stack: Stack
    importer: SnapshotImporter
    table: HealthCodeTable
    snapshots: SnapshotStore

    def settings(self, **env: str) -> Any:
        return import_handler.Settings.model_validate({**self.stack.env, **env})

    @property
    def bucket(self) -> str:
        return self.stack.env["HEALTH_CODE_SNAPSHOT_BUCKET_NAME"]

    def upload(self, body: bytes, *, store: SnapshotStore | None = None, declared: bytes | None = None) -> str:
        """A snapshot created through the store (as the API does) for ``declared`` (default: ``body``), and
        ``body`` PUT to S3 (moto checks no checksum: a body other than the declared one is stored as sent)."""
        meant = body if declared is None else declared
        created = (store or self.snapshots).create(
            key_id="commission-key", size_bytes=len(meant), sha256=hashlib.sha256(meant).hexdigest()
        )
        self.put(created.snapshot_id, body)
        return created.snapshot_id

    def put(self, snapshot_id: str, body: bytes) -> str:
        """Store ``body`` as the snapshot's file, as whoever holds the bucket's write access; its ETag."""
        key = SnapshotStore.object_key(snapshot_id)
        return str(self.stack.client("s3").put_object(Bucket=self.bucket, Key=key, Body=body)["ETag"])

    def run(self, snapshot_id: str, importer: SnapshotImporter | None = None) -> dict[str, Any]:
        """Deliver the S3 ObjectCreated event of a snapshot's file to the function."""
        event = s3_event(self.bucket, SnapshotStore.object_key(snapshot_id))
        return dict(import_handler.handle(event, importer or self.importer))

    def current(self) -> CurrentHealthCodes:
        return CurrentHealthCodes(self.table, pointer_cache_secs=0)


def snapshot_store(stack: Stack, **kwargs: Any) -> SnapshotStore:
    """The snapshot records and bucket of the stack, as the API's snapshot endpoints use them."""
    return SnapshotStore(
        stack.client("dynamodb"),
        stack.client("s3"),
        table_name=stack.env["HEALTH_CODE_SNAPSHOTS_TABLE_NAME"],
        bucket_name=stack.env["HEALTH_CODE_SNAPSHOT_BUCKET_NAME"],
        **kwargs,
    )


@pytest.fixture
def hc(stack: Stack) -> HealthCodes:
    settings = import_handler.Settings.model_validate(stack.env)
    importer = build_importer(settings, session=stack.session)
    table = HealthCodeTable(stack.client("dynamodb"), stack.env["HEALTH_CODES_TABLE_NAME"])
    return HealthCodes(stack, importer, table, snapshot_store(stack))


def s3_event(bucket: str, key: str) -> dict[str, Any]:
    """An S3 ObjectCreated notification; S3 URL-encodes the key (``+`` for a space)."""
    return {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key), "size": 0}},
            }
        ]
    }


def resident_id(n: int) -> str:
    """The n-th synthetic, checksum-valid resident ID number (distinct for n < 20,000,000)."""
    born = dt.date(1940, 1, 1) + dt.timedelta(days=n // 1000)
    first17 = f"330106{born:%Y%m%d}{n % 1000:03d}"
    return first17 + resident_id_check_char(first17)


def line(**fields: Any) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def pk(id_number: str) -> str:
    return keyed(PEPPER, id_number)


def at(hours_ago: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours_ago)).isoformat()


def ndjson(codes: Iterable[tuple[str, str, str]]) -> bytes:
    """Snapshot lines with raw ID numbers: (id_number, status, updated_at)."""
    return b"".join(line(id_number=i, status=s, updated_at=u) for i, s, u in codes)


def scan(ddb: Any, table: str, **kwargs: Any) -> tuple[list[dict[str, Any]], int]:
    """Every page of a Scan: the items and the count."""
    items: list[dict[str, Any]] = []
    count = 0
    kwargs["TableName"] = table
    while True:
        page = ddb.scan(**kwargs)
        items.extend(page.get("Items", []))
        count += page["Count"]
        if "LastEvaluatedKey" not in page:
            return items, count
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# ------------------------------------------------------------------------------------------------ the import


def _big_snapshot(total: int, raw_ids: int) -> tuple[bytes, dict[int, str], list[str]]:
    """``total`` lines: ``raw_ids`` with ID numbers, the rest with person keys, and 5 kinds of bad line."""
    bad: dict[int, str] = {}
    raws: list[str] = []
    chunks: list[bytes] = []
    updated = at(2)
    for n in range(total):
        number = n + 1
        status = ("green", "yellow", "red")[n % 3]
        kind = n % 500  # a bad line every 100 lines, five kinds in turn
        if kind == 7:
            first17 = resident_id(n)[:17]
            wrong = "0" if resident_id_check_char(first17) != "0" else "1"
            chunks.append(line(id_number=first17 + wrong, status=status, updated_at=updated))
            bad[number] = "id_number"
        elif kind == 107:
            chunks.append(line(person_key=pk(resident_id(n)), status="purple", updated_at=updated))
            bad[number] = "status"
        elif kind == 207:
            chunks.append(b'{"person_key": "' + pk(resident_id(n)).encode() + b'", "status": "gre\n')
            bad[number] = "json"
        elif kind == 307:
            chunks.append(
                line(id_number=resident_id(n), person_key=pk(resident_id(n)), status=status, updated_at=updated)
            )
            raws.append(resident_id(n))
            bad[number] = "both"
        elif kind == 407:
            chunks.append(line(status=status, updated_at=updated))
            bad[number] = "neither"
        elif n < raw_ids:
            raws.append(resident_id(n))
            chunks.append(line(id_number=resident_id(n), status=status, updated_at=updated))
        else:
            chunks.append(line(person_key=pk(resident_id(n)), status=status, updated_at=updated))
    return b"".join(chunks), bad, raws


def test_a_snapshot_of_100000_lines_is_imported_with_exact_counts_and_no_raw_id(
    hc: HealthCodes, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a 100,000-line snapshot: 10,000 lines with raw ID numbers, the rest with person keys, and 1,000
    # invalid lines (bad ID checksum, bad status, broken JSON, both identities, neither)
    total = 100_000
    body, bad, raw_ids = _big_snapshot(total, raw_ids=10_000)
    assert len(bad) == 1000
    snapshot_id = hc.upload(body)
    caplog.set_level(logging.INFO, logger="anfang")
    # WHEN S3 announces the upload
    started = time.perf_counter()
    summary = hc.run(snapshot_id)
    elapsed = time.perf_counter() - started
    print(f"\n100,000-line snapshot imported in {elapsed:.1f} s")  # noqa: T201 - the figure docs/pipeline.md quotes
    # THEN the counts are exact, on the function's answer and on the snapshot record
    assert summary["snapshots"] == [
        {
            "snapshot_id": snapshot_id,
            "outcome": "imported",
            "received": total,
            "imported": total - 1000,
            "rejected": 1000,
            "error": None,
        }
    ]
    info = hc.snapshots.get(snapshot_id)
    assert info is not None and info.status == "imported"
    assert (info.counts.received, info.counts.imported, info.counts.rejected) == (total, total - 1000, 1000)
    # ... the first rejections are reported by line number and code, never with their values
    reported = [r for r in caplog.records if r.getMessage() == "line rejected"]
    assert [r.__dict__["line"] for r in reported] == sorted(bad)[:100]
    assert {r.__dict__["code"] for r in reported} == {"payload_invalid", "malformed_json"}
    assert find_resident_ids(caplog.text) == [] and "purple" not in caplog.text
    # ... and on the snapshot record the partner reads (GET /v1/health-codes/snapshots/{id})
    assert [e.line for e in info.errors] == sorted(bad)[:100]
    assert {e.code for e in info.errors} == {"payload_invalid", "malformed_json"}
    assert find_resident_ids(info.model_dump_json()) == [] and "purple" not in info.model_dump_json()
    # ... one item per valid line plus the current-snapshot pointer; a page of the table holds person keys
    # only (moto serialises scanned items slowly: the full scan for raw IDs is the next test's, on 3,000 lines)
    ddb = hc.stack.client("dynamodb")
    assert ddb.describe_table(TableName=hc.table.table_name)["Table"]["ItemCount"] == total - 1000 + 1
    page = ddb.scan(TableName=hc.table.table_name, Limit=2000)["Items"]
    key_re = re.compile(rf"[0-9a-f]{{64}}#{snapshot_id}|{CURRENT_SNAPSHOT_KEY}")
    assert len(page) == 2000 and all(key_re.fullmatch(item["person_key"]["S"]) for item in page)
    assert find_resident_ids(json.dumps(page)) == []
    # ... the snapshot is the authoritative one, and its raw-ID lines are found by their person keys
    codes = hc.current().batch_get([pk(resident_id(0)), pk(resident_id(20_000)), pk(resident_id(7))])
    assert codes[pk(resident_id(0))].status == "green" and codes[pk(resident_id(20_000))].status == "red"
    assert pk(resident_id(7)) not in codes  # its line had a bad checksum
    assert elapsed < 90, f"the import took {elapsed:.1f} s"


def test_raw_id_numbers_never_reach_the_table(hc: HealthCodes, caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a snapshot of 3,000 lines with raw ID numbers (lower-case check characters among them), 3 bad ones
    ids = [resident_id(n) for n in range(3000)]
    assert any(i.endswith("X") for i in ids)
    bad = line(id_number=ids[0], status="red", updated_at=at(1), name="王伟") + b"[1,2]\n" + line(id_number=ids[1])
    snapshot_id = hc.upload(ndjson((i.lower(), "yellow", at(1)) for i in ids) + bad)
    caplog.set_level(logging.DEBUG)
    # WHEN it is imported
    out = hc.run(snapshot_id)["snapshots"][0]
    assert (out["received"], out["imported"], out["rejected"]) == (3003, 3000, 3)
    # THEN a full scan of the table finds person keys only: no ID number in any attribute, in any form
    items, _ = scan(hc.stack.client("dynamodb"), hc.table.table_name)
    assert len(items) == 3001
    dump = json.dumps(items, ensure_ascii=False)
    assert find_resident_ids(dump.upper()) == [] and "王伟" not in dump
    fields = {"person_key", "status", "updated_at", "source_version", "order_key", "expires_at"}
    assert all(set(i) == fields for i in items if i["person_key"]["S"] != CURRENT_SNAPSHOT_KEY)
    # ... nor in the logs
    assert find_resident_ids(caplog.text.upper()) == [] and "王伟" not in caplog.text
    # ... and each person is found by the key the process function computes from the ID number
    codes = hc.current().batch_get([pk(i) for i in ids[:10]])
    assert len(codes) == 10 and {c.status for c in codes.values()} == {"yellow"}


def test_an_s3_redelivery_does_not_count_twice(hc: HealthCodes) -> None:
    # GIVEN an imported snapshot of 30 lines, 2 of them invalid
    lines = [(resident_id(n), "green", at(1)) for n in range(28)]
    snapshot_id = hc.upload(ndjson(lines) + b"not json\n" + line(id_number=resident_id(99), status="blue"))
    first = hc.run(snapshot_id)["snapshots"][0]
    assert (first["outcome"], first["received"], first["imported"], first["rejected"]) == ("imported", 30, 28, 2)
    # WHEN S3 delivers the same event again
    again = hc.run(snapshot_id)["snapshots"][0]
    # THEN it is skipped and the counts stay as they were
    assert (again["outcome"], again["received"], again["imported"], again["rejected"]) == ("skipped", 30, 28, 2)
    info = hc.snapshots.get(snapshot_id)
    assert info is not None and (info.counts.received, info.counts.imported, info.counts.rejected) == (30, 28, 2)
    # ... and an import that crashed half way (still "importing") runs again and *sets* the counts
    hc.stack.client("dynamodb").update_item(  # as a crash after mark_importing leaves it: same object pinned
        TableName=hc.stack.env["HEALTH_CODE_SNAPSHOTS_TABLE_NAME"],
        Key={"snapshot_id": {"S": snapshot_id}},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "importing"}},
    )
    rerun = hc.run(snapshot_id)["snapshots"][0]
    assert (rerun["outcome"], rerun["received"], rerun["imported"]) == ("imported", 30, 28)
    info = hc.snapshots.get(snapshot_id)
    assert info is not None and info.status == "imported" and info.counts.imported == 28
    assert len(scan(hc.stack.client("dynamodb"), hc.table.table_name)[0]) == 28 + 1


def test_other_objects_and_unknown_snapshots_are_ignored(hc: HealthCodes) -> None:
    s3 = hc.stack.client("s3")
    s3.put_object(Bucket=hc.bucket, Key="snapshots/readme 1.txt", Body=b"hello")
    s3.put_object(
        Bucket=hc.bucket, Key=SnapshotStore.object_key("0" * 32), Body=ndjson([(resident_id(1), "red", at(1))])
    )
    out = import_handler.handle(
        {
            "Records": [
                *s3_event(hc.bucket, "snapshots/readme 1.txt")["Records"],
                *s3_event(hc.bucket, "snapshots/" + "0" * 32 + ".ndjson")["Records"],
            ]
        },
        hc.importer,
    )
    assert [(s["outcome"], s["error"]) for s in out["snapshots"]] == [
        ("skipped", "not a snapshot upload"),
        ("skipped", "unknown snapshot"),
    ]
    assert scan(hc.stack.client("dynamodb"), hc.table.table_name)[0] == []


_BINARY = bytes(b for b in range(256) if b != ord("\n"))


def _authoritative(hc: HealthCodes) -> tuple[str, str, str]:
    """A first snapshot, imported: P green, Q yellow."""
    p, q = resident_id(1), resident_id(2)
    first = hc.upload(ndjson([(p, "green", at(5)), (q, "yellow", at(5))]))
    assert hc.run(first)["snapshots"][0]["outcome"] == "imported"
    return first, p, q


@pytest.mark.parametrize(
    ("body", "settings", "error"),
    [
        pytest.param(b"\x1f\x8b\x08\x00" + _BINARY * 40, {}, "snapshot_corrupt: line 1 is longer", id="binary"),
        pytest.param(bytes(range(256)) * 40, {}, "snapshot_empty", id="binary-with-newlines"),
        pytest.param(
            ndjson([(resident_id(1), "red", "2030-01-01T00:00:00+00:00")]) + b"x" * 5000 + b"\n",
            {},
            "snapshot_corrupt: line 2 is longer",
            id="corrupt-after-a-good-line",
        ),
        pytest.param(
            ndjson([(resident_id(n), "red", "2030-01-01T00:00:00+00:00") for n in range(1, 40)]),
            {"SNAPSHOT_MAX_BYTES": "1000"},
            "snapshot_too_large",
            id="oversized",
        ),
        pytest.param(b"{}\nnot json\n\n", {}, "snapshot_empty", id="no-valid-line"),
    ],
)
def test_a_corrupt_or_oversized_file_fails_and_the_previous_snapshot_stays_authoritative(
    hc: HealthCodes, body: bytes, settings: dict[str, str], error: str
) -> None:
    first, p, q = _authoritative(hc)
    importer = build_importer(hc.settings(**settings), session=hc.stack.session)
    # WHEN a bad file is uploaded for a newer snapshot (where it is readable, it says P is red)
    second = hc.upload(body)
    out = hc.run(second, importer)["snapshots"][0]
    # THEN that snapshot failed with a clear error, and never its content
    assert out["outcome"] == "failed" and out["error"].startswith(error)
    info = hc.snapshots.get(second)
    assert info is not None and info.status == "failed" and info.error is not None and info.error.startswith(error[:40])
    # ... and the previous snapshot still says what counts, its lines untouched by the failed import
    assert hc.table.current_snapshot() is not None and hc.table.current_snapshot().snapshot_id == first  # type: ignore[union-attr]
    codes = hc.current().batch_get([pk(p), pk(q)])
    assert {k: c.status for k, c in codes.items()} == {pk(p): "green", pk(q): "yellow"}


def test_the_snapshot_is_authoritative_over_older_records_and_newer_deltas_count(hc: HealthCodes) -> None:
    first, p, q = _authoritative(hc)
    r = resident_id(3)
    # GIVEN deltas pushed after the first snapshot: R green (only a delta), P red
    hc.table.put_many(
        [
            HealthCodeRecord(pk(r), "green", dt.datetime.now(dt.UTC), "delta:1"),
            HealthCodeRecord(pk(p), "red", dt.datetime.now(dt.UTC), "delta:1"),
        ]
    )
    codes = hc.current().batch_get([pk(p), pk(q), pk(r)])
    assert {k: c.status for k, c in codes.items()} == {pk(p): "red", pk(q): "yellow", pk(r): "green"}
    # WHEN a new snapshot lists only P (yellow): Q and R are absent from it
    second = hc.upload(ndjson([(p, "yellow", at(1))]))
    assert hc.run(second)["snapshots"][0]["outcome"] == "imported"
    # THEN Q's snapshot line and R's older delta stop counting; P is what the new snapshot says
    codes = hc.current().batch_get([pk(p), pk(q), pk(r)])
    assert {k: c.status for k, c in codes.items()} == {pk(p): "yellow"}
    # ... and a delta newer than the snapshot counts over it
    hc.table.put_many([HealthCodeRecord(pk(q), "red", dt.datetime.now(dt.UTC), "delta:2")])
    codes = hc.current().batch_get([pk(p), pk(q)])
    assert {k: c.status for k, c in codes.items()} == {pk(p): "yellow", pk(q): "red"}
    # ... while a snapshot created before the current one, imported late, cannot roll it back
    old_store = snapshot_store(hc.stack, now=lambda: dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    late = hc.upload(ndjson([(p, "green", at(30))]), store=old_store)
    out = hc.run(late)["snapshots"][0]
    assert out["outcome"] == "failed" and out["error"].startswith("snapshot_superseded")
    assert hc.table.current_snapshot() is not None and hc.table.current_snapshot().snapshot_id == second  # type: ignore[union-attr]


def test_lookups_split_into_batches_of_100_keys(hc: HealthCodes) -> None:
    ids = [resident_id(n) for n in range(180)]
    hc.run(hc.upload(ndjson([(i, "green", at(1)) for i in ids])))
    calls: list[int] = []
    hc.stack.session.events.register(
        "provide-client-params.dynamodb.BatchGetItem",
        lambda params, **_: calls.append(sum(len(t["Keys"]) for t in params["RequestItems"].values())),
    )
    table = HealthCodeTable(hc.stack.client("dynamodb"), hc.table.table_name)  # a client that sees the hook
    codes = CurrentHealthCodes(table).batch_get([pk(i) for i in ids])
    assert len(codes) == 180 and all(c.status == "green" for c in codes.values())
    assert calls[0] == 1 and calls[1:] == [100, 100, 100, 60]  # the pointer, then 2 keys a person


# ------------------------------------------------------------------------------------------------ process function


def _processor(stack: Stack, **env: str) -> Processor:
    settings = process_handler.Settings.model_validate({**stack.env, **env})
    sites, health_codes, person_key = lookups(settings, session=stack.session)
    return build_processor(
        settings, sites=sites, health_codes=health_codes, person_key=person_key, session=stack.session
    )


def _gov_records(stack: Stack, processor: Processor, events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Run events through the process queue; the gov_cloud records by the person's ID number."""
    sqs = stack.client("sqs")
    bodies = [queued(e).model_dump_json(by_alias=True) for e in events]
    sqs.send_message_batch(
        QueueUrl=stack.process_queue, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)]
    )
    drive(sqs, stack.process_queue, lambda event: process_handler.handle(event, processor))
    drain(sqs, stack.police_queue)
    records = [json.loads(m["Body"]) for m in drain(sqs, stack.gov_queue)]
    by_event = {r["event_id"]: r for r in records}
    return {_id_of(e): by_event[e["event_id"]] for e in events}


def _id_of(event: dict[str, Any]) -> str:
    return str(event["person"]["id_number"])


def _access(id_number: str) -> dict[str, Any]:
    """An access event of an identified person with that ID number."""
    return planted_event("access", sample_planted(id_number=id_number, canary="canary-healthcode"))


def test_the_process_function_enriches_by_the_authority_rule_and_purge_removes_every_code(hc: HealthCodes) -> None:
    stack = hc.stack
    DeviceRegistry(stack.client("dynamodb"), stack.env["DEVICES_TABLE_NAME"], town_code="330106").register_device(
        DEVICE_ID, Site(site_id="xihu-garden", site_type="residential_closed", name="Xihu Garden")
    )
    p, q, r, s = (resident_id(n) for n in (11, 12, 13, 14))
    # GIVEN a snapshot created 2 days ago (P green, set 10 days ago), imported and authoritative ...
    two_days_ago = snapshot_store(stack, now=lambda: dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    assert hc.run(hc.upload(ndjson([(p, "green", at(240))]), store=two_days_ago))["snapshots"][0]["imported"] == 1
    # ... a delta after it (Q red, 1 hour ago), one older than it (R yellow, 3 days ago), S unknown
    now = dt.datetime.now(dt.UTC)
    hc.table.put_many(
        [
            HealthCodeRecord(pk(q), "red", now - dt.timedelta(hours=1), "delta:1"),
            HealthCodeRecord(pk(r), "yellow", now - dt.timedelta(days=3), "delta:2"),
        ]
    )
    processor = _processor(stack)
    # WHEN access events of P, Q, R and S go through the process function
    gov = _gov_records(stack, processor, [_access(i) for i in (p, q, r, s)])
    # THEN gov_cloud sees P's snapshot code as of the snapshot (stale after 24 h), Q's fresh delta, nothing else
    assert gov[p]["health_code"]["status"] == "green" and gov[p]["health_code"]["stale"] is True
    assert dt.datetime.fromisoformat(gov[p]["health_code"]["as_of"]) > now - dt.timedelta(days=2, minutes=5)
    assert gov[q]["health_code"] == {
        "status": "red",
        "as_of": gov[q]["health_code"]["as_of"],
        "stale": False,
    } and dt.datetime.fromisoformat(gov[q]["health_code"]["as_of"]) == now - dt.timedelta(hours=1)
    assert "health_code" not in gov[r] and "health_code" not in gov[s]
    assert gov[p]["site"]["name"] == "Xihu Garden"  # site facts from the real registry
    # WHEN the commission purges everything (DELETE /v1/health-codes)
    assert hc.table.purge() == 1 + 2 + 1  # the snapshot line, two deltas, the pointer
    gov = _gov_records(stack, processor, [_access(i) for i in (p, q)])
    # THEN no record carries a health code
    assert all("health_code" not in record for record in gov.values())
    # ... and a delta pushed after the purge counts again, flagged stale once it is older than the threshold
    hc.table.put_many([HealthCodeRecord(pk(s), "yellow", now - dt.timedelta(hours=30), "delta:3")])
    gov = _gov_records(stack, processor, [_access(s)])
    assert gov[s]["health_code"]["status"] == "yellow" and gov[s]["health_code"]["stale"] is True
    gov = _gov_records(stack, _processor(stack, HEALTH_CODE_STALE_HOURS="48"), [_access(s)])
    assert gov[s]["health_code"]["stale"] is False
    # ... and with the feature switched off there is no lookup and no code
    gov = _gov_records(stack, _processor(stack, HEALTH_CODES_ENABLED="false"), [_access(s)])
    assert "health_code" not in gov[s]


def test_enrichment_with_the_real_adapters_stays_within_the_call_budget(hc: HealthCodes) -> None:
    stack = hc.stack
    DeviceRegistry(stack.client("dynamodb"), stack.env["DEVICES_TABLE_NAME"], town_code="330106").register_device(
        DEVICE_ID, Site(site_id="xihu-garden", site_type="residential_closed", name="Xihu Garden")
    )
    hc.run(hc.upload(ndjson([(resident_id(n), "green", at(1)) for n in range(50)])))
    calls: Counter[str] = Counter()
    count_calls(stack.session, calls)  # before the clients are made, so that they carry the hook
    settings = process_handler.Settings.model_validate(stack.env)
    sites, health_codes, person_key = lookups(settings, session=stack.session)
    processor = build_processor(
        settings, sites=sites, health_codes=health_codes, person_key=person_key, session=stack.session
    )
    messages = [
        Incoming(f"m{i}", queued(_access(resident_id(i))).model_dump_json(by_alias=True))
        if i < 50
        else Incoming(f"m{i}", example_queued("alarm").model_dump_json(by_alias=True))
        for i in range(100)
    ]
    calls.clear()
    result = processor.process(messages)
    assert result.failed_message_ids == []
    # the delivered table (1), the registry (1), the pointer (1, then cached), 50 persons x 2 keys (1)
    assert calls["dynamodb.BatchGetItem"] == 4
    assert sum(calls.values()) / 100 <= 0.3


def test_an_aws_error_is_recorded_and_raised_for_lambda_to_retry(hc: HealthCodes) -> None:
    # GIVEN an import whose health-code table cannot be written (here: the name is wrong)
    snapshot_id = hc.upload(ndjson([(resident_id(1), "green", at(1))]))
    broken = build_importer(hc.settings(HEALTH_CODES_TABLE_NAME="no-such-table"), session=hc.stack.session)
    # WHEN S3 delivers the event, the invocation fails (Lambda retries it) with the reason on the record
    with pytest.raises(ClientError):
        hc.run(snapshot_id, broken)
    info = hc.snapshots.get(snapshot_id)
    assert info is not None and info.status == "failed" and info.error == "retry_later: ResourceNotFoundException"
    # THEN the retry, once the table answers, imports the snapshot
    assert hc.run(snapshot_id)["snapshots"][0]["outcome"] == "imported"
    info = hc.snapshots.get(snapshot_id)
    assert info is not None and info.status == "imported" and info.counts.imported == 1


def test_the_lambda_entry_point_validates_its_environment_at_cold_start(
    hc: HealthCodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot_id = hc.upload(ndjson([(resident_id(1), "green", at(1))]))
    import_handler.importer.cache_clear()
    monkeypatch.delenv("HEALTH_CODE_SNAPSHOTS_TABLE_NAME", raising=False)
    with pytest.raises(SettingsError, match="HEALTH_CODE_SNAPSHOTS_TABLE_NAME"):
        import_handler.lambda_handler(s3_event(hc.bucket, SnapshotStore.object_key(snapshot_id)), LambdaContext())
    for name, value in hc.stack.env.items():
        monkeypatch.setenv(name, value)
    import_handler.importer.cache_clear()
    out = import_handler.lambda_handler(s3_event(hc.bucket, SnapshotStore.object_key(snapshot_id)), LambdaContext())
    import_handler.importer.cache_clear()
    assert out["snapshots"][0]["outcome"] == "imported"


class LambdaContext:
    function_name = "healthcode-import"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws-cn:lambda:cn-north-1:123456789012:function:healthcode-import"
    aws_request_id = "req-1"


def test_a_person_listed_twice_keeps_the_newer_line_wherever_it_is_in_the_file(hc: HealthCodes) -> None:
    # GIVEN a snapshot whose first line says red@1h ago for a person and whose last line, 3,000 lines later
    # (another write chunk), says green@5h ago; and a second person with a tie (same time), yellow then red
    person, tied = resident_id(1), resident_id(2)
    filler = [(resident_id(n), "green", at(2)) for n in range(10, 3010)]
    lines = [(person, "red", at(1)), (tied, "yellow", at(3)), *filler, (tied, "red", at(3)), (person, "green", at(5))]
    snapshot_id = hc.upload(ndjson(lines))
    # WHEN it is imported
    assert hc.run(snapshot_id)["snapshots"][0]["outcome"] == "imported"
    # THEN the newer line counts, not the later one; a tie goes to the more severe status
    codes = hc.current().batch_get([pk(person), pk(tied)])
    assert codes[pk(person)].status == "red" and codes[pk(tied)].status == "red"


# ------------------------------------------------------------------------- the upload bound to its content


@pytest.mark.parametrize(
    ("uploaded", "error"),
    [
        # the attacker's file: same length, P red instead of green
        pytest.param(b'"status":"red"  ', "snapshot_digest_mismatch", id="same-size-other-bytes"),
        pytest.param(b'"status":"red"', "snapshot_size_mismatch", id="shorter"),
        pytest.param(b'"status":"red", "x": "padding"', "snapshot_size_mismatch", id="longer"),
        pytest.param(None, "snapshot_size_mismatch", id="empty"),
    ],
)
def test_a_file_other_than_the_declared_one_fails_and_nothing_of_it_counts(
    hc: HealthCodes, uploaded: bytes | None, error: str
) -> None:
    first, p, q = _authoritative(hc)
    # GIVEN a newer snapshot declared for a file that says P is green
    declared = ndjson([(p, "green", at(1))])
    assert b'"status":"green"' in declared
    # WHEN another file lands under its key (moto, like anyone bypassing S3's checksum check, stores it)
    evil = b"" if uploaded is None else declared.replace(b'"status":"green"', uploaded)
    second = hc.upload(evil, declared=declared)
    out = hc.run(second)["snapshots"][0]
    # THEN the snapshot failed with a stable code ...
    assert out["outcome"] == "failed" and out["error"].startswith(error), out
    info = hc.snapshots.get(second)
    assert info is not None and info.status == "failed" and info.error is not None and info.error.startswith(error)
    # ... the first snapshot stays in force, and nothing of the uploaded file counts
    assert hc.table.current_snapshot().snapshot_id == first  # type: ignore[union-attr]
    codes = hc.current().batch_get([pk(p), pk(q)])
    assert {k: c.status for k, c in codes.items()} == {pk(p): "green", pk(q): "yellow"}
    # ... and an S3 redelivery of the same object does not get another try
    again = hc.run(second)["snapshots"][0]
    assert again["outcome"] == "skipped" and again["error"].startswith("snapshot_replaced")
    info = hc.snapshots.get(second)
    assert info is not None and info.status == "failed" and info.error is not None and info.error.startswith(error)


def test_a_second_object_for_a_snapshot_is_refused(hc: HealthCodes) -> None:
    p = resident_id(1)
    body = ndjson([(p, "green", at(1))])
    # GIVEN an imported snapshot
    imported = hc.upload(body)
    assert hc.run(imported)["snapshots"][0]["outcome"] == "imported"
    # WHEN its file is replaced (S3 refuses that through the URL: If-None-Match; here the bucket's owner does
    # it) by the declared bytes' evil twin, and S3 reports the new object
    hc.put(imported, ndjson([(p, "red", at(1))]))
    again = hc.run(imported)["snapshots"][0]
    # THEN it is not imported again: P stays green
    assert again["outcome"] == "skipped"
    assert {k: c.status for k, c in hc.current().batch_get([pk(p)]).items()} == {pk(p): "green"}

    # GIVEN a snapshot whose import was interrupted after it read (and pinned) its object
    body = ndjson([(p, "yellow", at(0.5))])
    interrupted = hc.upload(body)
    etag = hc.stack.client("s3").head_object(Bucket=hc.bucket, Key=SnapshotStore.object_key(interrupted))["ETag"]
    hc.snapshots.mark_importing(interrupted, etag=etag)
    hc.snapshots.mark_failed(interrupted, error="retry_later: ThrottlingException")
    # WHEN another object lands under its key before Lambda's retry
    hc.put(interrupted, ndjson([(p, "red", at(0.5))]))
    retry = hc.run(interrupted)["snapshots"][0]
    # THEN the retry refuses it and leaves the record as the first object left it
    assert retry["outcome"] == "skipped" and retry["error"].startswith("snapshot_replaced"), retry
    info = hc.snapshots.get(interrupted)
    assert info is not None and info.status == "failed" and info.error == "retry_later: ThrottlingException"
    assert {k: c.status for k, c in hc.current().batch_get([pk(p)]).items()} == {pk(p): "green"}
    # ... while the first object, put back, is imported by the retry
    hc.put(interrupted, body)
    assert hc.run(interrupted)["snapshots"][0]["outcome"] == "imported"
    assert {k: c.status for k, c in hc.current().batch_get([pk(p)]).items()} == {pk(p): "yellow"}


def test_a_retried_import_of_the_same_object_still_completes(hc: HealthCodes) -> None:
    # The pin does not get in the way of Lambda's retry of the same object (test_an_aws_error_... does the
    # rest); here the retry follows a failure before the object was even read.
    p = resident_id(1)
    snapshot_id = hc.upload(ndjson([(p, "yellow", at(1))]))
    hc.snapshots.mark_failed(snapshot_id, error="retry_later: ThrottlingException")
    out = hc.run(snapshot_id)["snapshots"][0]
    assert out["outcome"] == "imported", out
    assert {k: c.status for k, c in hc.current().batch_get([pk(p)]).items()} == {pk(p): "yellow"}


def test_a_snapshot_created_before_the_binding_is_not_imported(hc: HealthCodes) -> None:
    # GIVEN a snapshot record of the old contract: no declared size or digest
    snapshot_id = "f" * 32
    now = dt.datetime.now(dt.UTC).isoformat()
    hc.stack.client("dynamodb").put_item(
        TableName=hc.stack.env["HEALTH_CODE_SNAPSHOTS_TABLE_NAME"],
        Item={
            "snapshot_id": {"S": snapshot_id},
            "status": {"S": "awaiting_upload"},
            "created_at": {"S": now},
            "updated_at": {"S": now},
            "object_key": {"S": SnapshotStore.object_key(snapshot_id)},
            "key_id": {"S": "commission-key"},
        },
    )
    hc.put(snapshot_id, ndjson([(resident_id(1), "red", at(1))]))
    out = hc.run(snapshot_id)["snapshots"][0]
    assert out["outcome"] == "failed" and out["error"].startswith("snapshot_unbound")
    assert hc.table.current_snapshot() is None
