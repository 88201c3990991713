"""Redaction policies and actions (pure: no AWS; encryption is covered by the functional privacy tests)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from anfang.contracts import DestinationRecord, HealthCodeView, ImageAnalysis, SiteView
from anfang.pipeline.enrich import Enrichment
from anfang.pipeline.redact import DataKeys, ImageBuckets, Redactor, mask, pseudonym
from anfang.policies import PolicyError, default_policies, event_fields, load_policy, parse_policy
from tests.pipeline_events import TOWN, example_queued

BUCKETS = ImageBuckets(raw_bucket="raw", image_bucket="images")
SECRET = b"0123456789abcdef0123456789abcdef"


class NoKms:
    def generate_data_key(self, **_: Any) -> Any:
        raise AssertionError("gov_cloud must not need KMS")


def _gov() -> Redactor:
    return Redactor(load_policy("gov_cloud"), secret=SECRET, town=TOWN, buckets=BUCKETS)


def test_default_policies_load_and_name_their_versions() -> None:
    policies = default_policies()
    assert {name: policy.ref for name, policy in policies.items()} == {
        "gov_cloud": "gov_cloud@2",
        "police_video": "police_video@2",
    }
    assert policies["police_video"].field_action("access", "person.id_number") == "encrypt"
    assert policies["gov_cloud"].field_action("access", "person.id_number") == "pseudonymize"
    assert policies["gov_cloud"].field_action("access", "no.such.field") == "drop"
    assert policies["gov_cloud"].image_action("face_capture", "face") == "none"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("events: {access: {fields: {person.shoe_size: keep}}}", "person.shoe_size: no such field"),
        ("events: {access: {fields: {access.result: generalize}}}", "generalize does not apply to a enum"),
        ("events: {alarm: {fields: {alarm.zone: generalize}}}", "generalize does not apply to a text"),
        ("events: {face_capture: {images: {face: thumbnail_faces_blurred}}}", "sends a face image"),
        ("events: {alarm: {images: {scene: thumbnail}}}", "may show a face unblurred"),
        ("events: {alarm: {fields: {alarm.zone: shred}}}", "Input should be 'keep'"),
        ("events: {parade: {}}", "Input should be 'face_capture'"),
        ("common: {town: keep}", "not a common field"),
        ("extra_key: 1", "Extra inputs are not permitted"),
    ],
)
def test_policy_validation_names_the_problem(body: str, problem: str) -> None:
    text = f"policy: gov_cloud\nversion: 2\ncommon: {{device_id: keep}}\n{body}\n"
    with pytest.raises(PolicyError, match=problem):
        parse_policy(text)


def test_policy_must_name_the_device_id_and_itself(tmp_path: Any) -> None:
    with pytest.raises(PolicyError, match="common.device_id"):
        parse_policy("policy: gov_cloud\nversion: 1\n")
    (tmp_path / "gov_cloud.yaml").write_text("policy: police_video\nversion: 1\ncommon: {device_id: keep}\n")
    with pytest.raises(PolicyError, match="expected 'gov_cloud'"):
        load_policy("gov_cloud", tmp_path)


def test_every_path_of_every_event_type_is_known() -> None:
    assert set(event_fields("visitor")) == {
        "visitor.host_unit",
        "visitor.purpose",
        "visitor.visitor.name",
        "visitor.visitor.id_number",
        "visitor.visitor.phone",
        "visitor.visitor.resident_ref",
    }
    assert event_fields("face_capture")["face.box"].kind == "box"


def test_masks() -> None:
    assert mask("id_number", "11010519491231002X") == "110105********002X"
    assert mask("phone", "13812345678") == "138****5678"
    assert mask("text", "张三") == "张*"
    assert mask("text", "x") == "x*"
    assert mask("plate", "浙AD12345") == "浙A*****5"


def test_pseudonyms_are_stable_per_kind_and_secret() -> None:
    a = pseudonym(SECRET, "id_number", "11010519491231002X")
    assert a == pseudonym(SECRET, "id_number", "11010519491231002X")
    assert a != pseudonym(SECRET, "phone", "11010519491231002X")
    assert a != pseudonym(b"another-secret-of-32-bytes-00000", "id_number", "11010519491231002X")
    assert a.startswith("pn_") and len(a) == 27


def test_gov_cloud_access_record_shape() -> None:
    # GIVEN the example access event with a health code from enrichment
    queued = example_queued("access")
    health = HealthCodeView(status="green", as_of=queued.received_at, stale=False)
    enrichment = Enrichment(site=SiteView(site_id="s1", site_type="rural"), health_code=health)
    # WHEN the gov cloud's record is built
    record = json.loads(_gov().record_json(queued, enrichment, DataKeys(NoKms(), {})))
    # THEN identifiers are pseudonymised, names and phone numbers dropped (not even masked), the colour kept
    assert set(record["person"]) == {"id_number", "resident_ref"}
    assert record["person"]["id_number"] == pseudonym(SECRET, "id_number", "11010519491231002X")
    assert "张" not in json.dumps(record, ensure_ascii=False) and "5678" not in json.dumps(record)
    assert record["access"]["credential"] == "card" and record["access"]["door"].startswith("pn_")
    assert record["health_code"] == {"status": "green", "as_of": "2026-11-29T00:30:00Z", "stale": False}
    assert record["redaction"] == {"policy": "gov_cloud@2"}
    assert record["direction"] == "in" and record["town"] == TOWN
    # AND only face-blurred thumbnails of the non-face images travel, by reference
    assert sorted(image["role"] for image in record["images"]) == ["person", "scene"]
    for image in record["images"]:
        assert image["ref"].startswith("s3://images/derived/thumbnail_faces_blurred/")
        assert (image["width"], image["height"]) == (80, 45)  # the face-blurred thumbnail's side (12 px rule)
        assert "phash" not in image["analysis"]  # no hash of the unblurred picture
    # AND the record is also a valid generic destination record
    DestinationRecord.model_validate(record)


def test_gov_cloud_plate_is_generalised_to_its_province() -> None:
    record = json.loads(
        _gov().record_json(example_queued("plate_capture"), Enrichment(site=SiteView()), DataKeys(NoKms(), {}))
    )
    assert record["vehicle"] == {"plate": "浙", "plate_color": "green"}


def test_images_without_analysis_are_not_sent_to_gov_cloud() -> None:
    queued = example_queued("alarm")
    bare = queued.model_copy(update={"images": [i.model_copy(update={"derived": {}}) for i in queued.images]})
    record = json.loads(_gov().record_json(bare, Enrichment(site=SiteView()), DataKeys(NoKms(), {})))
    assert record["images"] == []


def test_encrypting_without_a_key_is_a_typed_error() -> None:
    from anfang.pipeline.redact import RedactError

    police = Redactor(load_policy("police_video"), secret=SECRET, town=TOWN, buckets=BUCKETS)
    with pytest.raises(RedactError, match="no KMS key"):
        police.record(example_queued("access"), Enrichment(site=SiteView()), DataKeys(NoKms(), {}))


def test_compiled_pseudonyms_equal_the_reference_hmac() -> None:
    # GIVEN secrets shorter than, equal to and longer than SHA-256's block
    from anfang.pipeline.redact.actions import pseudonymizer as _pseudonymizer

    for secret in (SECRET, b"s" * 64, b"long-secret-" * 10):
        for value in ("11010519491231002X", "张三", "", "north gate"):
            # THEN the precomputed-state HMAC gives exactly the token of pseudonym()
            assert _pseudonymizer(secret, "id_number")(value) == pseudonym(secret, "id_number", value)


def test_fast_analysis_dump_equals_model_dump() -> None:
    from anfang.contracts import Box
    from anfang.pipeline.redact.redactor import analysis_json as _analysis_json

    for analysis in (
        ImageAnalysis(
            quality="ok",
            sharpness=512.25,
            brightness=100.0,
            contrast=50.5,
            width=1920,
            height=1080,
            phash="0123456789abcdef",
        ),
        ImageAnalysis(quality="no_face", faces=[Box(x=1, y=2, w=3, h=4), Box(x=5, y=6, w=7, h=8)]),
        ImageAnalysis(quality="error", error="truncated"),
    ):
        assert _analysis_json(analysis) == analysis.model_dump(mode="json", exclude_none=True)
        assert _analysis_json(analysis, with_hash=False) == analysis.model_dump(
            mode="json", exclude_none=True, exclude={"phash"}
        )


def test_a_derived_image_is_sized_from_the_upright_picture_the_analysis_measured() -> None:
    # GIVEN an image stored sideways (the header says 1080x1920; upright, EXIF applied, it is 1920x1080)
    queued = example_queued("alarm")
    stored = next(image for image in queued.images if image.role == "scene")
    assert stored.analysis is not None
    sideways = stored.model_copy(
        update={
            "width": 1080,
            "height": 1920,
            "analysis": stored.analysis.model_copy(update={"width": 1920, "height": 1080}),
        }
    )
    record = _gov().build(
        queued.model_copy(update={"images": [sideways]}), Enrichment(site=SiteView()), DataKeys(NoKms(), {})
    )
    # THEN the thumbnail's size in the record is the upright one, as the analyse stage made it
    assert (record["images"][0]["width"], record["images"][0]["height"]) == (80, 45)


def test_a_failed_analysis_releases_no_derived_image_even_if_one_is_named() -> None:
    queued = example_queued("alarm")
    stored = next(image for image in queued.images if image.role == "scene")
    failed = stored.model_copy(update={"analysis": ImageAnalysis(quality="error", error="analysis_failed")})
    record = _gov().build(
        queued.model_copy(update={"images": [failed]}), Enrichment(site=SiteView()), DataKeys(NoKms(), {})
    )
    assert record["images"] == []


def test_site_view_dump_is_its_set_strings() -> None:
    # build() dumps SiteView as its non-None attributes: true while it holds only optional strings
    for site in (SiteView(site_id="s1", site_type="rural", name="Village"), SiteView()):
        assert Enrichment(site=site).site_json == site.model_dump(mode="json", exclude_none=True)


class _CountingKms:
    def __init__(self) -> None:
        self.calls = 0

    def generate_data_key(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        return {"KeyId": "arn:aws:kms:test", "CiphertextBlob": b"\x01" * 64, "Plaintext": bytes(range(32))}


def test_envelope_nonces_never_repeat_under_one_data_key() -> None:
    # GIVEN one batch (one data key) of police records with three envelopes each
    import base64

    police = Redactor(load_policy("police_video"), secret=SECRET, town=TOWN, buckets=BUCKETS)
    kms = _CountingKms()
    keys = DataKeys(kms, {"police_video": "k"})
    records = [police.build(example_queued(t), Enrichment(site=SiteView()), keys) for t in ("access", "visitor") * 50]
    envelopes = [v for r in records for body in ("person", "visitor") for v in _envelopes(r.get(body))]
    nonces = [base64.b64decode(e["iv"]) for e in envelopes]
    # THEN one data key served the batch, and its 300 nonces are distinct 96-bit values: one random fixed
    # field and a counter that starts at 1 (NIST SP 800-38D 8.2.1)
    assert kms.calls == 1 and len(envelopes) == 300
    assert len(set(nonces)) == 300 and {len(n) for n in nonces} == {12}
    assert len({n[:4] for n in nonces}) == 1
    assert sorted(int.from_bytes(n[4:], "big") for n in nonces) == list(range(1, 301))
    # AND the next batch's key draws a new fixed field
    other = DataKeys(kms, {"police_video": "k"}).for_destination("police_video").next_nonce()
    assert other[4:] == (1).to_bytes(8, "big")


def _envelopes(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return []
    if body.get("enc") == "A256GCM":
        return [body]
    return [e for value in body.values() for e in _envelopes(value)]


def _faulty(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Copies of a valid record, each with one fault the record model must reject."""
    faults: list[dict[str, Any]] = []

    def copy() -> dict[str, Any]:
        return json.loads(json.dumps(record))

    for mutate in (
        lambda r: r.update(shoe_size=42),  # a field no policy names
        lambda r: r["person"].update(name_raw="张三"),  # an unknown field inside a body
        lambda r: r["person"].update(id_number="11010519491231002X"),  # a clear ID where a pseudonym belongs
        lambda r: r["images"][0].update(width=0),
        lambda r: r["images"][0].update(sha256="not-a-digest"),
        lambda r: r["images"][0]["analysis"].update(quality="great"),
        lambda r: r["images"][0]["analysis"].update(brightness=300.0),
        lambda r: r["site"].update(site_type="castle"),
        lambda r: r.update(captured_at="2026-11-29T08:03:00"),  # no offset
        lambda r: r.update(event_id="not-a-uuid"),
        lambda r: r.pop("redaction"),
        lambda r: r.update(redaction={"policy": "gov_cloud"}),
        lambda r: r.update(health_code={"status": "purple", "as_of": "2026-11-29T00:30:00Z", "stale": False}),
    ):
        faulty = copy()
        mutate(faulty)
        faults.append(faulty)
    return faults


