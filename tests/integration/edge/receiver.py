"""A real test receiver for the edge agent: ``POST /v1/events`` on 127.0.0.1 with the API's contract.

Verifies RFC 9421 signatures with ``anfang.contracts.Verifier`` (real keys, real nonces), validates each
event with ``validate_event``, deduplicates by ``event_id``, answers 202 + ``BatchResponse`` or problem+json
with a ``code`` (401s carry ``Date``), and can be scripted to answer 429/503 with ``Retry-After``. It can be
stopped and started on the same port (an outage), and during an outage it can count the connection
attempts the agent makes (a listener that accepts and closes at once, like a dead load balancer).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from anfang.contracts import (
    MAX_BODY_BYTES,
    PROBLEM_CONTENT_TYPE,
    BatchResponse,
    ErrorCode,
    EventError,
    EventResult,
    KeyInfo,
    MemoryNonceStore,
    Problem,
    SignatureError,
    Verifier,
    event_error,
    key_id_for,
    rejected,
    validate_event,
)


class _Keys:
    def __init__(self, keys: dict[str, KeyInfo]) -> None:
        self.keys = keys

    def resolve(self, key_id: str) -> KeyInfo | None:
        return self.keys.get(key_id)


@dataclass(frozen=True)
class Scripted:
    """A canned whole-request answer (e.g. 503 with Retry-After) for the next request."""

    status: int
    code: ErrorCode
    retry_after: str | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: EdgeReceiver

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a killed agent resets its connection; that is the point of the tests

    def process_request(self, request: Any, client_address: Any) -> None:
        self.receiver.connections.append(request)
        super().process_request(request, client_address)

    def drop_connections(self) -> None:
        """Close every open keep-alive connection, as a restarted server or a load balancer would."""
        for conn in self.receiver.connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.receiver.connections.clear()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.send_response_only(status)
        self.send_header("Date", formatdate(self.server.receiver.clock(), usegmt=True))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _problem(self, code: ErrorCode, detail: str, headers: dict[str, str] | None = None) -> None:
        body = Problem.of(code, detail).model_dump_json(exclude_none=True).encode()
        self._reply(code.http_status, body, PROBLEM_CONTENT_TYPE, headers or {})

    def do_POST(self) -> None:
        receiver = self.server.receiver
        length = int(self.headers.get("Content-Length", "0"))
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._problem(ErrorCode.PAYLOAD_TOO_LARGE, "body too large")
            return
        body = self.rfile.read(length)
        with receiver.lock:
            receiver.requests += 1
            scripted = receiver.script.popleft() if receiver.script else None
        if scripted is not None:
            headers = {"Retry-After": scripted.retry_after} if scripted.retry_after else {}
            body_out = Problem.of(scripted.code, "scripted").model_dump_json(exclude_none=True).encode()
            self._reply(scripted.status, body_out, PROBLEM_CONTENT_TYPE, headers)
            return
        if self.path != "/v1/events":
            self._problem(ErrorCode.NOT_FOUND, "no such path")
            return
        try:
            receiver.verifier.verify("POST", self.path, dict(self.headers.items()), body)
        except SignatureError as exc:
            with receiver.lock:
                receiver.auth_failures[exc.code.value] += 1
            self._problem(exc.code, exc.detail)
            return
        try:
            doc = json.loads(body)
            events = doc["events"]
            assert isinstance(events, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            self._problem(ErrorCode.MALFORMED_JSON, "not a batch")
            return
        if receiver.device_ids is not None and receiver.forbidden_mode == "request":
            # the API before issue 14: any event for a device the key is not bound to fails the whole request
            claimed = {e.get("device_id") for e in events if isinstance(e, dict)}
            if not claimed <= receiver.device_ids:
                with receiver.lock:
                    receiver.forbidden_requests += 1
                self._problem(ErrorCode.FORBIDDEN_DEVICE, "key may not send for this device")
                return
        results = [receiver.accept(obj) for obj in events]
        response = BatchResponse.of(results).model_dump_json(exclude_none=True).encode()
        self._reply(202, response, "application/json", {})


class EdgeReceiver:
    """Start with ``start()``; ``url`` is stable across stop/start (same port)."""

    def __init__(
        self,
        public_keys: list[Ed25519PublicKey],
        *,
        clock: Callable[[], float] = time.time,
        reject: Callable[[dict[str, Any]], EventError | None] | None = None,
        device_ids: set[str] | None = None,
        forbidden_mode: str = "event",
    ) -> None:
        self.clock = clock
        #: The devices the key is bound to (None: any); a forbidden device fails its event ("event", the API's
        #: contract since issue 14) or the whole request ("request", the contract before it).
        self.device_ids = device_ids
        self.forbidden_mode = forbidden_mode
        self.forbidden_requests = 0
        keys = {key_id_for(k): KeyInfo(key_id=key_id_for(k), public_key=k, role="device") for k in public_keys}
        self.verifier = Verifier(_Keys(keys), MemoryNonceStore(), clock=self._now)
        self.reject = reject
        self.lock = threading.Lock()
        self.script: deque[Scripted] = deque()
        self.accepted: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []  # accepted event ids, in arrival order
        self.duplicates = 0
        self.rejected: dict[str, EventError] = {}
        self.requests = 0
        self.auth_failures: Counter[str] = Counter()
        self.outage_connections = 0
        self.connections: list[socket.socket] = []
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._blackhole: socket.socket | None = None
        self._blackhole_thread: threading.Thread | None = None

    def _now(self) -> float:
        return self.clock()  # late-bound so a test can move the server's clock

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------------------------------ events

    def accept(self, obj: Any) -> EventResult:
        try:
            event = validate_event(obj)
        except ValidationError as exc:
            return rejected(obj.get("event_id") if isinstance(obj, dict) else None, event_error(exc))
        if self.device_ids is not None and event.device_id not in self.device_ids:
            error = EventError(code=ErrorCode.FORBIDDEN_DEVICE, detail="key may not send for this device")
            with self.lock:
                self.rejected[event.event_id] = error
            return EventResult(event_id=event.event_id, status="rejected", error=error)
        if self.reject is not None:
            error = self.reject(obj)
            if error is not None:
                with self.lock:
                    self.rejected[event.event_id] = error
                return EventResult(event_id=event.event_id, status="rejected", error=error)
        with self.lock:
            if event.event_id in self.accepted:
                self.duplicates += 1
                return EventResult(event_id=event.event_id, status="duplicate")
            self.accepted[event.event_id] = {
                "event_id": event.event_id,
                "device_id": event.device_id,
                "captured_at": event.captured_at,
                "event_type": obj.get("event_type"),
                "source_ref": event.source_ref,
                "images": len(event.images),
            }
            self.order.append(event.event_id)
        return EventResult(event_id=event.event_id, status="accepted")

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> EdgeReceiver:
        self._stop_blackhole()
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.receiver = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self._stop_blackhole()

    def start_outage(self) -> None:
        """Stop serving; accept-and-close every connection on the port, counting the attempts."""
        self.stop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        sock.settimeout(0.05)
        self._blackhole = sock
        self.outage_connections = 0

        def loop() -> None:
            while self._blackhole is sock:
                try:
                    conn, _ = sock.accept()
                except (TimeoutError, OSError):
                    continue
                self.outage_connections += 1
                conn.close()

        self._blackhole_thread = threading.Thread(target=loop, daemon=True)
        self._blackhole_thread.start()

    def _stop_blackhole(self) -> None:
        sock, self._blackhole = self._blackhole, None
        if self._blackhole_thread is not None:
            self._blackhole_thread.join(5)
            self._blackhole_thread = None
        if sock is not None:
            sock.close()

    def __enter__(self) -> EdgeReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
