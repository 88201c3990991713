"""The anfang-edge CLI, in process (and once as the installed console script)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from anfang.contracts import generate_private_key, key_id_for, load_private_key
from anfang_edge.cli import main
from anfang_edge.spool import Spool

from .helpers import item


def _config(tmp_path: Path, key_file: Path, key_id: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'api_url = "http://127.0.0.1:9"\nkey_id = "{key_id}"\nprivate_key_file = "{key_file}"\n'
        f'state_dir = "{tmp_path / "state"}"\n'
    )
    return path


def test_keys_gen_writes_a_private_key_0600_and_prints_what_to_register(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "agent.key"
    assert main(["keys", "gen", "--out", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert out.stat().st_mode & 0o777 == 0o600
    key = load_private_key(out.read_bytes())
    assert info["key_id"] == key_id_for(key.public_key())
    # a second gen does not overwrite the key: one readable line, non-zero exit
    assert main(["keys", "gen", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("anfang-edge: error:") and err.count("\n") == 1


def test_config_check_validates_the_file_and_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["keys", "gen", "--out", str(tmp_path / "k.pem"), "--json"])
    key_id = json.loads(capsys.readouterr().out)["key_id"]
    good = _config(tmp_path, tmp_path / "k.pem", key_id)
    assert main(["config", "check", "--config", str(good)]) == 0
    assert "ok" in capsys.readouterr().out

    wrong = _config(tmp_path, tmp_path / "k.pem", key_id_for(generate_private_key().public_key()))
    assert main(["config", "check", "--config", str(wrong)]) == 1
    assert "does not match" in capsys.readouterr().err

    no_fixtures = tmp_path / "sim.toml"
    no_fixtures.write_text(
        good.read_text() + f'[[sources]]\ntype = "simulator"\nfixtures_dir = "{tmp_path / "empty"}"\n'
    )
    (tmp_path / "empty").mkdir()
    assert main(["config", "check", "--config", str(no_fixtures)]) == 1
    assert "no fixture images" in capsys.readouterr().err

    bad = tmp_path / "bad.toml"
    bad.write_text("batch_max_events = -1\n")
    assert main(["config", "check", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "api_url" in err


def test_status_and_spool_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, tmp_path / "k.pem", "k")
    assert main(["status", "--config", str(config)]) == 1
    assert "no spool" in capsys.readouterr().err

    with Spool(tmp_path / "state" / "spool.sqlite3") as spool:
        items = [item(i) for i in range(3)]
        spool.put_many(items)
        spool.quarantine({items[0].event_id: ("payload_invalid", "alarm.zone: bad")})

    assert main(["status", "--config", str(config), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["depth"], status["quarantined"], status["counters"]["spooled"]) == (2, 1, 3)
    assert status["oldest_age_secs"] is not None
    assert main(["status", "--config", str(config)]) == 0
    assert "2 events" in capsys.readouterr().out
    with Spool(tmp_path / "state" / "spool.sqlite3") as spool:  # the gat1400 source's deviations, per device
        spool.bump({"gat1400.45010101491327000176.file_format_mismatch": 2})
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"gat1400\.45010101491327000176\.file_format_mismatch +2\n", out)
    assert re.search(r"\n  spooled +3\n", out)

    assert main(["spool", "ls", "--config", str(config), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["spool", "ls", "--quarantine", "--config", str(config), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["event_id"], row["code"]) == (items[0].event_id, "payload_invalid")

    assert main(["spool", "retry", "--config", str(config)]) == 0
    assert "1 events moved" in capsys.readouterr().out
    assert main(["spool", "purge", "--all", "--config", str(config)]) == 1
    assert "--yes" in capsys.readouterr().err
    assert main(["spool", "purge", "--all", "--yes", "--config", str(config)]) == 0
    with Spool(tmp_path / "state" / "spool.sqlite3") as spool:
        assert spool.depth() == 0


def test_console_script_is_installed() -> None:
    exe = shutil.which("anfang-edge") or str(Path(__file__).resolve().parents[3] / ".venv" / "bin" / "anfang-edge")
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert result.stdout.startswith("anfang-edge ")
    bad = subprocess.run([exe, "frobnicate"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert bad.stderr.startswith("anfang-edge: error: ") and bad.stderr.count("\n") == 1
