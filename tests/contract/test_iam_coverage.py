"""Every AWS call a function makes in the tests is allowed by its role in template.yaml, and every grant is used.

The calls are recorded while the functional and local-stack tests run (``tests/iam``); this module is ordered
last. A call the role does not allow fails it. A grant no test exercised is listed in the run's summary; in
a complete run (every recording folder, no ``-k``/``-m``, nothing failed before) each one must be explained
below, and an explanation for a grant that is now used must go, so grants shrink to what is used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.iam.check import Report, check
from tests.iam.policy import Grant, Roles
from tests.iam.recorder import Recorder

ROOT = Path(__file__).resolve().parents[2]

# Grants no test exercises, and why each stays. Keyed like the summary prints them.
EXPLAINED_UNUSED: dict[Grant, str] = {
    Grant("ApiFunction", "ApiFunctionRolePolicy0", "dynamodb:BatchWriteItem", "SeenEventsTable.Arn"): (
        "the fallback when DynamoDB refuses a seen-events transaction (conflict, throttling); moto never does"
    ),
    Grant(
        "HealthcodeImportFunction",
        "HealthcodeImportFunctionEventInvokeConfigOnFailureSQSPolicy",
        "sqs:SendMessage",
        "ImportDeadLetterQueue.Arn",
    ): "SAM's statement for the on-failure destination: Lambda sends a failed invocation with this role",
    Grant("HealthcodeImportFunction", "HealthcodeImportFunctionRolePolicy0", "kms:GenerateDataKey", "DataKey.Arn"): (
        "the same on-failure send: the dead-letter queue is encrypted with the data key"
    ),
}


def test_every_recorded_call_is_allowed_by_the_functions_role(
    iam_recorder: Recorder, iam_run_is_complete: bool, iam_report_sink: Callable[[Report], None]
) -> None:
    if not iam_recorder.calls:
        pytest.skip("no function made an AWS call in this run (run the functional and local-stack tests with it)")
    assert not iam_recorder.errors, f"the recorder failed on some calls: {sorted(set(iam_recorder.errors))}"
    report = check(iam_recorder, Roles(ROOT))
    report.complete = iam_run_is_complete
    report.explanations = EXPLAINED_UNUSED
    iam_report_sink(report)
    # THEN no function made a call its role would refuse, and the checker knew every operation
    assert not report.denied, report.text()
    assert not report.unmapped, report.text()
    if not iam_run_is_complete:
        return  # a partial run leaves grants unused that the full run exercises; they are listed, not judged
    unexplained = [g for g in report.unused if g not in EXPLAINED_UNUSED]
    stale = [g for g in EXPLAINED_UNUSED if g in report.used]
    assert not unexplained, "grants no test uses: explain them in EXPLAINED_UNUSED or drop them\n" + report.text()
    assert not stale, f"explained as unused but now used: {stale}"
