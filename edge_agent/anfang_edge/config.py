"""The agent's configuration: one TOML file validated by a pydantic model; every name carries its unit.

>>> config = load_config(Path("/etc/anfang-edge/agent.toml"))
>>> config.batch_max_events
100
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator, model_validator

from anfang.contracts import MAX_BODY_BYTES, MAX_EVENTS_PER_BATCH, validate_device_id

from .errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AgentConfig",
    "Gat1400DeviceConfig",
    "Gat1400SourceConfig",
    "HttpSourceConfig",
    "SimulatorSourceConfig",
    "SourceConfig",
    "WatchDirSourceConfig",
    "default_fixtures_dir",
    "load_config",
]

DEFAULT_CONFIG_PATH: Final = Path("/etc/anfang-edge/agent.toml")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def default_fixtures_dir() -> Path | None:
    """The repository's ``../shared/fixtures/images`` when it exists (development checkouts), else None."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "fixtures" / "images"
        if candidate.is_dir():
            return candidate
    return None


class SimulatorSourceConfig(_Model):
    """A fleet of virtual devices producing all six event types."""

    type: Literal["simulator"]
    devices: int = Field(default=4, ge=1, le=10_000)
    #: First 14 digits of the virtual devices' ids; the last 6 are their serials.
    device_id_prefix: str = Field(default="33010600001320", pattern=r"^[1-9][0-9]{13}$")
    rate_per_sec: float = Field(default=5.0, gt=0, le=100_000)
    #: Stop after this many events in total (across restarts: progress is kept in the spool); None: forever.
    max_events: int | None = Field(default=None, ge=0)
    #: Attach the fixture JPEGs; without images only device_status / access / visitor / alarm bodies differ.
    images: bool = True
    fixtures_dir: Path | None = Field(default_factory=default_fixtures_dir)
    seed: int | None = None


class WatchDirSourceConfig(_Model):
    """Cameras FTP-uploading ``*.jpg`` plus a ``*.json`` sidecar (written last) into a folder."""

    type: Literal["watch_dir"]
    path: Path
    poll_ms: int = Field(default=500, ge=10)
    #: A file is complete once it has not changed for this long (FTP writes under the final name).
    settle_ms: int = Field(default=2000, ge=0)
    #: An image without sidecar, or a sidecar whose images never came, goes to failed/ after this long.
    orphan_secs: float = Field(default=300.0, ge=0)


class HttpSourceConfig(_Model):
    """A LAN receiver for devices that can push our v1 event JSON (unsigned, on the site network)."""

    type: Literal["http"]
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8089, ge=0, le=65535)
    #: How long a push waits for room in a full spool (when_full = "block") before 503.
    block_timeout_secs: float = Field(default=5.0, ge=0)


class Gat1400DeviceConfig(_Model):
    """Digest credentials of one GA/T 1400 device (password inline or in a file readable by the agent)."""

    username: str = Field(min_length=1, max_length=128, pattern=r"^[\x21\x23-\x7e]+$")
    password: str | None = Field(default=None, min_length=1, repr=False)
    #: A file holding the password (trailing newline ignored); relative paths: $CREDENTIALS_DIRECTORY, else cwd.
    password_file: Path | None = None

    @model_validator(mode="after")
    def _one_password(self) -> Gat1400DeviceConfig:
        if (self.password is None) == (self.password_file is None):
            raise ValueError("set exactly one of password and password_file")
        return self

    def resolve_password(self) -> str:
        """The password, read from ``password_file`` when that is set."""
        if self.password is not None:
            return self.password
        assert self.password_file is not None
        path = self.password_file
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        if not path.is_absolute() and credentials and (Path(credentials) / path).exists():
            path = Path(credentials) / path
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read password_file {path}: {exc.strerror}") from exc


