"""The release log on moto: a valid history verifies; altered, dropped, reordered and injected records and
entries are each detected (``anfang_ops.audit``), with the real process stage writing the log.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from anfang.aws.release_log import ReleaseLog, ReleaseLogError, ReleaseSigner
from anfang.contracts import SiteView
from anfang.contracts.release import ReleaseEntry, canonical_record, leaf_hash, merkle_root
from anfang.pipeline.process import Incoming, Processor
from anfang.pipeline.process_wiring import build_processor
from anfang_ops.audit import AuditReport, KmsPublicKeys, Verifier, parse_entries
from tests.pipeline_events import DEVICE_ID, example_queued
from tests.pipeline_stack import MemoryHealthCodes, MemorySites, Stack, drain, load_handler, person_key

handler = load_handler("process")
SITES = MemorySites({DEVICE_ID: SiteView(site_id="xihu-garden", site_type="residential_closed", name="Xihu Garden")})
TYPES = ("access", "alarm", "plate_capture", "visitor", "device_status")


def _processor(stack: Stack) -> Processor:
    settings = handler.Settings.model_validate(stack.env)
    return build_processor(
        settings, sites=SITES, health_codes=MemoryHealthCodes(), person_key=person_key, session=stack.session
    )


def _release(stack: Stack, batches: int = 3, size: int = 7) -> list[dict[str, Any]]:
    """Process ``batches`` batches and return the gov_cloud records received, in queue order."""
    processor = _processor(stack)
    for b in range(batches):
        messages = [
            Incoming(f"b{b}m{i}", example_queued(TYPES[i % len(TYPES)]).model_dump_json(by_alias=True))
            for i in range(size)
        ]
        assert processor.process(messages).failed_message_ids == []
    return [json.loads(m["Body"]) for m in drain(stack.client("sqs"), stack.gov_queue)]


def _log(stack: Stack) -> ReleaseLog:
    return ReleaseLog(stack.client("dynamodb"), stack.env["RELEASE_LOG_TABLE_NAME"])


def _verifier(stack: Stack) -> Verifier:
    return Verifier(
        KmsPublicKeys(stack.client("kms")), trusted_key_ids=frozenset({stack.env["RELEASE_SIGNING_KEY_ARN"]})
    )


def _audit(stack: Stack, records: list[dict[str, Any]], *, texts: list[str] | None = None) -> AuditReport:
    verifier = _verifier(stack)
    texts = texts if texts is not None else list(_log(stack).entry_texts("gov_cloud"))
    report = verifier.verify_chain(parse_entries(texts))
    if report.ok:
        verifier.verify_records(records, report, complete=True)
    return report


def test_a_valid_history_verifies(stack: Stack) -> None:
    # GIVEN three process batches of seven events
    records = _release(stack)
    # THEN every record carries its place in the log, and the chain, signatures and records all verify
    assert len(records) == 21
    assert {r["release"]["entry_id"] for r in records} == {"gov_cloud:1", "gov_cloud:2", "gov_cloud:3"}
    report = _audit(stack, records)
    assert (report.ok, report.entries, report.records) == (True, 3, 21), report.first_break
    # ... and police_video has its own chain
    police = [json.loads(m["Body"]) for m in drain(stack.client("sqs"), stack.police_queue)]
    verifier = _verifier(stack)
    assert verifier.verify_chain(parse_entries(_log(stack).entry_texts("police_video"))).ok
    assert verifier.verify_records(police, complete=True).ok


def test_an_altered_record_is_detected(stack: Stack) -> None:
    records = _release(stack)
    records[4] = {**records[4], "direction": "out" if records[4].get("direction") != "out" else "in"}
    report = _audit(stack, records)
    assert not report.ok
    assert "does not match entry" in str(report.first_break)


def test_a_dropped_record_is_detected(stack: Stack) -> None:
    records = _release(stack)
    dropped = records.pop(9)
    report = _audit(stack, records)
    assert not report.ok
    assert f"entry {dropped['release']['entry_id']}: records missing at leaves [{dropped['release']['index']}]" == (
        report.first_break
    )


def test_a_reordered_record_is_detected(stack: Stack) -> None:
    # GIVEN two records of one entry swap their places in the tree (their release references)
    records = _release(stack)
    first, second = [i for i, r in enumerate(records) if r["release"]["entry_id"] == "gov_cloud:2"][:2]
    a, b = records[first]["release"], records[second]["release"]
    records[first] = {**records[first], "release": b}
    records[second] = {**records[second], "release": a}
    assert not _audit(stack, records).ok


def test_an_injected_record_is_detected(stack: Stack) -> None:
    records = _release(stack)
    # a forged record wearing a real record's release reference
    forged = copy.deepcopy(records[0])
    forged["event_id"] = "019ace03-5c00-7000-8000-0000000000ff"
    assert "does not match entry" in str(_audit(stack, [*records[1:], forged]).first_break)
    # a duplicate of a real record (a replayed leaf) in a complete history
    assert "given twice" in str(_audit(stack, [*records, records[3]]).first_break)
    # a record pointing at an entry the log does not have
    ghost = {**records[0], "release": {**records[0]["release"], "entry_id": "gov_cloud:99"}}
    assert "not in the verified log" in str(_audit(stack, [*records, ghost]).first_break)


def test_altered_dropped_reordered_and_injected_entries_are_detected(stack: Stack) -> None:
    _release(stack, batches=4, size=3)
    texts = list(_log(stack).entry_texts("gov_cloud"))
    assert _audit(stack, [], texts=texts).ok
    entries = [ReleaseEntry.model_validate_json(t) for t in texts]

    # altered: another root, chain recomputed by the forger, but the signature no longer holds
    altered = entries[1].model_copy(update={"root": "ab" * 32})
    assert "entry signature invalid" in str(_audit(stack, [], texts=[texts[0], altered.model_dump_json()]).first_break)
    # dropped
    assert "expected seq 2" in str(_audit(stack, [], texts=[texts[0], *texts[2:]]).first_break)
    # reordered
    assert "expected seq 2" in str(_audit(stack, [], texts=[texts[0], texts[2], texts[1], texts[3]]).first_break)
    # injected: a well-formed entry signed by a key the forger holds, certified by a KMS key not the stack's
    kms = stack.client("kms")
    rogue_key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    key, cert = ReleaseSigner(kms, rogue_key).cert()
    injected = entries[1].model_copy(update={"signer": cert, "signature": ""})
    injected = injected.model_copy(
        update={"signature": base64.b64encode(key.sign(injected.statement(), ec.ECDSA(hashes.SHA256()))).decode()}
    )
    assert "untrusted key" in str(_audit(stack, [], texts=[texts[0], injected.model_dump_json()]).first_break)
    # ... and an entry whose certificate was altered to the forger's key but keeps the KMS signature
    swapped = entries[1].model_copy(
        update={"signer": entries[1].signer.model_copy(update={"public_key": cert.public_key})}
    )
    assert "certificate not signed" in str(_audit(stack, [], texts=[texts[0], swapped.model_dump_json()]).first_break)
    # garbage in the table
    assert "does not parse" in str(_audit(stack, [], texts=[texts[0], "{}"]).first_break)


def test_concurrent_writers_never_fork_a_chain(stack: Stack) -> None:
    # GIVEN two process containers (each its head cache and signing key) appending in turn
    first, second = _processor(stack), _processor(stack)
    for round_ in range(3):
        for n, processor in enumerate((first, second)):
            body = example_queued("alarm").model_dump_json(by_alias=True)
            assert processor.process([Incoming(f"r{round_}p{n}", body)]).failed_message_ids == []
    # THEN the chain is linear: 6 entries, 1..6, each verified
    records = [json.loads(m["Body"]) for m in drain(stack.client("sqs"), stack.gov_queue)]
    report = _audit(stack, records)
    assert (report.ok, report.entries, report.records) == (True, 6, 6), report.first_break


def test_without_the_log_nothing_is_published(stack: Stack) -> None:
    # GIVEN a processor whose release log table is gone
    processor = _processor(stack)
    stack.client("dynamodb").delete_table(TableName=stack.env["RELEASE_LOG_TABLE_NAME"])
    body = example_queued("alarm").model_dump_json(by_alias=True)
    result = processor.process([Incoming("m1", body)])
    # THEN the message is retried and no destination received an unlogged record
    assert result.failed_message_ids == ["m1"]
    assert result.counts["errored_release_gov_cloud"] == 1
    assert drain(stack.client("sqs"), stack.gov_queue) == []
    assert drain(stack.client("sqs"), stack.police_queue) == []


def test_a_read_only_log_refuses_to_append(stack: Stack) -> None:
    with pytest.raises(ReleaseLogError):
        _log(stack).append({"gov_cloud": ("gov_cloud@2", [leaf_hash(canonical_record({"a": 1}))])})
    assert merkle_root([b"x" * 32]) == b"x" * 32
