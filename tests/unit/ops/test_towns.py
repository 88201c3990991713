"""infra/towns/: the seed county's towns, their codes, and `anfang towns new`."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from anfang_ops.cli import main as anfang
from anfang_ops.towns import TownConfigError, find_town, load_towns, render_samconfig, town_code_of

ROOT = Path(__file__).resolve().parents[3]
TOWNS_DIR = ROOT / "infra" / "towns"
GAOQING = "370322"  # 高青县, Zibo, Shandong


def test_the_towns_are_gaoqing_countys_and_each_code_is_formed_from_its_division_code() -> None:
    towns = load_towns(TOWNS_DIR)
    assert len(towns) >= 2
    for town in towns:
        # GIVEN each town file: THEN it is a township of Gaoqing county, its 8-digit code formed by the rule
        assert town.town.division_code is not None and town.town.division_code.startswith(GAOQING), town.env
        assert town.town.code == town_code_of(town.town.division_code), town.env
        assert town.town.stack_name == f"anfang-{town.town.code}"
        assert town.town.name_zh
    assert {t.town.name_zh for t in towns} >= {"田镇街道", "芦湖街道"}


def test_town_code_rule() -> None:
    assert town_code_of("370322001") == "37032201"
    assert town_code_of("370322002") == "37032202"
    assert town_code_of("370322107") == "37032217"
    for bad in ("37032200", "3703221011", "370322000", "370322110", "07032201x"):
        with pytest.raises(TownConfigError):
            town_code_of(bad)


def test_towns_new_writes_a_valid_town_and_renders_samconfig(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a copy of the county's towns
    towns_dir = tmp_path / "towns"
    towns_dir.mkdir()
    for path in TOWNS_DIR.glob("gaoqing-t*.toml"):
        (towns_dir / path.name).write_bytes(path.read_bytes())
    samconfig = tmp_path / "samconfig.toml"
    args = ["towns", "new", "--towns-dir", str(towns_dir), "--output", str(samconfig)]
    # WHEN ops dry-run, THEN nothing is written
    assert anfang([*args, "--code", "370322199", "--name", "Gaoqing Test", "--dry-run"]) == 0
    assert not samconfig.exists()
    # WHEN ops add a township by its division code
    assert anfang([*args, "--code", "370322108", "--name", "Gaoqing New Town", "--name-zh", "新镇"]) == 0
    # THEN its file is there with the formed code, and samconfig.toml holds every town
    town = find_town(towns_dir, "gaoqing-new-town")
    assert (town.town.code, town.town.division_code, town.town.name_zh) == ("37032218", "370322108", "新镇")
    assert find_town(towns_dir, "37032218") == town == find_town(towns_dir, str(towns_dir / "gaoqing-new-town.toml"))
    rendered = tomllib.loads(samconfig.read_text(encoding="utf-8"))
    assert set(rendered) - {"version"} == {t.env for t in load_towns(towns_dir)}
    assert samconfig.read_text(encoding="utf-8") == render_samconfig(load_towns(towns_dir))
    # AND the same code again, or a bad one, is one readable line and a non-zero exit
    capsys.readouterr()
    assert anfang([*args, "--code", "370322108", "--name", "Other"]) == 2
    assert anfang([*args, "--code", "3703221", "--name", "Other"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "taken by gaoqing-new-town" in err[0], err
    # AND an 8-digit code may be given as the bureau assigned it
    assert anfang([*args, "--code", "37032290", "--name", "Gaoqing Zone", "--env", "gaoqing-zone"]) == 0
    assert find_town(towns_dir, "gaoqing-zone").town.division_code is None


def test_an_unknown_town_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert anfang(["local", "up", "--root", str(ROOT), "--town", "99999999"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no town '99999999'" in err
