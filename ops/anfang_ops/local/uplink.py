"""A gateway's uplink for load tests: a TCP relay on 127.0.0.1 between one edge agent and the API, which can be cut.

The agent's ``api_url`` points at the relay. :meth:`Uplink.cut` drops every open connection (reset, as a dead
link looks to TCP) and resets each new one until :meth:`Uplink.restore`: the agent sees connection errors,
backs off and keeps spooling, then flushes its backlog when the link is back. Bytes pass through untouched,
so the signatures the API checks are the agent's own.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

__all__ = ["Uplink"]


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close → RST
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a pump thread blocked on it (close alone would not)
    with contextlib.suppress(OSError):
        sock.close()


class Uplink:
    """Relay ``127.0.0.1:<port>`` → ``target``; see the module docstring."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.up = True
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.cuts = 0
        #: bytes carried from the agent to the API so far (a load test watches a flush begin)
        self.bytes_up = 0
        threading.Thread(target=self._accept, name=f"uplink-{self.port}", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self.up = False
        self.cuts += 1
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            _reset(sock)

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.up:
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:  # the API is down (restarting): the agent sees its connection reset
                _reset(client)
                continue
            with self._lock:
                self._open.update((client, server))
            for source, sink, upward in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(source, sink, upward), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upward: bool) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
                if upward:
                    self.bytes_up += len(chunk)  # one pump thread per direction and connection: an estimate
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
