"""Real edge agents for the local demo and the soak: a site registered, its key made, ``anfang-edge run`` started.

Each agent is its own process (``python -m anfang_edge.cli run``), configured with a simulator source, talking
to the local API over HTTP with its own Ed25519 key, its spool a SQLite file under ``home``. What it has made,
sent and quarantined is read straight from that spool (read-only; WAL lets a reader in beside the agent), so
watching an agent costs no process start and survives the agent being killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anfang.aws.registry import DeviceRegistry, Site
from anfang.contracts import generate_private_key, key_id_for, private_key_to_pem

__all__ = ["EdgeAgent", "SpoolState", "provision_agent"]


@dataclass(frozen=True)
class SpoolState:
    """What an agent's spool says: the simulator's progress, what waits, its counters, its quarantine."""

    next_seq: int = 0
    depth: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    #: (device_id, event_id, code, reason, body) of each quarantined event
    quarantined: list[tuple[str, str, str, str, bytes]] = field(default_factory=list)


@dataclass
class EdgeAgent:
    """One gateway's agent process."""

    name: str
    home: Path
    config: Path
    device_ids: list[str]
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def spool_path(self) -> Path:
        return self.home / "state" / "spool.sqlite3"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and not k.startswith("ANFANG_LOCAL")}
        self.process = subprocess.Popen(  # the agent knows no AWS
            [sys.executable, "-m", "anfang_edge.cli", "run", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=(self.home / "agent.log").open("ab"),
            env=env,
        )
        self.starts += 1

    def kill(self) -> None:
        """kill -9, as a power cut would stop it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def spool_state(self, *, quarantine: bool = False) -> SpoolState:
        if not self.spool_path.exists():
            return SpoolState()
        try:
            db = sqlite3.connect(f"file:{self.spool_path}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error:
            return SpoolState()
        try:
            counters = {str(n): int(v) for n, v in db.execute("SELECT name, value FROM counters")}
            meta = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE '%.next_seq'").fetchall())
            depth = int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
            rows: list[Any] = []
            if quarantine:
                rows = db.execute("SELECT device_id, event_id, code, reason, body FROM quarantine").fetchall()
            return SpoolState(
                next_seq=sum(int(v) for v in meta.values()),
                depth=depth,
                counters=counters,
                quarantined=[(str(d), str(e), str(c), str(r), bytes(b)) for d, e, c, r, b in rows],
            )
        except sqlite3.Error:
            return SpoolState()  # a spool being created: nothing to count yet
        finally:
            with contextlib.suppress(sqlite3.Error):
                db.close()


def provision_agent(
    registry: DeviceRegistry,
    site: Site,
    device_ids: list[str],
    home: Path,
    *,
    api_url: str,
    source: str,
    settings: str = "batch_max_events = 100\nlinger_ms = 200\n",
) -> EdgeAgent:
    """Register the site's devices and a key for them; write the agent's key file and config (not started).

    ``source`` is the TOML of its ``[[sources]]`` table; ``settings`` more top-level settings.
    """
    for device_id in device_ids:
        registry.register_device(device_id, site)
    private = generate_private_key()
    registry.add_key(private.public_key(), role="device", device_ids=device_ids)
    home.mkdir(parents=True, exist_ok=True)
    key_file = home / "agent.key"
    key_file.write_bytes(private_key_to_pem(private))
    key_file.chmod(0o600)
    config = home / "agent.toml"
    config.write_text(
        f'api_url = "{api_url}"\nkey_id = "{key_id_for(private.public_key())}"\n'
        f'private_key_file = "{key_file}"\nstate_dir = "{home / "state"}"\n'
        f'watchdog = false\nlog_level = "warning"\n{settings}\n[[sources]]\n{source}',
        encoding="utf-8",
    )
    return EdgeAgent(site.site_id, home, config, device_ids)
