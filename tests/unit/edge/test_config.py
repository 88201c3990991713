"""The TOML config model: defaults, units, the shipped example, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from anfang_edge.config import (
    AgentConfig,
    HttpSourceConfig,
    SimulatorSourceConfig,
    WatchDirSourceConfig,
    load_config,
    parse_config,
)
from anfang_edge.errors import ConfigError

PACKAGING = Path(__file__).resolve().parents[3] / "edge_agent" / "packaging"
MINIMAL = 'api_url = "https://api.example"\nkey_id = "k1"\nprivate_key_file = "agent.key"\n'


def test_the_shipped_example_loads_through_the_model() -> None:
    config = load_config(PACKAGING / "agent.example.toml")
    assert str(config.api_url) == "https://events.example-town.gov.cn/"
    assert config.when_full == "block"
    assert [type(s) for s in config.sources] == [WatchDirSourceConfig, HttpSourceConfig]


def test_defaults_carry_units() -> None:
    config = parse_config(MINIMAL)
    assert (config.batch_max_events, config.linger_ms, config.retry_max_secs) == (100, 200, 300.0)
    assert config.spool_max_bytes == 512 * 1024 * 1024
    assert config.spool_path == Path("/var/lib/anfang-edge/spool.sqlite3")
    assert config.sources == []


def test_relative_state_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(MINIMAL + 'state_dir = "state"\n')
    assert load_config(path).state_dir == tmp_path / "state"


def test_simulator_defaults_to_the_repository_fixtures() -> None:
    config = parse_config(MINIMAL + '[[sources]]\ntype = "simulator"\n')
    [source] = config.sources
    assert isinstance(source, SimulatorSourceConfig)
    assert source.fixtures_dir is not None and (source.fixtures_dir / "face_crop.jpg").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("batch_max_events = 0\n", "batch_max_events"),
        ("batch_max_events = 501\n", "batch_max_events"),
        ("batch_max_bytes = 6000000\n", "batch_max_bytes"),
        ('when_full = "drop_newest"\n', "when_full"),
        ("linger = 5\n", "linger"),  # a typo is an error, not silently ignored
        ('[[sources]]\ntype = "carrier_pigeon"\n', "sources"),
        ('[[sources]]\ntype = "simulator"\ndevice_id_prefix = "12"\n', "device_id_prefix"),
    ],
)
def test_bad_values_are_one_readable_line(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + extra)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_not_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("api_url = ")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="api_url"):
        parse_config('api_url = "ftp://x"\nkey_id = "k"\nprivate_key_file = "k"\n')


def test_relative_key_is_found_in_the_systemd_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "agent.key").write_text("pem")
    config = AgentConfig.model_validate(
        {"api_url": "http://127.0.0.1:1", "key_id": "k", "private_key_file": "agent.key"}
    )
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert config.resolve_private_key_file() == tmp_path / "agent.key"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert config.resolve_private_key_file() == Path("agent.key")


def test_service_unit_has_notify_watchdog_credentials_and_hardening() -> None:
    unit = (PACKAGING / "anfang-edge.service").read_text()
    for directive in (
        "Type=notify",
        "WatchdogSec=",
        "StateDirectory=anfang-edge",
        "LoadCredential=anfang-edge.key:",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ):
        assert directive in unit
