"""Test support for the ingest API: the AWS resources it expects, created in moto, and signed requests.

The resources come from template.yaml (``tests.template_stack``), so they are the ones a town deploys.
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

from anfang.aws.registry import DeviceRegistry, Site
from anfang.contracts import KeyInfo, Signer, generate_private_key, new_event_id
from anfang.contracts.examples import example_events
from tests.template_stack import deploy_test_stack

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "functions" / "api"
IMAGES = Path("/work/shared/fixtures/images")
if not IMAGES.exists():  # CI lays shared/ beside the clone
    IMAGES = ROOT.parent / "shared" / "fixtures" / "images"
DEVICE_ID = "33010600001320000001"
OTHER_DEVICE_ID = "33010600001320000002"
REGION = "us-east-1"
PEPPER = "a-test-pepper-of-32-bytes-length"


def fixture_image(name: str = "face_crop.jpg") -> bytes:
    return (IMAGES / name).read_bytes()


# What each ``Stack.names`` key is, by the API function's environment variable that carries it.
NAME_VARIABLES = {
    "devices": "DEVICES_TABLE_NAME",
    "nonces": "NONCES_TABLE_NAME",
    "seen": "SEEN_EVENTS_TABLE_NAME",
    "health_codes": "HEALTH_CODES_TABLE_NAME",
    "snapshots": "HEALTH_CODE_SNAPSHOTS_TABLE_NAME",
    "raw_bucket": "RAW_IMAGE_BUCKET_NAME",
    "kms_key": "RAW_IMAGE_KMS_KEY_ID",
    "snapshot_bucket": "HEALTH_CODE_SNAPSHOT_BUCKET_NAME",
    "pepper": "HEALTH_CODE_PEPPER_SECRET_ARN",
    "analyse_queue": "ANALYSE_QUEUE_URL",
    "process_queue": "PROCESS_QUEUE_URL",
}
# Set differently from the template, on purpose: tests register devices and keys after the app's cold start
# and expect the very next request to see them, so the registry cache is off.
TEST_ENVIRONMENT = {"REGISTRY_CACHE_TTL_SECS": "0"}


@dataclass
class Stack:
    """Names of the resources of one test stack, and the environment the API function gets."""

    prefix: str = "anfang-test"
    names: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)  # ApiFunction's, as the template resolves it

    def env(self) -> dict[str, str]:
        return {**self.environment, **TEST_ENVIRONMENT}


def create_stack(session: Any, prefix: str = "anfang-test") -> Stack:
    """Deploy template.yaml (in moto) as stack ``prefix`` and return what the ingest API is configured with."""
    deployed = deploy_test_stack(session, prefix)
    environment = deployed.functions["ApiFunction"].environment
    names = {key: environment[variable] for key, variable in NAME_VARIABLES.items()}
    # The template generates a random pepper; the tests compute expected person keys from a known one.
    session.client("secretsmanager").put_secret_value(SecretId=names["pepper"], SecretString=PEPPER)
    return Stack(prefix, names, dict(environment))


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
