"""``anfang relay gat1400``: police_video records into the police view library (视图库) as a GA/T 1400 cascade.

The relay is a lower view library: it registers with the upper one (HTTP Digest, MD5 or SHA-256), keeps alive,
registers again on a 401 or after a restart, and posts ``/VIID/Faces`` and ``/VIID/MotorVehicles`` lists. The
upstream answers per object (``ResponseStatusListObject``); an object is acknowledged in the outbox only on
StatusCode 0, any other code (or a missing status) retries that record alone with backoff.

Per record: envelopes (if the town's policy encrypts a field the mapping uses) are decrypted with KMS
(:mod:`anfang_ops.decrypt`), images fetched by reference and checked against their sha256, then mapped by
:mod:`.viid`. A record that cannot be fetched or mapped is retried, never dropped.

Digest client: requests' ``HTTPDigestAuth`` (RFC 7616 with MD5 and SHA-256, nonce counts, re-challenge on a
stale nonce), not the edge agent's server-side code. Only the choice among several challenges is ours: a
server offering SHA-256 and MD5 sends one ``WWW-Authenticate`` per algorithm, which requests would merge into
one (the last algorithm winning), so :class:`PreferredDigestAuth` picks the most preferred one first.

AWS calls per record: one GetObject per image, KMS Decrypt once per data key (only when envelopes are used).

>>> client = ViewLibraryClient(url, device_id="33010600005030000001", username="relay", password="…")
>>> client.register(); client.post_objects(LISTS["face_capture"], [face_object])
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from requests.auth import HTTPDigestAuth

from anfang.contracts.gat1400 import CONTENT_TYPE, StatusCode

from ..decrypt import DecryptError, Decryptor, is_envelope
from .base import Delivery, Relay, loop_settings
from .config import Gat1400RelayConfig
from .errors import ImageFetchError, RecordMappingError, UpstreamAuthError, UpstreamError
from .images import ImageStore
from .outbox import Key, Outbox, PendingRecord
from .reader import QueueReader
from .viid import ViidList, to_viid_object

__all__ = ["Gat1400Relay", "PreferredDigestAuth", "ViewLibraryClient"]

log = logging.getLogger("anfang_ops.relays.gat1400")
_HEADERS = {"Content-Type": f"{CONTENT_TYPE};charset=UTF-8", "Accept": CONTENT_TYPE}


class PreferredDigestAuth(HTTPDigestAuth):
    """requests' Digest client, choosing the most preferred algorithm when the server offers several."""

    def __init__(self, username: str, password: str, algorithms: Sequence[str]) -> None:
        super().__init__(username, password)
        self.algorithms = [a.upper() for a in algorithms]

    def handle_401(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        offered = r.raw.headers.getlist("WWW-Authenticate") if r.raw is not None else []
        digests = [c for c in offered if c.strip().lower().startswith("digest ")]
        if len(digests) > 1 or (digests and not self._acceptable(digests[0])):
            chosen = next((c for a in self.algorithms for c in digests if _algorithm_of(c) == a), None)
            if chosen is None:
                return r  # nothing we accept: the 401 stands, and the caller reports it
            r.headers["WWW-Authenticate"] = chosen
        result: requests.Response = super().handle_401(r, **kwargs)
        return result

    def _acceptable(self, challenge: str) -> bool:
        return _algorithm_of(challenge) in self.algorithms


def _algorithm_of(challenge: str) -> str:
    for part in challenge.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower().endswith("algorithm"):
            return value.strip().strip('"').upper()
    return "MD5"  # RFC 7616: absent means MD5


def _status_objects(doc: Any) -> list[dict[str, Any]]:
    """The ResponseStatusObject items of a list reply (a single object where a list belongs is tolerated)."""
    inner = doc.get("ResponseStatusListObject") if isinstance(doc, dict) else None
    items = inner.get("ResponseStatusObject") if isinstance(inner, dict) else None
    if isinstance(items, dict):
        items = [items]
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


class ViewLibraryClient:
    """The lower library's side of GA/T 1400: register, keepalive, unregister, post lists (one thread)."""

    def __init__(
        self,
        url: str,
        *,
        device_id: str,
        username: str,
        password: str,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        timeout_secs: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.device_id = device_id
        self.timeout_secs = timeout_secs
        self._session = session or requests.Session()
        self._session.auth = PreferredDigestAuth(username, password, algorithms)
        self._session.headers.update({**_HEADERS, "User-Identify": device_id})

    def close(self) -> None:
        self._session.close()

    def _post(self, path: str, doc: Mapping[str, Any]) -> requests.Response:
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            response = self._session.post(self.url + path, data=body, timeout=self.timeout_secs)
        except requests.RequestException as exc:
            raise UpstreamError(f"{path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 401:
            raise UpstreamAuthError(f"{path}: 401 {_status_string(response)}")
        if response.status_code == 429 or response.status_code >= 500:
            raise UpstreamError(
                f"{path}: HTTP {response.status_code} {_status_string(response)}",
                retry_after_secs=_retry_after(response),
            )
        return response

    def _system(self, path: str, root: str) -> None:
        response = self._post(path, {root: {"DeviceID": self.device_id}})
        try:
            status = response.json().get("ResponseStatusObject", {})
            code = int(status.get("StatusCode", -1))
        except (ValueError, AttributeError, TypeError):
            code = -1
        if response.status_code != 200 or code != StatusCode.OK:
            raise UpstreamAuthError(f"{path}: HTTP {response.status_code} {_status_string(response)}")

    def register(self) -> None:
        """Register as the lower library (Digest handshake); UpstreamAuthError when refused."""
        self._system("/VIID/System/Register", "RegisterObject")
        log.info("gat1400 relay registered with %s as %s", self.url, self.device_id)

    def keepalive(self) -> None:
        """UpstreamAuthError when the upstream no longer knows us (register again)."""
        self._system("/VIID/System/Keepalive", "KeepaliveObject")

    def unregister(self) -> None:
        self._system("/VIID/System/UnRegister", "UnRegisterObject")

    def post_objects(self, target: ViidList, objects: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, str]]:
        """Post one list; per object id, (StatusCode, StatusString) as the upstream answered."""
        response = self._post(target.path, {target.root: {target.key: list(objects)}})
        if response.status_code >= 400:
            # the whole list refused (e.g. 400 malformed): every object failed, each retried on its own
            text = f"HTTP {response.status_code} {_status_string(response)}"
            return {str(obj[target.id_field]): (int(StatusCode.OTHER_ERROR), text) for obj in objects}
        try:
            doc = response.json()
        except ValueError:
            doc = None
        answers: dict[str, tuple[int, str]] = {}
        for item in _status_objects(doc):
            try:
                answers[str(item.get("Id"))] = (int(item.get("StatusCode", -1)), str(item.get("StatusString", "")))
            except (TypeError, ValueError):
                continue
        return answers


def _status_string(response: requests.Response) -> str:
    try:
        doc = response.json()
        return str(doc["ResponseStatusObject"]["StatusString"])[:200]
    except (ValueError, KeyError, TypeError):
        return response.reason or ""


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None


class Gat1400Relay(Relay):
    """police_video records → the upper view library."""

    name = "gat1400-relay"

    def __init__(
        self,
        config: Gat1400RelayConfig,
        *,
        outbox: Outbox,
        reader: QueueReader | None,
        images: ImageStore,
        kms: Any | None = None,
        client: ViewLibraryClient | None = None,
        fetch_concurrency: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        upstream = config.upstream
        super().__init__(outbox=outbox, reader=reader, clock=clock, **loop_settings(config))
        self.config = config
        self.client = client or ViewLibraryClient(
            upstream.url,
            device_id=upstream.device_id,
            username=upstream.username,
            password=config.password(),
            algorithms=upstream.digest_algorithms,
            timeout_secs=upstream.request_timeout_secs,
        )
        self.images = images
        self._decryptor = Decryptor(kms) if kms is not None else None
        self._pool = ThreadPoolExecutor(max_workers=fetch_concurrency, thread_name_prefix="gat1400-fetch")
        self._last_keepalive = 0.0

    def connect(self) -> None:
        self.client.register()
        self._last_keepalive = self._clock()

    def tick(self) -> None:
        if self._clock() - self._last_keepalive >= self.config.upstream.keepalive_interval_secs:
            self.client.keepalive()
            self._last_keepalive = self._clock()

    def close(self) -> None:
        try:
            self.client.unregister()
        except UpstreamError as exc:
            log.info("gat1400 relay: unregister failed: %s", exc)
        self._pool.shutdown(wait=False)
        self.client.close()

    def _prepare(self, pending: PendingRecord) -> tuple[ViidList, dict[str, Any]]:
        """Decrypt, fetch the images and map one record; RecordMappingError / ImageFetchError / DecryptError."""
        record = json.loads(pending.body)
        if _has_envelope(record):
            if self._decryptor is None:
                raise RecordMappingError("record has encrypted fields and the relay has no KMS client")
            record = self._decryptor.record(record)
        wanted = {"face", "scene"} if record.get("event_type") == "face_capture" else {"vehicle", "plate", "scene"}
        images = {
            str(image["role"]): self.images.fetch(str(image["ref"]), sha256=str(image["sha256"]))
            for image in record.get("images") or []
            if image.get("role") in wanted
        }
        return to_viid_object(record, images=images, event_id_field=self.config.upstream.event_id_field)

    def deliver(self, batch: list[PendingRecord]) -> Delivery:
        outcome: Delivery = {}
        lists: dict[str, tuple[ViidList, list[tuple[Key, dict[str, Any]]]]] = {}
        budget = self.batch_max_bytes
        # fetch and map in parallel (S3 latency), then keep objects in order until the request budget is spent
        for pending, prepared in zip(batch, self._pool.map(_guard(self._prepare), batch), strict=True):
            if isinstance(prepared, str):
                outcome[pending.key] = prepared
                continue
            target, obj = prepared
            size = sum(len(sub["Data"]) for sub in obj["SubImageList"]["SubImageInfoObject"]) + 1024
            if size > budget and any(items for _, items in lists.values()):
                break  # the rest waits for the next request (images make a list large)
            budget -= size
            lists.setdefault(target.path, (target, []))[1].append((pending.key, obj))
        for target, items in lists.values():
            answers = self.client.post_objects(target, [obj for _, obj in items])
            for key, obj in items:
                code, text = answers.get(str(obj[target.id_field]), (-1, "no status for this object in the reply"))
                outcome[key] = None if code == StatusCode.OK else f"StatusCode {code}: {text}"
        return outcome


def _has_envelope(node: Any) -> bool:
    if is_envelope(node):
        return True
    if isinstance(node, dict):
        return any(_has_envelope(v) for k, v in node.items() if k != "images")
    if isinstance(node, list):
        return any(_has_envelope(v) for v in node)
    return False


def _guard(
    prepare: Callable[[PendingRecord], tuple[ViidList, dict[str, Any]]],
) -> Callable[[PendingRecord], tuple[ViidList, dict[str, Any]] | str]:
    """``prepare`` with its per-record failures turned into their message (retried for that record)."""

    def run(pending: PendingRecord) -> tuple[ViidList, dict[str, Any]] | str:
        try:
            return prepare(pending)
        except (RecordMappingError, ImageFetchError, DecryptError, ValueError, KeyError) as exc:
            return f"{type(exc).__name__}: {exc}"

    return run
