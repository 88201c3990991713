"""The http source: a LAN receiver for devices that push our v1 event JSON (``POST /v1/events``).

Every request is authenticated per device with an HMAC-SHA256 over the request and its body, using a secret
shared by that device and the gateway (``[sources.devices.<DeviceID>]``)::

    X-Anfang-Device:    <the 20-digit device id>
    X-Anfang-Timestamp: <unix seconds, within max_clock_skew_secs of the gateway's clock>
    X-Anfang-Signature: <lower-case hex HMAC-SHA256(secret, message)>
    message = "POST\\n/v1/events\\n<device>\\n<timestamp>\\n<lower-case hex SHA-256 of the body>"

The device, its allowed addresses (``allow_from``), the timestamp and the shape of the signature are checked
on the headers; a request failing there is refused before its body is read. The body is then read within the
listener's bounds (:mod:`.listener`) and the HMAC compared in constant time. Each event must name the device
itself or one of its ``child_devices`` (else that event is rejected ``forbidden_device``), and a device the
agent's key may not send for is refused at spool time the same way. A replayed request (same timestamp, same
body) can only produce duplicates: events are keyed by ``event_id``.

Why HMAC and not the API's Ed25519 signatures: LAN devices (door controllers, kiosks) that push JSON can
compute an HMAC with any HTTP stack or ``openssl dgst -hmac``; RFC 9421 needs structured-field parsing and
Ed25519 that such firmware rarely has. ``hmac.compare_digest`` is the library doing the work.

Answers like the API does: 202 with one result per event (``accepted`` once the event is durable in the
spool, ``duplicate`` when it already was, ``rejected`` with a reason), problem+json for whole-request errors,
503 with ``Retry-After`` when the spool stays full.

>>> source = HttpSource(config.sources[0], spool)
>>> threading.Thread(target=source.run, args=(stop,)).start()
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any, Final

from pydantic import ValidationError

from anfang.contracts import (
    MAX_EVENTS_PER_BATCH,
    PROBLEM_CONTENT_TYPE,
    BatchResponse,
    ErrorCode,
    EventError,
    EventResult,
    Problem,
    event_error,
    rejected,
    validate_event,
)
from anfang.contracts.problems import PROBLEM_TYPE_PREFIX

from ..config import HttpSourceConfig
from ..errors import SpoolFullError
from ..spool import Spool, SpoolItem, item_from_event
from .listener import BoundedHandler, BoundedHTTPServer

__all__ = ["DEVICE_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "HttpSource", "sign_request"]

log = logging.getLogger("anfang_edge.sources.http")
_PATH: Final = "/v1/events"
DEVICE_HEADER: Final = "X-Anfang-Device"
TIMESTAMP_HEADER: Final = "X-Anfang-Timestamp"
SIGNATURE_HEADER: Final = "X-Anfang-Signature"
_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")
_JSON_TYPES: Final = frozenset({"application/json"})
#: HTTP status → the problem code that names it, for the listener's refusals.
_REFUSAL_CODES: Final = {
    400: ErrorCode.PAYLOAD_INVALID,
    408: ErrorCode.RETRY_LATER,
    411: ErrorCode.PAYLOAD_INVALID,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    503: ErrorCode.RETRY_LATER,
}


def sign_request(secret: bytes, method: str, path: str, device_id: str, timestamp: int, body: bytes | bytearray) -> str:
    """The ``X-Anfang-Signature`` value of a request (what a device computes; the gateway recomputes it)."""
    message = f"{method}\n{path}\n{device_id}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


class _Server(BoundedHTTPServer):
    source: HttpSource


class _Handler(BoundedHandler):
    server: _Server

    def _send(self, status: int, body: bytes, content_type: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _problem(
        self, code: ErrorCode, detail: str, headers: tuple[tuple[str, str], ...] = (), status: int = 0
    ) -> None:
        problem = Problem(
            type=PROBLEM_TYPE_PREFIX + code.value,
            title=code.summary,
            status=status or code.http_status,
            code=code,
            detail=detail,
            instance=_PATH,
        )
        body = problem.model_dump_json(exclude_none=True).encode()
        self._send(problem.status, body, PROBLEM_CONTENT_TYPE, headers)

    def refuse(self, status: int, reason: str, detail: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        code = _REFUSAL_CODES.get(status, ErrorCode.PAYLOAD_INVALID)
        self._problem(code, detail, headers, status=status)

    def _refuse_code(self, code: ErrorCode, detail: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.server.counters.bump(code.value)
        self.close_connection = True
        self._problem(code, detail, (*headers, ("Connection", "close")))
        self._discard_body()

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, b'{"status":"ok"}', "application/json")
        else:
            self._refuse_code(ErrorCode.NOT_FOUND, "no such path")

    def do_PUT(self) -> None:
        self._refuse_code(ErrorCode.METHOD_NOT_ALLOWED, "only POST /v1/events")

    do_DELETE = do_PATCH = do_PUT

    def do_POST(self) -> None:
        source = self.server.source
        if self.path != _PATH:
            self._refuse_code(ErrorCode.NOT_FOUND, "no such path")
            return
        if self.media_type(self.headers.get("Content-Type")) not in _JSON_TYPES:
            self._refuse_code(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json")
            return
        # authenticate on the headers before a byte of the body is read
        claim = source.check_headers(self.peer, self.headers.get(DEVICE_HEADER), self.headers.get(TIMESTAMP_HEADER))
        if isinstance(claim, tuple):
            code, detail = claim
            date = (("Date", formatdate(source.clock(), usegmt=True)),) if code.http_status == 401 else ()
            self._refuse_code(code, detail, date)
            return
        signature = self.headers.get(SIGNATURE_HEADER, "")
        if not _HEX64.fullmatch(signature):
            self._refuse_code(ErrorCode.SIGNATURE_MISSING, f"{SIGNATURE_HEADER} must be 64 lower-case hex digits")
            return
        raw = self.body(source.config.max_body_bytes)
        if raw is None:
            return
        device_id, timestamp = claim.device_id, claim.timestamp
        expected = sign_request(source.secrets[device_id], "POST", _PATH, device_id, timestamp, raw)
        if not hmac.compare_digest(expected, signature):
            self.server.counters.bump("signature_invalid")
            self._problem(ErrorCode.SIGNATURE_INVALID, "X-Anfang-Signature does not match the request")
            return
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            self._problem(ErrorCode.MALFORMED_JSON, "body is not valid JSON")
            return
        events = doc.get("events") if isinstance(doc, dict) else None
        if not isinstance(events, list) or not 1 <= len(events) <= MAX_EVENTS_PER_BATCH:
            self._problem(ErrorCode.PAYLOAD_INVALID, f"body must be {{'events': [1..{MAX_EVENTS_PER_BATCH} events]}}")
            return
        try:
            response = source.accept(events, device_id=device_id)
        except SpoolFullError:
            self._problem(ErrorCode.RETRY_LATER, "the gateway's spool is full", (("Retry-After", "5"),))
            return
        self._send(202, response.model_dump_json(exclude_none=True).encode(), "application/json")


class _Claim:
    __slots__ = ("device_id", "timestamp")

    def __init__(self, device_id: str, timestamp: int) -> None:
        self.device_id, self.timestamp = device_id, timestamp


class HttpSource:
    """Listens on ``listen_host:listen_port`` (port 0: an ephemeral port, see ``port``)."""

    def __init__(
        self,
        config: HttpSourceConfig,
        spool: Spool,
        *,
        name: str = "http",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.spool = spool
        self.name = name
        self.clock = clock
        #: Device id → its HMAC secret (read once at start; a secret file must be owner-only).
        self.secrets = {device_id: device.resolve_secret() for device_id, device in config.devices.items()}
        self._server = _Server((config.listen_host, config.listen_port), _Handler, limits=config.limits(), name=name)
        self._server.source = self

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def server(self) -> BoundedHTTPServer:
        return self._server

    def check_headers(self, peer: str, device_id: str | None, timestamp: str | None) -> _Claim | tuple[ErrorCode, str]:
        """The device a request claims to come from, or why it is refused before its body is read."""
        if not device_id or not timestamp:
            return ErrorCode.SIGNATURE_MISSING, f"{DEVICE_HEADER}, {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} needed"
        device = self.config.devices.get(device_id)
        if device is None:
            return ErrorCode.UNKNOWN_KEY, "device is not configured on this gateway"
        if not device.allows(peer):
            return ErrorCode.FORBIDDEN_DEVICE, "device may not connect from this address"
        if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
            return ErrorCode.SIGNATURE_INVALID, f"{TIMESTAMP_HEADER} must be unix seconds"
        if abs(int(timestamp) - self.clock()) > self.config.max_clock_skew_secs:
            return (
                ErrorCode.SIGNATURE_EXPIRED,
                f"{TIMESTAMP_HEADER} is more than {self.config.max_clock_skew_secs:g} s off",
            )
        return _Claim(device_id, int(timestamp))

    def accept(self, events: list[Any], *, device_id: str) -> BatchResponse:
        """Validate each event, spool the valid ones in one durable put, answer per event in request order."""
        device = self.config.devices[device_id]
        may_send = {device_id, *device.child_devices}
        results: list[EventResult | None] = []
        items: list[SpoolItem] = []
        seen: set[str] = set()
        for obj in events:
            try:
                item = item_from_event(validate_event(obj))
            except ValidationError as exc:
                results.append(rejected(obj.get("event_id") if isinstance(obj, dict) else None, event_error(exc)))
                continue
            if item.device_id not in may_send:
                self._server.counters.bump("forbidden_device")
                error = EventError(
                    code=ErrorCode.FORBIDDEN_DEVICE,
                    detail="this device may not post for that device",
                    field="device_id",
                )
                results.append(EventResult(event_id=item.event_id, status="rejected", error=error))
                continue
            if item.event_id in seen:  # repeated within this request
                results.append(EventResult(event_id=item.event_id, status="duplicate"))
                continue
            seen.add(item.event_id)
            items.append(item)
            results.append(None)
        put = self.spool.put_many(items, timeout=self.config.block_timeout_secs) if items else None
        duplicates = set(put.duplicate) if put else set()
        dropped = set(put.dropped) if put else set()
        forbidden = set(put.forbidden) if put else set()
        item_iter = iter(items)
        final: list[EventResult] = []
        for result in results:
            if result is not None:
                final.append(result)
                continue
            event_id = next(item_iter).event_id
            if event_id in forbidden:
                error = EventError(
                    code=ErrorCode.FORBIDDEN_DEVICE, detail="the gateway's key may not send for this device"
                )
                final.append(EventResult(event_id=event_id, status="rejected", error=error))
            elif event_id in dropped:
                error = EventError(code=ErrorCode.RETRY_LATER, detail="the gateway's spool is full")
                final.append(EventResult(event_id=event_id, status="retry_later", error=error))
            elif event_id in duplicates:
                final.append(EventResult(event_id=event_id, status="duplicate"))
            else:
                final.append(EventResult(event_id=event_id, status="accepted"))
        return BatchResponse.of(final)

    def flush_counters(self) -> None:
        """Write the listener's refusal counts to the spool's counters (``anfang-edge status``)."""
        counts = self._server.counters.drain()
        if counts:
            self.spool.bump(counts)

    def run(self, stop: threading.Event) -> None:
        thread = threading.Thread(target=self._server.serve_forever, args=(0.25,), name=self.name, daemon=True)
        thread.start()
        log.info("http source listening on %s:%d", self.config.listen_host, self.port)
        try:
            while not stop.wait(1.0):
                self.flush_counters()
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(5)
            self.flush_counters()
