"""The pipeline's stages (verbs), run by the ``analyse`` and ``process`` functions.

- :mod:`.analyse` (+ :mod:`.thumbnails`): the analyse function's stage: thumbnails, quality, face boxes, hash;
- :mod:`.enrich`: site facts and health codes;
- :mod:`.redact`: each destination's record from its policy;
- :mod:`.process`: dedupe → enrich → redact → fan out, for one SQS batch;
- :mod:`.settings` / :mod:`.wiring`: the two functions' environments and their wiring at cold start.

Nothing here is imported by this package itself: the analyse function's layer carries OpenCV and no
``cryptography``, so importing :mod:`.analyse` must not pull in :mod:`.redact`.
"""
