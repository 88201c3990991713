"""Wiring of the archive function: the S3 client and the queue → destination table, built once per cold start.

No AWS call at cold start.

>>> archiver = build_archiver(ArchiveSettings.from_env(os.environ))
"""

from __future__ import annotations

from typing import Any

import boto3

from anfang.aws.archive import RecordArchive
from anfang.pipeline.archive import Archiver
from anfang.pipeline.settings import ArchiveSettings

__all__ = ["build_archiver"]


def build_archiver(settings: ArchiveSettings, *, session: Any = None) -> Archiver:
    session = session or boto3.session.Session()
    return Archiver(RecordArchive(session.client("s3"), settings.archive_bucket), settings.queue_destinations())
