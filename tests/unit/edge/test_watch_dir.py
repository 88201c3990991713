"""watch_dir: FTP-style uploads of <stem>.jpg + <stem>.json, on a real folder and a real spool."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from anfang_edge.config import WatchDirSourceConfig, default_fixtures_dir
from anfang_edge.sources.watch_dir import WatchDir, derive_event_id
from anfang_edge.spool import Spool

FIXTURES = default_fixtures_dir()
assert FIXTURES is not None
FACE = (FIXTURES / "face_crop.jpg").read_bytes()
SCENE = (FIXTURES / "astronaut_512.jpg").read_bytes()
DEVICE = "33010600001320000007"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[WatchDir, Spool, Path]:
    spool = Spool(tmp_path / "spool.sqlite3")
    root = tmp_path / "ftp"
    config = WatchDirSourceConfig(type="watch_dir", path=root, settle_ms=1000, orphan_secs=60)
    return WatchDir(config, spool), spool, root


def _write(path: Path, data: bytes, age_secs: float) -> None:
    path.write_bytes(data)
    when = time.time() - age_secs
    os.utime(path, (when, when))


def _sidecar(event_type: str = "face_capture", **fields: Any) -> bytes:
    obj: dict[str, Any] = {"event_type": event_type, "device_id": DEVICE, "captured_at": "2026-11-29T09:00:00+08:00"}
    if event_type == "alarm":
        obj["alarm"] = {"kind": "loitering", "severity": "warning", "zone": "car park"}
    obj.update(fields)
    return json.dumps(obj).encode()


def test_given_a_complete_pair_when_scanned_then_spooled_with_its_image_and_moved_to_done(setup: Any) -> None:
    source, spool, root = setup
    _write(root / "cam1-0001.jpg", FACE, 5)
    _write(root / "cam1-0001.json", _sidecar(), 5)
    assert source.scan() == 1
    [pending] = spool.pending()
    event = json.loads(pending.body)
    assert event["device_id"] == DEVICE
    assert [i["role"] for i in event["images"]] == ["face"]
    assert sorted(p.name for p in (root / "done").iterdir()) == ["cam1-0001.jpg", "cam1-0001.json"]
    assert not list(root.glob("cam1-*"))


def test_role_suffixed_images_attach_with_their_roles(setup: Any) -> None:
    source, spool, root = setup
    _write(root / "g-7.face.jpg", FACE, 5)
    _write(root / "g-7.scene.jpg", SCENE, 5)
    _write(root / "g-7.json", _sidecar(face={"box": {"x": 1, "y": 2, "w": 3, "h": 4}}), 5)
    assert source.scan() == 1
    event = json.loads(spool.pending()[0].body)
    assert sorted(i["role"] for i in event["images"]) == ["face", "scene"]


def test_given_half_written_files_when_scanned_then_only_complete_files_are_taken(setup: Any) -> None:
    source, spool, root = setup
    # GIVEN an image still being written (fresh mtime) and a truncated JPEG that looks settled
    _write(root / "a.jpg", FACE[: len(FACE) // 2], 0)
    _write(root / "a.json", _sidecar(), 5)
    _write(root / "b.jpg", FACE[: len(FACE) // 2], 5)
    _write(root / "b.json", _sidecar(), 5)
    # and temp names an FTP server uses while uploading
    _write(root / "c.jpg.part", FACE, 5)
    _write(root / ".c.json", _sidecar(), 5)
    # WHEN scanned: nothing is taken, nothing fails
    assert source.scan() == 0
    assert spool.depth() == 0
    assert list((root / "failed").iterdir()) == []
    # WHEN the uploads complete and settle
    _write(root / "a.jpg", FACE, 5)
    _write(root / "b.jpg", FACE, 5)
    assert source.scan() == 2
    assert spool.depth() == 2
    assert (root / "c.jpg.part").exists()


def test_given_an_orphan_image_then_it_waits_and_then_fails_with_a_reason(setup: Any) -> None:
    source, spool, root = setup
    _write(root / "lonely.jpg", FACE, 5)
    assert source.scan() == 0
    assert (root / "lonely.jpg").exists()
    _write(root / "lonely.jpg", FACE, 120)  # older than orphan_secs
    source.scan()
    assert (root / "failed" / "lonely.jpg").exists()
    assert "orphan" in (root / "failed" / "lonely.reason.txt").read_text()
    assert spool.depth() == 0


def test_given_bad_json_then_pair_goes_to_failed_with_a_reason_file(setup: Any) -> None:
    source, spool, root = setup
    _write(root / "bad.jpg", FACE, 5)
    _write(root / "bad.json", b'{"event_type": "face_capture", ', 5)
    _write(root / "invalid.json", _sidecar("alarm", alarm={"kind": "ufo", "severity": "x", "zone": "z"}), 5)
    assert source.scan() == 0
    failed = root / "failed"
    assert sorted(p.name for p in failed.iterdir()) == [
        "bad.jpg",
        "bad.json",
        "bad.reason.txt",
        "invalid.json",
        "invalid.reason.txt",
    ]
    assert "not valid JSON" in (failed / "bad.reason.txt").read_text()
    assert "alarm.kind" in (failed / "invalid.reason.txt").read_text()
    assert spool.stats().counters["watch_dir_failed"] == 2


def test_given_an_oversized_or_fake_jpeg_then_the_pair_fails_and_the_source_keeps_going(setup: Any) -> None:
    source, spool, root = setup
    _write(root / "huge.jpg", FACE[:-2] + b"\0" * (1024 * 1024) + b"\xff\xd9", 5)
    _write(root / "huge.json", _sidecar(), 5)
    _write(root / "fake.jpg", b"GIF89a" + b"\0" * 100 + b"\xff\xd9", 5)
    _write(root / "fake.json", _sidecar(), 5)
    _write(root / "fine.jpg", FACE, 5)
    _write(root / "fine.json", _sidecar(), 5)
    assert source.scan() == 1
    assert "larger than" in (root / "failed" / "huge.reason.txt").read_text()
    assert "not JPEG or PNG" in (root / "failed" / "fake.reason.txt").read_text()
    assert spool.depth() == 1


def test_a_sidecar_alone_is_an_event_without_images(setup: Any) -> None:
    source, spool, root = setup
    _write(root / "alarm-1.json", _sidecar("alarm"), 5)
    assert source.scan() == 1
    assert not json.loads(spool.pending()[0].body).get("images")


def test_given_a_crash_before_the_move_when_rescanned_then_the_same_event_id_is_a_duplicate(setup: Any) -> None:
    source, spool, root = setup
    _write(root / "p.jpg", FACE, 5)
    _write(root / "p.json", _sidecar(), 5)
    source.scan()
    # the agent died after the spool commit but before the move: the files are still there
    for name in ("p.jpg", "p.json"):
        done = root / "done" / name
        stat = done.stat()
        done.replace(root / name)
        os.utime(root / name, (stat.st_atime, stat.st_mtime))
    source.scan()
    assert spool.depth() == 1
    assert spool.stats().counters["duplicate_received"] == 1


def test_derived_event_ids_are_valid_uuidv7_and_stable() -> None:
    from anfang.contracts import validate_event_id

    first = derive_event_id(1_764_000_000_000, b"x" * 32)
    assert first == derive_event_id(1_764_000_000_000, b"x" * 32)
    assert validate_event_id(first) == first
    assert first != derive_event_id(1_764_000_000_000, b"y" * 32)
