"""The watch_dir source: cameras FTP-upload ``<stem>.jpg`` (or ``<stem>.<role>.jpg``) and then a
``<stem>.json`` sidecar into a folder; the agent spools each complete pair and moves it to ``done/``, or to
``failed/`` with a ``<stem>.reason.txt``.

The sidecar is a v1 event without images (``event_id`` and ``captured_at`` may be left out: the id is then
derived from the sidecar's content and mtime, so a crash before the move re-spools the same id, which the
spool sees as a duplicate). ``<stem>.jpg`` gets the event type's usual role (face for face_capture and
access, vehicle for plate_capture, person for visitor, scene for alarm). A file is taken only once it is
complete: unchanged for ``settle_ms``, not a temp name, and a JPEG ends with its EOI marker.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from anfang.contracts import (
    DEFAULT_IMAGE_ROLES,
    IMAGE_ROLES,
    MAX_IMAGE_BYTES,
    ContractError,
    EventImage,
    ImageRole,
    event_error,
    validate_event,
)

from ..config import WatchDirSourceConfig
from ..errors import SpoolFullError
from ..spool import Spool, SpoolItem, item_from_event

__all__ = ["WatchDir", "derive_event_id", "purge_done"]

log = logging.getLogger("anfang_edge.sources.watch_dir")

_TEMP_SUFFIXES: Final = (".part", ".tmp", ".filepart", ".partial", ".crdownload")
_JPEG_EOI: Final = b"\xff\xd9"
_MAX_SIDECAR_BYTES: Final = 256 * 1024
_MAX_PAIRS_PER_PUT: Final = 100
_PURGE_EVERY_SECS: Final = 60.0


def purge_done(done_dir: Path, *, older_than: float) -> int:
    """Delete files moved to ``done_dir`` before ``older_than`` (unix time; the move sets their ctime).

    Everything in done/ is already in the spool: keeping it only keeps faces and names on the gateway.
    """
    deleted = 0
    try:
        entries = list(os.scandir(done_dir))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_ctime < older_than:
                Path(entry.path).unlink()
                deleted += 1
        except FileNotFoundError:
            continue
    return deleted


def derive_event_id(unix_ms: int, digest: bytes) -> str:
    """A UUIDv7 whose random bits come from ``digest``: the same file always gets the same id."""
    rand = int.from_bytes(digest[:10], "big")
    value = (unix_ms << 80) | (0x7 << 76) | ((rand >> 68) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


@dataclass(slots=True)
class _Group:
    stem: str
    sidecar: Path | None = None
    images: dict[ImageRole | None, Path] = field(default_factory=dict)

    @property
    def files(self) -> list[Path]:
        return ([self.sidecar] if self.sidecar else []) + list(self.images.values())


class _NotReadyError(Exception):
    """The group is not complete yet; look again later."""


class _BadInputError(Exception):
    """The group can never become a valid event; it goes to failed/ with this reason."""


class WatchDir:
    """Polls ``path`` every ``poll_ms`` and spools complete pairs."""

    def __init__(self, config: WatchDirSourceConfig, spool: Spool, *, name: str = "watch_dir") -> None:
        self.config = config
        self.spool = spool
        self.name = name
        self.root = config.path
        self.done_dir = self.root / "done"
        self.failed_dir = self.root / "failed"
        for directory in (self.root, self.done_dir, self.failed_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def run(self, stop: threading.Event) -> None:
        next_purge = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + _PURGE_EVERY_SECS
                    self.purge_done()
                self.scan()
            except SpoolFullError:
                log.warning("spool full; watch_dir waits")
            except OSError as exc:
                log.error("watch_dir scan failed: %s", exc)
            stop.wait(self.config.poll_ms / 1000)

    def purge_done(self, now: float | None = None) -> int:
        """Apply ``done_retention_hours`` to done/; returns how many files were deleted."""
        now = time.time() if now is None else now
        deleted = purge_done(self.done_dir, older_than=now - self.config.done_retention_hours * 3600)
        if deleted:
            log.info("watch_dir: deleted %d files from done/ past done_retention_hours", deleted)
            self.spool.bump({"watch_dir_done_purged": deleted})
        return deleted

    # ------------------------------------------------------------------------------------------ scanning

    def _groups(self) -> dict[str, _Group]:
        groups: dict[str, _Group] = {}
        with os.scandir(self.root) as entries:
            for entry in entries:
                name = entry.name
                if not entry.is_file(follow_symlinks=False) or name.startswith(".") or name.endswith(_TEMP_SUFFIXES):
                    continue
                lower = name.lower()
                if lower.endswith(".json"):
                    groups.setdefault(name[:-5], _Group(name[:-5])).sidecar = Path(entry.path)
                elif lower.endswith((".jpg", ".jpeg")):
                    base = name.rsplit(".", 1)[0]
                    stem, _, role = base.rpartition(".")
                    if stem and role in IMAGE_ROLES:
                        groups.setdefault(stem, _Group(stem)).images[role] = Path(entry.path)
                    else:
                        groups.setdefault(base, _Group(base)).images[None] = Path(entry.path)
        return groups

    def scan(self, now: float | None = None) -> int:
        """One pass: spool complete pairs, fail bad ones and orphans; returns how many events were spooled."""
        now = time.time() if now is None else now
        ready: list[tuple[_Group, SpoolItem]] = []
        for group in sorted(self._groups().values(), key=lambda g: g.stem):
            try:
                ready.append((group, self._build(group, now)))
            except _NotReadyError:
                continue
            except _BadInputError as exc:
                self._fail(group, str(exc))
            except OSError:
                raise
            except Exception as exc:
                # a poison file must not crash-loop the agent: park it with the error for an operator
                log.exception("watch_dir %s: unexpected error", group.stem)
                self._fail(group, f"unexpected error: {type(exc).__name__}: {exc}")
            if len(ready) >= _MAX_PAIRS_PER_PUT:
                self._commit(ready)
                ready = []
        if ready:
            self._commit(ready)
        return len(ready)

    def _commit(self, ready: list[tuple[_Group, SpoolItem]]) -> None:
        # acknowledged (moved to done/) only after the spool commit is durable
        self.spool.put_many([item for _, item in ready], timeout=1.0)
        for group, _ in ready:
            self._move(group, self.done_dir)

    def _settled(self, path: Path, now: float) -> tuple[bool, float]:
        stat = path.stat()
        age = now - stat.st_mtime
        return age * 1000 >= self.config.settle_ms, age

    def _build(self, group: _Group, now: float) -> SpoolItem:
        ages = []
        for path in group.files:
            settled, age = self._settled(path, now)
            if not settled:
                raise _NotReadyError
            ages.append(age)
        if group.sidecar is None:
            if max(ages) >= self.config.orphan_secs:
                raise _BadInputError("orphan image: no JSON sidecar arrived within orphan_secs")
            raise _NotReadyError
        raw = group.sidecar.read_bytes()
        if len(raw) > _MAX_SIDECAR_BYTES:
            raise _BadInputError("sidecar JSON is larger than 256 KiB")
        try:
            obj: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _BadInputError(f"sidecar is not valid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise _BadInputError("sidecar JSON must be an object (one v1 event)")
        images = list(obj.get("images") or [])
        digest = hashlib.sha256(group.stem.encode("utf-8") + b"\0" + raw)
        for role, path in sorted(group.images.items(), key=lambda kv: str(kv[0])):
            data = path.read_bytes()
            if not data.rstrip(b"\x00").endswith(_JPEG_EOI):
                if max(ages) < self.config.orphan_secs:
                    raise _NotReadyError  # still being written (no EOI marker yet)
                raise _BadInputError(f"{path.name}: JPEG is truncated (no end-of-image marker)")
            actual_role = role or DEFAULT_IMAGE_ROLES.get(str(obj.get("event_type"))) or "scene"
            if len(data) > MAX_IMAGE_BYTES:
                raise _BadInputError(f"{path.name}: image is larger than {MAX_IMAGE_BYTES} bytes")
            try:
                images.append(EventImage.from_bytes(actual_role, data).model_dump())
            except ContractError as exc:
                raise _BadInputError(f"{path.name}: {exc.detail}") from exc
            except ValidationError as exc:
                raise _BadInputError(f"{path.name}: {event_error(exc).detail}") from exc
            digest.update(hashlib.sha256(data).digest())
        if images:
            obj["images"] = images
        mtime_ms = int(group.sidecar.stat().st_mtime * 1000)
        obj.setdefault("event_id", derive_event_id(mtime_ms, digest.digest()))
        obj.setdefault("captured_at", dt.datetime.fromtimestamp(mtime_ms / 1000, dt.UTC).isoformat())
        try:
            event = validate_event(obj)
        except ValidationError as exc:
            raise _BadInputError(f"not a valid v1 event: {event_error(exc).detail}") from exc
        return item_from_event(event)

    # ------------------------------------------------------------------------------------------ moving

    def _move(self, group: _Group, target: Path) -> None:
        for path in group.files:
            try:
                path.replace(target / path.name)
            except FileNotFoundError:
                continue

    def _fail(self, group: _Group, reason: str) -> None:
        log.warning("watch_dir %s: %s -> failed/", group.stem, reason)
        reason_file = self.failed_dir / f"{group.stem}.reason.txt"
        reason_file.write_text(reason + "\n", encoding="utf-8")
        self._move(group, self.failed_dir)
        self.spool.bump({"watch_dir_failed": 1})
