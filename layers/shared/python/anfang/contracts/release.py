"""The release log's format: record digests, Merkle trees (RFC 9162 hashing), signed and hash-chained entries.

Pure code (hashlib and pydantic only, no AWS): the process stage builds entries with it, a consumer and
``anfang audit verify`` check them with it. A record is entered in the log by its leaf hash, the SHA-256 over
``0x00`` and its canonical JSON without the ``release`` member (keys sorted, no whitespace, UTF-8), so a
consumer that re-serialises a record computes the same digest. Each process batch appends one entry per
destination: the Merkle root of its records' leaves, the policy version, the time, the previous entry's hash;
the entry's hash (SHA-256 of its canonical statement) becomes the next entry's ``prev`` and is signed (ECDSA
P-256, SHA-256) by the process container's short-lived signing key, whose certificate (``signer``: its public
key and validity, signed by the stack's asymmetric KMS key) the entry carries. One KMS ``Sign`` per container
and hour instead of one per entry keeps the process stage within its AWS call budget. Each record carries
``release`` = its entry id, its leaf index and the audit path to the root, so it can be checked alone against
one entry.

>>> leaves = [leaf_hash(canonical_record({"event_id": str(i)})) for i in range(3)]
>>> root = merkle_root(leaves)
>>> root_from_path(leaves[1], 1, 3, audit_path(leaves, 1)) == root
True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "GENESIS",
    "ReleaseEntry",
    "ReleaseProofError",
    "ReleaseRef",
    "SignerCert",
    "audit_path",
    "canonical_record",
    "leaf_hash",
    "merkle_root",
    "root_from_path",
    "tree",
]

#: the ``prev`` of a destination's first entry
GENESIS: Final = "0" * 64
_HEX64 = r"^[0-9a-f]{64}$"


class ReleaseProofError(ValueError):
    """An audit path that does not fit its tree (index past the size, wrong length)."""

    code = "release_proof_invalid"


def canonical_record(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's leaf is computed over: its JSON without ``release``, keys sorted, compact, UTF-8."""
    body = {k: v for k, v in record.items() if k != "release"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def leaf_hash(canonical: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + canonical).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 Merkle tree hash over leaf hashes (non-empty)."""
    if not leaves:
        raise ValueError("a release entry covers at least one record")
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def audit_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 9162 inclusion proof of ``leaves[index]``, leaf side first."""
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*audit_path(leaves[:k], index), merkle_root(leaves[k:])]
    return [*audit_path(leaves[k:], index - k), merkle_root(leaves[:k])]


def tree(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root and every leaf's audit path at once (O(n log n), for the writer)."""
    if not leaves:
        raise ValueError("a release entry covers at least one record")
    if len(leaves) == 1:
        return leaves[0], [[]]
    k = _split(len(leaves))
    left_root, left_paths = tree(leaves[:k])
    right_root, right_paths = tree(leaves[k:])
    paths = [[*p, right_root] for p in left_paths] + [[*p, left_root] for p in right_paths]
    return _node(left_root, right_root), paths


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 2.1.3.2); ``ReleaseProofError`` if it cannot fit."""
    if not 0 <= index < size:
        raise ReleaseProofError(f"leaf {index} outside a tree of {size}")
    fn, sn, node = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            raise ReleaseProofError("audit path longer than the tree")
        if fn % 2 == 1 or fn == sn:
            node = _node(sibling, node)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            node = _node(node, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ReleaseProofError("audit path shorter than the tree")
    return node


class ReleaseRef(BaseModel):
    """What a record carries to be checked against the release log (``record.release``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entry_id: str = Field(min_length=3, max_length=80, description="<destination>:<seq> of the log entry")
    index: int = Field(ge=0, description="the record's leaf index in the entry's tree")
    size: int = Field(gt=0, description="the number of records the entry covers")
    proof: list[str] = Field(default_factory=list, description="audit path (hex SHA-256), leaf side first")


class SignerCert(BaseModel):
    """A process container's short-lived signing key, certified by the stack's KMS key (``kms_signature``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    public_key: str = Field(description="base64 DER SubjectPublicKeyInfo (P-256)")
    not_before: str
    not_after: str
    key_id: str = Field(description="the stack's KMS signing key (ARN)")
    algorithm: str = "ECDSA_SHA_256"
    kms_signature: str = Field(default="", description="base64 DER, KMS Sign of the certificate statement")

    def statement(self) -> bytes:
        """What KMS signs: every field but ``kms_signature``, canonical JSON."""
        return json.dumps(
            self.model_dump(exclude={"kms_signature"}), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()


class ReleaseEntry(BaseModel):
    """One entry of a destination's release log: one process batch's records for that destination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    destination: str
    seq: int = Field(ge=1)
    prev: str = Field(pattern=_HEX64, description="entry_hash of seq - 1 (GENESIS for seq 1)")
    root: str = Field(pattern=_HEX64, description="Merkle root of the records' leaf hashes")
    size: int = Field(gt=0)
    policy: str = Field(description="<policy name>@<version> that built the records")
    released_at: str = Field(description="RFC 3339 UTC time of the append")
    signer: SignerCert
    signature: str = Field(default="", description="base64 DER ECDSA signature (SHA-256) of the statement")

    @property
    def entry_id(self) -> str:
        return f"{self.destination}:{self.seq}"

    def statement(self) -> bytes:
        """The signed bytes' preimage: every field but the signature, canonical JSON."""
        return json.dumps(
            self.model_dump(exclude={"signature"}), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()

    def entry_hash(self) -> bytes:
        """SHA-256 of the statement: what is signed and what the next entry chains to."""
        return hashlib.sha256(self.statement()).digest()
