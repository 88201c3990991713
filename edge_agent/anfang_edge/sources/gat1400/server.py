"""The gat1400 source: a GA/T 1400 view library (视图库, VIID) on the LAN.

Devices register with HTTP Digest, keep alive, and push face, person and motor-vehicle lists. Every list object
becomes one v1 event (see :mod:`.mapping`), spooled in one durable put; the reply is one
``ResponseStatusObject`` per object, written only after the commit. Deviations from the standard that were
tolerated are counted per device in the spool's counters (``gat1400.<device id>.<deviation>``).

GA/T 1400 authenticates ``Register`` only and then names the device in ``User-Identify``; a header anyone on
the LAN can write. So every request after ``Register`` is accepted only as part of that registration:

- it must come from the address the camera registered from (and a camera registers only from its
  ``allow_from`` addresses when those are configured);
- Digest credentials it carries are verified (per request, on the registration's nonce, nonce counts
  growing); once a camera has sent them, or when its ``request_digest = "required"``, they are required;
- it may upload objects only for its own DeviceID and its configured ``child_devices``; any other object is
  refused per item (StatusCode 4) and counted (``gat1400.<device>.forbidden_device``).

All of this is decided on the request's headers: a refused request's body is never read (:mod:`..listener`).

>>> source = Gat1400Source(config, spool)
>>> threading.Thread(target=source.run, args=(stop,)).start()
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
from typing import Any, Final

from pydantic import ValidationError

from anfang.contracts import event_error, new_event_id, validate_event
from anfang.contracts.gat1400 import CONTENT_TYPE, viid_time

from ...config import Gat1400DeviceConfig, Gat1400SourceConfig
from ...errors import SpoolFullError
from ...spool import Spool, SpoolItem, item_from_event
from ..listener import BoundedHandler, BoundedHTTPServer
from .digest import DigestAuth, DigestError, parse_authorization
from .mapping import (
    Deviation,
    ItemOutcome,
    Rejection,
    StatusCode,
    checked_device_id,
    loads,
    map_face,
    map_motor_vehicle,
    map_person,
)

__all__ = ["CONTENT_TYPE", "Gat1400Source"]

log = logging.getLogger("anfang_edge.sources.gat1400")
#: Media types a camera may post (parameters such as charset ignored); XML is not supported.
_BODY_TYPES: Final = frozenset({"application/viid+json", "application/json"})
_SYSTEM: Final = frozenset({"/VIID/System/Register", "/VIID/System/UnRegister", "/VIID/System/Keepalive"})
_OK: Final = "正常"
_LISTS: Final[dict[str, tuple[str, str, Callable[..., ItemOutcome]]]] = {
    "/VIID/Faces": ("FaceListObject", "FaceObject", map_face),
    "/VIID/MotorVehicles": ("MotorVehicleListObject", "MotorVehicleObject", map_motor_vehicle),
    "/VIID/Persons": ("PersonListObject", "PersonObject", map_person),
}


@dataclass(slots=True)
class _DeviceState:
    registered: bool = False
    last_seen: float = 0.0
    offline: bool = False  # went silent past the timeout; an online event is due when it registers again
    #: The address the camera registered from: every later request must come from it.
    address: str = ""
    #: The camera has sent Digest credentials after registering: from then on they are required.
    digest_seen: bool = False


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is from, as established on its headers."""

    device_id: str
    address: str


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


class _Server(BoundedHTTPServer):
    source: Gat1400Source


