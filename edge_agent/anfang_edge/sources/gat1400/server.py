"""The gat1400 source: a GA/T 1400 view library (视图库, VIID) on the LAN.

Devices register with HTTP Digest, keep alive, and push face, person and motor-vehicle lists. Every list object
becomes one v1 event (see :mod:`.mapping`), spooled in one durable put; the reply is one
``ResponseStatusObject`` per object, written only after the commit. Deviations from the standard that were
tolerated are counted per device in the spool's counters (``gat1400.<device id>.<deviation>``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from pydantic import ValidationError

from anfang.contracts import event_error, new_event_id, validate_event

from ...config import Gat1400SourceConfig
from ...errors import SpoolFullError
from ...spool import Spool, SpoolItem, item_from_event
from .digest import DigestAuth, DigestError
from .mapping import (
    CST,
    Deviation,
    ItemOutcome,
    StatusCode,
    checked_device_id,
    loads,
    map_face,
    map_motor_vehicle,
    map_person,
)

__all__ = ["CONTENT_TYPE", "Gat1400Source"]

log = logging.getLogger("anfang_edge.sources.gat1400")
CONTENT_TYPE: Final = "application/VIID+JSON"
#: A list of a few objects with full-size scene images is several MiB of base64.
MAX_REQUEST_BYTES: Final = 32 * 1024 * 1024
_OK: Final = "正常"
_LISTS: Final[dict[str, tuple[str, str, Callable[..., ItemOutcome]]]] = {
    "/VIID/Faces": ("FaceListObject", "FaceObject", map_face),
    "/VIID/MotorVehicles": ("MotorVehicleListObject", "MotorVehicleObject", map_motor_vehicle),
    "/VIID/Persons": ("PersonListObject", "PersonObject", map_person),
}


def viid_time(ts: float) -> str:
    """``YYYYMMDDhhmmss`` in China Standard Time."""
    return dt.datetime.fromtimestamp(ts, CST).strftime("%Y%m%d%H%M%S")


@dataclass(slots=True)
class _DeviceState:
    registered: bool = False
    last_seen: float = 0.0
    offline: bool = False  # went silent past the timeout; an online event is due when it registers again


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    source: Gat1400Source


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("gat1400 source: " + format, *args)

    def _send(self, reply: Reply) -> None:
        body = json.dumps(reply.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.send_response(reply.status)
        self.send_header("Content-Type", f"{CONTENT_TYPE};charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        source = self.server.source
        if path == "/VIID/System/Time":
            self._send(source.system_time())
        else:
            self._send(source.error(path, 404, StatusCode.INVALID_OPERATION, "no such resource", ""))

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        source = self.server.source
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            self._send(source.error(path, 411, StatusCode.INVALID_OPERATION, "Content-Length is required", ""))
            return
        if length > MAX_REQUEST_BYTES:
            self.close_connection = True
            self._send(source.error(path, 413, StatusCode.INVALID_OPERATION, "request body is too large", ""))
            return
        raw = self.rfile.read(length)
        self._send(
            source.handle_post(
                path,
                raw,
                authorization=self.headers.get("Authorization"),
                user_identify=self.headers.get("User-Identify"),
            )
        )


class Gat1400Source:
    """Listens on ``listen_host:listen_port`` (port 0: an ephemeral port, see ``port``)."""

    def __init__(
        self,
        config: Gat1400SourceConfig,
        spool: Spool,
        *,
        name: str = "gat1400",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.spool = spool
        self.name = name
        self._clock = clock
        self._credentials = {
            device_id: (device.username, device.resolve_password()) for device_id, device in config.devices.items()
        }
        self.digest = DigestAuth(
            realm=config.realm,
            algorithms=tuple(config.digest_algorithms),
            nonce_ttl_secs=config.nonce_ttl_secs,
            clock=clock,
        )
        self._states: dict[str, _DeviceState] = {}
        self._lock = threading.Lock()
        self._pending_status: list[SpoolItem] = []
        self._server = _Server((config.listen_host, config.listen_port), _Handler)
        self._server.source = self

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    # ------------------------------------------------------------------------------------------ replies

    def _status(self, url: str, code: StatusCode, text: str, object_id: str) -> dict[str, Any]:
        return {
            "RequestURL": url,
            "StatusCode": int(code),
            "StatusString": text,
            "Id": object_id,
            "LocalTime": viid_time(self._clock()),
        }

    def error(
        self, url: str, http_status: int, code: StatusCode, text: str, object_id: str, *headers: tuple[str, str]
    ) -> Reply:
        """The standard single ``ResponseStatusObject`` reply."""
        return Reply(http_status, {"ResponseStatusObject": self._status(url, code, text, object_id)}, headers)

    def system_time(self) -> Reply:
        return Reply(
            200,
            {
                "SystemTimeObject": {
                    "VIIDServerID": self.config.server_id,
                    "TimeMode": "1",
                    "LocalTime": viid_time(self._clock()),
                    "TimeZone": "Asia/Shanghai",
                }
            },
        )

    # ------------------------------------------------------------------------------------------ state

    def _count(self, device_id: str, deviations: Counter[Deviation]) -> None:
        counts = {f"gat1400.{device_id}.{kind.value}": n for kind, n in deviations.items() if n}
        if counts:
            self.spool.bump(counts)

    def is_online(self, device_id: str) -> bool:
        """Registered and heard from within ``keepalive_timeout_secs``."""
        self.check_keepalives()
        with self._lock:
            state = self._states.get(device_id)
            return state is not None and state.registered

    def check_keepalives(self) -> None:
        """Mark devices silent past the timeout offline (a device_status event each); flush pending ones."""
        now = self._clock()
        with self._lock:
            for device_id, state in self._states.items():
                if state.registered and now - state.last_seen > self.config.keepalive_timeout_secs:
                    state.registered, state.offline = False, True
                    detail = f"no keepalive for {self.config.keepalive_timeout_secs:g} s"
                    self._pending_status.append(self._status_item(device_id, "offline", detail, now))
                    log.warning("gat1400 device %s went silent; offline", device_id)
        self._flush_status()

    def _status_item(self, device_id: str, state: str, detail: str, now: float) -> SpoolItem:
        ms = int(now * 1000)
        event = validate_event(
            {
                "event_id": new_event_id(ms),
                "event_type": "device_status",
                "device_id": device_id,
                "captured_at": dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(),
                "status": {"state": state, "detail": detail},
            }
        )
        return item_from_event(event)

    def _flush_status(self) -> None:
        with self._lock:
            items, self._pending_status = self._pending_status, []
        if not items:
            return
        try:
            self.spool.put_many(items, timeout=self.config.block_timeout_secs)
        except SpoolFullError:
            with self._lock:  # keep them for the next check
                self._pending_status = items + self._pending_status

    # ------------------------------------------------------------------------------------------ requests

    def handle_post(self, path: str, raw: bytes, *, authorization: str | None, user_identify: str | None) -> Reply:
        """Answer one POST (the HTTP layer only moves bytes)."""
        if path in ("/VIID/System/Register", "/VIID/System/UnRegister"):
            return self._register(path, raw, authorization, user_identify)
        if path == "/VIID/System/Keepalive":
            return self._keepalive(path, raw, user_identify)
        if path in _LISTS:
            return self._list(path, raw, user_identify)
        return self.error(path, 404, StatusCode.INVALID_OPERATION, "no such resource", "")

    def _body(self, path: str, raw: bytes, root: str) -> dict[str, Any] | Reply:
        try:
            doc = loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return self.error(path, 400, StatusCode.INVALID_JSON_FORMAT, "body is not valid JSON", "")
        inner = doc.get(root) if isinstance(doc, dict) else None
        if not isinstance(inner, dict):
            return self.error(path, 400, StatusCode.INVALID_JSON_CONTENT, f"body must be {{{root!r}: {{...}}}}", "")
        return inner

    def _register(self, path: str, raw: bytes, authorization: str | None, user_identify: str | None) -> Reply:
        unregister = path.endswith("UnRegister")
        root = "UnRegisterObject" if unregister else "RegisterObject"
        if not authorization:
            return self.error(
                path,
                401,
                StatusCode.INVALID_OPERATION,
                "Digest authentication required",
                "",
                *(("WWW-Authenticate", c) for c in self.digest.challenges()),
            )
        inner = self._body(path, raw, root)
        if isinstance(inner, Reply):
            return inner
        device_id, deviations, rejection = checked_device_id(inner.get("DeviceID", user_identify))
        if device_id is None:
            assert rejection is not None
            return self.error(path, 400, rejection.code, rejection.status, str(inner.get("DeviceID", "")))
        self._count(device_id, deviations)
        credentials = self._credentials.get(device_id)
        if credentials is None:
            return self.error(
                path, 403, StatusCode.INVALID_OPERATION, "device is not configured on this gateway", device_id
            )
        username, password = credentials
        try:
            self.digest.verify("POST", path, authorization, lambda user: password if user == username else None)
        except DigestError as exc:
            log.info("gat1400 %s of %s refused: %s", root, device_id, exc)
            return self.error(
                path,
                401,
                StatusCode.INVALID_OPERATION,
                f"Digest authentication failed: {exc}",
                device_id,
                *(("WWW-Authenticate", c) for c in self.digest.challenges(stale=exc.stale)),
            )
        now = self._clock()
        with self._lock:
            state = self._states.setdefault(device_id, _DeviceState())
            if unregister:
                state.registered = False
            else:
                state.registered, state.last_seen = True, now
                if state.offline:
                    state.offline = False
                    self._pending_status.append(self._status_item(device_id, "online", "registered again", now))
        self._flush_status()
        log.info("gat1400 device %s %s", device_id, "unregistered" if unregister else "registered")
        return self.error(path, 200, StatusCode.OK, _OK, device_id)

    def _keepalive(self, path: str, raw: bytes, user_identify: str | None) -> Reply:
        inner = self._body(path, raw, "KeepaliveObject")
        if isinstance(inner, Reply):
            return inner
        device_id, deviations, rejection = checked_device_id(inner.get("DeviceID", user_identify))
        if device_id is None:
            assert rejection is not None
            return self.error(path, 400, rejection.code, rejection.status, str(inner.get("DeviceID", "")))
        self._count(device_id, deviations)
        if not self.is_online(device_id):
            return self._not_registered(path, device_id)
        with self._lock:
            self._states[device_id].last_seen = self._clock()
        return self.error(path, 200, StatusCode.OK, _OK, device_id)

    def _not_registered(self, path: str, device_id: str) -> Reply:
        return self.error(
            path, 401, StatusCode.INVALID_OPERATION, "device is not registered (or its keepalive lapsed)", device_id
        )

    def _list(self, path: str, raw: bytes, user_identify: str | None) -> Reply:
        device_id, _, _ = checked_device_id(user_identify)
        if device_id is None:
            return self.error(
                path, 401, StatusCode.INVALID_OPERATION, "User-Identify must name a registered device", ""
            )
        if not self.is_online(device_id):
            return self._not_registered(path, device_id)
        root, key, mapper = _LISTS[path]
        inner = self._body(path, raw, root)
        if isinstance(inner, Reply):
            return inner
        objects = inner.get(key)
        deviations: Counter[Deviation] = Counter()
        if isinstance(objects, dict):  # a single object where a list belongs
            deviations[Deviation.LIST_SHAPE] += 1
            objects = [objects]
        if not isinstance(objects, list) or not objects:
            return self.error(path, 400, StatusCode.INVALID_JSON_CONTENT, f"{root}.{key} must be a list", "")
        outcomes = [mapper(obj, posting_device=device_id) for obj in objects]
        statuses = self._spool_outcomes(path, outcomes)
        for outcome in outcomes:
            deviations.update(outcome.deviations)
        self._count(device_id, deviations)
        with self._lock:
            self._states[device_id].last_seen = self._clock()
        return Reply(200, {"ResponseStatusListObject": {"ResponseStatusObject": statuses}})

    def _spool_outcomes(self, path: str, outcomes: list[ItemOutcome]) -> list[dict[str, Any]]:
        """Validate each mapped event, spool the valid ones in one durable put, one status per object."""
        items: dict[int, SpoolItem] = {}
        statuses: list[dict[str, Any] | None] = []
        for index, outcome in enumerate(outcomes):
            if outcome.reject is not None or outcome.event is None:
                rejection = outcome.reject
                assert rejection is not None
                statuses.append(self._status(path, rejection.code, rejection.status, outcome.object_id))
                continue
            try:
                items[index] = item_from_event(validate_event(outcome.event))
            except ValidationError as exc:
                error = event_error(exc)
                outcome.deviations[Deviation.REJECTED_ITEM] += 1
                field = f" ({error.field})" if error.field else ""
                text = f"not a valid {outcome.event['event_type']} event: {error.detail}{field}"
                statuses.append(self._status(path, StatusCode.INVALID_JSON_CONTENT, text, outcome.object_id))
                continue
            statuses.append(None)
        unique = list({item.event_id: item for item in items.values()}.values())
        busy = False
        dropped: set[str] = set()
        if unique:
            try:
                put = self.spool.put_many(unique, timeout=self.config.block_timeout_secs)
                dropped = set(put.dropped)
            except SpoolFullError:
                busy = True
        final: list[dict[str, Any]] = []
        for index, status in enumerate(statuses):
            if status is not None:
                final.append(status)
                continue
            item = items[index]
            object_id = outcomes[index].object_id
            if busy or item.event_id in dropped:
                final.append(
                    self._status(path, StatusCode.DEVICE_BUSY, "the gateway's spool is full; retry", object_id)
                )
            else:  # spooled now or already (a device's retry): either way it is safe with us
                final.append(self._status(path, StatusCode.OK, _OK, object_id))
        return final

    # ------------------------------------------------------------------------------------------ lifecycle

    def run(self, stop: threading.Event) -> None:
        thread = threading.Thread(target=self._server.serve_forever, args=(0.25,), name=self.name, daemon=True)
        thread.start()
        log.info("gat1400 source listening on %s:%d", self.config.listen_host, self.port)
        tick = min(1.0, self.config.keepalive_timeout_secs / 4)
        while not stop.wait(tick):
            self.check_keepalives()
        self._server.shutdown()
        self._server.server_close()
        thread.join(5)
