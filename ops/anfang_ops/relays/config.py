"""The relays' TOML configuration (``anfang relay gat1400|https --config FILE``), validated with pydantic.

Names carry their unit (``wait_time_secs``, ``batch_max_megabytes``); unknown keys are refused, so a typo is
an error at start, not a silently ignored setting. Relative file names (passwords, keys) are looked up in
systemd's ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=``) when it is set, else beside the config file.
Examples: ``ops/packaging/relay-gat1400.example.toml``, ``ops/packaging/relay-https.example.toml``.

>>> config = load_gat1400_config(Path("/etc/anfang-relay/gat1400.toml"))
>>> config.upstream.url, config.outbox_path
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from anfang.contracts import validate_device_id

from .errors import RelayConfigError

__all__ = [
    "Gat1400RelayConfig",
    "Gat1400UpstreamConfig",
    "HttpsRelayConfig",
    "HttpsUpstreamConfig",
    "QueueConfig",
    "RetryConfig",
    "load_gat1400_config",
    "load_https_config",
    "read_secret_file",
]

Algorithm = Literal["MD5", "SHA-256"]
Gat1400EventType = Literal["face_capture", "plate_capture"]
_ALGORITHMS: tuple[Algorithm, ...] = ("SHA-256", "MD5")
_GAT1400_TYPES: tuple[Gat1400EventType, ...] = ("face_capture", "plate_capture")
_LOOPBACK = ("127.", "localhost", "[::1]", "::1")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueueConfig(_Model):
    """Where records come from: the destination's SQS queue (long poll)."""

    url: str
    region: str | None = None
    #: Only for a local stack (``AWS_ENDPOINT_URL`` works too).
    endpoint_url: str | None = None
    wait_time_secs: Annotated[int, Field(ge=0, le=20)] = 20
    max_messages: Annotated[int, Field(ge=1, le=10)] = 10
    #: How long a received message stays invisible while its records are put in the outbox.
    visibility_timeout_secs: Annotated[int, Field(ge=0, le=43200)] | None = None


class RetryConfig(_Model):
    """Full-jitter exponential backoff per record and for the upstream as a whole."""

    initial_secs: Annotated[float, Field(gt=0, le=3600)] = 1.0
    max_secs: Annotated[float, Field(gt=0, le=86400)] = 300.0
    #: A Retry-After longer than this is capped (a misconfigured upstream must not park the relay for days).
    retry_after_max_secs: Annotated[float, Field(gt=0, le=86400)] = 3600.0


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s):// URL")
    return url.rstrip("/")


class Gat1400UpstreamConfig(_Model):
    """The upper view library (视图库) the relay cascades into, as a lower library."""

    #: Base URL of the upper library; the relay calls ``<url>/VIID/System/Register``, ``<url>/VIID/Faces``, …
    url: str
    #: This relay's own 20-digit id as the lower library (what it registers as, ``User-Identify``).
    device_id: str
    username: str
    password: str | None = None
    password_file: str | None = None
    #: Digest algorithms the relay accepts from the upstream's challenges, most preferred first.
    digest_algorithms: list[Algorithm] = Field(default_factory=lambda: list(_ALGORITHMS), min_length=1)
    keepalive_interval_secs: Annotated[float, Field(gt=0, le=3600)] = 60.0
    request_timeout_secs: Annotated[float, Field(gt=0, le=600)] = 30.0
    batch_max_records: Annotated[int, Field(ge=1, le=1000)] = 50
    batch_max_megabytes: Annotated[float, Field(gt=0, le=64)] = 8.0
    #: Extension field carrying the anfang event id in each object ("" leaves it out for a strict upstream);
    #: the object id (FaceID / MotorVehicleID) is always deterministic per (device_id, event_id).
    event_id_field: str = "AnfangEventID"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)

    @field_validator("device_id")
    @classmethod
    def _device(cls, value: str) -> str:
        return validate_device_id(value)


