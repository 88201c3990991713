"""Adapters (nouns) over AWS services, each with its client injected and its AWS call budget in its docstring.

- :mod:`.dynamo`: batched DynamoDB reads and writes with retries of unprocessed items;
- :mod:`.batch`: the one SQS/SNS batch-send loop with partial failures;
- :mod:`.queues`: the event queues (SQS); :mod:`.topics`: the destination topics (SNS);
- :mod:`.raw_images`: the raw-image bucket (S3, claim check);
- :mod:`.registry`: the device and partner registry; :mod:`.nonces`: used signature nonces;
- :mod:`.seen_events`: the API's seen-events table (ingest dedupe);
- :mod:`.delivered_events`: the process stage's delivered-events table (publish dedupe per destination);
- :mod:`.metrics`: stage counters as CloudWatch metrics (Powertools EMF);
- :mod:`.environment`: a function's environment as a validated settings model.
"""