class Gat1400SourceConfig(_Model):
    """A GA/T 1400 (视图库, VIID) receiver: cameras register with Digest and push faces and vehicles."""

    type: Literal["gat1400"]
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=1400, ge=0, le=65535)
    #: This view library's own 20-digit id (answered by /VIID/System/Time).
    server_id: str = Field(default="00000000005030000001", pattern=r"^[0-9]{20}$")
    realm: str = Field(default="anfang-edge", min_length=1, max_length=64, pattern=r'^[^"\\]+$')
    digest_algorithms: list[Literal["SHA-256", "MD5"]] = Field(default=["SHA-256", "MD5"], min_length=1)
    nonce_ttl_secs: float = Field(default=300.0, gt=0)
    #: A registered device silent for longer is offline: a device_status event, and it must register again.
    keepalive_timeout_secs: float = Field(default=180.0, gt=0)
    #: How long a push waits for room in a full spool (when_full = "block") before answering Device Busy.
    block_timeout_secs: float = Field(default=5.0, ge=0)
    #: Device id (20 digits) → Digest credentials.
    devices: dict[str, Gat1400DeviceConfig] = Field(default_factory=dict)

    @field_validator("devices")
    @classmethod
    def _device_ids(cls, value: dict[str, Gat1400DeviceConfig]) -> dict[str, Gat1400DeviceConfig]:
        for device_id in value:
            validate_device_id(device_id)
        return value


SourceConfig = Annotated[
    SimulatorSourceConfig | WatchDirSourceConfig | HttpSourceConfig | Gat1400SourceConfig,
    Field(discriminator="type"),
]


class AgentConfig(_Model):
    """The whole agent configuration (``agent.toml``)."""

    #: Base URL of the town's API; a path prefix (an API Gateway stage) is called but not signed.
    api_url: HttpUrl
    #: The key id printed by ``anfang-edge keys gen`` and registered for the site's devices.
    key_id: str = Field(min_length=1, max_length=128, pattern=r"^[\x21\x23-\x5b\x5d-\x7e]+$")
    #: PKCS#8 PEM; a relative path is looked up in $CREDENTIALS_DIRECTORY (systemd LoadCredential) first.
    private_key_file: Path
    state_dir: Path = Path("/var/lib/anfang-edge")

    batch_max_events: int = Field(default=100, ge=1, le=MAX_EVENTS_PER_BATCH)
    #: Request body bound; sending holds a few of these in memory (1 MiB keeps RSS under 60 MB with images).
    batch_max_bytes: int = Field(default=1024 * 1024, ge=4096, le=MAX_BODY_BYTES)
    linger_ms: int = Field(default=200, ge=0, le=60_000)
    request_timeout_secs: float = Field(default=30.0, gt=0)
    retry_initial_ms: int = Field(default=500, ge=1)
    retry_max_secs: float = Field(default=300.0, gt=0)
    #: Events still undelivered after this long are moved to quarantine (reason retention_expired).
    retention_hours: float = Field(default=168.0, gt=0)

    spool_max_megabytes: float = Field(default=512.0, gt=0)
    when_full: Literal["block", "drop_oldest"] = "block"

    watchdog: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    sources: list[SourceConfig] = Field(default_factory=list)

    @field_validator("api_url")
    @classmethod
    def _http_or_https(cls, value: HttpUrl) -> HttpUrl:
        if value.scheme not in ("http", "https") or value.query or value.fragment:
            raise ValueError("api_url must be http(s)://host[:port][/stage] without query or fragment")
        return value

    @property
    def spool_path(self) -> Path:
        return self.state_dir / "spool.sqlite3"

    @property
    def spool_max_bytes(self) -> int:
        return int(self.spool_max_megabytes * 1024 * 1024)

    def resolve_private_key_file(self) -> Path:
        """Where the private key is: ``$CREDENTIALS_DIRECTORY/<name>`` for a relative name under systemd."""
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        if not self.private_key_file.is_absolute() and credentials:
            candidate = Path(credentials) / self.private_key_file
            if candidate.exists():
                return candidate
        return self.private_key_file


def _first_error(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    path = ".".join(str(part) for part in first["loc"])
    return f"{path}: {first['msg']}" if path else first["msg"]


def parse_config(text: str, *, base_dir: Path | None = None) -> AgentConfig:
    """Validate TOML text; relative paths other than the private key are resolved against ``base_dir``."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from exc
    try:
        config = AgentConfig.model_validate(raw)
    except ValidationError as exc:
        count = exc.error_count()
        more = f" (and {count - 1} more)" if count > 1 else ""
        raise ConfigError(_first_error(exc) + more) from exc
    for source in config.sources:
        if isinstance(source, SimulatorSourceConfig):
            validate_device_id(source.device_id_prefix + "000000")
    if base_dir is not None and not config.state_dir.is_absolute():
        config = config.model_copy(update={"state_dir": base_dir / config.state_dir})
    return config


def load_config(path: Path) -> AgentConfig:
    """Read and validate the TOML config at ``path``; raises ``ConfigError`` with one readable line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    return parse_config(text, base_dir=path.parent)
