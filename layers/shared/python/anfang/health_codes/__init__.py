"""Health codes (docs/api.md, "Health codes"): the commission's status of identified persons, by keyed id.

- :mod:`.keys`: the town pepper and ``person_key`` (HMAC of the normalised ID number; raw numbers never stored);
- :mod:`.table`: the health-code table (records, snapshot lines, the current-snapshot pointer);
- :mod:`.snapshots`: snapshot records and their upload files;
- :mod:`.importer`: the ``healthcode_import`` function's stage (NDJSON snapshot → table);
- :mod:`.authority`: which record counts for enrichment (the authority rule);
- :mod:`.settings` / :mod:`.wiring`: the import function's environment and wiring.

The commission's HTTP routes live with the other routes, in :mod:`anfang.api.health_codes`.
"""
