"""Test support for the ingest API: the AWS resources it expects, created in moto, and signed requests.

The resource list here mirrors what the template issue must declare (see docs/api.md, "Resources").
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anfang.contracts import KeyInfo, Signer, generate_private_key, new_event_id
from anfang.contracts.examples import example_events
from anfang.registry import DeviceRegistry, Site

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "functions" / "api"
IMAGES = Path("/work/shared/fixtures/images")
if not IMAGES.exists():  # CI lays shared/ beside the clone
    IMAGES = ROOT.parent / "shared" / "fixtures" / "images"
TOWN = "330106"
DEVICE_ID = "33010600001320000001"
OTHER_DEVICE_ID = "33010600001320000002"
REGION = "us-east-1"
PEPPER = "a-test-pepper-of-32-bytes-length"


def fixture_image(name: str = "face_crop.jpg") -> bytes:
    return (IMAGES / name).read_bytes()


@dataclass
class Stack:
    """Names of the resources of one test stack, and the environment the API function gets."""

    prefix: str = "anfang-test"
    names: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {
            "TOWN_CODE": TOWN,
            "DEVICES_TABLE_NAME": self.names["devices"],
            "NONCES_TABLE_NAME": self.names["nonces"],
            "SEEN_EVENTS_TABLE_NAME": self.names["seen"],
            "HEALTH_CODES_TABLE_NAME": self.names["health_codes"],
            "HEALTH_CODE_SNAPSHOTS_TABLE_NAME": self.names["snapshots"],
            "RAW_IMAGE_BUCKET_NAME": self.names["raw_bucket"],
            "RAW_IMAGE_KMS_KEY_ID": self.names["kms_key"],
            "HEALTH_CODE_SNAPSHOT_BUCKET_NAME": self.names["snapshot_bucket"],
            "HEALTH_CODE_PEPPER_SECRET_ARN": self.names["pepper"],
            "ANALYSE_QUEUE_URL": self.names["analyse_queue"],
            "PROCESS_QUEUE_URL": self.names["process_queue"],
            "POWERTOOLS_METRICS_NAMESPACE": "anfang-test",
            "POWERTOOLS_SERVICE_NAME": "anfang-api",
            "REGISTRY_CACHE_TTL_SECS": "0",
        }


def _table(ddb: Any, name: str, key: str, ttl: str | None, gsi: dict[str, Any] | None = None) -> None:
    attrs = [{"AttributeName": key, "AttributeType": "S"}]
    kwargs: dict[str, Any] = {}
    if gsi is not None:
        attrs.append({"AttributeName": gsi["KeySchema"][0]["AttributeName"], "AttributeType": "S"})
        kwargs["GlobalSecondaryIndexes"] = [gsi]
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
        AttributeDefinitions=attrs,
        BillingMode="PAY_PER_REQUEST",
        **kwargs,
    )
    if ttl is not None:
        ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl})


def create_stack(session: Any, prefix: str = "anfang-test") -> Stack:
    """Create every resource the ingest API uses (in moto) and return their names."""
    ddb = session.client("dynamodb", region_name=REGION)
    sqs = session.client("sqs", region_name=REGION)
    s3 = session.client("s3", region_name=REGION)
    kms = session.client("kms", region_name=REGION)
    secretsmanager = session.client("secretsmanager", region_name=REGION)
    stack = Stack(prefix)
    n = stack.names
    n["devices"], n["nonces"], n["seen"] = f"{prefix}-devices", f"{prefix}-nonces", f"{prefix}-seen-events"
    n["health_codes"], n["snapshots"] = f"{prefix}-health-codes", f"{prefix}-health-code-snapshots"
    _table(
        ddb,
        n["devices"],
        "pk",
        None,
        gsi={
            "IndexName": "by_device",
            "KeySchema": [
                {"AttributeName": "device_id", "KeyType": "HASH"},
                {"AttributeName": "pk", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        },
    )
    _table(ddb, n["nonces"], "pk", "expires_at")
    _table(ddb, n["seen"], "event_id", "expires_at")
    _table(ddb, n["health_codes"], "person_key", "expires_at")
    _table(ddb, n["snapshots"], "snapshot_id", "expires_at")
    n["kms_key"] = kms.create_key(Description="raw images")["KeyMetadata"]["KeyId"]
    n["raw_bucket"], n["snapshot_bucket"] = f"{prefix}-raw-images", f"{prefix}-health-code-snapshots"
    for bucket in (n["raw_bucket"], n["snapshot_bucket"]):
        s3.create_bucket(Bucket=bucket)
    for queue in ("analyse", "process"):
        n[f"{queue}_queue"] = sqs.create_queue(QueueName=f"{prefix}-{queue}")["QueueUrl"]
    n["pepper"] = secretsmanager.create_secret(Name=f"{prefix}-health-code-pepper", SecretString=PEPPER)["ARN"]
    return stack


def load_app(name: str = "anfang_api_app") -> ModuleType:
    """Import ``functions/api/app.py`` afresh: a cold start with the current environment."""
    spec = importlib.util.spec_from_file_location(name, APP_DIR / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Device:
    """A registered device key and what it needs to sign requests."""

    device_id: str
    private_key: Ed25519PrivateKey
    info: KeyInfo

    @property
    def signer(self) -> Signer:
        return Signer(self.info.key_id, self.private_key)


def register_device(registry: DeviceRegistry, device_id: str = DEVICE_ID, *, new_device: bool = True) -> Device:
    if new_device:
        registry.register_device(device_id, Site("xihu-001", "residential_closed", "Lakeside Garden"))
    private = generate_private_key()
    info = registry.add_key(private.public_key(), role="device", device_ids=[device_id])
    return Device(device_id, private, info)


def register_partner(registry: DeviceRegistry) -> Device:
    private = generate_private_key()
    info = registry.add_key(private.public_key(), role="health_commission", name="county health commission")
    return Device("", private, info)


def image(raw: bytes, role: str = "face", content_type: str = "image/jpeg", **override: Any) -> dict[str, Any]:
    return {
        "role": role,
        "content_type": content_type,
        "data": base64.b64encode(raw).decode("ascii"),
        "sha256": hashlib.sha256(raw).hexdigest(),
        **override,
    }


def alarm_event(device_id: str = DEVICE_ID, **override: Any) -> dict[str, Any]:
    event = example_events()["alarm"]
    event.update(event_id=new_event_id(), device_id=device_id, images=[])
    event.update(override)
    return event


def face_event(raw: bytes | None = None, device_id: str = DEVICE_ID, **override: Any) -> dict[str, Any]:
    event = example_events()["face_capture"]
    event.pop("face", None)
    event.update(event_id=new_event_id(), device_id=device_id, images=[image(raw or fixture_image())])
    event.update(override)
    return event


def batch(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}, separators=(",", ":")).encode("utf-8")


def signed(signer: Signer, method: str, path: str, body: bytes = b"", **kwargs: Any) -> dict[str, str]:
    return signer.sign(method, path, body, nonce=secrets.token_urlsafe(16), **kwargs)
