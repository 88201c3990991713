"""Privacy properties of the default policies (hypothesis, real crypto, moto KMS).

GIVEN events of every type with checksum-valid ID numbers, mobiles, names and plates planted in every string
field, WHEN they are redacted for both destinations, THEN the gov cloud sees none of them in the clear, the
police see a person's name, ID and phone only inside envelopes that decrypt back exactly, and a field no
policy names never appears downstream.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from moto import mock_aws
from pydantic import ValidationError

from anfang.contracts import EVENT_TYPES, SiteView, find_mobiles, find_plates, find_resident_ids
from anfang.pipeline.enrich import Enrichment
from anfang.pipeline.redact import DataKeys, ImageBuckets, Redactor
from anfang.policies import default_policies, parse_policy
from anfang_ops.cli import main as cli_main
from anfang_ops.decrypt import DecryptError, decrypt_lines, decrypt_record, is_envelope
from tests.pipeline_events import TOWN, Planted, example_queued, planted, planted_event, queued
from tests.pipeline_fixtures import image_bytes
from tests.pipeline_run import fetch, run_pipeline
from tests.pipeline_stack import REGION

BUCKETS = ImageBuckets(raw_bucket="anfang-330106-raw", image_bucket="anfang-330106-images")
SECRETS = {"gov_cloud": b"gov-cloud-pseudonym-secret-0001", "police_video": b"police-video-pseudonym-secret-01"}
SITE = Enrichment(site=SiteView(site_id="site-1", site_type="residential_closed", name="Xihu Garden"))


def _redactors() -> dict[str, Redactor]:
    return {
        name: Redactor(policy, secret=SECRETS[name], town=TOWN, buckets=BUCKETS)
        for name, policy in default_policies().items()
    }


def _envelopes(node: Any) -> list[dict[str, str]]:
    if is_envelope(node):
        return [node]
    if isinstance(node, dict):
        return [e for value in node.values() for e in _envelopes(value)]
    if isinstance(node, list):
        return [e for value in node for e in _envelopes(value)]
    return []


def _clear_text(node: Any) -> str:
    """Everything of a record outside envelopes, as JSON text with real characters."""
    if is_envelope(node):
        return ""
    if isinstance(node, dict):
        return " ".join(f"{key} {_clear_text(value)}" for key, value in node.items())
    if isinstance(node, list):
        return " ".join(_clear_text(value) for value in node)
    return json.dumps(node, ensure_ascii=False)


@pytest.fixture(scope="module")
def moto_kms() -> Any:
    with mock_aws():
        kms = boto3.client("kms", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
        key = kms.create_key(Description="police")["KeyMetadata"]["Arn"]
        yield kms, key


def _leaks(text: str, p: Planted) -> list[str]:
    found = set(find_resident_ids(text)) | set(find_mobiles(text)) | set(find_plates(text))
    leaked = [value for value in p.all_values if value in found or value in text]
    return leaked


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p=planted)
def test_default_policies_keep_planted_identifiers_where_they_belong(moto_kms: Any, p: Planted) -> None:
    kms, key = moto_kms
    redactors = _redactors()
    keys = DataKeys(kms, {"police_video": key})
    police_lines = []
    for event_type in EVENT_TYPES:
        event = queued(planted_event(event_type, p))
        gov = json.loads(redactors["gov_cloud"].record_json(event, SITE, keys))
        police = json.loads(redactors["police_video"].record_json(event, SITE, keys))

        # gov_cloud: nothing planted in the clear, no envelope needed to hide it, never a face image
        gov_text = json.dumps(gov, ensure_ascii=False)
        assert _leaks(gov_text, p) == [], (event_type, gov)
        assert all(image["role"] != "face" for image in gov["images"])
        # ... not even partly: no masked name or phone (a surname or 7 of 11 digits is a quasi-identifier)
        for person in (gov.get("person", {}), gov.get("visitor", {}).get("visitor", {})):
            assert not {"name", "phone"} & set(person), (event_type, person)
        assert p.phone[:3] + "****" + p.phone[-4:] not in gov_text and p.name[0] + "*" not in gov_text, gov
        assert all("/derived/thumbnail_faces_blurred/" in image["ref"] for image in gov["images"])
        # ... and no hash of an unblurred picture: no phash, no digest of an original
        assert all("phash" not in image.get("analysis", {}) for image in gov["images"]), gov
        for stored in event.images:
            assert stored.sha256 not in gov_text and (stored.analysis and stored.analysis.phash or "-") not in gov_text

        # police_video: the person's name, ID and phone only inside envelopes
        police_clear = _clear_text(police)
        for value in (p.name, p.id_number, p.phone):
            assert value not in police_clear, (event_type, value)
        # ... the originals they get come with their perceptual hash
        assert all(image["analysis"]["phash"] for image in police["images"])
        # ... plates are kept in the clear by design
        if event_type == "plate_capture":
            assert police["vehicle"]["plate"] == p.plate

        # source_ref (the camera's own id) is named by police_video only, kept whole; gov_cloud never sees it
        assert p.canary not in gov_text
        assert police["source_ref"] == p.canary
        police_lines.append(json.dumps(police, ensure_ascii=False))

    # envelopes decrypt back exactly, with one data key per batch and destination
    plain = [json.loads(line) for line in decrypt_lines(police_lines, kms=kms)]
    access, visitor = plain[EVENT_TYPES.index("access")], plain[EVENT_TYPES.index("visitor")]
    assert access["person"]["name"] == p.name
    assert access["person"]["id_number"] == p.id_number
    assert access["person"]["phone"] == p.phone
    assert visitor["visitor"]["visitor"] == {
        "name": p.name,
        "id_number": p.id_number,
        "phone": p.phone,
        "resident_ref": p.free_text,
    }
    edks = {env["edk"] for line in police_lines for env in _envelopes(json.loads(line))}
    assert len(edks) == 1


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p=planted)
def test_a_field_the_policy_does_not_name_never_appears(moto_kms: Any, p: Planted) -> None:
    # GIVEN a police policy that no longer names the door, the person's phone or the resident ref
    text = (
        "policy: police_video\nversion: 2\nallow_face_images: true\ncommon: {device_id: keep}\n"
        "events:\n  access:\n    fields: {access.result: keep, person.name: encrypt}\n"
    )
    redactor = Redactor(parse_policy(text), secret=SECRETS["police_video"], town=TOWN, buckets=BUCKETS)
    kms, key = moto_kms
    event = queued(planted_event("access", p))
    # WHEN an access event is redacted
    record = json.loads(redactor.record_json(event, SITE, DataKeys(kms, {"police_video": key})))
    # THEN only what is named is there: no door, phone, ID, credential, images, direction or health code
    assert set(record["person"]) == {"name"}
    assert set(record["access"]) == {"result"}
    assert "direction" not in record and "health_code" not in record and record["images"] == []
    plain = decrypt_record(record, kms=kms)
    text_out = json.dumps(plain, ensure_ascii=False)
    for value in (p.free_text, p.id_number, p.phone, p.canary):
        assert value not in text_out
    assert plain["person"]["name"] == p.name


def test_moved_or_altered_envelopes_do_not_decrypt(kms: Any, police_key: str) -> None:
    redactor = _redactors()["police_video"]
    from tests.pipeline_events import example_queued

    a = json.loads(redactor.record_json(example_queued("access"), SITE, DataKeys(kms, {"police_video": police_key})))
    b = json.loads(redactor.record_json(example_queued("access"), SITE, DataKeys(kms, {"police_video": police_key})))
    # an envelope moved to another event fails (the event id is bound as associated data)
    moved = {**b, "person": {**b["person"], "name": a["person"]["name"]}}
    with pytest.raises(DecryptError):
        decrypt_record(moved, kms=kms)
    # ... and so does one moved to another field of the same event
    swapped = {**a, "person": {**a["person"], "name": a["person"]["phone"]}}
    with pytest.raises(DecryptError):
        decrypt_record(swapped, kms=kms)
    # ... and one presented for another destination (KMS context)
    other = {**a, "redaction": {"policy": "gov_cloud@1"}}
    with pytest.raises(DecryptError):
        decrypt_record(other, kms=kms)


def test_anfang_decrypt_cli_restores_police_records(
    kms: Any, police_key: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a file of police records as a consumer would save them from its queue
    redactor = _redactors()["police_video"]
    keys = DataKeys(kms, {"police_video": police_key})
    from tests.pipeline_events import example_queued

    records = [redactor.record_json(example_queued(t), SITE, keys) for t in ("access", "visitor", "alarm")]
    source = tmp_path / "police.ndjson"
    source.write_text("\n".join(records) + "\n", encoding="utf-8")
    # WHEN `anfang decrypt` runs with KMS from boto3's configuration (moto here)
    rc = cli_main(["decrypt", "--input", str(source)])
    # THEN every line comes back with the values of the example events
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["person"] == {
        "name": "张三",
        "id_number": "11010519491231002X",
        "phone": "13812345678",
        "resident_ref": "3-2-501",
    }
    assert lines[1]["visitor"]["visitor"]["name"] == "李四"
    assert lines[2] == json.loads(records[2])  # nothing encrypted, nothing changed


# ---------------------------------------------------------------------------------------------------- images


def test_gov_cloud_records_carry_no_hash_of_an_unblurred_image(stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN real pictures with faces, analysed with the unblurred thumbnail made too (as for a town whose police
    # policy sends it), so there is an unblurred thumbnail whose digest could leak
    scene, face = image_bytes("scene_face_1920x1080.jpg"), image_bytes("face_crop.jpg")
    events = [
        ("face_capture", {"face": face, "scene": scene}, {"x": 784, "y": 136, "w": 216, "h": 216}),
        ("access", {"person": face, "scene": scene}, None),
    ]
    # WHEN they go through the analyse and process functions on moto
    delivered = run_pipeline(stack, monkeypatch, events, DERIVED_IMAGES="thumbnail,thumbnail_faces_blurred")
    s3, bucket = stack.client("s3"), stack.env["IMAGE_BUCKET_NAME"]
    unblurred_thumbnails = [
        fetch(stack, f"s3://{bucket}/{o['Key']}")
        for o in s3.list_objects_v2(Bucket=bucket, Prefix="derived/thumbnail/")["Contents"]
    ]
    assert len(unblurred_thumbnails) == 2  # content-addressed: the scene and the face crop (face and person)
    for event in delivered.values():
        gov_text = json.dumps(event.gov_cloud)
        # THEN the gov cloud gets face-blurred thumbnails whose sha256 is the digest of the object fetched ...
        assert event.gov_cloud["images"], event.gov_cloud
        for image in event.gov_cloud["images"]:
            assert hashlib.sha256(fetch(stack, image["ref"])).hexdigest() == image["sha256"]
            assert "/derived/thumbnail_faces_blurred/" in image["ref"]
            assert "phash" not in image["analysis"]
        # ... and no digest or perceptual hash of any unblurred picture appears anywhere in its record
        unblurred = {hashlib.sha256(raw).hexdigest() for raw in event.raw.values()}
        unblurred |= {hashlib.sha256(body).hexdigest() for body in unblurred_thumbnails}
        unblurred |= {image["analysis"]["phash"] for image in event.police_video["images"]}
        assert len(unblurred) >= 4
        assert not [value for value in unblurred if value in gov_text], event.gov_cloud
        # ... while the police, who get the originals, get their digests and hashes
        assert {image["sha256"] for image in event.police_video["images"]} == {
            hashlib.sha256(raw).hexdigest() for raw in event.raw.values()
        }


def test_a_gov_cloud_record_with_a_perceptual_hash_does_not_validate() -> None:
    # The gov cloud's record model has no phash in image analyses: even a redactor bug cannot publish one.
    redactor = _redactors()["gov_cloud"]
    record = redactor.build(example_queued("alarm"), SITE, DataKeys(None, {}))
    assert record["images"] and "phash" not in record["images"][0]["analysis"]
    record["images"][0]["analysis"]["phash"] = "0123456789abcdef"
    with pytest.raises(ValidationError):
        redactor.model.model_validate(record)
    with pytest.raises(ValidationError):
        redactor._validator.validate_python(record)
