"""The bounded HTTP listener under the LAN sources (``http``, ``gat1400``): hostile clients cannot exhaust it.

What it bounds, for every connection and request:

- connections: at most ``max_connections`` open (``max_connections_per_address`` per client address); more are
  closed at once, before a worker or a byte of buffer is spent on them;
- workers: a fixed pool of ``workers`` threads (not a thread per connection);
- time: every read waits at most ``idle_timeout_secs``, and a request's head and body together must arrive
  within ``request_timeout_secs`` of the connection asking for it (slow-drip bodies and headers are cut off);
- bytes: the request head is capped at ``max_header_bytes`` (431), the body at ``max_body_bytes`` (413);
  ``Content-Length`` is required, one value, digits only (411/400: no chunked bodies, no ``-1``); bodies in
  flight across all workers are capped at ``max_inflight_body_bytes`` (503 while that budget is spent);
- order: the source authenticates a request on its headers *before* its body is read; a refused body is
  never buffered or parsed, only drained to nowhere in 8 KiB reads (so the client reads the answer instead
  of a TCP reset), within the request deadline and ``max_body_bytes``.

Why not a framework: the agent installs the contracts and the standard library only (no ASGI server on a
gateway), and ``http.server`` gives the parsing; what it lacks is exactly the bounds above, added here.

>>> server = BoundedHTTPServer(("192.168.1.10", 8089), MyHandler, limits=ListenerLimits(), name="http0")
>>> threading.Thread(target=server.serve_forever, args=(0.25,)).start()
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Final

__all__ = [
    "BodyRefusal",
    "BoundedHTTPServer",
    "BoundedHandler",
    "ByteBudget",
    "ListenerCounters",
    "ListenerLimits",
]

log = logging.getLogger("anfang_edge.sources.listener")

#: What a buffered reader may pull past the request head (one read-ahead chunk).
_READ_AHEAD: Final = io.DEFAULT_BUFFER_SIZE
#: How much of a refused body larger than max_body_bytes is drained before the connection is closed.
_DISCARD_MAX_BYTES: Final = 64 * 1024
_DISCARD_SECS: Final = 0.5
_MAX_LENGTH_DIGITS: Final = 18


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """The bounds of one listener (see the module docstring); the source configs carry them."""

    max_body_bytes: int = 5 * 1024 * 1024
    max_header_bytes: int = 32 * 1024
    max_inflight_body_bytes: int = 16 * 1024 * 1024
    idle_timeout_secs: float = 10.0
    request_timeout_secs: float = 60.0
    workers: int = 16
    max_connections: int = 128
    max_connections_per_address: int = 8


class ListenerCounters:
    """Refusals counted in memory and flushed to the spool's counters by the source's loop.

    In memory because a flood must not turn into one durable (fsync'd) spool write per refused connection.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def bump(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._counts[reason] += n

    def drain(self) -> dict[str, int]:
        """The counts since the last drain, named ``<prefix>.<reason>``."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
        return {f"{self.prefix}.{reason}": n for reason, n in counts.items() if n}


class ByteBudget:
    """A counting semaphore over bytes: the bodies held in memory by all workers of a listener."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._used = 0
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        return self._used

    def acquire(self, n: int, timeout: float) -> bool:
        """Reserve ``n`` bytes, waiting up to ``timeout``; False when the budget stayed spent."""
        if n > self.capacity:
            return False
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._used + n > self.capacity:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            self._used += n
            return True

    def release(self, n: int) -> None:
        with self._cond:
            self._used -= n
            self._cond.notify_all()


class _RequestTooLargeError(Exception):
    """The client sent more bytes than the current phase allows (an oversized request head)."""


class _DeadlineReader(io.RawIOBase):
    """The socket's read side with a per-read timeout, a deadline for the whole request and a byte cap."""

    def __init__(self, sock: socket.socket, idle_timeout_secs: float, first_byte_by: float = math.inf) -> None:
        super().__init__()
        self._sock = sock
        self._idle = idle_timeout_secs
        self.deadline = math.inf
        self.allowance = 0
        #: A connection that waited in the queue for a worker has used up that much of its idle time.
        self._first_byte_by = first_byte_by

    def arm(self, deadline: float, allowance: int) -> None:
        self.deadline, self.allowance = deadline, allowance

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request deadline passed")
        if self.allowance <= 0:
            raise _RequestTooLargeError
        view = memoryview(buffer).cast("B")
        wait = min(self._idle, remaining)
        if self._first_byte_by != math.inf:
            wait = min(wait, max(0.01, self._first_byte_by - time.monotonic()))
        self._sock.settimeout(wait)
        n = self._sock.recv_into(view[: min(len(view), self.allowance)])
        self._first_byte_by = math.inf
        self.allowance -= n
        return n


@dataclass(frozen=True, slots=True)
class BodyRefusal:
    """Why a body will not be read: HTTP status, a short reason (counted) and a readable detail."""

    status: int
    reason: str
    detail: str
    #: The body is still unread on the connection (discard a little of it before closing).
    unread: bool = True


class BoundedHTTPServer(HTTPServer):
    """``HTTPServer`` with admission control, a fixed worker pool and per-listener counters."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: Callable[..., BaseHTTPRequestHandler],
        *,
        limits: ListenerLimits,
        name: str,
    ) -> None:
        self.limits = limits
        self.name = name
        self.counters = ListenerCounters(f"listener.{name}")
        self.body_budget = ByteBudget(limits.max_inflight_body_bytes)
        self._pool = ThreadPoolExecutor(limits.workers, thread_name_prefix=f"{name}-worker")
        self._lock = threading.Lock()
        self._per_address: Counter[str] = Counter()
        self._open: set[socket.socket] = set()
        self._accepted_at: dict[socket.socket, float] = {}
        self._closing = False
        super().__init__(address, handler)

    # --------------------------------------------------------------------------------------- admission

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def idle_deadline(self, request: Any) -> float:
        """When a connection must have sent its first byte: its idle timeout counts from the accept."""
        with self._lock:
            accepted = self._accepted_at.get(request)
        return math.inf if accepted is None else accepted + self.limits.idle_timeout_secs

    def verify_request(self, request: Any, client_address: Any) -> bool:
        host = str(client_address[0])
        with self._lock:
            if self._closing:
                return False
            if len(self._open) >= self.limits.max_connections:
                reason = "connections_full"
            elif self._per_address[host] >= self.limits.max_connections_per_address:
                reason = "connections_per_address_full"
            else:
                self._open.add(request)
                self._accepted_at[request] = time.monotonic()
                self._per_address[host] += 1
                return True
        self.counters.bump(reason)
        return False

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            future = self._pool.submit(self._work, request, client_address)
        except RuntimeError:  # the pool is shut down: we are stopping
            self._release(request, client_address)
            self.shutdown_request(request)
            return

        def on_done(done: Future[None]) -> None:
            if done.cancelled():  # still queued when the listener stopped
                self._release(request, client_address)
                self.shutdown_request(request)

        future.add_done_callback(on_done)

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self._release(request, client_address)
            self.shutdown_request(request)

    def _release(self, request: Any, client_address: Any) -> None:
        host = str(client_address[0])
        with self._lock:
            self._accepted_at.pop(request, None)
            if request in self._open:
                self._open.discard(request)
                self._per_address[host] -= 1
                if self._per_address[host] <= 0:
                    del self._per_address[host]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that resets or times out is routine on a LAN under attack; never a traceback on stderr
        log.debug("%s: connection from %s ended with an error", self.name, client_address, exc_info=True)
        self.counters.bump("connection_errors")

    def server_close(self) -> None:
        """Stop listening, cut every open connection and stop the workers."""
        with self._lock:
            self._closing = True
            open_now = list(self._open)
        super().server_close()
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._pool.shutdown(wait=True, cancel_futures=True)


class BoundedHandler(BaseHTTPRequestHandler):
    """A request handler whose reads are bounded by the server's :class:`ListenerLimits`.

    Subclasses answer refusals in their own format (``refuse``) and read bodies with ``read_body`` after
    authenticating on the headers.
    """

    server: BoundedHTTPServer
    protocol_version = "HTTP/1.1"
    _reader: _DeadlineReader
    _reserved: int = 0

    def setup(self) -> None:
        self.connection = self.request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self._reader = _DeadlineReader(
            self.connection, self.server.limits.idle_timeout_secs, self.server.idle_deadline(self.request)
        )
        self.rfile = io.BufferedReader(self._reader, _READ_AHEAD)
        self.wfile = self.connection.makefile("wb", 0)
        # writes (sendall) give up after the idle timeout too: a client that never reads cannot hold a worker
        self.connection.settimeout(self.server.limits.idle_timeout_secs)

    def handle_one_request(self) -> None:
        limits = self.server.limits
        self._reader.arm(time.monotonic() + limits.request_timeout_secs, limits.max_header_bytes + _READ_AHEAD)
        self._reserved = 0
        try:
            super().handle_one_request()
        except _RequestTooLargeError:
            self.server.counters.bump("header_too_large")
            self.close_connection = True
            self._raw_status(431, "Request Header Fields Too Large")
        except TimeoutError:
            self.server.counters.bump("timeout")
            self.close_connection = True
        finally:
            if self._reserved:  # the body stayed reserved while the source worked on it
                self.server.body_budget.release(self._reserved)
                self._reserved = 0

    def _raw_status(self, status: int, text: str) -> None:
        # the head could not be parsed, so there is no request to answer in the source's format
        with contextlib.suppress(OSError):
            self.wfile.write(f"HTTP/1.1 {status} {text}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s: " + format, self.server.name, *args)

    # --------------------------------------------------------------------------------------- for subclasses

    @property
    def peer(self) -> str:
        """The client's IP address."""
        return str(self.client_address[0])

    def refuse(self, status: int, reason: str, detail: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Answer a refusal in the source's format (overridden); the base sends an empty body."""
        self.send_response(status)
        self.send_header("Content-Length", "0")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def refuse_unread(self, status: int, reason: str, detail: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Refuse before the body is read: count it, answer, discard a little of the body, close."""
        self.server.counters.bump(reason)
        self.close_connection = True
        self.refuse(status, reason, detail, (*headers, ("Connection", "close")))
        self._discard_body()

    def _discard_body(self) -> None:
        """Drain a refused request's body to nowhere, so the client reads the answer instead of a reset.

        Nothing is kept (one read-ahead buffer is reused) and nothing is parsed. A body within ``max_body_bytes``
        is drained whole within the request deadline (a camera whose registration lapsed must see its 401, or
        it never registers again); a larger one only up to 64 KiB for half a second.
        """
        declared = self.headers.get("Content-Length", "") if self.headers else ""
        if not declared.isascii() or not declared.isdigit() or len(declared) > _MAX_LENGTH_DIGITS:
            return
        length = int(declared)
        if length <= self.server.limits.max_body_bytes:
            left, deadline = length, min(self._reader.deadline, time.monotonic() + self.server.limits.idle_timeout_secs)
        else:
            left, deadline = _DISCARD_MAX_BYTES, time.monotonic() + _DISCARD_SECS
        self._reader.arm(deadline, left + _READ_AHEAD)
        with contextlib.suppress(OSError, TimeoutError, _RequestTooLargeError, ValueError):
            while left > 0:
                chunk = self.rfile.read1(min(left, _READ_AHEAD))
                if not chunk:
                    break
                left -= len(chunk)

    def content_length(self, cap: int) -> int | BodyRefusal:
        """The declared body length: exactly one ``Content-Length`` of digits, 0 ≤ n ≤ ``cap``; no chunked."""
        if self.headers.get("Transfer-Encoding") is not None:
            return BodyRefusal(411, "transfer_encoding", "Content-Length is required; chunked bodies are not accepted")
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return BodyRefusal(411, "length_missing", "Content-Length is required")
        if len(values) > 1 or not values[0].isascii() or not values[0].strip().isdigit():
            return BodyRefusal(400, "length_invalid", "Content-Length must be one non-negative integer")
        text = values[0].strip()
        if len(text) > _MAX_LENGTH_DIGITS or int(text) > cap:
            return BodyRefusal(413, "body_too_large", f"the body exceeds {cap} bytes")
        return int(text)

    def read_body(self, length: int) -> bytearray | BodyRefusal:
        """Read exactly ``length`` bytes within the request deadline, inside the listener's memory budget.

        The bytes stay reserved in the budget until the request is answered (parsing holds copies of them).
        """
        if not self.server.body_budget.acquire(length, timeout=1.0):
            return BodyRefusal(503, "busy", "the gateway is busy; retry")
        self._reserved = length
        self._reader.allowance = length + _READ_AHEAD
        # read into one buffer of the final size: no list of chunks joined into a second copy
        body = bytearray(length)
        view = memoryview(body)
        got = 0
        try:
            while got < length:
                n = self.rfile.readinto(view[got:])
                if not n:
                    break
                got += n
        except TimeoutError:
            return BodyRefusal(408, "timeout", "the body did not arrive in time", unread=False)
        except (OSError, _RequestTooLargeError):
            return BodyRefusal(400, "connection_error", "the connection failed while reading the body", unread=False)
        if got != length:
            return BodyRefusal(400, "body_truncated", "the body is shorter than its Content-Length", unread=False)
        return body

    def body(self, cap: int) -> bytearray | None:
        """The request's body under ``cap`` (``content_length`` then ``read_body``), or None once refused."""
        length = self.content_length(cap)
        raw = self.read_body(length) if isinstance(length, int) else length
        if isinstance(raw, BodyRefusal):
            self.refuse_body(raw)
            return None
        return raw

    def refuse_body(self, refusal: BodyRefusal, headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Answer a failed ``content_length``/``read_body``; the connection is not reused."""
        self.server.counters.bump(refusal.reason)
        self.close_connection = True
        extra = (("Retry-After", "5"),) if refusal.status == 503 else ()
        with contextlib.suppress(OSError):
            self.refuse(refusal.status, refusal.reason, refusal.detail, (*headers, *extra, ("Connection", "close")))
        if refusal.unread:
            self._discard_body()

    @staticmethod
    def media_type(value: str | None) -> str:
        """The lower-cased media type of a Content-Type value, without parameters."""
        return (value or "").split(";", 1)[0].strip().lower()
