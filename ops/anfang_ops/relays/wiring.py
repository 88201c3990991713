"""Build a relay from its configuration: boto3 clients, the outbox, the queue reader, the upstream side.

One factory per relay (as Chalice wires its deployer in one place); everything is injected from here, so tests
build the same objects with moto-backed clients.

>>> relay = build_gat1400_relay(load_gat1400_config(path))
>>> relay.run(stop)
"""

from __future__ import annotations

from typing import Any

from anfang.contracts import Signer, load_private_key

from .config import Gat1400RelayConfig, HttpsRelayConfig, QueueConfig
from .errors import RelayConfigError
from .gat1400 import Gat1400Relay
from .https import HttpsRelay
from .images import S3Images
from .outbox import Outbox
from .reader import QueueReader

__all__ = ["aws_client", "build_gat1400_relay", "build_https_relay", "build_reader"]


def aws_client(name: str, queue: QueueConfig) -> Any:
    import boto3  # noqa: PLC0415 - only the cloud extra has it; keep ``anfang --help`` importable without it

    return boto3.session.Session(region_name=queue.region).client(name, endpoint_url=queue.endpoint_url)


def build_reader(queue: QueueConfig, carries: list[str] | None, sqs: Any | None = None) -> QueueReader:
    return QueueReader(
        sqs if sqs is not None else aws_client("sqs", queue),
        queue.url,
        carries=carries,
        wait_time_secs=queue.wait_time_secs,
        max_messages=queue.max_messages,
        visibility_timeout_secs=queue.visibility_timeout_secs,
    )


def build_gat1400_relay(config: Gat1400RelayConfig) -> Gat1400Relay:
    """The GA/T 1400 relay with its outbox, the police queue, S3 for the images and KMS for envelopes."""
    outbox = Outbox(config.outbox_path)
    return Gat1400Relay(
        config,
        outbox=outbox,
        reader=build_reader(config.queue, list(config.event_types)),
        images=S3Images(aws_client("s3", config.queue)),
        kms=aws_client("kms", config.queue),
    )


def build_https_relay(config: HttpsRelayConfig) -> HttpsRelay:
    """The HTTPS relay with its outbox, the gov_cloud queue and the relay's signing key."""
    try:
        private_key = load_private_key(config.private_key_pem())
    except ValueError as exc:
        raise RelayConfigError(f"upstream.private_key_file is not an Ed25519 private key: {exc}") from exc
    outbox = Outbox(config.outbox_path)
    return HttpsRelay(
        config,
        outbox=outbox,
        reader=build_reader(config.queue, config.event_types),
        signer=Signer(config.upstream.key_id, private_key),
    )
