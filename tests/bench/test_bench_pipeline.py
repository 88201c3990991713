"""Pipeline benchmarks (``make bench``), one core: analysis against libvips and Pillow, redaction against
Powertools ``DataMasking.erase``, and the process batch with its AWS calls counted per call type.

Side by side in one run; the figures land in ``bench/results.json`` (``extra_info`` holds the per-call
counts and per-event figures). Targets (issue 4): (a) >= 1.5x pyvips throughput, (b) >= 40 images/s per
core with faces and the blurred thumbnail, (c) >= 100,000 records/s per core and >= 50x Powertools erase,
(d) <= 0.3 AWS calls per event in the process function.
"""

from __future__ import annotations

import os

os.environ.setdefault("VIPS_CONCURRENCY", "1")  # one core, like the OpenCV side

import gc
import io
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import cv2
import pytest
from moto import mock_aws
from PIL import Image

from anfang.aws.delivered_events import DeliveredEvents
from anfang.aws.release_log import ReleaseLog, ReleaseSigner
from anfang.contracts import EVENT_TYPES, SiteView
from anfang.pipeline.analyse import analyse_image
from anfang.pipeline.enrich import Enricher, Enrichment
from anfang.pipeline.process import Incoming, ProcessDeps, Processor
from anfang.pipeline.redact import DataKeys, ImageBuckets, Redactor
from anfang.policies import default_policies
from tests.pipeline_events import DEVICE_ID, TOWN, example_queued
from tests.pipeline_fixtures import image_bytes
from tests.pipeline_stack import MemoryHealthCodes, MemorySites, count_calls, person_key

cv2.setNumThreads(1)
SCENE = "scene_face_1920x1080.jpg"
BUCKETS = ImageBuckets(raw_bucket="raw", image_bucket="images")
SITE = Enrichment(site=SiteView(site_id="s1", site_type="rural"))

# ---------------------------------------------------------------------------------------------------- (a) (b)


@pytest.mark.benchmark(group="a: 1080p thumbnail + metrics")
def test_a_opencv_thumbnail_and_metrics(benchmark: Any) -> None:
    raw = image_bytes(SCENE)
    result = benchmark(analyse_image, raw, role="scene", detect_faces=False)
    assert result.thumbnail and result.analysis.quality == "ok"


@pytest.mark.benchmark(group="a: 1080p thumbnail + metrics")
def test_a_pyvips_thumbnail_buffer(benchmark: Any) -> None:
    pyvips = pytest.importorskip("pyvips")
    raw = image_bytes(SCENE)

    def run() -> bytes:
        image = pyvips.Image.thumbnail_buffer(raw, 320)
        return bytes(image.write_to_buffer(".jpg[Q=80]"))

    assert benchmark(run)


@pytest.mark.benchmark(group="a: 1080p thumbnail + metrics")
def test_a_pillow_naive_full_decode_resize(benchmark: Any) -> None:
    raw = image_bytes(SCENE)

    def run() -> bytes:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            small = image.resize((320, 180))
        out = io.BytesIO()
        small.save(out, "JPEG", quality=80)
        return out.getvalue()

    assert benchmark(run)


@pytest.mark.benchmark(group="b: full analysis (faces + blurred thumbnail)")
@pytest.mark.parametrize(("name", "role"), [(SCENE, "scene"), ("face_crop.jpg", "face")])
def test_b_full_analysis(benchmark: Any, name: str, role: str) -> None:
    raw = image_bytes(name)
    result = benchmark(analyse_image, raw, role=role)
    assert result.analysis.faces and result.thumbnail_faces_blurred
    _rates(benchmark, 1, "images")


