"""The agent's configuration: one TOML file validated by a pydantic model; every name carries its unit.

>>> config = load_config(Path("/etc/anfang-edge/agent.toml"))
>>> config.batch_max_events
100
"""

from __future__ import annotations

import ipaddress
import os
import stat
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    IPvAnyNetwork,
    ValidationError,
    field_validator,
    model_validator,
)

from anfang.contracts import MAX_BODY_BYTES, MAX_EVENTS_PER_BATCH, validate_device_id

from .errors import ConfigError

if TYPE_CHECKING:
    from .sources.listener import ListenerLimits

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AgentConfig",
    "Gat1400DeviceConfig",
    "Gat1400SourceConfig",
    "HttpDeviceConfig",
    "HttpSourceConfig",
    "SimulatorSourceConfig",
    "SourceConfig",
    "WatchDirSourceConfig",
    "check_private_file",
    "default_fixtures_dir",
    "load_config",
    "read_secret_file",
]

DEFAULT_CONFIG_PATH: Final = Path("/etc/anfang-edge/agent.toml")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Listen addresses that mean "every interface"; allowed only with ``listen_all_interfaces = true``.
_ALL_INTERFACES: Final = frozenset({"", "0.0.0.0", "::", "[::]", "*"})


def _credentials_path(path: Path) -> Path:
    """A relative path in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) when it is there."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if not path.is_absolute() and credentials and (Path(credentials) / path).exists():
        return Path(credentials) / path
    return path


def check_private_file(path: Path, what: str) -> None:
    """Refuse a secret file that its group or others may read or write (as ssh refuses such keys)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{what} {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
        )


def read_secret_file(path: Path, what: str) -> str:
    """The text of a secret file (trailing newline dropped), refused unless only its owner may read it."""
    path = _credentials_path(path)
    check_private_file(path, what)
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


class _ListenerConfig(_Model):
    """What every LAN listener shares: where it binds and the bounds of ``sources.listener``."""

    listen_host: str = "127.0.0.1"
    #: The largest request body accepted (413 past it), checked on Content-Length before reading.
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1024, le=64 * 1024 * 1024)
    #: Binding to every interface (0.0.0.0, ::) must be asked for explicitly; prefer the LAN address.
    listen_all_interfaces: bool = False
    #: How long one read may wait, and how long an idle keep-alive connection stays open.
    idle_timeout_secs: float = Field(default=10.0, gt=0, le=600)
    #: The request's head and body together must arrive within this (slow-drip clients are cut off).
    request_timeout_secs: float = Field(default=60.0, gt=0, le=3600)
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    #: Bodies held in memory at once by all workers of this listener (503 / Device Busy past it). Parsing
    #: holds a few copies of each, so the agent's worst case is about 50 MB + 5 x this per listener.
    max_inflight_body_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024)
    workers: int = Field(default=16, ge=1, le=256)
    max_connections: int = Field(default=128, ge=1, le=10_000)
    max_connections_per_address: int = Field(default=8, ge=1, le=10_000)

    @model_validator(mode="after")
    def _explicit_all_interfaces(self) -> _ListenerConfig:
        if self.listen_host.strip() in _ALL_INTERFACES and not self.listen_all_interfaces:
            raise ValueError(
                f"listen_host {self.listen_host!r} binds every interface; give the LAN address,"
                " or set listen_all_interfaces = true"
            )
        if self.max_inflight_body_bytes < self.max_body_bytes:
            raise ValueError("max_inflight_body_bytes must be at least max_body_bytes")
        return self

    def limits(self) -> ListenerLimits:
        """The listener's bounds."""
        from .sources.listener import ListenerLimits  # noqa: PLC0415 - config must not import the sources

        return ListenerLimits(
            max_body_bytes=self.max_body_bytes,
            max_header_bytes=self.max_header_bytes,
            max_inflight_body_bytes=self.max_inflight_body_bytes,
            idle_timeout_secs=self.idle_timeout_secs,
            request_timeout_secs=self.request_timeout_secs,
            workers=self.workers,
            max_connections=self.max_connections,
            max_connections_per_address=self.max_connections_per_address,
        )


