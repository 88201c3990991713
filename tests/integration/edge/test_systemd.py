"""sd_notify: the agent as a real process under a fake systemd (a datagram socket), and graceful stop."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from anfang_edge.systemd import notify, watchdog_interval_secs

from .receiver import EdgeReceiver
from .support import KeyPair, start_agent, stop_agent, write_config


def _listen(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    return sock


def test_notify_sends_one_datagram_and_is_a_no_op_without_systemd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    with _listen(tmp_path / "notify") as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        assert notify("READY=1", "STATUS=hello") is True
        assert sock.recv(4096) == b"READY=1\nSTATUS=hello"
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval_secs() == 2.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval_secs() is None


def test_given_systemd_when_the_agent_runs_then_ready_watchdog_status_and_clean_stop(
    tmp_path: Path, key: KeyPair, receiver: EdgeReceiver
) -> None:
    config = write_config(
        tmp_path,
        key,
        receiver.url,
        watchdog=True,
        sources=[{"type": "simulator", "rate_per_sec": 50.0, "max_events": 20, "images": True}],
    )
    with _listen(tmp_path / "notify") as sock:
        proc = start_agent(
            config, tmp_path / "agent.log", env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
        )
        try:
            messages = [sock.recv(4096).decode() for _ in range(4)]
        finally:
            code = stop_agent(proc)
        tail = []
        sock.settimeout(1)
        try:
            while True:
                tail.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
    assert code == 0
    assert messages[0].startswith("READY=1\nSTATUS=spool ")
    assert any(m.startswith("WATCHDOG=1\nSTATUS=spool ") for m in messages[1:])
    assert tail and tail[-1] == "STOPPING=1"


UNIT = Path(__file__).resolve().parents[3] / "edge_agent" / "packaging" / "anfang-edge.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_unit_scores_at_most_2_0_in_systemd_analyze_security() -> None:
    # --offline=yes needs systemd >= 250; older ones fail the command, which is a skip, not a pass
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    if match is None:
        pytest.skip(f"systemd-analyze security --offline unsupported: {result.stderr.strip()[:200]}")
    assert float(match.group(1)) <= 2.0, result.stdout


def test_the_unit_restricts_addresses_and_keeps_the_spool_private() -> None:
    lines = {line.strip() for line in UNIT.read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {"IPAddressDeny=any", "IPAddressAllow=localhost", "UMask=0077", "StateDirectoryMode=0700"} <= lines
    assert any(line.startswith("IPAddressAllow=") and "/" in line for line in lines)  # the LAN and the API
    assert "MemoryMax=256M" in lines