# ---------------------------------------------------------------------------------------------------- (c)


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """The process function freezes its cold-start heap (``gc.freeze``); the benchmarks of its stages do too."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


class FastKms:
    """A KMS stand-in that hands out a fixed data key (benchmarks measure our code, not KMS)."""

    calls = 0

    def generate_data_key(self, **_: Any) -> dict[str, Any]:
        FastKms.calls += 1
        return {"KeyId": "arn:aws:kms:bench", "CiphertextBlob": b"\x01" * 64, "Plaintext": b"\x02" * 32}


def _batch() -> list[Any]:
    return [example_queued(EVENT_TYPES[i % len(EVENT_TYPES)]) for i in range(100)]


@pytest.mark.benchmark(group="c: redaction of 100 events")
@pytest.mark.parametrize("destination", ["gov_cloud", "police_video"])
@pytest.mark.parametrize("validated", [False, True], ids=["projection", "validated_json"])
def test_c_redact_batch(benchmark: Any, destination: str, validated: bool, frozen_heap: None) -> None:
    redactor = Redactor(default_policies()[destination], secret=b"k" * 32, town=TOWN, buckets=BUCKETS)
    batch = _batch()

    def run() -> int:
        keys = DataKeys(FastKms(), {"police_video": "k"})
        if validated:
            return len([redactor.record_json(e, SITE, keys) for e in batch])
        return len([redactor.build(e, SITE, keys) for e in batch])

    assert benchmark(run) == 100
    _rates(benchmark, 100, "records")


def _rates(benchmark: Any, per_round: int, what: str) -> None:
    """Per-second figures from the median round and the best one (the build machine is shared and noisy)."""
    stats = benchmark.stats.stats
    benchmark.extra_info[f"{what}_per_s_median"] = round(per_round / stats.median, 1)
    benchmark.extra_info[f"{what}_per_s_best"] = round(per_round / stats.min, 1)


@pytest.mark.benchmark(group="c: redaction of 100 events")
def test_c_powertools_datamasking_erase(benchmark: Any, frozen_heap: None) -> None:
    pytest.importorskip("jsonpath_ng")
    from aws_lambda_powertools.utilities.data_masking import DataMasking

    masking = DataMasking()
    policy = default_policies()["gov_cloud"]
    batch = [e.event for e in _batch()]
    # the same fields the gov_cloud policy masks, pseudonymises or generalises, erased instead
    fields = sorted(
        {
            path
            for rules in policy.events.values()
            for path, action in rules.fields.items()
            if action in ("mask", "pseudonymize", "generalize")
        }
    )

    def run() -> int:
        out = 0
        for event in batch:
            present = [f for f in fields if _has(event, f)]
            copy = json.loads(json.dumps(event))
            if present:  # erase refuses an empty field list
                masking.erase(copy, fields=present)
            out += 1
        return out

    assert benchmark(run) == 100
    _rates(benchmark, 100, "records")


def _has(event: dict[str, Any], path: str) -> bool:
    node: Any = event
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


# ---------------------------------------------------------------------------------------------------- (d)


@pytest.mark.benchmark(group="d: process batch of 100 events")
@pytest.mark.parametrize("release_log", ["without_release_log", "with_release_log"])
def test_d_process_batch_on_moto_with_calls_counted(
    benchmark: Any, monkeypatch: pytest.MonkeyPatch, release_log: str
) -> None:
    """Before/after the release log in one run: the same batches with and without its signed entries."""
    for name, value in {
        "AWS_DEFAULT_REGION": "cn-north-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        from tests.pipeline_stack import create_stack

        stack = create_stack()
        session = stack.session
        calls: Counter[str] = Counter()
        count_calls(session, calls)
        log = None
        if release_log == "with_release_log":
            signer = ReleaseSigner(session.client("kms"), stack.env["RELEASE_SIGNING_KEY_ARN"])
            log = ReleaseLog(session.client("dynamodb"), stack.env["RELEASE_LOG_TABLE_NAME"], signer=signer)
            log.warm(list(default_policies()))  # cold start: the heads and the signing certificate
        processor = Processor(
            ProcessDeps(
                town=TOWN,
                redactors={
                    name: Redactor(policy, secret=b"k" * 32, town=TOWN, buckets=BUCKETS)
                    for name, policy in default_policies().items()
                },
                topics={
                    "gov_cloud": stack.env["GOV_CLOUD_TOPIC_ARN"],
                    "police_video": stack.env["POLICE_VIDEO_TOPIC_ARN"],
                },
                kms=session.client("kms"),
                kms_key_ids={"police_video": stack.police_key},
                sns=session.client("sns"),
                delivered=DeliveredEvents(
                    session.client("dynamodb"), stack.env["DELIVERED_EVENTS_TABLE_NAME"], ttl_secs=86400
                ),
                enricher=Enricher(
                    MemorySites({DEVICE_ID: SiteView(site_type="rural")}),
                    MemoryHealthCodes(),
                    person_key=person_key,
                    stale_after_secs=86400,
                ),
                release_log=log,
            )
        )
        batches: list[list[Incoming]] = []

        def setup() -> tuple[tuple[list[Incoming]], dict[str, Any]]:
            batch = [Incoming(f"m{i}", e.model_dump_json(by_alias=True)) for i, e in enumerate(_batch())]
            batches.append(batch)
            return (batch,), {}

        calls.clear()
        result = benchmark.pedantic(processor.process, setup=setup, rounds=8, iterations=1)
        assert result.failed_message_ids == []
        per_batch = {name: count / len(batches) for name, count in sorted(calls.items())}
        per_event = sum(per_batch.values()) / 100
        benchmark.extra_info.update(
            aws_calls_per_batch=per_batch,
            aws_calls_per_event=per_event,
            us_per_event_incl_moto=round(benchmark.stats.stats.mean / 100 * 1e6),
        )
        assert per_event <= 0.3
        for queue in (stack.gov_queue, stack.police_queue):  # keep moto's queues small (it scans a queue per send)
            stack.client("sqs").purge_queue(QueueUrl=queue)


class _Sns:
    def publish_batch(self, **kwargs: Any) -> dict[str, Any]:
        return {"Successful": [{"Id": e["Id"]} for e in kwargs["PublishBatchRequestEntries"]], "Failed": []}


class _Dynamo:
    def batch_get_item(self, **_: Any) -> dict[str, Any]:
        return {"Responses": {}, "UnprocessedKeys": {}}

    def batch_write_item(self, **_: Any) -> dict[str, Any]:
        return {"UnprocessedItems": {}}

    def transact_write_items(self, **_: Any) -> dict[str, Any]:
        return {}

    def query(self, **_: Any) -> dict[str, Any]:
        return {"Items": []}


class _SigningKms:
    def sign(self, **_: Any) -> dict[str, Any]:
        return {"Signature": b"certificate signature"}


@pytest.mark.benchmark(group="d: process batch of 100 events")
@pytest.mark.parametrize("release_log", ["without_release_log", "with_release_log"])
def test_d_process_batch_own_code(benchmark: Any, frozen_heap: None, release_log: str) -> None:
    log = None
    if release_log == "with_release_log":  # the leaves, the trees and the two entries signed in process
        log = ReleaseLog(_Dynamo(), "release-log", signer=ReleaseSigner(_SigningKms(), "arn:key"))
        log.warm(list(default_policies()))
    processor = Processor(
        ProcessDeps(
            town=TOWN,
            redactors={
                name: Redactor(policy, secret=b"k" * 32, town=TOWN, buckets=BUCKETS)
                for name, policy in default_policies().items()
            },
            topics={"gov_cloud": "arn:gov", "police_video": "arn:police"},
            kms=FastKms(),
            kms_key_ids={"police_video": "k"},
            sns=_Sns(),
            delivered=DeliveredEvents(_Dynamo(), "delivered", ttl_secs=86400),
            enricher=Enricher(
                MemorySites({DEVICE_ID: SiteView(site_type="rural")}),
                MemoryHealthCodes(),
                person_key=person_key,
                stale_after_secs=86400,
            ),
            release_log=log,
        )
    )
    batch = [Incoming(f"m{i}", e.model_dump_json(by_alias=True)) for i, e in enumerate(_batch())]
    result = benchmark(processor.process, batch)
    assert result.failed_message_ids == []
    benchmark.extra_info["us_per_event"] = round(benchmark.stats.stats.mean / 100 * 1e6, 1)
