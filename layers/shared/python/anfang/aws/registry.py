"""The device and partner registry (DynamoDB): keys, the device each key is bound to, and site facts.

One table, partition key ``pk`` (S), two kinds of item:

- ``key#<key_id>``: ``kind=key``, ``key_id``, ``public_key`` (32 raw bytes, base64url), ``role``
  (``device``/``health_commission``), ``device_ids`` (SS, device keys only: a camera's own key names one
  device, a site gateway's key every device behind it), ``name`` (partners), ``status``
  (``active``/``revoked``), ``not_before``/``not_after`` (RFC 3339, optional), ``registered_at``, ``revoked_at``.
- ``device#<device_id>``: ``kind=device``, ``device_id``, ``town``, ``site_id``, ``site_type``, ``site_name``,
  ``registered_at``, ``retired_at`` (once retired: kept for audit and for the records of its past events).

- ``bind#<key_id>#<device_id>``: ``kind=binding``, ``key_id``, ``device_id``: one per device a key may send for,
  written in the same transaction as the key (or by :meth:`DeviceRegistry.bind`).

GSI ``by_device`` (partition ``device_id``, sort ``pk``, projection ALL) lists a device and its bindings, so
a device can hold several active keys while it rotates. A key signs only if its ``status`` is exactly
``active`` (an allow-list: any other value counts as revoked). Reads are cached in the process for
``cache_ttl_secs`` (negative answers too), so a warm API resolves a key without a DynamoDB call; that is the
revocation delay: a container that read a key just before it was revoked accepts it for at most
``cache_ttl_secs`` more (the entry expires ``cache_ttl_secs`` after its read; nothing else caches keys).

The pipeline reuses the read side for enrichment (``sites_of`` is ``anfang.pipeline.enrich.SiteLookup``: one
BatchGetItem per 100 uncached devices):

>>> registry = DeviceRegistry(dynamodb_client, "anfang-330106-devices", town_code="330106")
>>> registry.site_of("33010600001320000001")
Site(site_id='xihu-001', site_type='residential_closed', name='Lakeside Garden')
>>> registry.sites_of(["33010600001320000001"])
{'33010600001320000001': SiteView(site_id='xihu-001', site_type='residential_closed', name='Lakeside Garden')}
>>> registry.resolve(key_id).device_ids
frozenset({'33010600001320000001'})
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from anfang.aws.dynamo import batch_get
from anfang.contracts.identifiers import validate_device_id, validate_town_code
from anfang.contracts.keys import key_id_for, load_public_key, public_key_to_text
from anfang.contracts.problems import ContractError, ErrorCode
from anfang.contracts.records import SiteView
from anfang.contracts.signing import KeyInfo
from anfang.contracts.types import SITE_TYPES, Role, SiteType

__all__ = [
    "BY_DEVICE_INDEX",
    "DeviceOutsideTownError",
    "DeviceRecord",
    "DeviceRegistry",
    "KeyExistsError",
    "PartnerRecord",
    "RegistryError",
    "Site",
    "UnknownDeviceError",
]

BY_DEVICE_INDEX: Final = "by_device"
_MAX_TRANSACTION_ITEMS: Final = 100


class RegistryError(ContractError):
    """A registration was refused."""


class DeviceOutsideTownError(RegistryError):
    """The device id's admin-division prefix is not the stack's town."""


class UnknownDeviceError(RegistryError):
    """A device key was registered for a device that is not registered."""


class KeyExistsError(RegistryError):
    """That key id is registered already."""


@dataclass(frozen=True, slots=True)
class Site:
    """Where a device is: the facts enrichment adds to a record (never taken from the payload)."""

    site_id: str
    site_type: SiteType
    name: str


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    device_id: str
    town: str
    site: Site
    registered_at: datetime
    retired_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PartnerRecord:
    """A partner key (the health commission's), as ``anfang partners list`` shows it."""

    key_id: str
    role: str
    name: str
    status: str
    registered_at: datetime | None
    revoked_at: datetime | None


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _opt_time(item: dict[str, Any], name: str) -> datetime | None:
    raw = item.get(name)
    return datetime.fromisoformat(raw["S"]) if raw else None


def _key_info(item: dict[str, Any]) -> KeyInfo:
    return KeyInfo(
        key_id=item["key_id"]["S"],
        public_key=load_public_key(item["public_key"]["S"]),
        role=cast(Role, item["role"]["S"]),
        device_ids=frozenset(item.get("device_ids", {}).get("SS", [])),
        # An allow-list: only exactly "active" may sign. "Revoked", "suspended", "disabled", a typo or a missing
        # status are all refused (answered key_revoked), never taken for active.
        status="active" if item.get("status", {}).get("S") == "active" else "revoked",
        not_before=_opt_time(item, "not_before"),
        not_after=_opt_time(item, "not_after"),
    )


def _device_record(item: dict[str, Any]) -> DeviceRecord:
    return DeviceRecord(
        device_id=item["device_id"]["S"],
        town=item["town"]["S"],
        site=Site(
            site_id=item["site_id"]["S"],
            site_type=cast(SiteType, item["site_type"]["S"]),
            name=item["site_name"]["S"],
        ),
        registered_at=datetime.fromisoformat(item["registered_at"]["S"]),
        retired_at=_opt_time(item, "retired_at"),
    )


class DeviceRegistry:
    """Device and partner keys in DynamoDB; implements ``anfang.contracts.KeyResolver``.

    ``client`` is a boto3 DynamoDB client (injected); ``town_code`` is the stack's town, whose prefix every
    registered device id must carry.
    """

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        town_code: str,
        cache_ttl_secs: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._table = table_name
        self.town_code = validate_town_code(town_code)
        self._ttl = cache_ttl_secs
        self._clock = clock
        self._now = now
        self._cache: dict[str, tuple[float, Any]] = {}

    # ------------------------------------------------------------------------------------------------ reads

    def resolve(self, key_id: str) -> KeyInfo | None:
        """The key registered under ``key_id`` (active or revoked), or None; cached."""
        item = self._get(f"key#{key_id}")
        return _key_info(item) if item is not None else None

    def device(self, device_id: str) -> DeviceRecord | None:
        """The registered device, or None; cached."""
        item = self._get(f"device#{device_id}")
        return _device_record(item) if item is not None else None

    def site_of(self, device_id: str) -> Site | None:
        """The site of a registered device, or None (what enrichment adds to a record)."""
        record = self.device(device_id)
        return record.site if record is not None else None

    def sites_of(self, device_ids: Iterable[str]) -> dict[str, SiteView]:
        """Site facts of the registered devices among ``device_ids``; cached, misses read with BatchGetItem."""
        now = self._clock()
        items: dict[str, dict[str, Any] | None] = {}
        missing: list[str] = []
        for device_id in sorted(set(device_ids)):
            hit = self._cache.get(f"device#{device_id}")
            if hit is not None and hit[0] > now:
                items[device_id] = cast(dict[str, Any] | None, hit[1])
            else:
                missing.append(device_id)
        if missing:
            keys = [{"pk": _s(f"device#{d}")} for d in missing]
            found = {item["pk"]["S"]: item for item in batch_get(self._client, self._table, keys)}
            for device_id in missing:
                item = found.get(f"device#{device_id}")
                if self._ttl > 0:
                    self._cache[f"device#{device_id}"] = (now + self._ttl, item)
                items[device_id] = item
        return {
            device_id: SiteView(
                site_id=item["site_id"]["S"], site_type=item["site_type"]["S"], name=item["site_name"]["S"]
            )
            for device_id, item in items.items()
            if item is not None
        }

    def keys_of(self, device_id: str) -> list[KeyInfo]:
        """Every key that may send for a device, active and revoked (not cached: an admin read)."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": BY_DEVICE_INDEX,
            "KeyConditionExpression": "device_id = :d AND begins_with(pk, :k)",
            "ExpressionAttributeValues": {":d": _s(device_id), ":k": _s("bind#")},
        }
        while True:
            page = self._client.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        self.invalidate()
        keys = [self.resolve(item["key_id"]["S"]) for item in items]
        return [key for key in keys if key is not None]

    def devices(self) -> list[DeviceRecord]:
        """Every registered device of the town (an admin read: one Scan, paginated)."""
        records: list[DeviceRecord] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "kind = :k",
            "ExpressionAttributeValues": {":k": _s("device")},
        }
        while True:
            page = self._client.scan(**kwargs)
            records.extend(_device_record(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return sorted(records, key=lambda r: r.device_id)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def invalidate(self, key_id: str | None = None) -> None:
        """Forget cached reads (one key, or everything)."""
        if key_id is None:
            self._cache.clear()
        else:
            self._cache.pop(f"key#{key_id}", None)

    def _get(self, pk: str) -> dict[str, Any] | None:
        now = self._clock()
        hit = self._cache.get(pk)
        if hit is not None and hit[0] > now:
            return cast(dict[str, Any] | None, hit[1])
        item = self._client.get_item(TableName=self._table, Key={"pk": _s(pk)}).get("Item")
        if self._ttl > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[pk] = (now + self._ttl, item)
        return cast(dict[str, Any] | None, item)

    # ------------------------------------------------------------------------------------------------ writes

    def register_device(self, device_id: str, site: Site) -> DeviceRecord:
        """Register (or update the site of) a device; refuses device ids outside the stack's town."""
        try:
            validate_device_id(device_id)
        except ValueError as exc:
            raise RegistryError(str(exc), code=ErrorCode.PAYLOAD_INVALID) from None
        if not device_id.startswith(self.town_code):
            raise DeviceOutsideTownError(
                f"device id's division prefix is not town {self.town_code}", code=ErrorCode.FORBIDDEN_DEVICE
            )
        if site.site_type not in SITE_TYPES:
            raise RegistryError(f"site_type must be one of {', '.join(SITE_TYPES)}", code=ErrorCode.PAYLOAD_INVALID)
        record = DeviceRecord(device_id=device_id, town=self.town_code, site=site, registered_at=self._now())
        self._client.put_item(
            TableName=self._table,
            Item={
                "pk": _s(f"device#{device_id}"),
                "kind": _s("device"),
                "device_id": _s(device_id),
                "town": _s(self.town_code),
                "site_id": _s(site.site_id),
                "site_type": _s(site.site_type),
                "site_name": _s(site.name),
                "registered_at": _s(_iso(record.registered_at)),
            },
        )
        self._cache.pop(f"device#{device_id}", None)
        return record

    def add_key(
        self,
        public_key: Ed25519PublicKey | str,
        *,
        role: Role,
        device_ids: Sequence[str] = (),
        name: str | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> KeyInfo:
        """Register a key: a device key may send for the registered devices it names (a camera's own key
        names one, a site gateway's key every device behind it); a partner key has a role and a name.

        A device may hold several active keys (rotation: add the new one, then revoke the old one).
        The key id is the key's RFC 7638 thumbprint. The key and its bindings are written in one transaction.
        """
        key = load_public_key(public_key) if isinstance(public_key, str) else public_key
        devices = sorted(set(device_ids))
        if role == "device":
            if not devices:
                raise RegistryError("a device key needs at least one device id", code=ErrorCode.PAYLOAD_INVALID)
            for device_id in devices:
                self._check_bindable(device_id)
        elif devices:
            raise RegistryError("a partner key is not bound to a device", code=ErrorCode.PAYLOAD_INVALID)
        info = KeyInfo(
            key_id=key_id_for(key),
            public_key=key,
            role=role,
            device_ids=frozenset(devices),
            not_before=not_before,
            not_after=not_after,
        )
        item: dict[str, Any] = {
            "pk": _s(f"key#{info.key_id}"),
            "kind": _s("key"),
            "key_id": _s(info.key_id),
            "public_key": _s(public_key_to_text(key)),
            "role": _s(role),
            "status": _s("active"),
            "registered_at": _s(_iso(self._now())),
        }
        if devices:
            item["device_ids"] = {"SS": devices}
        if name is not None:
            item["name"] = _s(name)
        if not_before is not None:
            item["not_before"] = _s(_iso(not_before))
        if not_after is not None:
            item["not_after"] = _s(_iso(not_after))
        writes = [{"Put": {"TableName": self._table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}]
        writes += [{"Put": {"TableName": self._table, "Item": self._binding(info.key_id, d)}} for d in devices]
        if len(writes) > _MAX_TRANSACTION_ITEMS:
            raise RegistryError(
                f"bind at most {_MAX_TRANSACTION_ITEMS - 1} devices at registration; add more with bind",
                code=ErrorCode.PAYLOAD_INVALID,
            )
        try:
            self._client.transact_write_items(TransactItems=writes)
        except self._client.exceptions.TransactionCanceledException as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if reasons and reasons[0] == "ConditionalCheckFailed":
                raise KeyExistsError("this key is registered already", code=ErrorCode.PAYLOAD_INVALID) from None
            raise
        self.invalidate(info.key_id)
        return info

    def bind(self, key_id: str, device_id: str) -> KeyInfo:
        """Let an existing device key send for one more registered device (a new camera behind a gateway)."""
        self._check_bindable(device_id)
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": {"pk": _s(f"key#{key_id}")},
                            "UpdateExpression": "ADD device_ids :d",
                            "ConditionExpression": "attribute_exists(pk) AND #r = :device",
                            "ExpressionAttributeNames": {"#r": "role"},
                            "ExpressionAttributeValues": {":d": {"SS": [device_id]}, ":device": _s("device")},
                        }
                    },
                    {"Put": {"TableName": self._table, "Item": self._binding(key_id, device_id)}},
                ]
            )
        except self._client.exceptions.TransactionCanceledException:
            raise RegistryError("no such device key", code=ErrorCode.UNKNOWN_KEY) from None
        self.invalidate(key_id)
        info = self.resolve(key_id)
        assert info is not None
        return info

    def _check_bindable(self, device_id: str) -> None:
        if not device_id.startswith(self.town_code):
            raise DeviceOutsideTownError(
                f"device id's division prefix is not town {self.town_code}", code=ErrorCode.FORBIDDEN_DEVICE
            )
        if self.device(device_id) is None:
            raise UnknownDeviceError("register the device first", code=ErrorCode.PAYLOAD_INVALID)

    def _binding(self, key_id: str, device_id: str) -> dict[str, Any]:
        return {
            "pk": _s(f"bind#{key_id}#{device_id}"),
            "kind": _s("binding"),
            "key_id": _s(key_id),
            "device_id": _s(device_id),
        }

    def revoke_key(self, key_id: str) -> None:
        """Mark a key revoked (kept for audit); requests signed with it then fail with ``key_revoked``."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"pk": _s(f"key#{key_id}")},
                UpdateExpression="SET #s = :r, revoked_at = :t",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":r": _s("revoked"), ":t": _s(_iso(self._now()))},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            raise RegistryError("no such key", code=ErrorCode.UNKNOWN_KEY) from None
        self.invalidate(key_id)

    # ------------------------------------------------------------------------------------------------ fleet (ops)

    def _scan(
        self, filter_expression: str, values: dict[str, Any], names: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": filter_expression,
            "ExpressionAttributeValues": values,
        }
        if names:
            kwargs["ExpressionAttributeNames"] = names
        while True:
            page = self._client.scan(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def retire_device(self, device_id: str) -> DeviceRecord:
        """Retire a device: no key may send for it any more (its bindings go, and it leaves every key's
        ``device_ids``); its registry item stays, marked ``retired_at``, for audit and enrichment of events
        already on their way. Registering it again brings it back (keys must then be bound again)."""
        record = self.device(device_id)
        if record is None:
            raise UnknownDeviceError(f"device {device_id} is not registered", code=ErrorCode.PAYLOAD_INVALID)
        bindings = self._client.query(
            TableName=self._table,
            IndexName=BY_DEVICE_INDEX,
            KeyConditionExpression="device_id = :d AND begins_with(pk, :k)",
            ExpressionAttributeValues={":d": _s(device_id), ":k": _s("bind#")},
        ).get("Items", [])
        for binding in bindings:
            key_id = binding["key_id"]["S"]
            self._client.update_item(
                TableName=self._table,
                Key={"pk": _s(f"key#{key_id}")},
                UpdateExpression="DELETE device_ids :d",
                ExpressionAttributeValues={":d": {"SS": [device_id]}},
            )
            self._client.delete_item(TableName=self._table, Key={"pk": binding["pk"]})
            self.invalidate(key_id)
        retired_at = record.retired_at or self._now()
        self._client.update_item(
            TableName=self._table,
            Key={"pk": _s(f"device#{device_id}")},
            UpdateExpression="SET retired_at = :t",
            ExpressionAttributeValues={":t": _s(_iso(retired_at))},
        )
        self._cache.pop(f"device#{device_id}", None)
        return DeviceRecord(record.device_id, record.town, record.site, record.registered_at, retired_at)

    def update_site(
        self, site_id: str, *, name: str | None = None, site_type: SiteType | None = None
    ) -> list[DeviceRecord]:
        """Rename a site or change its type on every device registered at it; returns the devices as updated."""
        if site_type is not None and site_type not in SITE_TYPES:
            raise RegistryError(f"site_type must be one of {', '.join(SITE_TYPES)}", code=ErrorCode.PAYLOAD_INVALID)
        records = [r for r in self.devices() if r.site.site_id == site_id]
        if not records:
            raise RegistryError(f"no device is registered at site {site_id}", code=ErrorCode.PAYLOAD_INVALID)
        updated = []
        for record in records:
            site = Site(site_id, site_type or record.site.site_type, name or record.site.name)
            self._client.update_item(
                TableName=self._table,
                Key={"pk": _s(f"device#{record.device_id}")},
                UpdateExpression="SET site_type = :t, site_name = :n",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":t": _s(site.site_type), ":n": _s(site.name)},
            )
            self._cache.pop(f"device#{record.device_id}", None)
            updated.append(DeviceRecord(record.device_id, record.town, site, record.registered_at, record.retired_at))
        return updated

    def partners(self) -> list[PartnerRecord]:
        """Every partner key (role other than ``device``), active and revoked (an admin read: one Scan)."""
        items = self._scan("kind = :k AND #r <> :device", {":k": _s("key"), ":device": _s("device")}, {"#r": "role"})
        return sorted(
            (
                PartnerRecord(
                    key_id=item["key_id"]["S"],
                    role=item["role"]["S"],
                    name=item.get("name", {}).get("S", ""),
                    status=item["status"]["S"],
                    registered_at=_opt_time(item, "registered_at"),
                    revoked_at=_opt_time(item, "revoked_at"),
                )
                for item in items
            ),
            key=lambda p: (p.role, p.name, p.key_id),
        )
