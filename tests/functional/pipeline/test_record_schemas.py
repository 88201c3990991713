"""Published per-destination record schemas: generated from the policies, checked for drift and honoured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from anfang.contracts import EVENT_TYPES, HealthCodeView, SiteView
from anfang.pipeline.enrich import Enrichment
from anfang.pipeline.redact import DataKeys, ImageBuckets, Redactor
from anfang.policies import default_policies
from anfang_ops.schemas import generate
from tests.pipeline_events import RECEIVED_AT, TOWN, example_queued

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


def test_destination_record_schemas_do_not_drift() -> None:
    generated = generate()
    for destination in ("gov_cloud", "police_video"):
        rel = f"records/v1/{destination}.schema.json"
        assert (SCHEMAS / rel).read_text(encoding="utf-8") == generated[rel], f"run `make schemas` ({rel})"


def test_every_record_validates_against_its_published_schema(kms: Any, police_key: str) -> None:
    keys = DataKeys(kms, {"police_video": police_key})
    enrichment = Enrichment(
        site=SiteView(site_id="s1", site_type="rural", name="Village"),
        health_code=HealthCodeView(status="green", as_of=RECEIVED_AT, stale=False),
    )
    buckets = ImageBuckets(raw_bucket="raw", image_bucket="images")
    for destination, policy in default_policies().items():
        schema = json.loads((SCHEMAS / f"records/v1/{destination}.schema.json").read_text(encoding="utf-8"))
        validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        redactor = Redactor(policy, secret=b"s" * 32, town=TOWN, buckets=buckets)
        for event_type in EVENT_TYPES:
            record = json.loads(redactor.record_json(example_queued(event_type), enrichment, keys))
            validator.validate(record)
