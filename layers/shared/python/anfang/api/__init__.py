"""The ingest API (the ``api`` function): every HTTP route's logic, the Chalice app in ``functions/api`` only routes.

- :mod:`.settings` / :mod:`.wiring`: the function's environment and its wiring at cold start;
- :mod:`.http`: request limits, JSON parsing, problem+json responses (errors mapped to HTTP in one place);
- :mod:`.authenticate`: the signature gate every route passes;
- :mod:`.images`: image checks (Pillow sniff, pixel caps);
- :mod:`.ingest`: ``POST /v1/events``;
- :mod:`.health_codes`: the health commission's routes.
"""
