"""Verify the release log and records against it (``anfang audit verify``; the reference consumer uses it too).

Checks, in order, and reports the first break:

- the chain: entries of a destination numbered 1, 2, 3 ... with each ``prev`` the previous entry's hash;
- the signatures: each entry's signer certificate is signed by the stack's KMS key (its public key fetched
  once with ``GetPublicKey``, then verified offline with ``cryptography``), the entry was made within the
  certificate's validity, and the entry is signed by the certificate's key;
- records (received or archived NDJSON): each record's leaf and audit path lead to its entry's root, no two
  records claim the same leaf, and, for entries all of whose records are given (``complete=True``), every leaf
  of the entry is accounted for (a dropped record is reported).

AWS calls: one ``Query`` page per 1 MB of log, one ``GetPublicKey`` per distinct KMS key.

>>> verifier = Verifier(public_keys=KmsPublicKeys(boto3.client("kms")))
>>> report = verifier.verify_chain(ReleaseLog(dynamodb, table).entries("gov_cloud"))
>>> report.ok, report.first_break
(True, None)
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from anfang.contracts.release import (
    GENESIS,
    ReleaseEntry,
    ReleaseProofError,
    ReleaseRef,
    SignerCert,
    canonical_record,
    leaf_hash,
    root_from_path,
)

__all__ = ["AuditError", "AuditReport", "KmsPublicKeys", "Verifier"]


class AuditError(Exception):
    """The audit could not run (the log or a key could not be read)."""

    code = "audit_unavailable"


class KmsPublicKeys:
    """The stack's KMS signing keys' public halves, fetched once each (``GetPublicKey``)."""

    def __init__(self, kms: Any) -> None:
        self._kms = kms
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}

    def get(self, key_id: str) -> ec.EllipticCurvePublicKey:
        if key_id not in self._keys:
            der = self._kms.get_public_key(KeyId=key_id)["PublicKey"]
            key = serialization.load_der_public_key(der)
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise AuditError(f"{key_id} is not an elliptic-curve key")
            self._keys[key_id] = key
        return self._keys[key_id]


@dataclass
class AuditReport:
    """What was checked and the first break found (None: all verified)."""

    entries: int = 0
    records: int = 0
    first_break: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_break is None

    def fail(self, reason: str) -> None:
        if self.first_break is None:
            self.first_break = reason


@dataclass
class Verifier:
    """Checks chains, signatures and records; keeps the verified entries for record checks."""

    public_keys: KmsPublicKeys
    trusted_key_ids: frozenset[str] | None = None  # None: any key of the log (then pin it: see the CLI)
    verified: dict[str, ReleaseEntry] = field(default_factory=dict)
    _certs: set[bytes] = field(default_factory=set)  # certificates verified: statement + signature
    _chains: dict[str, tuple[int, str]] = field(default_factory=dict)  # destination → (last seq, its hash)

    def last_seq(self, destination: str) -> int:
        """The last verified entry of ``destination`` (0: none): verification resumes after it."""
        return self._chains.get(destination, (0, GENESIS))[0]

    def check_entry(self, entry: ReleaseEntry) -> str | None:
        """Why ``entry``'s signatures do not hold, or None."""
        cert = entry.signer
        if self.trusted_key_ids is not None and cert.key_id not in self.trusted_key_ids:
            return f"{entry.entry_id}: certified by an untrusted key {cert.key_id}"
        # the cache is keyed by the whole certificate: a known signature on an altered certificate is checked again
        seen = cert.statement() + cert.kms_signature.encode()
        if seen not in self._certs:
            if not _verify(self.public_keys.get(cert.key_id), cert.kms_signature, cert.statement()):
                return f"{entry.entry_id}: signer certificate not signed by {cert.key_id}"
            self._certs.add(seen)
        if not _within(entry.released_at, cert):
            return f"{entry.entry_id}: released at {entry.released_at}, outside its certificate's validity"
        key = serialization.load_der_public_key(base64.b64decode(cert.public_key))
        if not isinstance(key, ec.EllipticCurvePublicKey) or not _verify(key, entry.signature, entry.statement()):
            return f"{entry.entry_id}: entry signature invalid"
        return None

    def verify_chain(self, entries: Iterable[ReleaseEntry | str], report: AuditReport | None = None) -> AuditReport:
        """Check entries in order, continuing each destination's chain where the last call left it (an entry
        that does not parse is given as its error text)."""
        report = report or AuditReport()
        for entry in entries:
            if isinstance(entry, str):
                report.fail(entry)
                return report
            report.entries += 1
            last_seq, prev = self._chains.get(entry.destination, (0, GENESIS))
            expected_seq = last_seq + 1
            if entry.seq != expected_seq:
                report.fail(f"{entry.entry_id}: expected seq {expected_seq} (an entry is missing or out of order)")
                return report
            if entry.prev != prev:
                report.fail(f"{entry.entry_id}: prev does not match the hash of entry {entry.seq - 1}")
                return report
            if reason := self.check_entry(entry):
                report.fail(reason)
                return report
            self.verified[entry.entry_id] = entry
            self._chains[entry.destination] = (entry.seq, entry.entry_hash().hex())
        return report

    def record_problem(self, record: Mapping[str, Any]) -> str | None:
        """Why ``record`` is not in the verified log, or None. Its entry must have been verified first."""
        name = f"record {record.get('device_id')}/{record.get('event_id')}"
        try:
            ref = ReleaseRef.model_validate(record.get("release"))
        except ValidationError:
            return f"{name}: no valid release reference"
        entry = self.verified.get(ref.entry_id)
        if entry is None:
            return f"{name}: entry {ref.entry_id} is not in the verified log"
        if ref.size != entry.size:
            return f"{name}: claims {ref.size} leaves, entry {entry.entry_id} has {entry.size}"
        try:
            root = root_from_path(
                leaf_hash(canonical_record(record)), ref.index, ref.size, [bytes.fromhex(n) for n in ref.proof]
            )
        except (ReleaseProofError, ValueError):
            return f"{name}: audit path does not fit entry {entry.entry_id}"
        if root.hex() != entry.root:
            return f"{name}: does not match entry {entry.entry_id} (altered, or not released)"
        return None

    def verify_records(
        self, records: Iterable[Mapping[str, Any]], report: AuditReport | None = None, *, complete: bool = False
    ) -> AuditReport:
        """Check records against verified entries; ``complete``: the records are every release of their entries
        (an archive, or a whole queue's history), so a missing leaf is reported as a dropped record."""
        report = report or AuditReport()
        leaves: dict[str, set[int]] = {}
        for record in records:
            report.records += 1
            if reason := self.record_problem(record):
                report.fail(reason)
                return report
            ref = ReleaseRef.model_validate(record["release"])
            claimed = leaves.setdefault(ref.entry_id, set())
            if ref.index in claimed:
                report.fail(f"record {record.get('event_id')}: leaf {ref.index} of {ref.entry_id} given twice")
                return report
            claimed.add(ref.index)
        if complete:
            for entry_id, indexes in leaves.items():
                if missing := sorted(set(range(self.verified[entry_id].size)) - indexes):
                    report.fail(f"entry {entry_id}: records missing at leaves {missing}")
                    return report
        return report


def _verify(key: ec.EllipticCurvePublicKey, signature_b64: str, message: bytes) -> bool:
    try:
        key.verify(base64.b64decode(signature_b64), message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _within(moment: str, cert: SignerCert) -> bool:
    try:
        at = dt.datetime.fromisoformat(moment)
        return dt.datetime.fromisoformat(cert.not_before) <= at <= dt.datetime.fromisoformat(cert.not_after)
    except ValueError:
        return False


def parse_entries(items: Iterable[str]) -> Iterable[ReleaseEntry | str]:
    """Entries from their stored JSON; one that does not parse becomes its error text (reported as a break)."""
    for text in items:
        try:
            yield ReleaseEntry.model_validate_json(text)
        except ValidationError:
            yield f"an entry does not parse: {json.dumps(text[:80])}"