class HttpsUpstreamConfig(_Model):
    """The county data platform's HTTPS endpoint."""

    url: str
    #: The RFC 7638 thumbprint of the relay's Ed25519 key (``anfang-edge keys gen`` prints it).
    key_id: str
    private_key_file: str
    request_timeout_secs: Annotated[float, Field(gt=0, le=600)] = 30.0
    batch_max_records: Annotated[int, Field(ge=1, le=1000)] = 100
    batch_max_megabytes: Annotated[float, Field(gt=0, le=64)] = 4.0

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        url = _check_url(value)
        host = urlsplit(url).hostname or ""
        if url.startswith("http://") and not host.startswith(_LOOPBACK):
            raise ValueError("must be https:// (plain http only to a loopback address, for tests)")
        return url


class _RelayConfig(_Model):
    #: The outbox lives here (systemd ``StateDirectory=``).
    state_dir: Path
    #: How long a delivered record's key is remembered, so a queue redelivery is not sent again.
    dedupe_window_hours: Annotated[float, Field(gt=0, le=24 * 90)] = 168.0
    queue: QueueConfig
    retry: RetryConfig = RetryConfig()
    #: Where relative secret file names are read from (set from the environment by the loader).
    secrets_dir: Path | None = None


class Gat1400RelayConfig(_RelayConfig):
    """``anfang relay gat1400``: police_video records → the police view library (GA/T 1400 cascade)."""

    relay: Literal["gat1400"] = "gat1400"
    upstream: Gat1400UpstreamConfig
    #: Record types the relay carries; GA/T 1400 has objects for these two.
    event_types: list[Gat1400EventType] = Field(default_factory=lambda: list(_GAT1400_TYPES), min_length=1)

    @property
    def outbox_path(self) -> Path:
        return self.state_dir / "gat1400-outbox.sqlite3"

    def password(self) -> str:
        if (self.upstream.password is None) == (self.upstream.password_file is None):
            raise RelayConfigError("upstream: give exactly one of password and password_file")
        if self.upstream.password is not None:
            return self.upstream.password
        assert self.upstream.password_file is not None
        return read_secret_file(self.upstream.password_file, self.secrets_dir).decode("utf-8").strip()


class HttpsRelayConfig(_RelayConfig):
    """``anfang relay https``: gov_cloud records → the county data platform, signed (RFC 9421)."""

    relay: Literal["https"] = "https"
    upstream: HttpsUpstreamConfig
    #: Record types the relay carries (all by default).
    event_types: list[str] | None = None

    @property
    def outbox_path(self) -> Path:
        return self.state_dir / "https-outbox.sqlite3"

    def private_key_pem(self) -> bytes:
        return read_secret_file(self.upstream.private_key_file, self.secrets_dir)


def read_secret_file(name: str, secrets_dir: Path | None) -> bytes:
    """A secret file's bytes; refused when its group or others may read it (as ssh refuses a key)."""
    path = Path(name)
    if not path.is_absolute() and secrets_dir is not None:
        path = secrets_dir / path
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = path.read_bytes()
    except OSError as exc:
        raise RelayConfigError(f"cannot read {path}: {exc.strerror}") from exc
    if mode & 0o077 and not os.environ.get("CREDENTIALS_DIRECTORY"):
        raise RelayConfigError(f"{path} may be read by its group or others (mode {mode:o}); chmod 600 it")
    return data


_C = TypeVar("_C", Gat1400RelayConfig, HttpsRelayConfig)


def _load(path: Path, model: type[_C]) -> _C:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RelayConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RelayConfigError(f"{path} is not valid TOML: {exc}") from exc
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    raw.setdefault("secrets_dir", credentials or str(path.resolve().parent))
    if "state_dir" in raw and not Path(raw["state_dir"]).is_absolute():
        raw["state_dir"] = str(path.resolve().parent / raw["state_dir"])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise RelayConfigError(f"{path}: {where}: {first['msg']}") from exc


def load_gat1400_config(path: Path) -> Gat1400RelayConfig:
    """Read and validate the GA/T 1400 relay's TOML file."""
    return _load(path, Gat1400RelayConfig)


def load_https_config(path: Path) -> HttpsRelayConfig:
    """Read and validate the HTTPS relay's TOML file."""
    return _load(path, HttpsRelayConfig)
