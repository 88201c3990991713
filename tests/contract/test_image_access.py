"""Images for consumers: the template's bucket and key policies, evaluated, give each destination exactly the
images its records can reference.

moto enforces neither bucket policies nor key policies, so the documents themselves are evaluated: resolved
for a town with consumer accounts (``tests.iam.policy.Resolver``) and checked with IAM's rules for resource
policies (an explicit Deny wins; an Allow needs principal, action, resource and every condition to match;
cross-account access also needs the consumer's own IAM, which is the consumer's to grant).
"""

from __future__ import annotations

from typing import Any, Final

import pytest

from anfang_ops.template import load_template
from tests.iam.policy import Resolver, matches
from tests.iam.recorder import ACCOUNT_ID, Deployment
from tests.template_stack import TEMPLATE

GOV: Final = "111111111111"
POLICE: Final = "222222222222"
STRANGER: Final = "333333333333"
REGION: Final = "cn-north-1"
RAW, IMAGES = "anfang-raw-images", "anfang-images"
SHA: Final = "ab" * 32
RAW_OBJECT: Final = (
    f"arn:aws-cn:s3:::{RAW}/330106/2026-11-29/33010600001320000001/019ace03-5c00-7000-8000-000000000001/face"
)
BLURRED: Final = f"arn:aws-cn:s3:::{IMAGES}/derived/thumbnail_faces_blurred/{SHA}.jpg"
THUMBNAIL: Final = f"arn:aws-cn:s3:::{IMAGES}/derived/thumbnail/{SHA}.jpg"


@pytest.fixture(scope="module")
def resolver() -> Resolver:
    deployment = Deployment(
        stack_name="anfang-330106",
        region=REGION,
        parameters={"TownCode": "330106", "GovCloudConsumerAccountIds": GOV, "PoliceConsumerAccountIds": POLICE},
        physical_ids={"RawImageBucket": RAW, "ImageBucket": IMAGES, "DataKey": "data-key-id"},
    )
    return Resolver(load_template(TEMPLATE), deployment)


def _statements(resolver: Resolver, logical: str, document: str) -> list[dict[str, Any]]:
    policy = resolver.value(resolver.resources[logical]["Properties"][document])
    return [s for s in policy["Statement"] if isinstance(s, dict)]  # AWS::NoValue statements resolve away


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _principal_matches(principal: Any, account: str) -> bool:
    if principal == "*":
        return True
    aws = _as_list(principal.get("AWS", [])) if isinstance(principal, dict) else []
    return any(p in (account, f"arn:aws-cn:iam::{account}:root") for p in aws)


def _conditions_hold(condition: dict[str, Any], context: dict[str, str]) -> bool:
    for operator, tests in condition.items():
        for key, expected in tests.items():
            value = context.get(key)
            if operator == "StringEquals" and value not in [str(e) for e in _as_list(expected)]:
                return False
            if operator == "Bool" and value != str(expected).lower():
                return False
    return True


def allowed(
    statements: list[dict[str, Any]], account: str, action: str, resource: str, context: dict[str, str]
) -> bool:
    """IAM's resource-policy decision for one request (only the operators the template uses)."""

    def applies(statement: dict[str, Any]) -> bool:
        return (
            _principal_matches(statement["Principal"], account)
            and any(matches(a, action, case_sensitive=False) for a in _as_list(statement["Action"]))
            and any(matches(r, resource) for r in _as_list(statement["Resource"]))
            and _conditions_hold(statement.get("Condition", {}), context)
        )

    if any(s["Effect"] == "Deny" and applies(s) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and applies(s) for s in statements)


TLS: Final = {"aws:SecureTransport": "true"}


def _s3(resolver: Resolver, account: str, action: str, resource: str, context: dict[str, str] = TLS) -> bool:
    policy = "RawImageBucketPolicy" if f":::{RAW}/" in resource else "ImageBucketPolicy"
    return allowed(_statements(resolver, policy, "PolicyDocument"), account, action, resource, context)


def _kms(resolver: Resolver, account: str, via: str) -> bool:
    context = {"kms:ViaService": f"{via}.{REGION}.amazonaws.com"}
    key = "arn:aws-cn:kms:cn-north-1:123456789012:key/data-key-id"
    return allowed(_statements(resolver, "DataKey", "KeyPolicy"), account, "kms:Decrypt", key, context)


def test_gov_cloud_cannot_read_a_raw_image(resolver: Resolver) -> None:
    assert not _s3(resolver, GOV, "s3:GetObject", RAW_OBJECT)
    assert not _s3(resolver, GOV, "s3:GetObjectVersion", RAW_OBJECT)


def test_gov_cloud_reads_face_blurred_thumbnails_only(resolver: Resolver) -> None:
    assert _s3(resolver, GOV, "s3:GetObject", BLURRED)
    assert not _s3(resolver, GOV, "s3:GetObject", THUMBNAIL)  # the unblurred 320 px thumbnail
    assert not _s3(resolver, GOV, "s3:ListBucket", f"arn:aws-cn:s3:::{IMAGES}")  # no enumerating digests
    assert not _s3(resolver, GOV, "s3:PutObject", BLURRED)


def test_police_video_reads_raw_and_derived_images(resolver: Resolver) -> None:
    for resource in (RAW_OBJECT, BLURRED, THUMBNAIL):
        assert _s3(resolver, POLICE, "s3:GetObject", resource)
    assert not _s3(resolver, POLICE, "s3:DeleteObject", RAW_OBJECT)


def test_other_accounts_and_plain_http_read_nothing(resolver: Resolver) -> None:
    for resource in (RAW_OBJECT, BLURRED, THUMBNAIL):
        assert not _s3(resolver, STRANGER, "s3:GetObject", resource)
    assert not _s3(resolver, POLICE, "s3:GetObject", RAW_OBJECT, {"aws:SecureTransport": "false"})


def test_consumers_decrypt_image_objects_only_through_s3(resolver: Resolver) -> None:
    assert _kms(resolver, GOV, "s3") and _kms(resolver, POLICE, "s3")
    assert not _kms(resolver, GOV, "lambda")
    assert not _kms(resolver, STRANGER, "s3")


def test_a_town_without_consumers_grants_nothing() -> None:
    resolver = Resolver(
        load_template(TEMPLATE),
        Deployment(
            stack_name="anfang-330106",
            region=REGION,
            parameters={"TownCode": "330106"},
            # the resolver knows no pseudo AWS::NoValue: resolve it to "" (dropped with the non-dict statements)
            physical_ids={"RawImageBucket": RAW, "ImageBucket": IMAGES, "AWS::NoValue": ""},
        ),
    )
    assert not _s3(resolver, GOV, "s3:GetObject", BLURRED)
    assert not _s3(resolver, POLICE, "s3:GetObject", RAW_OBJECT)
    assert ACCOUNT_ID not in (GOV, POLICE, STRANGER)
