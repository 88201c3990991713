"""The release log's verification rate: records checked against a verified entry per second (``anfang audit
verify`` and the reference consumer), on 1,000 real gov_cloud records in entries of 100."""

from __future__ import annotations

import json
from typing import Any

import pytest

from anfang.contracts.release import ReleaseEntry, SignerCert, canonical_record, leaf_hash, tree
from anfang.pipeline.redact import DataKeys, ImageBuckets, Redactor
from anfang.policies import default_policies
from anfang_ops.audit import AuditReport, KmsPublicKeys, Verifier
from tests.pipeline_events import TOWN, example_queued
from tests.pipeline_stack import MemoryHealthCodes, MemorySites, person_key

BUCKETS = ImageBuckets(raw_bucket="raw", image_bucket="images")


def _records() -> tuple[list[dict[str, Any]], list[ReleaseEntry]]:
    from anfang.pipeline.enrich import Enricher

    redactor = Redactor(default_policies()["gov_cloud"], secret=b"k" * 32, town=TOWN, buckets=BUCKETS)
    enricher = Enricher(MemorySites({}), MemoryHealthCodes(), person_key=person_key, stale_after_secs=86400)
    events = [example_queued(("access", "alarm", "plate_capture", "visitor")[i % 4]) for i in range(1000)]
    enrichments = enricher.enrich(events)
    bodies = [
        json.loads(redactor.record_json(e, enrichments[(e.device_id, e.event_id)], DataKeys(None, {}))) for e in events
    ]
    cert = SignerCert(public_key="", not_before="", not_after="", key_id="k")
    records, entries = [], []
    for seq, start in enumerate(range(0, 1000, 100), 1):
        chunk = bodies[start : start + 100]
        leaves = [leaf_hash(canonical_record(r)) for r in chunk]
        root, paths = tree(leaves)
        entry = ReleaseEntry(
            destination="gov_cloud",
            seq=seq,
            prev="0" * 64,
            root=root.hex(),
            size=100,
            policy="gov_cloud@2",
            released_at="2026-11-30T00:00:00Z",
            signer=cert,
        )
        entries.append(entry)
        for i, record in enumerate(chunk):
            proof = [n.hex() for n in paths[i]]
            records.append({**record, "release": {"entry_id": entry.entry_id, "index": i, "size": 100, "proof": proof}})
    return records, entries


@pytest.mark.benchmark(group="e: release log verification")
def test_e_verify_1000_records(benchmark: Any) -> None:
    records, entries = _records()
    verifier = Verifier(KmsPublicKeys(None))
    verifier.verified.update({e.entry_id: e for e in entries})  # the chain's own check is per entry, not per record

    def run() -> AuditReport:
        return verifier.verify_records(records, complete=True)

    report = benchmark(run)
    assert report.ok and report.records == 1000, report.first_break
    benchmark.extra_info["records_per_sec"] = round(1000 / benchmark.stats.stats.mean)