def _allowed(address: str, allow_from: list[IPvAnyNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in allow_from)


def _check_device_ids(ids: list[str]) -> list[str]:
    for device_id in ids:
        validate_device_id(device_id)
    return ids


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
    #: A load profile: ``[[after_secs, rate_per_sec], ...]``, each rate holding from its offset (seconds after
    #: ``started_at``) until the next one; before the first step ``rate_per_sec`` holds. Used by load tests.
    rate_steps: list[tuple[float, float]] = Field(default_factory=list, max_length=1000)
    #: The profile's time zero (Unix seconds). With it, events are due by the clock since then, counted from
    #: sequence 0, so an agent restarted after a crash catches up with the profile instead of starting it over.
    started_at: float | None = Field(default=None, gt=0)
    #: Stop after this many events in total (across restarts: progress is kept in the spool); None: forever.
    max_events: int | None = Field(default=None, ge=0)
    #: A broken camera among the devices: every Nth event's first image is cut in half (a truncated JPEG, which
    #: the API rejects as ``image_invalid``). None: every camera works. Used by load tests.
    broken_every: int | None = Field(default=None, ge=2)
    #: Attach the fixture JPEGs; without images only device_status / access / visitor / alarm bodies differ.
    images: bool = True
    fixtures_dir: Path | None = Field(default_factory=default_fixtures_dir)
    seed: int | None = None

    @field_validator("rate_steps")
    @classmethod
    def _steps_ordered(cls, steps: list[tuple[float, float]]) -> list[tuple[float, float]]:
        offsets = [after for after, _ in steps]
        if offsets != sorted(offsets) or any(after < 0 or rate < 0 for after, rate in steps):
            raise ValueError("rate_steps must be [after_secs, rate_per_sec] pairs, offsets ascending, none negative")
        return steps

    def due(self, elapsed_secs: float) -> float:
        """How many events the profile has made due ``elapsed_secs`` after its time zero."""
        total, at, rate = 0.0, 0.0, self.rate_per_sec
        for after, next_rate in self.rate_steps:
            if after >= elapsed_secs:
                break
            total += (after - at) * rate
            at, rate = after, next_rate
        return total + max(0.0, elapsed_secs - at) * rate

    def device_ids(self) -> set[str]:
        """The virtual devices' ids: the prefix and serials 000001 up."""
        return {f"{self.device_id_prefix}{serial:06d}" for serial in range(1, self.devices + 1)}


class WatchDirSourceConfig(_Model):
    """Cameras FTP-uploading ``*.jpg`` plus a ``*.json`` sidecar (written last) into a folder."""

    type: Literal["watch_dir"]
    path: Path
    poll_ms: int = Field(default=500, ge=10)
    #: A file is complete once it has not changed for this long (FTP writes under the final name).
    settle_ms: int = Field(default=2000, ge=0)
    #: An image without sidecar, or a sidecar whose images never came, goes to failed/ after this long.
    orphan_secs: float = Field(default=300.0, ge=0)
    #: Files in done/ (already spooled; they hold faces and names) are deleted this long after the move.
    done_retention_hours: float = Field(default=24.0, ge=0)


class HttpDeviceConfig(_Model):
    """One device allowed to push to the http source: its HMAC secret, where it may connect from, its children."""

    #: The shared HMAC-SHA256 secret (at least 32 characters), inline or in ``secret_file``.
    secret: str | None = Field(default=None, min_length=32, repr=False)
    #: A file holding the secret (owner-only mode); relative paths: $CREDENTIALS_DIRECTORY, else cwd.
    secret_file: Path | None = None
    #: Addresses or CIDRs the device may connect from; empty: any address on the LAN.
    allow_from: list[IPvAnyNetwork] = Field(default_factory=list)
    #: Further device ids this device may post events for (e.g. the door readers behind an access controller).
    child_devices: list[str] = Field(default_factory=list)

    _check_children = field_validator("child_devices")(_check_device_ids)

    @model_validator(mode="after")
    def _one_secret(self) -> HttpDeviceConfig:
        if (self.secret is None) == (self.secret_file is None):
            raise ValueError("set exactly one of secret and secret_file")
        return self

    def resolve_secret(self) -> bytes:
        """The secret's bytes, read from ``secret_file`` when that is set."""
        if self.secret is not None:
            return self.secret.encode("utf-8")
        assert self.secret_file is not None
        secret = read_secret_file(self.secret_file, "secret_file")
        if len(secret) < 32:
            raise ConfigError(f"secret_file {self.secret_file} holds fewer than 32 characters")
        return secret.encode("utf-8")

    def allows(self, address: str) -> bool:
        """Whether a connection from ``address`` may speak for this device."""
        return not self.allow_from or _allowed(address, self.allow_from)


class HttpSourceConfig(_ListenerConfig):
    """A LAN receiver for devices that push our v1 event JSON, each request signed with its device's secret."""

    type: Literal["http"]
    listen_port: int = Field(default=8089, ge=0, le=65535)
    #: How long a push waits for room in a full spool (when_full = "block") before 503.
    block_timeout_secs: float = Field(default=5.0, ge=0)
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1024, le=MAX_BODY_BYTES)
    #: A request's X-Anfang-Timestamp may be this far from the gateway's clock.
    max_clock_skew_secs: float = Field(default=300.0, gt=0, le=3600)
    #: Device id (20 digits) → its secret; a device not listed is refused.
    devices: dict[str, HttpDeviceConfig] = Field(default_factory=dict)

    @field_validator("devices")
    @classmethod
    def _device_ids(cls, value: dict[str, HttpDeviceConfig]) -> dict[str, HttpDeviceConfig]:
        for device_id in value:
            validate_device_id(device_id)
        return value

    def device_ids(self) -> set[str]:
        """Every device this source may spool events for."""
        return {d for device_id, device in self.devices.items() for d in (device_id, *device.child_devices)}


