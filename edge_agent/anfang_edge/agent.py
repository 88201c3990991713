"""The agent: a spool, the uploader and the configured sources, run until SIGTERM/SIGINT.

>>> Agent(load_config(Path("agent.toml"))).run()
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .config import AgentConfig
from .keyfile import read_private_key
from .memory import limit_heap_growth
from .sources import Source, build_source
from .spool import Spool
from .systemd import notify, watchdog_interval_secs
from .uploader import Uploader, UploaderSettings

__all__ = ["Agent"]

log = logging.getLogger("anfang_edge.agent")
_STATUS_EVERY_SECS: Final = 5.0
_JOIN_SECS: Final = 10.0


class Agent:
    """Wires the parts; ``run`` blocks until stopped and returns the process exit code."""

    def __init__(self, config: AgentConfig, *, private_key: Ed25519PrivateKey | None = None) -> None:
        self.config = config
        limit_heap_growth()  # large request bodies must not stay in per-thread arenas
        key = private_key or read_private_key(config.resolve_private_key_file())
        self.spool = Spool(
            config.spool_path,
            max_bytes=config.spool_max_bytes,
            when_full=config.when_full,
            allowed_devices=config.key_devices,
        )
        if config.key_devices is None:
            log.warning("key_device_ids is not set: events for devices the key may not send for are not refused")
        self.uploader = Uploader(self.spool, UploaderSettings.from_config(config), key)
        self.sources: list[Source] = [build_source(s, self.spool, index=i) for i, s in enumerate(config.sources)]
        self.stop_event = threading.Event()
        self.failed: list[str] = []

    def _guard(self, name: str, target: Callable[[threading.Event], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target(self.stop_event)
            except Exception:
                log.exception("%s failed; stopping the agent", name)
                self.failed.append(name)
                self.stop()

        return run

    def stop(self) -> None:
        self.stop_event.set()
        self.spool.wake()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        self.stop()

    def status_line(self) -> str:
        stats = self.spool.stats()
        last = self.uploader.last_outcome
        state = "ok" if last is None or last.error is None else f"retrying ({last.error})"
        return f"spool {stats.depth} events, {stats.quarantined} quarantined; uplink {state}"

    def run(self, *, install_signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT (or ``stop()``); 0 after a clean stop, 1 when a part failed."""
        if install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, self._on_signal)
        parts: list[tuple[str, Callable[[threading.Event], None]]] = [("uploader", self.uploader.run)]
        parts += [(s.name, s.run) for s in self.sources]
        threads = [threading.Thread(target=self._guard(name, target), name=name) for name, target in parts]
        for thread in threads:
            thread.start()
        notify("READY=1", "STATUS=" + self.status_line())
        log.info("anfang-edge running: %d sources, spool %s", len(self.sources), self.config.spool_path)
        watchdog = watchdog_interval_secs() if self.config.watchdog else None
        tick = min(watchdog or _STATUS_EVERY_SECS, _STATUS_EVERY_SECS)
        # a failed part stops the agent (exit 1) instead of hiding behind watchdog pings; systemd restarts it
        while not self.stop_event.wait(tick):
            notify("WATCHDOG=1", "STATUS=" + self.status_line())
        notify("STOPPING=1")
        deadline = time.monotonic() + _JOIN_SECS
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.spool.close()
        log.info("anfang-edge stopped")
        return 1 if self.failed else 0
