"""Wiring of the analyse function: its settings, clients and thresholds, made once per cold start.

Imports neither :mod:`anfang.pipeline.redact` nor ``cryptography``: the analyse function's layer is OpenCV.
Cold-start AWS calls: none (clients only).

>>> analyser = build_analyser(AnalyseSettings.from_env(os.environ))
>>> analysed = analyser.analyse(queued)          # thumbnails stored, analysis filled in
>>> unsent = analyser.queue.send({message_id: analysed.model_dump_json(by_alias=True)})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3

from anfang.aws.queues import EventQueue
from anfang.contracts import QueuedEvent
from anfang.pipeline.analyse import Thresholds, analyse_event
from anfang.pipeline.settings import AnalyseSettings
from anfang.pipeline.thumbnails import DerivedKind

__all__ = ["Analyser", "build_analyser"]


@dataclass(frozen=True)
class Analyser:
    """The analyse stage bound to its buckets, thresholds and the process queue."""

    s3: Any
    queue: EventQueue
    raw_bucket: str
    image_bucket: str
    thresholds: Thresholds
    #: the derived images made and stored: only those a policy uses (``DERIVED_IMAGES``)
    kinds: frozenset[DerivedKind]

    def analyse(self, queued: QueuedEvent) -> QueuedEvent:
        """Analyse every image of one event (raw images read, derived images written) and return it analysed."""
        return analyse_event(
            queued,
            s3=self.s3,
            raw_bucket=self.raw_bucket,
            image_bucket=self.image_bucket,
            thresholds=self.thresholds,
            kinds=self.kinds,
        )


def build_analyser(settings: AnalyseSettings, *, session: Any = None) -> Analyser:
    """The analyser of this function from its settings and a boto3 session (``AWS_ENDPOINT_URL`` honoured)."""
    client = session.client if session is not None else boto3.client  # boto3's default session by default
    return Analyser(
        s3=client("s3"),
        queue=EventQueue(client("sqs"), settings.process_queue_url),
        raw_bucket=settings.raw_bucket,
        image_bucket=settings.image_bucket,
        thresholds=Thresholds(
            settings.dark_brightness_max, settings.overexposed_brightness_min, settings.blurry_sharpness_max
        ),
        kinds=settings.derived_images,
    )