class Gat1400DeviceConfig(_Model):
    """Digest credentials of one GA/T 1400 device (password inline or in a file readable by the agent)."""

    username: str = Field(min_length=1, max_length=128, pattern=r"^[\x21\x23-\x7e]+$")
    password: str | None = Field(default=None, min_length=1, repr=False)
    #: A file holding the password (trailing newline ignored, owner-only mode); relative: $CREDENTIALS_DIRECTORY.
    password_file: Path | None = None
    #: Addresses or CIDRs the camera may register from; empty: any address on the LAN. After registering, every
    #: request must come from the address it registered from, whatever this says.
    allow_from: list[IPvAnyNetwork] = Field(default_factory=list)
    #: Device ids of the cameras behind this device (an NVR's channels) whose objects it may upload.
    child_devices: list[str] = Field(default_factory=list)
    #: "required": every request after Register must carry valid Digest credentials; "optional": those it
    #: carries are checked, and once a camera has sent them, its registration requires them.
    request_digest: Literal["optional", "required"] = "optional"

    _check_children = field_validator("child_devices")(_check_device_ids)

    def allows(self, address: str) -> bool:
        """Whether the camera may register from ``address``."""
        return not self.allow_from or _allowed(address, self.allow_from)

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
        return read_secret_file(self.password_file, "password_file")


class Gat1400SourceConfig(_ListenerConfig):
    """A GA/T 1400 (视图库, VIID) receiver: cameras register with Digest and push faces and vehicles."""

    type: Literal["gat1400"]
    listen_port: int = Field(default=1400, ge=0, le=65535)
    #: A list of a few objects with full-size scene images (each image at most 1 MiB) is several MiB of base64.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
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
        usernames = [device.username for device in value.values()]
        if len(set(usernames)) != len(usernames):
            raise ValueError("each device needs its own username (the Digest username names the device)")
        return value

    def device_ids(self) -> set[str]:
        """Every device this source may spool events for (cameras and their children)."""
        return {d for device_id, device in self.devices.items() for d in (device_id, *device.child_devices)}


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
    #: The device ids the key is registered for (``anfang devices register``). An event for any other device
    #: is refused at spool time (the API would refuse it). Unset: not checked, and the agent warns at start.
    key_device_ids: list[str] | None = None
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
    #: Quarantined events (personal data the API refused) are deleted this long after quarantine.
    quarantine_retention_hours: float = Field(default=720.0, gt=0)

    spool_max_megabytes: float = Field(default=512.0, gt=0)
    when_full: Literal["block", "drop_oldest"] = "block"

    watchdog: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    sources: list[SourceConfig] = Field(default_factory=list)

    @field_validator("api_url")
    @classmethod
    def _https(cls, value: HttpUrl) -> HttpUrl:
        if value.scheme not in ("http", "https") or value.query or value.fragment:
            raise ValueError("api_url must be https://host[:port][/stage] without query or fragment")
        if value.scheme == "http" and not _is_loopback(value.host or ""):
            raise ValueError("api_url must be https (plain http only to a loopback address)")
        return value

    @field_validator("key_device_ids")
    @classmethod
    def _key_devices(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_device_ids(value)

    @model_validator(mode="after")
    def _sources_within_key(self) -> AgentConfig:
        if self.key_device_ids is None:
            return self
        bound = set(self.key_device_ids)
        for index, source in enumerate(self.sources):
            if isinstance(source, HttpSourceConfig | Gat1400SourceConfig | SimulatorSourceConfig):
                outside = sorted(source.device_ids() - bound)
                if outside:
                    raise ValueError(
                        f"sources.{index}: device {outside[0]} is not in key_device_ids (its events would be refused)"
                    )
        return self

    @property
    def spool_path(self) -> Path:
        return self.state_dir / "spool.sqlite3"

    @property
    def spool_max_bytes(self) -> int:
        return int(self.spool_max_megabytes * 1024 * 1024)

    @property
    def key_devices(self) -> frozenset[str] | None:
        """The devices the key may send for, or None when the config does not say."""
        return None if self.key_device_ids is None else frozenset(self.key_device_ids)

    def resolve_private_key_file(self) -> Path:
        """Where the private key is: ``$CREDENTIALS_DIRECTORY/<name>`` for a relative name under systemd."""
        return _credentials_path(self.private_key_file)


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
