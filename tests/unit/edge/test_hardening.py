"""Issue 14 on disk and in the config: private spool, refused world-readable secrets, https, explicit binds,
key bindings, retention and the purge commands."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anfang.contracts import generate_private_key, key_id_for, private_key_to_pem
from anfang_edge.cli import main
from anfang_edge.config import Gat1400DeviceConfig, HttpDeviceConfig, parse_config
from anfang_edge.errors import ConfigError, KeyFileError
from anfang_edge.keyfile import read_private_key
from anfang_edge.sources.watch_dir import purge_done
from anfang_edge.spool import Spool

from .helpers import item

MINIMAL = 'api_url = "https://api.example"\nkey_id = "k1"\nprivate_key_file = "agent.key"\n'
DEVICE = "33010600001320000001"


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask a careless service manager could leave us (restored afterwards)."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_given_umask_0_the_spool_folder_is_0700_and_its_files_0600(tmp_path: Path, open_umask: None) -> None:
    # GIVEN a state folder created world-readable, as a umask of 0 would
    state = tmp_path / "state"
    state.mkdir(mode=0o777)
    # WHEN the spool opens, writes and checkpoints
    spool = Spool(state / "spool.sqlite3")
    spool.put_many([item(1)])
    files = sorted(p.name for p in state.iterdir())
    # THEN the folder and every file in it (database, WAL, shared memory) are the agent's user's only
    assert _mode(state) == 0o700
    assert {"spool.sqlite3", "spool.sqlite3-wal", "spool.sqlite3-shm"} <= set(files)
    assert {name: _mode(state / name) for name in files} == dict.fromkeys(files, 0o600)
    spool.close()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_private_key_its_group_or_others_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "agent.key"
    path.write_bytes(private_key_to_pem(generate_private_key()))
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="accessible by group or others"):
        read_private_key(path)
    path.chmod(0o600)
    assert read_private_key(path) is not None
    path.chmod(0o400)
    assert read_private_key(path) is not None


def test_the_agent_refuses_to_start_with_a_readable_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = generate_private_key()
    key_file = tmp_path / "agent.key"
    key_file.write_bytes(private_key_to_pem(key))
    key_file.chmod(0o644)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'api_url = "https://api.example"\nkey_id = "{key_id_for(key.public_key())}"\n'
        f'private_key_file = "{key_file}"\nstate_dir = "{tmp_path / "state"}"\n'
    )
    for argv in (["run", "--config", str(config)], ["config", "check", "--config", str(config)]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "accessible by group or others (mode 0644)" in err


def test_password_and_secret_files_must_be_owner_only(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s" * 40 + "\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="accessible by group or others"):
        HttpDeviceConfig(secret_file=secret).resolve_secret()
    with pytest.raises(ConfigError, match="accessible by group or others"):
        Gat1400DeviceConfig(username="cam", password_file=secret).resolve_password()
    secret.chmod(0o600)
    assert HttpDeviceConfig(secret_file=secret).resolve_secret() == b"s" * 40


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://events.example-town.gov.cn", True),
        ("http://127.0.0.1:8080", True),
        ("http://127.9.9.9", True),
        ("http://localhost:9", True),
        ("http://[::1]:9", True),
        ("http://events.example-town.gov.cn", False),
        ("http://192.168.1.10", False),
        ("http://127.0.0.1.evil.example", False),
    ],
)
def test_api_url_must_be_https_except_for_loopback(url: str, ok: bool) -> None:
    text = MINIMAL.replace("https://api.example", url)
    if ok:
        assert str(parse_config(text).api_url).startswith(url.split(":", maxsplit=1)[0])
    else:
        with pytest.raises(ConfigError, match="must be https"):
            parse_config(text)


@pytest.mark.parametrize("source_type", ["http", "gat1400"])
@pytest.mark.parametrize("host", ["0.0.0.0", "::", ""])
def test_no_listener_binds_every_interface_unless_the_config_says_so(source_type: str, host: str) -> None:
    text = MINIMAL + f'[[sources]]\ntype = "{source_type}"\nlisten_host = "{host}"\n'
    with pytest.raises(ConfigError, match="binds every interface"):
        parse_config(text)
    config = parse_config(text + "listen_all_interfaces = true\n")
    assert config.sources[0].listen_host == host  # type: ignore[union-attr]
    assert parse_config(MINIMAL + f'[[sources]]\ntype = "{source_type}"\n').sources[0].listen_host == "127.0.0.1"  # type: ignore[union-attr]


def test_every_device_a_source_names_must_be_bound_to_the_key() -> None:
    base = MINIMAL + f'key_device_ids = ["{DEVICE}"]\n'
    gat = '[[sources]]\ntype = "gat1400"\n[sources.devices.33010600001190000001]\nusername = "c"\npassword = "p"\n'
    with pytest.raises(ConfigError, match="33010600001190000001 is not in key_device_ids"):
        parse_config(base + gat)
    child = gat.replace('password = "p"\n', f'password = "p"\nchild_devices = ["{DEVICE}"]\n')
    with pytest.raises(ConfigError, match="33010600001190000001 is not in key_device_ids"):
        parse_config(base.replace(f'"{DEVICE}"', f'"{DEVICE}", "33010600001190000002"') + child)
    simulator = '[[sources]]\ntype = "simulator"\ndevices = 2\nimages = false\n'
    with pytest.raises(ConfigError, match="33010600001320000002 is not in key_device_ids"):
        parse_config(base + simulator)
    assert parse_config(base + simulator.replace("devices = 2", "devices = 1")).key_devices == frozenset({DEVICE})
    with pytest.raises(ConfigError, match="20 ASCII digits"):
        parse_config(MINIMAL + 'key_device_ids = ["123"]\n')


def test_usernames_name_gat1400_devices_so_they_must_be_unique() -> None:
    text = MINIMAL + (
        '[[sources]]\ntype = "gat1400"\n'
        '[sources.devices.33010600001190000001]\nusername = "cam"\npassword = "a"\n'
        '[sources.devices.33010600001190000002]\nusername = "cam"\npassword = "b"\n'
    )
    with pytest.raises(ConfigError, match="its own username"):
        parse_config(text)


def test_quarantine_retention_deletes_only_old_quarantined_events(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    spool = Spool(tmp_path / "spool.sqlite3", clock=lambda: now[0])
    spool.put_many([item(1), item(2)])
    old, new = (p.event_id for p in spool.pending())
    spool.quarantine({old: ("forbidden_device", "x")})
    now[0] += 3600
    spool.quarantine({new: ("forbidden_device", "x")})
    # WHEN the quarantine older than 30 minutes is purged THEN only the first event goes
    assert spool.purge(older_than=now[0] - 1800) == 1
    assert [q.event_id for q in spool.quarantined()] == [new]
    spool.close()


def test_done_retention_and_the_purge_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a watch_dir whose done/ holds two spooled pairs, and a spool with a quarantined event
    key = generate_private_key()
    key_file = tmp_path / "agent.key"
    key_file.write_bytes(private_key_to_pem(key))
    key_file.chmod(0o600)
    ftp = tmp_path / "ftp"
    (ftp / "done").mkdir(parents=True)
    for name in ("a.jpg", "a.json", "b.jpg", "b.json"):
        (ftp / "done" / name).write_bytes(b"x")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'api_url = "https://api.example"\nkey_id = "{key_id_for(key.public_key())}"\n'
        f'private_key_file = "{key_file}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[sources]]\ntype = "watch_dir"\npath = "{ftp}"\ndone_retention_hours = 1\n'
    )
    # THEN files moved less than done_retention_hours ago stay, and "now + 2 h" they are due
    assert purge_done(ftp / "done", older_than=time.time() - 3600) == 0
    assert purge_done(ftp / "done", older_than=time.time() + 2 * 3600 - 3600) == 4
    (ftp / "done" / "c.json").write_bytes(b"x")
    assert main(["watch-dir", "purge", "--config", str(config)]) == 0
    assert "0 files deleted" in capsys.readouterr().out
    assert main(["watch-dir", "purge", "--older-than-hours", "0", "--config", str(config)]) == 0
    assert "1 files deleted" in capsys.readouterr().out and not list((ftp / "done").iterdir())
    # AND spool purge --older-than-hours keeps what is younger
    with Spool(tmp_path / "state" / "spool.sqlite3") as spool:
        spool.put_many([item(1)])
        spool.quarantine({spool.pending()[0].event_id: ("forbidden_device", "x")})
    assert main(["spool", "purge", "--older-than-hours", "1", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == "0 events deleted"
    assert main(["spool", "purge", "--older-than-hours", "-1", "--config", str(config)]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["spool", "purge", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == "1 events deleted"
