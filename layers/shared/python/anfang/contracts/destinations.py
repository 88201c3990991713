"""The destinations of v1: the one table every part reads (policies, the process function, the template test, the CLI).

Each destination has a record schema (``schemas/records/v1/<name>.schema.json``), a default policy
(``anfang/policies/<name>.yaml``) and, in ``template.yaml``, resources named after its title: the
``<Title>Topic``, ``<Title>Queue`` and ``<Title>DeadLetterQueue``, its archive's ``<Title>ArchiveQueue`` and
``<Title>ArchiveDeadLetterQueue``, and the outputs ``<Title>QueueUrl``, ``<Title>DeadLetterQueueUrl`` and
``<Title>TopicArn``; the process function finds its topic in ``<NAME>_TOPIC_ARN``, the archive function its
archive queue in ``<NAME>_ARCHIVE_QUEUE_ARN``. The checklist
for adding one is ``docs/checklists.md``.

>>> [d.title for d in DESTINATION_INFO.values()]
['GovCloud', 'PoliceVideo']
>>> DESTINATION_INFO["police_video"].topic_env
'POLICE_VIDEO_TOPIC_ARN'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

__all__ = ["DESTINATIONS", "DESTINATION_INFO", "Destination", "DestinationInfo"]

Destination = Literal["gov_cloud", "police_video"]
DESTINATIONS: Final[tuple[Destination, ...]] = get_args(Destination)


@dataclass(frozen=True, slots=True)
class DestinationInfo:
    """Where a destination's parts are found; every name follows from ``name`` except the field-key variable."""

    name: Destination
    #: the environment variable holding the KMS key of its ``encrypt`` fields (None: its policy may not encrypt)
    field_key_env: str | None

    @property
    def title(self) -> str:
        """The CamelCase prefix of its resources and outputs in ``template.yaml``."""
        return "".join(part.capitalize() for part in self.name.split("_"))

    @property
    def topic_env(self) -> str:
        """The process function's environment variable holding its topic ARN."""
        return f"{self.name.upper()}_TOPIC_ARN"

    @property
    def archive_queue_env(self) -> str:
        """The archive function's environment variable holding its archive queue's ARN."""
        return f"{self.name.upper()}_ARCHIVE_QUEUE_ARN"

    @property
    def topic_output(self) -> str:
        return f"{self.title}TopicArn"

    @property
    def queue_output(self) -> str:
        return f"{self.title}QueueUrl"

    @property
    def dead_letter_output(self) -> str:
        return f"{self.title}DeadLetterQueueUrl"


DESTINATION_INFO: Final[dict[Destination, DestinationInfo]] = {
    "gov_cloud": DestinationInfo("gov_cloud", field_key_env="GOV_CLOUD_KMS_KEY_ID"),
    "police_video": DestinationInfo("police_video", field_key_env="POLICE_FIELD_KEY_ARN"),
}
assert tuple(DESTINATION_INFO) == DESTINATIONS, "every destination needs its entry"
