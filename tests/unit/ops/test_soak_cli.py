"""`anfang local soak` refuses what it cannot run with one line and exit 2, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from anfang_ops.cli import main as anfang


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--duration", "5"], "a duration of 10 s or more"),
        (["--agents", "2", "--agent-kills", "3"], "more than the 2 agents"),
        (["--outage", "0", "--agent-kills", "1"], "set --outage-secs"),
    ],
)
def test_settings_it_cannot_run_are_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert anfang(["local", "soak", "--out", str(tmp_path / "soak"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not (tmp_path / "soak").exists()


def test_a_folder_holding_anything_else_is_refused_not_emptied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert anfang(["local", "soak", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "notes.txt" in err and "which the soak did not write" in err and "\n" not in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_bad_duration_is_an_argument_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        anfang(["local", "soak", "--duration", "soon"])
    assert exited.value.code == 2 and "is not a duration" in capsys.readouterr().err
