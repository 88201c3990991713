"""The reference consumer (``anfang consume``): drain a destination queue into NDJSON and image files, verified.

Per received batch (SQS long poll, up to 10 messages):

1. each record is verified against the release log (``anfang_ops.audit``: chain, signatures, Merkle proof); a
   record that does not verify is not written and its message not deleted (it ends in the queue's DLQ);
2. duplicates (same ``device_id``, ``event_id``, already written or twice in the batch) are dropped;
3. with ``--images`` the images the record references are fetched, checked against their ``sha256`` and
   written as ``images/<sha256>.<ext>`` (temporary file, fsync, rename: content-addressed, so idempotent);
4. with ``--decrypt`` the police fields are decrypted (``anfang_ops.decrypt``);
5. the new records are appended to ``records.ndjson`` and fsynced, then the keys and the file's new length are
   committed to ``state.sqlite3`` (WAL, ``synchronous=FULL``);
6. only then are the messages deleted.

Crash safety (kill -9 anywhere): on start the NDJSON file is truncated to the length committed in step 5, so a
batch appended but not committed disappears and, its messages never deleted, is received and written again; a
batch committed but not deleted is received again and dropped as duplicate. Nothing is lost, nothing doubled.

AWS calls per batch: 1 ReceiveMessage, 1 DeleteMessageBatch, a GetObject per new image, a KMS Decrypt per
distinct data key (``--decrypt``), a Query of the release log when a record names an entry not yet verified.

>>> consumer = Consumer(ConsumerConfig(out_dir=Path("out"), destination="gov_cloud"), clients)
>>> consumer.run(stop=threading.Event())
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from anfang.aws.release_log import ReleaseLog
from anfang.contracts.release import ReleaseRef
from anfang_ops.audit import KmsPublicKeys, Verifier, parse_entries

__all__ = ["ConsumeError", "Consumer", "ConsumerClients", "ConsumerConfig"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS seen (device_id TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (device_id, event_id));
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_EXTENSIONS: Final = {b"\xff\xd8": "jpg", b"\x89P": "png"}


class ConsumeError(Exception):
    """The consumer cannot go on (its state, its output folder, the release log)."""

    code = "consume_failed"


@dataclass(frozen=True)
class ConsumerConfig:
    out_dir: Path
    destination: str
    decrypt: bool = False
    images: bool = False
    wait_time_secs: int = 20
    max_messages: int | None = None  # stop after receiving this many (None: until stopped)
    exit_when_idle: bool = False  # stop at the first empty long poll


@dataclass(frozen=True)
class ConsumerClients:
    sqs: Any
    s3: Any
    kms: Any
    dynamodb: Any
    queue_url: str
    log_table: str
    signing_key_arn: str


@dataclass
class ConsumerStats:
    counts: Counter[str] = field(default_factory=Counter)


class Consumer:
    """Drain, verify, dedupe, decrypt, fetch images, write; see the module docstring."""

    def __init__(self, config: ConsumerConfig, clients: ConsumerClients) -> None:
        self.config = config
        self.clients = clients
        self.stats = ConsumerStats()
        self.log = ReleaseLog(clients.dynamodb, clients.log_table)
        self.verifier = Verifier(KmsPublicKeys(clients.kms), trusted_key_ids=frozenset({clients.signing_key_arn}))
        self._decryptor: Any = None
        if config.decrypt:
            from anfang_ops.decrypt import Decryptor  # noqa: PLC0415

            self._decryptor = Decryptor(clients.kms)
        config.out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (config.out_dir / "images").mkdir(exist_ok=True, mode=0o700)
        self.ndjson = config.out_dir / "records.ndjson"
        self._db = sqlite3.connect(config.out_dir / "state.sqlite3", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._recover()

    # ------------------------------------------------------------------------------------------- durability

    def _committed_size(self) -> int:
        row = self._db.execute("SELECT value FROM state WHERE name = 'ndjson_size'").fetchone()
        return int(row[0]) if row else 0

    def _recover(self) -> None:
        """Cut the NDJSON file back to what was committed: a batch written but not committed is written again."""
        size = self._committed_size()
        with self.ndjson.open("ab") as out:
            if out.tell() > size:
                out.truncate(size)
                out.flush()
                os.fsync(out.fileno())
                self.stats.counts["recovered_truncations"] += 1

    def _seen(self, key: tuple[str, str]) -> bool:
        return self._db.execute("SELECT 1 FROM seen WHERE device_id = ? AND event_id = ?", key).fetchone() is not None

    def _write(self, records: list[tuple[tuple[str, str], dict[str, Any]]]) -> None:
        if not records:
            return
        lines = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for _, r in records).encode()
        with self.ndjson.open("ab") as out:
            out.write(lines)
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT OR IGNORE INTO seen (device_id, event_id) VALUES (?, ?)", [k for k, _ in records]
            )
            self._db.execute("INSERT OR REPLACE INTO state (name, value) VALUES ('ndjson_size', ?)", (size,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # ---------------------------------------------------------------------------------------------- records

    def _verify(self, record: dict[str, Any]) -> str | None:
        try:
            ref = ReleaseRef.model_validate(record.get("release"))
        except ValueError:
            return "no release reference"
        if ref.entry_id not in self.verifier.verified:
            destination = ref.entry_id.rpartition(":")[0]
            if destination != self.config.destination:
                return f"entry {ref.entry_id} is not of {self.config.destination}"
            after = self.verifier.last_seq(destination)
            report = self.verifier.verify_chain(parse_entries(self.log.entry_texts(destination, after_seq=after)))
            if not report.ok:
                raise ConsumeError(f"release log does not verify: {report.first_break}")
        return self.verifier.record_problem(record)

    def _fetch_images(self, record: dict[str, Any]) -> None:
        for image in record.get("images", []):
            bucket, _, key = str(image["ref"]).removeprefix("s3://").partition("/")
            existing = list((self.config.out_dir / "images").glob(f"{image['sha256']}.*"))
            if existing:
                continue
            body: bytes = self.clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            if hashlib.sha256(body).hexdigest() != image["sha256"]:
                raise ConsumeError(f"image {image['ref']}: content does not match its sha256")
            target = self.config.out_dir / "images" / f"{image['sha256']}.{_EXTENSIONS.get(body[:2], 'bin')}"
            temporary = target.with_suffix(".tmp")
            with temporary.open("wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            temporary.replace(target)
            self.stats.counts["images_written"] += 1

    def handle(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One received batch: write what is new and verified; the messages that may be deleted."""
        done: list[dict[str, Any]] = []
        new: list[tuple[tuple[str, str], dict[str, Any]]] = []
        batch_keys: set[tuple[str, str]] = set()
        for message in messages:
            self.stats.counts["received"] += 1
            try:
                record = json.loads(message["Body"])
            except ValueError:
                self.stats.counts["rejected_unparseable"] += 1
                continue
            if problem := self._verify(record):
                self.stats.counts["rejected_unverified"] += 1
                print(f"not verified, left for the DLQ: {problem}", flush=True)
                continue
            key = (str(record["device_id"]), str(record["event_id"]))
            if key in batch_keys or self._seen(key):
                self.stats.counts["duplicate"] += 1
                done.append(message)
                continue
            if self.config.images:
                self._fetch_images(record)
            if self._decryptor is not None:
                record = self._decryptor.record(record)
            batch_keys.add(key)
            new.append((key, record))
            done.append(message)
        self._write(new)
        self.stats.counts["written"] += len(new)
        return done

    def run(self, stop: threading.Event, progress: Callable[[Counter[str]], None] | None = None) -> Counter[str]:
        """Long-poll until ``stop`` (or the configured limits); the counters."""
        sqs = self.clients.sqs
        while not stop.is_set():
            if self.config.max_messages is not None and self.stats.counts["received"] >= self.config.max_messages:
                break
            messages = sqs.receive_message(
                QueueUrl=self.clients.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=self.config.wait_time_secs
            ).get("Messages", [])
            if not messages:
                if self.config.exit_when_idle:
                    break
                continue
            done = self.handle(messages)
            if done:
                sqs.delete_message_batch(
                    QueueUrl=self.clients.queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
                )
            if progress is not None:
                progress(self.stats.counts)
        return self.stats.counts

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
