"""The redact stage: each destination's record of an event, built from its policy (docs/records.md).

- :mod:`.actions`: the field actions (mask, pseudonymize, generalize, encrypt);
- :mod:`.keys`: the batch's KMS data keys;
- :mod:`.record`: the record model a policy shapes (its JSON Schema is published);
- :mod:`.fastpath`: records validated and serialised as dicts under that model's schema;
- :mod:`.redactor`: :class:`Redactor`, which ties them together.

>>> keys = DataKeys(kms, {"police_video": police_key_arn})
>>> redactor = Redactor(load_policy("police_video"), secret=b"...", town="330106", buckets=buckets)
>>> redactor.record_json(queued, enrichment, keys)
"""

from __future__ import annotations

from .actions import mask, pseudonym
from .exceptions import DataKeyError, RedactError
from .keys import DataKey, DataKeys
from .record import record_model
from .redactor import ImageBuckets, Redactor

__all__ = [
    "DataKey",
    "DataKeyError",
    "DataKeys",
    "ImageBuckets",
    "RedactError",
    "Redactor",
    "mask",
    "pseudonym",
    "record_model",
]
