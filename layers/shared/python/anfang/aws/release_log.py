"""The release log (noun): per destination, a hash chain of signed entries in a DynamoDB table.

Table: partition key ``destination`` (S), sort key ``seq`` (N); one item per entry (``contracts.release``),
the entry as canonical JSON in ``entry``. A batch's entries (one per destination) are appended in one
``TransactWriteItems`` whose puts are conditional on a new ``seq``, so concurrent writers never fork a chain:
the loser re-reads the heads (one ``Query`` per destination) and tries again.

Signing: each container makes a P-256 key pair in memory and has the stack's asymmetric KMS key sign its
certificate (:class:`ReleaseSigner`, one KMS ``Sign`` per container and ``cert_max_secs``); entries are signed
with that key locally. AWS call budget: 1 ``TransactWriteItems`` per batch, +1 ``Query`` per destination on a
cold start or a lost race, +1 KMS ``Sign`` per certificate.

>>> log = ReleaseLog(dynamodb, "anfang-release-log", signer=ReleaseSigner(kms, key_arn))
>>> entries = log.append({"gov_cloud": ("gov_cloud@2", [leaf1, leaf2])})
>>> entries["gov_cloud"].entry_id
'gov_cloud:1'
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from anfang.contracts.release import GENESIS, ReleaseEntry, SignerCert, merkle_root

__all__ = ["ReleaseLog", "ReleaseLogError", "ReleaseSigner"]

SIGNING_ALGORITHM: Final = "ECDSA_SHA_256"
_ATTEMPTS: Final = 5


class ReleaseLogError(Exception):
    """The log could not be appended to or read (KMS, DynamoDB, or a lost race too many times)."""

    code = "release_log_unavailable"


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ReleaseSigner:
    """A short-lived in-memory P-256 key, certified by the stack's KMS key, that signs release entries."""

    def __init__(
        self,
        kms: Any,
        key_id: str,
        *,
        cert_max_secs: int = 3600,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self._kms = kms
        self.key_id = key_id
        self.cert_max_secs = cert_max_secs
        self._clock = clock
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._cert: SignerCert | None = None

    def now(self) -> dt.datetime:
        return self._clock()

    def cert(self) -> tuple[ec.EllipticCurvePrivateKey, SignerCert]:
        """The current key and certificate; a new pair (one KMS ``Sign``) when none or close to expiry."""
        now = self._clock()
        if (
            self._key is None
            or self._cert is None
            or dt.datetime.fromisoformat(self._cert.not_after) - now < (dt.timedelta(seconds=60))
        ):
            key = ec.generate_private_key(ec.SECP256R1())
            der = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            cert = SignerCert(
                public_key=base64.b64encode(der).decode(),
                not_before=_rfc3339(now),
                not_after=_rfc3339(now + dt.timedelta(seconds=self.cert_max_secs)),
                key_id=self.key_id,
                algorithm=SIGNING_ALGORITHM,
            )
            # RAW: KMS hashes the statement with SHA-256 (moto ignores MessageType DIGEST; RAW means the same on both)
            signature = self._kms.sign(
                KeyId=self.key_id, Message=cert.statement(), MessageType="RAW", SigningAlgorithm=SIGNING_ALGORITHM
            )["Signature"]
            self._key = key
            self._cert = cert.model_copy(update={"kms_signature": base64.b64encode(signature).decode()})
        return self._key, self._cert


class ReleaseLog:
    """Append to and read the per-destination chains."""

    def __init__(self, dynamodb: Any, table: str, *, signer: ReleaseSigner | None = None) -> None:
        self._dynamodb = dynamodb
        self.table = table
        self._signer = signer
        self._heads: dict[str, tuple[int, str]] = {}  # destination → (seq, entry hash hex)

    def append(self, batch: Mapping[str, tuple[str, Sequence[bytes]]]) -> dict[str, ReleaseEntry]:
        """Sign and store, in one transaction, the next entry of each destination of ``batch``
        (destination → (policy ref, leaf hashes)); ``ReleaseLogError`` if they cannot be stored."""
        if self._signer is None:
            raise ReleaseLogError("a read-only release log cannot append")
        roots = {d: merkle_root(leaves).hex() for d, (_, leaves) in batch.items()}
        try:
            key, cert = self._signer.cert()
            for _ in range(_ATTEMPTS):
                released_at = _rfc3339(self._signer.now())
                entries: dict[str, ReleaseEntry] = {}
                for destination, (policy, leaves) in batch.items():
                    seq, prev = self._heads.get(destination) or self._read_head(destination)
                    entry = ReleaseEntry(
                        destination=destination,
                        seq=seq + 1,
                        prev=prev,
                        root=roots[destination],
                        size=len(leaves),
                        policy=policy,
                        released_at=released_at,
                        signer=cert,
                    )
                    signature = key.sign(entry.statement(), ec.ECDSA(hashes.SHA256()))
                    entries[destination] = entry.model_copy(update={"signature": base64.b64encode(signature).decode()})
                try:
                    self._dynamodb.transact_write_items(
                        TransactItems=[
                            {
                                "Put": {
                                    "TableName": self.table,
                                    "Item": _to_item(entry),
                                    "ConditionExpression": "attribute_not_exists(seq)",
                                }
                            }
                            for entry in entries.values()
                        ]
                    )
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                        raise
                    for destination in batch:  # another writer appended: re-read the heads
                        self._heads.pop(destination, None)
                    continue
                for destination, entry in entries.items():
                    self._heads[destination] = (entry.seq, entry.entry_hash().hex())
                return entries
        except (ClientError, BotoCoreError) as exc:
            for destination in batch:
                self._heads.pop(destination, None)
            raise ReleaseLogError(f"release log: {type(exc).__name__}") from exc
        raise ReleaseLogError(f"release log: lost {_ATTEMPTS} races for the heads")

    def warm(self, destinations: Sequence[str]) -> None:
        """Read the heads and certify the signing key now (cold start), not in the first batch."""
        try:
            for destination in destinations:
                self._heads[destination] = self._read_head(destination)
            if self._signer is not None:
                self._signer.cert()
        except (ClientError, BotoCoreError) as exc:
            raise ReleaseLogError(f"release log: {type(exc).__name__}") from exc

    def _read_head(self, destination: str) -> tuple[int, str]:
        response = self._dynamodb.query(
            TableName=self.table,
            KeyConditionExpression="destination = :d",
            ExpressionAttributeValues={":d": {"S": destination}},
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        )
        items = response.get("Items", [])
        if not items:
            return 0, GENESIS
        head = _from_item(items[0])
        return head.seq, head.entry_hash().hex()

    def entries(self, destination: str, *, after_seq: int = 0) -> Iterator[ReleaseEntry]:
        """The entries of ``destination`` in order, from ``after_seq + 1``."""
        for text in self.entry_texts(destination, after_seq=after_seq):
            yield ReleaseEntry.model_validate_json(text)

    def entry_texts(self, destination: str, *, after_seq: int = 0) -> Iterator[str]:
        """The stored JSON of the entries of ``destination`` in order (an auditor parses them itself)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "destination = :d AND seq > :s",
            "ExpressionAttributeValues": {":d": {"S": destination}, ":s": {"N": str(after_seq)}},
            "ConsistentRead": True,
        }
        try:
            while True:
                page = self._dynamodb.query(**kwargs)
                yield from (str(item["entry"]["S"]) for item in page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    return
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except (ClientError, BotoCoreError) as exc:
            raise ReleaseLogError(f"release log of {destination}: {type(exc).__name__}") from exc


def _to_item(entry: ReleaseEntry) -> dict[str, dict[str, str]]:
    return {
        "destination": {"S": entry.destination},
        "seq": {"N": str(entry.seq)},
        "entry": {"S": entry.model_dump_json()},
    }


def _from_item(item: dict[str, Any]) -> ReleaseEntry:
    return ReleaseEntry.model_validate_json(item["entry"]["S"])
