"""Fleet commands: bulk device registration from a CSV file (``anfang devices import``), with a dry run.

The CSV has a header row and the columns ``device_id, site_id, site_type, site_name, public_key`` (the key as
``anfang-edge keys gen`` prints it: 32 raw bytes in base64url; a site gateway's key is repeated on the row of
every device behind it). Each row is checked and applied on its own, so one bad row never blocks the others,
and the import is idempotent: a second run of the same file changes nothing and says so row by row.

>>> report = import_devices(registry, Path("devices.csv").read_text(), dry_run=True)
>>> print(report[0])
row 2 37032201001320000001: would register at site tianzhen-001, would add key Zx3…
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any, Final

from anfang.aws.registry import RegistryError, Site
from anfang.contracts import SITE_TYPES, key_id_for, load_public_key, validate_device_id

__all__ = ["COLUMNS", "FleetError", "RowResult", "import_devices"]

COLUMNS: Final = ("device_id", "site_id", "site_type", "site_name", "public_key")


class FleetError(Exception):
    """The file cannot be imported at all (unreadable, no header, a missing column)."""


@dataclass
class RowResult:
    """What one CSV row did (or, in a dry run, would do)."""

    line: int
    device_id: str
    actions: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def __str__(self) -> str:
        what = f"error: {self.error}" if self.error else ", ".join(self.actions) or "unchanged"
        return f"row {self.line} {self.device_id or '-'}: {what}"


def _rows(text: str) -> list[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")), skipinitialspace=True)
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise FleetError(f"the CSV lacks the column(s) {', '.join(missing)} (needs {', '.join(COLUMNS)})")
    reader.fieldnames = header
    rows = []
    for row in reader:
        cleaned = {k: (v or "").strip() for k, v in row.items() if k is not None}
        if any(cleaned.values()):
            rows.append((reader.line_num, cleaned))
    return rows


def _check(registry: Any, row: dict[str, str]) -> tuple[str, Site, Any]:
    device_id = row["device_id"]
    try:
        validate_device_id(device_id)
    except ValueError as exc:
        raise ValueError(f"device_id: {exc}") from None
    if not device_id.startswith(registry.town_code):
        raise ValueError(f"device_id: its division prefix is not town {registry.town_code}")
    if row["site_type"] not in SITE_TYPES:
        raise ValueError(f"site_type {row['site_type']!r} is not one of {', '.join(SITE_TYPES)}")
    if not row["site_id"] or not row["site_name"]:
        raise ValueError("site_id and site_name must not be empty")
    try:
        key = load_public_key(row["public_key"])
    except ValueError as exc:
        raise ValueError(f"public_key: {exc}") from None
    return device_id, Site(row["site_id"], row["site_type"], row["site_name"]), key


def import_devices(registry: Any, text: str, *, dry_run: bool = False) -> list[RowResult]:
    """Register every row's device and bind its key; one :class:`RowResult` per data row, in file order.

    ``registry`` is an ``anfang.aws.registry.DeviceRegistry`` (reads uncached). In a dry run nothing is
    written and the actions read "would …"; keys added by earlier rows count as present for later ones.
    """
    results: list[RowResult] = []
    added_keys: dict[str, set[str]] = {}  # key id -> devices bound in this run (dry runs track them here)
    registered: set[str] = set()
    verb = "would " if dry_run else ""
    for line, row in _rows(text):
        result = RowResult(line=line, device_id=row.get("device_id", ""))
        results.append(result)
        try:
            device_id, site, key = _check(registry, row)
            key_id = key_id_for(key)
            if device_id in registered:
                raise ValueError("the device appears on an earlier row")
            registered.add(device_id)
            current = registry.device(device_id)
            if current is None or current.retired_at is not None or current.site != site:
                how = "register" if current is None else "register again" if current.retired_at else "update site"
                result.actions.append(f"{verb}{how} at site {site.site_id}")
                if not dry_run:
                    registry.register_device(device_id, site)
            known = registry.resolve(key_id)
            if known is None and key_id not in added_keys:
                result.actions.append(f"{verb}add key {key_id}")
                added_keys[key_id] = {device_id}
                if not dry_run:
                    registry.add_key(key, role="device", device_ids=[device_id])
            else:
                if known is not None and known.role != "device":
                    raise ValueError(f"key {key_id} is a {known.role} key, not a device key")
                if known is not None and known.status != "active":
                    raise ValueError(f"key {key_id} is {known.status}")
                bound = (known.device_ids if known is not None else frozenset()) | added_keys.get(key_id, set())
                if device_id not in bound:
                    result.actions.append(f"{verb}bind key {key_id}")
                    added_keys.setdefault(key_id, set()).add(device_id)
                    if not dry_run:
                        registry.bind(key_id, device_id)
        except ValueError as exc:
            result.error = str(exc)
        except RegistryError as exc:
            result.error = f"{exc.code.value}: {exc.detail}"
    return results