class _Handler(BoundedHandler):
    server: _Server

    def _send(self, reply: Reply) -> None:
        body = json.dumps(reply.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.send_response(reply.status)
        self.send_header("Content-Type", f"{CONTENT_TYPE};charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    def refuse(self, status: int, reason: str, detail: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        code = StatusCode.DEVICE_BUSY if status == 503 else StatusCode.INVALID_OPERATION
        self._send(self.server.source.error(self._path(), status, code, detail, "", *headers))

    def _refuse_reply(self, reply: Reply, reason: str) -> None:
        self.server.counters.bump(reason)
        self.close_connection = True
        self._send(Reply(reply.status, reply.body, (*reply.headers, ("Connection", "close"))))
        self._discard_body()

    def do_GET(self) -> None:
        path = self._path()
        source = self.server.source
        if path == "/VIID/System/Time":
            self._send(source.system_time())
        else:
            self._refuse_reply(
                source.error(path, 404, StatusCode.INVALID_OPERATION, "no such resource", ""), "not_found"
            )

    def do_POST(self) -> None:
        path = self._path()
        source = self.server.source
        if path not in _SYSTEM and path not in _LISTS:
            self._refuse_reply(
                source.error(path, 404, StatusCode.INVALID_OPERATION, "no such resource", ""), "not_found"
            )
            return
        if self.media_type(self.headers.get("Content-Type")) not in _BODY_TYPES:
            reply = source.error(
                path, 415, StatusCode.INVALID_JSON_FORMAT, "Content-Type must be application/VIID+JSON", ""
            )
            self._refuse_reply(reply, "unsupported_media_type")
            return
        # authenticate on the headers; a refused request's body is never read
        principal = source.authenticate(
            path,
            self.peer,
            authorization=self.headers.get("Authorization"),
            user_identify=self.headers.get("User-Identify"),
        )
        if isinstance(principal, Reply):
            self._refuse_reply(principal, "unauthenticated")
            return
        raw = self.body(source.config.max_body_bytes)
        if raw is None:
            return
        self._send(source.handle_post(path, raw, principal))


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
        self._by_username = {device.username: device_id for device_id, device in config.devices.items()}
        self.digest = DigestAuth(
            realm=config.realm,
            algorithms=tuple(config.digest_algorithms),
            nonce_ttl_secs=config.nonce_ttl_secs,
            clock=clock,
        )
        self._states: dict[str, _DeviceState] = {}
        self._lock = threading.Lock()
        self._pending_status: list[SpoolItem] = []
        self._server = _Server((config.listen_host, config.listen_port), _Handler, limits=config.limits(), name=name)
        self._server.source = self

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def server(self) -> BoundedHTTPServer:
        return self._server

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

    def _challenge(self, path: str, status: int, text: str, device_id: str, *, stale: bool = False) -> Reply:
        return self.error(
            path,
            status,
            StatusCode.INVALID_OPERATION,
            text,
            device_id,
            *(("WWW-Authenticate", c) for c in self.digest.challenges(stale=stale)),
        )

    def _verify_digest(self, path: str, authorization: str, device_id: str) -> Reply | None:
        """None when ``authorization`` holds valid Digest credentials of ``device_id``, else the 401 reply."""
        username, password = self._credentials[device_id]
        try:
            self.digest.verify("POST", path, authorization, lambda user: password if user == username else None)
        except DigestError as exc:
            log.info("gat1400 %s: Digest of %s refused: %s", path, device_id, exc)
            return self._challenge(path, 401, f"Digest authentication failed: {exc}", device_id, stale=exc.stale)
        return None

    def authenticate(
        self, path: str, peer: str, *, authorization: str | None, user_identify: str | None
    ) -> Principal | Reply:
        """Who sends this request, decided on its headers alone, or the reply refusing it."""
        if path in ("/VIID/System/Register", "/VIID/System/UnRegister"):
            return self._authenticate_register(path, peer, authorization)
        return self._authenticate_session(path, peer, authorization, user_identify)

    def _authenticate_register(self, path: str, peer: str, authorization: str | None) -> Principal | Reply:
        if not authorization:
            return self._challenge(path, 401, "Digest authentication required", "")
        try:
            username = parse_authorization(authorization).get("username", "")
        except DigestError as exc:
            return self._challenge(path, 401, f"Digest authentication failed: {exc}", "")
        device_id = self._by_username.get(username)
        if device_id is None:
            # the same answer as a wrong password: usernames are not to be probed
            return self._challenge(path, 401, "Digest authentication failed: wrong username or password", "")
        if not self.config.devices[device_id].allows(peer):
            log.warning("gat1400 %s of %s from %s refused: not in allow_from", path, device_id, peer)
            return self.error(
                path, 403, StatusCode.INVALID_OPERATION, "device may not register from this address", device_id
            )
        refused = self._verify_digest(path, authorization, device_id)
        return refused if refused is not None else Principal(device_id, peer)

    def _authenticate_session(
        self, path: str, peer: str, authorization: str | None, user_identify: str | None
    ) -> Principal | Reply:
        self.check_keepalives()
        if user_identify:
            device_id, _, _ = checked_device_id(user_identify)
            if device_id is None:
                return self.error(
                    path, 401, StatusCode.INVALID_OPERATION, "User-Identify must name a registered device", ""
                )
        else:  # some cameras omit the header: the one registration from this address speaks
            with self._lock:
                here = [d for d, st in self._states.items() if st.registered and st.address == peer]
            if len(here) != 1:
                return self.error(
                    path, 401, StatusCode.INVALID_OPERATION, "User-Identify must name a registered device", ""
                )
            device_id = here[0]
        with self._lock:
            state = self._states.get(device_id)
            registered = state is not None and state.registered
            address = state.address if state is not None else ""
            digest_seen = state.digest_seen if state is not None else False
        if not registered:
            return self._not_registered(path, device_id)
        if address != peer:
            log.warning("gat1400 %s as %s from %s refused: registered from %s", path, device_id, peer, address)
            return self.error(
                path, 401, StatusCode.INVALID_OPERATION, "device is not registered from this address", device_id
            )
        device: Gat1400DeviceConfig = self.config.devices[device_id]
        if authorization:
            refused = self._verify_digest(path, authorization, device_id)
            if refused is not None:
                return refused
            if not digest_seen:
                with self._lock:
                    if device_id in self._states:
                        self._states[device_id].digest_seen = True
        elif digest_seen or device.request_digest == "required":
            return self._challenge(path, 401, "Digest authentication required for this device", device_id)
        return Principal(device_id, peer)

    def handle_post(self, path: str, raw: bytes | bytearray, principal: Principal) -> Reply:
        """Answer one authenticated POST (the HTTP layer only moves bytes)."""
        if path in ("/VIID/System/Register", "/VIID/System/UnRegister"):
            return self._register(path, raw, principal)
        if path == "/VIID/System/Keepalive":
            return self._keepalive(path, raw, principal)
        if path in _LISTS:
            return self._list(path, raw, principal)
        return self.error(path, 404, StatusCode.INVALID_OPERATION, "no such resource", "")

    def _body(self, path: str, raw: bytes | bytearray, root: str) -> dict[str, Any] | Reply:
        try:
            doc = loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return self.error(path, 400, StatusCode.INVALID_JSON_FORMAT, "body is not valid JSON", "")
        inner = doc.get(root) if isinstance(doc, dict) else None
        if not isinstance(inner, dict):
            return self.error(path, 400, StatusCode.INVALID_JSON_CONTENT, f"body must be {{{root!r}: {{...}}}}", "")
        return inner

    def _body_device(self, path: str, inner: dict[str, Any], principal: Principal) -> str | Reply:
        """The DeviceID of a System body (the principal's when absent); it must be the principal's own."""
        device_id, deviations, rejection = checked_device_id(inner.get("DeviceID", principal.device_id))
        if device_id is None:
            assert rejection is not None
            return self.error(path, 400, rejection.code, rejection.status, str(inner.get("DeviceID", "")))
        self._count(device_id if device_id in self.config.devices else principal.device_id, deviations)
        if device_id not in self.config.devices:
            return self.error(
                path, 403, StatusCode.INVALID_OPERATION, "device is not configured on this gateway", device_id
            )
        if device_id != principal.device_id:
            log.warning("gat1400 %s: %s sent a body for %s; refused", path, principal.device_id, device_id)
            return self.error(
                path, 403, StatusCode.INVALID_OPERATION, "DeviceID does not match the credentials", device_id
            )
        return device_id

    def _register(self, path: str, raw: bytes | bytearray, principal: Principal) -> Reply:
        unregister = path.endswith("UnRegister")
        root = "UnRegisterObject" if unregister else "RegisterObject"
        inner = self._body(path, raw, root)
        if isinstance(inner, Reply):
            return inner
        device_id = self._body_device(path, inner, principal)
        if isinstance(device_id, Reply):
            return device_id
        now = self._clock()
        with self._lock:
            state = self._states.setdefault(device_id, _DeviceState())
            if unregister:
                state.registered, state.address, state.digest_seen = False, "", False
            else:
                state.registered, state.last_seen = True, now
                state.address, state.digest_seen = principal.address, False
                if state.offline:
                    state.offline = False
                    self._pending_status.append(self._status_item(device_id, "online", "registered again", now))
        self._flush_status()
        log.info(
            "gat1400 device %s %s from %s",
            device_id,
            "unregistered" if unregister else "registered",
            principal.address,
        )
        return self.error(path, 200, StatusCode.OK, _OK, device_id)

    def _keepalive(self, path: str, raw: bytes | bytearray, principal: Principal) -> Reply:
        inner = self._body(path, raw, "KeepaliveObject")
        if isinstance(inner, Reply):
            return inner
        device_id = self._body_device(path, inner, principal)
        if isinstance(device_id, Reply):
            return device_id
        with self._lock:
            self._states[device_id].last_seen = self._clock()
        return self.error(path, 200, StatusCode.OK, _OK, device_id)

    def _not_registered(self, path: str, device_id: str) -> Reply:
        return self.error(
            path, 401, StatusCode.INVALID_OPERATION, "device is not registered (or its keepalive lapsed)", device_id
        )

    def _list(self, path: str, raw: bytes | bytearray, principal: Principal) -> Reply:
        device_id = principal.device_id
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
        may_send = {device_id, *self.config.devices[device_id].child_devices}
        for outcome in outcomes:
            if outcome.reject is None and outcome.device_id not in may_send:
                outcome.event = None
                outcome.reject = Rejection(StatusCode.INVALID_OPERATION, "this device may not upload for that DeviceID")
                outcome.deviations[Deviation.FORBIDDEN_DEVICE] += 1
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
        forbidden: set[str] = set()
        if unique:
            try:
                put = self.spool.put_many(unique, timeout=self.config.block_timeout_secs)
                dropped, forbidden = set(put.dropped), set(put.forbidden)
            except SpoolFullError:
                busy = True
        final: list[dict[str, Any]] = []
        for index, status in enumerate(statuses):
            if status is not None:
                final.append(status)
                continue
            item = items[index]
            object_id = outcomes[index].object_id
            if item.event_id in forbidden:
                outcomes[index].deviations[Deviation.FORBIDDEN_DEVICE] += 1
                final.append(
                    self._status(
                        path, StatusCode.INVALID_OPERATION, "the gateway's key may not send for this device", object_id
                    )
                )
            elif busy or item.event_id in dropped:
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
        try:
            while not stop.wait(tick):
                self.check_keepalives()
                self.flush_counters()
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(5)
            self.flush_counters()

    def flush_counters(self) -> None:
        """Write the listener's refusal counts to the spool's counters (``anfang-edge status``)."""
        counts = self._server.counters.drain()
        if counts:
            self.spool.bump(counts)