def test_dict_validation_rejects_exactly_what_the_record_model_rejects() -> None:
    # GIVEN the gov cloud's record of an access event with a health code, and copies with one fault each
    from pydantic import ValidationError

    redactor = _gov()
    queued = example_queued("access")
    health = HealthCodeView(status="green", as_of=queued.received_at, stale=False)
    record = redactor.build(queued, Enrichment(site=SiteView(site_id="s1"), health_code=health), DataKeys(NoKms(), {}))
    dicts = redactor._dicts
    assert dicts is not None  # the default policies' record models take the dict path
    # THEN the valid record passes both and serialises to the same JSON
    assert dicts.to_json(dicts.validate(record), by_alias=True, exclude_none=True).decode() == (
        redactor.model.model_validate(record).model_dump_json(by_alias=True, exclude_none=True)
    )
    # AND every faulty copy is rejected by both
    for faulty in _faulty(record):
        with pytest.raises(ValidationError):
            redactor.model.model_validate(faulty)
        with pytest.raises(ValidationError):
            dicts.validate(faulty)


def test_record_json_equals_the_model_path_for_every_event_type() -> None:
    from anfang.contracts import EVENT_TYPES

    redactor = _gov()
    enrichment = Enrichment(site=SiteView(site_id="s1", site_type="rural", name="Village"))
    for event_type in EVENT_TYPES:
        queued = example_queued(event_type)
        keys = DataKeys(NoKms(), {})
        assert redactor.record_json(queued, enrichment, keys) == redactor.record(
            queued, enrichment, keys
        ).model_dump_json(by_alias=True, exclude_none=True)


def test_the_envelope_plaintext_is_the_values_json() -> None:
    # the encrypter's str fast path writes what json.dumps(value, ensure_ascii=False) writes
    from anfang.pipeline.redact.actions import _encode_str

    for value in ("张三", 'quote " back \\ slash', "new\nline\x00nul\u2028sep", "13812345678", ""):
        assert _encode_str(value) == json.dumps(value, ensure_ascii=False)
