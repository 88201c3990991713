"""The http source: a LAN receiver for devices that push our v1 event JSON (``POST /v1/events``).

Answers like the API does: 202 with one result per event (``accepted`` once the event is durable in the
spool, ``duplicate`` when it already was, ``rejected`` with a reason), problem+json for whole-request errors,
503 with ``Retry-After`` when the spool stays full. Unsigned: it listens on the site network only.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from pydantic import ValidationError

from anfang.contracts import (
    MAX_BODY_BYTES,
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

from ..config import HttpSourceConfig
from ..errors import SpoolFullError
from ..spool import Spool, SpoolItem, item_from_event

__all__ = ["HttpSource"]

log = logging.getLogger("anfang_edge.sources.http")
_PATH: Final = "/v1/events"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    source: HttpSource


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http source: " + format, *args)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _problem(self, code: ErrorCode, detail: str, headers: dict[str, str] | None = None) -> None:
        problem = Problem.of(code, detail, instance=_PATH)
        self._send(code.http_status, problem.model_dump_json(exclude_none=True).encode(), PROBLEM_CONTENT_TYPE, headers)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, b'{"status":"ok"}', "application/json")
        else:
            self._problem(ErrorCode.NOT_FOUND, "no such path")

    def do_POST(self) -> None:
        if self.path != _PATH:
            self._problem(ErrorCode.NOT_FOUND, "no such path")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._problem(ErrorCode.MALFORMED_JSON, "Content-Length is required")
            return
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._problem(ErrorCode.PAYLOAD_TOO_LARGE, f"body exceeds {MAX_BODY_BYTES} bytes")
            return
        raw = self.rfile.read(length)
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
            response = self.server.source.accept(events)
        except SpoolFullError:
            self._problem(ErrorCode.RETRY_LATER, "the gateway's spool is full", {"Retry-After": "5"})
            return
        self._send(202, response.model_dump_json(exclude_none=True).encode(), "application/json")


class HttpSource:
    """Listens on ``listen_host:listen_port`` (port 0: an ephemeral port, see ``port``)."""

    def __init__(self, config: HttpSourceConfig, spool: Spool, *, name: str = "http") -> None:
        self.config = config
        self.spool = spool
        self.name = name
        self._server = _Server((config.listen_host, config.listen_port), _Handler)
        self._server.source = self

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def accept(self, events: list[Any]) -> BatchResponse:
        """Validate each event, spool the valid ones in one durable put, answer per event in request order."""
        results: list[EventResult | None] = []
        items: list[SpoolItem] = []
        seen: set[str] = set()
        for obj in events:
            try:
                item = item_from_event(validate_event(obj))
            except ValidationError as exc:
                results.append(rejected(obj.get("event_id") if isinstance(obj, dict) else None, event_error(exc)))
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
        item_iter = iter(items)
        final: list[EventResult] = []
        for result in results:
            if result is not None:
                final.append(result)
                continue
            event_id = next(item_iter).event_id
            if event_id in dropped:
                error = EventError(code=ErrorCode.RETRY_LATER, detail="the gateway's spool is full")
                final.append(EventResult(event_id=event_id, status="retry_later", error=error))
            elif event_id in duplicates:
                final.append(EventResult(event_id=event_id, status="duplicate"))
            else:
                final.append(EventResult(event_id=event_id, status="accepted"))
        return BatchResponse.of(final)

    def run(self, stop: threading.Event) -> None:
        thread = threading.Thread(target=self._server.serve_forever, args=(0.25,), name=self.name, daemon=True)
        thread.start()
        log.info("http source listening on %s:%d", self.config.listen_host, self.port)
        stop.wait()
        self._server.shutdown()
        self._server.server_close()
        thread.join(5)
